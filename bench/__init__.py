"""hybridmem's benchmarks: each ``hybridmem bench <name>`` is a module here with a ``run()``.

``make bench`` runs them all into ``bench/results/*.json`` and ``python -m bench.report`` writes
docs/benchmarks.md from those files. Benchmarks import the product (core, deployments, jobs); the
product never imports them (import-linter contracts in pyproject.toml, checked by ``make lint``).
"""

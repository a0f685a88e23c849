"""Ray job entry points (consolidate, retention, reembed) and benchmarks."""

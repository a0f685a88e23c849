"""hybridmem core: the pure library under the Ray Serve deployments and jobs.

Nothing in this package imports ray, reads the environment or opens a connection at import time.
"""

__version__ = "0.1.0"

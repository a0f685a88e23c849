"""Ray Serve deployments, the app builder and the CLI: thin wrappers over ``core``."""

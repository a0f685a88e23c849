"""Contract suites: one set of calls run against every implementation of a port."""

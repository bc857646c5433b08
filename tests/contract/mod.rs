//! Executor contract suites, run against every backend.

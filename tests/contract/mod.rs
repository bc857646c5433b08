//! Executor contract suites, run against every backend.

pub(crate) mod executor;
pub(crate) mod executor_docker;
pub(crate) mod executor_fake;
pub(crate) mod executor_host;
pub(crate) mod executor_kubernetes;
mod otel_otlp;
mod otel_prometheus;

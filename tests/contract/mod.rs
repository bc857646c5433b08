//! Executor contract suites, run against every backend.

pub mod executor;
pub mod executor_docker;
pub mod executor_fake;
pub mod executor_host;
mod otel_otlp;
mod otel_prometheus;

//! Executor contract suites, run against every backend.

mod otel_otlp;
mod otel_prometheus;

//! OpenTelemetry metrics behind the [`Metrics`] port: the reference's instrument catalogue,
//! the four exporters chosen by `OTEL_METRICS_EXPORTER` (`otlp`, `prometheus`, `console`,
//! `none`), and the `/healthz` + `/readyz` endpoints.
//!
//! The rest of the worker only emits typed [`Signal`]s; instrument names and attributes live in
//! `instruments.rs`. Metrics never take the daemon down: a bad configuration or a failed init
//! gives a [`NoopMetrics`] and one log line; recording never blocks and never panics.

mod config;
mod export_log;
mod exporters;
mod http;
mod instruments;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{
    DEFAULT_EXPORT_INTERVAL, DEFAULT_EXPORT_TIMEOUT, DEFAULT_OTLP_GRPC_ENDPOINT,
    DEFAULT_OTLP_HTTP_ENDPOINT, DEFAULT_PROMETHEUS_HOST, DEFAULT_PROMETHEUS_PORT, ExporterConfig,
    OtelConfig, OtlpConfig, OtlpProtocol, SERVICE_NAME, ServiceInfo,
};
pub use http::HealthServer;
pub use instruments::{CATALOGUE, InstrumentSpec, RECONNECT_REASONS, SCOPE_NAME};

use crate::ports::{Metrics, Readiness, Signal};
use instruments::Instruments;

/// The bound on flushing metrics at shutdown (the Go worker's; see docs/metrics.md).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why metrics could not be set up or flushed. Never carries an OTLP header value.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// `OTEL_METRICS_EXPORTER` names no exporter we have.
    #[error(
        "unknown exporter or metrics producer: OTEL_METRICS_EXPORTER={0:?} (expected otlp, prometheus, console or none)"
    )]
    UnknownExporter(String),
    /// `OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL` is neither `grpc` nor `http/protobuf`.
    #[error("invalid OTLP protocol {0:?} - should be one of ['grpc', 'http/protobuf']")]
    InvalidProtocol(String),
    /// A variable's value has the wrong shape.
    #[error("invalid {variable}={value:?}: expected {expected}")]
    InvalidValue {
        /// The variable.
        variable: &'static str,
        /// What it held (`<redacted>` for headers).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The metrics or health listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The SDK refused to build the exporter.
    #[error("cannot build the metrics exporter: {0}")]
    Exporter(String),
    /// An export, flush or shutdown failed (e.g. the collector is unreachable).
    #[error("metrics export failed: {0}")]
    Export(String),
    /// The flush did not finish within the bound.
    #[error("metrics shutdown did not finish within {0:?}")]
    Timeout(Duration),
    /// `start` was called with the `none` exporter.
    #[error("metrics exporter is none")]
    Disabled,
}

/// A running OpenTelemetry pipeline. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct OtelMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    provider: SdkMeterProvider,
    instruments: Instruments,
    prometheus_addrs: Vec<SocketAddr>,
    stop: CancellationToken,
    /// The Prometheus server's tasks, waited for at shutdown.
    tasks: TaskTracker,
}

impl OtelMetrics {
    /// Installs the pipeline for `config`, primes every bounded series (not the histogram),
    /// sets `oz_worker_tasks_max_concurrent` = 0 and `oz_worker_info` = 1. For Prometheus it
    /// binds and serves `/metrics`, `/healthz` and `/readyz` (from `readiness`).
    ///
    /// Call from inside a tokio runtime. Fails on a bad or busy port, an exporter the SDK
    /// refuses, or the `none` exporter ([`OtelError::Disabled`]).
    pub fn start(config: &OtelConfig, readiness: Readiness) -> Result<OtelMetrics, OtelError> {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let pipeline = exporters::build(config, readiness, &stop, &tasks)?;
        let meter = pipeline
            .provider
            .meter_with_scope(InstrumentationScope::builder(SCOPE_NAME).build());
        let instruments = Instruments::new(&meter);
        instruments.prime(0, &config.service);
        Ok(OtelMetrics {
            inner: Arc::new(Inner {
                provider: pipeline.provider,
                instruments,
                prometheus_addrs: pipeline.prometheus_addrs,
                stop,
                tasks,
            }),
        })
    }

    /// Sets `oz_worker_tasks_max_concurrent`: 0 means unlimited, negatives are shown as they
    /// are (the reference's quirk).
    pub fn set_max_concurrent(&self, value: i64) {
        self.inner.instruments.set_max_concurrent(value);
    }

    /// Where the Prometheus server listens (its first address), when the exporter is
    /// `prometheus`.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.inner.prometheus_addrs.first().copied()
    }

    /// Every address the Prometheus server listens on (one per address the host resolves
    /// to); empty unless the exporter is `prometheus`.
    pub fn prometheus_addrs(&self) -> &[SocketAddr] {
        &self.inner.prometheus_addrs
    }

    /// Pushes everything recorded so far now (OTLP, console). Blocking work runs off the
    /// async workers. An unreachable collector gives [`OtelError::Export`].
    pub async fn flush(&self) -> Result<(), OtelError> {
        let provider = self.inner.provider.clone();
        run_blocking(SHUTDOWN_TIMEOUT, move || provider.force_flush()).await
    }

    /// Flushes and stops the pipeline within `timeout` (use [`SHUTDOWN_TIMEOUT`]), and stops
    /// the Prometheus server. Later records are dropped silently.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), OtelError> {
        http::stop_tasks(&self.inner.stop, &self.inner.tasks).await;
        let provider = self.inner.provider.clone();
        run_blocking(timeout, move || provider.shutdown_with_timeout(timeout)).await
    }
}

/// Runs a blocking SDK call on the blocking pool, bounded by `timeout`. A call that overruns is
/// left to finish on the pool (it cannot be interrupted); the runtime's bounded shutdown does
/// not wait for it.
#[allow(
    clippy::disallowed_methods,
    reason = "awaited here within `timeout`; an uninterruptible SDK call that overruns is left to the pool"
)]
async fn run_blocking(
    timeout: Duration,
    call: impl FnOnce() -> opentelemetry_sdk::error::OTelSdkResult + Send + 'static,
) -> Result<(), OtelError> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(call)).await {
        Err(_) => Err(OtelError::Timeout(timeout)),
        Ok(Err(join_error)) => Err(OtelError::Export(join_error.to_string())),
        Ok(Ok(Err(error))) => Err(OtelError::Export(error.to_string())),
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

impl Metrics for OtelMetrics {
    fn record(&self, signal: Signal) {
        self.inner.instruments.record(signal);
    }
}

impl std::fmt::Debug for OtelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelMetrics")
            .field("prometheus_addrs", &self.inner.prometheus_addrs)
            .finish_non_exhaustive()
    }
}

/// Records nothing: for `OTEL_METRICS_EXPORTER=none` and when init failed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopMetrics;

impl Metrics for NoopMetrics {
    fn record(&self, _signal: Signal) {}
}

/// What the app holds: the running pipeline, or nothing. Implements [`Metrics`] either way.
#[derive(Debug, Clone, Default)]
pub struct WorkerMetrics {
    otel: Option<OtelMetrics>,
}

impl WorkerMetrics {
    /// Reads the `OTEL_*` variables through `lookup`, starts the exporter they select and sets
    /// `max_concurrent`. `none` gives a no-op without a log line; any error is logged as
    /// `Failed to initialize metrics export: <err> (continuing without metrics)` and gives a
    /// no-op. Call from inside a tokio runtime.
    pub fn init(
        lookup: &dyn Fn(&str) -> Option<String>,
        service: ServiceInfo,
        max_concurrent: i64,
        readiness: Readiness,
    ) -> WorkerMetrics {
        let started = OtelConfig::from_env(lookup, service).and_then(|config| {
            if config.exporter == ExporterConfig::None {
                return Ok(None);
            }
            OtelMetrics::start(&config, readiness).map(Some)
        });
        match started {
            Ok(otel) => {
                if let Some(otel) = &otel {
                    otel.set_max_concurrent(max_concurrent);
                }
                WorkerMetrics { otel }
            }
            Err(error) => {
                tracing::error!(
                    "Failed to initialize metrics export: {error} (continuing without metrics)"
                );
                WorkerMetrics { otel: None }
            }
        }
    }

    /// The pipeline, when one runs.
    pub fn otel(&self) -> Option<&OtelMetrics> {
        self.otel.as_ref()
    }

    /// Flushes and stops within [`SHUTDOWN_TIMEOUT`]; on error warns
    /// `Failed to shut down metrics exporter cleanly: <err>`.
    pub async fn shutdown(&self) {
        if let Some(otel) = &self.otel
            && let Err(error) = otel.shutdown(SHUTDOWN_TIMEOUT).await
        {
            tracing::warn!("Failed to shut down metrics exporter cleanly: {error}");
        }
    }
}

impl Metrics for WorkerMetrics {
    fn record(&self, signal: Signal) {
        if let Some(otel) = &self.otel {
            otel.record(signal);
        }
    }
}

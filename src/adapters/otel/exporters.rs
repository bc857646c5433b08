//! Builds the SDK pipeline for the configured exporter: a Prometheus registry behind our HTTP
//! server, a periodic OTLP push (HTTP/protobuf on the SDK's own thread with the blocking
//! reqwest client, or gRPC via tonic), or periodic console output.
//!
//! OTLP to an `https://` endpoint uses rustls on ring with the system roots, or only the CA
//! certificates of `OTEL_EXPORTER_OTLP_[METRICS_]CERTIFICATE` when that is set.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::OtelError;
use super::config::{ExporterConfig, OtelConfig, OtlpConfig, OtlpProtocol};
use super::http;
use crate::ports::Readiness;

/// A built provider plus, for Prometheus, the bound addresses of the server.
pub(crate) struct Pipeline {
    pub(crate) provider: SdkMeterProvider,
    pub(crate) prometheus_addrs: Vec<SocketAddr>,
}

/// Builds the provider for `config`. Binds the Prometheus port first, so a bad or busy port
/// fails here, before anything is installed. The server runs on `tasks` and stops when `stop`
/// fires.
pub(crate) fn build(
    config: &OtelConfig,
    readiness: Readiness,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<Pipeline, OtelError> {
    let builder = SdkMeterProvider::builder().with_resource(resource(&config.resource));
    match &config.exporter {
        ExporterConfig::None => Err(OtelError::Disabled),
        ExporterConfig::Prometheus { host, port } => {
            let listeners = http::bind_prometheus(host, *port)?;
            let registry = prometheus::Registry::new();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                // The catalogue's names already carry `_total` and `_seconds`.
                .without_counter_suffixes()
                .without_units()
                .build()
                .map_err(|error| OtelError::Exporter(error.to_string()))?;
            let provider = builder.with_reader(exporter).build();
            let prometheus_addrs =
                http::serve(listeners, Some(registry), readiness, stop.clone(), tasks)?;
            Ok(Pipeline {
                provider,
                prometheus_addrs,
            })
        }
        ExporterConfig::Otlp(otlp) => {
            let reader = PeriodicReader::builder(otlp_exporter(otlp)?)
                .with_interval(otlp.interval)
                .build();
            Ok(Pipeline {
                provider: builder.with_reader(reader).build(),
                prometheus_addrs: Vec::new(),
            })
        }
        ExporterConfig::Console { interval } => {
            let reader = PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default())
                .with_interval(*interval)
                .build();
            Ok(Pipeline {
                provider: builder.with_reader(reader).build(),
                prometheus_addrs: Vec::new(),
            })
        }
    }
}

/// The semantic-conventions schema URL of the resource, as the Go worker sends it: its
/// OpenTelemetry Go SDK (the one `autoexport` v0.68.0 requires, v1.43) builds its default
/// resource with semconv v1.40.0, and Go refuses to merge resources whose schema URLs differ,
/// so the worker's resource carries that same URL.
pub(crate) const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.40.0";

/// The resource from already-merged attributes, with [`SCHEMA_URL`]; no detector reads the
/// process environment.
pub(crate) fn resource(attributes: &BTreeMap<String, String>) -> Resource {
    Resource::builder_empty()
        .with_schema_url(
            attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
            SCHEMA_URL,
        )
        .build()
}

#[allow(
    clippy::disallowed_methods,
    reason = "the export logger's once-a-minute throttle runs on the SDK's blocking export thread, outside tokio's clock; its tests inject a manual clock"
)]
fn otlp_exporter(otlp: &OtlpConfig) -> Result<opentelemetry_otlp::MetricExporter, OtelError> {
    let built = match otlp.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(super::export_log::LoggingClient::new(
                http_client(otlp)?,
                otlp.endpoint.clone(),
                std::sync::Arc::new(std::time::Instant::now),
            ))
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(otlp.endpoint.clone())
            .with_timeout(otlp.timeout)
            .with_headers(otlp.headers.clone().into_iter().collect())
            .build(),
        OtlpProtocol::Grpc => {
            let mut headers = ::http::HeaderMap::new();
            for (name, value) in &otlp.headers {
                let name = ::http::HeaderName::try_from(name.as_str()).map_err(|_| {
                    OtelError::Exporter(format!("invalid OTLP header name {name:?}"))
                })?;
                let value = ::http::HeaderValue::try_from(value.as_str()).map_err(|_| {
                    OtelError::Exporter(format!("invalid value for OTLP header {name:?}"))
                })?;
                headers.insert(name, value);
            }
            let mut builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
            if is_https(&otlp.endpoint) {
                builder = builder.with_tls_config(grpc_tls(otlp)?);
            }
            builder
                .with_protocol(Protocol::Grpc)
                .with_endpoint(otlp.endpoint.clone())
                .with_timeout(otlp.timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
                )
                .build()
        }
    };
    built.map_err(|error| OtelError::Exporter(error.to_string()))
}

fn is_https(endpoint: &str) -> bool {
    endpoint
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// The CA certificates of `OTEL_EXPORTER_OTLP_[METRICS_]CERTIFICATE`, as PEM, when set.
fn trusted_pem(otlp: &OtlpConfig) -> Result<Option<Vec<u8>>, OtelError> {
    let Some(path) = &otlp.certificate else {
        return Ok(None);
    };
    std::fs::read(path).map(Some).map_err(|error| {
        OtelError::Exporter(format!(
            "cannot read the OTLP CA certificate {}: {error}",
            path.display()
        ))
    })
}

/// The blocking reqwest client of the HTTP exporter: rustls on ring, trusting the system
/// roots, or only the certificates of `OTEL_EXPORTER_OTLP_[METRICS_]CERTIFICATE` when set.
fn http_client(otlp: &OtlpConfig) -> Result<reqwest::blocking::Client, OtelError> {
    let trusted = match (trusted_pem(otlp)?, &otlp.certificate) {
        (Some(pem), Some(path)) => Some(
            reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certificates| !certificates.is_empty())
                .ok_or_else(|| {
                    OtelError::Exporter(format!(
                        "no PEM certificate in the OTLP CA certificate file {}",
                        path.display()
                    ))
                })?,
        ),
        _ => None,
    };
    // reqwest is built without a bundled crypto provider and would panic without one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let timeout = otlp.timeout;
    // The blocking client runs its own runtime: build it off the async workers, as the SDK does.
    #[allow(
        clippy::disallowed_methods,
        reason = "joined right here: the thread only builds the blocking client"
    )]
    let built = std::thread::spawn(move || {
        let builder = reqwest::blocking::Client::builder().timeout(timeout);
        match trusted {
            Some(certificates) => builder.tls_certs_only(certificates),
            None => builder,
        }
        .build()
    })
    .join()
    .map_err(|_| OtelError::Exporter("building the OTLP HTTP client panicked".to_owned()))?;
    built
        .map_err(|error| OtelError::Exporter(format!("cannot build the OTLP HTTP client: {error}")))
}

/// TLS for an `https://` gRPC endpoint: the system roots, or only the certificates of
/// `OTEL_EXPORTER_OTLP_[METRICS_]CERTIFICATE` when set.
fn grpc_tls(
    otlp: &OtlpConfig,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, OtelError> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    Ok(match trusted_pem(otlp)? {
        Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
        None => ClientTlsConfig::new().with_native_roots(),
    })
}

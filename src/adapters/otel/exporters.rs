//! Builds the SDK pipeline for the configured exporter: a Prometheus registry behind our HTTP
//! server, a periodic OTLP push (HTTP/protobuf on the SDK's own thread with the blocking
//! reqwest client, or gRPC via tonic), or periodic console output.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use tokio_util::sync::CancellationToken;

use super::OtelError;
use super::config::{ExporterConfig, OtelConfig, OtlpConfig, OtlpProtocol};
use super::http;
use crate::ports::Readiness;

/// A built provider plus, for Prometheus, the bound address of the server.
pub(crate) struct Pipeline {
    pub(crate) provider: SdkMeterProvider,
    pub(crate) prometheus_addr: Option<SocketAddr>,
}

/// Builds the provider for `config`. Binds the Prometheus port first, so a bad or busy port
/// fails here, before anything is installed. The server stops when `stop` fires.
pub(crate) fn build(
    config: &OtelConfig,
    readiness: Readiness,
    stop: &CancellationToken,
) -> Result<Pipeline, OtelError> {
    let builder = SdkMeterProvider::builder().with_resource(resource(&config.resource));
    match &config.exporter {
        ExporterConfig::None => Err(OtelError::Disabled),
        ExporterConfig::Prometheus { host, port } => {
            let listener = http::bind_prometheus(host, *port)?;
            let registry = prometheus::Registry::new();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                // The catalogue's names already carry `_total` and `_seconds`.
                .without_counter_suffixes()
                .without_units()
                .build()
                .map_err(|error| OtelError::Exporter(error.to_string()))?;
            let provider = builder.with_reader(exporter).build();
            let addr = http::serve(listener, Some(registry), readiness, stop.clone())?;
            Ok(Pipeline {
                provider,
                prometheus_addr: Some(addr),
            })
        }
        ExporterConfig::Otlp(otlp) => {
            let reader = PeriodicReader::builder(otlp_exporter(otlp)?)
                .with_interval(otlp.interval)
                .build();
            Ok(Pipeline {
                provider: builder.with_reader(reader).build(),
                prometheus_addr: None,
            })
        }
        ExporterConfig::Console { interval } => {
            let reader = PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default())
                .with_interval(*interval)
                .build();
            Ok(Pipeline {
                provider: builder.with_reader(reader).build(),
                prometheus_addr: None,
            })
        }
    }
}

/// The resource from already-merged attributes; no detector reads the process environment.
fn resource(attributes: &BTreeMap<String, String>) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .build()
}

fn otlp_exporter(otlp: &OtlpConfig) -> Result<opentelemetry_otlp::MetricExporter, OtelError> {
    let built = match otlp.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
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
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
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

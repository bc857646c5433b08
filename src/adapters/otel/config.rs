//! The metrics configuration, read from the standard `OTEL_*` variables through a lookup seam
//! (the adapter never reads the process environment itself) and validated up front.
//!
//! Semantics follow the reference's `autoexport` v0.68.0 (see docs/metrics.md).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::OtelError;

/// `service.name`, which always wins over `OTEL_SERVICE_NAME`.
pub const SERVICE_NAME: &str = "oz-agent-worker";
/// The Prometheus host when `OTEL_EXPORTER_PROMETHEUS_HOST` is unset.
pub const DEFAULT_PROMETHEUS_HOST: &str = "localhost";
/// The Prometheus port when `OTEL_EXPORTER_PROMETHEUS_PORT` is unset.
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9464;
/// The OTLP/HTTP endpoint base when no endpoint variable is set.
pub const DEFAULT_OTLP_HTTP_ENDPOINT: &str = "http://localhost:4318";
/// The OTLP/gRPC endpoint when no endpoint variable is set.
pub const DEFAULT_OTLP_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// `OTEL_METRIC_EXPORT_INTERVAL` default.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_millis(60_000);
/// `OTEL_METRIC_EXPORT_TIMEOUT` default (the OpenTelemetry SDK's): the bound on one OTLP export
/// unless `OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT` sets a shorter one.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(30_000);

/// What the worker tells the metrics pipeline about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `service.version` and `oz_worker_info{version}`; omitted from the resource when empty.
    pub version: String,
    /// The backend name (`docker`, `kubernetes`, `direct`, `command`). The reference reports
    /// `""` when Docker is only the implicit default; we always report the actual backend.
    pub backend: String,
    /// `worker.id` and `oz_worker_info{worker_id}`.
    pub worker_id: String,
}

/// The validated metrics configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelConfig {
    /// Which exporter `OTEL_METRICS_EXPORTER` selects.
    pub exporter: ExporterConfig,
    /// The resource attributes, merged in the Go worker's order (later wins).
    pub resource: BTreeMap<String, String>,
    /// Labels of `oz_worker_info`.
    pub service: ServiceInfo,
}

/// The exporter and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExporterConfig {
    /// `none`: no pipeline at all.
    None,
    /// `otlp` (also unset or empty): periodic push.
    Otlp(OtlpConfig),
    /// `prometheus`: a pull server on `host:port` serving `/metrics`, `/healthz`, `/readyz`.
    Prometheus {
        /// The listen host; empty means all interfaces.
        host: String,
        /// The listen port (0 picks a free one).
        port: u16,
    },
    /// `console`: periodic output to stdout.
    Console {
        /// `OTEL_METRIC_EXPORT_INTERVAL`.
        interval: Duration,
    },
}

/// `OTEL_EXPORTER_OTLP_*` settings for the metrics signal.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The wire protocol.
    pub protocol: OtlpProtocol,
    /// The full endpoint URL (for HTTP it already ends in `/v1/metrics`).
    pub endpoint: String,
    /// Extra request headers (may hold credentials: never logged).
    pub headers: BTreeMap<String, String>,
    /// The bound on one export: `OTEL_METRIC_EXPORT_TIMEOUT` (default 30 s), or the
    /// OTLP request timeout `OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT` when that is set and
    /// shorter (both bound an export in the reference, so the shorter one wins).
    pub timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_[METRICS_]CERTIFICATE`: a PEM file of the CA certificates trusted
    /// for an `https://` endpoint, instead of the system roots (as the reference).
    pub certificate: Option<PathBuf>,
    /// `OTEL_METRIC_EXPORT_INTERVAL`.
    pub interval: Duration,
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        f.debug_struct("OtlpConfig")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("headers", &header_names)
            .field("timeout", &self.timeout)
            .field("certificate", &self.certificate)
            .field("interval", &self.interval)
            .finish()
    }
}

/// `OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default).
    HttpProtobuf,
    /// `grpc`.
    Grpc,
}

impl OtelConfig {
    /// Reads every `OTEL_*` variable through `lookup` (e.g. `|k| std::env::var(k).ok()`).
    ///
    /// Errors name the variable and what was expected; header values never appear in them.
    pub fn from_env(
        lookup: &dyn Fn(&str) -> Option<String>,
        service: ServiceInfo,
    ) -> Result<OtelConfig, OtelError> {
        let resource = resource_attributes(lookup, &service)?;
        let exporter = match lookup("OTEL_METRICS_EXPORTER").as_deref() {
            Some("none") => ExporterConfig::None,
            None | Some("") | Some("otlp") => ExporterConfig::Otlp(otlp_config(lookup)?),
            Some("prometheus") => prometheus_config(lookup)?,
            Some("console") => ExporterConfig::Console {
                interval: export_interval(lookup)?,
            },
            Some(other) => return Err(OtelError::UnknownExporter(other.to_owned())),
        };
        Ok(OtelConfig {
            exporter,
            resource,
            service,
        })
    }
}

fn prometheus_config(lookup: &dyn Fn(&str) -> Option<String>) -> Result<ExporterConfig, OtelError> {
    let host = lookup("OTEL_EXPORTER_PROMETHEUS_HOST")
        .unwrap_or_else(|| DEFAULT_PROMETHEUS_HOST.to_owned());
    let port = match lookup("OTEL_EXPORTER_PROMETHEUS_PORT") {
        None => DEFAULT_PROMETHEUS_PORT,
        Some(value) => value
            .trim()
            .parse::<u16>()
            .map_err(|_| OtelError::InvalidValue {
                variable: "OTEL_EXPORTER_PROMETHEUS_PORT",
                value,
                expected: "a TCP port number (0-65535)",
            })?,
    };
    Ok(ExporterConfig::Prometheus { host, port })
}

fn otlp_config(lookup: &dyn Fn(&str) -> Option<String>) -> Result<OtlpConfig, OtelError> {
    let protocol = match first_set(lookup, &METRICS_OR_GENERIC_PROTOCOL) {
        None => OtlpProtocol::HttpProtobuf,
        Some((_, value)) => match value.as_str() {
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            "grpc" => OtlpProtocol::Grpc,
            _ => return Err(OtelError::InvalidProtocol(value)),
        },
    };
    let endpoint = match (
        lookup("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").filter(|v| !v.is_empty()),
        lookup("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.is_empty()),
        protocol,
    ) {
        (Some(signal), _, _) => with_scheme(&signal),
        (None, Some(base), OtlpProtocol::HttpProtobuf) => {
            format!("{}/v1/metrics", with_scheme(&base).trim_end_matches('/'))
        }
        (None, Some(base), OtlpProtocol::Grpc) => with_scheme(&base),
        (None, None, OtlpProtocol::HttpProtobuf) => {
            format!("{DEFAULT_OTLP_HTTP_ENDPOINT}/v1/metrics")
        }
        (None, None, OtlpProtocol::Grpc) => DEFAULT_OTLP_GRPC_ENDPOINT.to_owned(),
    };
    if url::Url::parse(&endpoint).is_err() {
        return Err(OtelError::InvalidValue {
            variable: "OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT",
            value: endpoint,
            expected: "a URL such as http://collector:4318",
        });
    }
    let headers = match first_set(lookup, &METRICS_OR_GENERIC_HEADERS) {
        None => BTreeMap::new(),
        Some((variable, value)) => parse_pairs(variable, &value, "k1=v1,k2=v2", false)?,
    };
    let export_timeout = match lookup("OTEL_METRIC_EXPORT_TIMEOUT").filter(|v| !v.is_empty()) {
        None => DEFAULT_EXPORT_TIMEOUT,
        Some(value) => parse_millis("OTEL_METRIC_EXPORT_TIMEOUT", value)?,
    };
    let timeout = match first_set(lookup, &METRICS_OR_GENERIC_TIMEOUT) {
        None => export_timeout,
        Some((variable, value)) => parse_millis(variable, value)?.min(export_timeout),
    };
    let certificate =
        first_set(lookup, &METRICS_OR_GENERIC_CERTIFICATE).map(|(_, path)| PathBuf::from(path));
    Ok(OtlpConfig {
        protocol,
        endpoint,
        headers,
        timeout,
        certificate,
        interval: export_interval(lookup)?,
    })
}

const METRICS_OR_GENERIC_PROTOCOL: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
const METRICS_OR_GENERIC_HEADERS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];
const METRICS_OR_GENERIC_TIMEOUT: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
];
const METRICS_OR_GENERIC_CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];

/// The first of `variables` that is set and non-empty, with its value.
fn first_set(
    lookup: &dyn Fn(&str) -> Option<String>,
    variables: &[&'static str],
) -> Option<(&'static str, String)> {
    variables.iter().find_map(|variable| {
        lookup(variable)
            .filter(|value| !value.is_empty())
            .map(|value| (*variable, value))
    })
}

fn export_interval(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Duration, OtelError> {
    match lookup("OTEL_METRIC_EXPORT_INTERVAL").filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_EXPORT_INTERVAL),
        Some(value) => parse_millis("OTEL_METRIC_EXPORT_INTERVAL", value),
    }
}

fn parse_millis(variable: &'static str, value: String) -> Result<Duration, OtelError> {
    match value.trim().parse::<u64>() {
        Ok(millis) if millis > 0 => Ok(Duration::from_millis(millis)),
        _ => Err(OtelError::InvalidValue {
            variable,
            value,
            expected: "a positive number of milliseconds",
        }),
    }
}

/// `localhost:4317` (accepted by the reference for gRPC) becomes `http://localhost:4317`.
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// The resource, merged as the Go worker's SDK does: the environment, then the SDK's own attributes,
/// then the worker's (which win).
fn resource_attributes(
    lookup: &dyn Fn(&str) -> Option<String>,
    service: &ServiceInfo,
) -> Result<BTreeMap<String, String>, OtelError> {
    let mut attributes = match lookup("OTEL_RESOURCE_ATTRIBUTES").filter(|v| !v.is_empty()) {
        None => BTreeMap::new(),
        Some(value) => parse_pairs(
            "OTEL_RESOURCE_ATTRIBUTES",
            &value,
            "key1=value1,key2=value2",
            true,
        )?,
    };
    if let Some(name) = lookup("OTEL_SERVICE_NAME").filter(|v| !v.is_empty()) {
        attributes.insert("service.name".to_owned(), name);
    }
    let mut set = |key: &str, value: &str| attributes.insert(key.to_owned(), value.to_owned());
    set("telemetry.sdk.name", "opentelemetry");
    set("telemetry.sdk.language", "rust");
    set("telemetry.sdk.version", SDK_VERSION);
    set("service.name", SERVICE_NAME);
    if !service.version.is_empty() {
        set("service.version", &service.version);
    }
    set("worker.id", &service.worker_id);
    if !service.backend.is_empty() {
        set("worker.backend", &service.backend);
    }
    Ok(attributes)
}

/// The opentelemetry_sdk minor this crate is built against.
const SDK_VERSION: &str = "0.33";

/// Parses `k1=v1,k2=v2` with percent-decoded values (W3C baggage style, as the OTel spec).
/// `show_value` is false for headers, so a credential never lands in an error message.
fn parse_pairs(
    variable: &'static str,
    input: &str,
    expected: &'static str,
    show_value: bool,
) -> Result<BTreeMap<String, String>, OtelError> {
    let invalid = |entry: &str| OtelError::InvalidValue {
        variable,
        value: if show_value {
            entry.to_owned()
        } else {
            "<redacted>".to_owned()
        },
        expected,
    };
    let mut pairs = BTreeMap::new();
    for entry in input.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(invalid(entry));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(entry));
        }
        pairs.insert(key.to_owned(), percent_decode(value.trim()));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes; anything else (including a malformed escape) is kept as it is.
fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        let escape = bytes
            .get(idx + 1..idx + 3)
            .filter(|_| bytes[idx] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) => {
                decoded.push(byte);
                idx += 3;
            }
            None => {
                decoded.push(bytes[idx]);
                idx += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

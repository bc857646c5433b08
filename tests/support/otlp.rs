//! OTLP metrics sinks on loopback for the exporter tests: OTLP/HTTP (protobuf, a small hyper
//! server) and OTLP/gRPC (a tonic `MetricsService`). Both decode `ExportMetricsServiceRequest`
//! with prost and keep every request, flattened to [`Export`]s, for the test to inspect. A
//! third sink speaks OTLP/HTTP over TLS with a test CA, for `https://` endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use prost::Message;

/// One decoded export request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Export {
    /// Request headers (HTTP) or metadata (gRPC), lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Resource attributes.
    pub resource: BTreeMap<String, String>,
    /// The resource's `schema_url`.
    pub schema_url: String,
    /// Instrumentation scope names.
    pub scopes: Vec<String>,
    /// Every metric.
    pub metrics: Vec<MetricSeen>,
}

/// One metric of an export, with its points flattened.
#[derive(Debug, Clone)]
pub(crate) struct MetricSeen {
    /// The name.
    pub name: String,
    /// The description.
    pub description: String,
    /// The unit.
    pub unit: String,
    /// `counter`, `up_down_counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Points: attributes and value (the count, for a histogram).
    pub points: Vec<(BTreeMap<String, String>, f64)>,
    /// Histogram sums, parallel to `points` (0 elsewhere).
    pub sums: Vec<f64>,
}

impl Export {
    /// The metric called `name`.
    pub(crate) fn metric(&self, name: &str) -> Option<&MetricSeen> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The value of `name` at exactly the attributes `labels`.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let metric = self.metric(name)?;
        metric
            .points
            .iter()
            .find(|(attrs, _)| *attrs == want)
            .map(|(_, v)| *v)
    }
}

/// Requests received so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Received(Arc<Mutex<Vec<Export>>>);

impl Received {
    /// A snapshot.
    pub(crate) fn all(&self) -> Vec<Export> {
        self.0.lock().unwrap().clone()
    }

    /// Polls (bounded) until at least `n` requests arrived; returns the last one.
    pub(crate) async fn wait_for(&self, n: usize, within: Duration) -> Export {
        let what = format!("the OTLP sink to get at least {n} requests");
        crate::support::eventually_some(&what, within, || async {
            self.0
                .lock()
                .unwrap()
                .get(n.saturating_sub(1)..)
                .and_then(|r| r.last())
                .cloned()
        })
        .await
    }

    fn push(&self, headers: BTreeMap<String, String>, request: &ExportMetricsServiceRequest) {
        self.0.lock().unwrap().push(flatten(headers, request));
    }
}

/// Starts an OTLP/HTTP sink on `127.0.0.1:0` answering `POST /v1/metrics`
/// (`application/x-protobuf`; anything else gets 415/404 and is not recorded).
pub(crate) async fn start_http_sink() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let sink = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<Incoming>| {
                    let sink = sink.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer_http(&sink, request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

async fn answer_http(
    sink: &Received,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let status = |code: u16| {
        hyper::Response::builder()
            .status(code)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    if request.uri().path() != "/v1/metrics" {
        return status(404);
    }
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    if headers.get("content-type").map(String::as_str) != Some("application/x-protobuf") {
        return status(415);
    }
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let Ok(decoded) = ExportMetricsServiceRequest::decode(body) else {
        return status(400);
    };
    sink.push(headers, &decoded);
    hyper::Response::builder()
        .status(200)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(
            ExportMetricsServiceResponse::default().encode_to_vec(),
        )))
        .unwrap()
}

struct GrpcSink(Received);

#[tonic::async_trait]
impl MetricsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        self.0.push(headers, request.get_ref());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Starts an OTLP/gRPC sink (tonic `MetricsService`) on `127.0.0.1:0`.
pub(crate) async fn start_grpc_sink() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let service = MetricsServiceServer::new(GrpcSink(received.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, received)
}

fn attrs(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn flatten(headers: BTreeMap<String, String>, request: &ExportMetricsServiceRequest) -> Export {
    let mut export = Export {
        headers,
        ..Export::default()
    };
    for resource_metrics in &request.resource_metrics {
        if let Some(resource) = &resource_metrics.resource {
            export.resource.extend(attrs(&resource.attributes));
        }
        export.schema_url.clone_from(&resource_metrics.schema_url);
        for scope_metrics in &resource_metrics.scope_metrics {
            if let Some(scope) = &scope_metrics.scope {
                export.scopes.push(scope.name.clone());
            }
            for metric in &scope_metrics.metrics {
                export.metrics.push(flatten_metric(metric));
            }
        }
    }
    export
}

fn flatten_metric(metric: &opentelemetry_proto::tonic::metrics::v1::Metric) -> MetricSeen {
    let number = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        Some(number_data_point::Value::AsDouble(d)) => *d,
        None => f64::NAN,
    };
    let (kind, points, sums) = match &metric.data {
        Some(Data::Sum(sum)) => (
            if sum.is_monotonic {
                "counter"
            } else {
                "up_down_counter"
            },
            sum.data_points
                .iter()
                .map(|p| (attrs(&p.attributes), number(&p.value)))
                .collect(),
            vec![0.0; sum.data_points.len()],
        ),
        Some(Data::Gauge(gauge)) => (
            "gauge",
            gauge
                .data_points
                .iter()
                .map(|p| (attrs(&p.attributes), number(&p.value)))
                .collect(),
            vec![0.0; gauge.data_points.len()],
        ),
        Some(Data::Histogram(histogram)) => (
            "histogram",
            histogram
                .data_points
                .iter()
                .map(|p| (attrs(&p.attributes), p.count as f64))
                .collect(),
            histogram
                .data_points
                .iter()
                .map(|p| p.sum.unwrap_or(f64::NAN))
                .collect(),
        ),
        _ => ("other", Vec::new(), Vec::new()),
    };
    MetricSeen {
        name: metric.name.clone(),
        description: metric.description.clone(),
        unit: metric.unit.clone(),
        kind,
        points,
        sums,
    }
}

/// The CA that signed [`TLS_SINK_CERT`] (self-signed, valid until 2125; test use only).
pub(crate) const TLS_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBmjCCAUGgAwIBAgIUWrPp0orkv1VICqWMEClr8YqoFI8wCgYIKoZIzj0EAwIw\nGjEYMBYGA1UEAwwPb3otdGVzdCBPVExQIENBMCAXDTI2MTIwMjA3MDMyMVoYDzIx\nMjYxMTA4MDcwMzIxWjAaMRgwFgYDVQQDDA9vei10ZXN0IE9UTFAgQ0EwWTATBgcq\nhkjOPQIBBggqhkjOPQMBBwNCAASTjocw4/FnnJGwFCkPXCEbC0CUBKdroI2fX3Bm\nuM0xyZ+AiIYXmdMMCpKT/ADc33l4E8bNM5qy89aYkSh/zNHAo2MwYTAdBgNVHQ4E\nFgQUC7Rfef5kjEmDWkcfZtVHk1dNM3YwHwYDVR0jBBgwFoAUC7Rfef5kjEmDWkcf\nZtVHk1dNM3YwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAgQwCgYIKoZI\nzj0EAwIDRwAwRAIgH+yAUdCUrEWPuoc2lKxAuHIzCepUF+wq74FD0ucv9DICIC6r\nxiY+BTzCYG4n00yEFYQfYzjXsElu6Ygq81Ac5FIx\n-----END CERTIFICATE-----\n";
/// The TLS sink's certificate: `localhost` and `127.0.0.1`, signed by [`TLS_CA_PEM`].
const TLS_SINK_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBxDCCAWugAwIBAgIUPmGYihSgbFwFs0/C4FiYYxzcGqgwCgYIKoZIzj0EAwIw\nGjEYMBYGA1UEAwwPb3otdGVzdCBPVExQIENBMCAXDTI2MTIwMjA3MDMyMVoYDzIx\nMjYxMTA4MDcwMzIxWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIB\nBggqhkjOPQMBBwNCAAT8DPYLFN98bVd4Z8HeDEWXGnxQca7EW1NCjEhnzFNnDevo\n/XMglYpB2RJ18s/wA0wDuwiW9ZVw/8U5EgKuWMQLo4GSMIGPMAwGA1UdEwEB/wQC\nMAAwDgYDVR0PAQH/BAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMBoGA1UdEQQT\nMBGCCWxvY2FsaG9zdIcEfwAAATAdBgNVHQ4EFgQUauwj0/dOZCDtkJFwJBqnKD5c\nrmcwHwYDVR0jBBgwFoAUC7Rfef5kjEmDWkcfZtVHk1dNM3YwCgYIKoZIzj0EAwID\nRwAwRAIgOCNBTW1+25XBUn5naMmj6tlXybDuwR0g9OwFAGccXZACIFAXi3zidBRz\ncTrUpE1eK8Mnl30gUh+SyndocwHxTqV0\n-----END CERTIFICATE-----\n";
/// The TLS sink's private key (PKCS#8, P-256; test use only).
const TLS_SINK_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgeBi3wqnNcE1bi6Qj\n3AgLFcA7HK67LzcFGXRqUCHnuIWhRANCAAT8DPYLFN98bVd4Z8HeDEWXGnxQca7E\nW1NCjEhnzFNnDevo/XMglYpB2RJ18s/wA0wDuwiW9ZVw/8U5EgKuWMQL\n-----END PRIVATE KEY-----\n";

/// Starts an OTLP/HTTP sink over TLS (rustls on ring, certificate [`TLS_SINK_CERT`] for
/// `localhost`/`127.0.0.1`) on `127.0.0.1:0`. A small blocking HTTP/1.1 server on its own
/// threads: it records each `POST /v1/metrics` and answers 200; connections whose TLS
/// handshake fails (an untrusted client) are counted in the returned counter and dropped.
pub(crate) fn start_tls_http_sink() -> (SocketAddr, Received, Arc<std::sync::atomic::AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(TLS_SINK_CERT.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(TLS_SINK_KEY.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let failed_handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (sink, failed) = (received.clone(), failed_handshakes.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (config, sink, failed) = (config.clone(), sink.clone(), failed.clone());
            std::thread::spawn(move || serve_tls_connection(stream, config, &sink, &failed));
        }
    });
    (addr, received, failed_handshakes)
}

fn serve_tls_connection(
    stream: std::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    sink: &Received,
    failed_handshakes: &std::sync::atomic::AtomicUsize,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut connection = rustls::ServerConnection::new(config).unwrap();
    let mut tcp = stream;
    while connection.is_handshaking() {
        if connection.complete_io(&mut tcp).is_err() {
            failed_handshakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return;
        }
    }
    let mut reader = BufReader::new(rustls::StreamOwned::new(connection, tcp));
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let ok = request_line.starts_with("POST /v1/metrics ")
            && headers.get("content-type").map(String::as_str) == Some("application/x-protobuf");
        let status = match ExportMetricsServiceRequest::decode(body.as_slice()) {
            Ok(decoded) if ok => {
                sink.push(headers, &decoded);
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        let stream = reader.get_mut();
        if stream
            .write_all(response.as_bytes())
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

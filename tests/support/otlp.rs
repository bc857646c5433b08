//! OTLP metrics sinks on loopback for the exporter tests: OTLP/HTTP (protobuf, a small hyper
//! server) and OTLP/gRPC (a tonic `MetricsService`). Both decode `ExportMetricsServiceRequest`
//! with prost and keep every request, flattened to [`Export`]s, for the test to inspect.

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
pub struct Export {
    /// Request headers (HTTP) or metadata (gRPC), lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Resource attributes.
    pub resource: BTreeMap<String, String>,
    /// Instrumentation scope names.
    pub scopes: Vec<String>,
    /// Every metric.
    pub metrics: Vec<MetricSeen>,
}

/// One metric of an export, with its points flattened.
#[derive(Debug, Clone)]
pub struct MetricSeen {
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
    pub fn metric(&self, name: &str) -> Option<&MetricSeen> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The value of `name` at exactly the attributes `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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
pub struct Received(Arc<Mutex<Vec<Export>>>);

impl Received {
    /// A snapshot.
    pub fn all(&self) -> Vec<Export> {
        self.0.lock().unwrap().clone()
    }

    /// Polls (bounded) until at least `n` requests arrived; returns the last one.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Export {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(last) = self
                .0
                .lock()
                .unwrap()
                .get(n.saturating_sub(1)..)
                .and_then(|r| r.last())
                .cloned()
            {
                return last;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the OTLP sink got fewer than {n} requests within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn push(&self, headers: BTreeMap<String, String>, request: &ExportMetricsServiceRequest) {
        self.0.lock().unwrap().push(flatten(headers, request));
    }
}

/// Starts an OTLP/HTTP sink on `127.0.0.1:0` answering `POST /v1/metrics`
/// (`application/x-protobuf`; anything else gets 415/404 and is not recorded).
pub async fn start_http_sink() -> (SocketAddr, Received) {
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
pub async fn start_grpc_sink() -> (SocketAddr, Received) {
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

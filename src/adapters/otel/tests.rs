//! In-process tests: configuration from `OTEL_*`, the catalogue as Prometheus text (kinds,
//! names, descriptions, priming, arithmetic), the health endpoints and the error paths.
//! Real consumers (Prometheus, OTLP sinks, console) are in `tests/contract/otel*.rs`.

#![allow(
    clippy::disallowed_methods,
    reason = "unit tests spawn the task under test and await or abort it"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::domain::{FailurePhase, FailureReason, RejectReason, TaskResult};

fn service() -> ServiceInfo {
    ServiceInfo {
        version: "v-test".to_owned(),
        backend: "docker".to_owned(),
        worker_id: "w-1".to_owned(),
    }
}

fn config_from(vars: &[(&str, &str)]) -> Result<OtelConfig, OtelError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    OtelConfig::from_env(&|key| vars.get(key).cloned(), service())
}

fn otlp(config: OtelConfig) -> OtlpConfig {
    match config.exporter {
        ExporterConfig::Otlp(otlp) => otlp,
        other => panic!("expected otlp, got {other:?}"),
    }
}

#[test]
fn unset_or_empty_exporter_means_otlp_http_to_localhost() {
    for vars in [&[][..], &[("OTEL_METRICS_EXPORTER", "")][..]] {
        let otlp = otlp(config_from(vars).unwrap());
        assert_eq!(otlp.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(otlp.endpoint, "http://localhost:4318/v1/metrics");
        assert_eq!(otlp.interval, Duration::from_secs(60));
        assert_eq!(otlp.timeout, Duration::from_secs(30));
        assert_eq!(otlp.certificate, None);
    }
}

#[test]
fn the_export_timeout_is_otel_metric_export_timeout_unless_an_otlp_timeout_is_shorter() {
    let timeout = |vars: &[(&str, &str)]| otlp(config_from(vars).unwrap()).timeout;
    assert_eq!(timeout(&[]), DEFAULT_EXPORT_TIMEOUT);
    assert_eq!(DEFAULT_EXPORT_TIMEOUT, Duration::from_secs(30));
    assert_eq!(
        timeout(&[("OTEL_METRIC_EXPORT_TIMEOUT", "5000")]),
        Duration::from_secs(5)
    );
    assert_eq!(
        timeout(&[("OTEL_METRIC_EXPORT_TIMEOUT", "")]),
        DEFAULT_EXPORT_TIMEOUT
    );
    // The OTLP request timeout bounds each export too: the shorter of the two wins.
    assert_eq!(
        timeout(&[
            ("OTEL_METRIC_EXPORT_TIMEOUT", "5000"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ]),
        Duration::from_secs(2)
    );
    assert_eq!(
        timeout(&[
            ("OTEL_METRIC_EXPORT_TIMEOUT", "5000"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
        ]),
        Duration::from_secs(5)
    );
    assert_eq!(
        timeout(&[
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ]),
        Duration::from_secs(1)
    );
    for bad in ["soon", "0", "-5"] {
        let error = config_from(&[("OTEL_METRIC_EXPORT_TIMEOUT", bad)]).unwrap_err();
        assert!(
            error.to_string().contains("OTEL_METRIC_EXPORT_TIMEOUT"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn the_certificate_comes_from_the_metrics_or_generic_variable() {
    let certificate = |vars: &[(&str, &str)]| otlp(config_from(vars).unwrap()).certificate;
    assert_eq!(
        certificate(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem")]),
        Some("/etc/ca.pem".into())
    );
    assert_eq!(
        certificate(&[
            (
                "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
                "/etc/metrics-ca.pem"
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
        ]),
        Some("/etc/metrics-ca.pem".into())
    );
    assert_eq!(certificate(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "")]), None);
}

#[test]
fn none_is_exact_and_anything_unknown_is_an_error() {
    let config = config_from(&[("OTEL_METRICS_EXPORTER", "none")]).unwrap();
    assert_eq!(config.exporter, ExporterConfig::None);
    for bad in ["None", " none", "jaeger", "otlp,prometheus"] {
        let error = config_from(&[("OTEL_METRICS_EXPORTER", bad)]).unwrap_err();
        assert!(matches!(error, OtelError::UnknownExporter(_)), "{bad}");
        assert!(
            error
                .to_string()
                .contains("unknown exporter or metrics producer")
        );
    }
}

#[test]
fn prometheus_defaults_apply_only_when_unset() {
    let config = config_from(&[("OTEL_METRICS_EXPORTER", "prometheus")]).unwrap();
    assert_eq!(
        config.exporter,
        ExporterConfig::Prometheus {
            host: "localhost".to_owned(),
            port: 9464
        }
    );
    let config = config_from(&[
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_EXPORTER_PROMETHEUS_HOST", ""),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "9100"),
    ])
    .unwrap();
    assert_eq!(
        config.exporter,
        ExporterConfig::Prometheus {
            host: String::new(),
            port: 9100
        }
    );
}

#[test]
fn a_bad_prometheus_port_names_the_variable() {
    for bad in ["99999", "http", "-1", ""] {
        let error = config_from(&[
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", bad),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("OTEL_EXPORTER_PROMETHEUS_PORT"),
            "{error}"
        );
    }
}

#[test]
fn otlp_protocol_and_endpoint_follow_the_standard_variables() {
    let grpc = otlp(config_from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap());
    assert_eq!(grpc.protocol, OtlpProtocol::Grpc);
    assert_eq!(grpc.endpoint, "http://localhost:4317");

    let signal_wins = otlp(
        config_from(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ])
        .unwrap(),
    );
    assert_eq!(signal_wins.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(signal_wins.endpoint, "http://collector:4318/v1/metrics");

    let as_is = otlp(
        config_from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:9/custom"),
        ])
        .unwrap(),
    );
    assert_eq!(as_is.endpoint, "http://c:9/custom");

    let bare_grpc = otlp(
        config_from(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ])
        .unwrap(),
    );
    assert_eq!(bare_grpc.endpoint, "http://collector:4317");

    let error = config_from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid OTLP protocol \"http/json\" - should be one of ['grpc', 'http/protobuf']"
    );
}

#[test]
fn interval_timeout_and_headers_are_read_and_header_values_never_shown() {
    let otlp = otlp(
        config_from(&[
            ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=s3cr%3Dt, tenant = a",
            ),
        ])
        .unwrap(),
    );
    assert_eq!(otlp.interval, Duration::from_millis(1500));
    assert_eq!(otlp.timeout, Duration::from_millis(2000));
    assert_eq!(otlp.headers["x-api-key"], "s3cr=t");
    assert_eq!(otlp.headers["tenant"], "a");
    assert!(!format!("{otlp:?}").contains("s3cr"));

    let error = config_from(&[("OTEL_EXPORTER_OTLP_HEADERS", "token-s3cret")]).unwrap_err();
    assert!(!error.to_string().contains("s3cret"), "{error}");
    let error = config_from(&[("OTEL_METRIC_EXPORT_INTERVAL", "soon")]).unwrap_err();
    assert!(error.to_string().contains("OTEL_METRIC_EXPORT_INTERVAL"));
}

#[test]
fn resource_merges_env_then_sdk_then_worker_which_wins() {
    let config = config_from(&[
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod,service.name=from-attrs,team=a%20b",
        ),
        ("OTEL_SERVICE_NAME", "from-service-name"),
    ])
    .unwrap();
    let r = &config.resource;
    assert_eq!(r["service.name"], "oz-agent-worker");
    assert_eq!(r["deployment.environment"], "prod");
    assert_eq!(r["team"], "a b");
    assert_eq!(r["service.version"], "v-test");
    assert_eq!(r["worker.id"], "w-1");
    assert_eq!(r["worker.backend"], "docker");
    assert_eq!(r["telemetry.sdk.language"], "rust");

    let mut bare = service();
    bare.version.clear();
    bare.backend.clear();
    let config = OtelConfig::from_env(&|_| None, bare).unwrap();
    assert!(!config.resource.contains_key("service.version"));
    assert!(!config.resource.contains_key("worker.backend"));
}

fn prometheus_config(port: u16) -> OtelConfig {
    config_from(&[
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", &port.to_string()),
    ])
    .unwrap()
}

/// A minimal HTTP/1.0 GET: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sample lines of `name` (exactly) that carry every `k="v"` in `labels`.
fn samples<'a>(text: &'a str, name: &str, labels: &[(&str, &str)]) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .collect()
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(text, name, labels);
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_exposes_the_primed_catalogue_with_exact_names_kinds_and_help() {
    let metrics = OtelMetrics::start(&prometheus_config(0), Readiness::default()).unwrap();
    metrics.set_max_concurrent(0);
    let addr = metrics.prometheus_addr().unwrap();
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);

    for spec in CATALOGUE {
        let kind = match spec.kind {
            "counter" => "counter",
            "histogram" => continue,
            _ => "gauge",
        };
        assert!(
            text.contains(&format!("# TYPE {} {kind}\n", spec.name)),
            "{}",
            spec.name
        );
        assert!(
            text.contains(&format!("# HELP {} {}\n", spec.name, spec.description)),
            "{}",
            spec.name
        );
    }
    // The histogram stays absent until the first task finishes.
    assert!(!text.contains("oz_worker_task_duration_seconds"));
    let scope = [("otel_scope_name", SCOPE_NAME)];
    assert_eq!(
        samples(&text, "oz_worker_task_failures_total", &scope).len(),
        87
    );
    assert_eq!(
        samples(&text, "oz_worker_tasks_completed_total", &scope).len(),
        4
    );
    assert_eq!(
        samples(&text, "oz_worker_tasks_rejected_total", &scope).len(),
        2
    );
    assert_eq!(
        samples(&text, "oz_worker_websocket_reconnects_total", &scope).len(),
        2
    );
    for name in [
        "oz_worker_connected",
        "oz_worker_tasks_active",
        "oz_worker_tasks_max_concurrent",
        "oz_worker_tasks_claimed_total",
    ] {
        assert_eq!(value(&text, name, &scope), 0.0, "{name}");
    }
    let info = [
        ("version", "v-test"),
        ("backend", "docker"),
        ("worker_id", "w-1"),
    ];
    assert_eq!(value(&text, "oz_worker_info", &info), 1.0);
    assert_eq!(
        samples(
            &text,
            "target_info",
            &[("service_name", "oz-agent-worker"), ("worker_id", "w-1")]
        )
        .len(),
        1
    );
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_add_up_on_the_right_series() {
    let metrics = OtelMetrics::start(&prometheus_config(0), Readiness::default()).unwrap();
    metrics.set_max_concurrent(-3);
    let finished = |result, secs, failure| Signal::TaskFinished {
        result,
        duration: Duration::from_secs(secs),
        failure,
    };
    for signal in [
        Signal::DialFailed,
        Signal::DialFailed,
        Signal::Connected,
        Signal::TaskClaimed,
        Signal::TaskClaimed,
        Signal::TaskClaimed,
        Signal::TaskRejected(RejectReason::AtCapacity),
        finished(TaskResult::Succeeded, 3, None),
        finished(
            TaskResult::Failed,
            30,
            Some((FailurePhase::Backend, FailureReason::ContainerOom)),
        ),
        Signal::Disconnected,
        Signal::TaskRejected(RejectReason::ShuttingDown),
    ] {
        metrics.record(signal);
    }
    let (_, text) = get(metrics.prometheus_addr().unwrap(), "/metrics").await;
    assert_eq!(value(&text, "oz_worker_tasks_max_concurrent", &[]), -3.0);
    assert_eq!(value(&text, "oz_worker_connected", &[]), 0.0);
    assert_eq!(value(&text, "oz_worker_tasks_claimed_total", &[]), 3.0);
    assert_eq!(value(&text, "oz_worker_tasks_active", &[]), 1.0);
    for (reason, n) in [("dial_failed", 2.0), ("remote_close", 1.0)] {
        let labels = [("reason", reason)];
        assert_eq!(
            value(&text, "oz_worker_websocket_reconnects_total", &labels),
            n
        );
    }
    for (reason, n) in [("at_capacity", 1.0), ("shutting_down", 1.0)] {
        assert_eq!(
            value(
                &text,
                "oz_worker_tasks_rejected_total",
                &[("reason", reason)]
            ),
            n
        );
    }
    for (result, n) in [("succeeded", 1.0), ("failed", 1.0), ("cancelled", 0.0)] {
        let labels = [("result", result)];
        assert_eq!(value(&text, "oz_worker_tasks_completed_total", &labels), n);
    }
    let oom = [("phase", "backend"), ("reason", "container_oom")];
    assert_eq!(value(&text, "oz_worker_task_failures_total", &oom), 1.0);
    let failed = [("result", "failed")];
    assert_eq!(
        value(&text, "oz_worker_task_duration_seconds_count", &failed),
        1.0
    );
    assert_eq!(
        value(&text, "oz_worker_task_duration_seconds_sum", &failed),
        30.0
    );
    let bucket = [("result", "failed"), ("le", "25")];
    assert_eq!(
        value(&text, "oz_worker_task_duration_seconds_bucket", &bucket),
        0.0
    );
    let bucket = [("result", "failed"), ("le", "50")];
    assert_eq!(
        value(&text, "oz_worker_task_duration_seconds_bucket", &bucket),
        1.0
    );
    // Only results that happened have a histogram series (no fake zero samples).
    let cancelled = [("result", "cancelled")];
    assert!(samples(&text, "oz_worker_task_duration_seconds_count", &cancelled).is_empty());
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_tell_liveness_and_readiness() {
    let readiness = Readiness::default();
    let health = HealthServer::bind("127.0.0.1:0".parse().unwrap(), readiness.clone()).unwrap();
    let addr = health.local_addr();
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    readiness.set_connected(true);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: connected=true backend_ready=false\n")
    );
    readiness.set_backend_ready(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/metrics").await.0, 404);

    // The Prometheus server answers the same two.
    let metrics = OtelMetrics::start(&prometheus_config(0), readiness.clone()).unwrap();
    let prometheus = metrics.prometheus_addr().unwrap();
    assert_eq!(get(prometheus, "/healthz").await.0, 200);
    assert_eq!(get(prometheus, "/readyz").await.0, 200);
    readiness.set_connected(false);
    assert_eq!(get(prometheus, "/readyz").await.0, 503);
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_is_an_error_value_and_init_falls_back_to_noop() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let error = OtelMetrics::start(&prometheus_config(port), Readiness::default()).unwrap_err();
    assert!(matches!(error, OtelError::Bind { .. }), "{error}");
    assert!(error.to_string().contains(&format!("127.0.0.1:{port}")));

    let port = port.to_string();
    let vars: HashMap<&str, &str> = [
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", port.as_str()),
    ]
    .into();
    let metrics = WorkerMetrics::init(
        &|k| vars.get(k).map(|v| (*v).to_owned()),
        service(),
        4,
        Readiness::default(),
    );
    assert!(metrics.otel().is_none());
    metrics.record(Signal::TaskClaimed);
    metrics.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_and_unknown_exporters_start_nothing_and_recording_still_works() {
    for exporter in ["none", "statsd"] {
        let metrics = WorkerMetrics::init(
            &|k| (k == "OTEL_METRICS_EXPORTER").then(|| exporter.to_owned()),
            service(),
            4,
            Readiness::default(),
        );
        assert!(metrics.otel().is_none(), "{exporter}");
        metrics.record(Signal::Connected);
        metrics.shutdown().await;
    }
    let config = config_from(&[("OTEL_METRICS_EXPORTER", "none")]).unwrap();
    assert!(matches!(
        OtelMetrics::start(&config, Readiness::default()),
        Err(OtelError::Disabled)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_the_flush_not_the_worker() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    for protocol in ["http/protobuf", "grpc"] {
        let config = config_from(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ])
        .unwrap();
        let metrics = OtelMetrics::start(&config, Readiness::default()).unwrap();
        metrics.record(Signal::TaskClaimed);
        let error = metrics.flush().await.unwrap_err();
        assert!(
            matches!(error, OtelError::Export(_) | OtelError::Timeout(_)),
            "{protocol}: {error}"
        );
        metrics.record(Signal::TaskClaimed);
        let _ = metrics.shutdown(SHUTDOWN_TIMEOUT).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_idle_for_120_s_is_closed_and_a_stalled_write_after_10_s() {
    use super::http::{Deadlines, IDLE_TIMEOUT, WRITE_TIMEOUT};
    assert_eq!(IDLE_TIMEOUT, Duration::from_secs(120));
    assert_eq!(WRITE_TIMEOUT, Duration::from_secs(10));

    // Nothing arrives: the read fails after exactly the idle timeout, not before.
    let (_client, server) = tokio::io::duplex(64);
    let mut stream = Deadlines::new(server, IDLE_TIMEOUT, WRITE_TIMEOUT);
    let started = tokio::time::Instant::now();
    let error = stream.read(&mut [0; 8]).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(started.elapsed(), IDLE_TIMEOUT);

    // Progress resets the clock: a byte every 100 s keeps the connection open.
    let (mut client, server) = tokio::io::duplex(64);
    let mut stream = Deadlines::new(server, IDLE_TIMEOUT, WRITE_TIMEOUT);
    let feeder = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(100)).await;
            client.write_all(b"x").await.unwrap();
        }
        client
    });
    for _ in 0..3 {
        assert_eq!(stream.read(&mut [0; 8]).await.unwrap(), 1);
    }
    let _client = feeder.await.unwrap();

    // The client stops reading: a write that cannot progress fails after the write timeout.
    let (_client, server) = tokio::io::duplex(4);
    let mut stream = Deadlines::new(server, IDLE_TIMEOUT, WRITE_TIMEOUT);
    let started = tokio::time::Instant::now();
    let error = stream.write_all(b"more than four bytes").await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(started.elapsed(), WRITE_TIMEOUT);
}

#[test]
fn every_address_is_bound_on_one_port() {
    let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    let listeners = super::http::bind_all(&[v4, v6, v4], "test").unwrap();
    let bound: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let port = bound[0].port();
    assert_ne!(port, 0);
    assert!(bound.iter().all(|addr| addr.port() == port), "{bound:?}");
    assert_eq!(bound[0].ip(), v4.ip());
    // ::1 is bound too, unless this host has no IPv6 at all.
    if std::net::TcpListener::bind(v6).is_ok() {
        assert_eq!(bound.len(), 2, "{bound:?}");
        assert_eq!(bound[1].ip(), v6.ip());
    }

    // A busy address among them fails the whole bind, naming what was asked for.
    let error = super::http::bind_all(&[bound[0]], "localhost:busy").unwrap_err();
    assert!(error.to_string().contains("localhost:busy"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_host_localhost_is_served_on_every_address_it_resolves_to() {
    use std::net::ToSocketAddrs;
    let metrics = OtelMetrics::start(
        &config_from(&[
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", "0"),
        ])
        .unwrap(),
        Readiness::default(),
    )
    .unwrap();
    let mut resolved: Vec<std::net::IpAddr> = ("localhost", 0)
        .to_socket_addrs()
        .unwrap()
        .map(|addr| addr.ip())
        .filter(|ip| std::net::TcpListener::bind((*ip, 0)).is_ok())
        .collect();
    resolved.dedup();
    let bound: Vec<std::net::IpAddr> = metrics.prometheus_addrs().iter().map(|a| a.ip()).collect();
    assert_eq!(bound, resolved);
    for addr in metrics.prometheus_addrs() {
        assert_eq!(get(*addr, "/healthz").await.0, 200, "{addr}");
        assert_eq!(get(*addr, "/metrics").await.0, 200, "{addr}");
    }
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
}

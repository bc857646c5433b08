//! The OTLP exporter against real sinks on loopback (HTTP/protobuf and gRPC): the decoded
//! protobuf carries the catalogue's names, kinds, units, descriptions, attributes, values and
//! the resource attributes. Also OTLP/HTTP over TLS to an `https://` endpoint, and the
//! `console` exporter's stdout, checked in a child process.

use std::collections::HashMap;
use std::time::Duration;

use oz_agent_worker::adapters::otel::{
    CATALOGUE, OtelConfig, OtelMetrics, SCOPE_NAME, SHUTDOWN_TIMEOUT, ServiceInfo,
};
use oz_agent_worker::domain::{FailurePhase, FailureReason, RejectReason, TaskResult};
use oz_agent_worker::ports::{Metrics, Readiness, Signal};

use crate::support::otlp::{
    Export, TLS_CA_PEM, start_grpc_sink, start_http_sink, start_tls_http_sink,
};

fn service() -> ServiceInfo {
    ServiceInfo {
        version: "v2026-01-01".to_owned(),
        backend: "kubernetes".to_owned(),
        worker_id: "w-otlp".to_owned(),
    }
}

fn config(vars: &[(&str, &str)]) -> OtelConfig {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    OtelConfig::from_env(&|key| vars.get(key).cloned(), service()).unwrap()
}

/// The scripted lifecycle every exporter test records.
pub(super) fn scripted_signals() -> Vec<Signal> {
    let finished = |result, secs, failure| Signal::TaskFinished {
        result,
        duration: Duration::from_secs(secs),
        failure,
    };
    vec![
        Signal::DialFailed,
        Signal::Connected,
        Signal::TaskClaimed,
        Signal::TaskClaimed,
        Signal::TaskClaimed,
        Signal::TaskRejected(RejectReason::AtCapacity),
        finished(TaskResult::Succeeded, 7, None),
        finished(
            TaskResult::Failed,
            120,
            Some((FailurePhase::Backend, FailureReason::ImagePull)),
        ),
    ]
}

fn assert_catalogue(export: &Export) {
    assert_eq!(export.scopes, vec![SCOPE_NAME.to_owned()]);
    let r = &export.resource;
    assert_eq!(r["service.name"], "oz-agent-worker");
    assert_eq!(r["service.version"], "v2026-01-01");
    assert_eq!(r["worker.id"], "w-otlp");
    assert_eq!(r["worker.backend"], "kubernetes");
    assert_eq!(r["telemetry.sdk.language"], "rust");
    // The semconv schema URL the Go worker's SDK (OTel Go v1.43, semconv v1.40.0) sends.
    assert_eq!(export.schema_url, "https://opentelemetry.io/schemas/1.40.0");
    assert_eq!(r["deployment.environment"], "test");

    for spec in CATALOGUE {
        let metric = export
            .metric(spec.name)
            .unwrap_or_else(|| panic!("{} missing", spec.name));
        assert_eq!(metric.kind, spec.kind, "{}", spec.name);
        assert_eq!(metric.unit, spec.unit, "{}", spec.name);
        assert_eq!(metric.description, spec.description, "{}", spec.name);
    }
    let count = |name| export.metric(name).unwrap().points.len();
    assert_eq!(count("oz_worker_task_failures_total"), 87);
    assert_eq!(count("oz_worker_tasks_completed_total"), 4);
    assert_eq!(count("oz_worker_tasks_rejected_total"), 2);
    assert_eq!(count("oz_worker_websocket_reconnects_total"), 2);
    assert_eq!(count("oz_worker_task_duration_seconds"), 2);

    let v = |name, labels: &[(&str, &str)]| export.value(name, labels);
    assert_eq!(v("oz_worker_connected", &[]), Some(1.0));
    assert_eq!(v("oz_worker_tasks_active", &[]), Some(1.0));
    assert_eq!(v("oz_worker_tasks_max_concurrent", &[]), Some(8.0));
    assert_eq!(v("oz_worker_tasks_claimed_total", &[]), Some(3.0));
    let at_capacity = [("reason", "at_capacity")];
    assert_eq!(v("oz_worker_tasks_rejected_total", &at_capacity), Some(1.0));
    let dial_failed = [("reason", "dial_failed")];
    assert_eq!(
        v("oz_worker_websocket_reconnects_total", &dial_failed),
        Some(1.0)
    );
    let failed = [("result", "failed")];
    assert_eq!(v("oz_worker_tasks_completed_total", &failed), Some(1.0));
    assert_eq!(v("oz_worker_task_duration_seconds", &failed), Some(1.0));
    let pull = [("phase", "backend"), ("reason", "image_pull")];
    assert_eq!(v("oz_worker_task_failures_total", &pull), Some(1.0));
    let unused = [("phase", "cleanup"), ("reason", "cleanup")];
    assert_eq!(v("oz_worker_task_failures_total", &unused), Some(0.0));
    let info = [
        ("backend", "kubernetes"),
        ("version", "v2026-01-01"),
        ("worker_id", "w-otlp"),
    ];
    assert_eq!(v("oz_worker_info", &info), Some(1.0));
    let duration = export.metric("oz_worker_task_duration_seconds").unwrap();
    let total: f64 = duration.sums.iter().sum();
    assert_eq!(total, 127.0);
}

async fn export_to(protocol: &str, endpoint: &str) -> OtelMetrics {
    let metrics = OtelMetrics::start(
        &config(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-oz-test=token%20one"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
        ]),
        Readiness::default(),
    )
    .unwrap();
    metrics.set_max_concurrent(8);
    for signal in scripted_signals() {
        metrics.record(signal);
    }
    metrics.flush().await.unwrap();
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_protobuf_export_decodes_to_the_catalogue() {
    let (addr, received) = start_http_sink().await;
    let metrics = export_to("http/protobuf", &format!("http://{addr}")).await;
    let export = received.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(export.headers["x-oz-test"], "token one");
    assert_catalogue(&export);

    // Shutdown flushes what was recorded since.
    metrics.record(Signal::TaskClaimed);
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
    let last = received.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(last.value("oz_worker_tasks_claimed_total", &[]), Some(4.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_export_decodes_to_the_catalogue() {
    let (addr, received) = start_grpc_sink().await;
    let metrics = export_to("grpc", &format!("http://{addr}")).await;
    let export = received.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(export.headers["x-oz-test"], "token one");
    assert_catalogue(&export);
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_over_tls_trusts_the_configured_ca_and_nothing_else() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (addr, received, failed_handshakes) = start_tls_http_sink();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, TLS_CA_PEM).unwrap();
    let endpoint = format!("https://localhost:{}", addr.port());
    let start = |certificate: Option<&str>| {
        let mut vars = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
        ];
        vars.extend(certificate.map(|path| ("OTEL_EXPORTER_OTLP_CERTIFICATE", path)));
        OtelMetrics::start(&config(&vars), Readiness::default()).unwrap()
    };

    // Trusting the test CA: the export arrives, decoded, over TLS.
    let metrics = start(Some(ca.to_str().unwrap()));
    metrics.record(Signal::TaskClaimed);
    metrics.flush().await.unwrap();
    let export = received.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        export.value("oz_worker_tasks_claimed_total", &[]),
        Some(1.0)
    );
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();

    // The system roots do not know the test CA: the handshake fails, nothing arrives.
    let before = received.all().len();
    let metrics = start(None);
    assert!(
        metrics.flush().await.is_err(),
        "an untrusted server was accepted"
    );
    assert_eq!(received.all().len(), before);
    crate::support::eventually(
        "the sink to see a refused handshake",
        Duration::from_secs(10),
        || async { failed_handshakes.load(std::sync::atomic::Ordering::SeqCst) > 0 },
    )
    .await;
    let _ = metrics.shutdown(SHUTDOWN_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_grpc_endpoint_builds_a_tls_client() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, TLS_CA_PEM).unwrap();
    for certificate in [None, Some(ca.to_str().unwrap())] {
        let mut vars = vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.invalid:4317",
            ),
        ];
        vars.extend(certificate.map(|path| ("OTEL_EXPORTER_OTLP_CERTIFICATE", path)));
        let metrics = OtelMetrics::start(&config(&vars), Readiness::default())
            .unwrap_or_else(|error| panic!("{certificate:?}: {error}"));
        let _ = metrics.shutdown(Duration::from_millis(100)).await;
    }
    // A certificate file that does not exist is a clear init error, naming the file.
    let error = OtelMetrics::start(
        &config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:4318"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
        ]),
        Readiness::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
}

/// Gate for the child process of `console_exporter_prints_the_catalogue_to_stdout`.
const CONSOLE_CHILD: &str = "OZ_TEST_OTEL_CONSOLE_CHILD";

/// Runs only as that child: records the script with the console exporter, then shuts down,
/// which prints to this process's stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_child_process() {
    if std::env::var(CONSOLE_CHILD).as_deref() != Ok("1") {
        return;
    }
    let metrics = OtelMetrics::start(
        &config(&[
            ("OTEL_METRICS_EXPORTER", "console"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ]),
        Readiness::default(),
    )
    .unwrap();
    metrics.set_max_concurrent(8);
    for signal in scripted_signals() {
        metrics.record(signal);
    }
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
}

#[test]
fn console_exporter_prints_the_catalogue_to_stdout() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "contract::otel_otlp::console_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CONSOLE_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for spec in CATALOGUE {
        assert!(
            stdout.contains(&format!("Name         : {}\n", spec.name)),
            "{} missing from:\n{stdout}",
            spec.name
        );
        assert!(stdout.contains(spec.description), "{}", spec.description);
    }
    assert!(stdout.contains(SCOPE_NAME));
    let resource_line = |key: &str| {
        stdout
            .lines()
            .find(|line| line.contains(&format!("->  {key}=")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(resource_line("service.name").contains("\"oz-agent-worker\""));
    assert!(resource_line("worker.id").contains("\"w-otlp\""));
    assert!(
        stdout.contains("Value        : 3"),
        "claimed_total = 3:\n{stdout}"
    );
}

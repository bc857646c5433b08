//! The Prometheus exporter against a real Prometheus (Debian's, unpacked by
//! `scripts/setup/30-prometheus.sh`): it scrapes the worker on loopback and the test reads the
//! series back through Prometheus' HTTP API; `promtool check metrics` passes on the exposition.

use std::collections::HashMap;
use std::process::Stdio;

use oz_agent_worker::adapters::otel::{OtelConfig, OtelMetrics, SHUTDOWN_TIMEOUT, ServiceInfo};
use oz_agent_worker::ports::{Metrics, Readiness, Signal};
use tokio::io::AsyncWriteExt;

use super::otel_otlp::scripted_signals;
use crate::support::http::get;
use crate::support::prometheus::{PrometheusServer, binary};
use crate::support::require;

async fn start_worker_metrics(readiness: Readiness) -> OtelMetrics {
    let vars: HashMap<&str, &str> = [
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "0"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
    ]
    .into();
    let service = ServiceInfo {
        version: "v-prom".to_owned(),
        backend: "docker".to_owned(),
        worker_id: "w-prom".to_owned(),
    };
    let config = OtelConfig::from_env(&|k| vars.get(k).map(|v| (*v).to_owned()), service).unwrap();
    let metrics = OtelMetrics::start(&config, readiness).unwrap();
    metrics.set_max_concurrent(8);
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    let Some(promtool) = binary("OZ_TEST_PROMTOOL_BIN") else {
        require("promtool (OZ_TEST_PROMTOOL_BIN)", false);
        return;
    };
    let metrics = start_worker_metrics(Readiness::default()).await;
    for signal in scripted_signals() {
        metrics.record(signal);
    }
    let (status, exposition) = get(metrics.prometheus_addr().unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(exposition.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
}

/// A Prometheus server owned by the test: its own config, tsdb dir and loopback port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_worker_and_reads_the_series_back() {
    let Some(binary) = binary("OZ_TEST_PROMETHEUS_BIN") else {
        require("Prometheus (OZ_TEST_PROMETHEUS_BIN)", false);
        return;
    };
    let readiness = Readiness::default();
    let metrics = start_worker_metrics(readiness.clone()).await;
    let target = metrics.prometheus_addr().unwrap();
    let prometheus = PrometheusServer::start(&binary, target).await;

    // Before the first task: the primed series are there, the histogram is not.
    prometheus.wait_for_value("up{job=\"worker\"}", 1.0).await;
    prometheus
        .wait_for_value("count(oz_worker_task_failures_total)", 87.0)
        .await;
    prometheus
        .wait_for_value("oz_worker_tasks_max_concurrent", 8.0)
        .await;
    prometheus
        .wait_for_value("count(oz_worker_tasks_completed_total)", 4.0)
        .await;
    assert_eq!(
        prometheus
            .query("oz_worker_task_duration_seconds_count")
            .await
            .map(|r| r.len()),
        Some(0)
    );

    for signal in scripted_signals() {
        metrics.record(signal);
    }
    readiness.set_connected(true);
    readiness.set_backend_ready(true);
    assert_eq!(get(target, "/readyz").await.0, 200);

    prometheus
        .wait_for_value("oz_worker_tasks_claimed_total", 3.0)
        .await;
    prometheus
        .wait_for_value("oz_worker_tasks_active", 1.0)
        .await;
    prometheus.wait_for_value("oz_worker_connected", 1.0).await;
    let sample = prometheus
        .wait_for_value(
            "oz_worker_task_failures_total{phase=\"backend\",reason=\"image_pull\"}",
            1.0,
        )
        .await;
    assert_eq!(
        sample["metric"]["otel_scope_name"],
        "github.com/warpdotdev/oz-agent-worker"
    );
    prometheus
        .wait_for_value(
            "oz_worker_task_duration_seconds_sum{result=\"failed\"}",
            120.0,
        )
        .await;
    prometheus
        .wait_for_value(
            "oz_worker_task_duration_seconds_bucket{result=\"succeeded\",le=\"10\"}",
            1.0,
        )
        .await;
    prometheus
        .wait_for_value(
            "oz_worker_info{version=\"v-prom\",backend=\"docker\",worker_id=\"w-prom\"}",
            1.0,
        )
        .await;
    prometheus
        .wait_for_value(
            "target_info{service_name=\"oz-agent-worker\",worker_id=\"w-prom\",deployment_environment=\"test\"}",
            1.0,
        )
        .await;
    // The README's queries (docs/metrics.md) evaluate.
    prometheus
        .wait_for_value(
            "oz_worker_tasks_active / (oz_worker_tasks_max_concurrent > 0)",
            0.125,
        )
        .await;
    prometheus
        .wait_for_value(
            "count(sum by (reason) (rate(oz_worker_task_failures_total[5m])))",
            29.0,
        )
        .await;
    prometheus
        .wait_for_value(
            "count(sum by (reason) (rate(oz_worker_websocket_reconnects_total[5m])))",
            2.0,
        )
        .await;

    metrics.record(Signal::Disconnected);
    prometheus
        .wait_for_value(
            "oz_worker_websocket_reconnects_total{reason=\"remote_close\"}",
            1.0,
        )
        .await;
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
}

//! The Prometheus exporter against a real Prometheus (Debian's, unpacked by
//! `scripts/setup/30-prometheus.sh`): it scrapes the worker on loopback and the test reads the
//! series back through Prometheus' HTTP API; `promtool check metrics` passes on the exposition.

use std::collections::HashMap;
use std::process::Stdio;

use oz_agent_worker::adapters::otel::{OtelConfig, OtelMetrics, SHUTDOWN_TIMEOUT, ServiceInfo};
use oz_agent_worker::ports::{Metrics, Readiness, Signal};
use tokio::io::AsyncWriteExt;

use super::otel_otlp::scripted_signals;
use crate::support::http::{get, get_with};
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

/// The Go worker's exposition right after start-up, series by series (see the file's header).
const GO_PRIMED: &str = include_str!("data/go_worker_primed_exposition.txt");

/// Series this worker adds on purpose (README, "Deliberate differences from the Go worker").
const DELIBERATE_EXTRAS: &[&str] = &["oz_worker_tasks_rejected_total{reason=\"shutting_down\"} 0"];

/// Reduces a text exposition to comparable lines: `TYPE`/`HELP` lines and `series value`
/// lines, labels sorted, `otel_scope_*` labels dropped, and `target_info` reduced to the
/// attributes the worker sets (not the SDK's `telemetry_sdk_*`).
fn comparable(exposition: &str) -> std::collections::BTreeSet<String> {
    let mut lines = std::collections::BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            lines.insert(format!("TYPE {rest}"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            lines.insert(format!("HELP {rest}"));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut kept: Vec<&str> = split_labels(labels)
            .into_iter()
            .filter(|label| !label.starts_with("otel_scope_"))
            .filter(|label| name != "target_info" || !label.starts_with("telemetry_sdk_"))
            .collect();
        kept.sort_unstable();
        let series = if kept.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{}}}", kept.join(","))
        };
        lines.insert(format!("{series} {value}"));
    }
    lines
}

/// Splits `a="x",b="y,z"` at the commas between labels (not inside quoted values).
fn split_labels(labels: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, byte) in labels.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&labels[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        parts.push(&labels[start..]);
    }
    parts
}

/// `/metrics` answers as the Go worker's promhttp handler does: the content type with
/// `escaping=underscores`, gzip when asked for (and not when refused with `q=0`), the handler's
/// error counter primed at 0, and the same series, TYPE and HELP as the Go worker right after
/// start-up (the expected exposition is data, written from the Go worker's code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_matches_the_go_workers_exposition_series_by_series() {
    let metrics = start_worker_metrics(Readiness::default()).await;
    let addr = metrics.prometheus_addr().unwrap();

    let plain = get_with(addr, "/metrics", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8; escaping=underscores")
    );
    assert_eq!(plain.header("content-encoding"), None);
    let exposition = String::from_utf8(plain.body.clone()).unwrap();

    let gzipped = get_with(
        addr,
        "/metrics",
        &[("Accept-Encoding", "deflate, gzip;q=0.8")],
    )
    .await;
    assert_eq!(gzipped.status, 200);
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert_eq!(gzipped.header("content-type"), plain.header("content-type"));
    let mut decoded = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(gzipped.body.as_slice()),
        &mut decoded,
    )
    .expect("a gzip body");
    assert_eq!(comparable(&decoded), comparable(&exposition));
    assert!(gzipped.body.len() < plain.body.len() / 3, "gzip compresses");

    let refused = get_with(
        addr,
        "/metrics",
        &[("Accept-Encoding", "gzip;q=0, identity")],
    )
    .await;
    assert_eq!(refused.header("content-encoding"), None);

    let ours = comparable(&exposition);
    let mut expected: std::collections::BTreeSet<String> = GO_PRIMED
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(str::to_owned)
        .collect();
    expected.extend(DELIBERATE_EXTRAS.iter().map(|line| (*line).to_owned()));
    let missing: Vec<&String> = expected.difference(&ours).collect();
    let extra: Vec<&String> = ours.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from ours: {missing:#?}\nonly in ours: {extra:#?}\n--- exposition ---\n{exposition}"
    );
    metrics.shutdown(SHUTDOWN_TIMEOUT).await.unwrap();
}

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `deploy/prometheus/alerts.yaml` passes `promtool check rules`, and its unit tests (every
/// alert fires on a series that should page and stays quiet on one that should not) pass
/// `promtool test rules`.
#[tokio::test]
async fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = binary("OZ_TEST_PROMTOOL_BIN") else {
        require("promtool (OZ_TEST_PROMTOOL_BIN)", false);
        return;
    };
    let dir = repo_file("deploy/prometheus");
    let rules = std::fs::read_to_string(dir.join("alerts.yaml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yaml")).unwrap();
    for line in rules.lines() {
        if let Some(alert) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.matches(&format!("alertname: {alert}")).count() >= 2,
                "{alert} needs a firing and a quiet case in alerts.test.yaml"
            );
        }
    }
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let output = tokio::process::Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
        assert!(text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
}

/// The Helm chart ships the same dashboard as `deploy/grafana`.
#[test]
fn the_charts_grafana_dashboard_is_the_deploy_dashboard() {
    let deploy = std::fs::read(repo_file("deploy/grafana/oz-agent-worker.json")).unwrap();
    let chart = std::fs::read(repo_file(
        "charts/oz-agent-worker/files/grafana-dashboard.json",
    ))
    .unwrap();
    assert!(
        deploy == chart,
        "charts/oz-agent-worker/files/grafana-dashboard.json differs from deploy/grafana/oz-agent-worker.json: copy it"
    );
    let dashboard: serde_json::Value = serde_json::from_slice(&deploy).unwrap();
    assert_eq!(dashboard["uid"], "oz-agent-worker");
}

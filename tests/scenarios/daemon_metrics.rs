//! A real Prometheus scrapes the real daemon while it serves the local control plane, and the
//! test reads the series back through Prometheus' HTTP API.

use std::time::Duration;

use oz_agent_worker::adapters::control_plane::protocol::WorkerMessage;
use oz_agent_worker::local::sample_assignment;

use crate::support::daemon::{control_plane, next, spawn_direct_with_env};
use crate::support::http::get;
use crate::support::prometheus::{PrometheusServer, binary};
use crate::support::require;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_claims_rejections_completions_and_readiness_of_a_running_daemon() {
    let Some(prometheus) = binary("OZ_TEST_PROMETHEUS_BIN") else {
        require("Prometheus (OZ_TEST_PROMETHEUS_BIN)", false);
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let cp = control_plane().await;
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("go");
    let gate_arg = format!("OZ_STANDIN_WAIT_FILE={}", gate.display());
    let daemon = spawn_direct_with_env(
        &cp,
        &["--max-concurrent-tasks", "1", "-e", &gate_arg],
        &[
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", &port),
        ],
    )
    .await;
    let target = format!("127.0.0.1:{port}").parse().unwrap();
    let server = PrometheusServer::start(&prometheus, target).await;
    cp.wait_connections(Duration::from_secs(30), |c| c.iter().any(|c| c.open))
        .await
        .expect("connected");

    // Readiness follows the connection (once the supervisor has seen it) and the preflight.
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (status, body) = get(target, "/readyz").await;
            if status == 200 {
                return body;
            }
            assert_eq!(status, 503, "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("/readyz never became ready");
    assert_eq!(ready.trim(), "ready");

    cp.assign(&sample_assignment("run-m1")).unwrap();
    assert!(matches!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskClaimed { .. })
    ));
    cp.assign(&sample_assignment("run-m2")).unwrap();
    assert!(matches!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskRejected { .. })
    ));
    server.wait_for_value("oz_worker_tasks_active", 1.0).await;
    std::fs::write(&gate, b"go").unwrap();
    assert!(matches!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskCompleted { .. })
    ));

    for (promql, want) in [
        ("oz_worker_connected", 1.0),
        ("oz_worker_tasks_active", 0.0),
        ("oz_worker_tasks_max_concurrent", 1.0),
        ("oz_worker_tasks_claimed_total", 1.0),
        (
            "oz_worker_tasks_rejected_total{reason=\"at_capacity\"}",
            1.0,
        ),
        ("oz_worker_tasks_completed_total{result=\"succeeded\"}", 1.0),
        ("oz_worker_tasks_completed_total{result=\"failed\"}", 0.0),
        (
            "oz_worker_task_duration_seconds_count{result=\"succeeded\"}",
            1.0,
        ),
        ("sum(oz_worker_task_failures_total)", 0.0),
        ("count(oz_worker_task_failures_total)", 87.0),
        (
            "oz_worker_info{backend=\"direct\",worker_id=\"scenario-worker\",otel_scope_name=\"github.com/warpdotdev/oz-agent-worker\"}",
            1.0,
        ),
    ] {
        server.wait_for_value(promql, want).await;
    }
    daemon.stop().await.unwrap();
}

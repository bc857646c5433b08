//! The metrics of the real daemon while it serves the local control plane: a real Prometheus
//! scrapes it and the test reads the series back through Prometheus' HTTP API; an OTLP sink
//! gets the final export of a shutdown; `none` opens no port; bad settings, an unreachable
//! or silent collector and an unbindable `--health-listen` are handled as docs/metrics.md says.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use oz_agent_worker::adapters::otel::SHUTDOWN_TIMEOUT;
use oz_local_control_plane::{LocalControlPlane, sample_assignment};
use oz_protocol::WorkerMessage;

use crate::support::daemon::{
    API_KEY, control_plane, direct_config_file, free_port, next, spawn_direct_with_env,
    try_spawn_direct_with_env,
};
use crate::support::http::get;
use crate::support::logs::capture_logs;
use crate::support::otlp::start_http_sink;
use crate::support::prometheus::{PrometheusServer, binary};
use crate::support::{eventually, eventually_some, require};

const BOUND: Duration = Duration::from_secs(30);

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
    let ready = eventually_some(
        "/readyz to become ready",
        Duration::from_secs(30),
        || async {
            let (status, body) = get(target, "/readyz").await;
            if status != 200 {
                assert_eq!(status, 503, "{body}");
            }
            (status == 200).then_some(body)
        },
    )
    .await;
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

/// Every PromQL expression of `deploy/grafana/oz-agent-worker.json`, with the dashboard's
/// variables as Grafana fills them for "All" (`$worker_id` = `.*`, `$__rate_interval` = `1m`),
/// evaluated by a real Prometheus scraping a real daemon that claimed, rejected, cancelled and
/// completed tasks: each one answers without an error and with data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_expression_returns_data_from_a_real_prometheus() {
    let Some(prometheus) = binary("OZ_TEST_PROMETHEUS_BIN") else {
        require("Prometheus (OZ_TEST_PROMETHEUS_BIN)", false);
        return;
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/grafana/oz-agent-worker.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");

    let port = free_port().to_string();
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
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = PrometheusServer::start(&prometheus, target).await;
    wait_ready(target).await;

    // A mix: one claimed and cancelled, one rejected meanwhile, one claimed and succeeded.
    cp.assign(&sample_assignment("run-d1")).unwrap();
    assert!(matches!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskClaimed { .. })
    ));
    cp.assign(&sample_assignment("run-d2")).unwrap();
    assert!(matches!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskRejected { .. })
    ));
    server.wait_for_value("oz_worker_tasks_active", 1.0).await;
    cp.cancel("run-d1").unwrap();
    assert!(matches!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskCompleted { .. })
    ));
    std::fs::write(&gate, b"go").unwrap();
    run_task_to_completion(&cp, "run-d3").await;
    server
        .wait_for_value("sum(oz_worker_tasks_completed_total)", 2.0)
        .await;

    for expr in &exprs {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$worker_id", ".*");
        let deadline = Instant::now() + BOUND;
        loop {
            let result = server.query(&promql).await;
            if result.as_ref().is_some_and(|r| !r.is_empty()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dashboard expression returned no data or an error: {promql}: {result:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    daemon.stop().await.unwrap();
}

/// Polls `/readyz` on `addr` until it answers 200, failing the test after 30 s.
async fn wait_ready(addr: SocketAddr) {
    eventually("/readyz to become ready", BOUND, || async {
        let (status, body) = get(addr, "/readyz").await;
        if status != 200 {
            assert_eq!(status, 503, "{body}");
        }
        status == 200
    })
    .await;
}

/// Assigns `task_id` and waits for its claim and completion.
async fn run_task_to_completion(cp: &LocalControlPlane, task_id: &str) {
    cp.wait_connections(BOUND, |c| c.iter().any(|c| c.open))
        .await
        .expect("connected");
    cp.assign(&sample_assignment(task_id)).unwrap();
    assert!(matches!(
        next(cp).await.message,
        Some(WorkerMessage::TaskClaimed { .. })
    ));
    assert!(matches!(
        next(cp).await.message,
        Some(WorkerMessage::TaskCompleted { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_otlp_export_of_a_shutdown_shows_the_connection_ended() {
    let (sink, received) = start_http_sink().await;
    let endpoint = format!("http://{sink}");
    let health = format!("127.0.0.1:{}", free_port());
    let cp = control_plane().await;
    let daemon = spawn_direct_with_env(
        &cp,
        &["--health-listen", &health],
        &[
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            // No periodic export during the test: the shutdown's flush is the only one.
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
        ],
    )
    .await;
    // Ready means the supervisor has recorded the connection (connected = 1).
    wait_ready(health.parse().unwrap()).await;
    daemon.stop().await.unwrap();

    let exports = received.all();
    let last = exports.last().expect("the shutdown flushed an export");
    assert_eq!(last.value("oz_worker_connected", &[]), Some(0.0));
    let reconnects = |reason| {
        last.value(
            "oz_worker_websocket_reconnects_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(
        reconnects("remote_close"),
        Some(1.0),
        "the local shutdown ends the connection"
    );
    assert_eq!(reconnects("dial_failed"), Some(0.0));
}

/// Gate for the child process of `the_none_exporter_opens_no_listening_socket`.
const NONE_CHILD: &str = "OZ_TEST_METRICS_NONE_CHILD";

/// The loopback or wildcard TCP sockets this process listens on, from `/proc/net/tcp{,6}`
/// (state `0A`) restricted to the socket inodes among `/proc/self/fd`.
fn own_listening_sockets() -> BTreeSet<String> {
    let inodes: BTreeSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut listening = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [_, local, _, "0A", _, _, _, _, _, inode, ..] = fields.as_slice()
                && inodes.contains(*inode)
            {
                listening.insert(format!("{table} {local}"));
            }
        }
    }
    listening
}

/// Runs only as that child (alone in its process): the daemon with `none` and a task run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_child_process() {
    if std::env::var(NONE_CHILD).as_deref() != Ok("1") {
        return;
    }
    let cp = control_plane().await;
    let prometheus_port = free_port();
    let before = own_listening_sockets();
    assert!(
        !before.is_empty(),
        "the control plane's own listener is visible"
    );
    let daemon = spawn_direct_with_env(
        &cp,
        &[],
        &[
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
            (
                "OTEL_EXPORTER_PROMETHEUS_PORT",
                &prometheus_port.to_string(),
            ),
        ],
    )
    .await;
    run_task_to_completion(&cp, "run-none").await;
    assert_eq!(
        own_listening_sockets(),
        before,
        "the daemon opened a listening socket"
    );
    std::net::TcpListener::bind(("127.0.0.1", prometheus_port))
        .expect("the Prometheus port stays free");
    daemon.stop().await.unwrap();
    println!("NONE-CHILD-PASSED");
}

#[test]
fn the_none_exporter_opens_no_listening_socket() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "scenarios::daemon_metrics::none_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NONE_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("NONE-CHILD-PASSED"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_bad_metrics_setting_gives_one_log_line_and_tasks_still_run() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    for (case, vars, reason) in [
        (
            "unknown exporter",
            vec![("OTEL_METRICS_EXPORTER", "statsd")],
            "unknown exporter or metrics producer: OTEL_METRICS_EXPORTER=\"statsd\"",
        ),
        (
            "port out of range",
            vec![
                ("OTEL_METRICS_EXPORTER", "prometheus"),
                ("OTEL_EXPORTER_PROMETHEUS_PORT", "99999"),
            ],
            "invalid OTEL_EXPORTER_PROMETHEUS_PORT=\"99999\"",
        ),
        (
            "port in use",
            vec![
                ("OTEL_METRICS_EXPORTER", "prometheus"),
                ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
                ("OTEL_EXPORTER_PROMETHEUS_PORT", busy_port.as_str()),
            ],
            "cannot listen on 127.0.0.1:",
        ),
    ] {
        let (logs, guard) = capture_logs();
        let cp = control_plane().await;
        let daemon = spawn_direct_with_env(&cp, &[], &vars).await;
        run_task_to_completion(&cp, "run-bad-metrics").await;
        daemon.stop().await.unwrap();
        drop(guard);
        let text = logs.contents();
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("Failed to initialize metrics export"))
            .collect();
        assert_eq!(lines.len(), 1, "{case}: {text}");
        assert!(lines[0].contains(reason), "{case}: {}", lines[0]);
        assert!(lines[0].contains("(continuing without metrics)"), "{case}");
        assert!(lines[0].contains("ERROR"), "{case}: {}", lines[0]);
    }
}

#[tokio::test]
async fn an_unreachable_collector_is_one_warning_at_shutdown_and_tasks_still_run() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (logs, guard) = capture_logs();
    let cp = control_plane().await;
    let daemon = spawn_direct_with_env(
        &cp,
        &[],
        &[
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
        ],
    )
    .await;
    run_task_to_completion(&cp, "run-unreachable").await;
    daemon.stop().await.unwrap();
    drop(guard);
    let text = logs.contents();
    assert!(
        !text.contains("Failed to initialize metrics export"),
        "{text}"
    );
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("Failed to shut down metrics exporter cleanly"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("metrics export failed"), "{}", lines[0]);
}

#[tokio::test]
async fn shutdown_stays_bounded_against_a_collector_that_never_answers() {
    // The kernel completes the TCP handshake into the backlog; nothing ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    for protocol in ["http/protobuf", "grpc"] {
        let (logs, guard) = capture_logs();
        let cp = control_plane().await;
        let daemon = spawn_direct_with_env(
            &cp,
            &[],
            &[
                ("OTEL_METRICS_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                // Exports start (and hang) while the task runs.
                ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ],
        )
        .await;
        run_task_to_completion(&cp, "run-silent-collector").await;
        let started = Instant::now();
        daemon.stop().await.unwrap();
        let took = started.elapsed();
        drop(guard);
        assert!(
            took < SHUTDOWN_TIMEOUT + Duration::from_secs(3),
            "{protocol}: shutdown took {took:?}"
        );
        let text = logs.contents();
        assert_eq!(
            text.matches("Failed to shut down metrics exporter cleanly")
                .count(),
            1,
            "{protocol}: {text}"
        );
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_listen_serves_healthz_and_readyz_follows_the_connection() {
    let cp = control_plane().await;
    cp.set_reject_handshakes(Some(503));
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let daemon = spawn_direct_with_env(&cp, &["--health-listen", &addr.to_string()], &[]).await;

    // Built means the preflight passed; refused handshakes mean not connected: not ready.
    cp.wait_handshakes(1, BOUND).await.expect("a dial");
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(
        get(addr, "/readyz").await,
        (
            503,
            "not ready: connected=false backend_ready=true\n".to_owned()
        )
    );
    assert_eq!(
        get(addr, "/metrics").await.0,
        404,
        "no exporter: no /metrics"
    );

    cp.set_reject_handshakes(None);
    wait_ready(addr).await;
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_owned()));

    // The connection drops and cannot come back: not ready again.
    cp.set_reject_handshakes(Some(503));
    cp.drop_all_connections();
    eventually(
        "/readyz to turn 503 after the connection dropped",
        BOUND,
        || async { get(addr, "/readyz").await.0 == 503 },
    )
    .await;
    assert_eq!(get(addr, "/healthz").await.0, 200);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbindable_health_listen_address_stops_the_worker_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cp = control_plane().await;

    // In-process: the build fails and says which address.
    let error = try_spawn_direct_with_env(&cp, &["--health-listen", &addr], &[])
        .await
        .err()
        .expect("the build fails");
    assert!(format!("{error:#}").contains(&addr), "{error:#}");

    // The binary: a non-zero exit and one error line naming the address.
    let dir = tempfile::tempdir().unwrap();
    let config_file = direct_config_file(&dir);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_oz-agent-worker"))
        .arg("--config-file")
        .arg(&config_file)
        .args(["--web-socket-url", &cp.ws_url(), "--health-listen", &addr])
        .env("WARP_API_KEY", API_KEY)
        .env("OTEL_METRICS_EXPORTER", "none")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BOUND, output)
        .await
        .expect("the worker exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.contains("cannot serve /healthz and /readyz"))
        .unwrap_or_else(|| panic!("no bind error in: {stderr}"));
    assert!(line.contains(&addr), "{line}");
    assert!(cp.handshakes().is_empty(), "the worker never dialled");
}

//! `WsTaskSource` against the real local control plane on 127.0.0.1: handshake, events,
//! reports, reconnects, bad frames, auth failures, liveness, shutdown and secret hygiene.

use std::sync::Arc;
use std::time::Duration;

use oz_agent_worker::adapters::control_plane::{BackoffConfig, WsConfig, WsTaskSource};
use oz_agent_worker::domain::ApiKey;
use oz_agent_worker::domain::{FailureReason, TaskId, TaskReport};
use oz_agent_worker::ports::{ControlEvent, SourceError, TaskSource};
use oz_local_control_plane::{LocalControlPlane, WS_PATH, sample_assignment};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::logs::capture_logs;

const KEY: &str = "worker-api-key-7f3a";
const BOUND: Duration = Duration::from_secs(30);
/// Enough 1 MiB reports to overflow the loopback socket buffers of a server that stops reading.
const N_BIG: usize = 12;

struct Harness {
    cp: LocalControlPlane,
    source: Arc<WsTaskSource>,
    events: mpsc::Receiver<ControlEvent>,
    cancel: CancellationToken,
    run: JoinHandle<Result<(), SourceError>>,
}

/// A config with fast back-off and no jitter, so logged delays are deterministic.
fn config(url: String, key: &str) -> WsConfig {
    let mut config = WsConfig::new(url, "worker 1", ApiKey::new(key));
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(800),
        factor: 2.0,
        jitter: 0.0,
        healthy_after: Duration::from_secs(10),
    };
    config
}

async fn start_with(cp: LocalControlPlane, tweak: impl FnOnce(&mut WsConfig)) -> Harness {
    let mut config = config(cp.ws_url(), KEY);
    tweak(&mut config);
    let source = Arc::new(WsTaskSource::new(config).unwrap());
    let (tx, events) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let source = source.clone();
        let cancel = cancel.clone();
        async move { source.run(tx, cancel).await }
    });
    Harness {
        cp,
        source,
        events,
        cancel,
        run,
    }
}

async fn start(tweak: impl FnOnce(&mut WsConfig)) -> Harness {
    let cp = LocalControlPlane::start("127.0.0.1:0".parse().unwrap(), KEY)
        .await
        .unwrap();
    start_with(cp, tweak).await
}

impl Harness {
    /// Skips events until one matches; panics after the bound. Returns the matching event and
    /// the skipped ones.
    async fn expect(
        &mut self,
        what: &str,
        wanted: impl Fn(&ControlEvent) -> bool,
    ) -> (ControlEvent, Vec<ControlEvent>) {
        let mut skipped = Vec::new();
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if wanted(&event) => return (event, skipped),
                Ok(Some(event)) => skipped.push(event),
                _ => panic!("no {what} event; got {skipped:?}"),
            }
        }
    }

    async fn connected(&mut self) {
        self.expect("Connected", |e| *e == ControlEvent::Connected)
            .await;
    }

    async fn message(&self) -> oz_local_control_plane::Received {
        self.cp.next_message(BOUND).await.expect("a worker message")
    }
}

fn id(raw: &str) -> TaskId {
    TaskId::parse(raw).unwrap()
}

fn completed(task: &str) -> TaskReport {
    TaskReport::Completed {
        task_id: id(task),
        message: "Task completed successfully".into(),
        cancelled: false,
    }
}

#[tokio::test]
async fn handshake_sends_the_path_a_sorted_query_the_bearer_key_and_the_user_agent() {
    let cp = LocalControlPlane::start("127.0.0.1:0".parse().unwrap(), KEY)
        .await
        .unwrap();
    let url = format!("{}?z=9&a=hello%20world&worker_id=stale", cp.ws_url());
    let mut h = start_with(cp, |c| c.url = url).await;
    h.connected().await;
    let handshake = &h.cp.handshakes()[0];
    assert_eq!(handshake.method, "GET");
    assert_eq!(handshake.path, WS_PATH);
    assert_eq!(
        handshake.query.as_deref(),
        Some("a=hello+world&worker_id=worker+1&z=9")
    );
    assert_eq!(
        handshake.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        handshake.header("user-agent"),
        Some(format!("oz-agent-worker/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(handshake.header("sec-websocket-extensions"), None);
    assert_eq!(handshake.header("sec-websocket-protocol"), None);
    assert_eq!(handshake.status, 101);
}

#[tokio::test]
async fn assignments_and_cancellations_become_events() {
    let mut h = start(|_| {}).await;
    h.connected().await;
    h.cp.assign(&sample_assignment("task-1")).unwrap();
    h.cp.cancel("task-1").unwrap();
    let (event, _) = h
        .expect("Assigned", |e| matches!(e, ControlEvent::Assigned(_)))
        .await;
    let ControlEvent::Assigned(assigned) = event else {
        unreachable!()
    };
    assert_eq!(assigned.task_id.as_str(), "task-1");
    assert_eq!(assigned.execution_id, "task-1-exec-1");
    assert_eq!(assigned.env_vars["WARP_API_KEY"], "local-task-key");
    h.expect("CancelRequested", |e| {
        *e == ControlEvent::CancelRequested(id("task-1"))
    })
    .await;
}

#[tokio::test]
async fn reports_arrive_in_fifo_order() {
    let mut h = start(|_| {}).await;
    h.connected().await;
    let reports: Vec<TaskReport> = (0..20)
        .flat_map(|n| {
            let task = format!("t{n}");
            [
                TaskReport::Claimed {
                    task_id: id(&task),
                    worker_id: "worker 1".into(),
                },
                completed(&task),
            ]
        })
        .collect();
    for report in &reports {
        h.source.report(report.clone()).unwrap();
    }
    assert!(h.source.flush(BOUND).await);
    for report in &reports {
        let received = h.message().await;
        let message = received.message.expect("a worker message");
        assert_eq!(message.task_id(), report.task_id().as_str());
        assert_eq!(message.is_terminal(), report.is_terminal());
    }
}

#[tokio::test]
async fn a_report_queued_while_disconnected_is_delivered_on_the_next_connection() {
    let mut h = start(|_| {}).await;
    h.connected().await;
    h.cp.set_reject_handshakes(Some(503));
    h.cp.drop_all_connections();
    h.expect("Disconnected", |e| *e == ControlEvent::Disconnected)
        .await;
    h.source.report(completed("queued")).unwrap();
    h.expect("DialFailed", |e| *e == ControlEvent::DialFailed)
        .await;
    assert_eq!(h.source.pending_reports(), 1);
    h.cp.set_reject_handshakes(None);
    h.connected().await;
    let received = h.message().await;
    assert_eq!(received.connection, 2);
    assert_eq!(received.message.unwrap().task_id(), "queued");
}

#[tokio::test]
async fn a_report_whose_write_failed_is_sent_again_on_the_next_connection() {
    let (logs, _guard) = capture_logs();
    let mut h = start(|c| {
        c.write_timeout = Duration::from_millis(300);
        c.pong_wait = Duration::from_secs(30);
    })
    .await;
    h.connected().await;
    // The server stops reading, so the socket buffers fill and a write times out.
    h.cp.set_answer_pings(false);
    let big = "x".repeat(1024 * 1024);
    for n in 0..N_BIG {
        h.source
            .report(TaskReport::Failed {
                task_id: id(&format!("big{n}")),
                message: big.clone(),
                failure_reason: FailureReason::Unknown,
                exit_code: Some(1),
            })
            .unwrap();
    }
    h.source.report(completed("last")).unwrap();
    h.expect("Disconnected", |e| *e == ControlEvent::Disconnected)
        .await;
    assert!(
        logs.contents().contains("write timed out"),
        "{}",
        logs.contents()
    );
    h.connected().await;
    h.cp.set_answer_pings(true);
    let mut seen = Vec::new();
    while !seen.iter().any(|(_, task): &(u64, String)| task == "last") {
        let received = h.message().await;
        seen.push((
            received.connection,
            received.message.unwrap().task_id().to_owned(),
        ));
    }
    // Every report arrived (at least once), and the tail went over the new connection.
    for n in 0..N_BIG {
        let task = format!("big{n}");
        assert!(
            seen.iter().any(|(_, t)| *t == task),
            "{task} missing from {seen:?}"
        );
    }
    assert_eq!(seen.last().unwrap().0, 2);
    assert!(h.source.flush(BOUND).await);
}

#[tokio::test]
async fn every_bad_frame_is_logged_and_ignored_and_the_connection_survives() {
    let (logs, _guard) = capture_logs();
    let mut h = start(|c| c.max_frame_size = 64 * 1024).await;
    h.connected().await;
    let too_large = format!(
        r#"{{"type":"task_assignment","data":{{"pad":"{}"}}}}"#,
        "p".repeat(100_000)
    );
    let frames = [
        ("{not json".to_owned(), "Failed to unmarshal message"),
        (r#"[1]"#.to_owned(), "not a JSON object"),
        (r#"{"data":{}}"#.to_owned(), "`type` is missing"),
        (r#"{"type":"heartbeat","data":{}}"#.to_owned(), "Unknown message type: heartbeat"),
        (r#"{"type":"task_assignment"}"#.to_owned(), "`data` is missing"),
        (r#"{"type":"task_assignment","data":[]}"#.to_owned(), "`data` is an array"),
        (r#"{"type":"task_assignment","data":{"task_id":"n1","task":null}}"#.to_owned(), "data.task is missing or null"),
        (r#"{"type":"task_assignment","data":{"task":{}}}"#.to_owned(), "data.task_id is missing or empty"),
        (
            r#"{"type":"task_assignment","data":{"task_id":"f1","task":{"agent_config_snapshot":{"idle_timeout_minutes":15.0}}}}"#.to_owned(),
            "data.task.agent_config_snapshot.idle_timeout_minutes: invalid type: floating point",
        ),
        (too_large, "frame too large"),
    ];
    for (frame, _) in &frames {
        h.cp.send_raw(frame.clone()).unwrap();
    }
    h.cp.assign(&sample_assignment("after-bad-frames")).unwrap();
    let (_, skipped) = h
        .expect(
            "Assigned",
            |e| matches!(e, ControlEvent::Assigned(a) if a.task_id.as_str() == "after-bad-frames"),
        )
        .await;
    assert!(
        skipped.is_empty(),
        "bad frames produced events: {skipped:?}"
    );
    let text = logs.contents();
    for (_, reason) in &frames {
        assert!(text.contains(reason), "log lacks {reason:?}:\n{text}");
    }
    assert!(text.contains("task_id=n1"), "{text}");
    assert_eq!(h.cp.connections().len(), 1);
    assert!(h.cp.connections()[0].open);
}

#[tokio::test]
async fn an_unauthorized_handshake_is_retried_forever_with_growing_delays() {
    let (logs, _guard) = capture_logs();
    let mut h = start(|c| c.api_key = ApiKey::new("wrong-key")).await;
    for _ in 0..4 {
        h.expect("DialFailed", |e| *e == ControlEvent::DialFailed)
            .await;
    }
    let handshakes = h.cp.wait_handshakes(4, BOUND).await.unwrap();
    assert!(handshakes.iter().all(|hs| hs.status == 401));
    let text = logs.contents();
    assert!(text.contains("401"), "{text}");
    assert!(
        text.contains("check WARP_API_KEY / the worker's API key"),
        "{text}"
    );
    for delay in ["retrying in 0.1s", "retrying in 0.2s", "retrying in 0.4s"] {
        assert!(text.contains(delay), "log lacks {delay:?}:\n{text}");
    }
    assert!(!h.run.is_finished());
    assert!(!text.contains("wrong-key"));
}

#[tokio::test]
async fn connections_that_die_at_once_are_redialled_with_backoff() {
    let (logs, _guard) = capture_logs();
    let cp = LocalControlPlane::start("127.0.0.1:0".parse().unwrap(), KEY)
        .await
        .unwrap();
    cp.set_close_after_accept(true);
    let mut h = start_with(cp, |_| {}).await;
    for _ in 0..4 {
        h.expect("Disconnected", |e| *e == ControlEvent::Disconnected)
            .await;
    }
    let text = logs.contents();
    for delay in ["waiting 0.1s", "waiting 0.2s", "waiting 0.4s"] {
        assert!(text.contains(delay), "log lacks {delay:?}:\n{text}");
    }
}

#[tokio::test]
async fn a_server_that_stops_answering_pings_is_torn_down_after_pong_wait() {
    let mut h = start(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.pong_wait = Duration::from_millis(500);
    })
    .await;
    h.connected().await;
    h.cp.set_answer_pings(false);
    h.expect("Disconnected", |e| *e == ControlEvent::Disconnected)
        .await;
    h.cp.set_answer_pings(true);
    h.connected().await;
    assert!(h.cp.connections().len() >= 2);
}

#[tokio::test]
async fn a_healthy_idle_connection_with_pongs_does_not_time_out() {
    let mut h = start(|c| {
        c.ping_interval = Duration::from_millis(50);
        c.pong_wait = Duration::from_millis(300);
    })
    .await;
    h.connected().await;
    // 20 pings span several pong_wait periods.
    let conns =
        h.cp.wait_connections(BOUND, |c| c.first().is_some_and(|c| c.pings >= 20))
            .await
            .expect("20 pings");
    assert_eq!(conns.len(), 1);
    assert!(conns[0].open);
    assert!(h.events.try_recv().is_err(), "unexpected event");
}

#[tokio::test]
async fn cancel_sends_close_1000_and_run_returns_ok() {
    let mut h = start(|_| {}).await;
    h.connected().await;
    h.cancel.cancel();
    let result = tokio::time::timeout(BOUND, h.run).await.unwrap().unwrap();
    assert!(result.is_ok());
    let conns =
        h.cp.wait_connections(BOUND, |c| c[0].close_code.is_some())
            .await
            .expect("a close frame");
    assert_eq!(conns[0].close_code, Some(1000));
    assert!(matches!(
        h.source.report(completed("late")),
        Err(SourceError::Closed)
    ));
}

#[tokio::test]
async fn no_api_key_or_env_var_secret_appears_in_debug_logs() {
    let (logs, _guard) = capture_logs();
    let secret_env = "env-secret-value-5c1d";
    let mut h = start(|_| {}).await;
    h.connected().await;
    let mut good = sample_assignment("s1");
    good["env_vars"] = json!({"GITHUB_ACCESS_TOKEN": secret_env});
    h.cp.assign(&good).unwrap();
    let mut bad = good.clone();
    bad["task"]["owner"]["Id"] = json!("not-a-number");
    h.cp.assign(&bad).unwrap();
    let mut bad_env = good.clone();
    bad_env["task_id"] = json!("s2");
    bad_env["env_vars"] = json!({"GITHUB_ACCESS_TOKEN": secret_env, "N": 12345});
    h.cp.assign(&bad_env).unwrap();
    h.cp.send_raw(format!("{{\"env_vars\":{{\"K\":\"{secret_env}\"}}"))
        .unwrap();
    h.expect("Assigned", |e| matches!(e, ControlEvent::Assigned(_)))
        .await;
    h.source.report(completed("s1")).unwrap();
    assert!(h.source.flush(BOUND).await);
    assert!(
        logs.wait_for("data.env_vars.N", BOUND).await,
        "{}",
        logs.contents()
    );
    assert!(logs.wait_for("Failed to unmarshal message", BOUND).await);
    h.cancel.cancel();
    let _ = h.run.await;
    let text = logs.contents();
    assert!(text.contains("Connecting to ws://127.0.0.1"), "{text}");
    assert!(text.contains("DEBUG"), "{text}");
    assert!(!text.contains(KEY), "API key leaked:\n{text}");
    assert!(!text.contains(secret_env), "env secret leaked:\n{text}");
    assert!(!text.contains("12345"), "env value leaked:\n{text}");
}

#[tokio::test]
async fn a_forbidden_handshake_logs_the_credentials_hint() {
    let (logs, _guard) = capture_logs();
    let cp = LocalControlPlane::start("127.0.0.1:0".parse().unwrap(), KEY)
        .await
        .unwrap();
    cp.set_reject_handshakes(Some(403));
    let mut h = start_with(cp, |_| {}).await;
    h.expect("DialFailed", |e| *e == ControlEvent::DialFailed)
        .await;
    let text = logs.contents();
    assert!(text.contains("403 Forbidden"), "{text}");
    assert!(text.contains("check WARP_API_KEY"), "{text}");
    h.cp.set_reject_handshakes(None);
    h.connected().await;
}

#[tokio::test]
async fn cancel_interrupts_the_backoff_sleep() {
    let cp = LocalControlPlane::start("127.0.0.1:0".parse().unwrap(), KEY)
        .await
        .unwrap();
    cp.set_reject_handshakes(Some(503));
    let mut h = start_with(cp, |c| {
        // Far longer than the test's bound: only an interrupted sleep lets `run` return.
        c.backoff.initial = Duration::from_secs(600);
        c.backoff.max = Duration::from_secs(600);
    })
    .await;
    h.expect("DialFailed", |e| *e == ControlEvent::DialFailed)
        .await;
    h.cancel.cancel();
    let result = tokio::time::timeout(BOUND, h.run)
        .await
        .expect("run returned");
    assert!(result.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_seen_open_can_be_sent_to_at_once() {
    for round in 0..20 {
        let mut h = start(|_| {}).await;
        h.cp.wait_connections(BOUND, |c| c.iter().any(|c| c.open))
            .await
            .expect("the worker connects");
        let sent = h.cp.assign(&sample_assignment(&format!("open-{round}")));
        assert!(sent.is_ok(), "round {round}: {sent:?}");
        h.expect("Assigned", |e| matches!(e, ControlEvent::Assigned(_)))
            .await;
        h.cancel.cancel();
    }
}

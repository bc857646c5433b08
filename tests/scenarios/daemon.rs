//! The whole daemon (config, bootstrap, supervisor, WebSocket source, Direct backend) against
//! the local control plane: what Warp's server would observe.

use std::time::Duration;

use oz_local_control_plane::{LocalControlPlane, sample_assignment};
use oz_protocol::WorkerMessage;

use crate::support::daemon::{Daemon, assignment_with_secret, control_plane, next, spawn_direct};
use crate::support::standin::{report_value, reported_pids};

const BOUND: Duration = Duration::from_secs(30);

async fn connected(cp: &LocalControlPlane) {
    cp.wait_connections(BOUND, |c| c.iter().any(|c| c.open))
        .await
        .expect("the worker did not connect");
}

fn claimed(task_id: &str) -> WorkerMessage {
    WorkerMessage::TaskClaimed {
        task_id: task_id.into(),
        worker_id: "scenario-worker".into(),
    }
}

async fn wait_for_report_line(daemon: &Daemon, key: &str) -> String {
    let what = format!("the stand-in to report {key:?}");
    crate::support::eventually_some(&what, BOUND, || async {
        report_value(&daemon.report(), key)
    })
    .await
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[tokio::test]
async fn a_task_is_claimed_run_and_completed_in_order() {
    let cp = control_plane().await;
    let daemon = spawn_direct(&cp, &[]).await;
    connected(&cp).await;
    cp.assign(&sample_assignment("run-1")).unwrap();
    assert_eq!(next(&cp).await.message, Some(claimed("run-1")));
    assert_eq!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskCompleted {
            task_id: "run-1".into(),
            message: "Task completed successfully".into(),
            task_state: None,
        })
    );
    let argv = report_value(&daemon.report(), "argv").unwrap();
    assert!(
        argv.starts_with(
            "agent run --task-id run-1 --sandboxed --server-root-url http://127.0.0.1:1"
        ),
        "{argv}"
    );
    assert!(argv.ends_with("--idle-on-complete 1m"), "{argv}");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_agent_is_reported_with_reason_exit_code_and_output_tail() {
    let cp = control_plane().await;
    let daemon = spawn_direct(&cp, &["-e", "OZ_STANDIN_EXIT=3"]).await;
    connected(&cp).await;
    cp.assign(&sample_assignment("run-f")).unwrap();
    assert_eq!(next(&cp).await.message, Some(claimed("run-f")));
    match next(&cp).await.message {
        Some(WorkerMessage::TaskFailed {
            task_id,
            message,
            failure_reason,
            exit_code,
        }) => {
            assert_eq!(task_id, "run-f");
            assert_eq!(failure_reason.as_deref(), Some("agent_invocation"));
            assert_eq!(exit_code, Some(3));
            assert!(
                message.starts_with(
                    "Failed to execute task: oz agent exited with error: exit status 3"
                ),
                "{message}"
            );
            assert!(
                message.contains("exiting with status 3"),
                "the output tail is included: {message}"
            );
        }
        other => panic!("expected task_failed, got {other:?}"),
    }
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn at_capacity_the_second_task_is_rejected_and_never_claimed() {
    let cp = control_plane().await;
    let daemon = spawn_direct(
        &cp,
        &[
            "--max-concurrent-tasks",
            "1",
            "-e",
            "OZ_STANDIN_SLEEP=forever",
        ],
    )
    .await;
    connected(&cp).await;
    cp.assign(&sample_assignment("run-a")).unwrap();
    assert_eq!(next(&cp).await.message, Some(claimed("run-a")));
    cp.assign(&sample_assignment("run-b")).unwrap();
    assert_eq!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskRejected {
            task_id: "run-b".into(),
            reason: "worker at maximum concurrency".into(),
        })
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_user_cancel_stops_the_agent_and_reports_cancelled() {
    let cp = control_plane().await;
    let daemon = spawn_direct(
        &cp,
        &[
            "-e",
            "OZ_STANDIN_SLEEP=forever",
            "-e",
            "OZ_STANDIN_SPAWN_CHILD=1",
        ],
    )
    .await;
    connected(&cp).await;
    cp.assign(&sample_assignment("run-c")).unwrap();
    assert_eq!(next(&cp).await.message, Some(claimed("run-c")));
    wait_for_report_line(&daemon, "pid").await;
    let pids = reported_pids(&daemon.report());
    assert_eq!(pids.len(), 2, "agent and its child");
    cp.cancel("run-c").unwrap();
    assert_eq!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskCompleted {
            task_id: "run-c".into(),
            message: "Task cancelled by user request.".into(),
            task_state: Some("CANCELLED".into()),
        })
    );
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived its cancelled task");
    }
    // A cancel for a task that is no longer active gets no reply.
    cp.cancel("run-c").unwrap();
    assert!(cp.next_message(Duration::from_millis(300)).await.is_none());
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_report_produced_while_disconnected_arrives_after_reconnecting() {
    let cp = control_plane().await;
    let daemon_dir_gate = tempfile::tempdir().unwrap();
    let gate = daemon_dir_gate.path().join("finish");
    let gate_arg = format!("OZ_STANDIN_WAIT_FILE={}", gate.display());
    let daemon = spawn_direct(&cp, &["-e", &gate_arg]).await;
    connected(&cp).await;
    cp.assign(&sample_assignment("run-r")).unwrap();
    let claim = next(&cp).await;
    assert_eq!(claim.message, Some(claimed("run-r")));

    // The server goes away mid-task and refuses to come back for now.
    cp.set_reject_handshakes(Some(503));
    cp.drop_all_connections();
    cp.wait_connections(BOUND, |c| c.iter().all(|c| !c.open))
        .await
        .expect("connection still open");
    std::fs::write(&gate, b"go").unwrap();
    wait_for_report_line(&daemon, "exit").await;
    let refused = cp.handshakes().len();
    cp.wait_handshakes(refused + 1, BOUND)
        .await
        .expect("the worker stopped redialling");

    cp.set_reject_handshakes(None);
    let done = next(&cp).await;
    assert_ne!(
        done.connection, claim.connection,
        "delivered on the new connection"
    );
    assert_eq!(
        done.message,
        Some(WorkerMessage::TaskCompleted {
            task_id: "run-r".into(),
            message: "Task completed successfully".into(),
            task_state: None,
        })
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_reports_graceful_shutdown_before_the_close_frame() {
    let cp = control_plane().await;
    let daemon = spawn_direct(&cp, &["-e", "OZ_STANDIN_SLEEP=forever"]).await;
    connected(&cp).await;
    cp.assign(&sample_assignment("run-s")).unwrap();
    assert_eq!(next(&cp).await.message, Some(claimed("run-s")));
    wait_for_report_line(&daemon, "pid").await;
    let pid = report_value(&daemon.report(), "pid")
        .unwrap()
        .parse::<i32>()
        .unwrap();
    daemon.stop().await.unwrap();
    match next(&cp).await.message {
        Some(WorkerMessage::TaskFailed {
            task_id,
            failure_reason,
            ..
        }) => {
            assert_eq!(task_id, "run-s");
            assert_eq!(failure_reason.as_deref(), Some("graceful_shutdown"));
        }
        other => panic!("expected task_failed(graceful_shutdown), got {other:?}"),
    }
    let closes = cp
        .wait_connections(BOUND, |c| c.iter().any(|c| c.close_code.is_some()))
        .await
        .expect("no close frame");
    assert!(closes.iter().any(|c| c.close_code == Some(1000)));
    assert!(!alive(pid), "the agent outlived the worker's shutdown");
}

#[tokio::test]
async fn bad_frames_do_not_stop_the_daemon() {
    let cp = control_plane().await;
    let daemon = spawn_direct(&cp, &[]).await;
    connected(&cp).await;
    for frame in [
        "not json",
        r#"{"type":"task_assignment","data":{"task_id":"x","task":null}}"#,
        r#"{"type":"task_assignment","data":{"task":{"id":"y"}}}"#,
        r#"{"type":"task_assignment","data":{"task_id":"z","task":{"id":"z","agent_config_snapshot":{"idle_timeout_minutes":1.5}}}}"#,
        r#"{"type":"heartbeat","data":{}}"#,
        r#"{"type":"task_cancellation","data":{}}"#,
        r#"{"data":{}}"#,
    ] {
        cp.send_raw(frame).unwrap();
    }
    cp.assign(&sample_assignment("run-ok")).unwrap();
    assert_eq!(next(&cp).await.message, Some(claimed("run-ok")));
    assert!(matches!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskCompleted { .. })
    ));
    assert_eq!(cp.connections().len(), 1, "the connection survived");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_task_secret_reaches_the_agent_but_never_the_logs() {
    let (logs, guard) = crate::support::logs::capture_logs();
    let secret = "ghp_SECRETVALUE_abcdef123456";
    let cp = control_plane().await;
    let daemon = spawn_direct(&cp, &["-e", "OZ_STANDIN_SHOW=GITHUB_ACCESS_TOKEN"]).await;
    connected(&cp).await;
    cp.assign(&assignment_with_secret("run-secret", secret))
        .unwrap();
    assert_eq!(next(&cp).await.message, Some(claimed("run-secret")));
    assert!(matches!(
        next(&cp).await.message,
        Some(WorkerMessage::TaskCompleted { .. })
    ));
    let report = std::fs::read_to_string(daemon.report()).unwrap();
    assert!(
        report.contains(&format!("show GITHUB_ACCESS_TOKEN={secret}")),
        "the agent got the secret"
    );
    daemon.stop().await.unwrap();
    drop(guard);
    let text = logs.contents();
    assert!(
        text.contains("run-secret"),
        "logs were captured at debug level"
    );
    assert!(!text.contains(secret), "a task secret reached the logs");
    assert!(
        !text.contains(crate::support::daemon::API_KEY),
        "the API key reached the logs"
    );
}

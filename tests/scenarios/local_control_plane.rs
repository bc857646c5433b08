//! The `oz-local-control-plane` binary, driven by a real `WsTaskSource` acting as the worker.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use oz_agent_worker::adapters::control_plane::{WsConfig, WsTaskSource};
use oz_agent_worker::domain::ApiKey;
use oz_agent_worker::domain::{FailureReason, TaskReport};
use oz_agent_worker::ports::{ControlEvent, TaskSource};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(20);

struct Binary {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Binary {
    fn spawn(extra: &[&str]) -> Self {
        let mut child = Command::new(crate::support::local_control_plane_bin())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                "k",
                "--exit-when-done",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads stdout until a line starts with `prefix`; returns it.
    async fn line(&mut self, prefix: &str) -> String {
        loop {
            let next = tokio::time::timeout(BOUND, self.lines.next_line()).await;
            match next {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                other => panic!("no {prefix:?} line ({other:?}); saw {:?}", self.seen),
            }
        }
    }

    async fn exit_code(mut self) -> i32 {
        let status = tokio::time::timeout(BOUND, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

/// Connects a worker-side source to the binary; returns it with its event stream.
async fn worker(
    binary: &mut Binary,
) -> (
    Arc<WsTaskSource>,
    mpsc::Receiver<ControlEvent>,
    CancellationToken,
) {
    let url = binary.line("listening").await;
    let url = url.trim_start_matches("listening url=").to_owned();
    let source =
        Arc::new(WsTaskSource::new(WsConfig::new(url, "w-bin", ApiKey::new("k"))).unwrap());
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    tokio::spawn({
        let source = source.clone();
        let cancel = cancel.clone();
        async move { source.run(tx, cancel).await }
    });
    (source, rx, cancel)
}

async fn next_assignment(
    events: &mut mpsc::Receiver<ControlEvent>,
) -> oz_agent_worker::domain::Assignment {
    loop {
        match tokio::time::timeout(BOUND, events.recv()).await {
            Ok(Some(ControlEvent::Assigned(a))) => return *a,
            Ok(Some(_)) => {}
            other => panic!("no assignment: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_binary_prints_the_lifecycle_and_exits_zero_when_all_tasks_complete() {
    let mut binary = Binary::spawn(&["--tasks", "2"]);
    let (source, mut events, cancel) = worker(&mut binary).await;
    assert!(binary.line("connected").await.contains("worker_id=w-bin"));
    for _ in 0..2 {
        let a = next_assignment(&mut events).await;
        source
            .report(TaskReport::Claimed {
                task_id: a.task_id.clone(),
                worker_id: "w-bin".into(),
            })
            .unwrap();
        source
            .report(TaskReport::Completed {
                task_id: a.task_id,
                message: "Task completed successfully".into(),
                cancelled: false,
            })
            .unwrap();
    }
    assert!(
        binary
            .line("claimed task_id=local-task-")
            .await
            .contains("worker_id=w-bin")
    );
    binary.line("completed task_id=local-task-").await;
    binary.line("done tasks=2 failed=0").await;
    assert_eq!(binary.exit_code().await, 0);
    cancel.cancel();
}

#[tokio::test]
async fn the_binary_cancels_after_the_delay_and_exits_non_zero_when_a_task_failed() {
    let mut binary = Binary::spawn(&["--tasks", "2", "--cancel-after", "0.2"]);
    let (source, mut events, cancel) = worker(&mut binary).await;
    let first = next_assignment(&mut events).await;
    let second = next_assignment(&mut events).await;
    for _ in 0..2 {
        match tokio::time::timeout(BOUND, events.recv()).await {
            Ok(Some(ControlEvent::CancelRequested(_))) => {}
            other => panic!("expected a cancellation, got {other:?}"),
        }
    }
    source
        .report(TaskReport::Completed {
            task_id: first.task_id,
            message: "Task cancelled by user request.".into(),
            cancelled: true,
        })
        .unwrap();
    source
        .report(TaskReport::Failed {
            task_id: second.task_id,
            message: "boom".into(),
            failure_reason: FailureReason::ContainerExit,
            exit_code: Some(2),
        })
        .unwrap();
    binary.line("cancel-requested").await;
    binary.line("cancelled task_id=local-task-1").await;
    let failed = binary.line("failed task_id=local-task-2").await;
    assert!(
        failed.contains("reason=container_exit exit_code=2"),
        "{failed}"
    );
    assert_eq!(binary.exit_code().await, 1);
    cancel.cancel();
}

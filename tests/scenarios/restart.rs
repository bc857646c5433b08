//! Restarts of the real worker binary: a worker SIGKILLed mid-task on the Direct backend, then
//! started again on the same state directory, reports the run exactly once (as failed: the
//! worker restarted) and leaves no process of it behind. Waits are on events (frames seen by
//! the control plane, lines on stderr, processes dying), each bounded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use oz_agent_worker::app::restart::{RESTART_REASON, RESTARTED_MESSAGE};
use oz_local_control_plane::{LocalControlPlane, sample_assignment};
use oz_protocol::WorkerMessage;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::support::daemon::{control_plane, next, worker_command};
use crate::support::standin::{alive, report_value, standin_path, wait_all_dead, wait_for_pid};

/// Hang guard for every wait.
const BOUND: Duration = Duration::from_secs(30);

/// One worker process on a config (and state directory) that outlives it.
pub(super) struct Worker {
    child: Child,
    pid: Pid,
}

impl Worker {
    pub(super) fn spawn(cp: &LocalControlPlane, config: &Path, extra: &[&str]) -> Self {
        let mut child = worker_command(cp, config, extra)
            .spawn()
            .expect("the worker binary starts");
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[worker stderr] {line}");
            }
        });
        let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
        Self { child, pid }
    }

    pub(super) async fn signal_and_wait(&mut self, signal: Signal) {
        kill(self.pid, signal).expect("the worker is alive");
        tokio::time::timeout(BOUND, self.child.wait())
            .await
            .expect("the worker exits within the bound")
            .unwrap();
    }
}

/// A scratch area: config file, state directory, workspaces, the stand-in's report.
pub(super) struct Scratch {
    dir: TempDir,
    worker_id: String,
}

impl Scratch {
    pub(super) fn new(test: &str) -> Self {
        let scratch = Self {
            dir: tempfile::tempdir().unwrap(),
            worker_id: format!("restart-{test}-{:08x}", fastrand::u32(..)),
        };
        std::fs::write(
            scratch.config(),
            format!(
                "worker_id: {}\nstate_dir: {}\nbackend:\n  direct:\n    workspace_root: {}\n    \
                 oz_path: {}\n",
                scratch.worker_id,
                scratch.state().display(),
                scratch.workspaces().display(),
                standin_path().display()
            ),
        )
        .unwrap();
        scratch
    }

    pub(super) fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub(super) fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(super) fn workspaces(&self) -> PathBuf {
        self.dir.path().join("workspaces")
    }

    pub(super) fn report(&self) -> PathBuf {
        self.dir.path().join("report.txt")
    }

    /// Every journal file left in the state directory (of any instance).
    pub(super) fn journal_files(&self) -> Vec<PathBuf> {
        let workers = self.state().join("workers");
        let mut found = Vec::new();
        for worker in std::fs::read_dir(workers).into_iter().flatten().flatten() {
            for instance in std::fs::read_dir(worker.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let tasks = instance.path().join("tasks");
                for file in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
                    found.push(file.path());
                }
            }
        }
        found
    }
}

/// Waits until the `n`-th connection ever accepted is open (so `assign` reaches that worker).
pub(super) async fn wait_nth_open(cp: &LocalControlPlane, n: usize) {
    cp.wait_connections(BOUND, |c| c.len() >= n && c[n - 1].open)
        .await
        .unwrap_or_else(|| panic!("connection #{n} did not open within {BOUND:?}"));
}

/// The task ids and types of the frames `cp` receives until `until` returns true for one.
async fn frames_until(
    cp: &LocalControlPlane,
    until: impl Fn(&WorkerMessage) -> bool,
) -> Vec<WorkerMessage> {
    let mut seen = Vec::new();
    loop {
        let Some(message) = next(cp).await.message else {
            continue;
        };
        let done = until(&message);
        seen.push(message);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_direct_task_of_a_sigkilled_worker_is_reported_once_and_its_processes_end() {
    let cp = control_plane().await;
    let scratch = Scratch::new("direct-kill");
    let report = scratch.report().display().to_string();
    let knobs = [
        "-e",
        "OZ_STANDIN_SLEEP=forever",
        "-e",
        "OZ_STANDIN_SPAWN_CHILD=1",
        "-e",
    ];
    let report_knob = format!("OZ_STANDIN_REPORT={report}");
    let mut args: Vec<&str> = knobs.to_vec();
    args.push(&report_knob);

    let mut first = Worker::spawn(&cp, &scratch.config(), &args);
    wait_nth_open(&cp, 1).await;
    cp.assign(&sample_assignment("run-killed")).unwrap();
    let claimed = frames_until(&cp, |m| matches!(m, WorkerMessage::TaskClaimed { .. })).await;
    assert_eq!(claimed.last().unwrap().task_id(), "run-killed");
    let agent = wait_for_pid(&scratch.report()).await;
    let child: i32 = report_value(&scratch.report(), "child")
        .and_then(|c| c.parse().ok())
        .expect("the stand-in reports its child");
    let workspace = scratch.workspaces().join("run-killed");
    assert!(workspace.is_dir());

    first.signal_and_wait(Signal::SIGKILL).await;
    assert!(
        alive(agent) && alive(child),
        "a SIGKILLed worker leaves its agent running (what the restart must end)"
    );
    assert_eq!(scratch.journal_files().len(), 1, "the run is journaled");

    let mut second = Worker::spawn(&cp, &scratch.config(), &[]);
    let frames = frames_until(&cp, |m| m.task_id() == "run-killed").await;
    let WorkerMessage::TaskFailed {
        task_id,
        message,
        failure_reason,
        ..
    } = frames.last().unwrap().clone()
    else {
        panic!("expected task_failed, got {frames:?}");
    };
    assert_eq!(task_id, "run-killed");
    assert_eq!(message, RESTARTED_MESSAGE);
    assert_eq!(failure_reason, Some(RESTART_REASON.to_string()));
    let left = wait_all_dead(&[agent, child]).await;
    for pid in &left {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    assert!(
        left.is_empty(),
        "processes of the dead worker survived: {left:?}"
    );
    assert!(!workspace.exists(), "the workspace is removed");

    // The report was written, so the journal is empty: no later instance reports it again.
    second.signal_and_wait(Signal::SIGTERM).await;
    assert!(
        scratch.journal_files().is_empty(),
        "{:?}",
        scratch.journal_files()
    );
    let mut third = Worker::spawn(&cp, &scratch.config(), &[]);
    wait_nth_open(&cp, 3).await;
    cp.assign(&sample_assignment("run-after")).unwrap();
    let frames = frames_until(&cp, |m| {
        m.task_id() == "run-after" && !matches!(m, WorkerMessage::TaskClaimed { .. })
    })
    .await;
    assert!(
        frames.iter().all(|m| m.task_id() != "run-killed"),
        "reported twice: {frames:?}"
    );
    third.signal_and_wait(Signal::SIGTERM).await;
}

#[tokio::test]
async fn two_live_workers_with_one_id_never_recover_each_others_tasks_until_one_dies() {
    let cp = control_plane().await;
    let scratch = Scratch::new("direct-two");
    let report_knob = format!("OZ_STANDIN_REPORT={}", scratch.report().display());
    let args = ["-e", "OZ_STANDIN_SLEEP=forever", "-e", &report_knob];
    let mut first = Worker::spawn(&cp, &scratch.config(), &args);
    wait_nth_open(&cp, 1).await;
    cp.assign(&sample_assignment("run-of-first")).unwrap();
    frames_until(&cp, |m| matches!(m, WorkerMessage::TaskClaimed { .. })).await;
    let agent = wait_for_pid(&scratch.report()).await;

    // A second live worker with the same id starts, looking for dead instances every 200 ms:
    // the first one's task is not its business while the first one lives.
    let mut second = Worker::spawn(&cp, &scratch.config(), &["--orphan-scan-interval", "200ms"]);
    wait_nth_open(&cp, 2).await;
    // Give it work (assignments go to the newest connection) and wait for that to finish, so
    // its start-up is long over.
    cp.assign(&sample_assignment("run-of-second")).unwrap();
    let frames = frames_until(&cp, |m| {
        m.task_id() == "run-of-second" && !matches!(m, WorkerMessage::TaskClaimed { .. })
    })
    .await;
    assert!(
        frames.iter().all(|m| m.task_id() != "run-of-first"),
        "the second worker reported the first one's task: {frames:?}"
    );
    // Several scans of the second worker pass: nothing about the first one's run.
    while let Some(received) = cp.next_message(Duration::from_secs(1)).await {
        assert!(
            received.message.is_none(),
            "unexpected report while both live: {received:?}"
        );
    }
    assert!(alive(agent), "the first worker's agent is untouched");

    // The first worker dies: the second one's next scan ends its agent and reports its run.
    first.signal_and_wait(Signal::SIGKILL).await;
    let frames = frames_until(&cp, |m| m.task_id() == "run-of-first").await;
    let Some(WorkerMessage::TaskFailed { message, .. }) = frames.last() else {
        panic!("expected task_failed, got {frames:?}");
    };
    assert_eq!(message, RESTARTED_MESSAGE);
    assert!(wait_all_dead(&[agent]).await.is_empty());
    second.signal_and_wait(Signal::SIGTERM).await;
    assert!(scratch.journal_files().is_empty());
}

/// Polls `/readyz` until it answers `status` (bounded).
async fn wait_readyz(addr: std::net::SocketAddr, status: u16) {
    let poll = async {
        loop {
            if let Some((got, _)) = crate::support::http::try_get(addr, "/readyz").await
                && got == status
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(BOUND, poll)
        .await
        .unwrap_or_else(|_| panic!("/readyz never answered {status}"));
}

#[tokio::test]
async fn sigterm_with_a_drain_timeout_lets_the_running_task_finish_and_rejects_new_ones() {
    let cp = control_plane().await;
    let scratch = Scratch::new("drain");
    let release = scratch.dir.path().join("release");
    let port = crate::support::daemon::free_port();
    let health = format!("127.0.0.1:{port}");
    let wait_knob = format!("OZ_STANDIN_WAIT_FILE={}", release.display());
    let report_knob = format!("OZ_STANDIN_REPORT={}", scratch.report().display());
    let args = [
        "--drain-timeout",
        "5m",
        "--health-listen",
        &health,
        "-e",
        &wait_knob,
        "-e",
        &report_knob,
    ];
    let mut worker = Worker::spawn(&cp, &scratch.config(), &args);
    wait_nth_open(&cp, 1).await;
    let addr = health.parse().unwrap();
    wait_readyz(addr, 200).await;
    cp.assign(&sample_assignment("run-drained")).unwrap();
    frames_until(&cp, |m| matches!(m, WorkerMessage::TaskClaimed { .. })).await;
    wait_for_pid(&scratch.report()).await;

    kill(worker.pid, Signal::SIGTERM).unwrap();
    wait_readyz(addr, 503).await;
    cp.assign(&sample_assignment("run-during-drain")).unwrap();
    let rejected = frames_until(&cp, |m| m.task_id() == "run-during-drain").await;
    assert!(
        matches!(rejected.last(), Some(WorkerMessage::TaskRejected { .. })),
        "{rejected:?}"
    );
    // The running task is still running: let it finish by itself.
    std::fs::write(&release, "").unwrap();
    let done = frames_until(&cp, |m| m.task_id() == "run-drained").await;
    assert!(
        matches!(done.last(), Some(WorkerMessage::TaskCompleted { .. })),
        "the drained task completes instead of being stopped: {done:?}"
    );
    let status = tokio::time::timeout(BOUND, worker.child.wait())
        .await
        .expect("the worker exits after the drain")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_task_still_running_at_the_end_of_the_drain_is_stopped_as_today() {
    let cp = control_plane().await;
    let scratch = Scratch::new("drain-end");
    let report_knob = format!("OZ_STANDIN_REPORT={}", scratch.report().display());
    let args = [
        "--drain-timeout",
        "1s",
        "-e",
        "OZ_STANDIN_SLEEP=forever",
        "-e",
        &report_knob,
    ];
    let mut worker = Worker::spawn(&cp, &scratch.config(), &args);
    wait_nth_open(&cp, 1).await;
    cp.assign(&sample_assignment("run-overrun")).unwrap();
    frames_until(&cp, |m| matches!(m, WorkerMessage::TaskClaimed { .. })).await;
    let agent = wait_for_pid(&scratch.report()).await;
    worker.signal_and_wait(Signal::SIGTERM).await;
    let frames = frames_until(&cp, |m| m.task_id() == "run-overrun").await;
    let Some(WorkerMessage::TaskFailed { failure_reason, .. }) = frames.last() else {
        panic!("expected task_failed, got {frames:?}");
    };
    assert_eq!(failure_reason.as_deref(), Some("graceful_shutdown"));
    assert!(wait_all_dead(&[agent]).await.is_empty());
}

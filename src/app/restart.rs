//! Restarts: the crash journal around the control-plane source, and what a starting worker does
//! about the tasks of dead instances of its worker id (Docker and Direct backends).
//!
//! A task is journaled (durably, in the state directory) before its `task_claimed` is queued,
//! and dropped once its terminal report has been written to the socket. A worker that starts
//! claims every dead instance of its worker id, and for each task still in a dead instance's
//! journal: kills the process groups recorded for it (only while their leader is still the
//! recorded process), removes its workspace (unless `--no-cleanup`), and reports it
//! `task_failed` with reason [`RESTART_REASON`] and message [`RESTARTED_MESSAGE`]. Docker task
//! containers of dead instances are removed by the Docker backend's start-up sweep.
//!
//! Why `graceful_shutdown`: it is the reason the worker already sends when it stops while a task
//! runs, and the server treats it as an infrastructure interruption of the run rather than a
//! failure of the task's own code, which is exactly what a worker restart is. `unknown` would
//! hide that, and no backend reason (`container_exit`, `agent_invocation`) is true.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::adapters::state::{Instances, kill_recorded_group};
use crate::domain::{FailureReason, TaskId, TaskReport};
use crate::ports::{ControlEvent, SourceError, TaskSource};

/// The message of the `task_failed` sent for a task a dead instance left unreported.
pub const RESTARTED_MESSAGE: &str = "the worker restarted while the task was running";

/// The failure reason of that report (see the module docs for why).
pub const RESTART_REASON: FailureReason = FailureReason::GracefulShutdown;

/// A [`TaskSource`] that journals each claim before queuing it. Dropping the task from the
/// journal once its terminal report was written is the inner source's written hook (see
/// [`drop_when_written`]).
pub(crate) struct JournalingSource {
    inner: Arc<dyn TaskSource>,
    instances: Instances,
}

impl JournalingSource {
    pub(crate) fn new(inner: Arc<dyn TaskSource>, instances: Instances) -> Self {
        Self { inner, instances }
    }
}

/// The written hook that drops a task from the journal once its terminal report is out.
pub(crate) fn drop_when_written(instances: Instances) -> impl Fn(&str, &str) + Send + Sync {
    move |kind, task_id| {
        if kind == oz_protocol::TASK_COMPLETED || kind == oz_protocol::TASK_FAILED {
            instances.forget(task_id);
        } else if kind == oz_protocol::TASK_CLAIMED
            && let Err(error) = instances.record_claim_sent(task_id)
        {
            warn!(task_id, %error, "Cannot mark the claim as sent in the crash journal.");
        }
    }
}

#[async_trait]
impl TaskSource for JournalingSource {
    async fn run(
        &self,
        events: mpsc::Sender<ControlEvent>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        self.inner.run(events, cancel).await
    }

    fn report(&self, report: TaskReport) -> Result<(), SourceError> {
        if let TaskReport::Claimed { task_id, .. } = &report
            && let Err(error) = self.instances.record_claim(task_id.as_str())
        {
            // The run still goes ahead; only its recovery after a crash is lost.
            warn!(task_id = %task_id, %error, "Cannot journal the claimed task; it will not be recovered if the worker crashes.");
        }
        self.inner.report(report)
    }

    async fn flush(&self, timeout: Duration) -> bool {
        self.inner.flush(timeout).await
    }
}

/// What [`recover`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Dead instances cleaned up.
    pub instances: Vec<String>,
    /// Their unreported tasks, now in this instance's journal, to report as failed.
    pub tasks: Vec<TaskId>,
    /// Process groups killed.
    pub killed_groups: usize,
    /// Tasks whose claim never reached the socket: cleaned up but not reported (the server
    /// never saw them claimed and offers them again).
    pub unsent_claims: usize,
}

/// Claims the dead instances of this worker id and ends what their journals list: kills the
/// recorded process groups, removes per-task workspaces under `workspace_root` (when `cleanup`),
/// and moves each entry into this instance's journal. Returns the tasks to report: those whose
/// `task_claimed` was written (the others are dropped from the journal). Call it after
/// the backend's own start-up sweep, which may already have claimed some instances.
pub fn recover(instances: &Instances, workspace_root: Option<&Path>, cleanup: bool) -> Recovered {
    let mut recovered = Recovered::default();
    for dead in instances.claim_dead() {
        for entry in instances.journal_of(&dead) {
            if let Err(error) = instances.take_over(&dead, &entry.task_id) {
                warn!(task_id = %entry.task_id, instance = %dead, %error, "Cannot move a dead instance's journal entry; reporting it anyway.");
            }
            for group in &entry.groups {
                if kill_recorded_group(*group) {
                    info!(task_id = %entry.task_id, pgid = group.pgid, "Killed a process group left by a dead worker process.");
                    recovered.killed_groups += 1;
                }
            }
            if cleanup && let Some(root) = workspace_root {
                // The recorded workspace, else where the backend puts it (a crash may come
                // between its creation and its record).
                let dir = entry
                    .workspace
                    .clone()
                    .unwrap_or_else(|| root.join(&entry.task_id));
                let safe = dir.starts_with(root)
                    && dir != root
                    && dir.parent() == Some(root)
                    && !entry.task_id.contains('/')
                    && entry.task_id != ".."
                    && entry.task_id != ".";
                if safe {
                    match std::fs::remove_dir_all(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(error) => {
                            warn!(task_id = %entry.task_id, workspace = %dir.display(), %error, "Cannot remove a dead worker process's workspace.");
                        }
                    }
                }
            }
            if !entry.claim_sent {
                info!(task_id = %entry.task_id, "A dead worker process claimed this task but its claim never left; not reporting it (the server offers it again).");
                instances.forget(&entry.task_id);
                recovered.unsent_claims += 1;
                continue;
            }
            match TaskId::parse(entry.task_id) {
                Ok(task_id) => recovered.tasks.push(task_id),
                Err(_) => {
                    warn!(instance = %dead, "Skipping a journal entry with an empty task id.")
                }
            }
        }
        instances.release(&dead);
        recovered.instances.push(dead);
    }
    recovered
}

/// The report for a task a dead instance left unreported.
pub fn restarted_report(task_id: TaskId) -> TaskReport {
    TaskReport::Failed {
        task_id,
        message: RESTARTED_MESSAGE.to_owned(),
        failure_reason: RESTART_REASON,
        exit_code: None,
    }
}

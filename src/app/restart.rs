//! Restarts: the crash journal around the control-plane source, and what a starting worker does
//! about the tasks of dead instances of its worker id (Docker and Direct backends).
//!
//! A task is journaled (durably, in the state directory) before its `task_claimed` is queued;
//! the entry is marked just before that claim is written (from then on the server may know the
//! run as claimed), gets the terminal report when one is queued, and is dropped once the server
//! has confirmed reading that terminal report (see `Delivery::Confirmed`: a written report is
//! not a delivered one, since a process killed with unread input on its socket has its unsent
//! bytes discarded by the kernel). A worker that starts claims every dead instance of its
//! worker id, and for each task still in a dead instance's journal: kills the process groups
//! recorded for it (only while their leader is still the recorded process), removes its
//! workspace (unless `--no-cleanup`), and reports it: the journaled terminal report again,
//! byte for byte, when there is one (the server may have it already: at least once, as every
//! report), else `task_failed` with reason [`RESTART_REASON`] and message [`RESTARTED_MESSAGE`].
//! Docker task containers of dead instances are removed by the Docker backend's start-up sweep.
//!
//! Why `graceful_shutdown`: it is the reason the worker already sends when it stops while a task
//! runs, and the server treats it as an infrastructure interruption of the run rather than a
//! failure of the task's own code, which is exactly what a worker restart is. `unknown` would
//! hide that, and no backend reason (`container_exit`, `agent_invocation`) is true.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::adapters::control_plane::Delivery;
use crate::adapters::state::{Instances, TerminalRecord, kill_recorded_group};
use crate::app::supervisor::OrphanScan;
use crate::domain::{FailureReason, TaskId, TaskReport};
use crate::ports::{ControlEvent, Executor, Orphan, SourceError, TaskSource};

/// The message of the `task_failed` sent for a task a dead instance left unreported.
pub const RESTARTED_MESSAGE: &str = "the worker restarted while the task was running";

/// The failure reason of that report (see the module docs for why).
pub const RESTART_REASON: FailureReason = FailureReason::GracefulShutdown;

/// A [`TaskSource`] that journals each claim and each terminal report before queuing it.
/// Marking the claim as sent and dropping the task once its terminal report is confirmed is the
/// inner source's delivery hook (see [`journal_delivery`]).
pub(crate) struct JournalingSource {
    inner: Arc<dyn TaskSource>,
    instances: Instances,
}

impl JournalingSource {
    pub(crate) fn new(inner: Arc<dyn TaskSource>, instances: Instances) -> Self {
        Self { inner, instances }
    }
}

/// The delivery hook: marks a claim as sent just before it is written, and drops a task from
/// the journal once the server confirmed reading its terminal report.
pub(crate) fn journal_delivery(
    instances: Instances,
) -> impl Fn(Delivery, &str, &str) + Send + Sync {
    move |stage, kind, task_id| match stage {
        Delivery::Confirmed
            if kind == oz_protocol::TASK_COMPLETED || kind == oz_protocol::TASK_FAILED =>
        {
            instances.forget(task_id);
        }
        Delivery::Sending if kind == oz_protocol::TASK_CLAIMED => {
            if let Err(error) = instances.record_claim_sent(task_id) {
                warn!(task_id, %error, "Cannot mark the claim as sent in the crash journal.");
            }
        }
        _ => {}
    }
}

/// The journal's copy of a terminal report (`None` for a claim or a rejection).
fn terminal_record(report: &TaskReport) -> Option<(&TaskId, TerminalRecord)> {
    match report {
        TaskReport::Completed {
            task_id,
            message,
            cancelled,
        } => Some((
            task_id,
            TerminalRecord::Completed {
                message: message.clone(),
                cancelled: *cancelled,
            },
        )),
        TaskReport::Failed {
            task_id,
            message,
            failure_reason,
            exit_code,
        } => Some((
            task_id,
            TerminalRecord::Failed {
                message: message.clone(),
                failure_reason: failure_reason.as_str().to_owned(),
                exit_code: *exit_code,
            },
        )),
        TaskReport::Claimed { .. } | TaskReport::Rejected { .. } => None,
    }
}

/// The report a journaled terminal record stands for. An unknown reason (a journal written by
/// a newer version) becomes `unknown`, as an unknown reason from a backend would.
fn report_from_record(task_id: TaskId, record: TerminalRecord) -> TaskReport {
    match record {
        TerminalRecord::Completed { message, cancelled } => TaskReport::Completed {
            task_id,
            message,
            cancelled,
        },
        TerminalRecord::Failed {
            message,
            failure_reason,
            exit_code,
        } => TaskReport::Failed {
            task_id,
            message,
            failure_reason: FailureReason::ALL
                .into_iter()
                .find(|r| r.as_str() == failure_reason)
                .unwrap_or(FailureReason::Unknown),
            exit_code,
        },
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
        if let Some((task_id, record)) = terminal_record(&report)
            && let Err(error) = self.instances.record_terminal(task_id.as_str(), record)
        {
            // A crash before the server confirms it then reports a restart failure instead.
            warn!(task_id = %task_id, %error, "Cannot journal the terminal report.");
        }
        self.inner.report(report)
    }

    async fn flush(&self, timeout: Duration) -> bool {
        self.inner.flush(timeout).await
    }
}

/// The default of `orphan_scan_interval`: how often a running worker looks for instances that
/// died while it lives (another process with the same worker id on this host or cluster).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);

/// The orphan scan with the crash journal: the executor adopts what it can follow, then
/// [`recover`] ends and reports what dead instances journaled and nobody follows. Run by the
/// app at start-up and by the supervisor every [`OrphanScan::interval`], so a worker also
/// takes over from another process with its worker id that dies while it runs.
pub struct Recovery {
    executor: Arc<dyn Executor>,
    instances: Option<Instances>,
    /// Where recovered reports go (the control-plane source itself: their journal entries
    /// were taken over already).
    source: Arc<dyn TaskSource>,
    workspace_root: Option<PathBuf>,
    cleanup: bool,
    rescan: Duration,
}

impl Recovery {
    /// A scan over `executor`, with the journal of `instances` when the worker has a state
    /// directory; `workspace_root` is where Direct workspaces live (per-task ones only);
    /// `rescan` is the configured interval between scans while running (zero: none).
    pub fn new(
        executor: Arc<dyn Executor>,
        instances: Option<Instances>,
        source: Arc<dyn TaskSource>,
        workspace_root: Option<PathBuf>,
        cleanup: bool,
        rescan: Duration,
    ) -> Self {
        Self {
            executor,
            instances,
            source,
            workspace_root,
            cleanup,
            rescan,
        }
    }
}

#[async_trait]
impl OrphanScan for Recovery {
    async fn scan(&self) -> Vec<Orphan> {
        let orphans = self.executor.adopt_orphans().await;
        let Some(instances) = &self.instances else {
            return orphans;
        };
        let adopted: HashSet<String> = orphans
            .iter()
            .map(|o| o.task_id.as_str().to_owned())
            .collect();
        let recovered = recover(
            instances,
            self.workspace_root.as_deref(),
            self.cleanup,
            &adopted,
        );
        let acted = recovered.adopted
            + recovered.tasks.len()
            + recovered.resend.len()
            + recovered.killed_groups
            + recovered.unsent_claims;
        if acted > 0 {
            info!(
                instances = recovered.instances.len(),
                adopted = recovered.adopted,
                reported = recovered.tasks.len() + recovered.resend.len(),
                killed_process_groups = recovered.killed_groups,
                "Cleaned up after dead worker processes with this worker id."
            );
        }
        let resend = recovered.resend.into_iter().map(|report| (report, true));
        let failed = recovered
            .tasks
            .into_iter()
            .map(|task_id| (restarted_report(task_id), false));
        for (report, resent) in resend.chain(failed) {
            if resent {
                warn!(task_id = %report.task_id(), "Sending again the terminal report of a task a dead worker process finished (the server may have it already).");
            } else {
                warn!(task_id = %report.task_id(), "Reporting a task a dead worker process left unreported as failed.");
            }
            if let Err(err) = self.source.report(report) {
                warn!("Cannot queue a recovered report: {err}");
            }
        }
        orphans
    }

    /// The configured interval, or the executor's when shorter (a Kubernetes Lease lapses
    /// sooner); none when zero is configured or there is nothing to scan (no state directory
    /// and an executor that adopts nothing).
    fn interval(&self) -> Option<Duration> {
        if self.rescan.is_zero() {
            return None;
        }
        match (self.executor.orphan_scan_interval(), &self.instances) {
            (Some(executor), _) => Some(executor.min(self.rescan)),
            (None, Some(_)) => Some(self.rescan),
            (None, None) => None,
        }
    }
}

/// What [`recover`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Dead instances cleaned up.
    pub instances: Vec<String>,
    /// Their tasks that never got a terminal report (now in this instance's journal), to
    /// report as failed ([`restarted_report`]).
    pub tasks: Vec<TaskId>,
    /// The journaled terminal reports of their tasks that the server never confirmed, to send
    /// again as they were.
    pub resend: Vec<TaskReport>,
    /// Process groups killed.
    pub killed_groups: usize,
    /// Tasks whose claim never reached the socket: cleaned up but not reported (the server
    /// never saw them claimed and offers them again).
    pub unsent_claims: usize,
    /// Tasks left to the backend, which adopted them.
    pub adopted: usize,
}

/// Claims the dead instances of this worker id and ends what their journals list: kills the
/// recorded process groups, removes per-task workspaces under `workspace_root` (when `cleanup`),
/// and moves each entry into this instance's journal. Returns the reports owed: the journaled
/// terminal reports, and a restart failure for each task whose `task_claimed` may have left
/// (the others are dropped from the journal). Tasks in `adopted` (the backend took them over
/// and follows them) are only moved into this instance's journal. Call it after the backend's
/// own start-up sweep, which may already have claimed some instances.
pub fn recover(
    instances: &Instances,
    workspace_root: Option<&Path>,
    cleanup: bool,
    adopted: &HashSet<String>,
) -> Recovered {
    let mut recovered = Recovered::default();
    for dead in instances.claim_dead() {
        for entry in instances.journal_of(&dead) {
            if let Err(error) = instances.take_over(&dead, &entry.task_id) {
                warn!(task_id = %entry.task_id, instance = %dead, %error, "Cannot move a dead instance's journal entry; reporting it anyway.");
            }
            if adopted.contains(&entry.task_id) {
                recovered.adopted += 1;
                continue;
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
                Ok(task_id) => match entry.terminal {
                    Some(record) => recovered.resend.push(report_from_record(task_id, record)),
                    None => recovered.tasks.push(task_id),
                },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> TaskId {
        TaskId::parse(raw).unwrap()
    }

    #[test]
    fn a_dead_instances_journal_becomes_reports_resent_as_queued_failed_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let dead = Instances::open(dir.path(), "w").unwrap();
        let source = JournalingSource::new(Arc::new(NullSource), dead.clone());
        let hook = journal_delivery(dead.clone());
        let claim = |task: &str| TaskReport::Claimed {
            task_id: id(task),
            worker_id: "w".into(),
        };
        // Finished, terminal report queued but never confirmed.
        let finished = TaskReport::Failed {
            task_id: id("finished"),
            message: "exit 3".into(),
            failure_reason: FailureReason::AgentInvocation,
            exit_code: Some(3),
        };
        source.report(claim("finished")).unwrap();
        hook(Delivery::Sending, oz_protocol::TASK_CLAIMED, "finished");
        source.report(finished.clone()).unwrap();
        hook(Delivery::Sending, oz_protocol::TASK_FAILED, "finished");
        // Running, its claim on the wire.
        source.report(claim("running")).unwrap();
        hook(Delivery::Sending, oz_protocol::TASK_CLAIMED, "running");
        // Claimed, the claim never written.
        source.report(claim("unsent")).unwrap();
        // Done and confirmed: nothing left.
        source.report(claim("done")).unwrap();
        hook(Delivery::Sending, oz_protocol::TASK_CLAIMED, "done");
        source
            .report(TaskReport::Completed {
                task_id: id("done"),
                message: "ok".into(),
                cancelled: false,
            })
            .unwrap();
        hook(Delivery::Sending, oz_protocol::TASK_COMPLETED, "done");
        hook(Delivery::Confirmed, oz_protocol::TASK_COMPLETED, "done");
        drop((source, hook, dead));

        let next = Instances::open(dir.path(), "w").unwrap();
        let recovered = recover(&next, None, true, &HashSet::new());
        assert_eq!(recovered.instances.len(), 1);
        assert_eq!(recovered.resend, [finished]);
        assert_eq!(recovered.tasks, [id("running")]);
        assert_eq!(recovered.unsent_claims, 1);
        let mut left: Vec<_> = next.journal().into_iter().map(|e| e.task_id).collect();
        left.sort();
        assert_eq!(
            left,
            ["finished", "running"],
            "owed reports stay journaled until confirmed"
        );
    }

    #[test]
    fn a_journaled_reason_this_version_does_not_know_is_sent_as_unknown() {
        let report = report_from_record(
            id("t"),
            TerminalRecord::Failed {
                message: "m".into(),
                failure_reason: "from_the_future".into(),
                exit_code: None,
            },
        );
        assert!(matches!(
            report,
            TaskReport::Failed {
                failure_reason: FailureReason::Unknown,
                ..
            }
        ));
        for reason in FailureReason::ALL {
            let failed = TaskReport::Failed {
                task_id: id("t"),
                message: "m".into(),
                failure_reason: reason,
                exit_code: Some(1),
            };
            let (_, record) = terminal_record(&failed).unwrap();
            assert_eq!(report_from_record(id("t"), record), failed);
        }
    }

    struct NullSource;

    #[async_trait]
    impl TaskSource for NullSource {
        async fn run(
            &self,
            _events: mpsc::Sender<ControlEvent>,
            _cancel: CancellationToken,
        ) -> Result<(), SourceError> {
            Ok(())
        }

        fn report(&self, _report: TaskReport) -> Result<(), SourceError> {
            Ok(())
        }

        async fn flush(&self, _timeout: Duration) -> bool {
            true
        }
    }
}

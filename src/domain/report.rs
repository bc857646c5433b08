//! What the worker tells the control plane about a task, in domain terms. The control-plane
//! adapter encodes these as `task_claimed`, `task_rejected`, `task_completed` and `task_failed`.

use crate::domain::failure::{CANCELLED_MESSAGE, COMPLETED_MESSAGE, FailureReason, Verdict};
use crate::domain::task::TaskId;

/// One worker → server report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskReport {
    /// The worker took the task (`task_claimed`).
    Claimed {
        /// The run.
        task_id: TaskId,
        /// This worker's id.
        worker_id: String,
    },
    /// The worker will not run the task; the server re-queues it (`task_rejected`).
    Rejected {
        /// The run.
        task_id: TaskId,
        /// Human text, e.g. `worker at maximum concurrency`.
        reason: String,
    },
    /// The task finished, or was cancelled by the user (`task_completed`).
    Completed {
        /// The run.
        task_id: TaskId,
        /// The message.
        message: String,
        /// True adds `task_state: CANCELLED`.
        cancelled: bool,
    },
    /// The task failed (`task_failed`).
    Failed {
        /// The run.
        task_id: TaskId,
        /// The user-facing text.
        message: String,
        /// The bounded reason.
        failure_reason: FailureReason,
        /// The normalised exit code; `None` is omitted on the wire.
        exit_code: Option<i32>,
    },
}

impl TaskReport {
    /// The terminal report for a verdict, or `None` for a dispatched task (no message).
    pub fn terminal(task_id: TaskId, verdict: &Verdict) -> Option<Self> {
        match verdict {
            Verdict::Completed => Some(Self::Completed {
                task_id,
                message: COMPLETED_MESSAGE.to_owned(),
                cancelled: false,
            }),
            Verdict::CancelledByUser => Some(Self::Completed {
                task_id,
                message: CANCELLED_MESSAGE.to_owned(),
                cancelled: true,
            }),
            Verdict::Dispatched => None,
            Verdict::Failed(f) => Some(Self::Failed {
                task_id,
                message: f.message.clone(),
                failure_reason: f.reason,
                exit_code: f.exit_code,
            }),
        }
    }

    /// The run this report is about.
    pub fn task_id(&self) -> &TaskId {
        match self {
            Self::Claimed { task_id, .. }
            | Self::Rejected { task_id, .. }
            | Self::Completed { task_id, .. }
            | Self::Failed { task_id, .. } => task_id,
        }
    }

    /// True for `task_completed` and `task_failed`: the reports that must never be lost.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed { .. } | Self::Failed { .. })
    }
}

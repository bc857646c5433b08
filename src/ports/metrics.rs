//! The metrics port: typed signals from the domain's point of view. Only the OpenTelemetry
//! adapter knows instrument names and attributes.

use std::time::Duration;

use crate::domain::{FailurePhase, FailureReason, RejectReason, TaskResult};

/// Something worth counting.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A control-plane connection was established.
    Connected,
    /// A connection ended, for any reason (remote close, timeout, local shutdown).
    Disconnected,
    /// A dial or handshake failed.
    DialFailed,
    /// A task was rejected.
    TaskRejected(RejectReason),
    /// A task was claimed and now counts as active.
    TaskClaimed,
    /// A task a dead worker process left running was adopted: it counts as active (it was
    /// claimed by that process, so the claim counter does not move).
    TaskAdopted,
    /// One execution ended; it no longer counts as active.
    TaskFinished {
        /// The `result` label.
        result: TaskResult,
        /// From execution start to the end.
        duration: Duration,
        /// Set when reported with `task_failed`.
        failure: Option<(FailurePhase, FailureReason)>,
    },
}

/// A sink for [`Signal`]s. Never blocks and never fails: metrics must not take the daemon down.
#[cfg_attr(test, mockall::automock)]
pub trait Metrics: Send + Sync {
    /// Records one signal.
    fn record(&self, signal: Signal);
}

//! The concurrency policy: a pure decision about whether to take one more task.

use std::num::NonZeroUsize;

/// How many tasks may run at once. Built from `max_concurrent_tasks`, where zero or a negative
/// value means unlimited (as the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyPolicy {
    limit: Option<NonZeroUsize>,
    configured: i64,
}

/// The decision for one assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Claim and run it.
    Admit,
    /// Reply `task_rejected`; the server keeps it queued.
    Reject(RejectReason),
    /// The same `task_id` is already running here: ignore the duplicate, send nothing (its
    /// claim was sent already and its terminal report will follow).
    Duplicate,
}

/// Whether the worker takes new tasks: open while running, closed from the moment shutdown (or
/// a drain) begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// New assignments are admitted while a slot is free.
    Open,
    /// Every new assignment is rejected as [`RejectReason::ShuttingDown`].
    Closed,
}

/// Why a task was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Every slot is taken.
    AtCapacity,
    /// The worker is shutting down and takes no new work.
    ShuttingDown,
}

impl RejectReason {
    /// Every reason, for priming metrics.
    pub const ALL: [RejectReason; 2] = [Self::AtCapacity, Self::ShuttingDown];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::AtCapacity => "at_capacity",
            Self::ShuttingDown => "shutting_down",
        }
    }

    /// The wire `reason` text of `task_rejected`.
    pub fn wire_text(self) -> &'static str {
        match self {
            Self::AtCapacity => "worker at maximum concurrency",
            Self::ShuttingDown => "worker shutting down",
        }
    }
}

impl ConcurrencyPolicy {
    /// From the configured `max_concurrent_tasks`.
    pub fn from_configured(max_concurrent_tasks: i64) -> Self {
        let limit = usize::try_from(max_concurrent_tasks)
            .ok()
            .and_then(NonZeroUsize::new);
        Self {
            limit,
            configured: max_concurrent_tasks,
        }
    }

    /// The configured value as given (for the `tasks_max_concurrent` gauge; negatives as-is).
    pub fn configured(&self) -> i64 {
        self.configured
    }

    /// The limit, or `None` when unlimited.
    pub fn limit(&self) -> Option<NonZeroUsize> {
        self.limit
    }

    /// Decides on one assignment given how many executions hold a slot now, whether this
    /// `task_id` is already executing, and whether intake is open.
    pub fn admit(&self, running: usize, already_running: bool, intake: Intake) -> Admission {
        if already_running {
            Admission::Duplicate
        } else if intake == Intake::Closed {
            Admission::Reject(RejectReason::ShuttingDown)
        } else if self.limit.is_some_and(|limit| running >= limit.get()) {
            Admission::Reject(RejectReason::AtCapacity)
        } else {
            Admission::Admit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_table() {
        let cases = [
            // (configured, running, duplicate, intake closed, expected)
            (0, 1000, false, false, Admission::Admit),
            (-1, 5, false, false, Admission::Admit),
            (2, 0, false, false, Admission::Admit),
            (2, 1, false, false, Admission::Admit),
            (
                2,
                2,
                false,
                false,
                Admission::Reject(RejectReason::AtCapacity),
            ),
            (
                2,
                3,
                false,
                false,
                Admission::Reject(RejectReason::AtCapacity),
            ),
            (
                2,
                0,
                false,
                true,
                Admission::Reject(RejectReason::ShuttingDown),
            ),
            (2, 2, true, false, Admission::Duplicate),
            (0, 0, true, true, Admission::Duplicate),
        ];
        for (configured, running, dup, stopping, expected) in cases {
            let policy = ConcurrencyPolicy::from_configured(configured);
            let intake = if stopping {
                Intake::Closed
            } else {
                Intake::Open
            };
            assert_eq!(
                policy.admit(running, dup, intake),
                expected,
                "max={configured} running={running} dup={dup} stopping={stopping}"
            );
        }
    }

    #[test]
    fn negative_limit_is_unlimited_but_reported_as_configured() {
        let policy = ConcurrencyPolicy::from_configured(-1);
        assert_eq!(policy.limit(), None);
        assert_eq!(policy.configured(), -1);
    }
}

//! Failure vocabulary and classification: the bounded `failure_reason` enum the server mirrors,
//! the metric phases, exit-code normalisation, and how an executor's exit becomes a terminal
//! report.

use std::fmt;

/// The wire `failure_reason` and metric label `reason`. The server mirrors this enum: adding a
/// value requires a server change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum FailureReason {
    Unknown,
    TaskTimeout,
    TaskCancelled,
    GracefulShutdown,
    ImagePull,
    SidecarPrep,
    ContainerCreate,
    ContainerStart,
    ContainerWait,
    ContainerExit,
    ContainerOom,
    WorkspaceSetup,
    SetupCommand,
    AgentInvocation,
    TeardownCommand,
    DispatchCommand,
    DispatchTimeout,
    CancelCommand,
    JobCreate,
    JobWatch,
    JobFailed,
    Evicted,
    PodWatch,
    Unschedulable,
    VolumeMount,
    InitContainer,
    InvalidImage,
    ActiveDeadline,
    Cleanup,
}

impl FailureReason {
    /// All 29 reasons, in the reference's order.
    pub const ALL: [FailureReason; 29] = [
        Self::Unknown,
        Self::TaskTimeout,
        Self::TaskCancelled,
        Self::GracefulShutdown,
        Self::ImagePull,
        Self::SidecarPrep,
        Self::ContainerCreate,
        Self::ContainerStart,
        Self::ContainerWait,
        Self::ContainerExit,
        Self::ContainerOom,
        Self::WorkspaceSetup,
        Self::SetupCommand,
        Self::AgentInvocation,
        Self::TeardownCommand,
        Self::DispatchCommand,
        Self::DispatchTimeout,
        Self::CancelCommand,
        Self::JobCreate,
        Self::JobWatch,
        Self::JobFailed,
        Self::Evicted,
        Self::PodWatch,
        Self::Unschedulable,
        Self::VolumeMount,
        Self::InitContainer,
        Self::InvalidImage,
        Self::ActiveDeadline,
        Self::Cleanup,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::TaskTimeout => "task_timeout",
            Self::TaskCancelled => "task_cancelled",
            Self::GracefulShutdown => "graceful_shutdown",
            Self::ImagePull => "image_pull",
            Self::SidecarPrep => "sidecar_prep",
            Self::ContainerCreate => "container_create",
            Self::ContainerStart => "container_start",
            Self::ContainerWait => "container_wait",
            Self::ContainerExit => "container_exit",
            Self::ContainerOom => "container_oom",
            Self::WorkspaceSetup => "workspace_setup",
            Self::SetupCommand => "setup_command",
            Self::AgentInvocation => "agent_invocation",
            Self::TeardownCommand => "teardown_command",
            Self::DispatchCommand => "dispatch_command",
            Self::DispatchTimeout => "dispatch_timeout",
            Self::CancelCommand => "cancel_command",
            Self::JobCreate => "job_create",
            Self::JobWatch => "job_watch",
            Self::JobFailed => "job_failed",
            Self::Evicted => "evicted",
            Self::PodWatch => "pod_watch",
            Self::Unschedulable => "unschedulable",
            Self::VolumeMount => "volume_mount",
            Self::InitContainer => "init_container",
            Self::InvalidImage => "invalid_image",
            Self::ActiveDeadline => "active_deadline",
            Self::Cleanup => "cleanup",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metric label `phase` (never sent on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailurePhase {
    /// Before execution started.
    Assignment,
    /// Inside the backend (the only phase the reference emits).
    Backend,
    /// While cleaning up.
    Cleanup,
}

impl FailurePhase {
    /// All three phases.
    pub const ALL: [FailurePhase; 3] = [Self::Assignment, Self::Backend, Self::Cleanup];

    /// The label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assignment => "assignment",
            Self::Backend => "backend",
            Self::Cleanup => "cleanup",
        }
    }
}

/// A structured failure observed by an executor: only facts, no reporting decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskFailure {
    /// Where it failed.
    pub phase: FailurePhase,
    /// The bounded reason.
    pub reason: FailureReason,
    /// Human text, e.g. `oz agent exited with error: exit status 2`. Must hold no secret.
    pub message: String,
    /// The normalised exit status of the failing process (128+signal for signal deaths), if one
    /// was observed. Zero is treated as "not observed".
    pub exit_code: Option<i32>,
}

impl TaskFailure {
    /// A backend-phase failure without an exit code.
    pub fn backend(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            phase: FailurePhase::Backend,
            reason,
            message: message.into(),
            exit_code: None,
        }
    }

    /// Adds an exit code.
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }
}

/// How an executor run ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The workload ran to completion with status 0.
    Succeeded,
    /// The workload was handed off and not waited for (Command backend).
    Spawned,
    /// The cancellation token fired and the workload was stopped and cleaned up.
    Cancelled,
}

/// Who asked for a task to stop. The first source recorded wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelSource {
    /// A `task_cancellation` from the server.
    User,
    /// Worker shutdown (SIGINT/SIGTERM).
    Shutdown,
}

/// The terminal result label (`result`) of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskResult {
    /// Exit 0.
    Succeeded,
    /// Reported with `task_failed`.
    Failed,
    /// Cancelled by the user: reported as `task_completed` + `CANCELLED`.
    Cancelled,
    /// Handed off to a remote runtime.
    Dispatched,
}

impl TaskResult {
    /// All four results.
    pub const ALL: [TaskResult; 4] = [
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Dispatched,
    ];

    /// The label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Dispatched => "dispatched",
        }
    }
}

/// The exit status of a process killed by `signal`: 128 + signal (SIGTERM → 143).
pub fn signal_exit_code(signal: i32) -> i32 {
    128 + signal
}

/// 128 + SIGTERM, the code the reclassification to `graceful_shutdown` compares against.
pub const SIGTERM_EXIT_CODE: i32 = 143;

/// Message sent with `task_completed` on success.
pub const COMPLETED_MESSAGE: &str = "Task completed successfully";
/// Message sent with `task_completed` + `CANCELLED` on a user cancellation.
pub const CANCELLED_MESSAGE: &str = "Task cancelled by user request.";
/// Message for a failure caused by cancellation (shutdown or an internal cancel).
pub const INTERRUPTED_MESSAGE: &str = "The task was interrupted due to an infrastructure issue (context canceled). This is typically transient \u{2014} please try again.";
/// Message for a failure caused by a deadline.
pub const DEADLINE_MESSAGE: &str = "The task exceeded its maximum allowed execution time and was terminated. Consider breaking the task into smaller steps or increasing the timeout.";

/// The failure reported with `task_failed`, after classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedFailure {
    /// The metric phase.
    pub phase: FailurePhase,
    /// The wire `failure_reason`.
    pub reason: FailureReason,
    /// The user-facing wire `message`.
    pub message: String,
    /// The wire `exit_code`; `None` when not observed or zero.
    pub exit_code: Option<i32>,
}

/// What one finished execution means for the server and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `task_completed` with the success message.
    Completed,
    /// No terminal message: the task lives on remotely.
    Dispatched,
    /// `task_completed` with `task_state: CANCELLED`.
    CancelledByUser,
    /// `task_failed`.
    Failed(ReportedFailure),
}

impl Verdict {
    /// The `result` label.
    pub fn result(&self) -> TaskResult {
        match self {
            Self::Completed => TaskResult::Succeeded,
            Self::Dispatched => TaskResult::Dispatched,
            Self::CancelledByUser => TaskResult::Cancelled,
            Self::Failed(_) => TaskResult::Failed,
        }
    }
}

/// Classifies an executor outcome, given who (if anyone) asked the task to stop.
///
/// * Success is success even after a cancel request (the backend finished first).
/// * Any non-success after a *user* cancel is a user cancellation.
/// * `Exit::Cancelled` otherwise is `task_cancelled`, or `graceful_shutdown` under shutdown.
/// * A failure keeps its reason, except that under shutdown a `task_cancelled` reason or exit
///   code 143 becomes `graceful_shutdown`.
pub fn classify(outcome: &Result<Exit, TaskFailure>, cancel: Option<CancelSource>) -> Verdict {
    match (outcome, cancel) {
        (Ok(Exit::Succeeded), _) => Verdict::Completed,
        (Ok(Exit::Spawned), _) => Verdict::Dispatched,
        (_, Some(CancelSource::User)) => Verdict::CancelledByUser,
        (Ok(Exit::Cancelled), source) => {
            let reason = if source == Some(CancelSource::Shutdown) {
                FailureReason::GracefulShutdown
            } else {
                FailureReason::TaskCancelled
            };
            Verdict::Failed(ReportedFailure {
                phase: FailurePhase::Backend,
                reason,
                message: INTERRUPTED_MESSAGE.to_owned(),
                exit_code: None,
            })
        }
        (Err(failure), source) => {
            let exit_code = failure.exit_code.filter(|c| *c != 0);
            let shutdown = source == Some(CancelSource::Shutdown);
            let reason = if shutdown
                && (failure.reason == FailureReason::TaskCancelled
                    || exit_code == Some(SIGTERM_EXIT_CODE))
            {
                FailureReason::GracefulShutdown
            } else {
                failure.reason
            };
            let message = match failure.reason {
                FailureReason::TaskCancelled => INTERRUPTED_MESSAGE.to_owned(),
                FailureReason::TaskTimeout => DEADLINE_MESSAGE.to_owned(),
                _ => format!("Failed to execute task: {}", failure.message),
            };
            Verdict::Failed(ReportedFailure {
                phase: failure.phase,
                reason,
                message,
                exit_code,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(reason: FailureReason, code: Option<i32>) -> Result<Exit, TaskFailure> {
        let mut f = TaskFailure::backend(reason, "oz agent exited with error: exit status 2");
        f.exit_code = code;
        Err(f)
    }

    fn failed(v: Verdict) -> ReportedFailure {
        match v {
            Verdict::Failed(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn reasons_are_29_unique_in_order() {
        let names: Vec<_> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), 29);
        assert_eq!(names.first(), Some(&"unknown"));
        assert_eq!(names.last(), Some(&"cleanup"));
        let mut dedup = names.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), 29);
    }

    /// (outcome, cancel source) -> (result, reason, exit code).
    type Case = (
        Result<Exit, TaskFailure>,
        Option<CancelSource>,
        TaskResult,
        Option<FailureReason>,
        Option<i32>,
    );

    #[test]
    fn classification_table() {
        use CancelSource::*;
        use FailureReason::*;
        // (outcome, cancel source) -> (result, reason, exit code)
        let cases: Vec<Case> = vec![
            (Ok(Exit::Succeeded), None, TaskResult::Succeeded, None, None),
            (
                Ok(Exit::Succeeded),
                Some(User),
                TaskResult::Succeeded,
                None,
                None,
            ),
            (Ok(Exit::Spawned), None, TaskResult::Dispatched, None, None),
            (
                Ok(Exit::Cancelled),
                Some(User),
                TaskResult::Cancelled,
                None,
                None,
            ),
            (
                failure(AgentInvocation, Some(1)),
                Some(User),
                TaskResult::Cancelled,
                None,
                None,
            ),
            (
                Ok(Exit::Cancelled),
                Some(Shutdown),
                TaskResult::Failed,
                Some(GracefulShutdown),
                None,
            ),
            (
                Ok(Exit::Cancelled),
                None,
                TaskResult::Failed,
                Some(TaskCancelled),
                None,
            ),
            (
                failure(AgentInvocation, Some(143)),
                Some(Shutdown),
                TaskResult::Failed,
                Some(GracefulShutdown),
                Some(143),
            ),
            (
                failure(AgentInvocation, Some(137)),
                Some(Shutdown),
                TaskResult::Failed,
                Some(AgentInvocation),
                Some(137),
            ),
            (
                failure(TaskCancelled, None),
                Some(Shutdown),
                TaskResult::Failed,
                Some(GracefulShutdown),
                None,
            ),
            (
                failure(AgentInvocation, Some(143)),
                None,
                TaskResult::Failed,
                Some(AgentInvocation),
                Some(143),
            ),
            (
                failure(ContainerOom, Some(137)),
                None,
                TaskResult::Failed,
                Some(ContainerOom),
                Some(137),
            ),
            (
                failure(Unknown, Some(0)),
                None,
                TaskResult::Failed,
                Some(Unknown),
                None,
            ),
        ];
        for (i, (outcome, source, result, reason, code)) in cases.into_iter().enumerate() {
            let verdict = classify(&outcome, source);
            assert_eq!(verdict.result(), result, "case {i}");
            if let Verdict::Failed(f) = verdict {
                assert_eq!(Some(f.reason), reason, "case {i}");
                assert_eq!(f.exit_code, code, "case {i}");
            } else {
                assert_eq!(reason, None, "case {i}");
            }
        }
    }

    #[test]
    fn user_facing_messages() {
        let f = failed(classify(
            &failure(FailureReason::AgentInvocation, Some(2)),
            None,
        ));
        assert_eq!(
            f.message,
            "Failed to execute task: oz agent exited with error: exit status 2"
        );
        let f = failed(classify(&Ok(Exit::Cancelled), Some(CancelSource::Shutdown)));
        assert_eq!(f.message, INTERRUPTED_MESSAGE);
        assert!(f.message.contains('\u{2014}'));
        let f = failed(classify(&failure(FailureReason::TaskTimeout, None), None));
        assert_eq!(f.message, DEADLINE_MESSAGE);
    }

    #[test]
    fn signal_codes() {
        assert_eq!(signal_exit_code(15), 143);
        assert_eq!(signal_exit_code(9), 137);
        assert_eq!(signal_exit_code(2), 130);
    }
}

//! The lifecycle of one task as pure transitions: apply an event to the task's entry in the
//! active table at time `now`, get the next entry and the effects the app must carry out.
//!
//! | state        | event                   | next                      | effects |
//! |--------------|-------------------------|---------------------------|---------|
//! | (none)/`Spawned` | assignment admitted ([`assign`]) | `Running`      | report claimed, record claimed, start execution |
//! | (none)/`Spawned` | assignment rejected (at capacity, intake closed) | unchanged | record rejected, report rejected |
//! | `Running`/`Cancelling` | assignment (duplicate) | unchanged        | none |
//! | `Running`    | `CancelRequested(User)` | `Cancelling(User)`        | cancel execution, backend cancel hook |
//! | `Running`    | `CancelRequested(Shutdown)` | `Cancelling(Shutdown)` | cancel execution |
//! | `Cancelling` | `CancelRequested(_)`    | unchanged (first wins)    | none |
//! | `Running`/`Cancelling` | `Finished(outcome)` | removed, or `Spawned` | report, record |
//! | `Running`/`Cancelling` | `Abandoned`   | removed                   | abort execution, report `graceful_shutdown`, record |
//! | `Spawned`    | `CancelRequested(User)` | removed                   | backend cancel hook |
//! | `Spawned`    | `CancelRequested(Shutdown)` | unchanged (preserved) | none |
//! | `Spawned`    | `Abandoned`             | unchanged (nothing runs)  | none |
//! | `Spawned`    | `Finished(_)`           | error                     | — |

use std::time::{Duration, Instant};

use crate::domain::failure::{
    CancelSource, Exit, FailurePhase, FailureReason, TaskFailure, TaskResult, Verdict, classify,
};
use crate::domain::policy::{Admission, ConcurrencyPolicy, Intake, RejectReason};
use crate::domain::report::TaskReport;
use crate::domain::task::TaskId;

/// Where a claimed task is. Only tasks in `Running` or `Cancelling` hold a concurrency slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// The executor is running it.
    Running {
        /// When execution started (after the claim).
        started_at: Instant,
    },
    /// A stop was requested; the executor is winding it down.
    Cancelling {
        /// When execution started.
        started_at: Instant,
        /// Who asked first.
        source: CancelSource,
    },
    /// Handed off to a remote runtime; kept only so a later user cancel reaches the backend,
    /// and only until it is older than the app's retention (see [`TaskState::expired`]).
    Spawned {
        /// When the hand-off finished.
        since: Instant,
    },
}

/// Something that happened to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// The server or the worker's shutdown asked the task to stop.
    CancelRequested(CancelSource),
    /// The executor returned.
    Finished(Result<Exit, TaskFailure>),
    /// The stop deadline passed while the execution was still winding down: the app stops
    /// waiting for it, and the server hears `graceful_shutdown` so it can run the task again.
    Abandoned,
}

/// Work the app carries out after a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Build the task's spec and start an execution with a fresh cancellation token.
    StartExecution,
    /// Fire the task's cancellation token.
    CancelExecution,
    /// Stop waiting for the execution: drop its future (last resort, after the token fired
    /// and the stop deadline passed).
    AbortExecution,
    /// Call the executor's best-effort cancel hook (runs `cancel_command` on the Command
    /// backend), detached from shutdown and bounded in time.
    InvokeBackendCancel,
    /// Send this report to the control plane.
    Report(TaskReport),
    /// Record a claim in metrics (the task now counts as active).
    RecordClaimed,
    /// Record a rejection in metrics.
    RecordRejected(RejectReason),
    /// Record the end of one execution in metrics.
    RecordFinished {
        /// The `result` label.
        result: TaskResult,
        /// From execution start to now.
        duration: Duration,
        /// The failure labels, when reported as `task_failed`.
        failure: Option<(FailurePhase, FailureReason)>,
    },
}

/// The outcome of applying an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new state; `None` removes the task from the active table.
    pub next: Option<TaskState>,
    /// Effects, in the order the app must carry them out.
    pub effects: Vec<Effect>,
}

/// An event that makes no sense in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task_id}: event {event} is not valid in state {state}")]
pub struct TransitionError {
    /// The task.
    pub task_id: TaskId,
    /// The state's name.
    pub state: &'static str,
    /// The event's name.
    pub event: &'static str,
}

/// What admission looks at besides the task's own entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The concurrency policy.
    pub policy: ConcurrencyPolicy,
    /// How many executions hold a slot now.
    pub running: usize,
    /// Whether the worker takes new tasks.
    pub intake: Intake,
}

/// The state of a task that a dead worker process left running and this one adopts: running
/// from `now`, or `None` when the task is already in the table in a state that holds a slot
/// (then it is left alone). No effects: nothing is claimed or reported at adoption.
pub fn adopt(current: Option<TaskState>, now: Instant) -> Option<TaskState> {
    match current {
        Some(state) if state.holds_slot() => None,
        _ => Some(TaskState::started(now)),
    }
}

/// An assignment of `task_id` arrived; `current` is the task's entry in the active table
/// (`None` when it has none). Returns the policy's decision (for the app's log line) and the
/// transition:
///
/// * admitted: the entry becomes `Running` (replacing a `Spawned` one); report `task_claimed`
///   as `worker_id`, record the claim, start the execution;
/// * rejected (no free slot, or intake closed): the entry is unchanged; record the rejection,
///   report `task_rejected`, so the server keeps the task queued;
/// * a duplicate of an executing task: unchanged and no effects (its claim was sent and its
///   result will follow).
pub fn assign(
    current: Option<TaskState>,
    task_id: &TaskId,
    worker_id: &str,
    capacity: Capacity,
    now: Instant,
) -> (Admission, Transition) {
    let executing = current.is_some_and(|state| state.holds_slot());
    let admission = capacity
        .policy
        .admit(capacity.running, executing, capacity.intake);
    let transition = match admission {
        Admission::Admit => Transition {
            next: Some(TaskState::started(now)),
            effects: vec![
                Effect::Report(TaskReport::Claimed {
                    task_id: task_id.clone(),
                    worker_id: worker_id.to_owned(),
                }),
                Effect::RecordClaimed,
                Effect::StartExecution,
            ],
        },
        Admission::Reject(reason) => Transition {
            next: current,
            effects: vec![
                Effect::RecordRejected(reason),
                Effect::Report(TaskReport::Rejected {
                    task_id: task_id.clone(),
                    reason: reason.wire_text().to_owned(),
                }),
            ],
        },
        Admission::Duplicate => Transition {
            next: current,
            effects: Vec::new(),
        },
    };
    (admission, transition)
}

impl TaskState {
    /// The state a freshly claimed task starts in.
    pub fn started(now: Instant) -> Self {
        Self::Running { started_at: now }
    }

    /// True while the task holds a concurrency slot.
    pub fn holds_slot(&self) -> bool {
        !matches!(self, Self::Spawned { .. })
    }

    /// The recorded cancellation source, if any.
    pub fn cancel_source(&self) -> Option<CancelSource> {
        match self {
            Self::Cancelling { source, .. } => Some(*source),
            _ => None,
        }
    }

    /// True for a spawned entry handed off more than `retention` before `now`: the app drops
    /// it, so the table stays bounded on long-lived Command-backend workers.
    pub fn expired(&self, now: Instant, retention: Duration) -> bool {
        matches!(self, Self::Spawned { since } if now.saturating_duration_since(*since) > retention)
    }

    fn started_at(&self) -> Option<Instant> {
        match self {
            Self::Running { started_at } | Self::Cancelling { started_at, .. } => Some(*started_at),
            Self::Spawned { .. } => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Running { .. } => "running",
            Self::Cancelling { .. } => "cancelling",
            Self::Spawned { .. } => "spawned",
        }
    }

    /// Applies `event` at time `now`.
    ///
    /// # Errors
    /// [`TransitionError`] when a spawned task is reported finished a second time.
    pub fn apply(
        self,
        task_id: &TaskId,
        event: TaskEvent,
        now: Instant,
    ) -> Result<Transition, TransitionError> {
        use CancelSource::*;
        let stay = |state| Transition {
            next: Some(state),
            effects: Vec::new(),
        };
        Ok(match (self, event) {
            (Self::Running { started_at }, TaskEvent::CancelRequested(source)) => {
                let mut effects = vec![Effect::CancelExecution];
                if source == User {
                    effects.push(Effect::InvokeBackendCancel);
                }
                Transition {
                    next: Some(Self::Cancelling { started_at, source }),
                    effects,
                }
            }
            (state @ Self::Cancelling { .. }, TaskEvent::CancelRequested(_)) => stay(state),
            (Self::Spawned { .. }, TaskEvent::CancelRequested(User)) => Transition {
                next: None,
                effects: vec![Effect::InvokeBackendCancel],
            },
            (state @ Self::Spawned { .. }, TaskEvent::CancelRequested(Shutdown)) => stay(state),
            (state @ Self::Spawned { .. }, TaskEvent::Abandoned) => stay(state),
            (state, TaskEvent::Abandoned) => abandon(task_id, &state, now),
            (
                state @ (Self::Running { .. } | Self::Cancelling { .. }),
                TaskEvent::Finished(outcome),
            ) => finish(task_id, &state, &outcome, now),
            (state @ Self::Spawned { .. }, event @ TaskEvent::Finished(_)) => {
                return Err(TransitionError {
                    task_id: task_id.clone(),
                    state: state.name(),
                    event: event_name(&event),
                });
            }
        })
    }
}

fn finish(
    task_id: &TaskId,
    state: &TaskState,
    outcome: &Result<Exit, TaskFailure>,
    now: Instant,
) -> Transition {
    let verdict = classify(outcome, state.cancel_source());
    let mut effects = Vec::with_capacity(2);
    report_and_record(&mut effects, task_id, state, &verdict, now);
    // A dispatched task stays reachable for a later user cancel, unless one already arrived.
    let next = (verdict == Verdict::Dispatched && state.cancel_source().is_none())
        .then_some(TaskState::Spawned { since: now });
    Transition { next, effects }
}

/// An execution that missed the stop deadline counts as stopped by the shutdown, whoever asked
/// first: the server hears `graceful_shutdown` and may run the task again.
fn abandon(task_id: &TaskId, state: &TaskState, now: Instant) -> Transition {
    let verdict = classify(&Ok(Exit::Cancelled), Some(CancelSource::Shutdown));
    let mut effects = vec![Effect::AbortExecution];
    report_and_record(&mut effects, task_id, state, &verdict, now);
    Transition {
        next: None,
        effects,
    }
}

/// The terminal report (when the verdict has one) and the `TaskFinished` record.
fn report_and_record(
    effects: &mut Vec<Effect>,
    task_id: &TaskId,
    state: &TaskState,
    verdict: &Verdict,
    now: Instant,
) {
    let duration = state.started_at().map_or(Duration::ZERO, |started_at| {
        now.saturating_duration_since(started_at)
    });
    let failure = match verdict {
        Verdict::Failed(f) => Some((f.phase, f.reason)),
        _ => None,
    };
    if let Some(report) = TaskReport::terminal(task_id.clone(), verdict) {
        effects.push(Effect::Report(report));
    }
    effects.push(Effect::RecordFinished {
        result: verdict.result(),
        duration,
        failure,
    });
}

fn event_name(event: &TaskEvent) -> &'static str {
    match event {
        TaskEvent::CancelRequested(CancelSource::User) => "cancel(user)",
        TaskEvent::CancelRequested(CancelSource::Shutdown) => "cancel(shutdown)",
        TaskEvent::Finished(_) => "finished",
        TaskEvent::Abandoned => "abandoned",
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests fix an arbitrary clock origin and spawn the task under test, awaited"
)]
mod tests {
    use super::*;
    use crate::domain::failure::{CANCELLED_MESSAGE, COMPLETED_MESSAGE};

    fn id() -> TaskId {
        TaskId::parse("t1").unwrap()
    }

    fn check(state: TaskState, event: TaskEvent) -> Transition {
        state
            .apply(&id(), event, t0() + Duration::from_secs(5))
            .unwrap()
    }

    fn t0() -> Instant {
        // A fixed origin; only differences matter.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    fn running() -> TaskState {
        TaskState::started(t0())
    }

    /// Spawned at the moment `check` applies events (t0 + 5 s).
    fn spawned() -> TaskState {
        TaskState::Spawned {
            since: t0() + Duration::from_secs(5),
        }
    }

    #[test]
    fn only_old_spawned_entries_expire() {
        let retention = Duration::from_secs(60);
        let now = t0() + Duration::from_secs(5);
        assert!(!spawned().expired(now + retention, retention));
        assert!(spawned().expired(now + retention + Duration::from_secs(1), retention));
        assert!(!running().expired(now + retention * 10, retention));
    }

    fn cancelling(source: CancelSource) -> TaskState {
        TaskState::Cancelling {
            started_at: t0(),
            source,
        }
    }

    #[test]
    fn user_cancel_while_running_cancels_and_calls_the_backend_hook() {
        let t = check(running(), TaskEvent::CancelRequested(CancelSource::User));
        assert_eq!(t.next, Some(cancelling(CancelSource::User)));
        assert_eq!(
            t.effects,
            [Effect::CancelExecution, Effect::InvokeBackendCancel]
        );
    }

    #[test]
    fn shutdown_cancel_while_running_does_not_call_the_backend_hook() {
        let t = check(
            running(),
            TaskEvent::CancelRequested(CancelSource::Shutdown),
        );
        assert_eq!(t.next, Some(cancelling(CancelSource::Shutdown)));
        assert_eq!(t.effects, [Effect::CancelExecution]);
    }

    #[test]
    fn first_cancel_source_wins() {
        let t = check(
            cancelling(CancelSource::User),
            TaskEvent::CancelRequested(CancelSource::Shutdown),
        );
        assert_eq!(t.next, Some(cancelling(CancelSource::User)));
        assert!(t.effects.is_empty());
    }

    #[test]
    fn success_reports_completed_and_records_duration() {
        let t = check(running(), TaskEvent::Finished(Ok(Exit::Succeeded)));
        assert_eq!(t.next, None);
        assert_eq!(
            t.effects,
            [
                Effect::Report(TaskReport::Completed {
                    task_id: id(),
                    message: COMPLETED_MESSAGE.into(),
                    cancelled: false
                }),
                Effect::RecordFinished {
                    result: TaskResult::Succeeded,
                    duration: Duration::from_secs(5),
                    failure: None
                }
            ]
        );
    }

    #[test]
    fn cancel_while_starting_is_reported_once_as_cancelled() {
        let t = check(
            cancelling(CancelSource::User),
            TaskEvent::Finished(Ok(Exit::Cancelled)),
        );
        assert_eq!(t.next, None);
        let reports: Vec<_> = t
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::Report(_)))
            .collect();
        assert_eq!(
            reports,
            [&Effect::Report(TaskReport::Completed {
                task_id: id(),
                message: CANCELLED_MESSAGE.into(),
                cancelled: true
            })]
        );
    }

    #[test]
    fn shutdown_cancel_reports_graceful_shutdown_failure() {
        let t = check(
            cancelling(CancelSource::Shutdown),
            TaskEvent::Finished(Ok(Exit::Cancelled)),
        );
        assert!(matches!(
            &t.effects[0],
            Effect::Report(TaskReport::Failed {
                failure_reason: FailureReason::GracefulShutdown,
                exit_code: None,
                ..
            })
        ));
        assert!(matches!(
            &t.effects[1],
            Effect::RecordFinished {
                result: TaskResult::Failed,
                failure: Some((FailurePhase::Backend, FailureReason::GracefulShutdown)),
                ..
            }
        ));
    }

    #[test]
    fn dispatched_task_is_kept_for_a_later_cancel_without_a_message() {
        let t = check(running(), TaskEvent::Finished(Ok(Exit::Spawned)));
        assert_eq!(t.next, Some(spawned()));
        assert_eq!(t.effects.len(), 1);
        assert!(matches!(
            t.effects[0],
            Effect::RecordFinished {
                result: TaskResult::Dispatched,
                ..
            }
        ));
        let t = check(spawned(), TaskEvent::CancelRequested(CancelSource::User));
        assert_eq!(t.next, None);
        assert_eq!(t.effects, [Effect::InvokeBackendCancel]);
        let t = check(
            spawned(),
            TaskEvent::CancelRequested(CancelSource::Shutdown),
        );
        assert_eq!(t.next, Some(spawned()));
    }

    #[test]
    fn dispatch_that_succeeds_after_a_user_cancel_is_dropped_silently() {
        let t = check(
            cancelling(CancelSource::User),
            TaskEvent::Finished(Ok(Exit::Spawned)),
        );
        assert_eq!(t.next, None);
        assert!(!t.effects.iter().any(|e| matches!(e, Effect::Report(_))));
    }

    #[test]
    fn spawned_task_cannot_finish_again() {
        let err = spawned()
            .apply(&id(), TaskEvent::Finished(Ok(Exit::Succeeded)), t0())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "task t1: event finished is not valid in state spawned"
        );
    }

    fn claimed() -> Effect {
        Effect::Report(TaskReport::Claimed {
            task_id: id(),
            worker_id: "w1".into(),
        })
    }

    fn rejected(reason: RejectReason) -> [Effect; 2] {
        [
            Effect::RecordRejected(reason),
            Effect::Report(TaskReport::Rejected {
                task_id: id(),
                reason: reason.wire_text().into(),
            }),
        ]
    }

    /// One assignment of `t1` at t0 + 5 s to a worker allowing `max` tasks with `running` busy.
    fn check_assign(
        current: Option<TaskState>,
        max: i64,
        running: usize,
        intake: Intake,
    ) -> (Admission, Transition) {
        let capacity = Capacity {
            policy: ConcurrencyPolicy::from_configured(max),
            running,
            intake,
        };
        assign(
            current,
            &id(),
            "w1",
            capacity,
            t0() + Duration::from_secs(5),
        )
    }

    #[test]
    fn admission_table() {
        use Intake::{Closed, Open};
        use RejectReason::{AtCapacity, ShuttingDown};
        let now = t0() + Duration::from_secs(5);
        let admitted = Transition {
            next: Some(TaskState::started(now)),
            effects: vec![claimed(), Effect::RecordClaimed, Effect::StartExecution],
        };
        let unchanged = |current: Option<TaskState>, effects: Vec<Effect>| Transition {
            next: current,
            effects,
        };
        let cases = [
            // (current entry, max, running, intake, decision, transition)
            (None, 0, 1000, Open, Admission::Admit, admitted.clone()),
            (None, 2, 1, Open, Admission::Admit, admitted.clone()),
            // A dispatched entry holds no slot; a new execution of the run replaces it.
            (
                Some(spawned()),
                1,
                0,
                Open,
                Admission::Admit,
                admitted.clone(),
            ),
            (
                None,
                2,
                2,
                Open,
                Admission::Reject(AtCapacity),
                unchanged(None, rejected(AtCapacity).into()),
            ),
            (
                Some(spawned()),
                1,
                1,
                Open,
                Admission::Reject(AtCapacity),
                unchanged(Some(spawned()), rejected(AtCapacity).into()),
            ),
            (
                None,
                0,
                0,
                Closed,
                Admission::Reject(ShuttingDown),
                unchanged(None, rejected(ShuttingDown).into()),
            ),
            (
                Some(spawned()),
                0,
                0,
                Closed,
                Admission::Reject(ShuttingDown),
                unchanged(Some(spawned()), rejected(ShuttingDown).into()),
            ),
            (
                Some(running()),
                1,
                1,
                Open,
                Admission::Duplicate,
                unchanged(Some(running()), Vec::new()),
            ),
            (
                Some(cancelling(CancelSource::Shutdown)),
                0,
                1,
                Closed,
                Admission::Duplicate,
                unchanged(Some(cancelling(CancelSource::Shutdown)), Vec::new()),
            ),
        ];
        for (current, max, busy, intake, decision, transition) in cases {
            assert_eq!(
                check_assign(current, max, busy, intake),
                (decision, transition),
                "current={current:?} max={max} running={busy} intake={intake:?}"
            );
        }
    }

    #[test]
    fn abandonment_at_the_stop_deadline_reports_graceful_shutdown_whoever_cancelled() {
        let graceful = Transition {
            next: None,
            effects: vec![
                Effect::AbortExecution,
                Effect::Report(TaskReport::Failed {
                    task_id: id(),
                    message: crate::domain::failure::INTERRUPTED_MESSAGE.into(),
                    failure_reason: FailureReason::GracefulShutdown,
                    exit_code: None,
                }),
                Effect::RecordFinished {
                    result: TaskResult::Failed,
                    duration: Duration::from_secs(5),
                    failure: Some((FailurePhase::Backend, FailureReason::GracefulShutdown)),
                },
            ],
        };
        for state in [
            running(),
            cancelling(CancelSource::Shutdown),
            cancelling(CancelSource::User),
        ] {
            assert_eq!(check(state, TaskEvent::Abandoned), graceful, "{state:?}");
        }
        // A dispatched entry has nothing left to abandon.
        assert_eq!(
            check(spawned(), TaskEvent::Abandoned),
            Transition {
                next: Some(spawned()),
                effects: Vec::new()
            }
        );
    }

    #[test]
    fn only_executing_states_hold_a_slot() {
        assert!(running().holds_slot());
        assert!(cancelling(CancelSource::User).holds_slot());
        assert!(!spawned().holds_slot());
    }
}

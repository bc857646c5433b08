//! The supervisor: the one loop that owns the worker's state. It takes control-plane events,
//! admits or rejects assignments, starts executions, routes cancellations, applies the
//! domain's lifecycle transitions, and carries out their effects through the ports.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::domain::failure::{INTERRUPTED_MESSAGE, TaskResult};
use crate::domain::spec::prepare;
use crate::domain::{
    Admission, Assignment, CancelSource, ConcurrencyPolicy, Effect, Exit, FailurePhase,
    FailureReason, SpecSettings, TaskEvent, TaskFailure, TaskId, TaskReport, TaskState, Transition,
};
use crate::ports::{ControlEvent, Ports, Readiness, Signal};

/// Bound on the executor's best-effort cancel hook.
pub const BACKEND_CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a dispatched (Command backend) task stays reachable for a user cancel. The Go
/// worker keeps such entries forever, so its table grows without bound.
pub const SPAWNED_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Deadlines of the shutdown sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownDeadlines {
    /// How long cancelled executions get to stop and clean up (covers the executors' own
    /// SIGTERM → SIGKILL grace).
    pub stop: Duration,
    /// How long queued reports get to reach the server before the connection closes.
    pub flush: Duration,
    /// Bound on the executor's `shutdown`.
    pub backend: Duration,
    /// How long running tasks may still finish on their own once shutdown begins
    /// (`drain_timeout`; zero: they are stopped at once).
    pub drain: Duration,
}

impl Default for ShutdownDeadlines {
    fn default() -> Self {
        Self {
            stop: Duration::from_secs(15),
            flush: Duration::from_secs(5),
            backend: Duration::from_secs(10),
            drain: Duration::ZERO,
        }
    }
}

/// The supervisor's settings.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// This worker's id, sent in `task_claimed`.
    pub worker_id: String,
    /// The concurrency policy.
    pub policy: ConcurrencyPolicy,
    /// How task specs are built.
    pub spec: SpecSettings,
    /// Shutdown deadlines.
    pub deadlines: ShutdownDeadlines,
}

/// One claimed task.
#[derive(Debug)]
struct ActiveTask {
    state: TaskState,
    execution_id: String,
    cancel: CancellationToken,
}

/// What an execution returns to the loop.
type Finished = (TaskId, Result<Exit, TaskFailure>);

/// Why the supervisor stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown token fired and the shutdown sequence ran.
    Shutdown,
    /// The control-plane event stream ended unexpectedly.
    SourceEnded,
}

/// The supervisor. Build it with [`Supervisor::new`], then call [`Supervisor::run`].
pub struct Supervisor {
    ports: Ports,
    settings: SupervisorSettings,
    readiness: Readiness,
    tasks: HashMap<TaskId, ActiveTask>,
    executions: JoinSet<Finished>,
    execution_ids: HashMap<tokio::task::Id, TaskId>,
    backend_cancels: JoinSet<()>,
    shutting_down: bool,
}

impl Supervisor {
    /// A supervisor with no tasks.
    pub fn new(ports: Ports, settings: SupervisorSettings, readiness: Readiness) -> Self {
        Self {
            ports,
            settings,
            readiness,
            tasks: HashMap::new(),
            executions: JoinSet::new(),
            execution_ids: HashMap::new(),
            backend_cancels: JoinSet::new(),
            shutting_down: false,
        }
    }

    /// Number of executions holding a concurrency slot.
    pub fn running(&self) -> usize {
        self.tasks.values().filter(|t| t.state.holds_slot()).count()
    }

    /// Number of entries in the active table (running plus spawned).
    pub fn active_entries(&self) -> usize {
        self.tasks.len()
    }

    /// Runs until `shutdown` fires (then runs the shutdown sequence) or `events` ends.
    ///
    /// # Cancellation
    /// `shutdown` starts the bounded shutdown sequence; the future returns when it is done.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<ControlEvent>,
        shutdown: CancellationToken,
    ) -> Stopped {
        loop {
            tokio::select! {
                // Shutdown first, so no assignment is claimed once it has begun.
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = self.executions.join_next_with_id() => self.on_joined(joined),
                Some(_) = self.backend_cancels.join_next() => {}
                event = events.recv() => match event {
                    Some(event) => self.handle_event(event),
                    None => {
                        error!("control-plane event stream ended; stopping");
                        self.shutdown_sequence(&mut events).await;
                        return Stopped::SourceEnded;
                    }
                },
            }
        }
        self.shutdown_sequence(&mut events).await;
        Stopped::Shutdown
    }

    /// Handles one control-plane event. Public so tests can drive the loop step by step.
    pub fn handle_event(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::Assigned(assignment) => self.on_assignment(*assignment),
            ControlEvent::CancelRequested(task_id) => self.on_cancel(&task_id),
            ControlEvent::Connected => {
                self.readiness.set_connected(true);
                self.ports.metrics.record(Signal::Connected);
            }
            ControlEvent::Disconnected => {
                self.readiness.set_connected(false);
                self.ports.metrics.record(Signal::Disconnected);
            }
            ControlEvent::DialFailed => self.ports.metrics.record(Signal::DialFailed),
        }
    }

    fn on_assignment(&mut self, assignment: Assignment) {
        self.drop_expired_spawned();
        let task_id = assignment.task_id.clone();
        info!(task_id = %task_id, title = %assignment.task.title, "Received task assignment");
        let already_running = self
            .tasks
            .get(&task_id)
            .is_some_and(|t| t.state.holds_slot());
        let admission =
            self.settings
                .policy
                .admit(self.running(), already_running, self.shutting_down);
        match admission {
            Admission::Admit => self.start(assignment),
            Admission::Reject(reason) => {
                warn!(task_id = %task_id, reason = reason.wire_text(), limit = self.settings.policy.configured(), "Rejecting task");
                self.ports.metrics.record(Signal::TaskRejected(reason));
                self.report(TaskReport::Rejected {
                    task_id,
                    reason: reason.wire_text().to_owned(),
                });
            }
            Admission::Duplicate => {
                warn!(task_id = %task_id, "Ignoring duplicate assignment for a task that is still running; its claim was sent and its result will follow");
            }
        }
    }

    fn start(&mut self, assignment: Assignment) {
        let task_id = assignment.task_id.clone();
        self.report(TaskReport::Claimed {
            task_id: task_id.clone(),
            worker_id: self.settings.worker_id.clone(),
        });
        self.ports.metrics.record(Signal::TaskClaimed);
        let spec = prepare(&assignment, &self.settings.spec);
        let cancel = CancellationToken::new();
        let executor = self.ports.executor.clone();
        let token = cancel.clone();
        let id = task_id.clone();
        let span = info_span!("task", task_id = %task_id);
        info!(parent: &span, title = %assignment.task.title, image = %spec.image, "Starting task execution");
        let handle = self.executions.spawn(
            async move {
                let outcome = executor.run(&spec, token).await;
                (id, outcome)
            }
            .instrument(span),
        );
        self.execution_ids.insert(handle.id(), task_id.clone());
        // A spawned (dispatched) entry for the same run is replaced by the new execution.
        self.tasks.insert(
            task_id,
            ActiveTask {
                state: TaskState::started(self.ports.clock.now()),
                execution_id: assignment.execution_id,
                cancel,
            },
        );
    }

    /// Forgets dispatched tasks older than [`SPAWNED_RETENTION`].
    fn drop_expired_spawned(&mut self) {
        let now = self.ports.clock.now();
        self.tasks
            .retain(|_, task| !task.state.expired(now, SPAWNED_RETENTION));
    }

    fn on_cancel(&mut self, task_id: &TaskId) {
        if !self.tasks.contains_key(task_id) {
            warn!(task_id = %task_id, "Received cancellation for inactive task");
            return;
        }
        info!(task_id = %task_id, "Cancelling task from server request");
        self.apply(task_id, TaskEvent::CancelRequested(CancelSource::User));
    }

    fn on_joined(&mut self, joined: Result<(tokio::task::Id, Finished), tokio::task::JoinError>) {
        let (task_id, outcome) = match joined {
            Ok((id, (task_id, outcome))) => {
                self.execution_ids.remove(&id);
                (task_id, outcome)
            }
            Err(join_error) => {
                let Some(task_id) = self.execution_ids.remove(&join_error.id()) else {
                    return;
                };
                error!(task_id = %task_id, "executor panicked or was aborted: {join_error}");
                let failure = TaskFailure::backend(
                    FailureReason::Unknown,
                    "the executor crashed while running the task",
                );
                (task_id, Err(failure))
            }
        };
        self.apply(&task_id, TaskEvent::Finished(outcome));
    }

    /// Applies an event to a task and carries out the effects.
    fn apply(&mut self, task_id: &TaskId, event: TaskEvent) {
        let Some(entry) = self.tasks.get(task_id) else {
            return;
        };
        let now = self.ports.clock.now();
        let Transition { next, effects } = match entry.state.apply(task_id, event, now) {
            Ok(transition) => transition,
            Err(err) => {
                error!(task_id = %task_id, "{err}");
                return;
            }
        };
        let (cancel, execution_id) = (entry.cancel.clone(), entry.execution_id.clone());
        match next {
            Some(state) => {
                if let Some(entry) = self.tasks.get_mut(task_id) {
                    entry.state = state;
                }
            }
            None => {
                self.tasks.remove(task_id);
            }
        }
        for effect in effects {
            self.carry_out(task_id, &execution_id, &cancel, effect);
        }
    }

    fn carry_out(
        &mut self,
        task_id: &TaskId,
        execution_id: &str,
        cancel: &CancellationToken,
        effect: Effect,
    ) {
        match effect {
            Effect::CancelExecution => cancel.cancel(),
            Effect::InvokeBackendCancel => {
                info!(task_id = %task_id, "Requesting backend cancellation");
                let executor = self.ports.executor.clone();
                let (id, execution_id) = (task_id.clone(), execution_id.to_owned());
                self.backend_cancels.spawn(async move {
                    match tokio::time::timeout(
                        BACKEND_CANCEL_TIMEOUT,
                        executor.cancel(&id, &execution_id),
                    )
                    .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => warn!(task_id = %id, "Backend cancellation failed: {err}"),
                        Err(_) => warn!(task_id = %id, "Backend cancellation timed out"),
                    }
                });
            }
            Effect::Report(report) => {
                log_terminal(&report);
                self.report(report);
            }
            Effect::RecordFinished {
                result,
                duration,
                failure,
            } => {
                if result == TaskResult::Dispatched {
                    info!(task_id = %task_id, "Task dispatched to remote runtime");
                }
                self.ports.metrics.record(Signal::TaskFinished {
                    result,
                    duration,
                    failure,
                });
            }
        }
    }

    fn report(&self, report: TaskReport) {
        let task_id = report.task_id().clone();
        if let Err(err) = self.ports.source.report(report) {
            error!(task_id = %task_id, "Failed to queue report: {err}");
        }
    }

    /// The shutdown sequence: stop intake, cancel (or preserve) running tasks, wait for them
    /// within the stop deadline, flush reports, stop the backend.
    async fn shutdown_sequence(&mut self, events: &mut mpsc::Receiver<ControlEvent>) {
        info!("Shutting down worker...");
        self.shutting_down = true;
        self.drain(events).await;
        let n = self.tasks.len();
        if self.ports.executor.survives_daemon_restart() {
            if n > 0 {
                info!("Preserving {n} active tasks during worker shutdown");
            }
        } else {
            if n > 0 {
                info!("Cancelling {n} active tasks");
            }
            let ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
            for task_id in ids {
                self.apply(&task_id, TaskEvent::CancelRequested(CancelSource::Shutdown));
            }
            self.wait_for_cancelled(events).await;
        }
        let flushed = self.ports.source.flush(self.settings.deadlines.flush).await;
        if !flushed {
            warn!(
                "Some reports were not delivered within {:?}",
                self.settings.deadlines.flush
            );
        }
        self.backend_cancels.abort_all();
        if tokio::time::timeout(
            self.settings.deadlines.backend,
            self.ports.executor.shutdown(),
        )
        .await
        .is_err()
        {
            warn!(
                "Backend shutdown did not finish within {:?}",
                self.settings.deadlines.backend
            );
        }
    }

    /// The drain phase: intake is already closed (assignments are rejected) and `/readyz` turns
    /// unready; running tasks get up to the drain deadline to finish on their own, while the
    /// control plane is still answered (user cancels still reach them). Skipped when the
    /// deadline is zero or nothing runs.
    async fn drain(&mut self, events: &mut mpsc::Receiver<ControlEvent>) {
        let limit = self.settings.deadlines.drain;
        if limit.is_zero() {
            return;
        }
        self.readiness.set_backend_ready(false);
        if self.running() == 0 {
            return;
        }
        info!(
            running = self.running(),
            "Draining: letting running tasks finish for up to {limit:?}"
        );
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let mut events_open = true;
        while self.running() > 0 {
            tokio::select! {
                biased;
                Some(joined) = self.executions.join_next_with_id() => self.on_joined(joined),
                Some(_) = self.backend_cancels.join_next() => {}
                event = events.recv(), if events_open => match event {
                    Some(event) => self.handle_event(event),
                    None => events_open = false,
                },
                () = &mut deadline => {
                    warn!(running = self.running(), "Drain deadline of {limit:?} reached; stopping the tasks still running");
                    return;
                }
            }
        }
        info!("Drain complete: no task is running");
    }

    /// Waits for cancelled executions to return, still answering the control plane (new
    /// assignments are rejected). Executions that miss the deadline are aborted and reported
    /// as `graceful_shutdown` so the server can run them again.
    async fn wait_for_cancelled(&mut self, events: &mut mpsc::Receiver<ControlEvent>) {
        let deadline = tokio::time::sleep(self.settings.deadlines.stop);
        tokio::pin!(deadline);
        let mut events_open = true;
        while self.running() > 0 {
            tokio::select! {
                biased;
                Some(joined) = self.executions.join_next_with_id() => self.on_joined(joined),
                event = events.recv(), if events_open => match event {
                    Some(event) => self.handle_event(event),
                    None => events_open = false,
                },
                () = &mut deadline => break,
            }
        }
        let stuck: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state.holds_slot())
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in stuck {
            warn!(task_id = %task_id, "Task did not stop within {:?}; abandoning it", self.settings.deadlines.stop);
            self.tasks.remove(&task_id);
            self.ports.metrics.record(Signal::TaskFinished {
                result: TaskResult::Failed,
                duration: Duration::ZERO,
                failure: Some((FailurePhase::Backend, FailureReason::GracefulShutdown)),
            });
            self.report(TaskReport::Failed {
                task_id,
                message: INTERRUPTED_MESSAGE.to_owned(),
                failure_reason: FailureReason::GracefulShutdown,
                exit_code: None,
            });
        }
        self.executions.abort_all();
    }
}

fn log_terminal(report: &TaskReport) {
    match report {
        TaskReport::Completed {
            task_id,
            cancelled: false,
            ..
        } => info!(task_id = %task_id, "Task execution completed successfully"),
        TaskReport::Completed {
            task_id,
            cancelled: true,
            ..
        } => info!(task_id = %task_id, "Task cancelled by user request"),
        TaskReport::Failed {
            task_id,
            message,
            failure_reason,
            exit_code,
        } => error!(
            task_id = %task_id,
            reason = %failure_reason,
            exit_code = exit_code.unwrap_or(0),
            // Text logs escape the newlines of a multi-line output tail (`logging::OneLine`).
            "Task execution failed: {message}"
        ),
        TaskReport::Claimed { .. } | TaskReport::Rejected { .. } => {}
    }
}

#[cfg(test)]
mod tests;

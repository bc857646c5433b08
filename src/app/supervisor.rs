//! The supervisor: one closed event loop that owns the worker's state.
//!
//! Everything that can make the worker do something is an `Event`; `Supervisor::next_event`
//! waits for the next one and `Supervisor::handle_event` handles it, synchronously, by applying
//! the domain's lifecycle transitions (admission, cancel, finish, abandonment) and carrying out
//! their effects through the ports. Shutdown is not a second loop: it is a `Phase` of this one,
//! which changes what admission answers and which timer or bounded step the loop also waits for.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::domain::failure::TaskResult;
use crate::domain::spec::prepare;
use crate::domain::{
    Admission, Assignment, CancelSource, Capacity, ConcurrencyPolicy, Effect, Exit, FailureReason,
    Intake, SpecSettings, TaskEvent, TaskFailure, TaskId, TaskReport, TaskState, Transition, adopt,
    assign,
};
use crate::ports::{CancelError, ControlEvent, Orphan, Ports, Readiness, Signal};

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
    /// How long running tasks may still finish on their own once shutdown begins, before
    /// they are stopped (the draining phase; `drain_timeout`, zero: stopped at once).
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

/// Finds and takes over what dead worker processes with this worker id left behind, for the
/// supervisor to follow; run once by the app at start-up and then every [`OrphanScan::interval`]
/// while the supervisor takes tasks. The default, [`ExecutorScan`], asks the executor alone;
/// `app::restart::Recovery` adds the crash journal.
#[async_trait::async_trait]
pub trait OrphanScan: Send + Sync {
    /// Takes over what dead instances left: returns the tasks to follow (and may queue reports
    /// for those it cannot follow).
    async fn scan(&self) -> Vec<Orphan>;

    /// How often to scan after start-up (`None`: only at start-up).
    fn interval(&self) -> Option<Duration>;
}

/// The executor's own orphan scan ([`crate::ports::Executor::adopt_orphans`]).
pub struct ExecutorScan(pub Arc<dyn crate::ports::Executor>);

#[async_trait::async_trait]
impl OrphanScan for ExecutorScan {
    async fn scan(&self) -> Vec<Orphan> {
        self.0.adopt_orphans().await
    }

    fn interval(&self) -> Option<Duration> {
        self.0.orphan_scan_interval()
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

/// Why the supervisor stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown token fired and the shutdown sequence ran.
    Shutdown,
    /// The control-plane event stream ended unexpectedly (the shutdown sequence ran too).
    SourceEnded,
}

/// Everything that makes the supervisor do work. The set is closed: the supervisor acts on
/// nothing else, one event at a time.
#[derive(Debug)]
pub(crate) enum Event {
    /// The control plane (or the connection to it) said something.
    Control(ControlEvent),
    /// The control-plane event stream ended.
    SourceEnded,
    /// The shutdown token fired.
    ShutdownRequested,
    /// An execution returned.
    ExecutionFinished {
        /// The task it ran.
        task_id: TaskId,
        /// What the executor returned.
        outcome: Result<Exit, TaskFailure>,
    },
    /// An execution's future panicked, or was aborted after being abandoned.
    ExecutionCrashed(JoinError),
    /// A backend cancel hook returned, failed or timed out.
    BackendCancelDone {
        /// The task it was called for.
        task_id: TaskId,
        /// How it ended.
        outcome: HookOutcome,
    },
    /// A backend cancel hook panicked, or was aborted at shutdown.
    BackendCancelCrashed(JoinError),
    /// The drain deadline passed ([`Phase::Draining`]).
    DrainDeadline,
    /// The stop deadline passed ([`Phase::Stopping`]).
    StopDeadline,
    /// The report flush ended ([`Phase::Flushing`]); `delivered` is false when it timed out.
    Flushed {
        /// Whether every queued report was written.
        delivered: bool,
    },
    /// The executor's `shutdown` ended ([`Phase::BackendShutdown`]).
    BackendStopped {
        /// False when it ran into its deadline.
        in_time: bool,
    },
    /// It is time to look for orphans again (the executor's scan interval passed).
    OrphanScanDue,
    /// An orphan scan returned what the executor took over.
    OrphansFound(Vec<Orphan>),
    /// An orphan scan panicked.
    OrphanScanCrashed(JoinError),
}

/// How a backend cancel hook ended.
#[derive(Debug)]
pub(crate) enum HookOutcome {
    /// It returned `Ok`.
    Done,
    /// It returned an error (only logged).
    Failed(CancelError),
    /// It ran into [`BACKEND_CANCEL_TIMEOUT`].
    TimedOut,
}

/// Where the supervisor is in its life. Every phase runs the same loop and still answers the
/// control plane; a phase decides whether intake is open and which timer or bounded step the
/// loop waits for besides its inputs. Phases only move forward, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Taking tasks.
    Running,
    /// Intake closed and `/readyz` unready; running tasks may finish on their own until
    /// `deadline` (the drain timeout). Ends when none holds a slot, or at the deadline; then
    /// the tasks are stopped as without a drain. Skipped when the drain timeout is zero.
    Draining {
        /// When the remaining tasks are stopped.
        deadline: Instant,
    },
    /// Intake closed; executions were cancelled and get until `deadline` to stop and clean up.
    /// Ends when none holds a slot any more, or at the deadline, which abandons the rest.
    /// Skipped when the executor keeps its tasks across restarts.
    Stopping {
        /// When the remaining executions are abandoned.
        deadline: Instant,
    },
    /// Intake closed; queued reports are being written, bounded by the flush deadline.
    Flushing,
    /// Intake closed; the executor's `shutdown` runs, bounded by the backend deadline.
    BackendShutdown,
    /// Finished: [`Supervisor::run`] returns.
    Done,
}

impl Phase {
    fn intake(self) -> Intake {
        match self {
            Self::Running => Intake::Open,
            Self::Draining { .. }
            | Self::Stopping { .. }
            | Self::Flushing
            | Self::BackendShutdown
            | Self::Done => Intake::Closed,
        }
    }
}

/// What the loop reads from outside besides its own executions: the control plane's events
/// and the shutdown token.
pub(crate) struct Inputs {
    events: mpsc::Receiver<ControlEvent>,
    events_open: bool,
    shutdown: CancellationToken,
}

impl Inputs {
    /// The loop's inputs.
    pub(crate) fn new(events: mpsc::Receiver<ControlEvent>, shutdown: CancellationToken) -> Self {
        Self {
            events,
            events_open: true,
            shutdown,
        }
    }
}

/// The timer or bounded step the current phase waits for; its output is the event that ends
/// it.
type Step = Pin<Box<dyn Future<Output = Event> + Send>>;

/// One task in the active table.
#[derive(Debug)]
struct ActiveTask {
    state: TaskState,
    execution: Execution,
}

/// The execution of a task: running, or (for a dispatched task) finished but still reachable by
/// the backend cancel hook.
#[derive(Debug)]
struct Execution {
    execution_id: String,
    cancel: CancellationToken,
    handle: AbortHandle,
}

/// The supervisor. Build it with [`Supervisor::new`], then call [`Supervisor::run`].
pub struct Supervisor {
    ports: Ports,
    settings: SupervisorSettings,
    readiness: Readiness,
    phase: Phase,
    /// The timer or bounded step of the current phase (none while running).
    step: Option<Step>,
    stopped: Stopped,
    tasks: HashMap<TaskId, ActiveTask>,
    executions: JoinSet<(TaskId, Result<Exit, TaskFailure>)>,
    backend_cancels: JoinSet<(TaskId, HookOutcome)>,
    /// The orphan scan in flight (at most one).
    scans: JoinSet<Vec<Orphan>>,
    /// When the next orphan scan is due (`None`: scans only at start-up).
    next_scan: Option<Instant>,
    /// What finds orphans.
    orphan_scan: Arc<dyn OrphanScan>,
}

impl Supervisor {
    /// A supervisor with no tasks.
    pub fn new(ports: Ports, settings: SupervisorSettings, readiness: Readiness) -> Self {
        let orphan_scan = Arc::new(ExecutorScan(ports.executor.clone()));
        Self {
            ports,
            settings,
            readiness,
            phase: Phase::Running,
            step: None,
            stopped: Stopped::Shutdown,
            tasks: HashMap::new(),
            executions: JoinSet::new(),
            backend_cancels: JoinSet::new(),
            scans: JoinSet::new(),
            next_scan: None,
            orphan_scan,
        }
    }

    /// Replaces the periodic orphan scan (default: [`ExecutorScan`]).
    #[must_use]
    pub fn with_orphan_scan(mut self, scan: Arc<dyn OrphanScan>) -> Self {
        self.orphan_scan = scan;
        self
    }

    /// Follows tasks that dead worker processes left running and that the executor took over
    /// (see [`crate::ports::Executor::adopt_orphans`]): each holds a slot until it ends and is
    /// reported like a claimed task, and a cancel for it reaches it. No `task_claimed` is
    /// sent (the dead process sent it). A task already in the table is left alone.
    pub fn adopt(&mut self, orphans: Vec<Orphan>) {
        let now = self.ports.clock.now();
        for orphan in orphans {
            let task_id = orphan.task_id.clone();
            let Some(state) = adopt(self.tasks.get(&task_id).map(|t| t.state), now) else {
                warn!(task_id = %task_id, "Not adopting a task this worker already runs");
                continue;
            };
            info!(task_id = %task_id, handle = %orphan.handle, "Adopted a task a dead worker process left running; following it to its end");
            self.ports.metrics.record(Signal::TaskAdopted);
            let execution = self.follow(orphan);
            self.tasks.insert(task_id, ActiveTask { state, execution });
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

    /// Runs until `shutdown` fires or `events` ends, then through the shutdown phases.
    ///
    /// # Cancellation
    /// `shutdown` starts the bounded shutdown sequence; the future returns when it is done.
    pub async fn run(
        mut self,
        events: mpsc::Receiver<ControlEvent>,
        shutdown: CancellationToken,
    ) -> Stopped {
        self.schedule_scan();
        let mut inputs = Inputs::new(events, shutdown);
        while self.phase != Phase::Done {
            let event = self.next_event(&mut inputs).await;
            self.handle_event(event);
        }
        self.stopped
    }

    /// Waits for the next event. Reads inputs and collects finished work, but decides nothing.
    pub(crate) async fn next_event(&mut self, inputs: &mut Inputs) -> Event {
        let running = self.phase == Phase::Running;
        tokio::select! {
            // Shutdown first, so no assignment is claimed once it has begun. Executions next,
            // so a slot frees (and its report is queued) before the next assignment or the
            // stop deadline is looked at.
            biased;
            () = inputs.shutdown.cancelled(), if running => Event::ShutdownRequested,
            Some(joined) = self.executions.join_next() => match joined {
                Ok((task_id, outcome)) => Event::ExecutionFinished { task_id, outcome },
                Err(crashed) => Event::ExecutionCrashed(crashed),
            },
            Some(joined) = self.backend_cancels.join_next() => match joined {
                Ok((task_id, outcome)) => Event::BackendCancelDone { task_id, outcome },
                Err(crashed) => Event::BackendCancelCrashed(crashed),
            },
            event = inputs.events.recv(), if inputs.events_open => match event {
                Some(event) => Event::Control(event),
                None => {
                    inputs.events_open = false;
                    Event::SourceEnded
                }
            },
            Some(joined) = self.scans.join_next() => match joined {
                Ok(orphans) => Event::OrphansFound(orphans),
                Err(crashed) => Event::OrphanScanCrashed(crashed),
            },
            () = sleep_until_some(self.next_scan), if running && self.scans.is_empty() => Event::OrphanScanDue,
            event = run_step(&mut self.step) => event,
        }
    }

    /// Sets when the next orphan scan is due, from the scan's interval.
    pub(crate) fn schedule_scan(&mut self) {
        self.next_scan = self
            .orphan_scan
            .interval()
            .map(|every| Instant::now() + every);
    }

    /// Handles one event. Synchronous: whatever takes time runs as an execution, a cancel hook
    /// or a phase step, and comes back as another event.
    pub(crate) fn handle_event(&mut self, event: Event) {
        match event {
            Event::Control(event) => self.on_control(event),
            Event::SourceEnded => {
                if self.phase == Phase::Running {
                    error!("control-plane event stream ended; stopping");
                    self.begin_shutdown(Stopped::SourceEnded);
                }
            }
            Event::ShutdownRequested => {
                if self.phase == Phase::Running {
                    self.begin_shutdown(Stopped::Shutdown);
                }
            }
            Event::ExecutionFinished { task_id, outcome } => {
                self.apply(&task_id, TaskEvent::Finished(outcome));
            }
            Event::ExecutionCrashed(crashed) => self.on_crashed(&crashed),
            Event::BackendCancelDone { task_id, outcome } => match outcome {
                HookOutcome::Done => {}
                HookOutcome::Failed(err) => {
                    warn!(task_id = %task_id, "Backend cancellation failed: {err}");
                }
                HookOutcome::TimedOut => {
                    warn!(task_id = %task_id, "Backend cancellation timed out")
                }
            },
            Event::BackendCancelCrashed(crashed) => {
                if crashed.is_panic() {
                    error!("the executor's cancel hook panicked: {crashed}");
                }
            }
            Event::DrainDeadline => {
                if matches!(self.phase, Phase::Draining { .. }) {
                    warn!(
                        running = self.running(),
                        "Drain deadline of {:?} reached; stopping the tasks still running",
                        self.settings.deadlines.drain
                    );
                    self.stop_tasks();
                }
            }
            Event::StopDeadline => {
                if matches!(self.phase, Phase::Stopping { .. }) {
                    self.abandon_stuck();
                    self.enter_flushing();
                }
            }
            Event::Flushed { delivered } => {
                if !delivered {
                    warn!(
                        "Some reports were not delivered within {:?}",
                        self.settings.deadlines.flush
                    );
                }
                self.enter_backend_shutdown();
            }
            Event::BackendStopped { in_time } => {
                if !in_time {
                    warn!(
                        "Backend shutdown did not finish within {:?}",
                        self.settings.deadlines.backend
                    );
                }
                self.phase = Phase::Done;
                self.step = None;
            }
            Event::OrphanScanDue => {
                let scan = self.orphan_scan.clone();
                self.scans.spawn(async move { scan.scan().await });
                self.next_scan = None;
            }
            Event::OrphansFound(orphans) => {
                if matches!(self.phase, Phase::Running | Phase::Draining { .. }) {
                    self.adopt(orphans);
                } else if !orphans.is_empty() {
                    // Taken over just as this worker stops: they stay on the backend, where
                    // the next worker process finds them.
                    warn!(
                        orphans = orphans.len(),
                        "Not following tasks adopted during shutdown; the next worker process will"
                    );
                }
                self.schedule_scan();
            }
            Event::OrphanScanCrashed(crashed) => {
                error!("the executor's orphan scan panicked: {crashed}");
                self.schedule_scan();
            }
        }
        self.advance();
    }

    /// Leaves a phase that has nothing left to wait for, whichever event ended it.
    fn advance(&mut self) {
        match self.phase {
            // Stopping ends as soon as no execution holds a slot.
            Phase::Stopping { .. } if self.running() == 0 => self.enter_flushing(),
            // Draining ends as soon as no task holds a slot: nothing is left to stop.
            Phase::Draining { .. } if self.running() == 0 => {
                info!("Drain complete: no task is running");
                self.stop_tasks();
                // Stopping has nothing to wait for either (dispatched entries hold no slot).
                self.advance();
            }
            _ => {}
        }
    }

    fn on_control(&mut self, event: ControlEvent) {
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
        let capacity = Capacity {
            policy: self.settings.policy,
            running: self.running(),
            intake: self.phase.intake(),
        };
        let previous = self.tasks.remove(&task_id);
        let (admission, Transition { next, effects }) = assign(
            previous.as_ref().map(|task| task.state),
            &task_id,
            &self.settings.worker_id,
            capacity,
            self.ports.clock.now(),
        );
        match admission {
            Admission::Admit => {}
            Admission::Reject(reason) => {
                warn!(task_id = %task_id, reason = reason.wire_text(), limit = self.settings.policy.configured(), "Rejecting task");
            }
            Admission::Duplicate => {
                warn!(task_id = %task_id, "Ignoring duplicate assignment for a task that is still running; its claim was sent and its result will follow");
            }
        }
        // A spawned (dispatched) entry for the same run is replaced by the new execution.
        let mut execution = previous.map(|task| task.execution);
        for effect in effects {
            self.carry_out(&task_id, &mut execution, Some(&assignment), effect);
        }
        self.settle(task_id, next, execution);
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

    fn on_crashed(&mut self, crashed: &JoinError) {
        // An abandoned execution was aborted and has left the table already.
        let Some(task_id) = self
            .tasks
            .iter()
            .find(|(_, task)| task.execution.handle.id() == crashed.id())
            .map(|(task_id, _)| task_id.clone())
        else {
            return;
        };
        error!(task_id = %task_id, "executor panicked or was aborted: {crashed}");
        let failure = TaskFailure::backend(
            FailureReason::Unknown,
            "the executor crashed while running the task",
        );
        self.apply(&task_id, TaskEvent::Finished(Err(failure)));
    }

    /// Closes intake (every phase after `Running` rejects assignments); then drains (with a drain
    /// timeout) or stops the tasks.
    fn begin_shutdown(&mut self, why: Stopped) {
        info!("Shutting down worker...");
        self.stopped = why;
        let drain = self.settings.deadlines.drain;
        if drain.is_zero() {
            self.stop_tasks();
            return;
        }
        self.readiness.set_backend_ready(false);
        if self.running() == 0 {
            self.stop_tasks();
            return;
        }
        info!(
            running = self.running(),
            "Draining: letting running tasks finish for up to {drain:?}"
        );
        let deadline = Instant::now() + drain;
        self.phase = Phase::Draining { deadline };
        self.step = Some(Box::pin(async move {
            tokio::time::sleep_until(deadline).await;
            Event::DrainDeadline
        }));
    }

    /// A backend whose tasks survive a restart keeps them running, and the loop goes on to
    /// flushing. Otherwise every task gets a shutdown cancel and the loop waits for the
    /// executions in [`Phase::Stopping`], until the stop deadline.
    fn stop_tasks(&mut self) {
        let n = self.tasks.len();
        if self.ports.executor.survives_daemon_restart() {
            if n > 0 {
                info!("Preserving {n} active tasks during worker shutdown");
            }
            // Tasks that end from now on may not have their reports flushed: the backend
            // leaves them to the next worker process instead.
            self.ports.executor.leaving();
            self.enter_flushing();
            return;
        }
        if n > 0 {
            info!("Cancelling {n} active tasks");
        }
        let deadline = Instant::now() + self.settings.deadlines.stop;
        self.phase = Phase::Stopping { deadline };
        self.step = Some(Box::pin(async move {
            tokio::time::sleep_until(deadline).await;
            Event::StopDeadline
        }));
        let task_ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
        for task_id in task_ids {
            self.apply(&task_id, TaskEvent::CancelRequested(CancelSource::Shutdown));
        }
    }

    /// At the stop deadline: executions still holding a slot are abandoned.
    fn abandon_stuck(&mut self) {
        let stuck: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, task)| task.state.holds_slot())
            .map(|(task_id, _)| task_id.clone())
            .collect();
        for task_id in stuck {
            warn!(task_id = %task_id, "Task did not stop within {:?}; abandoning it", self.settings.deadlines.stop);
            self.apply(&task_id, TaskEvent::Abandoned);
        }
    }

    fn enter_flushing(&mut self) {
        self.phase = Phase::Flushing;
        let (source, bound) = (self.ports.source.clone(), self.settings.deadlines.flush);
        self.step = Some(Box::pin(async move {
            Event::Flushed {
                delivered: source.flush(bound).await,
            }
        }));
    }

    fn enter_backend_shutdown(&mut self) {
        self.phase = Phase::BackendShutdown;
        self.backend_cancels.abort_all();
        let (executor, bound) = (self.ports.executor.clone(), self.settings.deadlines.backend);
        self.step = Some(Box::pin(async move {
            Event::BackendStopped {
                in_time: tokio::time::timeout(bound, executor.shutdown())
                    .await
                    .is_ok(),
            }
        }));
    }

    /// Applies a lifecycle event to a task in the table and carries out the effects.
    fn apply(&mut self, task_id: &TaskId, event: TaskEvent) {
        let Some(task) = self.tasks.remove(task_id) else {
            return;
        };
        let now = self.ports.clock.now();
        let Transition { next, effects } = match task.state.apply(task_id, event, now) {
            Ok(transition) => transition,
            Err(err) => {
                error!(task_id = %task_id, "{err}");
                self.tasks.insert(task_id.clone(), task);
                return;
            }
        };
        let mut execution = Some(task.execution);
        for effect in effects {
            self.carry_out(task_id, &mut execution, None, effect);
        }
        self.settle(task_id.clone(), next, execution);
    }

    /// Puts the task's next state back in the table (`None` leaves it out).
    fn settle(&mut self, task_id: TaskId, next: Option<TaskState>, execution: Option<Execution>) {
        match (next, execution) {
            (Some(state), Some(execution)) => {
                self.tasks.insert(task_id, ActiveTask { state, execution });
            }
            (Some(state), None) => {
                error!(task_id = %task_id, "no execution for a task in state {state:?}; dropping it");
            }
            (None, _) => {}
        }
    }

    /// Carries out one effect for `task_id`. `assignment` is present while an assignment is
    /// being admitted, the one time an execution can start.
    fn carry_out(
        &mut self,
        task_id: &TaskId,
        execution: &mut Option<Execution>,
        assignment: Option<&Assignment>,
        effect: Effect,
    ) {
        match effect {
            Effect::StartExecution => match assignment {
                Some(assignment) => *execution = Some(self.start(assignment)),
                None => error!(task_id = %task_id, "start requested without an assignment"),
            },
            Effect::CancelExecution => {
                if let Some(execution) = execution {
                    execution.cancel.cancel();
                }
            }
            Effect::AbortExecution => {
                if let Some(execution) = execution {
                    execution.handle.abort();
                }
            }
            Effect::InvokeBackendCancel => {
                let execution_id = execution
                    .as_ref()
                    .map(|execution| execution.execution_id.clone())
                    .unwrap_or_default();
                self.invoke_backend_cancel(task_id, execution_id);
            }
            Effect::Report(report) => {
                log_terminal(&report);
                self.report(report);
            }
            Effect::RecordClaimed => self.ports.metrics.record(Signal::TaskClaimed),
            Effect::RecordRejected(reason) => {
                self.ports.metrics.record(Signal::TaskRejected(reason));
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

    fn start(&mut self, assignment: &Assignment) -> Execution {
        let task_id = assignment.task_id.clone();
        let spec = prepare(assignment, &self.settings.spec);
        let cancel = CancellationToken::new();
        let executor = self.ports.executor.clone();
        let token = cancel.clone();
        let span = info_span!("task", task_id = %task_id);
        info!(parent: &span, title = %assignment.task.title, image = %spec.image, "Starting task execution");
        let handle = self.executions.spawn(
            async move {
                let outcome = executor.run(&spec, token).await;
                (task_id, outcome)
            }
            .instrument(span),
        );
        Execution {
            execution_id: assignment.execution_id.clone(),
            cancel,
            handle,
        }
    }

    fn follow(&mut self, orphan: Orphan) -> Execution {
        let task_id = orphan.task_id.clone();
        let cancel = CancellationToken::new();
        let executor = self.ports.executor.clone();
        let token = cancel.clone();
        let span = info_span!("task", task_id = %task_id);
        let execution_id = orphan.execution_id.clone();
        let handle = self.executions.spawn(
            async move {
                let outcome = executor.follow(&orphan, token).await;
                (task_id, outcome)
            }
            .instrument(span),
        );
        Execution {
            execution_id,
            cancel,
            handle,
        }
    }

    /// Calls the executor's best-effort cancel hook, bounded by [`BACKEND_CANCEL_TIMEOUT`]; its
    /// end comes back as [`Event::BackendCancelDone`].
    fn invoke_backend_cancel(&mut self, task_id: &TaskId, execution_id: String) {
        info!(task_id = %task_id, "Requesting backend cancellation");
        let executor = self.ports.executor.clone();
        let task_id = task_id.clone();
        self.backend_cancels.spawn(async move {
            let outcome = match tokio::time::timeout(
                BACKEND_CANCEL_TIMEOUT,
                executor.cancel(&task_id, &execution_id),
            )
            .await
            {
                Ok(Ok(())) => HookOutcome::Done,
                Ok(Err(err)) => HookOutcome::Failed(err),
                Err(_) => HookOutcome::TimedOut,
            };
            (task_id, outcome)
        });
    }

    fn report(&self, report: TaskReport) {
        let task_id = report.task_id().clone();
        if let Err(err) = self.ports.source.report(report) {
            error!(task_id = %task_id, "Failed to queue report: {err}");
        }
    }
}

/// Sleeps until `at`; never resolves for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for the current phase's step, if any; takes it once it is done.
async fn run_step(step: &mut Option<Step>) -> Event {
    match step {
        Some(future) => {
            let event = future.await;
            *step = None;
            event
        }
        None => std::future::pending().await,
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

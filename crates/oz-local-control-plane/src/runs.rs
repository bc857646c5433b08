//! The local control plane's run store: a pure state machine for runs created through the
//! public run API, and the routing of queued runs to connected workers.
//!
//! States follow Warp's `RunState`: a run starts `QUEUED`; it is offered (sent as a
//! `task_assignment`) to one open connection whose `worker_id` equals `config.worker_host`,
//! picking the least-loaded one and rotating among ties; `task_claimed` makes it `CLAIMED`
//! and the next [`RunStore::tick`] makes it `INPROGRESS` (the worker protocol has no "started"
//! message: the worker starts the agent right after claiming); `task_completed` makes it
//! `SUCCEEDED`, or `CANCELLED` with `task_state: CANCELLED`; `task_failed` makes it `FAILED`.
//! The worker's message goes to `status_message`, and a failure reason that maps to one of the
//! SDK's error codes adds `error_code` and `retryable` ([`error_for_reason`]). Reports apply
//! idempotently: a repeated `task_claimed` leaves the run's state and start time alone, and a
//! report about a finished run changes nothing. `task_rejected`, or the connection ending
//! before a claim, puts the run back in the queue; a run whose cancellation was requested ends
//! `CANCELLED` instead. A run for a worker id that is not
//! connected stays `QUEUED`.
//!
//! Dispatch is capacity-aware by default ([`Dispatch::Capacity`]): the store counts each
//! connection's runs sent or claimed and not yet finished. Until a connection has rejected a
//! run for capacity, it gets one unclaimed offer at a time (each claim lets the next one go);
//! its first capacity rejection teaches its limit (the runs it had claimed and not finished
//! then), and from then on it is offered runs only while it holds fewer than that. A rejected
//! run is offered again as soon as a slot frees (a report ends a run on that connection), not
//! after a delay. [`Dispatch::FixedDelay`] is the old behaviour, kept as a fallback: every
//! queued run is offered at once and a rejected run waits `retry_delay`. A rejection for any
//! other reason (the worker is shutting down) waits `retry_delay` in both modes.
//!
//! A claimed run whose connection ends is *detached*: it keeps its state, because the worker
//! keeps its outbox across reconnects and reports the run on a new connection with the same
//! `worker_id`; any connection may report any run. A cancellation of a detached run is sent to
//! every open connection of its worker id, and again to each one that connects later, until
//! the worker reports the end. A detached run whose worker id has had no open connection for
//! the orphan timeout is marked `FAILED` with a message saying its worker vanished; until then
//! a report from the returning worker still wins. Nothing here does I/O; time is passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::ConnectionId;
use oz_protocol::{TASK_STATE_CANCELLED, WorkerMessage};

/// The state of a run, spelled as in the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunState {
    /// Waiting for a worker.
    Queued,
    /// A worker claimed it.
    Claimed,
    /// The worker is running it.
    InProgress,
    /// It completed.
    Succeeded,
    /// It failed.
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl RunState {
    /// The API spelling (`QUEUED`, `CLAIMED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Claimed => "CLAIMED",
            Self::InProgress => "INPROGRESS",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses the API spelling; `None` for states this server never produces
    /// (`PENDING`, `BLOCKED`, `ERROR`) or unknown text.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Claimed,
            Self::InProgress,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    /// True for `SUCCEEDED`, `FAILED` and `CANCELLED`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// How queued runs are offered to connected workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// Track each connection's unfinished runs, learn its limit from its first capacity
    /// rejection, and offer a run only when the connection has a free slot.
    #[default]
    Capacity,
    /// Offer every queued run at once; a rejected run waits the retry delay (the fallback).
    FixedDelay,
}

/// The SDK's `error_code` and `retryable` for a worker's `failure_reason`, where one maps:
/// failures while preparing the environment are `environment_setup_failed` (not retryable),
/// transient infrastructure failures are `resource_unavailable` (retryable). Reasons about the
/// agent itself (its exit, a timeout, a cancellation) have none.
pub fn error_for_reason(reason: &str) -> Option<(&'static str, bool)> {
    match reason {
        "image_pull" | "invalid_image" | "sidecar_prep" | "workspace_setup" | "setup_command"
        | "volume_mount" | "init_container" => Some(("environment_setup_failed", false)),
        "container_create" | "container_start" | "container_wait" | "job_create" | "job_watch"
        | "pod_watch" | "evicted" | "unschedulable" | "graceful_shutdown" | "dispatch_command"
        | "dispatch_timeout" | ORPHANED => Some(("resource_unavailable", true)),
        _ => None,
    }
}

/// The failure reason the store gives a run whose worker vanished.
pub const ORPHANED: &str = "worker_vanished";

/// What a run was created with (already validated by the API layer).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewRun {
    /// The prompt.
    pub prompt: String,
    /// The title.
    pub title: String,
    /// The `config` object as sent (the worker's `agent_config_snapshot`).
    pub config: serde_json::Value,
    /// `config.worker_host`: the worker id that must run it.
    pub worker_host: String,
    /// Team-owned (`team: true`) or user-owned.
    pub team: bool,
    /// Custom metadata.
    pub metadata: BTreeMap<String, String>,
}

/// One run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    /// `run_id` (also the `task_id`).
    pub id: String,
    /// Creation order, from 1.
    pub seq: u64,
    /// What it was created with.
    pub spec: NewRun,
    /// The current state.
    pub state: RunState,
    /// Microseconds since the Unix epoch.
    pub created_at: u64,
    /// Microseconds since the Unix epoch.
    pub updated_at: u64,
    /// When a worker claimed it (microseconds since the Unix epoch).
    pub started_at: Option<u64>,
    /// The latest status text (the worker's message once terminal).
    pub status_message: Option<String>,
    /// The open connection it was last sent to or reported on, while not terminal; `None`
    /// for a queued run, and for a claimed run whose connection ended (detached).
    pub connection: Option<ConnectionId>,
    /// How many times it was sent.
    pub offers: u32,
    /// Not offered before this instant (after a rejection).
    not_before: Option<Instant>,
    /// Claimed at this instant; promoted to INPROGRESS on the next tick.
    claimed_at: Option<Instant>,
    /// A cancellation was requested.
    pub cancel_requested: bool,
    /// The worker's `failure_reason` of a `FAILED` run ([`ORPHANED`] when its worker vanished).
    pub failure_reason: Option<String>,
    /// Detached with no open connection of its worker id since this instant.
    orphan_since: Option<Instant>,
}

/// Why a cancel request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CancelError {
    /// No run with that id.
    NotFound,
    /// The run is already terminal, in this state.
    Finished(RunState),
}

/// What the server must do after a cancel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CancelAction {
    /// The run was only queued: it is now `CANCELLED`, nothing to send.
    CancelledInQueue,
    /// Send a `task_cancellation` on this connection, which holds the run; the worker reports
    /// the outcome.
    Send(ConnectionId),
    /// The run is detached (its worker is disconnected): send a `task_cancellation` on each of
    /// these open connections of its worker id (possibly none). The store sends it again to
    /// every connection of that id that opens later ([`RunStore::on_connected`]).
    Pending(Vec<ConnectionId>),
}

/// What the server must do after a message from a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// The message moved its run on.
    Applied,
    /// It names no run of this store (e.g. a hand-made assignment) or arrives after the run
    /// ended.
    Ignored,
    /// A claim of a run that was cancelled meanwhile: send a `task_cancellation` for it back on
    /// the connection it came on, so the worker stops the agent it just started.
    CancelAgain,
}

/// All runs, in memory.
#[derive(Debug)]
pub(crate) struct RunStore {
    runs: BTreeMap<String, Run>,
    next_seq: u64,
    retry_delay: Duration,
    rotation: BTreeMap<String, u64>,
    dispatch: Dispatch,
    orphan_timeout: Duration,
    /// Each connection's limit, learned from its first capacity rejection.
    limits: BTreeMap<ConnectionId, usize>,
    /// Rejections received, for the bench and the logs.
    rejections: u64,
}

/// The default `--orphan-timeout`.
pub const DEFAULT_ORPHAN_TIMEOUT: Duration = Duration::from_secs(300);

impl RunStore {
    /// An empty store; rejected runs wait `retry_delay` before being offered again.
    pub(crate) fn new(retry_delay: Duration) -> Self {
        Self {
            runs: BTreeMap::new(),
            next_seq: 1,
            retry_delay,
            rotation: BTreeMap::new(),
            dispatch: Dispatch::default(),
            orphan_timeout: DEFAULT_ORPHAN_TIMEOUT,
            limits: BTreeMap::new(),
            rejections: 0,
        }
    }

    /// Sets the dispatch mode and the orphan timeout.
    pub(crate) fn configured(mut self, dispatch: Dispatch, orphan_timeout: Duration) -> Self {
        self.dispatch = dispatch;
        self.orphan_timeout = orphan_timeout;
        self
    }

    /// How many `task_rejected` messages moved a run back to the queue.
    pub(crate) fn rejections(&self) -> u64 {
        self.rejections
    }

    /// The limit learned for connection `conn`, if any.
    #[cfg(test)]
    pub(crate) fn learned_limit(&self, conn: ConnectionId) -> Option<usize> {
        self.limits.get(&conn).copied()
    }

    /// Adds a `QUEUED` run created at `now_us` and returns it.
    pub(crate) fn create(&mut self, spec: NewRun, now_us: u64) -> Run {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = format!("run-{seq:06}-{:08x}", fastrand::u32(..));
        let status = format!("Waiting for worker {:?}", spec.worker_host);
        let run = Run {
            id: id.clone(),
            seq,
            spec,
            state: RunState::Queued,
            created_at: now_us,
            updated_at: now_us,
            started_at: None,
            status_message: Some(status),
            connection: None,
            offers: 0,
            not_before: None,
            claimed_at: None,
            cancel_requested: false,
            failure_reason: None,
            orphan_since: None,
        };
        self.runs.insert(id, run.clone());
        run
    }

    /// The run with this id.
    pub(crate) fn get(&self, id: &str) -> Option<&Run> {
        self.runs.get(id)
    }

    /// Every run, oldest first.
    pub(crate) fn all(&self) -> Vec<&Run> {
        let mut runs: Vec<&Run> = self.runs.values().collect();
        runs.sort_by_key(|run| run.seq);
        runs
    }

    /// Picks, for each queued run due at `now` whose worker id has an open connection in
    /// `workers` (connection → worker id) with room for it, the least-loaded such connection
    /// (rotating among ties), marks it sent and returns `(run id, connection)` pairs in
    /// creation order. With [`Dispatch::Capacity`] a connection has room while it holds fewer
    /// runs than its learned limit, or, before it has one, while it holds no unclaimed offer.
    pub(crate) fn offers(
        &mut self,
        now: Instant,
        workers: &BTreeMap<ConnectionId, String>,
    ) -> Vec<(String, ConnectionId)> {
        let mut load: BTreeMap<ConnectionId, usize> = workers.keys().map(|c| (*c, 0)).collect();
        let mut unclaimed: BTreeMap<ConnectionId, usize> = BTreeMap::new();
        for run in self.runs.values() {
            if let Some(conn) = run.connection
                && !run.state.is_terminal()
                && let Some(count) = load.get_mut(&conn)
            {
                *count += 1;
                if run.state == RunState::Queued {
                    *unclaimed.entry(conn).or_default() += 1;
                }
            }
        }
        let capacity = self.dispatch == Dispatch::Capacity;
        let limits = &self.limits;
        let has_room = |conn: &ConnectionId,
                        load: &BTreeMap<ConnectionId, usize>,
                        unclaimed: &BTreeMap<ConnectionId, usize>| {
            !capacity
                || match limits.get(conn) {
                    Some(limit) => load[conn] < *limit,
                    None => unclaimed.get(conn).copied().unwrap_or(0) == 0,
                }
        };
        let mut due: Vec<&mut Run> = self
            .runs
            .values_mut()
            .filter(|run| {
                run.state == RunState::Queued
                    && run.connection.is_none()
                    && !run.cancel_requested
                    && run.not_before.is_none_or(|at| at <= now)
            })
            .collect();
        due.sort_by_key(|run| run.seq);
        let mut sent = Vec::new();
        for run in due {
            let candidates: Vec<ConnectionId> = workers
                .iter()
                .filter(|(conn, worker)| {
                    **worker == run.spec.worker_host && has_room(conn, &load, &unclaimed)
                })
                .map(|(conn, _)| *conn)
                .collect();
            let Some(least) = candidates.iter().map(|c| load[c]).min() else {
                continue;
            };
            let tied: Vec<ConnectionId> = candidates
                .into_iter()
                .filter(|c| load[c] == least)
                .collect();
            let turn = self
                .rotation
                .entry(run.spec.worker_host.clone())
                .or_default();
            let conn = tied[(*turn as usize) % tied.len()];
            *turn += 1;
            *load.entry(conn).or_default() += 1;
            *unclaimed.entry(conn).or_default() += 1;
            run.connection = Some(conn);
            run.offers += 1;
            run.not_before = None;
            sent.push((run.id.clone(), conn));
        }
        sent
    }

    /// The runs connection `conn` has claimed and not finished.
    fn claimed_on(&self, conn: ConnectionId) -> usize {
        self.runs
            .values()
            .filter(|run| {
                run.connection == Some(conn)
                    && matches!(run.state, RunState::Claimed | RunState::InProgress)
            })
            .count()
    }

    /// Applies one message from the worker on `conn`. Any connection may report any run: a
    /// worker that reconnected reports the runs it claimed on an earlier connection.
    pub(crate) fn on_message(
        &mut self,
        conn: ConnectionId,
        message: &WorkerMessage,
        now: Instant,
        now_us: u64,
    ) -> Reaction {
        let retry_delay = self.retry_delay;
        let Some(run) = self.runs.get_mut(message.task_id()) else {
            return Reaction::Ignored;
        };
        let claim = matches!(message, WorkerMessage::TaskClaimed { .. });
        if claim && run.claimed_at.is_some() {
            // A repeated claim (the worker re-sends what a dropped connection may have lost):
            // the run keeps its state and start time; it is now reported on `conn`.
            if !run.state.is_terminal() {
                run.connection = Some(conn);
            }
            return Reaction::Ignored;
        }
        if run.state.is_terminal() {
            return if claim && run.state == RunState::Cancelled {
                Reaction::CancelAgain
            } else {
                Reaction::Ignored
            };
        }
        match message {
            WorkerMessage::TaskClaimed { worker_id, .. } => {
                run.state = RunState::Claimed;
                run.connection = Some(conn);
                run.started_at = Some(now_us);
                run.claimed_at = Some(now);
                run.status_message = Some(format!("Claimed by worker {worker_id:?}"));
            }
            WorkerMessage::TaskRejected { .. } if run.connection != Some(conn) => {
                // A stale rejection: the run was re-queued when that offer's connection ended,
                // and may have been offered elsewhere since.
                return Reaction::Ignored;
            }
            WorkerMessage::TaskRejected { reason, .. } => {
                self.rejections += 1;
                let for_capacity = is_capacity_rejection(reason);
                let learn = self.dispatch == Dispatch::Capacity && for_capacity;
                let run = self
                    .runs
                    .get_mut(message.task_id())
                    .expect("looked up above");
                if !cancel_unclaimed(run) {
                    run.state = RunState::Queued;
                    run.connection = None;
                    run.started_at = None;
                    run.not_before = (!learn).then_some(now + retry_delay);
                    run.status_message = Some(format!("Re-queued: worker rejected it: {reason}"));
                }
                run.updated_at = now_us;
                if learn {
                    // The worker was full with what it had claimed here; a worker busy with
                    // runs of an earlier connection only (none claimed here) gets one slot, and
                    // the run waits the retry delay so a full worker is not offered it in a loop.
                    let claimed = self.claimed_on(conn);
                    if claimed == 0
                        && let Some(run) = self.runs.get_mut(message.task_id())
                        && run.state == RunState::Queued
                    {
                        run.not_before = Some(now + retry_delay);
                    }
                    self.limits.insert(conn, claimed.max(1));
                }
                return Reaction::Applied;
            }
            WorkerMessage::TaskCompleted {
                message,
                task_state,
                ..
            } => {
                let state = if task_state.as_deref() == Some(TASK_STATE_CANCELLED) {
                    RunState::Cancelled
                } else {
                    RunState::Succeeded
                };
                finish(run, state, message);
            }
            WorkerMessage::TaskFailed {
                message,
                failure_reason,
                ..
            } => {
                finish(run, RunState::Failed, message);
                run.failure_reason.clone_from(failure_reason);
            }
        }
        run.updated_at = now_us;
        Reaction::Applied
    }

    /// Promotes runs claimed before `now` to `INPROGRESS`, and fails the detached runs whose
    /// worker id has had no open connection in `workers` for the orphan timeout.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        now_us: u64,
        workers: &BTreeMap<ConnectionId, String>,
    ) {
        let timeout = self.orphan_timeout;
        for run in self.runs.values_mut() {
            if run.state == RunState::Claimed && run.claimed_at.is_some_and(|at| at <= now) {
                run.state = RunState::InProgress;
                run.status_message = Some("Running".into());
                run.updated_at = now_us;
            }
            let detached = run.connection.is_none()
                && matches!(run.state, RunState::Claimed | RunState::InProgress);
            let worker_present = workers.values().any(|w| *w == run.spec.worker_host);
            if !detached || worker_present {
                run.orphan_since = None;
                continue;
            }
            let since = *run.orphan_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= timeout {
                let message = format!(
                    "Worker {:?} vanished: it disconnected while running this run and has not \
                     reconnected for {}s (orphan timeout); marked failed",
                    run.spec.worker_host,
                    timeout.as_secs_f64()
                );
                finish(run, RunState::Failed, &message);
                run.failure_reason = Some(ORPHANED.to_owned());
                run.updated_at = now_us;
            }
        }
    }

    /// The connection `conn` ended. Runs sent to it but not claimed go back to the queue, or
    /// end `CANCELLED` when their cancellation was requested. Claimed runs keep their state and
    /// are detached: the worker reports them when it reconnects.
    pub(crate) fn on_disconnected(&mut self, conn: ConnectionId, now_us: u64) {
        self.limits.remove(&conn);
        for run in self.runs.values_mut() {
            if run.connection != Some(conn) || run.state.is_terminal() {
                continue;
            }
            run.connection = None;
            if run.state != RunState::Queued {
                if run.cancel_requested {
                    run.status_message = Some(pending_cancel_message(&run.spec.worker_host));
                    run.updated_at = now_us;
                }
                continue;
            }
            if !cancel_unclaimed(run) {
                run.status_message = Some("Re-queued: the worker disconnected".into());
            }
            run.updated_at = now_us;
        }
    }

    /// A connection of `worker_id` opened: the ids of the detached runs of that worker id whose
    /// cancellation is still pending, to send to it as `task_cancellation`s (the worker that
    /// holds them may be the one that just reconnected; others ignore them).
    pub(crate) fn on_connected(&self, worker_id: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|run| {
                run.cancel_requested
                    && !run.state.is_terminal()
                    && run.state != RunState::Queued
                    && run.connection.is_none()
                    && run.spec.worker_host == worker_id
            })
            .map(|run| run.id.clone())
            .collect()
    }

    /// A sent run could not be delivered (its connection is gone): back to the queue.
    pub(crate) fn undeliverable(&mut self, id: &str) {
        if let Some(run) = self.runs.get_mut(id)
            && run.state == RunState::Queued
        {
            run.connection = None;
        }
    }

    /// Requests cancellation of run `id`; `workers` maps each open connection to its worker
    /// id. A connection the run names that is not in `workers` counts as ended.
    ///
    /// # Errors
    /// [`CancelError::NotFound`] for an unknown id, [`CancelError::Finished`] when terminal.
    pub(crate) fn cancel(
        &mut self,
        id: &str,
        workers: &BTreeMap<ConnectionId, String>,
        now_us: u64,
    ) -> Result<CancelAction, CancelError> {
        let run = self.runs.get_mut(id).ok_or(CancelError::NotFound)?;
        if run.state.is_terminal() {
            return Err(CancelError::Finished(run.state));
        }
        run.cancel_requested = true;
        run.updated_at = now_us;
        match run.connection {
            Some(conn) if workers.contains_key(&conn) => {
                run.status_message = Some("Cancellation requested".into());
                Ok(CancelAction::Send(conn))
            }
            _ => Ok(self.cancel_undelivered(id, workers)),
        }
    }

    /// The cancellation of run `id` could not be sent to the connection that holds it (that
    /// connection ended): a queued run ends `CANCELLED`; a claimed one is detached and its
    /// cancellation stays pending ([`CancelAction::Pending`]). Call after [`RunStore::cancel`].
    pub(crate) fn cancel_undelivered(
        &mut self,
        id: &str,
        workers: &BTreeMap<ConnectionId, String>,
    ) -> CancelAction {
        let Some(run) = self.runs.get_mut(id).filter(|run| !run.state.is_terminal()) else {
            return CancelAction::CancelledInQueue;
        };
        run.connection = None;
        if run.state == RunState::Queued {
            finish(
                run,
                RunState::Cancelled,
                "Cancelled before a worker claimed it",
            );
            return CancelAction::CancelledInQueue;
        }
        run.status_message = Some(pending_cancel_message(&run.spec.worker_host));
        let targets = workers
            .iter()
            .filter(|(_, worker)| **worker == run.spec.worker_host)
            .map(|(conn, _)| *conn)
            .collect();
        CancelAction::Pending(targets)
    }
}

/// True when a rejection's reason says the worker is full (not that it is shutting down).
fn is_capacity_rejection(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("concurrency") || reason.contains("capacity")
}

fn pending_cancel_message(worker_host: &str) -> String {
    format!(
        "Cancellation requested; worker {worker_host:?} is disconnected: the cancellation is \
         sent to each connection with that id until the worker reports the end"
    )
}

/// Ends an unclaimed `run` `CANCELLED` when its cancellation was requested; false otherwise.
fn cancel_unclaimed(run: &mut Run) -> bool {
    if run.cancel_requested {
        finish(
            run,
            RunState::Cancelled,
            "Cancelled before a worker claimed it",
        );
    }
    run.cancel_requested
}

fn finish(run: &mut Run, state: RunState, message: &str) {
    run.state = state;
    run.status_message = Some(message.to_owned());
    run.connection = None;
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;

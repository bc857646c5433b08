//! Supervisor scenarios, driven event by event: the test hands control-plane events to
//! `handle_event` and takes every other event (an execution finished, a cancel hook done, a
//! phase step) from `next_event`, with the `FakeExecutor` scripted per task under paused tokio
//! time. One mockall seam test remains, for an executor panic, which the fake cannot produce.

#![allow(
    clippy::disallowed_methods,
    reason = "unit tests spawn the task under test and await or abort it"
)]

use std::sync::Arc;

use super::*;
use crate::adapters::fake::{FakeExecutor, FakeTaskSource, RecordingMetrics, Script};
use crate::adapters::system_clock::SystemClock;
use crate::domain::failure::{CANCELLED_MESSAGE, COMPLETED_MESSAGE, INTERRUPTED_MESSAGE};
use crate::domain::{FailurePhase, RejectReason};
use crate::ports::executor::MockExecutor;
use crate::ports::{Executor, Signal};

const STOP: Duration = Duration::from_secs(2);

/// Takes the next event from the loop, checks it matches `$pattern`, and handles it.
macro_rules! step {
    ($h:expr, $pattern:pat) => {{
        let event = $h.next().await;
        assert!(
            matches!(event, $pattern),
            "expected {}, got {event:?}",
            stringify!($pattern)
        );
        $h.supervisor.handle_event(event);
    }};
}

struct Harness {
    supervisor: Supervisor,
    inputs: Inputs,
    /// Keeps the control-plane channel open (dropping it ends the source).
    events: Option<mpsc::Sender<ControlEvent>>,
    shutdown: CancellationToken,
    source: FakeTaskSource,
    metrics: RecordingMetrics,
    readiness: Readiness,
}

impl Harness {
    /// A supervisor with at most `max` concurrent tasks (0: unlimited) over `executor`, on
    /// tokio's (paused) clock.
    fn new(max: i64, executor: Arc<dyn Executor>) -> Self {
        let source = FakeTaskSource::default();
        let metrics = RecordingMetrics::default();
        let readiness = Readiness::default();
        let ports = Ports {
            source: Arc::new(source.clone()),
            executor,
            clock: Arc::new(SystemClock),
            metrics: Arc::new(metrics.clone()),
        };
        let (events, receiver) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        Self {
            supervisor: Supervisor::new(ports, settings(max), readiness.clone()),
            inputs: Inputs::new(receiver, shutdown.clone()),
            events: Some(events),
            shutdown,
            source,
            metrics,
            readiness,
        }
    }

    fn with_fake(max: i64, fake: &FakeExecutor) -> Self {
        Self::new(max, Arc::new(fake.clone()))
    }

    /// As [`Harness::with_fake`], with a drain timeout.
    fn draining(fake: &FakeExecutor, drain: Duration) -> Self {
        let mut h = Self::with_fake(0, fake);
        h.supervisor.settings.deadlines.drain = drain;
        h
    }

    async fn next(&mut self) -> Event {
        self.supervisor.next_event(&mut self.inputs).await
    }

    fn control(&mut self, event: ControlEvent) {
        self.supervisor.handle_event(Event::Control(event));
    }

    fn assign(&mut self, raw: &str) {
        self.control(assigned(raw));
    }

    fn cancel(&mut self, raw: &str) {
        self.control(ControlEvent::CancelRequested(id(raw)));
    }

    /// Asserts that nothing more happens within an hour of (paused) time.
    async fn assert_quiet(&mut self) {
        let next = tokio::time::timeout(Duration::from_secs(3600), self.next()).await;
        assert!(next.is_err(), "unexpected event {:?}", next.unwrap());
    }

    /// Runs the shutdown phases that follow the tasks: flush, then the executor's shutdown.
    async fn finish_shutdown(&mut self) {
        assert_eq!(self.supervisor.phase, Phase::Flushing);
        step!(self, Event::Flushed { delivered: true });
        assert_eq!(self.supervisor.phase, Phase::BackendShutdown);
        step!(self, Event::BackendStopped { in_time: true });
        assert_eq!(self.supervisor.phase, Phase::Done);
    }
}

fn settings(max: i64) -> SupervisorSettings {
    SupervisorSettings {
        worker_id: "w1".into(),
        policy: ConcurrencyPolicy::from_configured(max),
        spec: SpecSettings::default(),
        deadlines: ShutdownDeadlines {
            stop: STOP,
            ..ShutdownDeadlines::default()
        },
    }
}

fn id(raw: &str) -> TaskId {
    TaskId::parse(raw).unwrap()
}

fn assigned(raw: &str) -> ControlEvent {
    ControlEvent::Assigned(Box::new(Assignment::new(id(raw))))
}

fn claimed(raw: &str) -> TaskReport {
    TaskReport::Claimed {
        task_id: id(raw),
        worker_id: "w1".into(),
    }
}

fn completed(raw: &str, cancelled: bool) -> TaskReport {
    TaskReport::Completed {
        task_id: id(raw),
        message: if cancelled {
            CANCELLED_MESSAGE
        } else {
            COMPLETED_MESSAGE
        }
        .into(),
        cancelled,
    }
}

fn rejected(raw: &str, reason: RejectReason) -> TaskReport {
    TaskReport::Rejected {
        task_id: id(raw),
        reason: reason.wire_text().into(),
    }
}

fn graceful_shutdown(raw: &str) -> TaskReport {
    TaskReport::Failed {
        task_id: id(raw),
        message: INTERRUPTED_MESSAGE.into(),
        failure_reason: FailureReason::GracefulShutdown,
        exit_code: None,
    }
}

fn durations(metrics: &RecordingMetrics) -> Vec<Duration> {
    metrics
        .signals()
        .into_iter()
        .filter_map(|signal| match signal {
            Signal::TaskFinished { duration, .. } => Some(duration),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn assignment_is_claimed_run_and_reported_completed() {
    let fake = FakeExecutor::new().with_default(Script::succeeds_after(Duration::from_secs(30)));
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    assert_eq!(h.source.reports(), [claimed("t1")]);
    assert_eq!(h.supervisor.running(), 1);
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(h.source.reports(), [claimed("t1"), completed("t1", false)]);
    assert_eq!(h.metrics.count(|s| *s == Signal::TaskClaimed), 1);
    assert_eq!(h.metrics.finished(TaskResult::Succeeded), 1);
    assert_eq!(durations(&h.metrics), [Duration::from_secs(30)]);
    assert_eq!(h.metrics.active(), 0);
    assert_eq!(h.supervisor.active_entries(), 0);
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn at_capacity_the_next_task_is_rejected_until_the_slot_frees() {
    let fake = FakeExecutor::new().with_default(Script::succeeds_after(Duration::from_secs(10)));
    let mut h = Harness::with_fake(1, &fake);
    h.assign("t1");
    h.assign("t2");
    assert_eq!(
        h.source.reports(),
        [claimed("t1"), rejected("t2", RejectReason::AtCapacity)]
    );
    assert_eq!(
        h.metrics
            .count(|s| *s == Signal::TaskRejected(RejectReason::AtCapacity)),
        1
    );
    // The slot frees the moment t1's execution returns, so the next assignment is admitted.
    step!(h, Event::ExecutionFinished { .. });
    h.assign("t3");
    assert_eq!(
        h.source.reports()[2..],
        [completed("t1", false), claimed("t3")]
    );
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(fake.started(), [id("t1"), id("t3")]);
}

#[tokio::test(start_paused = true)]
async fn user_cancel_reports_cancelled_and_calls_the_backend_hook_once() {
    let fake = FakeExecutor::new().with_default(Script::hangs_until_cancelled());
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    h.cancel("t1");
    h.cancel("t1");
    step!(h, Event::ExecutionFinished { .. });
    step!(
        h,
        Event::BackendCancelDone {
            outcome: HookOutcome::Done,
            ..
        }
    );
    assert_eq!(h.source.reports(), [claimed("t1"), completed("t1", true)]);
    assert_eq!(h.metrics.finished(TaskResult::Cancelled), 1);
    assert_eq!(
        h.metrics.count(|s| matches!(
            s,
            Signal::TaskFinished {
                failure: Some(_),
                ..
            }
        )),
        0
    );
    assert_eq!(fake.backend_cancels(), [(id("t1"), String::new())]);
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_backend_cancel_hook_that_hangs_is_bounded() {
    let fake = FakeExecutor::new()
        .with_default(Script::hangs_until_cancelled())
        .with_cancel_hook_taking(Duration::from_secs(3600));
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    let cancelled_at = Instant::now();
    h.cancel("t1");
    step!(h, Event::ExecutionFinished { .. });
    step!(
        h,
        Event::BackendCancelDone {
            outcome: HookOutcome::TimedOut,
            ..
        }
    );
    assert_eq!(cancelled_at.elapsed(), BACKEND_CANCEL_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn cancel_for_an_unknown_task_gets_no_reply() {
    let fake = FakeExecutor::new();
    let mut h = Harness::with_fake(0, &fake);
    h.cancel("ghost");
    assert!(h.source.reports().is_empty());
    h.assert_quiet().await;
    assert!(fake.backend_cancels().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_assignment_of_a_running_task_is_ignored() {
    let fake = FakeExecutor::new().with_default(Script::succeeds_after(Duration::from_secs(10)));
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    h.assign("t1");
    h.assign("t2");
    assert_eq!(h.source.reports(), [claimed("t1"), claimed("t2")]);
    step!(h, Event::ExecutionFinished { .. });
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(fake.started(), [id("t1"), id("t2")]);
    // A new execution of the same run after the first finished is legitimate.
    h.assign("t1");
    assert_eq!(h.source.reports().last(), Some(&claimed("t1")));
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(fake.started(), [id("t1"), id("t2"), id("t1")]);
}

#[tokio::test(start_paused = true)]
async fn a_backend_failure_produces_exactly_one_failed_report_and_no_retry() {
    let fake = FakeExecutor::new().with_default(Script::fails_to_start(FailureReason::ImagePull));
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    step!(
        h,
        Event::ExecutionFinished {
            outcome: Err(_),
            ..
        }
    );
    assert_eq!(
        h.source.reports(),
        [
            claimed("t1"),
            TaskReport::Failed {
                task_id: id("t1"),
                message: "Failed to execute task: fake executor: failed to start (image_pull)"
                    .into(),
                failure_reason: FailureReason::ImagePull,
                exit_code: None,
            }
        ]
    );
    assert_eq!(
        h.metrics.count(|s| matches!(
            s,
            Signal::TaskFinished {
                failure: Some((FailurePhase::Backend, FailureReason::ImagePull)),
                ..
            }
        )),
        1
    );
    h.assert_quiet().await;
    assert_eq!(fake.outcomes().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_running_tasks_reports_graceful_shutdown_then_flushes_and_stops_the_backend()
 {
    let fake = FakeExecutor::new().with_default(Script::hangs_until_cancelled());
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    fake.wait_until_running(&id("t1")).await;
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    assert_eq!(
        h.supervisor.phase,
        Phase::Stopping {
            deadline: Instant::now() + STOP
        }
    );
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(h.source.reports(), [claimed("t1"), graceful_shutdown("t1")]);
    assert_eq!(fake.cancelled(), [id("t1")]);
    // A shutdown cancel does not call the backend's hook.
    assert!(fake.backend_cancels().is_empty());
    assert_eq!(fake.shutdowns(), 0);
    h.finish_shutdown().await;
    assert_eq!(fake.shutdowns(), 1);
    assert_eq!(h.supervisor.stopped, Stopped::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn assignments_arriving_while_tasks_wind_down_or_reports_flush_are_rejected() {
    let fake = FakeExecutor::new().with_default(Script::stops_slowly(Duration::from_secs(1)));
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    fake.wait_until_running(&id("t1")).await;
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    h.assign("t2");
    assert_eq!(
        h.source.reports(),
        [claimed("t1"), rejected("t2", RejectReason::ShuttingDown)]
    );
    // t1 stops within the deadline: it is reported from its own outcome, not abandoned.
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(h.supervisor.phase, Phase::Flushing);
    h.assign("t3");
    assert_eq!(
        h.source.reports()[2..],
        [
            graceful_shutdown("t1"),
            rejected("t3", RejectReason::ShuttingDown)
        ]
    );
    assert_eq!(
        h.metrics
            .count(|s| *s == Signal::TaskRejected(RejectReason::ShuttingDown)),
        2
    );
    h.finish_shutdown().await;
    assert_eq!(fake.started(), [id("t1")]);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_does_not_stop_in_time_is_abandoned_at_the_deadline_and_reported() {
    let fake = FakeExecutor::new().with_default(Script::stops_slowly(Duration::from_secs(60)));
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    fake.wait_until_running(&id("t1")).await;
    // Let it run a while, so the recorded duration shows where it is measured from.
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    // The control plane is still answered while the loop waits.
    h.control(ControlEvent::Connected);
    assert!(h.readiness.connected());
    step!(h, Event::StopDeadline);
    assert_eq!(h.source.reports(), [claimed("t1"), graceful_shutdown("t1")]);
    assert_eq!(h.metrics.active(), 0);
    assert_eq!(durations(&h.metrics), [Duration::from_secs(5) + STOP]);
    assert_eq!(h.supervisor.active_entries(), 0);
    assert_eq!(h.supervisor.phase, Phase::Flushing);
    // The abandoned execution was aborted; its end, whenever it is joined, is no news.
    while h.supervisor.phase != Phase::Done {
        let event = h.next().await;
        h.supervisor.handle_event(event);
    }
    assert_eq!(h.source.reports().len(), 2);
    assert_eq!(fake.shutdowns(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_preserving_backend_keeps_its_tasks_at_shutdown() {
    let fake = FakeExecutor::new()
        .with_default(Script::hangs_until_cancelled())
        .with_survives_daemon_restart(true);
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    fake.wait_until_running(&id("t1")).await;
    assert_eq!(fake.leaving_calls(), 0);
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    assert_eq!(
        fake.leaving_calls(),
        1,
        "told before the flush that the worker is leaving"
    );
    assert_eq!(h.supervisor.phase, Phase::Flushing);
    h.finish_shutdown().await;
    assert_eq!(h.source.reports(), [claimed("t1")]);
    assert!(fake.cancelled().is_empty());
    assert!(fake.backend_cancels().is_empty());
    assert_eq!(fake.shutdowns(), 1);
    assert_eq!(fake.leaving_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn with_only_dispatched_tasks_shutdown_does_not_wait() {
    let fake = FakeExecutor::new().with_default(Script::spawns());
    let mut h = Harness::with_fake(0, &fake);
    h.assign("d1");
    step!(h, Event::ExecutionFinished { .. });
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    assert_eq!(h.supervisor.phase, Phase::Flushing);
    h.finish_shutdown().await;
    assert_eq!(h.source.reports(), [claimed("d1")]);
    assert!(fake.backend_cancels().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_flush_that_cannot_drain_is_bounded() {
    let mut h = Harness::with_fake(0, &FakeExecutor::new());
    h.source.stall_flush();
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    let started = Instant::now();
    step!(h, Event::Flushed { delivered: false });
    assert_eq!(started.elapsed(), ShutdownDeadlines::default().flush);
    assert_eq!(h.supervisor.phase, Phase::BackendShutdown);
}

#[tokio::test(start_paused = true)]
async fn a_backend_shutdown_that_hangs_is_bounded() {
    let fake = FakeExecutor::new().with_shutdown_taking(Duration::from_secs(3600));
    let mut h = Harness::with_fake(0, &fake);
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    step!(h, Event::Flushed { delivered: true });
    let started = Instant::now();
    step!(h, Event::BackendStopped { in_time: false });
    assert_eq!(started.elapsed(), ShutdownDeadlines::default().backend);
    assert_eq!(h.supervisor.phase, Phase::Done);
}

#[tokio::test(start_paused = true)]
async fn the_end_of_the_event_stream_runs_the_shutdown_and_says_why() {
    let fake = FakeExecutor::new().with_default(Script::hangs_until_cancelled());
    let mut h = Harness::with_fake(0, &fake);
    h.assign("t1");
    fake.wait_until_running(&id("t1")).await;
    h.events = None;
    step!(h, Event::SourceEnded);
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(h.source.reports(), [claimed("t1"), graceful_shutdown("t1")]);
    h.finish_shutdown().await;
    assert_eq!(h.supervisor.stopped, Stopped::SourceEnded);
}

#[tokio::test(start_paused = true)]
async fn run_returns_after_the_shutdown_sequence() {
    let fake = FakeExecutor::new().with_default(Script::hangs_until_cancelled());
    let h = Harness::with_fake(0, &fake);
    let events = h.events.clone().unwrap();
    let shutdown = h.shutdown.clone();
    let (source, inputs) = (h.source.clone(), h.inputs);
    let run = tokio::spawn(h.supervisor.run(inputs.events, inputs.shutdown));
    events.send(assigned("t1")).await.unwrap();
    fake.wait_until_running(&id("t1")).await;
    shutdown.cancel();
    assert_eq!(run.await.unwrap(), Stopped::Shutdown);
    assert_eq!(source.reports(), [claimed("t1"), graceful_shutdown("t1")]);
    assert_eq!(fake.shutdowns(), 1);
}

#[tokio::test(start_paused = true)]
async fn run_returns_source_ended_when_the_event_stream_ends() {
    let h = Harness::with_fake(0, &FakeExecutor::new());
    let Harness {
        supervisor,
        inputs,
        events,
        ..
    } = h;
    drop(events);
    let stopped = supervisor.run(inputs.events, inputs.shutdown).await;
    assert_eq!(stopped, Stopped::SourceEnded);
}

#[tokio::test(start_paused = true)]
async fn connection_events_become_metrics_and_readiness() {
    let mut h = Harness::with_fake(0, &FakeExecutor::new());
    h.control(ControlEvent::DialFailed);
    h.control(ControlEvent::Connected);
    assert!(h.readiness.connected());
    h.control(ControlEvent::Disconnected);
    assert!(!h.readiness.connected());
    assert_eq!(
        h.metrics.signals(),
        [Signal::DialFailed, Signal::Connected, Signal::Disconnected]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dispatched_task_is_cancellable_until_its_retention_ends() {
    let fake = FakeExecutor::new().with_default(Script::spawns());
    let mut h = Harness::with_fake(0, &fake);
    h.assign("d1");
    h.assign("d2");
    step!(h, Event::ExecutionFinished { .. });
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(h.metrics.finished(TaskResult::Dispatched), 2);
    assert_eq!(h.supervisor.active_entries(), 2);
    assert_eq!(h.supervisor.running(), 0);
    // A fresh entry still reaches the backend's cancel hook, once.
    h.cancel("d1");
    step!(
        h,
        Event::BackendCancelDone {
            outcome: HookOutcome::Done,
            ..
        }
    );
    assert_eq!(h.supervisor.active_entries(), 1);
    // A day later the other entry is dropped at the next assignment: its cancel is ignored.
    tokio::time::advance(SPAWNED_RETENTION + Duration::from_secs(1)).await;
    h.assign("probe");
    h.cancel("d2");
    step!(h, Event::ExecutionFinished { .. });
    h.assert_quiet().await;
    assert_eq!(fake.backend_cancels(), [(id("d1"), String::new())]);
    // Only d1 and d2 were dispatched and the probe produced no terminal message either.
    assert_eq!(
        h.source.reports(),
        [claimed("d1"), claimed("d2"), claimed("probe")]
    );
}

/// The fake cannot panic, so this seam uses a mock executor.
#[tokio::test(start_paused = true)]
async fn an_executor_panic_is_reported_as_an_unknown_failure() {
    let mut executor = MockExecutor::new();
    executor
        .expect_run()
        .times(1)
        .returning(|_, _| panic!("boom in the executor"));
    let mut h = Harness::new(0, Arc::new(executor));
    h.assign("t1");
    step!(h, Event::ExecutionCrashed(_));
    assert!(matches!(
        &h.source.reports()[1],
        TaskReport::Failed {
            failure_reason: FailureReason::Unknown,
            exit_code: None,
            ..
        }
    ));
    assert_eq!(h.metrics.active(), 0);
    assert_eq!(h.supervisor.active_entries(), 0);
}

const DRAIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn with_a_drain_timeout_shutdown_lets_running_tasks_finish_and_rejects_new_ones() {
    let fake = FakeExecutor::new().with_default(Script::succeeds_after(Duration::from_secs(10)));
    let mut h = Harness::draining(&fake, DRAIN);
    h.readiness.set_backend_ready(true);
    h.assign("t1");
    fake.wait_until_running(&id("t1")).await;
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    assert_eq!(
        h.supervisor.phase,
        Phase::Draining {
            deadline: Instant::now() + DRAIN
        }
    );
    assert!(
        !h.readiness.backend_ready(),
        "/readyz is unready from the drain's start"
    );
    h.assign("t2");
    // The running task finishes by itself, well before the drain deadline.
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(
        h.source.reports(),
        [
            claimed("t1"),
            rejected("t2", RejectReason::ShuttingDown),
            completed("t1", false)
        ]
    );
    assert!(fake.cancelled().is_empty(), "nothing was stopped");
    h.finish_shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn at_the_drain_deadline_tasks_still_running_are_stopped_as_without_a_drain() {
    let fake = FakeExecutor::new().with_default(Script::hangs_until_cancelled());
    let mut h = Harness::draining(&fake, DRAIN);
    h.assign("t1");
    fake.wait_until_running(&id("t1")).await;
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    step!(h, Event::DrainDeadline);
    assert_eq!(
        h.supervisor.phase,
        Phase::Stopping {
            deadline: Instant::now() + STOP
        }
    );
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(h.source.reports(), [claimed("t1"), graceful_shutdown("t1")]);
    assert_eq!(fake.cancelled(), [id("t1")]);
    h.finish_shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn with_nothing_running_a_drain_ends_at_once() {
    let fake = FakeExecutor::new();
    let mut h = Harness::draining(&fake, DRAIN);
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    h.finish_shutdown().await;
}

fn orphan(raw: &str) -> Orphan {
    Orphan {
        task_id: id(raw),
        execution_id: format!("{raw}-exec"),
        handle: format!("container-of-{raw}"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_adopted_task_holds_a_slot_is_cancellable_and_reported_without_a_claim() {
    let fake = FakeExecutor::new().with_default(Script::hangs_until_cancelled());
    let mut h = Harness::with_fake(1, &fake);
    h.supervisor.adopt(vec![orphan("old")]);
    assert_eq!(h.supervisor.running(), 1);
    assert_eq!(h.metrics.active(), 1);
    h.assign("new");
    assert_eq!(
        h.source.reports(),
        [rejected("new", RejectReason::AtCapacity)],
        "the adopted task holds the only slot, and no claim is sent for it"
    );
    // Adopting it again (a second scan) changes nothing.
    h.supervisor.adopt(vec![orphan("old")]);
    fake.wait_until_running(&id("old")).await;
    assert_eq!(fake.followed(), [id("old")]);
    h.cancel("old");
    step!(h, Event::ExecutionFinished { .. });
    step!(h, Event::BackendCancelDone { .. });
    assert_eq!(h.source.reports()[1..], [completed("old", true)]);
    assert_eq!(fake.backend_cancels(), [(id("old"), "old-exec".to_owned())]);
    assert_eq!(h.metrics.active(), 0);
    assert_eq!(h.metrics.count(|s| *s == Signal::TaskClaimed), 0);
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn an_adopted_task_that_fails_is_reported_with_its_reason_and_exit_code() {
    let fake = FakeExecutor::new();
    fake.script(&id("old"), Script::exits_after(Duration::from_secs(5), 3));
    let mut h = Harness::with_fake(0, &fake);
    h.supervisor.adopt(vec![orphan("old")]);
    step!(h, Event::ExecutionFinished { .. });
    let reports = h.source.reports();
    assert!(
        matches!(
            &reports[..],
            [TaskReport::Failed {
                failure_reason: FailureReason::AgentInvocation,
                exit_code: Some(3),
                ..
            }]
        ),
        "{reports:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn orphans_found_by_a_periodic_scan_are_adopted_while_running_only() {
    let fake = FakeExecutor::new()
        .with_default(Script::succeeds_after(Duration::from_secs(1)))
        .with_orphan_scan_every(Duration::from_secs(30));
    let mut h = Harness::with_fake(0, &fake);
    h.supervisor.schedule_scan();
    fake.leave_orphan(orphan("lapsed"));
    step!(h, Event::OrphanScanDue);
    step!(h, Event::OrphansFound(_));
    step!(h, Event::ExecutionFinished { .. });
    assert_eq!(fake.followed(), [id("lapsed")]);
    assert_eq!(h.source.reports(), [completed("lapsed", false)]);
    // The next scan comes one interval later and finds nothing.
    let before = tokio::time::Instant::now();
    step!(h, Event::OrphanScanDue);
    assert_eq!(before.elapsed(), Duration::from_secs(29));
    step!(h, Event::OrphansFound(_));
    assert_eq!(fake.scans(), 2);
    // Once shutdown begins no scan is started.
    h.shutdown.cancel();
    step!(h, Event::ShutdownRequested);
    fake.leave_orphan(orphan("late"));
    h.finish_shutdown().await;
    assert_eq!(fake.scans(), 2);
    assert_eq!(fake.followed(), [id("lapsed")]);
}

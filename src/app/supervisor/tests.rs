//! Supervisor scenarios against fakes: a gate executor the test finishes by hand, the in-memory
//! task source and recording metrics. Plus mockall seam tests for error paths.

#![allow(
    clippy::disallowed_methods,
    reason = "unit tests spawn the task under test and await or abort it"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Notify, oneshot};

use super::*;
use crate::adapters::fake::{FakeTaskSource, ManualClock, RecordingMetrics};
use crate::domain::failure::{CANCELLED_MESSAGE, COMPLETED_MESSAGE};
use crate::domain::{RejectReason, TaskSpec};
use crate::ports::executor::MockExecutor;
use crate::ports::{CancelError, Executor};

const WAIT: Duration = Duration::from_secs(5);

/// An executor whose tasks finish when the test says so.
#[derive(Default)]
struct GateExecutor {
    gates: Mutex<HashMap<String, oneshot::Sender<Result<Exit, TaskFailure>>>>,
    started: Mutex<Vec<String>>,
    backend_cancels: Mutex<Vec<String>>,
    shutdowns: Mutex<usize>,
    ignore_cancel: bool,
    preserve: bool,
    changed: Notify,
}

impl GateExecutor {
    fn ignoring_cancel() -> Self {
        Self {
            ignore_cancel: true,
            ..Self::default()
        }
    }

    async fn wait_started(&self, n: usize) {
        tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.changed.notified();
                if self.started.lock().unwrap().len() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("executions did not start");
    }

    fn finish(&self, task_id: &str, outcome: Result<Exit, TaskFailure>) {
        let gate = self.gates.lock().unwrap().remove(task_id);
        gate.expect("task not running").send(outcome).unwrap();
    }

    fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }
}

#[async_trait]
impl Executor for GateExecutor {
    async fn run(&self, spec: &TaskSpec, cancel: CancellationToken) -> Result<Exit, TaskFailure> {
        let (tx, rx) = oneshot::channel();
        let id = spec.task_id.to_string();
        self.gates.lock().unwrap().insert(id.clone(), tx);
        self.started.lock().unwrap().push(id);
        self.changed.notify_waiters();
        if self.ignore_cancel {
            return rx.await.unwrap_or(Ok(Exit::Succeeded));
        }
        tokio::select! {
            () = cancel.cancelled() => Ok(Exit::Cancelled),
            outcome = rx => outcome.unwrap_or(Ok(Exit::Succeeded)),
        }
    }

    async fn cancel(&self, task_id: &TaskId, _execution_id: &str) -> Result<(), CancelError> {
        self.backend_cancels
            .lock()
            .unwrap()
            .push(task_id.to_string());
        Ok(())
    }

    fn survives_daemon_restart(&self) -> bool {
        self.preserve
    }

    async fn shutdown(&self) {
        *self.shutdowns.lock().unwrap() += 1;
    }
}

struct Harness {
    clock: ManualClock,
    source: FakeTaskSource,
    metrics: RecordingMetrics,
    executor: Arc<GateExecutor>,
    events: mpsc::Sender<ControlEvent>,
    shutdown: CancellationToken,
    stopped: tokio::task::JoinHandle<Stopped>,
}

impl Harness {
    /// Assigns the first task and waits until its execution started.
    async fn run_first(&self, raw: &str) {
        self.events.send(assigned(raw)).await.unwrap();
        self.executor.wait_started(1).await;
    }
}

fn settings(max: i64) -> SupervisorSettings {
    SupervisorSettings {
        worker_id: "w1".into(),
        policy: ConcurrencyPolicy::from_configured(max),
        spec: SpecSettings::default(),
        deadlines: ShutdownDeadlines {
            stop: Duration::from_secs(2),
            ..ShutdownDeadlines::default()
        },
    }
}

fn spawn_supervisor(max: i64, executor: GateExecutor) -> Harness {
    let source = FakeTaskSource::default();
    let metrics = RecordingMetrics::default();
    let executor = Arc::new(executor);
    let clock = ManualClock::default();
    let ports = Ports {
        source: Arc::new(source.clone()),
        executor: executor.clone(),
        clock: Arc::new(clock.clone()),
        metrics: Arc::new(metrics.clone()),
    };
    let (events, rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let supervisor = Supervisor::new(ports, settings(max), Readiness::default());
    let stopped = tokio::spawn(supervisor.run(rx, shutdown.clone()));
    Harness {
        clock,
        source,
        metrics,
        executor,
        events,
        shutdown,
        stopped,
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

#[tokio::test]
async fn assignment_is_claimed_run_and_reported_completed() {
    let h = spawn_supervisor(0, GateExecutor::default());
    h.run_first("t1").await;
    h.executor.finish("t1", Ok(Exit::Succeeded));
    let reports = h.source.wait_for_reports(2, WAIT).await;
    assert_eq!(reports, [claimed("t1"), completed("t1", false)]);
    assert_eq!(h.metrics.count(|s| *s == Signal::TaskClaimed), 1);
    assert_eq!(h.metrics.finished(TaskResult::Succeeded), 1);
    assert_eq!(h.metrics.active(), 0);
}

#[tokio::test]
async fn at_capacity_the_next_task_is_rejected_without_a_claim() {
    let h = spawn_supervisor(1, GateExecutor::default());
    h.run_first("t1").await;
    h.events.send(assigned("t2")).await.unwrap();
    let reports = h.source.wait_for_reports(2, WAIT).await;
    assert_eq!(
        reports,
        [
            claimed("t1"),
            TaskReport::Rejected {
                task_id: id("t2"),
                reason: "worker at maximum concurrency".into()
            }
        ]
    );
    assert_eq!(
        h.metrics
            .count(|s| *s == Signal::TaskRejected(RejectReason::AtCapacity)),
        1
    );
    // The slot frees when t1 ends, and the next assignment is admitted.
    h.executor.finish("t1", Ok(Exit::Succeeded));
    h.source.wait_for_reports(3, WAIT).await;
    h.events.send(assigned("t3")).await.unwrap();
    h.executor.wait_started(2).await;
    assert_eq!(h.executor.started(), ["t1", "t3"]);
}

#[tokio::test]
async fn user_cancel_reports_cancelled_and_calls_the_backend_hook_once() {
    let h = spawn_supervisor(0, GateExecutor::default());
    h.run_first("t1").await;
    h.events
        .send(ControlEvent::CancelRequested(id("t1")))
        .await
        .unwrap();
    h.events
        .send(ControlEvent::CancelRequested(id("t1")))
        .await
        .unwrap();
    let reports = h.source.wait_for_reports(2, WAIT).await;
    assert_eq!(reports, [claimed("t1"), completed("t1", true)]);
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
    assert_eq!(*h.executor.backend_cancels.lock().unwrap(), ["t1"]);
}

#[tokio::test]
async fn cancel_for_an_unknown_task_gets_no_reply() {
    let h = spawn_supervisor(0, GateExecutor::default());
    h.events
        .send(ControlEvent::CancelRequested(id("ghost")))
        .await
        .unwrap();
    h.events.send(assigned("t1")).await.unwrap();
    let reports = h.source.wait_for_reports(1, WAIT).await;
    assert_eq!(reports, [claimed("t1")]);
}

#[tokio::test]
async fn a_duplicate_assignment_of_a_running_task_is_ignored() {
    let h = spawn_supervisor(0, GateExecutor::default());
    h.events.send(assigned("t1")).await.unwrap();
    h.events.send(assigned("t1")).await.unwrap();
    h.events.send(assigned("t2")).await.unwrap();
    h.executor.wait_started(2).await;
    assert_eq!(h.executor.started(), ["t1", "t2"]);
    h.executor.finish("t1", Ok(Exit::Succeeded));
    // A new execution of the same run after the first finished is legitimate.
    h.source.wait_for_reports(3, WAIT).await;
    h.events.send(assigned("t1")).await.unwrap();
    h.executor.wait_started(3).await;
    let claims = h
        .source
        .reports()
        .into_iter()
        .filter(|r| matches!(r, TaskReport::Claimed { .. }))
        .count();
    assert_eq!(claims, 3);
}

#[tokio::test]
async fn shutdown_cancels_running_tasks_reports_graceful_shutdown_and_rejects_new_work() {
    let h = spawn_supervisor(0, GateExecutor::default());
    h.run_first("t1").await;
    h.shutdown.cancel();
    assert_eq!(h.stopped.await.unwrap(), Stopped::Shutdown);
    let reports = h.source.reports();
    assert_eq!(reports.len(), 2);
    assert!(matches!(
        &reports[1],
        TaskReport::Failed { failure_reason: FailureReason::GracefulShutdown, message, exit_code: None, .. }
            if message == INTERRUPTED_MESSAGE
    ));
    assert_eq!(*h.executor.shutdowns.lock().unwrap(), 1);
}

#[tokio::test]
async fn assignments_arriving_while_tasks_wind_down_are_rejected() {
    let h = spawn_supervisor(0, GateExecutor::ignoring_cancel());
    h.run_first("t1").await;
    h.shutdown.cancel();
    h.events.send(assigned("t2")).await.unwrap();
    let reports = h.source.wait_for_reports(2, WAIT).await;
    assert_eq!(
        reports[1],
        TaskReport::Rejected {
            task_id: id("t2"),
            reason: "worker shutting down".into()
        }
    );
    h.executor.finish("t1", Ok(Exit::Cancelled));
    h.stopped.await.unwrap();
    assert_eq!(h.executor.started(), ["t1"]);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ignores_cancellation_is_abandoned_at_the_deadline_and_reported() {
    let h = spawn_supervisor(0, GateExecutor::ignoring_cancel());
    h.run_first("t1").await;
    h.shutdown.cancel();
    h.stopped.await.unwrap();
    let reports = h.source.reports();
    assert!(matches!(
        &reports[1],
        TaskReport::Failed {
            failure_reason: FailureReason::GracefulShutdown,
            ..
        }
    ));
    assert_eq!(h.metrics.active(), 0);
}

#[tokio::test]
async fn a_preserving_backend_keeps_its_tasks_at_shutdown() {
    let h = spawn_supervisor(
        0,
        GateExecutor {
            preserve: true,
            ..GateExecutor::default()
        },
    );
    h.run_first("t1").await;
    h.shutdown.cancel();
    h.stopped.await.unwrap();
    assert_eq!(h.source.reports(), [claimed("t1")]);
    assert!(h.executor.backend_cancels.lock().unwrap().is_empty());
    assert_eq!(*h.executor.shutdowns.lock().unwrap(), 1);
}

#[tokio::test]
async fn the_loop_stops_when_the_event_stream_ends() {
    let h = spawn_supervisor(0, GateExecutor::default());
    drop(h.events);
    assert_eq!(h.stopped.await.unwrap(), Stopped::SourceEnded);
}

#[tokio::test]
async fn connection_events_become_metrics_and_readiness() {
    let source = FakeTaskSource::default();
    let metrics = RecordingMetrics::default();
    let readiness = Readiness::default();
    let ports = Ports {
        source: Arc::new(source),
        executor: Arc::new(GateExecutor::default()),
        clock: Arc::new(ManualClock::default()),
        metrics: Arc::new(metrics.clone()),
    };
    let mut supervisor = Supervisor::new(ports, settings(0), readiness.clone());
    supervisor.handle_event(ControlEvent::DialFailed);
    supervisor.handle_event(ControlEvent::Connected);
    assert!(readiness.connected());
    supervisor.handle_event(ControlEvent::Disconnected);
    assert!(!readiness.connected());
    assert_eq!(
        metrics.signals(),
        [Signal::DialFailed, Signal::Connected, Signal::Disconnected]
    );
}

fn mock_ports(executor: MockExecutor, source: FakeTaskSource, metrics: RecordingMetrics) -> Ports {
    Ports {
        source: Arc::new(source),
        executor: Arc::new(executor),
        clock: Arc::new(ManualClock::default()),
        metrics: Arc::new(metrics),
    }
}

#[tokio::test]
async fn a_backend_failure_produces_exactly_one_failed_report_and_no_retry() {
    let mut executor = MockExecutor::new();
    executor.expect_run().times(1).returning(|_, _| {
        Err(
            TaskFailure::backend(FailureReason::ImagePull, "pull access denied for x")
                .with_exit_code(0),
        )
    });
    executor
        .expect_survives_daemon_restart()
        .return_const(false);
    executor.expect_shutdown().returning(|| ());
    let source = FakeTaskSource::default();
    let metrics = RecordingMetrics::default();
    let supervisor = Supervisor::new(
        mock_ports(executor, source.clone(), metrics.clone()),
        settings(0),
        Readiness::default(),
    );
    let (tx, rx) = mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(supervisor.run(rx, shutdown.clone()));
    tx.send(assigned("t1")).await.unwrap();
    let reports = source.wait_for_reports(2, WAIT).await;
    assert_eq!(
        reports[1],
        TaskReport::Failed {
            task_id: id("t1"),
            message: "Failed to execute task: pull access denied for x".into(),
            failure_reason: FailureReason::ImagePull,
            exit_code: None,
        }
    );
    assert_eq!(
        metrics.count(|s| matches!(
            s,
            Signal::TaskFinished {
                failure: Some((FailurePhase::Backend, FailureReason::ImagePull)),
                ..
            }
        )),
        1
    );
    shutdown.cancel();
    run.await.unwrap();
    assert_eq!(source.reports().len(), 2);
}

#[tokio::test]
async fn an_executor_panic_is_reported_as_an_unknown_failure() {
    let mut executor = MockExecutor::new();
    executor
        .expect_run()
        .returning(|_, _| panic!("boom in the executor"));
    executor
        .expect_survives_daemon_restart()
        .return_const(false);
    executor.expect_shutdown().returning(|| ());
    let source = FakeTaskSource::default();
    let supervisor = Supervisor::new(
        mock_ports(executor, source.clone(), RecordingMetrics::default()),
        settings(0),
        Readiness::default(),
    );
    let (tx, rx) = mpsc::channel(4);
    let run = tokio::spawn(supervisor.run(rx, CancellationToken::new()));
    tx.send(assigned("t1")).await.unwrap();
    let reports = source.wait_for_reports(2, WAIT).await;
    assert!(matches!(
        &reports[1],
        TaskReport::Failed {
            failure_reason: FailureReason::Unknown,
            ..
        }
    ));
    drop(tx);
    run.await.unwrap();
}

#[tokio::test]
async fn a_dispatched_task_is_cancellable_until_its_retention_ends() {
    let h = spawn_supervisor(0, GateExecutor::default());
    for raw in ["d1", "d2"] {
        h.events.send(assigned(raw)).await.unwrap();
    }
    h.executor.wait_started(2).await;
    h.executor.finish("d1", Ok(Exit::Spawned));
    h.executor.finish("d2", Ok(Exit::Spawned));
    // Fresh entries still reach the backend's cancel hook.
    h.events
        .send(ControlEvent::CancelRequested(id("d1")))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while h.executor.backend_cancels.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the cancel hook ran for the fresh entry");
    // A day later the other entry is gone: its cancel is ignored.
    h.clock.advance(SPAWNED_RETENTION + Duration::from_secs(1));
    h.events.send(assigned("probe-2")).await.unwrap();
    h.events
        .send(ControlEvent::CancelRequested(id("d2")))
        .await
        .unwrap();
    h.events.send(assigned("probe-3")).await.unwrap();
    h.source.wait_for_reports(4, WAIT).await;
    // Let any (wrongly) spawned cancel hook run before checking it did not.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(*h.executor.backend_cancels.lock().unwrap(), ["d1"]);
    assert_eq!(h.metrics.finished(TaskResult::Dispatched), 2);
}

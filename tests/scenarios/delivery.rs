//! At-least-once delivery of reports across abrupt connection drops: the real `WsTaskSource`
//! and `Supervisor` with the `FakeExecutor` (a pretend backend: the scenario is about the
//! connection, and the fake's record of what started is the worker-side truth) against the
//! real local control plane on 127.0.0.1, which resets the TCP connection (RST) at the worst
//! moments. Every task the worker started must have its claim and its terminal report on the
//! server, claim first; repeats are counted by the server and printed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use oz_agent_worker::adapters::control_plane::{BackoffConfig, WsConfig, WsTaskSource};
use oz_agent_worker::adapters::fake::{FakeExecutor, Script};
use oz_agent_worker::adapters::otel::NoopMetrics;
use oz_agent_worker::adapters::system_clock::SystemClock;
use oz_agent_worker::app::supervisor::{ShutdownDeadlines, Supervisor, SupervisorSettings};
use oz_agent_worker::domain::{
    ApiKey, ConcurrencyPolicy, FailureReason, SpecSettings, TaskId, TaskReport,
};
use oz_agent_worker::ports::{Ports, Readiness, TaskSource};
use oz_local_control_plane::{LocalControlPlane, Received, sample_assignment};
use oz_protocol::WorkerMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const KEY: &str = "delivery-key";
const TASKS: usize = 300;
const RESETS: usize = 30;
const BOUND: Duration = Duration::from_secs(60);

/// What the server saw, in arrival order, duplicates excluded.
#[derive(Default)]
struct Seen {
    /// Per task: the kinds of its first-time reports, in arrival order.
    reports: BTreeMap<String, Vec<&'static str>>,
    duplicates: u64,
}

impl Seen {
    fn take(&mut self, received: Received) -> Option<WorkerMessage> {
        let message = received.message?;
        if received.duplicate {
            self.duplicates += 1;
        } else {
            self.reports
                .entry(message.task_id().to_owned())
                .or_default()
                .push(message.kind());
        }
        Some(message)
    }

    fn complete(&self, task: &str) -> bool {
        self.reports.get(task).is_some_and(|kinds| {
            kinds.first() == Some(&"task_claimed")
                && kinds
                    .iter()
                    .any(|k| *k == "task_completed" || *k == "task_failed")
        })
    }
}

fn task_name(n: usize) -> String {
    format!("dlv-{n:03}")
}

/// Waits for the next worker message and records it; panics after the bound.
async fn next(cp: &LocalControlPlane, seen: &mut Seen) -> WorkerMessage {
    loop {
        let received = cp.next_message(BOUND).await.expect("a worker message");
        if let Some(message) = seen.take(received) {
            return message;
        }
    }
}

/// Resets the open connection and waits until the worker is connected again.
async fn reset_and_reconnect(cp: &LocalControlPlane) {
    let before = cp.connections().len();
    cp.reset_all_connections();
    cp.wait_connections(BOUND, |conns| {
        conns.len() > before && conns.last().is_some_and(|c| c.open)
    })
    .await
    .expect("the worker reconnects after a reset");
}

fn filler(n: usize) -> TaskReport {
    TaskReport::Failed {
        task_id: TaskId::parse(format!("filler-{n}")).unwrap(),
        message: "x".repeat(1024 * 1024),
        failure_reason: FailureReason::Unknown,
        exit_code: Some(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_tasks_and_thirty_resets_at_the_worst_moments_lose_no_report() {
    let cp = LocalControlPlane::start("127.0.0.1:0".parse().unwrap(), KEY)
        .await
        .unwrap();
    let mut config = WsConfig::new(cp.ws_url(), "delivery-worker", ApiKey::new(KEY));
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        factor: 2.0,
        jitter: 0.0,
        healthy_after: Duration::from_millis(1),
    };
    let source = Arc::new(WsTaskSource::new(config).unwrap());
    let executor = FakeExecutor::new();
    for n in 0..TASKS {
        let task = TaskId::parse(task_name(n)).unwrap();
        let millis = fastrand::u64(0..30);
        executor.script(&task, Script::succeeds_after(Duration::from_millis(millis)));
    }
    let ports = Ports {
        source: source.clone(),
        executor: Arc::new(executor.clone()),
        clock: Arc::new(SystemClock),
        metrics: Arc::new(NoopMetrics),
    };
    let settings = SupervisorSettings {
        worker_id: "delivery-worker".into(),
        policy: ConcurrencyPolicy::from_configured(0),
        spec: SpecSettings::default(),
        deadlines: ShutdownDeadlines::default(),
    };
    let supervisor = Supervisor::new(ports, settings, Readiness::default());
    let (events, receiver) = mpsc::channel(1024);
    let stop = CancellationToken::new();
    let source_task = tokio::spawn({
        let source: Arc<dyn TaskSource> = source.clone();
        let stop = stop.clone();
        async move { source.run(events, stop).await }
    });
    let supervisor_task = tokio::spawn({
        let stop = stop.clone();
        async move { supervisor.run(receiver, stop).await }
    });
    cp.wait_connections(BOUND, |c| c.iter().any(|c| c.open))
        .await
        .expect("connected");

    let template = sample_assignment("t");
    let assign = |n: usize| {
        let mut data = template.clone();
        let task = task_name(n);
        data["task_id"] = task.clone().into();
        data["task"]["id"] = task.into();
        cp.assign(&data).expect("a worker is connected");
    };
    let mut seen = Seen::default();
    let batch = TASKS / RESETS;
    let mut fillers = 0;
    for round in 0..RESETS {
        let tasks: Vec<usize> = (round * batch..(round + 1) * batch).collect();
        match round % 3 {
            // Right after a claim: the first claim of the batch arrived, the others are on
            // their way.
            0 => {
                tasks.iter().for_each(|&n| assign(n));
                while !matches!(next(&cp, &mut seen).await, WorkerMessage::TaskClaimed { task_id, .. }
                    if tasks.iter().any(|&n| task_name(n) == task_id))
                {}
            }
            // Right after a terminal report of the batch.
            1 => {
                tasks.iter().for_each(|&n| assign(n));
                while !matches!(next(&cp, &mut seen).await,
                    WorkerMessage::TaskCompleted { task_id, .. } | WorkerMessage::TaskFailed { task_id, .. }
                    if tasks.iter().any(|&n| task_name(n) == task_id))
                {}
            }
            // With full socket buffers: the server stops reading, the batch runs to the end
            // (its reports written into socket buffers the server never reads), then 8 MiB of
            // reports fill the buffers behind them and the connection is reset.
            _ => {
                // The fillers of an earlier round are written first, so no blocked write keeps
                // the worker from reading the batch.
                assert!(source.flush(BOUND).await, "the outbox drains");
                cp.set_answer_pings(false);
                tasks.iter().for_each(|&n| assign(n));
                let names: BTreeSet<String> = tasks.iter().map(|&n| task_name(n)).collect();
                let finished = executor.wait_until(|fake| {
                    let done: BTreeSet<String> = fake
                        .outcomes()
                        .into_iter()
                        .map(|(task, _)| task.as_str().to_owned())
                        .collect();
                    names.is_subset(&done)
                });
                if tokio::time::timeout(BOUND, finished).await.is_err() {
                    panic!(
                        "round {round}: the batch did not finish: started {:?}, outcomes {}",
                        executor
                            .started()
                            .iter()
                            .filter(|t| names.contains(t.as_str()))
                            .count(),
                        executor.outcomes().len()
                    );
                }
                for _ in 0..8 {
                    source.report(filler(fillers)).unwrap();
                    fillers += 1;
                }
            }
        }
        reset_and_reconnect(&cp).await;
        cp.set_answer_pings(true);
    }

    // An assignment a reset swallowed before the worker read it never started: the server
    // re-queues such a run; here it simply does not count. Every task that started counts.
    let started: BTreeSet<String> = executor
        .started()
        .into_iter()
        .map(|task| task.as_str().to_owned())
        .collect();
    assert!(started.len() > TASKS / 2, "{} tasks started", started.len());
    let drained = tokio::time::timeout(BOUND, async {
        while !started.iter().all(|task| seen.complete(task)) {
            next(&cp, &mut seen).await;
        }
    })
    .await;
    let lost: Vec<&String> = started.iter().filter(|t| !seen.complete(t)).collect();
    let ledger = cp.task_reports();
    println!(
        "delivery: {} tasks, {RESETS} resets, {} connections, lost {}, duplicates {} \
         (server count {})",
        started.len(),
        cp.connections().len(),
        lost.len(),
        seen.duplicates,
        cp.duplicate_reports()
    );
    let most = ledger.values().map(|r| r.duplicates).max().unwrap_or(0);
    println!("delivery: at most {most} duplicates of one task's reports");
    assert!(
        drained.is_ok() && lost.is_empty(),
        "lost reports of {lost:?}"
    );
    for task in &started {
        let reports = &ledger[task];
        assert!(reports.claimed && reports.terminal, "{task}: {reports:?}");
    }
    assert_eq!(seen.duplicates, cp.duplicate_reports());
    assert!(cp.connections().len() > RESETS);

    stop.cancel();
    let _ = source_task.await;
    let _ = supervisor_task.await;
}

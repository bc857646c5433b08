//! Shared bench helpers: medians, millisecond formatting, and the real daemon in-process
//! (`WsTaskSource` + `Supervisor` + any executor) connected to a `LocalControlPlane` on
//! 127.0.0.1. Include with `mod common;` from a bench.
//!
//! Not every bench uses every helper, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oz_agent_worker::adapters::control_plane::{WsConfig, WsTaskSource};
use oz_agent_worker::adapters::otel::NoopMetrics;
use oz_agent_worker::adapters::system_clock::SystemClock;
use oz_agent_worker::app::supervisor::{ShutdownDeadlines, Supervisor, SupervisorSettings};
use oz_agent_worker::domain::ApiKey;
use oz_agent_worker::domain::ConcurrencyPolicy;
use oz_agent_worker::domain::spec::SpecSettings;
use oz_agent_worker::domain::{Exit, TaskFailure, TaskSpec};
use oz_agent_worker::ports::executor::Executor;
use oz_agent_worker::ports::{Ports, Readiness, TaskSource};
use oz_local_control_plane::LocalControlPlane;
use oz_protocol::WorkerMessage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The API key the bench control plane expects.
pub(crate) const KEY: &str = "bench-key";

/// The median of `samples` (sorted first; the upper one of the middle two for an even count).
///
/// # Panics
/// When `samples` is empty.
pub(crate) fn median<T: Ord + Copy>(mut samples: Vec<T>) -> T {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// `d` as milliseconds with one decimal, e.g. `12.3 ms`.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `part / whole`.
pub(crate) fn ratio(part: Duration, whole: Duration) -> f64 {
    part.as_secs_f64() / whole.as_secs_f64()
}

/// The real daemon in this process: `WsTaskSource` + `Supervisor` + the given executor,
/// connected to its own `LocalControlPlane` on 127.0.0.1.
pub(crate) struct Daemon {
    /// The control plane the daemon is connected to.
    pub cp: LocalControlPlane,
    stop: CancellationToken,
    supervisor: JoinHandle<()>,
    source: JoinHandle<()>,
}

impl Daemon {
    /// Starts the daemon as `worker_id` on `executor` and waits until it is connected.
    ///
    /// # Panics
    /// When the control plane cannot start or the daemon does not connect within 30 s.
    pub(crate) async fn start(
        worker_id: &str,
        executor: Arc<dyn Executor>,
        spec: SpecSettings,
    ) -> Self {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cp = LocalControlPlane::start(addr, KEY)
            .await
            .expect("control plane");
        let source = Arc::new(
            WsTaskSource::new(WsConfig::new(cp.ws_url(), worker_id, ApiKey::new(KEY)))
                .expect("url"),
        );
        let ports = Ports {
            source: source.clone(),
            executor,
            clock: Arc::new(SystemClock),
            metrics: Arc::new(NoopMetrics),
        };
        let settings = SupervisorSettings {
            worker_id: worker_id.to_owned(),
            policy: ConcurrencyPolicy::from_configured(0),
            spec,
            deadlines: ShutdownDeadlines::default(),
        };
        let supervisor = Supervisor::new(ports, settings, Readiness::default());
        let (events, receiver) = mpsc::channel(1024);
        let stop = CancellationToken::new();
        let source = {
            let stop = stop.clone();
            let source: Arc<dyn TaskSource> = source;
            tokio::spawn(async move {
                let _ = source.run(events, stop).await;
            })
        };
        let supervisor = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = supervisor.run(receiver, stop).await;
            })
        };
        cp.wait_connections(Duration::from_secs(30), |c| c.iter().any(|c| c.open))
            .await
            .expect("the daemon connects");
        Self {
            cp,
            stop,
            supervisor,
            source,
        }
    }

    /// Sends the assignment `data` and returns when it was sent.
    ///
    /// # Panics
    /// When the control plane cannot send it.
    pub(crate) fn assign(&self, data: &serde_json::Value) -> Instant {
        let sent = Instant::now();
        if let Err(e) = self.cp.assign(data) {
            panic!("assign: {e:?}; connections {:?}", self.cp.connections());
        }
        sent
    }

    /// Waits for `task_completed` of `task_id` and returns when it arrived.
    ///
    /// # Panics
    /// On `task_failed` for the task, or when no message comes within 60 s.
    pub(crate) async fn completed(&self, task_id: &str) -> Instant {
        loop {
            let received = self
                .cp
                .next_message(Duration::from_secs(60))
                .await
                .expect("a message from the daemon within 60 s");
            match &received.message {
                Some(WorkerMessage::TaskCompleted { task_id: id, .. }) if id == task_id => {
                    return Instant::now();
                }
                Some(WorkerMessage::TaskFailed { task_id: id, .. }) if id == task_id => {
                    panic!("daemon task {task_id} failed: {received:?}")
                }
                _ => {}
            }
        }
    }

    /// Stops the daemon gracefully (bounded by 30 s per part).
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.supervisor).await;
        let _ = tokio::time::timeout(Duration::from_secs(30), self.source).await;
    }
}

/// Succeeds at once, except tasks whose id starts with `hold-`, which run until cancelled.
pub(crate) struct NoopExecutor;

#[async_trait]
impl Executor for NoopExecutor {
    async fn run(&self, spec: &TaskSpec, cancel: CancellationToken) -> Result<Exit, TaskFailure> {
        if spec.task_id.as_str().starts_with("hold-") {
            cancel.cancelled().await;
            return Ok(Exit::Cancelled);
        }
        Ok(Exit::Succeeded)
    }
}

/// A bench's child process: the daemon's real control-plane adapter and supervisor with a
/// [`NoopExecutor`], connected to `url`, until the supervisor stops.
pub(crate) async fn run_noop_daemon(url: String) {
    let source = Arc::new(
        WsTaskSource::new(WsConfig::new(url, "bench-worker", ApiKey::new(KEY))).expect("url"),
    );
    let ports = Ports {
        source: source.clone(),
        executor: Arc::new(NoopExecutor),
        clock: Arc::new(SystemClock),
        metrics: Arc::new(NoopMetrics),
    };
    let settings = SupervisorSettings {
        worker_id: "bench-worker".into(),
        policy: ConcurrencyPolicy::from_configured(0),
        spec: SpecSettings::default(),
        deadlines: ShutdownDeadlines::default(),
    };
    let supervisor = Supervisor::new(ports, settings, Readiness::default());
    let (events, receiver) = mpsc::channel(1024);
    let token = CancellationToken::new();
    let source_task = {
        let token = token.clone();
        let source: Arc<dyn TaskSource> = source;
        tokio::spawn(async move { source.run(events, token).await })
    };
    supervisor.run(receiver, CancellationToken::new()).await;
    token.cancel();
    let _ = source_task.await;
}

//! Wiring: turns a validated [`Config`] into adapters and the [`Supervisor`], and runs them.
//! This is the only place that names every adapter.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::adapters::command::CommandExecutor;
use crate::adapters::control_plane::{WsConfig, WsTaskSource};
use crate::adapters::docker::DockerExecutor;
use crate::adapters::host::{HostEnv, HostExecutor};
use crate::adapters::kubernetes::KubernetesExecutor;
use crate::adapters::otel::{HealthServer, ServiceInfo, WorkerMetrics};
use crate::adapters::state::Instances;
use crate::adapters::system_clock::SystemClock;
use crate::app::config::{Backend, Config};
use crate::app::restart;
use crate::app::supervisor::{
    OrphanScan, ShutdownDeadlines, Stopped, Supervisor, SupervisorSettings,
};
use crate::domain::argv::ArgvSettings;
use crate::domain::{ConcurrencyPolicy, SpecSettings};
use crate::ports::{ControlEvent, Executor, Metrics, Ports, Readiness, Signal, TaskSource};

/// The crate version, reported in metrics and the User-Agent.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Bound on the control-plane source's own shutdown (its close frame is bounded at 10 s).
const SOURCE_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Capacity of the control-plane event channel.
const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// A wired worker, ready to run.
pub struct App {
    supervisor: Supervisor,
    source: Arc<dyn TaskSource>,
    metrics: WorkerMetrics,
    readiness: Readiness,
    health: Option<HealthServer>,
    /// Held for the process's life: its lock tells other instances this one is alive.
    _instances: Option<Instances>,
}

/// Builds the worker: metrics, the backend (its construction is the preflight), the
/// control-plane source and the supervisor. `env` is the snapshot of the process environment
/// that `main.rs` took: read here for the standard `OTEL_*` variables, and handed whole to the
/// Direct backend (what setup and teardown inherit).
///
/// # Errors
/// A failed backend preflight, an unusable WebSocket URL, or a health listener that cannot bind.
pub async fn build(config: &Config, env: &HostEnv) -> anyhow::Result<App> {
    let lookup = |name: &str| env.var(name);
    info!(
        version = VERSION,
        worker_id = %config.worker_id,
        backend = config.backend.name(),
        max_concurrent_tasks = config.max_concurrent_tasks,
        "Starting oz-agent-worker"
    );
    let readiness = Readiness::default();
    let service = ServiceInfo {
        version: VERSION.to_owned(),
        backend: config.backend.name().to_owned(),
        worker_id: config.worker_id.clone(),
    };
    let metrics = WorkerMetrics::init(
        &lookup,
        service,
        config.max_concurrent_tasks,
        readiness.clone(),
    );
    let health = match config.health_listen {
        Some(addr) => {
            let server = HealthServer::bind(addr, readiness.clone())
                .with_context(|| format!("cannot serve /healthz and /readyz on {addr}"))?;
            info!("Serving /healthz and /readyz on {}", server.local_addr());
            Some(server)
        }
        None => None,
    };

    let instances = open_state(config)?;
    let mut backend = config.backend.clone();
    match &mut backend {
        Backend::Docker(docker) => docker.instances.clone_from(&instances),
        Backend::Direct(direct) => direct.instances.clone_from(&instances),
        Backend::Kubernetes(_) | Backend::Command(_) => {}
    }
    info!("Preparing the {} backend", config.backend.name());
    let executor = build_executor(&backend, env)
        .await
        .context("Failed to create worker")?;
    readiness.set_backend_ready(true);

    let ws = WsConfig::new(
        config.web_socket_url.clone(),
        config.worker_id.clone(),
        config.api_key.clone(),
    );
    let ws = Arc::new(WsTaskSource::new(ws).context("invalid --web-socket-url")?);
    let workspace_root = match &backend {
        Backend::Direct(direct) if direct.target_dir.is_none() => {
            Some(direct.workspace_root.clone())
        }
        _ => None,
    };
    if let Some(instances) = &instances {
        ws.on_delivery(restart::journal_delivery(instances.clone()));
    }
    // Tasks dead instances of this worker id left: followed when the backend can adopt them,
    // else ended and reported from their journal. Again every scan interval while running.
    let recovery = Arc::new(restart::Recovery::new(
        executor.clone(),
        instances.clone(),
        ws.clone(),
        workspace_root,
        config.cleanup,
        config.orphan_scan_interval,
    ));
    let orphans = recovery.scan().await;
    let source: Arc<dyn TaskSource> = match &instances {
        Some(instances) => Arc::new(restart::JournalingSource::new(ws, instances.clone())),
        None => ws,
    };

    let settings = SupervisorSettings {
        worker_id: config.worker_id.clone(),
        policy: ConcurrencyPolicy::from_configured(config.max_concurrent_tasks),
        spec: spec_settings(config),
        deadlines: ShutdownDeadlines {
            drain: config.drain_timeout,
            ..ShutdownDeadlines::default()
        },
    };
    let ports = Ports {
        source: source.clone(),
        executor,
        clock: Arc::new(SystemClock),
        metrics: Arc::new(metrics.clone()),
    };
    let mut supervisor =
        Supervisor::new(ports, settings, readiness.clone()).with_orphan_scan(recovery);
    supervisor.adopt(orphans);
    Ok(App {
        supervisor,
        source,
        metrics,
        readiness,
        health,
        _instances: instances,
    })
}

/// Opens the state directory and registers this instance, for the backends whose tasks die
/// with the worker process (Docker, Direct). Kubernetes and Command tasks outlive it and keep
/// no local state.
fn open_state(config: &Config) -> anyhow::Result<Option<Instances>> {
    if !matches!(config.backend, Backend::Docker(_) | Backend::Direct(_)) {
        return Ok(None);
    }
    let instances = Instances::open(&config.state_dir, &config.worker_id)
        .context("cannot use the state directory (set state_dir or --state-dir)")?;
    info!(
        instance_id = instances.instance_id(),
        state_dir = %config.state_dir.display(),
        "Registered this worker instance"
    );
    Ok(Some(instances))
}

async fn build_executor(backend: &Backend, env: &HostEnv) -> anyhow::Result<Arc<dyn Executor>> {
    Ok(match backend {
        Backend::Docker(config) => Arc::new(DockerExecutor::connect(config.clone()).await?),
        Backend::Kubernetes(config) => Arc::new(KubernetesExecutor::connect(config).await?),
        Backend::Direct(config) => Arc::new(HostExecutor::with_host_env(config, env.clone())?),
        Backend::Command(config) => Arc::new(CommandExecutor::from_config(config)?),
    })
}

/// The settings that shape every task spec, from the worker config.
pub fn spec_settings(config: &Config) -> SpecSettings {
    let argv = ArgvSettings {
        server_root_url: config.server_root_url.clone(),
        idle_on_complete: config.idle_on_complete.clone(),
        session_sharing_server_url: config.session_sharing_server_url.clone(),
    };
    match &config.backend {
        Backend::Kubernetes(kube) => SpecSettings {
            argv,
            default_image: kube.default_image.clone(),
            sidecar_image_override: kube.sidecar_image.clone(),
            coding_cli_sidecars: kube.coding_cli_sidecars.clone(),
        },
        _ => SpecSettings {
            argv,
            ..SpecSettings::default()
        },
    }
}

impl App {
    /// Runs until `shutdown` fires (then shuts down in order: tasks, reports, backend,
    /// connection, metrics) or the control-plane source fails.
    ///
    /// # Errors
    /// When the control-plane source stopped on its own (e.g. a fatal error).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (events, receiver) = mpsc::channel::<ControlEvent>(EVENT_CHANNEL_CAPACITY);
        let source_token = CancellationToken::new();
        let source_task = {
            let source = self.source.clone();
            let token = source_token.clone();
            #[allow(
                clippy::disallowed_methods,
                reason = "the app owns the connection task: awaited below, aborted on timeout"
            )]
            tokio::spawn(async move { source.run(events, token).await })
        };
        let stopped = self.supervisor.run(receiver, shutdown).await;
        // The connection must outlive the supervisor (its shutdown sequence flushes reports
        // through it), so the source stops only now, with no one left to read its events.
        source_token.cancel();
        let mut source_task = source_task;
        let source_result = tokio::time::timeout(SOURCE_STOP_TIMEOUT, &mut source_task).await;
        if source_result.is_err() {
            warn!("The control-plane connection did not close within {SOURCE_STOP_TIMEOUT:?}");
            source_task.abort();
        }
        record_connection_end(&self.readiness, &self.metrics);
        self.metrics.shutdown().await;
        if let Some(health) = &self.health {
            health.stop().await;
        }
        info!("Worker shutdown complete");
        match (stopped, source_result) {
            (Stopped::Shutdown, _) => Ok(()),
            (Stopped::SourceEnded, Ok(Ok(Err(err)))) => {
                Err(err).context("control-plane connection failed")
            }
            (Stopped::SourceEnded, _) => {
                error!("control-plane connection ended unexpectedly");
                anyhow::bail!("control-plane connection ended unexpectedly")
            }
        }
    }
}

/// Records the end of the connection the supervisor last saw open, once the source has
/// stopped: the source's own `Disconnected` for it (sent on cancel, or lost in the channel
/// during the shutdown sequence) has no reader any more. `readiness.connected()` is true
/// exactly while a `Connected` signal has no matching `Disconnected`, so this keeps
/// `oz_worker_connected` at 0 and counts `reconnects_total{reason=remote_close}` +1 for a
/// local shutdown (as the Go worker counts it, see docs/metrics.md), before the final flush.
fn record_connection_end(readiness: &Readiness, metrics: &dyn Metrics) {
    if readiness.connected() {
        readiness.set_connected(false);
        metrics.record(Signal::Disconnected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::fake::RecordingMetrics;

    #[test]
    fn an_open_connection_ends_once_and_a_closed_one_not_again() {
        let readiness = Readiness::default();
        let metrics = RecordingMetrics::default();
        record_connection_end(&readiness, &metrics);
        assert!(metrics.signals().is_empty());

        readiness.set_connected(true);
        record_connection_end(&readiness, &metrics);
        record_connection_end(&readiness, &metrics);
        assert_eq!(metrics.signals(), [Signal::Disconnected]);
        assert!(!readiness.connected());
    }
}

//! [`DockerExecutor`]: the start-up preflight and the per-task flow (image, sidecars, container,
//! wait, exit code, OOM, output tail, stop on cancel, clean-up), mapping every Docker error to
//! the protocol's failure reason at this boundary.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::WaitContainerOptionsBuilder;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Halt;
use super::config::DockerConfig;
use super::container::{self, Redactor};
use super::credentials;
use super::image::{self, Platform, PullRequest, server_message};
use super::labels::{self, Owner, Role};
use super::reference::ImageRef;
use super::sidecar::{self, SidecarCache};
use crate::adapters::state::{Instances, Liveness};
use crate::domain::env::EnvList;
use crate::domain::spec::TaskSpec;
use crate::domain::{Exit, FailureReason, TaskFailure, TaskId};
use crate::ports::executor::{Executor, Orphan};

/// The engine endpoint when `DOCKER_HOST` is unset.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// The engine endpoint from the environment lookup `env`: `DOCKER_HOST` when set and not
/// empty, else [`DEFAULT_DOCKER_HOST`].
pub fn docker_host(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("DOCKER_HOST")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
}

/// The Docker client config directory from the environment lookup `env`: `DOCKER_CONFIG` when
/// set and not empty, else `$HOME/.docker`, else `None` (pull anonymously).
pub fn client_config_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    credentials::default_config_dir(env("DOCKER_CONFIG"), env("HOME"))
}

/// How long the start-up ping may take.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the Docker backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine did not answer (socket missing, refused, timed out, bad `DOCKER_HOST`).
    #[error("failed to reach Docker daemon at {endpoint}: {message}")]
    Unreachable {
        /// The endpoint tried, e.g. `unix:///var/run/docker.sock`.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The engine runs on a platform the worker does not support.
    #[error("unsupported Docker platform {0} (only linux/amd64 and linux/arm64 are supported)")]
    UnsupportedPlatform(String),
    /// Listing the containers of a crashed predecessor failed.
    #[error("failed to look for containers left by a previous worker: {0}")]
    Sweep(String),
}

/// Runs each task in its own container on a Docker Engine.
#[derive(Debug)]
pub struct DockerExecutor {
    docker: Docker,
    config: DockerConfig,
    platform: Platform,
    client_config_dir: Option<PathBuf>,
    sidecars: SidecarCache,
    /// Dead instances' task containers found by the start-up sweep, until the first
    /// [`Executor::adopt_orphans`] takes them (later calls sweep again).
    adoptable: std::sync::Mutex<Option<Vec<labels::AdoptableContainer>>>,
}

/// The orphan sweep of `config.worker_id`'s containers (see [`labels::sweep_orphans`]).
async fn sweep(
    docker: &Docker,
    config: &DockerConfig,
) -> Result<labels::SweepReport, BollardError> {
    if let Some(instances) = &config.instances {
        // Claim every dead instance first: a task container carries the label of the
        // instance that started it, while its journal entry may have moved on to a later
        // instance that adopted it and died too.
        instances.claim_dead();
    }
    let owners = StateOwnership(config.instances.as_ref());
    labels::sweep_orphans(
        docker,
        &config.worker_id,
        &owners,
        config.cleanup,
        config.stop_grace,
    )
    .await
}

/// What the start-up sweep learns from the state directory (`None`: the worker runs without
/// one, and only unlabelled containers count as a dead instance's).
struct StateOwnership<'a>(Option<&'a Instances>);

impl labels::Ownership for StateOwnership<'_> {
    fn is_dead(&self, instance_id: &str) -> bool {
        match self.0 {
            Some(instances) => instances.liveness(instance_id) == Liveness::Dead,
            None => instance_id.is_empty(),
        }
    }

    fn adopted_by_live(&self, task_id: &str) -> bool {
        self.0
            .is_some_and(|instances| instances.journaled_by_live(task_id))
    }

    fn adoptable(&self, task_id: &str) -> bool {
        self.0
            .and_then(|instances| instances.dead_entry(task_id))
            .is_some_and(|entry| entry.claim_sent && entry.terminal.is_none())
    }
}

impl DockerExecutor {
    /// Connects to the engine at `config.docker_host` with the registry credentials of
    /// `config.client_config_dir` (both read from the standard Docker environment by the app,
    /// see [`docker_host`] and [`client_config_dir`]), then runs the preflight and the orphan
    /// sweep of [`DockerExecutor::connect_to`].
    ///
    /// # Errors
    /// [`DockerError`], whose text names the endpoint when the engine is unreachable.
    pub async fn connect(config: DockerConfig) -> Result<Self, DockerError> {
        let host = config.docker_host.clone();
        let client_config_dir = config.client_config_dir.clone();
        Self::connect_to(&host, config, client_config_dir).await
    }

    /// Connects to the engine at `host` (`unix://…`, `tcp://…`, `http://…`), pings it within
    /// 5 s, negotiates the API version (the engine may be older than bollard's default), checks
    /// that it runs `linux/amd64` or `linux/arm64`, and removes what a crashed worker with the
    /// same worker id left behind (see [`labels::sweep_orphans`]). `client_config_dir` holds the
    /// Docker client `config.json` used for registry credentials (`None`: pull anonymously).
    ///
    /// # Errors
    /// [`DockerError`].
    pub async fn connect_to(
        host: &str,
        config: DockerConfig,
        client_config_dir: Option<PathBuf>,
    ) -> Result<Self, DockerError> {
        let unreachable = |message: String| DockerError::Unreachable {
            endpoint: host.to_owned(),
            message,
        };
        let docker = Docker::connect_with_host(host).map_err(|e| unreachable(e.to_string()))?;
        match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {PING_TIMEOUT:?}"))),
        }
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(format!("cannot negotiate the API version: {e}")))?;
        let version = docker
            .version()
            .await
            .map_err(|e| unreachable(format!("cannot read the engine version: {e}")))?;
        let platform = Platform {
            os: version.os.unwrap_or_default(),
            arch: version.arch.unwrap_or_default(),
        };
        if !platform.is_supported() {
            return Err(DockerError::UnsupportedPlatform(platform.to_string()));
        }
        tracing::info!(
            endpoint = %host,
            api_version = %docker.client_version(),
            %platform,
            "Connected to the Docker Engine."
        );
        let sweep = sweep(&docker, &config)
            .await
            .map_err(|e| DockerError::Sweep(server_message(&e)))?;
        if !sweep.removed.is_empty() || !sweep.stopped.is_empty() {
            tracing::info!(
                removed = sweep.removed.len(),
                stopped = sweep.stopped.len(),
                "Cleaned up after a previous worker process."
            );
        }
        if !sweep.live.is_empty() {
            tracing::info!(
                containers = sweep.live.len(),
                "Left alone the containers of other live workers with this worker id."
            );
        }
        Ok(Self {
            docker,
            config,
            platform,
            client_config_dir,
            sidecars: SidecarCache::default(),
            adoptable: std::sync::Mutex::new(Some(sweep.adoptable)),
        })
    }

    /// The engine's platform, e.g. `linux/amd64`.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The negotiated bollard client (shared; for diagnostics, tests and benches).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn run_task(
        &self,
        spec: &TaskSpec,
        cancel: &CancellationToken,
        redactor: &Redactor,
    ) -> Result<Exit, Halt> {
        let owner = Owner {
            worker_id: self.config.worker_id.clone(),
            instance_id: self
                .config
                .instances
                .as_ref()
                .map_or_else(String::new, |i| i.instance_id().to_owned()),
            task_id: spec.task_id.as_str().to_owned(),
            execution_id: spec.execution_id.clone(),
        };
        let image = ImageRef::parse(&spec.image)
            .map_err(|e| TaskFailure::backend(FailureReason::InvalidImage, e.to_string()))?;
        sidecar::validate(&spec.sidecars)?;
        let pull = PullRequest {
            image: &image,
            policy: self.config.pull_policy,
            credentials: self.credentials(&image).await,
            reason: FailureReason::ImagePull,
        };
        let (pulled, binds) = tokio::join!(
            image::ensure(&self.docker, &self.platform, pull, cancel),
            self.prepare_sidecars(spec, &owner, cancel),
        );
        pulled?;
        let mut binds = binds?;
        binds.extend(self.config.volumes.iter().cloned());
        if cancel.is_cancelled() {
            return Err(Halt::Cancelled);
        }
        let body = container::create_body(
            spec,
            &self.config,
            &image.local_name(),
            binds,
            owner.labels(Role::Task),
        );
        let id = self
            .docker
            .create_container(None, body)
            .await
            .map_err(|e| {
                fail(
                    FailureReason::ContainerCreate,
                    format!("failed to create container: {}", server_message(&e)),
                )
            })?
            .id;
        tracing::debug!(container = %id, "Created the task container.");
        let outcome = self.start_and_wait(&id, cancel, redactor).await;
        if self.config.cleanup {
            container::remove(&self.docker, &id).await;
        } else {
            tracing::info!(container = %id, "Keeping the task container (cleanup is off).");
        }
        outcome
    }

    async fn start_and_wait(
        &self,
        id: &str,
        cancel: &CancellationToken,
        redactor: &Redactor,
    ) -> Result<Exit, Halt> {
        if cancel.is_cancelled() {
            return Err(Halt::Cancelled);
        }
        self.docker.start_container(id, None).await.map_err(|e| {
            fail(
                FailureReason::ContainerStart,
                format!("failed to start container: {}", server_message(&e)),
            )
        })?;
        self.wait(id, cancel, redactor).await
    }

    /// Waits for a started container to stop (or stops it on `cancel`) and maps its exit.
    async fn wait(
        &self,
        id: &str,
        cancel: &CancellationToken,
        redactor: &Redactor,
    ) -> Result<Exit, Halt> {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(id, Some(options));
        let waited = tokio::select! {
            () = cancel.cancelled() => {
                tracing::info!(container = %id, grace = ?self.config.stop_grace, "Stopping the task container (cancelled).");
                if let Err(e) = container::stop(&self.docker, id, self.config.stop_grace).await {
                    tracing::warn!(container = %id, error = %e, "Could not stop the task container.");
                }
                return Err(Halt::Cancelled);
            }
            waited = wait.next() => waited,
        };
        let code = match waited {
            Some(Ok(response)) => response.status_code,
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => {
                return Err(fail(
                    FailureReason::ContainerWait,
                    format!("error waiting for container: {}", server_message(&e)),
                ));
            }
            None => {
                return Err(fail(
                    FailureReason::ContainerWait,
                    "error waiting for container: the engine ended the wait without a status"
                        .to_owned(),
                ));
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            self.log_output(id, redactor).await;
        }
        if code == 0 {
            return Ok(Exit::Succeeded);
        }
        Err(Halt::Failed(self.exit_failure(id, code).await))
    }

    async fn exit_failure(&self, id: &str, code: i64) -> TaskFailure {
        let oom = container::oom_killed(&self.docker, id).await;
        let (reason, mut message) = if oom {
            (
                FailureReason::ContainerOom,
                format!("container exited with non-zero status: {code} (killed: out of memory)"),
            )
        } else {
            (
                FailureReason::ContainerExit,
                format!("container exited with non-zero status: {code}"),
            )
        };
        match container::output(&self.docker, id, container::TAIL_LINES).await {
            Ok(output) => {
                let tail = container::tail(&output, container::TAIL_LINES, container::TAIL_CHARS);
                if !tail.is_empty() {
                    message.push_str("; last output:\n");
                    message.push_str(&tail);
                }
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "Could not read the container's output.")
            }
        }
        let code = i32::try_from(code).unwrap_or(i32::MAX);
        TaskFailure::backend(reason, message).with_exit_code(code)
    }

    async fn log_output(&self, id: &str, redactor: &Redactor) {
        match container::output(&self.docker, id, usize::MAX).await {
            Ok(output) => {
                for line in output.lines() {
                    tracing::debug!(container = %id, line = %redactor.redact(line), "Container output.");
                }
            }
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "Could not read the container's output.")
            }
        }
    }

    async fn prepare_sidecars(
        &self,
        spec: &TaskSpec,
        owner: &Owner,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, Halt> {
        let mut binds = Vec::with_capacity(spec.sidecars.len());
        for mount in &spec.sidecars {
            let image = ImageRef::parse(&mount.image)
                .map_err(|e| fail(FailureReason::InvalidImage, format!("sidecar: {e}")))?;
            // Sidecar images are public: pulled without registry credentials.
            let pull = PullRequest {
                image: &image,
                policy: self.config.pull_policy,
                credentials: None,
                reason: FailureReason::SidecarPrep,
            };
            let inspect = image::ensure(&self.docker, &self.platform, pull, cancel).await?;
            let (Some(digest), Some(image_id)) = (image::content_digest(&inspect), inspect.id)
            else {
                return Err(fail(
                    FailureReason::SidecarPrep,
                    format!("sidecar image {image} has no id"),
                ));
            };
            let volume = sidecar::volume_name(&image.familiar_repository(), &digest);
            self.sidecars
                .prepare(&self.docker, &volume, &image_id, owner)
                .await?;
            binds.push(sidecar::bind(&volume, &mount.mount_path, mount.read_write));
        }
        Ok(binds)
    }

    async fn credentials(&self, image: &ImageRef) -> Option<bollard::auth::DockerCredentials> {
        let dir = self.client_config_dir.as_deref()?;
        match credentials::load(dir, image.registry_key()).await {
            Ok(creds) => creds,
            Err(e) => {
                tracing::warn!(registry = %image.domain, error = %e, "Could not load registry credentials; pulling anonymously.");
                None
            }
        }
    }
}

fn fail(reason: FailureReason, message: String) -> Halt {
    Halt::Failed(TaskFailure::backend(reason, message))
}

#[async_trait]
impl Executor for DockerExecutor {
    async fn run(&self, spec: &TaskSpec, cancel: CancellationToken) -> Result<Exit, TaskFailure> {
        let redactor = Redactor::for_env(&container::container_env(spec, &self.config));
        let span = tracing::info_span!(
            "docker_task",
            task_id = %spec.task_id,
            execution_id = %spec.execution_id
        );
        match self
            .run_task(spec, &cancel, &redactor)
            .instrument(span)
            .await
        {
            Ok(exit) => Ok(exit),
            Err(Halt::Cancelled) => Ok(Exit::Cancelled),
            Err(Halt::Failed(mut failure)) => {
                failure.message = redactor.redact(&failure.message);
                Err(failure)
            }
        }
    }

    fn survives_daemon_restart(&self) -> bool {
        false
    }

    async fn adopt_orphans(&self) -> Vec<Orphan> {
        let stashed = self
            .adoptable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let found = match stashed {
            Some(found) => found,
            None => match sweep(&self.docker, &self.config).await {
                Ok(report) => {
                    if !report.removed.is_empty() {
                        tracing::info!(
                            removed = report.removed.len(),
                            "Cleaned up after a worker process with this worker id that died."
                        );
                    }
                    report.adoptable
                }
                Err(e) => {
                    tracing::warn!(error = %server_message(&e), "Could not look for containers of dead worker processes; trying again later.");
                    Vec::new()
                }
            },
        };
        found
            .into_iter()
            .filter_map(|container| {
                let task_id = TaskId::parse(container.task_id).ok()?;
                Some(Orphan {
                    task_id,
                    execution_id: container.execution_id,
                    handle: container.id,
                })
            })
            .collect()
    }

    /// Follows a dead instance's task container: waits for it (it may have exited already),
    /// maps its exit as [`Executor::run`] does, stops it on `cancel`, and removes it (unless
    /// cleanup is off).
    async fn follow(
        &self,
        orphan: &Orphan,
        cancel: CancellationToken,
    ) -> Result<Exit, TaskFailure> {
        let id = orphan.handle.as_str();
        let span = tracing::info_span!(
            "docker_task",
            task_id = %orphan.task_id,
            execution_id = %orphan.execution_id,
            container = %id
        );
        let redactor = match self.docker.inspect_container(id, None).await {
            Ok(inspect) => {
                let mut env = EnvList::new();
                for pair in inspect.config.and_then(|c| c.env).unwrap_or_default() {
                    if let Some((key, value)) = pair.split_once('=') {
                        env.push(key, value);
                    }
                }
                Redactor::for_env(&env)
            }
            Err(_) => Redactor::for_env(&EnvList::new()),
        };
        let outcome = self.wait(id, &cancel, &redactor).instrument(span).await;
        if self.config.cleanup {
            container::remove(&self.docker, id).await;
        }
        match outcome {
            Ok(exit) => Ok(exit),
            Err(Halt::Cancelled) => Ok(Exit::Cancelled),
            Err(Halt::Failed(mut failure)) => {
                failure.message = redactor.redact(&failure.message);
                Err(failure)
            }
        }
    }

    async fn shutdown(&self) {
        tracing::debug!("Docker backend shut down.");
    }
}

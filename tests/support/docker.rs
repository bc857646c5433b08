//! Helpers for tests against the real Docker Engine: the images and registries
//! `scripts/setup/20-docker.sh` provides, task specs for the stand-in agent, per-test worker ids,
//! engine event watches and label-based clean-up.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody, ContainerSummary, EventMessage};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};
use futures_util::StreamExt;
use oz_agent_worker::adapters::docker;
use oz_agent_worker::adapters::docker::labels::{LABEL_ROLE, LABEL_WORKER_ID, Role, worker_filter};
use oz_agent_worker::adapters::docker::{
    DEFAULT_DOCKER_HOST, DockerConfig, DockerExecutor, PullPolicy,
};
use oz_agent_worker::domain::spec::{SpecSettings, TaskSpec, prepare};
use oz_agent_worker::domain::task::{Assignment, TaskId};
use oz_agent_worker::ports::executor::Executor;
use tokio::sync::{Mutex, MutexGuard, OnceCell, mpsc};
use tokio::task::JoinHandle;

/// The images and registry the setup script provides.
#[derive(Debug, Clone)]
pub(crate) struct Images {
    /// A local busybox task image.
    pub image: String,
    /// A local sidecar image with the stand-in `/entrypoint.sh`.
    pub sidecar: String,
    /// The task image in the local registry.
    pub registry_image: String,
    /// The sidecar image in the local registry.
    pub registry_sidecar: String,
    /// An image only in the registry (not local).
    pub registry_only: String,
    /// `127.0.0.1:5000`.
    pub registry: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn probe() -> Option<Images> {
    let images = Images {
        image: var("OZ_TEST_DOCKER_IMAGE")?,
        sidecar: var("OZ_TEST_DOCKER_SIDECAR")?,
        registry_image: var("OZ_TEST_REGISTRY_IMAGE")?,
        registry_sidecar: var("OZ_TEST_REGISTRY_SIDECAR")?,
        registry_only: var("OZ_TEST_REGISTRY_ONLY")?,
        registry: var("OZ_TEST_REGISTRY")?,
    };
    let docker = client().await?;
    for image in [&images.image, &images.sidecar] {
        docker.inspect_image(image).await.ok()?;
    }
    Some(images)
}

/// A negotiated client from the standard environment, if the engine answers.
pub(crate) async fn client() -> Option<Docker> {
    let docker = Docker::connect_with_defaults().ok()?;
    tokio::time::timeout(Duration::from_secs(5), docker.ping())
        .await
        .ok()?
        .ok()?;
    docker.negotiate_version().await.ok()
}

static WARM: OnceCell<bool> = OnceCell::const_new();

/// The images, when the engine and the test images are there (else the test is skipped, or
/// fails under `OZ_TEST_REQUIRE_ALL=1`). The shared sidecar volume is prepared once first, so
/// parallel tests (each with its own executor) never race to fill it.
pub(crate) async fn setup() -> Option<Images> {
    let images = probe().await;
    if !super::require(
        "docker engine + test images (scripts/setup/20-docker.sh)",
        images.is_some(),
    ) {
        return None;
    }
    let images = images?;
    let warm = WARM
        .get_or_init(|| async {
            let worker = worker_id("warm-up");
            let executor = executor(config(&worker)).await;
            let spec = spec("warm-up", &images.image, &images.sidecar, &[]);
            executor.run(&spec, Default::default()).await.is_ok()
        })
        .await;
    assert!(*warm, "the warm-up task failed");
    Some(images)
}

/// A worker id unique to one test run.
pub(crate) fn worker_id(test: &str) -> String {
    format!("oz-test-{test}-{:08x}", fastrand::u32(..))
}

/// A config for tests: `if-not-present` (the local images are not in any registry), a short
/// stop grace, and the engine and client config directory of the standard Docker environment
/// (`DOCKER_HOST`, `DOCKER_CONFIG`, `HOME`), as the app derives them.
pub(crate) fn config(worker_id: &str) -> DockerConfig {
    DockerConfig {
        worker_id: worker_id.to_owned(),
        pull_policy: PullPolicy::IfNotPresent,
        stop_grace: Duration::from_secs(2),
        docker_host: docker::docker_host(&var),
        client_config_dir: docker::client_config_dir(&var),
        ..DockerConfig::default()
    }
}

/// Runs `spec` to the end with a token that never fires.
pub(crate) async fn run(
    executor: &DockerExecutor,
    spec: &TaskSpec,
) -> Result<oz_agent_worker::domain::Exit, oz_agent_worker::domain::TaskFailure> {
    executor
        .run(spec, tokio_util::sync::CancellationToken::new())
        .await
}

/// Connects an executor from the standard environment.
pub(crate) async fn executor(config: DockerConfig) -> DockerExecutor {
    DockerExecutor::connect(config)
        .await
        .expect("connect to the Docker engine")
}

/// Connects an executor to the engine of `DOCKER_HOST` (or the default socket) that reads
/// registry credentials from `client_config_dir/config.json`, as with `DOCKER_CONFIG` (which a
/// test must not set: tests share the process environment).
pub(crate) async fn executor_with_client_config(
    config: DockerConfig,
    client_config_dir: &Path,
) -> DockerExecutor {
    let host = var("DOCKER_HOST").unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned());
    DockerExecutor::connect_to(&host, config, Some(client_config_dir.to_path_buf()))
        .await
        .expect("connect to the Docker engine")
}

/// The htpasswd-protected registry of the setup script and its one image.
#[derive(Debug, Clone)]
pub(crate) struct AuthRegistry {
    /// `127.0.0.1:5001`.
    pub registry: String,
    /// Its user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// An image only in that registry (not local).
    pub image: String,
}

/// The registry that needs credentials, when the setup script started it (else the test is
/// skipped, or fails under `OZ_TEST_REQUIRE_ALL=1`).
pub(crate) fn auth_registry() -> Option<AuthRegistry> {
    let found = (|| {
        Some(AuthRegistry {
            registry: var("OZ_TEST_AUTH_REGISTRY")?,
            user: var("OZ_TEST_AUTH_USER")?,
            password: var("OZ_TEST_AUTH_PASSWORD")?,
            image: var("OZ_TEST_AUTH_IMAGE")?,
        })
    })();
    if !super::require(
        "htpasswd docker-registry (OZ_TEST_AUTH_*, scripts/setup/20-docker.sh)",
        found.is_some(),
    ) {
        return None;
    }
    found
}

static REGISTRY_ONLY: Mutex<()> = Mutex::const_new(());

/// Held by each test that removes and pulls [`Images::registry_only`], so that one test's
/// removal never races another's pull.
pub(crate) async fn registry_only_lock() -> MutexGuard<'static, ()> {
    REGISTRY_ONLY.lock().await
}

/// Engine events, collected from a subscription made before the action under test.
pub(crate) struct Events {
    received: mpsc::UnboundedReceiver<EventMessage>,
    seen: Vec<EventMessage>,
    subscription: JoinHandle<()>,
}

/// Events of the task containers (role `task`) of `worker_id`, from now on.
pub(crate) fn task_container_events(docker: &Docker, worker_id: &str) -> Events {
    events(
        docker,
        HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![
                    format!("{LABEL_WORKER_ID}={worker_id}"),
                    format!("{LABEL_ROLE}={}", Role::Task.as_str()),
                ],
            ),
        ]),
    )
}

/// Image events (pull, tag, untag, …) of every image, from now on.
pub(crate) fn image_events(docker: &Docker) -> Events {
    events(
        docker,
        HashMap::from([("type".to_owned(), vec!["image".to_owned()])]),
    )
}

/// Events matching `filters` from now on (`since` now, so the engine also replays any that
/// happen before the subscription is in place).
fn events(docker: &Docker, filters: HashMap<String, Vec<String>>) -> Events {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let since = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    let options = EventsOptionsBuilder::default()
        .since(&since)
        .filters(&filters)
        .build();
    let mut stream = docker.events(Some(options));
    let (sender, received) = mpsc::unbounded_channel();
    let subscription = tokio::spawn(async move {
        while let Some(Ok(event)) = stream.next().await {
            if sender.send(event).is_err() {
                break;
            }
        }
    });
    Events {
        received,
        seen: Vec::new(),
        subscription,
    }
}

impl Events {
    /// Every event so far, up to and including the first one (after those already returned)
    /// for which `last` holds; panics when none comes within `limit`.
    pub(crate) async fn until(
        &mut self,
        limit: Duration,
        mut last: impl FnMut(&EventMessage) -> bool,
    ) -> &[EventMessage] {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.received.recv()).await {
                Ok(Some(event)) => {
                    let done = last(&event);
                    self.seen.push(event);
                    if done {
                        return &self.seen;
                    }
                }
                Ok(None) => panic!("the event stream ended; seen: {:?}", summary(&self.seen)),
                Err(_) => panic!(
                    "no awaited event within {limit:?}; seen: {:?}",
                    summary(&self.seen)
                ),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.subscription.abort();
    }
}

/// An event's action (`kill`, `die`, `pull`, …).
pub(crate) fn action(event: &EventMessage) -> &str {
    event.action.as_deref().unwrap_or_default()
}

/// An attribute of an event's actor (`signal`, `exitCode`, `name`, …).
pub(crate) fn attribute<'a>(event: &'a EventMessage, key: &str) -> Option<&'a str> {
    event
        .actor
        .as_ref()?
        .attributes
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The id of an event's actor (a container id, or an image name or id).
pub(crate) fn actor_id(event: &EventMessage) -> &str {
    event
        .actor
        .as_ref()
        .and_then(|a| a.id.as_deref())
        .unwrap_or_default()
}

fn summary(events: &[EventMessage]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let signal = attribute(e, "signal").unwrap_or("-");
            let exit = attribute(e, "exitCode").unwrap_or("-");
            format!("{} {} signal={signal} exit={exit}", action(e), actor_id(e))
        })
        .collect()
}

/// A task spec running the stand-in agent from `sidecar` in `image`, with `env` as the server's
/// `env_vars`.
pub(crate) fn spec(task: &str, image: &str, sidecar: &str, env: &[(&str, &str)]) -> TaskSpec {
    let mut assignment = Assignment::new(
        TaskId::parse(format!("{task}-{:06x}", fastrand::u32(..0xffffff))).unwrap(),
    );
    assignment.execution_id = format!("exec-{:06x}", fastrand::u32(..0xffffff));
    assignment.docker_image = Some(image.to_owned());
    assignment.sidecar_image = Some(sidecar.to_owned());
    for (key, value) in env {
        assignment
            .env_vars
            .insert((*key).to_owned(), (*value).to_owned());
    }
    prepare(&assignment, &SpecSettings::default())
}

/// Every container labelled with `worker_id`.
pub(crate) async fn containers(docker: &Docker, worker_id: &str) -> Vec<ContainerSummary> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&worker_filter(worker_id))
        .build();
    docker.list_containers(Some(options)).await.unwrap()
}

/// Polls until a check holds or the bound passes (the shared helper, under the name these tests
/// use).
pub(crate) use crate::support::poll_until as eventually;

/// Removes every container and volume labelled with `worker_id`.
pub(crate) async fn clean(docker: &Docker, worker_id: &str) {
    for c in containers(docker, worker_id).await {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = docker
            .remove_container(&c.id.unwrap_or_default(), Some(options))
            .await;
    }
    let options = ListVolumesOptionsBuilder::default()
        .filters(&worker_filter(worker_id))
        .build();
    if let Ok(list) = docker.list_volumes(Some(options)).await {
        for v in list.volumes.unwrap_or_default() {
            let options = RemoveVolumeOptionsBuilder::default().force(true).build();
            let _ = docker.remove_volume(&v.name, Some(options)).await;
        }
    }
}

/// A sidecar image with a content address of its own (a commit of `base` with a unique label),
/// so its volume is new. Returns the image name; remove it with [`remove_image`].
pub(crate) async fn unique_sidecar(docker: &Docker, base: &str) -> String {
    let tag = format!("{:08x}", fastrand::u32(..));
    let body = ContainerCreateBody {
        image: Some(base.to_owned()),
        cmd: Some(vec!["true".to_owned()]),
        ..Default::default()
    };
    let id = docker.create_container(None, body).await.unwrap().id;
    let options = CommitContainerOptionsBuilder::default()
        .container(&id)
        .repo("oz-test/sidecar-unique")
        .tag(&tag)
        .build();
    let config = ContainerConfig {
        cmd: Some(vec!["/bin/sh".to_owned()]),
        labels: Some(HashMap::from([("oz-test.unique".to_owned(), tag.clone())])),
        ..Default::default()
    };
    docker.commit_container(options, config).await.unwrap();
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    docker.remove_container(&id, Some(options)).await.unwrap();
    format!("oz-test/sidecar-unique:{tag}")
}

/// Removes an image (and the volumes made from it must be gone first).
pub(crate) async fn remove_image(docker: &Docker, image: &str) {
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    let _ = docker.remove_image(image, Some(options), None).await;
}

/// The label key naming the worker (re-exported for assertions).
pub(crate) const WORKER_LABEL: &str = LABEL_WORKER_ID;

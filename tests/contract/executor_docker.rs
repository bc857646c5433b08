//! The executor contract against the Docker backend (`DockerExecutor`) on the real engine, with
//! the busybox task image and the stand-in sidecar of `scripts/setup/20-docker.sh`.
//!
//! The stand-in records the env var names it saw (`OZ_STANDIN_ENV_FILE`) in a host temp dir
//! bind-mounted at [`ENV_DIR`], so they outlive the container.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveVolumeOptions,
};
use oz_agent_worker::adapters::docker::DockerExecutor;
use oz_agent_worker::adapters::docker::labels::{
    LABEL_ROLE, LABEL_TASK_ID, LABEL_WORKER_ID, Role, worker_filter,
};
use oz_agent_worker::domain::spec::{SpecSettings, prepare};
use oz_agent_worker::domain::{Assignment, Exit, FailureReason, TaskFailure, TaskId, TaskSpec};
use oz_agent_worker::ports::Executor;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::executor::{Harness, Workload, executor_contract};
use crate::support::docker as d;

/// Where the harness's host temp dir is mounted in every task container.
pub(crate) const ENV_DIR: &str = "/contract";
/// How long a task container may take to reach `running`.
const RUNNING_BOUND: Duration = Duration::from_secs(30);

/// A shared `DockerExecutor` (the suite clones its executor into spawned runs).
#[derive(Debug, Clone)]
pub(crate) struct SharedDocker(Arc<DockerExecutor>);

#[async_trait]
impl Executor for SharedDocker {
    async fn run(&self, spec: &TaskSpec, cancel: CancellationToken) -> Result<Exit, TaskFailure> {
        self.0.run(spec, cancel).await
    }

    fn survives_daemon_restart(&self) -> bool {
        self.0.survives_daemon_restart()
    }

    async fn shutdown(&self) {
        self.0.shutdown().await;
    }
}

/// A `DockerExecutor` with a worker id of its own, the test images, and a host dir for the
/// stand-in's env-name files. Dropping it removes every container and non-shared volume
/// labelled with its worker id.
pub(crate) struct DockerHarness {
    executor: SharedDocker,
    images: d::Images,
    worker_id: String,
    env_dir: TempDir,
}

impl DockerHarness {
    /// The harness, or `None` (after `support::require`) when the engine or images are missing.
    pub(crate) async fn new() -> Option<Self> {
        let images = d::setup().await?;
        let worker_id = d::worker_id("contract");
        let env_dir = TempDir::new().expect("temp dir");
        let mut config = d::config(&worker_id);
        config
            .volumes
            .push(format!("{}:{ENV_DIR}", env_dir.path().display()));
        let executor = SharedDocker(Arc::new(d::executor(config).await));
        Some(Self {
            executor,
            images,
            worker_id,
            env_dir,
        })
    }

    fn docker(&self) -> &Docker {
        self.executor.0.client()
    }

    /// Label filters for this worker and task `id` (plus `extra` filters).
    fn filters(&self, id: &str, extra: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
        let mut filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_WORKER_ID}={}", self.worker_id),
                format!("{LABEL_TASK_ID}={id}"),
            ],
        )]);
        for (key, value) in extra {
            filters
                .entry((*key).to_owned())
                .or_default()
                .push((*value).to_owned());
        }
        filters
    }
}

impl Drop for DockerHarness {
    fn drop(&mut self) {
        // The test's runtime may be gone or busy: clean up on a runtime of our own.
        let worker_id = self.worker_id.clone();
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Some(docker) = d::client().await {
                    clean(&docker, &worker_id).await;
                }
            });
        });
        let _ = cleaner.join();
    }
}

/// Removes every container, and every volume but the shared sidecar cache, labelled with
/// `worker_id` (the shared cache may be in use by other tests).
async fn clean(docker: &Docker, worker_id: &str) {
    for c in d::containers(docker, worker_id).await {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        let _ = docker
            .remove_container(&c.id.unwrap_or_default(), Some(options))
            .await;
    }
    for (name, _) in volumes(docker, &worker_filter(worker_id)).await {
        let _ = docker
            .remove_volume(&name, None::<RemoveVolumeOptions>)
            .await;
    }
}

/// Volumes matching `filters`, except shared sidecar volumes: (name, role).
async fn volumes(docker: &Docker, filters: &HashMap<String, Vec<String>>) -> Vec<(String, String)> {
    let options = ListVolumesOptionsBuilder::default()
        .filters(filters)
        .build();
    let list = docker
        .list_volumes(Some(options))
        .await
        .expect("list volumes");
    list.volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let role = v.labels.get(LABEL_ROLE).cloned().unwrap_or_default();
            (v.name, role)
        })
        .filter(|(_, role)| role != Role::SidecarVolume.as_str())
        .collect()
}

impl Harness for DockerHarness {
    type Exec = SharedDocker;

    fn executor(&self) -> &SharedDocker {
        &self.executor
    }

    fn spec(&self, id: &str, workload: Workload, env: &[(&str, &str)]) -> TaskSpec {
        let mut assignment = Assignment::new(TaskId::parse(id).expect("non-empty id"));
        assignment.execution_id = format!("{id}-exec");
        assignment.docker_image = Some(self.images.image.clone());
        assignment.sidecar_image = Some(self.images.sidecar.clone());
        let mut spec = prepare(&assignment, &SpecSettings::default());
        for (key, value) in env {
            spec.env.push(*key, *value);
        }
        spec.env
            .push("OZ_STANDIN_ENV_FILE", format!("{ENV_DIR}/{id}.env"));
        match workload {
            Workload::Succeeds => {}
            Workload::ExitsWith(code) => spec.env.push("OZ_STANDIN_EXIT", code.to_string()),
            Workload::Hangs => spec.env.push("OZ_STANDIN_SLEEP", "3600"),
        }
        spec
    }

    async fn wait_running(&self, id: &str) {
        let options = ListContainersOptionsBuilder::default()
            .filters(&self.filters(id, &[("status", "running")]))
            .build();
        let docker = self.docker();
        let running = d::eventually(RUNNING_BOUND, || {
            let options = options.clone();
            async move {
                let list = docker.list_containers(Some(options)).await;
                list.is_ok_and(|l| !l.is_empty())
            }
        })
        .await;
        assert!(
            running,
            "no running container for {id} within {RUNNING_BOUND:?}"
        );
    }

    fn seen_env_names(&self, id: &str) -> Vec<String> {
        let file = self.env_dir.path().join(format!("{id}.env"));
        std::fs::read_to_string(file)
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    async fn leftovers(&self, id: &str) -> Vec<String> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.filters(id, &[]))
            .build();
        let containers = self
            .docker()
            .list_containers(Some(options))
            .await
            .expect("list containers");
        let mut left: Vec<String> = containers
            .into_iter()
            .map(|c| {
                format!(
                    "container {} ({:?}) still exists",
                    c.id.unwrap_or_default(),
                    c.state
                )
            })
            .collect();
        for (name, role) in volumes(self.docker(), &self.filters(id, &[])).await {
            left.push(format!("volume {name} (role {role}) still exists"));
        }
        left
    }

    fn exit_reason(&self) -> FailureReason {
        FailureReason::ContainerExit
    }

    fn bad_spec(&self) -> (TaskSpec, FailureReason) {
        let mut spec = self.spec("contract-bad", Workload::Succeeds, &[]);
        spec.image = "Not A Valid/Image::ref".to_owned();
        (spec, FailureReason::InvalidImage)
    }
}

executor_contract!(docker, super::DockerHarness::new().await);

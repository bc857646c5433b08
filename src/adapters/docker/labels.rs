//! Labels on everything the worker creates (containers and volumes), and the start-up sweep that
//! finds what a dead instance with the same worker id left behind.
//!
//! The labels name the worker id, the instance id (one per worker process), the task id and the
//! execution id. Several live workers may share one worker id and one engine: the sweep touches
//! only containers whose instance is dead (see [`crate::adapters::state`]), never those of this
//! process or of another live one.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};

/// Present (value `true`) on everything this worker creates.
pub const LABEL_MANAGED: &str = "dev.warp.oz-agent-worker";
/// The worker id.
pub const LABEL_WORKER_ID: &str = "dev.warp.oz-agent-worker.worker-id";
/// The worker process (instance) that created the object; empty on objects made by versions
/// without instance ids.
pub const LABEL_INSTANCE_ID: &str = "dev.warp.oz-agent-worker.instance-id";
/// The run (`task_id`).
pub const LABEL_TASK_ID: &str = "dev.warp.oz-agent-worker.task-id";
/// The execution id (may be empty).
pub const LABEL_EXECUTION_ID: &str = "dev.warp.oz-agent-worker.execution-id";
/// What the object is for: see [`Role`].
pub const LABEL_ROLE: &str = "dev.warp.oz-agent-worker.role";

/// What a labelled object is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The container running a task.
    Task,
    /// A short-lived container used to copy a sidecar image into its volume.
    SidecarHelper,
    /// A content-addressed sidecar volume (a shared cache; the labels name the task that
    /// created it).
    SidecarVolume,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::SidecarHelper => "sidecar-helper",
            Self::SidecarVolume => "sidecar-volume",
        }
    }
}

/// Who created an object: the label values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The worker id.
    pub worker_id: String,
    /// The instance (worker process) id; empty when the worker runs without a state directory.
    pub instance_id: String,
    /// The run.
    pub task_id: String,
    /// The execution (may be empty).
    pub execution_id: String,
}

impl Owner {
    /// The labels for an object with `role`.
    pub fn labels(&self, role: Role) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_WORKER_ID.to_owned(), self.worker_id.clone()),
            (LABEL_INSTANCE_ID.to_owned(), self.instance_id.clone()),
            (LABEL_TASK_ID.to_owned(), self.task_id.clone()),
            (LABEL_EXECUTION_ID.to_owned(), self.execution_id.clone()),
            (LABEL_ROLE.to_owned(), role.as_str().to_owned()),
        ])
    }
}

/// A label filter (`label=KEY=VALUE`) for list calls.
pub fn worker_filter(worker_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_WORKER_ID}={worker_id}")],
    )])
}

/// What the start-up sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Containers removed.
    pub removed: Vec<String>,
    /// Task containers stopped but kept (`--no-cleanup`).
    pub stopped: Vec<String>,
    /// Containers left alone because their instance is alive (this one or another process),
    /// or because a live instance adopted their task.
    pub live: Vec<String>,
    /// Task containers of dead instances whose task is still owed a report: kept, for this
    /// process to follow to their end (running or already exited).
    pub adoptable: Vec<AdoptableContainer>,
}

/// A dead instance's task container that is to be followed instead of removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptableContainer {
    /// The container id.
    pub id: String,
    /// Its task id label.
    pub task_id: String,
    /// Its execution id label.
    pub execution_id: String,
}

/// What the sweep needs to know about a container's owner, from the state directory.
pub trait Ownership: Send + Sync {
    /// Whether the instance `instance_id` (empty: a version without instance ids) is dead.
    /// Must claim a dead instance, so no other process acts on it meanwhile.
    fn is_dead(&self, instance_id: &str) -> bool;
    /// Whether a live instance has taken over `task_id` (its journal lists it): its container
    /// carries the label of the dead instance that started it, and must be left alone.
    fn adopted_by_live(&self, task_id: &str) -> bool;
    /// Whether `task_id`, of a dead instance, is owed a report that following its container
    /// would give (claimed, no terminal report journaled).
    fn adoptable(&self, task_id: &str) -> bool;
}

/// Removes the containers dead worker processes with `worker_id` left behind: every helper
/// container, and every task container (only stopped, and kept, when `cleanup` is false, so
/// `--no-cleanup` still leaves them for inspection). Sidecar volumes are a shared cache and stay.
///
/// `owners` decides from a container's instance label (empty for containers of versions
/// without instance ids) and its task id; containers of live instances are listed in
/// [`SweepReport::live`] and never touched; task containers of dead instances whose task is
/// owed a report are listed in [`SweepReport::adoptable`] and kept.
///
/// # Errors
/// The list call's error; failures on single containers are logged and skipped.
pub async fn sweep_orphans(
    docker: &Docker,
    worker_id: &str,
    owners: &dyn Ownership,
    cleanup: bool,
    stop_grace: Duration,
) -> Result<SweepReport, bollard::errors::Error> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&worker_filter(worker_id))
        .build();
    let mut report = SweepReport::default();
    for container in docker.list_containers(Some(options)).await? {
        let Some(id) = container.id else { continue };
        let labels = container.labels.unwrap_or_default();
        let role = labels.get(LABEL_ROLE).map(String::as_str);
        let task_id = labels.get(LABEL_TASK_ID).cloned().unwrap_or_default();
        let instance = labels.get(LABEL_INSTANCE_ID).map_or("", String::as_str);
        if !owners.is_dead(instance) || owners.adopted_by_live(&task_id) {
            report.live.push(id);
            continue;
        }
        if role == Some(Role::Task.as_str()) && owners.adoptable(&task_id) {
            report.adoptable.push(AdoptableContainer {
                id,
                execution_id: labels.get(LABEL_EXECUTION_ID).cloned().unwrap_or_default(),
                task_id,
            });
            continue;
        }
        let running = matches!(container.state, Some(ContainerSummaryStateEnum::RUNNING));
        if role == Some(Role::Task.as_str()) && !cleanup {
            if running {
                let stopped = super::container::stop(docker, &id, stop_grace).await;
                match stopped {
                    Ok(()) => report.stopped.push(id.clone()),
                    Err(e) => {
                        tracing::warn!(container = %id, %task_id, error = %e, "Could not stop an orphaned task container.")
                    }
                }
            }
            continue;
        }
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => {
                tracing::info!(container = %id, %task_id, role = role.unwrap_or(""), "Removed a container left by a previous worker process.");
                report.removed.push(id);
            }
            Err(e) => {
                tracing::warn!(container = %id, %task_id, error = %e, "Could not remove an orphaned container.");
            }
        }
    }
    Ok(report)
}

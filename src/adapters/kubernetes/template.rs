//! The operator's `pod_template` (a raw PodSpec) and how the worker's task container is merged
//! into it (docs/kubernetes.md describes the merge): pure functions on k8s-openapi types.

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, ResourceRequirements};

/// The name of the main container; a template container with this name is customised.
pub(super) const TASK_CONTAINER: &str = "task";

/// Parses `pod_template` into a PodSpec (unknown fields are ignored, as the reference does).
///
/// # Errors
/// A message naming `pod_template` and what did not fit the PodSpec schema.
pub(super) fn parse_pod_template(raw: Option<&serde_json::Value>) -> Result<PodSpec, String> {
    match raw {
        None | Some(serde_json::Value::Null) => Ok(PodSpec::default()),
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
            format!("backend.kubernetes.pod_template is not a valid Kubernetes PodSpec: {e}")
        }),
    }
}

/// Puts the worker's `task` container into `pod`: overlaid onto the template's container named
/// `task` when there is one, else appended after the template's containers.
///
/// Overlay: image, command, args and workingDir are replaced; imagePullPolicy only when the
/// template has none; volumeMounts are the template's then the worker's; env keeps the
/// template's order with the worker's entries overriding by name and new names appended;
/// lifecycle is replaced only when the worker sets one (a teardown is configured); resources
/// are merged per resource name; every other field of the template's container is kept.
pub(super) fn merge_task_container(pod: &mut PodSpec, worker: Container) {
    match pod.containers.iter_mut().find(|c| c.name == TASK_CONTAINER) {
        Some(existing) => overlay(existing, worker),
        None => pod.containers.push(worker),
    }
}

fn overlay(base: &mut Container, worker: Container) {
    base.image = worker.image;
    base.command = worker.command;
    base.args = worker.args;
    base.working_dir = worker.working_dir;
    if base.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        base.image_pull_policy = worker.image_pull_policy;
    }
    if let Some(mounts) = worker.volume_mounts {
        base.volume_mounts
            .get_or_insert_with(Vec::new)
            .extend(mounts);
    }
    if let Some(env) = worker.env {
        base.env = Some(merge_env(base.env.take().unwrap_or_default(), env));
    }
    if worker.lifecycle.is_some() {
        base.lifecycle = worker.lifecycle;
    }
    if let Some(resources) = worker.resources {
        base.resources = Some(merge_resources(base.resources.take(), resources));
    }
}

/// `base` in order, each entry replaced by the overriding entry of the same name; new names
/// appended in `overrides` order.
pub(super) fn merge_env(mut base: Vec<EnvVar>, overrides: Vec<EnvVar>) -> Vec<EnvVar> {
    for var in overrides {
        match base.iter_mut().find(|b| b.name == var.name) {
            Some(slot) => *slot = var,
            None => base.push(var),
        }
    }
    base
}

/// Requests and limits merged per resource name, `overrides` winning.
pub(super) fn merge_resources(
    base: Option<ResourceRequirements>,
    overrides: ResourceRequirements,
) -> ResourceRequirements {
    let mut merged = base.unwrap_or_default();
    if let Some(requests) = overrides.requests {
        merged
            .requests
            .get_or_insert_with(Default::default)
            .extend(requests);
    }
    if let Some(limits) = overrides.limits {
        merged
            .limits
            .get_or_insert_with(Default::default)
            .extend(limits);
    }
    merged
}

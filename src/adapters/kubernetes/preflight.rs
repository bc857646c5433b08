//! The start-up preflight (the Go worker's checks): API server reachable, RBAC permissions present (one
//! SelfSubjectAccessReview per rule of docs/kubernetes-rbac.yaml), and a preflight Job proving
//! that admission accepts the task pods' shape (a root init container, or image volumes).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, Event, ImageVolumeSource, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};

use super::client::{CountingClient, KubeError, api_code, api_message};
use super::config::KubernetesConfig;
use super::failure::{JobState, PodCheck, inspect_pod, inspect_pod_events, job_state};
use super::job::{root, sh};
use super::names::short_hash;

/// Every permission the worker needs in its namespace: (API group, resource, verbs). Kept in
/// step with docs/kubernetes-rbac.yaml, whose `secrets: create` rule is [`TASK_SECRETS`].
pub(super) const REQUIRED_PERMISSIONS: [(&str, &str, &[&str]); 5] = [
    (
        "batch",
        "jobs",
        &["create", "get", "list", "watch", "delete", "patch"],
    ),
    ("", "pods", &["get", "list", "watch"]),
    ("", "pods/log", &["get"]),
    ("", "events", &["list"]),
    // One Lease per worker process says it is alive (see `lease`).
    (
        "coordination.k8s.io",
        "leases",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
];

/// The permission for a per-task Secret: wanted, not required. Without it (the Go worker's
/// chart does not grant it) the task env values go into the Job spec, as the Go worker does.
pub(super) const TASK_SECRETS: (&str, &str, &str) = ("", "secrets", "create");

/// Where the task env values go, as the preflight found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskEnvStore {
    /// A per-task Secret owned by the Job; the Job spec references it.
    Secret,
    /// The values themselves, in the Job spec (no `secrets: create` permission).
    JobSpec,
}

const POLL: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(15);

/// Runs every preflight step in order; returns where task env values may be stored.
///
/// # Errors
/// [`KubeError::Unreachable`], [`KubeError::Rbac`], [`KubeError::MissingNamespace`] or
/// [`KubeError::Preflight`], each with the server's own words.
pub(super) async fn preflight(
    client: &CountingClient,
    config: &KubernetesConfig,
    template: &PodSpec,
) -> Result<TaskEnvStore, KubeError> {
    client
        .client
        .apiserver_version()
        .await
        .map_err(|e| KubeError::Unreachable {
            server: client.server.clone(),
            message: e.to_string(),
        })?;
    let store = check_permissions(client, &config.namespace).await?;
    #[allow(
        clippy::disallowed_methods,
        reason = "the wall clock only makes the probe Job's name unique, it times nothing"
    )]
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("oz-preflight-{}-{nanos}", short_hash(&config.worker_id));
    let job = preflight_job(config, template, &name)?;
    let jobs: Api<Job> = Api::namespaced(client.client.clone(), &config.namespace);
    let created = match jobs.create(&PostParams::default(), &job).await {
        Ok(created) => created,
        Err(e) if api_code(&e) == Some(404) => {
            return Err(KubeError::MissingNamespace(config.namespace.clone()));
        }
        Err(e) => {
            return Err(wrap(
                config,
                format!("could not create the preflight Job: {}", api_message(&e)),
            ));
        }
    };
    let outcome = tokio::time::timeout(TIMEOUT, wait_preflight(client, config, &created)).await;
    let deleted = jobs
        .delete(
            &name,
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            },
        )
        .await;
    if let Err(e) = deleted
        && api_code(&e) != Some(404)
    {
        tracing::warn!(job = %name, error = %api_message(&e), "Could not delete the preflight Job.");
    }
    match outcome {
        Ok(Ok(())) => Ok(store),
        Ok(Err(message)) => Err(wrap(config, message)),
        Err(_) if config.use_image_volumes => Err(wrap(
            config,
            format!(
                "timed out waiting for startup preflight Job {name:?} to complete or surface a failure"
            ),
        )),
        Err(_) => Err(wrap(
            config,
            format!(
                "timed out waiting for startup preflight Job {name:?} to create a Pod or surface a controller failure"
            ),
        )),
    }
}

/// The preflight Job: the template's pod-level fields with one `main` container (and, in copy
/// mode, one root init container) sized by `preflight_resources`.
///
/// # Errors
/// [`KubeError::Config`] when `preflight_resources` is not a ResourceRequirements.
pub(super) fn preflight_job(
    config: &KubernetesConfig,
    template: &PodSpec,
    name: &str,
) -> Result<Job, KubeError> {
    let resources = preflight_resources(config.preflight_resources.as_ref())?;
    let pull = config.image_pull_policy.as_str().to_owned();
    let mut pod = template.clone();
    pod.restart_policy = Some("Never".to_owned());
    let mut main = Container {
        name: "main".to_owned(),
        image: Some(config.preflight_image.clone()),
        image_pull_policy: Some(pull.clone()),
        command: Some(sh("true")),
        resources: Some(resources.clone()),
        ..Container::default()
    };
    if config.use_image_volumes {
        pod.init_containers = None;
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: "preflight-image".to_owned(),
            image: Some(ImageVolumeSource {
                reference: Some(config.preflight_image.clone()),
                pull_policy: Some(pull),
            }),
            ..Volume::default()
        });
        main.command = Some(sh("test -d /preflight-image"));
        main.volume_mounts = Some(vec![VolumeMount {
            name: "preflight-image".to_owned(),
            mount_path: "/preflight-image".to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]);
    } else {
        pod.init_containers = Some(vec![Container {
            name: "root-init-preflight".to_owned(),
            image: Some(config.preflight_image.clone()),
            image_pull_policy: Some(pull),
            command: Some(sh("true")),
            security_context: Some(root()),
            resources: Some(resources),
            ..Container::default()
        }]);
    }
    pod.containers = vec![main];
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(config.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// `preflight_resources` verbatim, else requests 10m/16Mi and limits 100m/64Mi.
///
/// # Errors
/// [`KubeError::Config`] naming the field.
pub(super) fn preflight_resources(
    raw: Option<&serde_json::Value>,
) -> Result<ResourceRequirements, KubeError> {
    if let Some(raw) = raw {
        return serde_json::from_value(raw.clone()).map_err(|e| {
            KubeError::Config(format!(
                "backend.kubernetes.preflight_resources is not a valid ResourceRequirements: {e}"
            ))
        });
    }
    let amounts = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    Ok(ResourceRequirements {
        requests: Some(amounts("10m", "16Mi")),
        limits: Some(amounts("100m", "64Mi")),
        ..ResourceRequirements::default()
    })
}

/// One SelfSubjectAccessReview: `Some(allowed)`, or `None` when the review itself failed.
async fn allowed(
    reviews: &Api<SelfSubjectAccessReview>,
    namespace: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> Option<bool> {
    let (resource_name, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource_name.to_owned()),
                subresource,
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    match reviews.create(&PostParams::default(), &review).await {
        Ok(answer) => Some(answer.status.as_ref().is_some_and(|s| s.allowed)),
        Err(e) => {
            // Not fatal: the preflight Job below still surfaces a Forbidden.
            tracing::warn!(error = %api_message(&e), "Could not review RBAC permissions.");
            None
        }
    }
}

/// Checks [`REQUIRED_PERMISSIONS`] (all missing ones named at once), then [`TASK_SECRETS`].
async fn check_permissions(
    client: &CountingClient,
    namespace: &str,
) -> Result<TaskEnvStore, KubeError> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.client.clone());
    let mut missing = Vec::new();
    for (group, resource, verbs) in REQUIRED_PERMISSIONS {
        let mut denied = Vec::new();
        for verb in verbs {
            match allowed(&reviews, namespace, group, resource, verb).await {
                Some(true) => {}
                Some(false) => denied.push(*verb),
                None => return Ok(TaskEnvStore::Secret),
            }
        }
        if !denied.is_empty() {
            let qualified = if group.is_empty() {
                resource.to_owned()
            } else {
                format!("{group}/{resource}")
            };
            missing.push(format!("{qualified}: {}", denied.join(", ")));
        }
    }
    if !missing.is_empty() {
        return Err(KubeError::Rbac {
            namespace: namespace.to_owned(),
            missing: missing.join("; "),
        });
    }
    let (group, resource, verb) = TASK_SECRETS;
    Ok(
        match allowed(&reviews, namespace, group, resource, verb).await {
            Some(false) => TaskEnvStore::JobSpec,
            Some(true) | None => TaskEnvStore::Secret,
        },
    )
}

async fn wait_preflight(
    client: &CountingClient,
    config: &KubernetesConfig,
    job: &Job,
) -> Result<(), String> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.client.clone(), &config.namespace);
    let pods: Api<Pod> = Api::namespaced(client.client.clone(), &config.namespace);
    let events: Api<Event> = Api::namespaced(client.client.clone(), &config.namespace);
    let by_job = ListParams::default().labels(&format!("job-name={name}"));
    loop {
        let listed = pods.list(&by_job).await.map_err(|e| api_message(&e))?;
        if !config.use_image_volumes && !listed.items.is_empty() {
            return Ok(());
        }
        if config.use_image_volumes {
            for pod in &listed.items {
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded") {
                    return Ok(());
                }
                let failure = match inspect_pod(pod, k8s_openapi::jiff::Timestamp::now(), None) {
                    PodCheck::Failed(f) => Some(f),
                    PodCheck::Fine {
                        events_needed: true,
                    } => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        let lp = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
                        let found = events.list(&lp).await.map(|l| l.items).unwrap_or_default();
                        inspect_pod_events(pod, &found)
                    }
                    _ => None,
                };
                if let Some(f) = failure {
                    return Err(f.message);
                }
            }
            let current = jobs.get(&name).await.map_err(|e| api_message(&e))?;
            match job_state(&current) {
                JobState::Complete => return Ok(()),
                JobState::Failed { reason, message } => {
                    return Err(format!(
                        "preflight Job {name:?} failed: {reason}: {message}"
                    ));
                }
                JobState::Running => {}
            }
        }
        let lp = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
        let found = events.list(&lp).await.map_err(|e| api_message(&e))?;
        if let Some(event) = found.items.iter().find(|e| {
            e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("FailedCreate")
        }) {
            return Err(format!(
                "preflight Job {name:?} could not create a Pod: {}",
                event.message.as_deref().unwrap_or_default()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn wrap(config: &KubernetesConfig, message: String) -> KubeError {
    let ns = &config.namespace;
    KubeError::Preflight(if config.use_image_volumes {
        format!(
            "the kubernetes backend requires creating task Jobs with image volumes for sidecar materialization; verify Kubernetes/runtime image-volume support, service account/RBAC and Pod Security or admission policy for namespace {ns:?}: {message}"
        )
    } else {
        format!(
            "the kubernetes backend requires creating task Jobs with a root init container for sidecar materialization; verify service account/RBAC and Pod Security or admission policy for namespace {ns:?}: {message}"
        )
    })
}

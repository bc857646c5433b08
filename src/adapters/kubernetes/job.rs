//! Building the task's Job, Pod spec and per-task Secret (as the Go worker builds them): pure functions
//! from config, template and `TaskSpec` to k8s-openapi objects.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, ImageVolumeSource,
    Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, ResourceRequirements, Secret,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::{DEFAULT_TTL_SECONDS_AFTER_FINISHED, KubernetesConfig};
use super::names::TaskNames;
use super::template::{TASK_CONTAINER, merge_task_container};
use crate::domain::{FailureReason, InstanceShape, TaskFailure, TaskSpec};

/// Where the workspace is mounted.
pub(super) const WORKSPACE: &str = "/workspace";
/// The env file the setup container may write and the wrapper sources.
pub(super) const ENV_FILE: &str = "/workspace/.oz-env";
/// The `/bin/sh -c` wrapper of the task container: sources the env file, then exec's the
/// sidecar entrypoint so signals reach it.
pub(super) const WRAPPER: &str = "if [ -f \"$OZ_ENVIRONMENT_FILE\" ]; then set -a; . \"$OZ_ENVIRONMENT_FILE\"; set +a; fi; exec /agent/entrypoint.sh \"$@\"";
/// The copy script of a `copy-sidecar-<i>` init container.
pub(super) const COPY_SCRIPT: &str = "tar -C / -cf - --exclude=./target --exclude=./proc --exclude=./sys --exclude=./dev --exclude=./.dockerenv --exclude=./var/run/secrets --exclude=./run/secrets . | tar --no-same-owner --no-same-permissions -C /target -xf -";

/// The objects created for one task.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TaskObjects {
    /// The Job.
    pub job: Job,
    /// The Secret holding the task env values the Job references (same name as the Job).
    pub secret: Secret,
}

/// Builds the Job and Secret of one task on top of the parsed `template`.
///
/// # Errors
/// `sidecar_prep` for an invalid sidecar list (empty image or mount path, `/workspace`,
/// duplicates, read-write in image-volume mode).
pub(super) fn task_objects(
    config: &KubernetesConfig,
    template: &PodSpec,
    spec: &TaskSpec,
    names: &TaskNames,
) -> Result<TaskObjects, TaskFailure> {
    validate_sidecars(spec, config.use_image_volumes)?;
    let pull = config.image_pull_policy.as_str().to_owned();
    let (env, secret_data) = task_env(config, spec, &names.job_name);
    let mut pod = template.clone();
    pod.restart_policy = Some("Never".to_owned());

    let mut volumes = pod.volumes.take().unwrap_or_default();
    volumes.push(Volume {
        name: "workspace".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: config.workspace_size_limit.clone().map(Quantity),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    });
    let mut mounts = vec![mount("workspace", WORKSPACE, false)];
    let mut init = Vec::new();
    for (i, sidecar) in spec.sidecars.iter().enumerate() {
        if config.use_image_volumes {
            let name = format!("sidecar-{i}-image");
            volumes.push(Volume {
                name: name.clone(),
                image: Some(ImageVolumeSource {
                    reference: Some(sidecar.image.clone()),
                    pull_policy: Some(pull.clone()),
                }),
                ..Volume::default()
            });
            mounts.push(mount(&name, &sidecar.mount_path, true));
        } else {
            let name = format!("sidecar-{i}-data");
            volumes.push(Volume {
                name: name.clone(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            });
            init.push(Container {
                name: format!("copy-sidecar-{i}"),
                image: Some(sidecar.image.clone()),
                image_pull_policy: Some(pull.clone()),
                command: Some(sh(COPY_SCRIPT)),
                security_context: Some(root()),
                volume_mounts: Some(vec![mount(&name, "/target", false)]),
                ..Container::default()
            });
            mounts.push(mount(&name, &sidecar.mount_path, !sidecar.read_write));
        }
    }
    pod.volumes = Some(volumes);

    if let Some(setup) = config.setup_command.as_deref().filter(|s| !s.is_empty()) {
        init.push(Container {
            name: "setup".to_owned(),
            image: Some(spec.image.clone()),
            image_pull_policy: Some(pull.clone()),
            command: Some(sh(setup)),
            working_dir: Some(WORKSPACE.to_owned()),
            env: Some(env.clone()),
            volume_mounts: Some(mounts.clone()),
            ..Container::default()
        });
    }
    init.extend(pod.init_containers.take().unwrap_or_default());
    pod.init_containers = (!init.is_empty()).then_some(init);

    let mut command = sh(WRAPPER);
    command.push("oz-task".to_owned());
    let task = Container {
        name: TASK_CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(pull),
        command: Some(command),
        args: Some(spec.args.clone()),
        env: Some(env),
        working_dir: Some(WORKSPACE.to_owned()),
        volume_mounts: Some(mounts),
        lifecycle: config
            .teardown_command
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(sh(t)),
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            }),
        resources: spec.instance_shape.as_ref().and_then(shape_resources),
        ..Container::default()
    };
    merge_task_container(&mut pod, task);

    let annotations =
        (!config.extra_annotations.is_empty()).then(|| config.extra_annotations.clone());
    let meta = ObjectMeta {
        name: Some(names.job_name.clone()),
        namespace: Some(config.namespace.clone()),
        labels: Some(names.labels.clone()),
        annotations: annotations.clone(),
        ..ObjectMeta::default()
    };
    let job = Job {
        metadata: meta.clone(),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: config.active_deadline_seconds.filter(|d| *d > 0),
            ttl_seconds_after_finished: config.cleanup.then(|| {
                config
                    .ttl_seconds_after_finished
                    .unwrap_or(DEFAULT_TTL_SECONDS_AFTER_FINISHED)
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names.labels.clone()),
                    annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    };
    // Same name, labels and annotations as the Job; the owner reference is added once the Job
    // exists (see `KubernetesExecutor::create`).
    let secret = Secret {
        metadata: meta,
        type_: Some("Opaque".to_owned()),
        string_data: Some(secret_data),
        ..Secret::default()
    };
    Ok(TaskObjects { job, secret })
}

/// The fallback when the worker may not create Secrets (as in the Go worker's chart): every env
/// entry that references the task's Secret gets the value itself, in the Job spec, and the
/// Secret is dropped. Returns the Job alone.
pub(super) fn inline_secret_env(objects: TaskObjects) -> Job {
    let TaskObjects { mut job, secret } = objects;
    let name = secret.metadata.name.unwrap_or_default();
    let data = secret.string_data.unwrap_or_default();
    let pod = job
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut());
    let Some(pod) = pod else { return job };
    let containers = pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten());
    for var in containers.flat_map(|c| c.env.iter_mut().flatten()) {
        let key = var
            .value_from
            .as_ref()
            .and_then(|from| from.secret_key_ref.as_ref())
            .filter(|selector| selector.name == name)
            .map(|selector| selector.key.clone());
        if let Some(key) = key {
            var.value = Some(data.get(&key).cloned().unwrap_or_default());
            var.value_from = None;
        }
    }
    job
}

/// The task env as container env, and the Secret data it references.
///
/// Order, later winning at the first position: the task spec's env (core-injected and server
/// `env_vars`, possibly secret: referenced from the Secret), then `-e` entries sorted by key,
/// then `OZ_ENVIRONMENT_FILE`, `OZ_WORKSPACE_ROOT`, `OZ_WORKER_BACKEND`, `OZ_RUN_ID` (plain).
pub(super) fn task_env(
    config: &KubernetesConfig,
    spec: &TaskSpec,
    secret_name: &str,
) -> (Vec<EnvVar>, BTreeMap<String, String>) {
    enum Source<'a> {
        Secret(&'a str),
        Plain(String),
    }
    let mut merged: Vec<(String, Source<'_>)> = Vec::new();
    let mut put = |key: &str, source| {
        if key.is_empty() {
            return;
        }
        match merged.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = source,
            None => merged.push((key.to_owned(), source)),
        }
    };
    for (key, value) in spec.env.iter() {
        put(key, Source::Secret(value));
    }
    let mut operator: Vec<(&str, &str)> = config.environment.iter().collect();
    operator.sort_by_key(|(k, _)| *k);
    for (key, value) in operator {
        put(key, Source::Plain(value.to_owned()));
    }
    put("OZ_ENVIRONMENT_FILE", Source::Plain(ENV_FILE.to_owned()));
    put("OZ_WORKSPACE_ROOT", Source::Plain(WORKSPACE.to_owned()));
    put("OZ_WORKER_BACKEND", Source::Plain("kubernetes".to_owned()));
    put("OZ_RUN_ID", Source::Plain(spec.task_id.as_str().to_owned()));

    let mut data = BTreeMap::new();
    let env = merged
        .into_iter()
        .enumerate()
        .map(|(i, (name, source))| match source {
            Source::Plain(value) => EnvVar {
                name,
                value: Some(value),
                value_from: None,
            },
            Source::Secret(value) => {
                let key = if is_secret_key(&name) {
                    name.clone()
                } else {
                    format!("env-{i}")
                };
                data.insert(key.clone(), value.to_owned());
                EnvVar {
                    name,
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret_name.to_owned(),
                            key,
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                }
            }
        })
        .collect();
    (env, data)
}

/// Requests = limits for each positive axis of the shape (cpu in cores, memory in GiB).
pub(super) fn shape_resources(shape: &InstanceShape) -> Option<ResourceRequirements> {
    let mut amounts = BTreeMap::new();
    if let Some(vcpus) = shape.vcpus.filter(|v| *v > 0) {
        amounts.insert("cpu".to_owned(), Quantity(vcpus.to_string()));
    }
    if let Some(gb) = shape.memory_gb.filter(|m| *m > 0) {
        amounts.insert("memory".to_owned(), Quantity(format!("{gb}Gi")));
    }
    (!amounts.is_empty()).then(|| ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..ResourceRequirements::default()
    })
}

fn validate_sidecars(spec: &TaskSpec, image_volumes: bool) -> Result<(), TaskFailure> {
    let fail = |m: String| Err(TaskFailure::backend(FailureReason::SidecarPrep, m));
    let mut seen = Vec::new();
    for (i, sidecar) in spec.sidecars.iter().enumerate() {
        if sidecar.image.trim().is_empty() {
            return fail(format!("sidecar {i} has an empty image"));
        }
        let path = sidecar.mount_path.trim_end_matches('/');
        if sidecar.mount_path.is_empty() {
            return fail(format!(
                "sidecar {i} ({}) has an empty mount path",
                sidecar.image
            ));
        }
        if path == WORKSPACE {
            return fail(format!(
                "sidecar {i} ({}) cannot mount at reserved path {WORKSPACE}",
                sidecar.image
            ));
        }
        if seen.contains(&path) {
            return fail(format!(
                "sidecar {i} ({}) duplicates mount path {}",
                sidecar.image, sidecar.mount_path
            ));
        }
        if image_volumes && sidecar.read_write {
            return fail(format!(
                "sidecar {i} ({}) asks for read_write, but kubernetes image volumes are read-only",
                sidecar.image
            ));
        }
        seen.push(path);
    }
    Ok(())
}

fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()]
}

pub(super) fn root() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(0),
        run_as_group: Some(0),
        ..SecurityContext::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

//! Unit tests of the Kubernetes backend's pure parts: names, labels, env, the Job spec, the
//! pod_template merge, failure mapping. The fake API server tests are in `tests/fake_api.rs`.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::json;
use std::collections::BTreeMap;

use super::config::{ImagePullPolicy, KubernetesConfig};
use super::executor::is_quantity;
use super::job::{COPY_SCRIPT, WRAPPER, inline_secret_env, task_env, task_objects};
use super::names::{TaskNames, job_name, sanitize_label_value, short_hash, worker_job_selector};
use super::preflight::preflight_job;
use super::template::{merge_task_container, parse_pod_template};
use crate::domain::spec::{SpecSettings, prepare};
use crate::domain::{Assignment, FailureReason, InstanceShape, SidecarMount, TaskId, TaskSpec};

mod failure;
mod fake_api;

fn spec() -> TaskSpec {
    let mut a = Assignment::new(TaskId::parse("019f5de4-bfd1-762e-92ed-199c971abcba").unwrap());
    a.execution_id = "019f5df0-aaaa-bbbb-cccc-abcdef012345".into();
    a.sidecar_image = Some("warp/agent:1".into());
    a.env_vars
        .insert("GITHUB_TOKEN".into(), "secret-value".into());
    prepare(&a, &SpecSettings::default())
}

fn config() -> KubernetesConfig {
    KubernetesConfig {
        worker_id: "w1".into(),
        ..KubernetesConfig::default()
    }
}

fn build(config: &KubernetesConfig, template: serde_json::Value, spec: &TaskSpec) -> PodSpec {
    let template = parse_pod_template(Some(&template)).unwrap();
    let names = TaskNames::new(
        "w1",
        spec.task_id.as_str(),
        &spec.execution_id,
        &BTreeMap::new(),
    );
    let objects = task_objects(config, &template, spec, &names).unwrap();
    objects.job.spec.unwrap().template.spec.unwrap()
}

fn task(pod: &PodSpec) -> &Container {
    pod.containers.iter().find(|c| c.name == "task").unwrap()
}

#[test]
fn job_names_follow_the_spec_examples() {
    let cases = [
        (
            (
                "019f5de4-bfd1-762e-92ed-199c971abcba",
                "019f5df0-aaaa-bbbb-cccc-abcdef012345",
            ),
            "oz-task-019f5de4-bfd1-762e-92ed-199c971abcba-exec-ef012345",
        ),
        (("", ""), "oz-task-run-exec-exec"),
        (("RUN_1", "exec.2"), "oz-task-run-1-exec-exec-2"),
    ];
    for ((run, exec), want) in cases {
        assert_eq!(job_name(run, exec), want, "{run:?} {exec:?}");
    }
    let long = job_name(&"a".repeat(100), "x");
    assert!(long.len() <= 63, "{long}");
}

#[test]
fn label_values_are_sanitized_and_hashes_are_16_hex() {
    assert_eq!(sanitize_label_value("Hello World!"), "hello-world");
    assert_eq!(sanitize_label_value("__"), "unknown");
    assert_eq!(sanitize_label_value(&"a".repeat(80)).len(), 63);
    let hash = short_hash("worker");
    assert_eq!(hash.len(), 16);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    let mut extra = BTreeMap::new();
    extra.insert("oz-task-id".to_owned(), "spoofed".to_owned());
    extra.insert("team".to_owned(), "a".to_owned());
    let names = TaskNames::new("w", "t", "", &extra);
    assert_eq!(
        names.labels["oz-task-id"], "t",
        "worker labels override extra labels"
    );
    assert_eq!(names.labels["team"], "a");
    assert_eq!(
        names.execution_hash,
        short_hash("t"),
        "falls back to the task id"
    );
}

#[test]
fn worker_job_selector_matches_every_task_of_that_worker_and_no_other() {
    let selector = worker_job_selector("Worker/1");
    assert_eq!(
        selector,
        format!(
            "app.kubernetes.io/managed-by=oz-agent-worker,oz-worker-hash={}",
            short_hash("Worker/1")
        )
    );
    let matches = |labels: &BTreeMap<String, String>| {
        selector.split(',').all(|term| {
            let (key, value) = term.split_once('=').unwrap();
            labels.get(key).map(String::as_str) == Some(value)
        })
    };
    let mut extra = BTreeMap::new();
    extra.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "someone-else".to_owned(),
    );
    for (task, execution) in [("t1", ""), ("t2", "e2")] {
        let names = TaskNames::new("Worker/1", task, execution, &extra);
        assert!(matches(&names.labels), "{:?}", names.labels);
    }
    let other = TaskNames::new("Worker/2", "t1", "", &BTreeMap::new());
    assert!(
        !matches(&other.labels),
        "another worker's Jobs are not listed"
    );
}

#[test]
fn task_env_orders_secrets_operator_env_then_worker_vars() {
    let mut config = config();
    config.environment.push("ZED", "1");
    config.environment.push("ALPHA", "2");
    config.environment.push("GITHUB_TOKEN", "operator-wins");
    let spec = spec();
    let (env, secret) = task_env(&config, &spec, "job");
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    let tail = &names[names.len() - 6..];
    assert_eq!(
        tail,
        [
            "ALPHA",
            "ZED",
            "OZ_ENVIRONMENT_FILE",
            "OZ_WORKSPACE_ROOT",
            "OZ_WORKER_BACKEND",
            "OZ_RUN_ID"
        ]
    );
    assert!(!names.contains(&"OZ_EXECUTION_ID"));
    let token = env.iter().find(|e| e.name == "GITHUB_TOKEN").unwrap();
    assert_eq!(token.value.as_deref(), Some("operator-wins"));
    assert!(
        !secret.contains_key("GITHUB_TOKEN"),
        "overridden values are not stored"
    );
    let task_id = env.iter().find(|e| e.name == "TASK_ID").unwrap();
    assert!(task_id.value.is_none());
    let key = &task_id
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!((key.name.as_str(), key.key.as_str()), ("job", "TASK_ID"));
    assert_eq!(secret["TASK_ID"], spec.task_id.as_str());
}

#[test]
fn job_spec_in_copy_mode() {
    let mut config = config();
    config.teardown_command = Some("echo bye".into());
    config.image_pull_policy = ImagePullPolicy::Always;
    let mut spec = spec();
    spec.sidecars.push(SidecarMount {
        image: "x:1".into(),
        mount_path: "/mnt/x".into(),
        read_write: true,
    });
    let pod = build(&config, json!(null), &spec);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let volumes: Vec<&str> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["workspace", "sidecar-0-data", "sidecar-1-data"]);
    let init = pod.init_containers.as_ref().unwrap();
    assert_eq!(init[0].name, "copy-sidecar-0");
    assert_eq!(init[0].command.as_ref().unwrap()[2], COPY_SCRIPT);
    assert_eq!(
        init[0].security_context.as_ref().unwrap().run_as_user,
        Some(0)
    );
    let task = task(&pod);
    let command = task.command.as_ref().unwrap();
    assert_eq!(command, &["/bin/sh", "-c", WRAPPER, "oz-task"]);
    assert!(
        WRAPPER.contains("exec /agent/entrypoint.sh \"$@\"")
            && !WRAPPER.contains("report-shutdown")
    );
    assert_eq!(task.args.as_ref().unwrap()[..2], ["agent", "run"]);
    assert_eq!(task.image_pull_policy.as_deref(), Some("Always"));
    let mounts: Vec<(&str, Option<bool>)> = task
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/workspace", None),
            ("/agent", Some(true)),
            ("/mnt/x", None)
        ]
    );
    let pre_stop = task.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(
        pre_stop.exec.as_ref().unwrap().command.as_ref().unwrap()[2],
        "echo bye"
    );
}

#[test]
fn job_spec_in_image_volume_mode_and_job_fields() {
    let mut config = config();
    config.use_image_volumes = true;
    config.cleanup = false;
    config.active_deadline_seconds = None;
    let spec = spec();
    let template = PodSpec::default();
    let names = TaskNames::new(
        "w1",
        spec.task_id.as_str(),
        &spec.execution_id,
        &BTreeMap::new(),
    );
    let job = task_objects(&config, &template, &spec, &names).unwrap().job;
    let job_spec = job.spec.unwrap();
    assert_eq!(job_spec.backoff_limit, Some(0));
    assert_eq!(
        job_spec.ttl_seconds_after_finished, None,
        "no TTL under no-cleanup"
    );
    assert_eq!(job_spec.active_deadline_seconds, None);
    let pod = job_spec.template.spec.unwrap();
    assert!(pod.init_containers.is_none());
    let volume = &pod.volumes.as_ref().unwrap()[1];
    assert_eq!(volume.name, "sidecar-0-image");
    assert_eq!(
        volume.image.as_ref().unwrap().reference.as_deref(),
        Some("warp/agent:1")
    );
    let mut config = KubernetesConfig {
        cleanup: true,
        ttl_seconds_after_finished: None,
        ..config
    };
    config.use_image_volumes = false;
    let job = task_objects(&config, &template, &spec, &names).unwrap().job;
    assert_eq!(job.spec.unwrap().ttl_seconds_after_finished, Some(86_400));
}

#[test]
fn invalid_sidecars_are_sidecar_prep() {
    let cases = [
        ("", "/mnt/a", false, false, "empty image"),
        ("a", "", false, false, "empty mount path"),
        ("a", "/workspace", false, false, "reserved path"),
        ("a", "/agent", false, false, "duplicates mount path"),
        ("a", "/mnt/a", true, true, "image volumes are read-only"),
    ];
    for (image, path, read_write, image_volumes, want) in cases {
        let mut spec = spec();
        spec.sidecars.push(SidecarMount {
            image: image.into(),
            mount_path: path.into(),
            read_write,
        });
        let config = KubernetesConfig {
            use_image_volumes: image_volumes,
            ..config()
        };
        let names = TaskNames::new("w", "t", "", &BTreeMap::new());
        let failure = task_objects(&config, &PodSpec::default(), &spec, &names).unwrap_err();
        assert_eq!(failure.reason, FailureReason::SidecarPrep);
        assert!(failure.message.contains(want), "{}", failure.message);
    }
}

#[test]
fn pod_template_merge_table() {
    let mut spec = spec();
    spec.instance_shape = Some(InstanceShape {
        vcpus: Some(2),
        memory_gb: Some(16),
    });
    let config = config();
    // (template, check)
    type Check = fn(&PodSpec);
    let cases: Vec<(serde_json::Value, Check)> = vec![
        (json!({}), |pod| assert_eq!(pod.containers.len(), 1)),
        (
            json!({ "containers": [{ "name": "sidecar", "image": "s" }] }),
            |pod| {
                let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
                assert_eq!(
                    names,
                    ["sidecar", "task"],
                    "no template task container: appended"
                );
            },
        ),
        (
            json!({ "serviceAccountName": "sa", "imagePullSecrets": [{ "name": "reg" }], "nodeSelector": { "a": "b" } }),
            |pod| {
                assert_eq!(pod.service_account_name.as_deref(), Some("sa"));
                assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "reg");
                assert_eq!(pod.node_selector.as_ref().unwrap()["a"], "b");
            },
        ),
        (
            json!({ "containers": [{ "name": "task", "image": "ignored", "imagePullPolicy": "Never",
                 "workingDir": "/x", "securityContext": { "runAsNonRoot": true },
                 "volumeMounts": [{ "name": "cache", "mountPath": "/cache" }],
                 "env": [{ "name": "A", "value": "1" }, { "name": "TASK_ID", "value": "x" },
                         { "name": "FROM_SECRET", "valueFrom": { "secretKeyRef": { "name": "s", "key": "k" } } }],
                 "resources": { "requests": { "cpu": "8", "ephemeral-storage": "1Gi" } } }],
               "volumes": [{ "name": "cache", "emptyDir": {} }] }),
            |pod| {
                let task = task(pod);
                assert_eq!(task.image.as_deref(), Some("oz-test:1"));
                assert_eq!(
                    task.image_pull_policy.as_deref(),
                    Some("Never"),
                    "template pull policy kept"
                );
                assert_eq!(task.working_dir.as_deref(), Some("/workspace"));
                assert_eq!(
                    task.security_context.as_ref().unwrap().run_as_non_root,
                    Some(true)
                );
                assert_eq!(task.volume_mounts.as_ref().unwrap()[0].mount_path, "/cache");
                let env: Vec<&str> = task
                    .env
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect();
                assert_eq!(
                    env[..3],
                    ["A", "TASK_ID", "FROM_SECRET"],
                    "template order kept"
                );
                let task_id = &task.env.as_ref().unwrap()[1];
                assert!(
                    task_id
                        .value_from
                        .as_ref()
                        .unwrap()
                        .secret_key_ref
                        .is_some(),
                    "worker entry wins"
                );
                assert!(
                    task.env.as_ref().unwrap()[2].value_from.is_some(),
                    "valueFrom survives"
                );
                let requests = task.resources.as_ref().unwrap().requests.as_ref().unwrap();
                assert_eq!(requests["cpu"].0, "2", "shape overrides");
                assert_eq!(requests["memory"].0, "16Gi");
                assert_eq!(requests["ephemeral-storage"].0, "1Gi", "other entries kept");
                let volumes: Vec<&str> = pod
                    .volumes
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect();
                assert_eq!(volumes[..2], ["cache", "workspace"]);
            },
        ),
        (
            json!({ "containers": [{ "name": "task", "lifecycle": { "postStart": { "exec": { "command": ["true"] } } } }] }),
            |pod| {
                assert!(
                    task(pod).lifecycle.as_ref().unwrap().post_start.is_some(),
                    "no teardown: lifecycle kept"
                );
            },
        ),
        (
            json!({ "initContainers": [{ "name": "db", "image": "pg", "restartPolicy": "Always" }] }),
            |pod| {
                let init = pod.init_containers.as_ref().unwrap();
                let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
                assert_eq!(
                    names,
                    ["copy-sidecar-0", "db"],
                    "native sidecars start after the worker's"
                );
                assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
            },
        ),
    ];
    let mut spec_with_image = spec.clone();
    spec_with_image.image = "oz-test:1".into();
    for (template, check) in cases {
        check(&build(&config, template, &spec_with_image));
    }
    // The same kind of cases with a teardown_command configured.
    let with_teardown = KubernetesConfig {
        teardown_command: Some("echo bye".into()),
        ..config.clone()
    };
    let teardown_cases: Vec<(serde_json::Value, Check)> = vec![
        (
            json!({ "containers": [{ "name": "task", "lifecycle": {
                "postStart": { "exec": { "command": ["true"] } },
                "preStop": { "exec": { "command": ["template-hook"] } } } }] }),
            |pod| {
                let lifecycle = task(pod).lifecycle.as_ref().unwrap();
                assert!(
                    lifecycle.post_start.is_none(),
                    "teardown: the template's lifecycle is replaced, not merged"
                );
                let pre_stop = lifecycle.pre_stop.as_ref().unwrap().exec.as_ref().unwrap();
                assert_eq!(
                    pre_stop.command.as_deref().unwrap(),
                    ["/bin/sh", "-c", "echo bye"]
                );
            },
        ),
        (json!({}), |pod| {
            let lifecycle = task(pod).lifecycle.as_ref().unwrap();
            let pre_stop = lifecycle.pre_stop.as_ref().unwrap().exec.as_ref().unwrap();
            assert_eq!(
                pre_stop.command.as_deref().unwrap(),
                ["/bin/sh", "-c", "echo bye"],
                "no template task container: the worker's preStop"
            );
        }),
    ];
    for (template, check) in teardown_cases {
        check(&build(&with_teardown, template, &spec_with_image));
    }
    assert!(
        parse_pod_template(Some(&json!({ "containers": "nope" })))
            .unwrap_err()
            .contains("pod_template")
    );
    let mut pod = PodSpec::default();
    merge_task_container(
        &mut pod,
        Container {
            name: "task".into(),
            ..Container::default()
        },
    );
    assert_eq!(pod.containers.len(), 1);
}

#[test]
fn preflight_job_shapes_and_quantities() {
    let template = parse_pod_template(Some(&json!({ "serviceAccountName": "sa",
        "initContainers": [{ "name": "x" }], "containers": [{ "name": "y" }] })))
    .unwrap();
    let job = preflight_job(&config(), &template, "oz-preflight-x-1").unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("sa"));
    let init = pod.init_containers.unwrap();
    assert_eq!(init[0].name, "root-init-preflight");
    assert_eq!(init[0].image.as_deref(), Some("busybox:1.36"));
    assert_eq!(pod.containers[0].name, "main");
    let limits = pod.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(
        (limits["cpu"].0.as_str(), limits["memory"].0.as_str()),
        ("100m", "64Mi")
    );
    let image_mode = KubernetesConfig {
        use_image_volumes: true,
        ..config()
    };
    let pod = preflight_job(&image_mode, &template, "p")
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert!(pod.init_containers.is_none());
    assert_eq!(
        pod.containers[0].command.as_ref().unwrap()[2],
        "test -d /preflight-image"
    );
    for good in ["8Gi", "500M", "1", "0.5", "1e3", "100m"] {
        assert!(is_quantity(good), "{good}");
    }
    for bad in ["", "Gi", "8 Gi", "8GB", "abc"] {
        assert!(!is_quantity(bad), "{bad}");
    }
}

#[test]
fn without_secrets_create_every_secret_reference_becomes_its_value_in_the_job() {
    let mut config = config();
    config.setup_command = Some("echo setup".into());
    let spec = spec();
    let names = TaskNames::new(
        "w1",
        spec.task_id.as_str(),
        &spec.execution_id,
        &BTreeMap::new(),
    );
    let template = parse_pod_template(None).unwrap();
    let objects = task_objects(&config, &template, &spec, &names).unwrap();
    let values = objects.secret.string_data.clone().unwrap();
    assert!(!values.is_empty());
    let job = inline_secret_env(objects);
    let pod = job.spec.unwrap().template.spec.unwrap();
    let all: Vec<_> = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .flat_map(|c| c.env.iter().flatten())
        .collect();
    assert!(all.iter().all(|e| e.value_from.is_none()), "{all:?}");
    for (name, value) in spec.env.iter() {
        let found: Vec<_> = all.iter().filter(|e| e.name == name).collect();
        assert!(!found.is_empty(), "{name} missing");
        assert!(found.iter().all(|e| e.value.as_deref() == Some(value)));
    }
}

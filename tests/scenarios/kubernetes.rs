//! The Kubernetes executor against a real kube-apiserver + kube-controller-manager v1.20.2
//! (scripts/setup/40-kubernetes.sh). The test plays the kubelet by patching pod status; the real
//! job controller creates the Pods and sets the Job's conditions.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use oz_agent_worker::adapters::kubernetes::{KubeError, KubernetesConfig, KubernetesExecutor};
use oz_agent_worker::domain::{Exit, FailureReason, InstanceShape, TaskFailure, TaskSpec};
use oz_agent_worker::ports::executor::Executor;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::kubernetes::{self as k8s, PodStatus};
use crate::support::require;

const SECRET: &str = "s3cr3t-token-value";
const WAIT: Duration = Duration::from_secs(60);

struct Started {
    admin: Client,
    namespace: String,
    spec: TaskSpec,
    pod: String,
    run: JoinHandle<Result<Exit, TaskFailure>>,
    cancel: CancellationToken,
    job_name: String,
}

async fn start(config: KubernetesConfig, spec: TaskSpec) -> Started {
    let admin = k8s::admin().await;
    let names = k8s::names(&config, &spec);
    let executor = KubernetesExecutor::connect(&config).await.expect("connect");
    assert!(executor.survives_daemon_restart());
    let cancel = CancellationToken::new();
    let (task_spec, token) = (spec.clone(), cancel.clone());
    let run = tokio::spawn(async move { executor.run(&task_spec, token).await });
    let pod = k8s::task_pod(&admin, &config.namespace, &names).await;
    Started {
        admin,
        namespace: config.namespace.clone(),
        spec,
        pod,
        run,
        cancel,
        job_name: names.job_name,
    }
}

async fn started(tweak: impl FnOnce(&mut KubernetesConfig)) -> Started {
    let admin = k8s::admin().await;
    let mut config = k8s::worker_config(&k8s::namespace(&admin).await);
    tweak(&mut config);
    start(config, k8s::task_spec(SECRET)).await
}

async fn finish(s: &mut Started) -> Result<Exit, TaskFailure> {
    tokio::time::timeout(WAIT, &mut s.run)
        .await
        .expect("run returns")
        .unwrap()
}

async fn job_gone(admin: &Client, ns: &str, name: &str) {
    let jobs: Api<Job> = Api::namespaced(admin.clone(), ns);
    k8s::eventually("the Job to be deleted", WAIT, || async {
        matches!(jobs.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn kubernetes_success_deletes_the_job_and_keeps_secrets_out_of_its_spec() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let mut s = started(|_| {}).await;
    let job: Job = Api::namespaced(s.admin.clone(), &s.namespace)
        .get(&s.job_name)
        .await
        .unwrap();
    let job_json = serde_json::to_string(&job).unwrap();
    assert!(
        !job_json.contains(SECRET),
        "the task env values are not in the Job spec"
    );
    assert!(job_json.contains("secretKeyRef"));
    assert!(
        s.job_name.contains(s.spec.task_id.as_str()),
        "the Job name contains the run id"
    );
    let secret: Secret = Api::namespaced(s.admin.clone(), &s.namespace)
        .get(&s.job_name)
        .await
        .unwrap();
    let owner = &secret.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Job", job.metadata.uid.as_deref().unwrap())
    );
    let labels = job.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "oz-agent-worker");
    assert_eq!(
        job.spec.unwrap().active_deadline_seconds,
        Some(28_800),
        "8 h by default"
    );

    k8s::set_pod_status(&s.admin, &s.namespace, &s.pod, PodStatus::Running).await;
    k8s::set_pod_status(&s.admin, &s.namespace, &s.pod, PodStatus::Exited(0)).await;
    assert_eq!(finish(&mut s).await, Ok(Exit::Succeeded));
    job_gone(&s.admin, &s.namespace, &s.job_name).await;
}

#[tokio::test]
async fn kubernetes_exit_code_n_is_container_exit_with_the_code_and_keeps_the_job() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let mut s = started(|_| {}).await;
    k8s::set_pod_status(&s.admin, &s.namespace, &s.pod, PodStatus::Exited(3)).await;
    let failure = finish(&mut s).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::ContainerExit);
    assert_eq!(failure.exit_code, Some(3));
    assert!(
        failure
            .message
            .contains(&format!("container task in pod {}", s.pod)),
        "{}",
        failure.message
    );
    assert!(!failure.message.contains(SECRET));
    let jobs: Api<Job> = Api::namespaced(s.admin.clone(), &s.namespace);
    assert!(
        jobs.get_opt(&s.job_name).await.unwrap().is_some(),
        "failed Jobs stay for their TTL"
    );
}

#[tokio::test]
async fn kubernetes_unschedulable_pod_fails_after_the_timeout() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let mut s = started(|c| c.unschedulable_timeout = Some(Duration::from_secs(1))).await;
    k8s::set_pod_status(&s.admin, &s.namespace, &s.pod, PodStatus::Unschedulable).await;
    let failure = finish(&mut s).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Unschedulable);
    assert!(
        failure.message.contains("Insufficient cpu"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn kubernetes_image_pull_failure_carries_the_waiting_reason() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let mut s = started(|_| {}).await;
    k8s::set_pod_status(&s.admin, &s.namespace, &s.pod, PodStatus::ImagePullFailed).await;
    let failure = finish(&mut s).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::ImagePull);
    assert!(
        failure
            .message
            .contains("ErrImagePull: rpc error: pull access denied"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn kubernetes_eviction_is_evicted() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let mut s = started(|_| {}).await;
    k8s::set_pod_status(&s.admin, &s.namespace, &s.pod, PodStatus::Evicted).await;
    let failure = finish(&mut s).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Evicted);
    assert!(
        failure.message.contains("low on resource"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn kubernetes_active_deadline_is_reported_from_the_job_controller() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let mut s = started(|c| c.active_deadline_seconds = Some(2)).await;
    let failure = finish(&mut s).await.unwrap_err();
    assert_eq!(
        failure.reason,
        FailureReason::ActiveDeadline,
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("DeadlineExceeded"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn kubernetes_cancel_deletes_the_job_its_pods_and_its_secret() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let mut s = started(|_| {}).await;
    k8s::set_pod_status(&s.admin, &s.namespace, &s.pod, PodStatus::Running).await;
    s.cancel.cancel();
    assert_eq!(finish(&mut s).await, Ok(Exit::Cancelled));
    job_gone(&s.admin, &s.namespace, &s.job_name).await;
    let secrets: Api<Secret> = Api::namespaced(s.admin.clone(), &s.namespace);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(s.admin.clone(), &s.namespace);
    k8s::eventually(
        "the garbage collector to delete the Secret and the pod",
        WAIT,
        || async {
            let secret_gone = matches!(secrets.get_opt(&s.job_name).await, Ok(None));
            let pod_gone = matches!(pods.get_opt(&s.pod).await, Ok(None));
            (secret_gone && pod_gone).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn kubernetes_pod_template_survives_a_round_trip_through_the_server() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let admin = k8s::admin().await;
    let mut config = k8s::worker_config(&k8s::namespace(&admin).await);
    config.pod_template = Some(json!({
        "nodeSelector": { "pool": "agents" },
        "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "agents", "effect": "NoSchedule" }],
        "containers": [
            { "name": "task", "securityContext": { "runAsUser": 1000 },
              "env": [{ "name": "FROM_TEMPLATE", "value": "kept" }, { "name": "OZ_RUN_ID", "value": "overridden" }],
              "resources": { "limits": { "cpu": "8", "example.com/gpu": "1" } } },
            { "name": "proxy", "image": "oz-test/busybox:1" }
        ]
    }));
    config.setup_command = Some("echo setup".to_owned());
    config.workspace_size_limit = Some("8Gi".to_owned());
    let mut spec = k8s::task_spec(SECRET);
    spec.instance_shape = Some(InstanceShape {
        vcpus: Some(2),
        memory_gb: Some(4),
    });
    let mut s = start(config, spec).await;
    let job: Job = Api::namespaced(s.admin.clone(), &s.namespace)
        .get(&s.job_name)
        .await
        .unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["pool"], "agents");
    assert_eq!(
        pod.tolerations.unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["task", "proxy"]);
    let task = &pod.containers[0];
    assert_eq!(
        task.security_context.as_ref().unwrap().run_as_user,
        Some(1000)
    );
    let env = task.env.as_ref().unwrap();
    assert_eq!(env[0].name, "FROM_TEMPLATE");
    let run_id = env.iter().find(|e| e.name == "OZ_RUN_ID").unwrap();
    assert_eq!(run_id.value.as_deref(), Some(s.spec.task_id.as_str()));
    let limits = task.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["cpu"].0, "2");
    assert_eq!(limits["memory"].0, "4Gi");
    assert_eq!(limits["example.com/gpu"].0, "1");
    let init: Vec<&str> = pod
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, ["copy-sidecar-0", "setup"]);
    let workspace = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "workspace")
        .unwrap();
    assert_eq!(workspace.empty_dir.unwrap().size_limit.unwrap().0, "8Gi");
    k8s::set_pod_status(&s.admin, &s.namespace, &s.pod, PodStatus::Exited(0)).await;
    assert_eq!(finish(&mut s).await, Ok(Exit::Succeeded));
}

#[tokio::test]
async fn kubernetes_runs_with_exactly_the_documented_role() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let mut config = k8s::worker_config(&std::env::var("OZ_TEST_KUBE_NAMESPACE_RBAC").unwrap());
    config.kubeconfig = Some(k8s::kubeconfig_from("OZ_TEST_KUBECONFIG_RESTRICTED"));
    let mut s = start(config, k8s::task_spec(SECRET)).await;
    k8s::set_pod_status(&s.admin, &s.namespace, &s.pod, PodStatus::Exited(0)).await;
    assert_eq!(finish(&mut s).await, Ok(Exit::Succeeded));
    job_gone(&s.admin, &s.namespace, &s.job_name).await;
}

#[tokio::test]
async fn kubernetes_preflight_names_missing_permissions_namespace_and_server() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = k8s::worker_config("default");
    config.kubeconfig = Some(k8s::kubeconfig_from("OZ_TEST_KUBECONFIG_NORBAC"));
    let error = KubernetesExecutor::connect(&config)
        .await
        .err()
        .expect("no permissions");
    assert!(matches!(error, KubeError::Rbac { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("batch/jobs: create, get, list, watch, delete"),
        "{text}"
    );
    assert!(
        text.contains("pods/log: get; events: list; secrets: create; grant the Role"),
        "{text}"
    );

    let mut config = k8s::worker_config("no-such-namespace");
    let error = KubernetesExecutor::connect(&config)
        .await
        .err()
        .expect("missing namespace");
    assert_eq!(
        error,
        KubeError::MissingNamespace("no-such-namespace".to_owned())
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let unreachable = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n";
    std::fs::write(&path, unreachable).unwrap();
    config.kubeconfig = Some(path);
    let error = KubernetesExecutor::connect(&config)
        .await
        .err()
        .expect("unreachable");
    assert!(matches!(error, KubeError::Unreachable { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("failed to reach Kubernetes API server https://127.0.0.1:1"),
        "{error}"
    );
}

#[tokio::test]
async fn kubernetes_worker_shutdown_leaves_the_job_and_an_external_delete_is_job_watch() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let admin = k8s::admin().await;
    let config = k8s::worker_config(&k8s::namespace(&admin).await);
    let mut s = start(config.clone(), k8s::task_spec(SECRET)).await;
    let other = KubernetesExecutor::without_preflight(&config)
        .await
        .unwrap();
    other.shutdown().await;
    let jobs: Api<Job> = Api::namespaced(s.admin.clone(), &s.namespace);
    assert!(
        jobs.get_opt(&s.job_name).await.unwrap().is_some(),
        "shutdown deletes nothing"
    );
    let background = kube::api::DeleteParams::background();
    jobs.delete(&s.job_name, &background).await.unwrap();
    let failure = finish(&mut s).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::JobWatch);
    assert!(
        failure.message.contains("was deleted before it finished"),
        "{}",
        failure.message
    );
}

//! The Kubernetes executor against the v1.20.2 test cluster of scripts/setup/40-kubernetes.sh:
//! real API server, job controller, scheduler and kubelet (tasks run in real pods on the
//! machine's Docker Engine). Tests named `pretend_kubelet` patch pod status themselves, for
//! states the real kubelet cannot be made to produce on demand here (eviction), or to inspect a
//! Job shape that no node could run; their pods are bound to a node no kubelet serves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use oz_agent_worker::adapters::kubernetes::names::TaskNames;
use oz_agent_worker::adapters::kubernetes::{KubeError, KubernetesConfig, KubernetesExecutor};
use oz_agent_worker::domain::{Exit, FailureReason, InstanceShape, TaskFailure, TaskSpec};
use oz_agent_worker::ports::executor::Executor;
use oz_protocol::WorkerMessage;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::daemon;
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

/// A task on the real node, with `env` for the stand-in `oz`.
async fn started_on_node(
    tweak: impl FnOnce(&mut KubernetesConfig),
    env: &[(&str, &str)],
) -> Started {
    let admin = k8s::admin().await;
    let mut config = k8s::node_worker_config(&k8s::namespace(&admin).await);
    tweak(&mut config);
    start(config, k8s::node_task_spec(SECRET, env)).await
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
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let admin = k8s::admin().await;
    let mut config = k8s::node_worker_config(&k8s::namespace(&admin).await);
    config.extra_labels = BTreeMap::from([
        ("team".to_owned(), "agents".to_owned()),
        ("oz-task-id".to_owned(), "spoofed".to_owned()),
    ]);
    config.extra_annotations =
        BTreeMap::from([("example.com/owner".to_owned(), "platform".to_owned())]);
    // Every Secret event in the namespace from before the task starts: the first one shows the
    // Secret as it was created.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &config.namespace);
    let version = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut secret_events = secrets
        .watch(&WatchParams::default(), &version)
        .await
        .unwrap()
        .boxed();
    let mut s = start(config.clone(), k8s::node_task_spec(SECRET, &[])).await;
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
    let job_uid = job.metadata.uid.clone().unwrap();

    let created = tokio::time::timeout(WAIT, async {
        while let Some(event) = secret_events.next().await {
            if let WatchEvent::Added(secret) = event.unwrap()
                && secret.metadata.name.as_deref() == Some(s.job_name.as_str())
            {
                return secret;
            }
        }
        panic!("the Secret watch ended");
    })
    .await
    .expect("the Secret is created");
    let owners = created
        .metadata
        .owner_references
        .clone()
        .expect("owned from its creation");
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (
            owners[0].api_version.as_str(),
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str()
        ),
        ("batch/v1", "Job", s.job_name.as_str(), job_uid.as_str())
    );

    // Labels and annotations, the same on the Job, its pod template and the Secret.
    let mut want_labels = k8s::expected_labels(
        &config.worker_id,
        s.spec.task_id.as_str(),
        &s.spec.execution_id,
        &BTreeMap::from([("team".to_owned(), "agents".to_owned())]),
    );
    // Next to the worker id: the id of the worker process (instance), 16 hex digits.
    let instance = job.metadata.labels.as_ref().unwrap()["oz-instance-id"].clone();
    assert!(
        instance.len() == 16 && instance.chars().all(|c| c.is_ascii_hexdigit()),
        "{instance}"
    );
    want_labels.insert("oz-instance-id".to_owned(), instance);
    assert_eq!(
        want_labels["oz-task-id"],
        s.spec.task_id.as_str(),
        "worker labels override extra labels"
    );
    let job_spec = job.spec.clone().unwrap();
    let template_meta = job_spec.template.metadata.clone().unwrap();
    let secret: Secret = secrets.get(&s.job_name).await.unwrap();
    for (what, meta) in [
        ("Job", &job.metadata),
        ("pod template", &template_meta),
        ("Secret", &created.metadata),
        ("Secret now", &secret.metadata),
    ] {
        // The job controller adds its own two labels to the template (and so to the pods).
        let mut labels = meta.labels.clone().unwrap_or_default();
        if what == "pod template" {
            assert_eq!(
                labels.remove("job-name").as_deref(),
                Some(s.job_name.as_str())
            );
            assert!(labels.remove("controller-uid").is_some());
        }
        assert_eq!(labels, want_labels, "labels of the {what}");
        // The Job alone also carries the raw ids, for an instance that adopts it.
        let mut want_annotations = config.extra_annotations.clone();
        if what == "Job" {
            want_annotations.insert(
                "oz-agent-worker.warp.dev/task-id".to_owned(),
                s.spec.task_id.as_str().to_owned(),
            );
            want_annotations.insert(
                "oz-agent-worker.warp.dev/execution-id".to_owned(),
                s.spec.execution_id.clone(),
            );
        }
        assert_eq!(
            meta.annotations.as_ref(),
            Some(&want_annotations),
            "annotations of the {what}"
        );
    }
    let pod: Pod = Api::namespaced(s.admin.clone(), &s.namespace)
        .get(&s.pod)
        .await
        .unwrap();
    let pod_labels = pod.metadata.labels.unwrap();
    for (key, value) in &want_labels {
        assert_eq!(pod_labels.get(key), Some(value), "pod label {key}");
    }
    assert_eq!(
        job_spec.active_deadline_seconds,
        Some(28_800),
        "8 h by default"
    );

    // The real kubelet runs the pod to completion.
    assert_eq!(finish(&mut s).await, Ok(Exit::Succeeded));
    job_gone(&s.admin, &s.namespace, &s.job_name).await;
}

#[tokio::test]
async fn kubernetes_exit_code_n_is_container_exit_with_the_code_and_keeps_the_job() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let mut s = started_on_node(|_| {}, &[("OZ_STANDIN_EXIT", "3")]).await;
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
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let timeout = Duration::from_secs(2);
    let before = Instant::now();
    // A node selector no node matches: the real scheduler marks the pod Unschedulable.
    let mut s = started_on_node(
        |c| {
            c.unschedulable_timeout = Some(timeout);
            c.pod_template = Some(json!({ "nodeSelector": { "oz-test/pool": "nowhere" } }));
        },
        &[],
    )
    .await;
    let pod: Pod = Api::namespaced(s.admin.clone(), &s.namespace)
        .get(&s.pod)
        .await
        .unwrap();
    let created = pod.metadata.creation_timestamp.unwrap().0;
    let failure = finish(&mut s).await.unwrap_err();
    let (now, elapsed) = (k8s_openapi::jiff::Timestamp::now(), before.elapsed());
    assert_eq!(failure.reason, FailureReason::Unschedulable);
    assert!(
        failure.message.contains("0/1 nodes are available"),
        "{}",
        failure.message
    );
    // Not before the timeout: counted from the pod's creationTimestamp (as the Go worker counts it), which the
    // server keeps to the second, so from the test's own clock at most 1 s less.
    let since_creation = now.as_millisecond() - created.as_millisecond();
    assert!(
        since_creation >= timeout.as_millis() as i64,
        "failed {since_creation} ms after the pod's creationTimestamp, before the {timeout:?} timeout"
    );
    assert!(
        elapsed >= timeout - Duration::from_secs(1),
        "failed {elapsed:?} after the task started"
    );
}

#[tokio::test]
async fn kubernetes_image_pull_failure_carries_the_waiting_reason() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let admin = k8s::admin().await;
    let config = k8s::node_worker_config(&k8s::namespace(&admin).await);
    let spec = k8s::task_spec_on(
        "oz-test/absent:never-built",
        &k8s::node_sidecar(),
        SECRET,
        &[],
    );
    let mut s = start(config, spec).await;
    let failure = finish(&mut s).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::ImagePull);
    assert!(
        failure.message.contains("container task in pod")
            && failure.message.contains("is waiting: ErrImageNeverPull"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn kubernetes_pretend_kubelet_eviction_is_evicted() {
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
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let mut s = started_on_node(
        |c| c.active_deadline_seconds = Some(2),
        &[("OZ_STANDIN_SLEEP", "300")],
    )
    .await;
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
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let mut s = started_on_node(|_| {}, &[("OZ_STANDIN_SLEEP", "300")]).await;
    s.cancel.cancel();
    assert_eq!(finish(&mut s).await, Ok(Exit::Cancelled));
    job_gone(&s.admin, &s.namespace, &s.job_name).await;
    let secrets: Api<Secret> = Api::namespaced(s.admin.clone(), &s.namespace);
    let pods: Api<Pod> = Api::namespaced(s.admin.clone(), &s.namespace);
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
async fn kubernetes_pretend_kubelet_pod_template_survives_a_round_trip_through_the_server() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let admin = k8s::admin().await;
    let mut config = k8s::worker_config(&k8s::namespace(&admin).await);
    config.pod_template = Some(json!({
        "nodeName": k8s::PRETEND_NODE,
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
    k8s::apply_documented_role(&k8s::admin().await).await;
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
        text.contains(
            "pods/log: get; events: list; coordination.k8s.io/leases: get, list, watch, create, \
             update, patch, delete; grant the Role"
        ),
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
async fn kubernetes_pretend_kubelet_daemon_shutdown_leaves_the_running_job_and_a_restarted_worker_finds_it()
 {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let admin = k8s::admin().await;
    let namespace = k8s::namespace(&admin).await;
    let worker_id = format!("oz-restart-{:08x}", fastrand::u32(..));
    let cp = daemon::control_plane().await;
    let daemon = k8s::spawn_daemon(&cp, &namespace, &worker_id).await;
    cp.wait_connections(WAIT, |c| c.iter().any(|c| c.open))
        .await
        .expect("the daemon connects");
    let task_id = format!("019f5de4-{:04x}-762e-92ed-199c971abcba", fastrand::u16(..));
    let data = daemon::assignment_with_secret(&task_id, SECRET);
    cp.assign(&data).unwrap();
    let claimed = daemon::next(&cp).await;
    assert!(
        matches!(&claimed.message, Some(WorkerMessage::TaskClaimed { task_id: id, .. }) if *id == task_id),
        "{claimed:?}"
    );
    let names = TaskNames::new(
        &worker_id,
        &task_id,
        data["execution_id"].as_str().unwrap(),
        &BTreeMap::new(),
    );
    let pod = k8s::task_pod(&admin, &namespace, &names).await;
    k8s::set_pod_status(&admin, &namespace, &pod, PodStatus::Running).await;
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &namespace);
    let uid = jobs.get(&names.job_name).await.unwrap().metadata.uid;

    // The daemon that runs the task stops (its executor's shutdown included).
    daemon.stop().await.expect("the daemon stops cleanly");
    let job = jobs
        .get_opt(&names.job_name)
        .await
        .unwrap()
        .expect("the Job survives the shutdown");
    assert_eq!(job.metadata.uid, uid, "the same Job");
    assert!(
        job.metadata.deletion_timestamp.is_none(),
        "not being deleted"
    );
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
    assert!(
        pods.get_opt(&pod).await.unwrap().is_some(),
        "its pod runs on"
    );
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
    assert!(
        secrets.get_opt(&names.job_name).await.unwrap().is_some(),
        "its Secret stays"
    );
    if let Some(received) = cp.next_message(Duration::ZERO).await {
        assert!(
            !received
                .message
                .as_ref()
                .is_some_and(WorkerMessage::is_terminal),
            "no terminal report for a preserved task: {received:?}"
        );
    }

    // Another worker's Job in the same namespace, to show the server filters by worker.
    let decoy: Job = serde_json::from_value(json!({
        "metadata": { "name": "decoy", "labels": {
            "app.kubernetes.io/managed-by": "oz-agent-worker", "oz-worker-hash": "0000000000000000" } },
        "spec": { "template": { "spec": { "restartPolicy": "Never", "nodeName": k8s::PRETEND_NODE,
            "containers": [{ "name": "c", "image": "oz-test/busybox:1" }] } } }
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &decoy).await.unwrap();
    // A restarted worker (same id, new executor) finds its Job by its labels.
    let mut config = k8s::worker_config(&namespace);
    config.worker_id = worker_id;
    let restarted = KubernetesExecutor::without_preflight(&config)
        .await
        .unwrap();
    assert_eq!(
        restarted.worker_jobs().await.unwrap(),
        std::slice::from_ref(&names.job_name)
    );
}

#[tokio::test]
async fn kubernetes_an_external_delete_of_the_job_is_job_watch() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let mut s = started_on_node(|_| {}, &[("OZ_STANDIN_SLEEP", "300")]).await;
    let jobs: Api<Job> = Api::namespaced(s.admin.clone(), &s.namespace);
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

#[tokio::test]
async fn kubernetes_pretend_kubelet_concurrent_tasks_share_one_job_watch_and_one_pod_watch() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let admin = k8s::admin().await;
    let config = k8s::worker_config(&k8s::namespace(&admin).await);
    let executor = KubernetesExecutor::connect(&config).await.expect("connect");
    assert_eq!(executor.watch_lists(), 0, "no watch before the first task");
    let cancel = CancellationToken::new();
    let mut runs = Vec::new();
    let mut pods = Vec::new();
    for _ in 0..4 {
        let spec = k8s::task_spec(SECRET);
        let names = k8s::names(&config, &spec);
        let (executor, token) = (executor.clone(), cancel.clone());
        runs.push(tokio::spawn(
            async move { executor.run(&spec, token).await },
        ));
        pods.push(k8s::task_pod(&admin, &config.namespace, &names).await);
    }
    // Every task's pod exists; each task waits on its slice of the shared state. (The API
    // server's own watcher count is in benches/kubernetes.rs, where no other test runs.)
    assert_eq!(
        executor.watch_lists(),
        2,
        "one list per watch, not per task"
    );
    // One pod fails (the pretend kubelet): only its task ends, with its own failure.
    k8s::set_pod_status(&admin, &config.namespace, &pods[0], PodStatus::Evicted).await;
    let first = tokio::time::timeout(WAIT, runs.remove(0))
        .await
        .expect("the evicted task ends")
        .unwrap();
    assert_eq!(first.unwrap_err().reason, FailureReason::Evicted);
    assert!(runs.iter().all(|r| !r.is_finished()), "the others wait on");
    cancel.cancel();
    for run in runs {
        let outcome = tokio::time::timeout(WAIT, run).await.unwrap().unwrap();
        assert_eq!(outcome, Ok(Exit::Cancelled));
    }
}

//! Kubernetes test harness: the cluster started by scripts/setup/40-kubernetes.sh (API server,
//! job controller, scheduler and one real kubelet on the machine's Docker Engine), an admin
//! client, the daemon on the Kubernetes backend, and "pretend kubelet" helpers that patch pod
//! status, for the states the real kubelet cannot be made to produce on demand (eviction); pods
//! meant for them are bound to a node no kubelet serves ([`PRETEND_NODE`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use oz_agent_worker::adapters::kubernetes::KubernetesConfig;
use oz_agent_worker::adapters::kubernetes::names::TaskNames;
use oz_agent_worker::domain::spec::{SpecSettings, prepare};
use oz_agent_worker::domain::{Assignment, TaskId, TaskSpec};
use oz_local_control_plane::LocalControlPlane;
use serde_json::json;

use super::daemon::Daemon;

/// The admin kubeconfig, when the setup script ran.
pub(crate) fn admin_kubeconfig() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("OZ_TEST_KUBECONFIG")?);
    path.exists().then_some(path)
}

/// Whether the test API server is provisioned.
pub(crate) fn available() -> bool {
    admin_kubeconfig().is_some()
}

/// A kubeconfig path from an env var set by the setup script.
pub(crate) fn kubeconfig_from(var: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os(var).unwrap_or_else(|| panic!("{var} is set by 40-kubernetes.sh")),
    )
}

/// An admin client.
pub(crate) async fn admin() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(admin_kubeconfig().expect("provisioned")).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Applies the Role of this checkout's docs/kubernetes-rbac.yaml to the restricted identity's
/// namespace (the setup script applied the file as it was when the cluster started), so the
/// restricted tests run with exactly the documented rules.
pub(crate) async fn apply_documented_role(client: &Client) {
    use k8s_openapi::api::rbac::v1::Role;
    let namespace = std::env::var("OZ_TEST_KUBE_NAMESPACE_RBAC").expect("set by 40-kubernetes.sh");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes-rbac.yaml");
    let role: Role =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).expect("a Role");
    let name = role.metadata.name.clone().expect("named");
    Api::<Role>::namespaced(client.clone(), &namespace)
        .patch(
            &name,
            &PatchParams::apply("oz-agent-worker-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .expect("the documented Role applies");
}

/// A fresh namespace for one test.
pub(crate) async fn namespace(client: &Client) -> String {
    let name = format!("oz-t-{:08x}", fastrand::u32(..));
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

/// The node name of the pods whose status the tests patch (no kubelet serves it).
pub(crate) const PRETEND_NODE: &str = "oz-pretend-kubelet";

/// The worker config of the pretend-kubelet tests: admin kubeconfig, `namespace`, fast
/// unschedulable, and pods bound to a node no kubelet serves (`nodeName: oz-pretend-kubelet`),
/// so the real scheduler and kubelet leave them to the test.
pub(crate) fn worker_config(namespace: &str) -> KubernetesConfig {
    KubernetesConfig {
        worker_id: "oz-test-worker".to_owned(),
        namespace: namespace.to_owned(),
        kubeconfig: admin_kubeconfig(),
        unschedulable_timeout: Some(Duration::from_secs(1)),
        pod_template: Some(json!({ "nodeName": PRETEND_NODE })),
        ..KubernetesConfig::default()
    }
}

/// A task spec with a unique id, a secret env value and a sidecar.
pub(crate) fn task_spec(secret: &str) -> TaskSpec {
    task_spec_on("oz-test/busybox:1", "warp/agent:1", secret, &[])
}

/// A task spec for the real node: the busybox test image, the stand-in `oz` sidecar, `env`.
pub(crate) fn node_task_spec(secret: &str, env: &[(&str, &str)]) -> TaskSpec {
    task_spec_on(&node_image(), &node_sidecar(), secret, env)
}

/// A task spec with a unique id on `image` and `sidecar`, a secret env value and `env`.
pub(crate) fn task_spec_on(
    image: &str,
    sidecar: &str,
    secret: &str,
    env: &[(&str, &str)],
) -> TaskSpec {
    let id = format!("019f5de4-{:04x}-762e-92ed-199c971abcba", fastrand::u16(..));
    let mut assignment = Assignment::new(TaskId::parse(id).unwrap());
    assignment.execution_id = format!("exec-{:08x}", fastrand::u32(..));
    assignment.docker_image = Some(image.to_owned());
    assignment.sidecar_image = Some(sidecar.to_owned());
    assignment
        .env_vars
        .insert("GITHUB_TOKEN".to_owned(), secret.to_owned());
    for (name, value) in env {
        assignment
            .env_vars
            .insert((*name).to_owned(), (*value).to_owned());
    }
    prepare(&assignment, &SpecSettings::default())
}

/// The worker config of the real-node tests: like [`worker_config`], with pods for the real
/// scheduler and kubelet and `imagePullPolicy: Never` (nothing can be pulled).
pub(crate) fn node_worker_config(namespace: &str) -> KubernetesConfig {
    KubernetesConfig {
        pod_template: None,
        image_pull_policy: oz_agent_worker::adapters::kubernetes::ImagePullPolicy::Never,
        ..worker_config(namespace)
    }
}

/// The names the worker gives `spec`'s objects.
pub(crate) fn names(config: &KubernetesConfig, spec: &TaskSpec) -> TaskNames {
    TaskNames::new(
        &config.worker_id,
        spec.task_id.as_str(),
        &spec.execution_id,
        &config.extra_labels,
    )
}

/// Polls a probe until it returns `Some` (the shared helper, under the name these tests use).
pub(crate) use crate::support::eventually_some as eventually;

/// Waits for the task's pod (created by the real job controller) and returns its name.
pub(crate) async fn task_pod(client: &Client, namespace: &str, names: &TaskNames) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&names.pod_selector());
    eventually(
        "the job controller to create the pod",
        Duration::from_secs(30),
        || async {
            let listed = pods.list(&lp).await.ok()?;
            listed.items.first().and_then(|p| p.metadata.name.clone())
        },
    )
    .await
}

/// What the pretend kubelet reports.
pub(crate) enum PodStatus {
    /// The task container runs.
    Running,
    /// The task container exited with this code.
    Exited(i32),
    /// The scheduler found no node.
    Unschedulable,
    /// The image cannot be pulled.
    ImagePullFailed,
    /// The kubelet evicted the pod.
    Evicted,
}

/// Patches the pod's status as a kubelet would.
pub(crate) async fn set_pod_status(client: &Client, namespace: &str, pod: &str, status: PodStatus) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let container = |state: serde_json::Value| json!([{ "name": "task", "ready": false, "restartCount": 0, "image": "oz-test/busybox:1", "imageID": "", "state": state }]);
    let body = match status {
        PodStatus::Running => json!({ "phase": "Running", "startTime": now,
            "containerStatuses": container(json!({ "running": { "startedAt": now } })) }),
        PodStatus::Exited(code) => json!({
            "phase": if code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": container(json!({ "terminated": {
                "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": now, "finishedAt": now } })) }),
        PodStatus::Unschedulable => json!({ "phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu.", "lastTransitionTime": now }] }),
        PodStatus::ImagePullFailed => json!({ "phase": "Pending",
            "containerStatuses": container(json!({ "waiting": { "reason": "ErrImagePull",
                "message": "rpc error: pull access denied for nope/nope, repository does not exist" } })) }),
        PodStatus::Evicted => json!({ "phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory." }),
    };
    Api::<Pod>::namespaced(client.clone(), namespace)
        .patch_status(
            pod,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": body })),
        )
        .await
        .unwrap();
}

/// The labels the Go worker puts on a task's Job, pod template and Secret, worked out here from
/// the raw ids (SHA-256 straight from `ring`, not the worker's own helpers), with `extra`
/// underneath.
pub(crate) fn expected_labels(
    worker_id: &str,
    task_id: &str,
    execution_id: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let hash = |raw: &str| -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
        digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut labels = extra.clone();
    for (key, value) in [
        ("oz-worker-id", worker_id.to_lowercase()),
        ("oz-worker-hash", hash(worker_id)),
        ("oz-task-id", task_id.to_lowercase()),
        ("oz-task-hash", hash(task_id)),
        ("oz-execution-id", execution_id.to_lowercase()),
        ("oz-execution-hash", hash(execution_id)),
        ("app.kubernetes.io/managed-by", "oz-agent-worker".to_owned()),
    ] {
        labels.insert(key.to_owned(), value);
    }
    labels
}

/// Starts the real daemon (config file → bootstrap → run) on the Kubernetes backend against
/// the admin kubeconfig, `namespace`, as `worker_id`, connected to `cp`; its pods go to the
/// pretend kubelet's node.
pub(crate) async fn spawn_daemon(
    cp: &LocalControlPlane,
    namespace: &str,
    worker_id: &str,
) -> Daemon {
    let extra = format!("    pod_template: {{nodeName: {PRETEND_NODE}}}\n");
    spawn_daemon_with(cp, namespace, worker_id, &extra, &[]).await
}

/// Whether the test cluster has a node (a real kubelet and kube-scheduler, started by
/// 40-kubernetes.sh) and the busybox test images pods can run.
pub(crate) fn node_available() -> bool {
    available()
        && std::env::var_os("OZ_TEST_KUBE_NODE").is_some()
        && std::env::var_os("OZ_TEST_DOCKER_IMAGE").is_some()
        && std::env::var_os("OZ_TEST_KUBE_SIDECAR").is_some()
}

/// The busybox task image (local to the node's Docker Engine).
pub(crate) fn node_image() -> String {
    std::env::var("OZ_TEST_DOCKER_IMAGE").expect("set by 20-docker.sh")
}

/// The sidecar image whose `/entrypoint.sh` is the stand-in `oz` (with GNU tar, for the copy).
pub(crate) fn node_sidecar() -> String {
    std::env::var("OZ_TEST_KUBE_SIDECAR").expect("set by 40-kubernetes.sh")
}

/// Starts the real daemon on the Kubernetes backend like [`spawn_daemon`], with `extra` YAML
/// lines under `backend.kubernetes` (already indented by four spaces) and `args` appended.
pub(crate) async fn spawn_daemon_with(
    cp: &LocalControlPlane,
    namespace: &str,
    worker_id: &str,
    extra: &str,
    args: &[&str],
) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.yaml");
    let kubeconfig = admin_kubeconfig().expect("provisioned");
    std::fs::write(
        &config_file,
        format!(
            "worker_id: {worker_id}\nbackend:\n  kubernetes:\n    namespace: {namespace}\n    kubeconfig: {}\n{extra}",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let mut all = vec![
        "--config-file".to_owned(),
        config_file.display().to_string(),
        "--web-socket-url".to_owned(),
        cp.ws_url(),
        "--server-root-url".to_owned(),
        "http://127.0.0.1:1".to_owned(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    super::daemon::start(dir, all, &[])
        .await
        .expect("the daemon builds (Kubernetes preflight included)")
}

/// The ids of the Docker containers (any state) the kubelet made for the pod with `uid`.
pub(crate) fn pod_containers(uid: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.kubernetes.pod.uid={uid}"),
        ])
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "docker ps: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

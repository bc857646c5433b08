//! The real daemon on the Kubernetes backend, with tasks in real pods: the job controller,
//! kube-scheduler and a kubelet (dockershim on this machine's Docker Engine) started by
//! scripts/setup/40-kubernetes.sh run them, from the busybox test images (the sidecar's
//! `/entrypoint.sh` is the stand-in `oz`, scripts/setup/docker/standin-entrypoint.sh).

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use oz_agent_worker::adapters::kubernetes::names::TaskNames;
use oz_local_control_plane::LocalControlPlane;
use oz_protocol::WorkerMessage;
use serde_json::json;

use crate::support::daemon::{self, Daemon};
use crate::support::kubernetes as k8s;
use crate::support::require;

const SECRET: &str = "s3cr3t-node-token";
const WAIT: Duration = Duration::from_secs(90);

struct Node {
    admin: kube::Client,
    namespace: String,
    worker_id: String,
    cp: LocalControlPlane,
    daemon: Daemon,
    marks: tempfile::TempDir,
}

/// A fresh namespace, a host directory mounted at /marks in the task container, and the daemon
/// with `extra` YAML (`{marks}` is replaced by the directory) and `args`.
async fn node(extra: &str, args: &[&str]) -> Node {
    let admin = k8s::admin().await;
    let namespace = k8s::namespace(&admin).await;
    let worker_id = format!("oz-node-{:08x}", fastrand::u32(..));
    let marks = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        marks.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let image = k8s::node_image();
    let extra = format!(
        "    default_image: {image}\n    preflight_image: {image}\n    image_pull_policy: Never\n    unschedulable_timeout: 30s\n{}",
        extra.replace("{marks}", &marks.path().display().to_string())
    );
    // An operator Secret, for pod_template secretKeyRefs.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "oz-operator" }, "stringData": { "token": "operator-ref-value" } }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let cp = daemon::control_plane().await;
    let daemon = k8s::spawn_daemon_with(&cp, &namespace, &worker_id, &extra, args).await;
    cp.wait_connections(WAIT, |c| c.iter().any(|c| c.open))
        .await
        .expect("the daemon connects");
    Node {
        admin,
        namespace,
        worker_id,
        cp,
        daemon,
        marks,
    }
}

impl Node {
    /// Assigns a task on the test images with `env` added to the assignment's; returns its
    /// names once claimed.
    fn assign(&self, image: Option<&str>, env: &[(&str, &str)]) -> (String, TaskNames) {
        let task_id = format!("019f5de4-{:04x}-762e-92ed-199c971abcba", fastrand::u16(..));
        let mut data = daemon::assignment_with_secret(&task_id, SECRET);
        data["docker_image"] = json!(image.map_or_else(k8s::node_image, str::to_owned));
        data["sidecar_image"] = json!(k8s::node_sidecar());
        for (name, value) in env {
            data["env_vars"][*name] = json!(value);
        }
        self.cp.assign(&data).unwrap();
        let names = TaskNames::new(
            &self.worker_id,
            &task_id,
            data["execution_id"].as_str().unwrap(),
            &Default::default(),
        );
        (task_id, names)
    }

    /// The task's terminal report.
    async fn terminal(&self, task_id: &str) -> WorkerMessage {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let received = self
                .cp
                .next_message(left)
                .await
                .unwrap_or_else(|| panic!("no terminal report for {task_id} within {WAIT:?}"));
            if let Some(message) = received.message
                && message.is_terminal()
            {
                assert_eq!(message.task_id(), task_id, "{message:?}");
                return message;
            }
        }
    }

    fn mark(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.marks.path().join(name)).ok()
    }

    async fn pod(&self, names: &TaskNames) -> Pod {
        let name = k8s::task_pod(&self.admin, &self.namespace, names).await;
        Api::<Pod>::namespaced(self.admin.clone(), &self.namespace)
            .get(&name)
            .await
            .unwrap()
    }
}

fn failed(message: &WorkerMessage) -> (String, Option<i64>, String) {
    match message {
        WorkerMessage::TaskFailed {
            failure_reason,
            exit_code,
            message,
            ..
        } => (
            failure_reason.clone().unwrap_or_default(),
            *exit_code,
            message.clone(),
        ),
        other => panic!("expected task_failed, got {other:?}"),
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[tokio::test]
async fn kubernetes_node_runs_the_task_in_a_real_pod_with_sidecar_argv_env_setup_and_workspace() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let admin = k8s::admin().await;
    // The pod_template's secretKeyRef points at the operator Secret `node` creates.
    let extra = r#"    setup_command: "env > /workspace/setup-env; echo setup-ran > /workspace/setup-ran"
    teardown_command: "echo teardown-ran > /marks/teardown"
    workspace_size_limit: 64Mi
    pod_template:
      volumes: [{name: marks, hostPath: {path: "{marks}"}}]
      initContainers:
      - name: collect
        image: IMAGE
        imagePullPolicy: Never
        command: [/bin/sh, -c, "cp /workspace/setup-env /marks/setup-env; echo \"FROM_SECRET_REF=$FROM_SECRET_REF\" > /marks/ref-env"]
        env: [{name: FROM_SECRET_REF, valueFrom: {secretKeyRef: {name: oz-operator, key: token}}}]
        volumeMounts: [{name: workspace, mountPath: /workspace}, {name: marks, mountPath: /marks}]
      containers:
      - name: task
        env: [{name: FROM_SECRET_REF, valueFrom: {secretKeyRef: {name: oz-operator, key: token}}}]
        volumeMounts: [{name: marks, mountPath: /marks}]
"#
    .replace("IMAGE", &k8s::node_image());
    let n = node(
        &extra,
        &[
            "--no-cleanup",
            "-e",
            "FROM_FLAG=flag-value",
            "-e",
            "OZ_STANDIN_ENV_FILE=/marks/task-env",
            "-e",
            "OZ_STANDIN_READ=/workspace/setup-ran",
        ],
    )
    .await;
    let (task_id, names) = n.assign(None, &[("FROM_ASSIGNMENT", "assignment-value")]);
    let message = n.terminal(&task_id).await;
    assert!(
        matches!(message, WorkerMessage::TaskCompleted { .. }),
        "{message:?}"
    );

    let pod = n.pod(&names).await;
    let spec = pod.spec.clone().unwrap();
    let status = pod.status.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("localhost"), "scheduled");
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    // The init containers really ran: the sidecar copy, the setup, the template's own.
    let init: Vec<(String, i32)> = status
        .init_container_statuses
        .unwrap()
        .into_iter()
        .map(|c| {
            let code = c.state.unwrap().terminated.expect("terminated").exit_code;
            (c.name, code)
        })
        .collect();
    assert_eq!(
        init,
        [
            ("copy-sidecar-0".to_owned(), 0),
            ("setup".to_owned(), 0),
            ("collect".to_owned(), 0)
        ]
    );
    let workspace = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "workspace")
        .unwrap();
    assert_eq!(
        workspace.empty_dir.unwrap().size_limit.unwrap().0,
        "64Mi",
        "workspace_size_limit on the emptyDir the kubelet made"
    );

    // The task ran the stand-in `oz` copied from the sidecar, with exactly the Job's argv, in
    // the workspace the setup wrote to.
    let task = spec.containers.iter().find(|c| c.name == "task").unwrap();
    let args = task.args.clone().unwrap();
    assert_eq!(args[..2], ["agent", "run"], "{args:?}");
    let logs = Api::<Pod>::namespaced(admin.clone(), &n.namespace)
        .logs(
            pod.metadata.name.as_deref().unwrap(),
            &LogParams {
                container: Some("task".to_owned()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let output = lines(&logs);
    assert!(
        output.contains(&format!("standin: args: {}", args.join(" ")).as_str()),
        "{logs}"
    );
    assert!(output.contains(&"standin: pwd: /workspace"), "{logs}");
    assert!(
        output.contains(&"setup-ran"),
        "the setup wrote the workspace: {logs}"
    );

    // The environment: the assignment's, `-e`, the template's secretKeyRef.
    let setup_env = n.mark("setup-env").expect("the setup's env");
    for line in [
        "FROM_ASSIGNMENT=assignment-value",
        "FROM_FLAG=flag-value",
        &format!("GITHUB_ACCESS_TOKEN={SECRET}"),
        &format!("OZ_RUN_ID={task_id}"),
    ] {
        assert!(lines(&setup_env).contains(&line), "{line} in {setup_env}");
    }
    assert_eq!(
        n.mark("ref-env").as_deref(),
        Some("FROM_SECRET_REF=operator-ref-value\n")
    );
    let task_env = n
        .mark("task-env")
        .expect("the stand-in wrote its env names");
    for name in [
        "FROM_ASSIGNMENT",
        "FROM_FLAG",
        "FROM_SECRET_REF",
        "GITHUB_ACCESS_TOKEN",
        "OZ_RUN_ID",
    ] {
        assert!(lines(&task_env).contains(&name), "{name} in {task_env}");
    }
    assert!(
        n.mark("teardown").is_none(),
        "the teardown runs when the pod is stopped, not after a normal exit"
    );
    n.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn kubernetes_node_preflight_pod_has_the_preflight_image_and_is_scheduled_on_the_node() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let admin = k8s::admin().await;
    let namespace = k8s::namespace(&admin).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
    let version = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = pods
        .watch(&WatchParams::default(), &version)
        .await
        .unwrap()
        .boxed();
    let cp = daemon::control_plane().await;
    let image = k8s::node_image();
    let extra = format!("    preflight_image: {image}\n    image_pull_policy: Never\n");
    let daemon = k8s::spawn_daemon_with(&cp, &namespace, "oz-node-preflight", &extra, &[]).await;
    let mut seen = Vec::new();
    let preflight = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if let WatchEvent::Added(pod) | WatchEvent::Modified(pod) = event.unwrap() {
                seen.push(pod.clone());
                if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("localhost") {
                    return pod;
                }
            }
        }
        panic!("the pod watch ended");
    })
    .await
    .expect("the preflight pod is scheduled on the node");
    assert!(
        preflight
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("oz-preflight-"),
        "{:?}",
        preflight.metadata.name
    );
    let spec = preflight.spec.unwrap();
    assert!(
        spec.containers
            .iter()
            .all(|c| c.image.as_deref() == Some(image.as_str())),
        "{:?}",
        spec.containers
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn kubernetes_node_exit_code_n_is_container_exit_with_the_code() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let n = node("", &["-e", "OZ_STANDIN_EXIT=7"]).await;
    let (task_id, _) = n.assign(None, &[]);
    let (reason, code, message) = failed(&n.terminal(&task_id).await);
    assert_eq!(
        (reason.as_str(), code),
        ("container_exit", Some(7)),
        "{message}"
    );
    assert!(message.contains("exited with code 7"), "{message}");
    assert!(!message.contains(SECRET), "{message}");
    n.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn kubernetes_node_never_pull_of_an_absent_image_fails_fast_as_image_pull() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let n = node("", &[]).await;
    let started = std::time::Instant::now();
    let (task_id, _) = n.assign(Some("oz-test/absent:never-built"), &[]);
    let (reason, _, message) = failed(&n.terminal(&task_id).await);
    assert_eq!(reason, "image_pull", "{message}");
    assert!(message.contains("ErrImageNeverPull"), "{message}");
    eprintln!("image_pull reported after {:?}", started.elapsed());
    n.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn kubernetes_node_active_deadline_stops_the_pod() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let n = node(
        "    active_deadline_seconds: 3\n",
        &["-e", "OZ_STANDIN_SLEEP=300"],
    )
    .await;
    let (task_id, _) = n.assign(None, &[]);
    let (reason, _, message) = failed(&n.terminal(&task_id).await);
    assert_eq!(reason, "active_deadline", "{message}");
    n.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn kubernetes_node_cancel_runs_the_teardown_deletes_the_job_and_its_containers() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let extra = r#"    teardown_command: "echo teardown-ran > /marks/teardown"
    pod_template:
      volumes: [{name: marks, hostPath: {path: "{marks}"}}]
      containers: [{name: task, volumeMounts: [{name: marks, mountPath: /marks}]}]
"#;
    let n = node(extra, &["-e", "OZ_STANDIN_SLEEP=300"]).await;
    let (task_id, names) = n.assign(None, &[]);
    let pods: Api<Pod> = Api::namespaced(n.admin.clone(), &n.namespace);
    let pod_name = k8s::task_pod(&n.admin, &n.namespace, &names).await;
    let pod = k8s::eventually("the task container to run", WAIT, || async {
        let pod = pods.get(&pod_name).await.ok()?;
        let running = pod
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .any(|c| c.name == "task" && c.state.as_ref().is_some_and(|s| s.running.is_some()));
        running.then_some(pod)
    })
    .await;
    let uid = pod.metadata.uid.unwrap();
    assert!(
        !k8s::pod_containers(&uid).is_empty(),
        "the pod's containers are on the engine"
    );
    n.cp.cancel(&task_id).unwrap();
    let message = n.terminal(&task_id).await;
    assert!(
        matches!(&message, WorkerMessage::TaskCompleted { task_state: Some(s), .. } if s == "CANCELLED")
            || matches!(&message, WorkerMessage::TaskCompleted { .. }),
        "{message:?}"
    );
    let jobs: Api<Job> = Api::namespaced(n.admin.clone(), &n.namespace);
    k8s::eventually("the Job to be deleted", WAIT, || async {
        matches!(jobs.get_opt(&names.job_name).await, Ok(None)).then_some(())
    })
    .await;
    k8s::eventually("the pod's containers to leave the engine", WAIT, || async {
        k8s::pod_containers(&uid).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        n.mark("teardown").as_deref(),
        Some("teardown-ran\n"),
        "the teardown ran as the pod stopped"
    );
    n.daemon.stop().await.unwrap();
}

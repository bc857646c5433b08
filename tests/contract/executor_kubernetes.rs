//! The executor contract against the Kubernetes backend (`KubernetesExecutor`) on the real node
//! of scripts/setup/40-kubernetes.sh (kubelet with dockershim on the machine's Docker Engine),
//! with the busybox task image and the stand-in `oz` sidecar, in a fresh namespace per case.
//!
//! The stand-in records the env var names it saw (`OZ_STANDIN_ENV_FILE`) in a host temp dir
//! mounted at [`ENV_DIR`] through the `pod_template` (a `hostPath` volume).
//!
//! Leftovers, the Kubernetes way: deletion is asynchronous (the garbage collector removes a
//! deleted Job's pods and Secret, the kubelet stops the containers), so the harness waits for
//! them to go; and a failed task's Job stays, finished, until its `ttlSecondsAfterFinished` by
//! design (for `kubectl logs`), so a finished Job with a TTL and no running pod is not one.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use oz_agent_worker::adapters::kubernetes::names::{LABEL_TASK_ID, sanitize_label_value};
use oz_agent_worker::adapters::kubernetes::{ImagePullPolicy, KubernetesExecutor};
use oz_agent_worker::domain::spec::{SpecSettings, prepare};
use oz_agent_worker::domain::{Assignment, FailureReason, TaskId, TaskSpec};
use serde_json::json;
use tempfile::TempDir;

use super::executor::{Harness, Workload, executor_contract};
use crate::support::kubernetes as k8s;
use crate::support::require;

/// Where the harness's host temp dir is mounted in every task container.
pub(crate) const ENV_DIR: &str = "/contract";
/// How long a task container may take to run, and deletions to finish.
const BOUND: Duration = Duration::from_secs(60);

/// A `KubernetesExecutor` on its own namespace, with the test images and a host dir for the
/// stand-in's env-name files.
pub(crate) struct KubernetesHarness {
    executor: KubernetesExecutor,
    admin: kube::Client,
    namespace: String,
    env_dir: TempDir,
}

impl KubernetesHarness {
    /// `None` (after `require`) when the cluster has no node.
    pub(crate) async fn new() -> Option<Self> {
        if !require("kubernetes node", k8s::node_available()) {
            return None;
        }
        let admin = k8s::admin().await;
        let namespace = k8s::namespace(&admin).await;
        let env_dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            env_dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let mut config = k8s::node_worker_config(&namespace);
        config.worker_id = format!("oz-contract-{:08x}", fastrand::u32(..));
        config.image_pull_policy = ImagePullPolicy::Never;
        config.preflight_image = k8s::node_image();
        config.pod_template = Some(json!({
            "volumes": [{ "name": "contract", "hostPath": { "path": env_dir.path() } }],
            "containers": [{ "name": "task", "volumeMounts": [{ "name": "contract", "mountPath": ENV_DIR }] }]
        }));
        let executor = KubernetesExecutor::connect(&config).await.expect("connect");
        Some(Self {
            executor,
            admin,
            namespace,
            env_dir,
        })
    }

    fn selector(id: &str) -> ListParams {
        ListParams::default().labels(&format!("{LABEL_TASK_ID}={}", sanitize_label_value(id)))
    }

    async fn leftovers_now(&self, id: &str) -> Vec<String> {
        let lp = Self::selector(id);
        let mut left = Vec::new();
        let jobs: Api<Job> = Api::namespaced(self.admin.clone(), &self.namespace);
        for job in jobs.list(&lp).await.expect("list Jobs").items {
            let status = job.status.clone().unwrap_or_default();
            let finished = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| (c.type_ == "Failed" || c.type_ == "Complete") && c.status == "True");
            let ttl = job
                .spec
                .as_ref()
                .and_then(|s| s.ttl_seconds_after_finished)
                .is_some();
            if !(finished && ttl) {
                left.push(format!("Job {:?} still exists", job.metadata.name));
            }
        }
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.namespace);
        for pod in pods.list(&lp).await.expect("list pods").items {
            let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
            if phase != "Succeeded" && phase != "Failed" {
                left.push(format!("pod {:?} is {phase}", pod.metadata.name));
            }
            let uid = pod.metadata.uid.unwrap_or_default();
            let running = std::process::Command::new("docker")
                .args([
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=io.kubernetes.pod.uid={uid}"),
                ])
                .output()
                .expect("docker ps");
            if !running.stdout.is_empty() {
                left.push(format!("containers of pod {uid} still running"));
            }
        }
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), &self.namespace);
        let jobs_left = jobs.list(&lp).await.expect("list Jobs").items.len();
        for secret in secrets.list(&lp).await.expect("list Secrets").items {
            // A Secret goes with its Job (owner reference); it stays with a finished Job.
            if jobs_left == 0 {
                left.push(format!("Secret {:?} still exists", secret.metadata.name));
            }
        }
        left
    }
}

impl Harness for KubernetesHarness {
    type Exec = KubernetesExecutor;

    fn executor(&self) -> &KubernetesExecutor {
        &self.executor
    }

    fn spec(&self, id: &str, workload: Workload, env: &[(&str, &str)]) -> TaskSpec {
        let mut assignment = Assignment::new(TaskId::parse(id).expect("non-empty id"));
        // A new execution per run, as the server sends for a retried task (the Job name and
        // the Secret's differ, so a run never waits for the previous one's deletion).
        assignment.execution_id = format!("{id}-{:08x}", fastrand::u32(..));
        assignment.docker_image = Some(k8s::node_image());
        assignment.sidecar_image = Some(k8s::node_sidecar());
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
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.namespace);
        let lp = Self::selector(id);
        k8s::eventually(
            &format!("the task container of {id} to run"),
            BOUND,
            || async {
                let listed = pods.list(&lp).await.ok()?;
                listed
                    .items
                    .iter()
                    .any(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.container_statuses.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| {
                                    c.name == "task"
                                        && c.state.as_ref().is_some_and(|s| s.running.is_some())
                                })
                            })
                    })
                    .then_some(())
            },
        )
        .await;
    }

    fn seen_env_names(&self, id: &str) -> Vec<String> {
        let file = self.env_dir.path().join(format!("{id}.env"));
        std::fs::read_to_string(file)
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    async fn leftovers(&self, id: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let left = self.leftovers_now(id).await;
            if left.is_empty() || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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

executor_contract!(kubernetes, super::KubernetesHarness::new().await);

//! `KubernetesExecutor`: the `Executor` port on Kubernetes. One Job (plus a Secret holding the
//! task env values, owned by the Job) per task; the outcome comes from `watch`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::redact::Redactor;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use tokio_util::sync::CancellationToken;

use super::client::{
    CountingClient, KubeError, api_code, api_message, client_config, counting_client,
};
use super::config::KubernetesConfig;
use super::job::task_objects;
use super::names::{TaskNames, worker_job_selector};
use super::preflight::preflight;
use super::template::parse_pod_template;
use super::watch::{Informer, JobWatch, Outcome};
use crate::domain::{Exit, FailureReason, TaskFailure};
use crate::ports::executor::{Executor, TaskSpec};

/// Default period of a task's own checks: the events of its pending pods, and a GET of a Job the
/// shared watch has not shown yet.
pub(super) const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Bound on the deletes done after a task ends.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the pod output written to the worker log per container.
const LOG_LIMIT_BYTES: i64 = 1 << 20;

/// Runs each task as a Kubernetes Job. Cheap to share: holds a cloneable client.
#[derive(Clone)]
pub struct KubernetesExecutor {
    client: CountingClient,
    config: Arc<KubernetesConfig>,
    template: Arc<PodSpec>,
    resync_interval: Duration,
    /// The shared Job and Pod watches, started with the first task.
    informer: Arc<OnceLock<Informer>>,
}

impl KubernetesExecutor {
    /// Selects the cluster (explicit kubeconfig, else in-cluster, else the default loading
    /// rules), checks the API server, the RBAC permissions and admission with a preflight Job.
    ///
    /// # Errors
    /// [`KubeError`] with a message naming what to fix.
    pub async fn connect(config: &KubernetesConfig) -> Result<Self, KubeError> {
        let executor = Self::without_preflight(config).await?;
        preflight(&executor.client, config, &executor.template).await?;
        tracing::info!(namespace = %config.namespace, server = %executor.client.server, "Kubernetes backend ready.");
        Ok(executor)
    }

    /// Like [`KubernetesExecutor::connect`] without touching the API server.
    ///
    /// # Errors
    /// [`KubeError::Config`] or [`KubeError::ClientConfig`].
    pub async fn without_preflight(config: &KubernetesConfig) -> Result<Self, KubeError> {
        let template = validate(config)?;
        let client = counting_client(client_config(config).await?)?;
        Ok(Self {
            client,
            config: Arc::new(config.clone()),
            template: Arc::new(template),
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            informer: Arc::default(),
        })
    }

    /// An executor on an existing client (e.g. a mock API server), without the preflight.
    /// [`KubernetesExecutor::api_requests`] stays 0 for it.
    ///
    /// # Errors
    /// [`KubeError::Config`].
    pub fn with_client(client: kube::Client, config: &KubernetesConfig) -> Result<Self, KubeError> {
        let template = validate(config)?;
        Ok(Self {
            client: CountingClient {
                client,
                requests: Default::default(),
                server: "(custom client)".to_owned(),
            },
            config: Arc::new(config.clone()),
            template: Arc::new(template),
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            informer: Arc::default(),
        })
    }

    /// Changes the period of a task's own checks (default 30 s).
    #[must_use]
    pub fn with_resync_interval(mut self, interval: Duration) -> Self {
        self.resync_interval = interval;
        self
    }

    /// API requests sent since construction (preflight included).
    pub fn api_requests(&self) -> u64 {
        self.client.requests()
    }

    /// Lists done by the worker's shared Job and Pod watches so far: 0 before the first task,
    /// 2 once both watches started, one more per re-list (after a `410 Gone`, say).
    pub fn watch_lists(&self) -> u64 {
        self.informer.get().map_or(0, Informer::lists)
    }

    /// The shared watches, started on first use (they live as long as this executor's clones).
    fn informer(&self) -> &Informer {
        self.informer.get_or_init(|| {
            let ns = &self.config.namespace;
            Informer::start(
                Api::namespaced(self.client.client.clone(), ns),
                Api::namespaced(self.client.client.clone(), ns),
                &worker_job_selector(&self.config.worker_id),
            )
        })
    }

    /// Names of every Job this worker created (any task, any state), found with
    /// [`worker_job_selector`]: what a restarted worker would re-attach to.
    ///
    /// # Errors
    /// The API server's error for the list.
    pub async fn worker_jobs(&self) -> Result<Vec<String>, kube::Error> {
        let jobs: Api<Job> = Api::namespaced(self.client.client.clone(), &self.config.namespace);
        let selector = worker_job_selector(&self.config.worker_id);
        let listed = jobs.list(&ListParams::default().labels(&selector)).await?;
        Ok(listed
            .items
            .into_iter()
            .filter_map(|job| job.metadata.name)
            .collect())
    }

    /// Creates the Job, then the Secret with the Job as its owner from the start.
    ///
    /// Why this order: the Secret holds the task's secrets, so it must never exist without an
    /// owner (a crash between "create Secret" and "make the Job own it" would leave it in the
    /// cluster forever). An owner reference needs the owner's uid, so the Job comes first.
    /// The Job's pod cannot start its containers before the Secret exists: the kubelet reports
    /// `CreateContainerConfigError` and retries; in practice the Secret lands one round trip
    /// after the Job, long before the pod is scheduled and its init containers have run. A
    /// crash between the two creates leaves a Job whose pod waits for a Secret that never comes;
    /// it holds no secret, ends at `active_deadline_seconds` and goes with its TTL (and carries
    /// the worker's labels, so a restarted worker can find it). The only stricter order, a
    /// suspended Job (`spec.suspend`) resumed once the Secret exists, needs Kubernetes 1.21 (1.20
    /// drops the field silently, so it would not even be safer there), one more request per task
    /// and `patch` on Jobs in the Role; it is not worth it.
    async fn create(&self, spec: &TaskSpec, names: &TaskNames) -> Result<(), TaskFailure> {
        let mut objects = task_objects(&self.config, &self.template, spec, names)?;
        let ns = &self.config.namespace;
        let jobs: Api<Job> = Api::namespaced(self.client.client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.client.clone(), ns);
        let create_failure = |what: &str, e: &kube::Error| {
            TaskFailure::backend(
                FailureReason::JobCreate,
                format!("failed to create Kubernetes {what}: {}", api_message(e)),
            )
        };
        let job = jobs
            .create(&PostParams::default(), &objects.job)
            .await
            .map_err(|e| create_failure("Job", &e))?;
        // The garbage collector deletes the Secret with the Job.
        objects.secret.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "batch/v1".to_owned(),
            kind: "Job".to_owned(),
            name: names.job_name.clone(),
            uid: job.metadata.uid.clone().unwrap_or_default(),
            ..OwnerReference::default()
        }]);
        if let Err(e) = secrets
            .create(&PostParams::default(), &objects.secret)
            .await
        {
            // Without its Secret the pod would wait until the deadline: stop it now.
            self.delete_job(&names.job_name).await;
            return Err(create_failure("Secret for the task environment", &e));
        }
        Ok(())
    }

    async fn delete_job(&self, name: &str) {
        let jobs: Api<Job> = Api::namespaced(self.client.client.clone(), &self.config.namespace);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match tokio::time::timeout(CLEANUP_TIMEOUT, jobs.delete(name, &dp)).await {
            Ok(Ok(_)) => tracing::debug!(job = %name, "Deleted Kubernetes Job."),
            Ok(Err(e)) if api_code(&e) == Some(404) => {}
            Ok(Err(e)) => {
                tracing::warn!(job = %name, error = %api_message(&e), "Could not delete Kubernetes Job.")
            }
            Err(_) => tracing::warn!(job = %name, "Timed out deleting Kubernetes Job."),
        }
    }

    /// Writes the failed pods' output (1 MiB per container) to the worker log, with every task
    /// env value masked.
    async fn log_pod_output(&self, names: &TaskNames, redactor: &Redactor) {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.client.clone(), &self.config.namespace);
        let Ok(listed) = pods
            .list(&ListParams::default().labels(&names.pod_selector()))
            .await
        else {
            return;
        };
        for pod in listed.items {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let spec = pod.spec.unwrap_or_default();
            let containers = spec
                .init_containers
                .unwrap_or_default()
                .into_iter()
                .chain(spec.containers);
            for container in containers {
                let lp = LogParams {
                    container: Some(container.name.clone()),
                    limit_bytes: Some(LOG_LIMIT_BYTES),
                    ..LogParams::default()
                };
                match pods.logs(&pod_name, &lp).await {
                    Ok(output) => {
                        tracing::info!(job = %names.job_name, "[{pod_name}/{}]\n{}", container.name, redactor.redact(&output))
                    }
                    Err(e) => {
                        tracing::debug!(pod = %pod_name, container = %container.name, error = %api_message(&e), "No pod output.")
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Executor for KubernetesExecutor {
    async fn run(&self, spec: &TaskSpec, cancel: CancellationToken) -> Result<Exit, TaskFailure> {
        let config = &self.config;
        let names = TaskNames::new(
            &config.worker_id,
            spec.task_id.as_str(),
            &spec.execution_id,
            &config.extra_labels,
        );
        if cancel.is_cancelled() {
            return Ok(Exit::Cancelled);
        }
        self.create(spec, &names).await?;
        tracing::info!(job = %names.job_name, namespace = %config.namespace, task_id = %spec.task_id, "Created Kubernetes Job.");
        let watch = JobWatch {
            informer: self.informer().clone(),
            jobs: Api::namespaced(self.client.client.clone(), &config.namespace),
            events: Api::namespaced(self.client.client.clone(), &config.namespace),
            job_name: names.job_name.clone(),
            namespace: config.namespace.clone(),
            execution_hash: names.execution_hash.clone(),
            unschedulable_timeout: config.unschedulable_timeout,
            resync_interval: self.resync_interval,
        };
        let outcome = watch.outcome(&cancel).await;
        match outcome {
            Outcome::Succeeded => {
                if config.cleanup {
                    self.delete_job(&names.job_name).await;
                }
                Ok(Exit::Succeeded)
            }
            Outcome::Cancelled => {
                // Deleting the Job stops the agent (its pod gets SIGTERM and the preStop teardown).
                self.delete_job(&names.job_name).await;
                Ok(Exit::Cancelled)
            }
            Outcome::Failed(failure) => {
                tracing::info!(job = %names.job_name, reason = %failure.reason, "Kubernetes task failed; keeping the Job for its TTL.");
                let mut env = spec.env.clone();
                env.overlay(&self.config.environment);
                self.log_pod_output(&names, &Redactor::for_env(&env)).await;
                Err(failure)
            }
        }
    }

    fn survives_daemon_restart(&self) -> bool {
        true
    }

    async fn shutdown(&self) {
        tracing::info!(namespace = %self.config.namespace, "Kubernetes backend shutting down; task Jobs keep running.");
    }
}

fn validate(config: &KubernetesConfig) -> Result<PodSpec, KubeError> {
    if let Some(limit) = &config.workspace_size_limit
        && !is_quantity(limit)
    {
        return Err(KubeError::Config(format!(
            "backend.kubernetes.workspace_size_limit {limit:?} is not a Kubernetes quantity (e.g. 8Gi, 500M)"
        )));
    }
    super::preflight::preflight_resources(config.preflight_resources.as_ref())?;
    parse_pod_template(config.pod_template.as_ref()).map_err(KubeError::Config)
}

/// A Kubernetes quantity: a decimal number, then an optional suffix (`Ki`…`Ei`, `n`…`E`, or an
/// exponent `e3`).
pub(super) fn is_quantity(raw: &str) -> bool {
    let digits_end = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(raw.len());
    let (number, suffix) = raw.split_at(digits_end);
    let number = number.trim_start_matches(['+', '-']);
    let valid_number = !number.is_empty() && number.parse::<f64>().is_ok();
    let valid_suffix = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        !e.is_empty()
            && e.trim_start_matches(['+', '-'])
                .chars()
                .all(|c| c.is_ascii_digit())
    });
    valid_number && valid_suffix
}

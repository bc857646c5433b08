//! `KubernetesExecutor`: the `Executor` port on Kubernetes. One Job (plus a Secret holding the
//! task env values, owned by the Job) per task; the outcome comes from `watch`. Each executor is
//! a worker instance with a Lease (`lease`); the Jobs of dead instances are adopted (`adopt`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::redact::Redactor;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{
    DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy,
};
use tokio_util::sync::CancellationToken;

use super::client::{
    CountingClient, KubeError, api_code, api_message, client_config, counting_client,
};
use super::config::KubernetesConfig;
use super::job::{inline_secret_env, task_objects};
use super::lease::InstanceLease;
use super::names::{
    ANNOTATION_EXECUTION_ID, ANNOTATION_TASK_ID, LABEL_EXECUTION_HASH, LABEL_INSTANCE_ID,
    LABEL_REPORTED, REPORTED, TaskNames, worker_job_selector,
};
use super::preflight::{TaskEnvStore, preflight};
use super::template::parse_pod_template;
use super::watch::{Informer, JobWatch, Outcome};
use crate::domain::{Exit, FailureReason, TaskFailure};
use crate::ports::executor::{Executor, Orphan, TaskSpec};

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
    env_store: TaskEnvStore,
    /// The shared Job and Pod watches, started with the first task.
    informer: Arc<OnceLock<Informer>>,
    /// This worker process's instance id (the `oz-instance-id` label of its Jobs).
    instance_id: Arc<str>,
    /// This instance's Lease.
    pub(super) lease: Arc<InstanceLease>,
    /// Fired when [`Executor::shutdown`] starts: a task that ends from then on leaves its Job
    /// unmarked, for the next instance to adopt and report.
    leaving: CancellationToken,
    /// Held (shared) while a task marks its Job reported; `shutdown` takes it exclusively, so
    /// the Lease goes only after the marks in flight.
    finishing: Arc<tokio::sync::RwLock<()>>,
}

/// Whose a finished Job is when the task that followed it ends.
enum Owner {
    /// This instance's: it is now marked reported (or deleted), and the outcome is returned.
    Ours,
    /// Another instance took it over: it will report it.
    TakenOver(String),
}

impl KubernetesExecutor {
    /// Selects the cluster (explicit kubeconfig, else in-cluster, else the default loading
    /// rules), checks the API server, the RBAC permissions and admission with a preflight Job.
    ///
    /// # Errors
    /// [`KubeError`] with a message naming what to fix.
    pub async fn connect(config: &KubernetesConfig) -> Result<Self, KubeError> {
        let mut executor = Self::without_preflight(config).await?;
        executor.env_store = preflight(&executor.client, config, &executor.template).await?;
        executor.hold_lease().await?;
        if executor.env_store == TaskEnvStore::JobSpec {
            tracing::warn!(
                namespace = %config.namespace,
                "The worker may not create Secrets in namespace {}: each task's environment \
                 values go into its Job spec, as the Go worker does, readable by anyone who may \
                 read Jobs there. Grant `secrets: create` (docs/kubernetes-rbac.yaml) to keep \
                 them in a per-task Secret instead.",
                config.namespace
            );
        }
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
        Ok(Self::assemble(client, config, template))
    }

    /// An executor on an existing client (e.g. a mock API server), without the preflight.
    /// [`KubernetesExecutor::api_requests`] stays 0 for it.
    ///
    /// # Errors
    /// [`KubeError::Config`].
    pub fn with_client(client: kube::Client, config: &KubernetesConfig) -> Result<Self, KubeError> {
        let template = validate(config)?;
        let client = CountingClient {
            client,
            requests: Default::default(),
            server: "(custom client)".to_owned(),
        };
        Ok(Self::assemble(client, config, template))
    }

    fn assemble(client: CountingClient, config: &KubernetesConfig, template: PodSpec) -> Self {
        let instance_id = crate::adapters::state::new_instance_id();
        let lease = InstanceLease::new(
            Api::<Lease>::namespaced(client.client.clone(), &config.namespace),
            &config.worker_id,
            &instance_id,
            config.lease_duration,
        );
        Self {
            client,
            config: Arc::new(config.clone()),
            template: Arc::new(template),
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            env_store: TaskEnvStore::Secret,
            informer: Arc::default(),
            instance_id: instance_id.into(),
            lease: Arc::new(lease),
            leaving: CancellationToken::new(),
            finishing: Arc::default(),
        }
    }

    /// This worker process's instance id, on every Job, pod template and Secret it creates.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Creates this instance's Lease and starts renewing it until [`Executor::shutdown`]
    /// (done by [`KubernetesExecutor::connect`]). Without a held Lease the executor adopts
    /// nothing, and its own Jobs count as a dead instance's for the other workers.
    ///
    /// # Errors
    /// [`KubeError::Preflight`] when the Lease cannot be written.
    pub async fn hold_lease(&self) -> Result<(), KubeError> {
        self.lease.acquire().await.map_err(|e| {
            KubeError::Preflight(format!(
                "cannot write this worker instance's Lease {} in namespace {:?}: {}",
                self.lease.name(),
                self.config.namespace,
                api_message(&e)
            ))
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
    ///
    /// Without `secrets: create` (see [`TaskEnvStore`]) there is no Secret: the values are in
    /// the Job spec, and the Job is the only object created.
    async fn create(&self, spec: &TaskSpec, names: &TaskNames) -> Result<(), TaskFailure> {
        let mut objects = task_objects(&self.config, &self.template, spec, names)?;
        // The raw ids, for the instance that may adopt the Job (labels hold them sanitized).
        let annotations = objects.job.metadata.annotations.get_or_insert_default();
        annotations.insert(
            ANNOTATION_TASK_ID.to_owned(),
            spec.task_id.as_str().to_owned(),
        );
        annotations.insert(
            ANNOTATION_EXECUTION_ID.to_owned(),
            spec.execution_id.clone(),
        );
        let ns = &self.config.namespace;
        let jobs: Api<Job> = Api::namespaced(self.client.client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.client.clone(), ns);
        let create_failure = |what: &str, e: &kube::Error| {
            TaskFailure::backend(
                FailureReason::JobCreate,
                format!("failed to create Kubernetes {what}: {}", api_message(e)),
            )
        };
        if self.env_store == TaskEnvStore::JobSpec {
            let job = inline_secret_env(objects);
            jobs.create(&PostParams::default(), &job)
                .await
                .map_err(|e| create_failure("Job", &e))?;
            return Ok(());
        }
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
    async fn log_pod_output(&self, job_name: &str, pod_selector: &str, redactor: &Redactor) {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.client.clone(), &self.config.namespace);
        let Ok(listed) = pods.list(&ListParams::default().labels(pod_selector)).await else {
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
                        tracing::info!(job = %job_name, "[{pod_name}/{}]\n{}", container.name, redactor.redact(&output))
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
        let mut names = TaskNames::new(
            &config.worker_id,
            spec.task_id.as_str(),
            &spec.execution_id,
            &config.extra_labels,
        );
        names
            .labels
            .insert(LABEL_INSTANCE_ID.to_owned(), self.instance_id.to_string());
        if cancel.is_cancelled() {
            return Ok(Exit::Cancelled);
        }
        self.create(spec, &names).await?;
        tracing::info!(job = %names.job_name, namespace = %config.namespace, task_id = %spec.task_id, "Created Kubernetes Job.");
        let outcome = self
            .job_watch(&names.job_name, &names.execution_hash)
            .outcome(&cancel)
            .await;
        let mut env = spec.env.clone();
        env.overlay(&self.config.environment);
        let redactor = Redactor::for_env(&env);
        self.conclude(
            &names.job_name,
            &names.pod_selector(),
            outcome,
            Some(&redactor),
        )
        .await
    }

    fn survives_daemon_restart(&self) -> bool {
        true
    }

    async fn adopt_orphans(&self) -> Vec<Orphan> {
        self.adopt().await
    }

    fn orphan_scan_interval(&self) -> Option<Duration> {
        Some(self.config.lease_duration)
    }

    /// Follows an adopted Job from the wait on, exactly as [`Executor::run`] does: same
    /// outcome mapping, cancel deletes the Job, same marking and clean-up. The failed pods'
    /// output is logged only when every task env value is in the Job spec (the worker may not
    /// read the task's Secret, so it could not mask those values).
    async fn follow(
        &self,
        orphan: &Orphan,
        cancel: CancellationToken,
    ) -> Result<Exit, TaskFailure> {
        let job_name = orphan.handle.as_str();
        let jobs: Api<Job> = Api::namespaced(self.client.client.clone(), &self.config.namespace);
        let job = jobs.get(job_name).await.map_err(|e| {
            TaskFailure::backend(
                FailureReason::JobWatch,
                format!(
                    "failed to read the adopted Kubernetes Job {job_name}: {}",
                    api_message(&e)
                ),
            )
        })?;
        let execution_hash = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_EXECUTION_HASH))
            .cloned()
            .unwrap_or_default();
        let redactor = self.job_spec_redactor(&job);
        tracing::info!(job = %job_name, task_id = %orphan.task_id, "Following an adopted Kubernetes Job.");
        let outcome = self
            .job_watch(job_name, &execution_hash)
            .outcome(&cancel)
            .await;
        let selector = format!("{LABEL_EXECUTION_HASH}={execution_hash}");
        self.conclude(job_name, &selector, outcome, redactor.as_ref())
            .await
    }

    /// From now on no Job is marked: a task that ends is left to the next instance.
    fn leaving(&self) {
        self.leaving.cancel();
    }

    /// Stops marking Jobs, waits (up to 5 s) for the marks in flight, then stops renewing and
    /// deletes this instance's Lease, so the next instance adopts the running Jobs at once.
    async fn shutdown(&self) {
        self.leaving.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.finishing.write())
            .await
            .is_err()
        {
            tracing::warn!("Timed out waiting for Kubernetes Jobs being marked reported.");
        }
        self.lease.release().await;
        tracing::info!(namespace = %self.config.namespace, "Kubernetes backend shutting down; task Jobs keep running for the next worker instance to adopt.");
    }
}

impl KubernetesExecutor {
    /// Whether [`Executor::shutdown`] has started.
    pub(super) fn is_leaving(&self) -> bool {
        self.leaving.is_cancelled()
    }

    /// The Jobs API of the worker's namespace.
    pub(super) fn jobs_api(&self) -> Api<Job> {
        Api::namespaced(self.client.client.clone(), &self.config.namespace)
    }

    /// The backend's settings.
    pub(super) fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    /// The wait on one Job and its pods through the shared watches.
    fn job_watch(&self, job_name: &str, execution_hash: &str) -> JobWatch {
        let ns = &self.config.namespace;
        JobWatch {
            informer: self.informer().clone(),
            jobs: Api::namespaced(self.client.client.clone(), ns),
            events: Api::namespaced(self.client.client.clone(), ns),
            job_name: job_name.to_owned(),
            namespace: ns.clone(),
            execution_hash: execution_hash.to_owned(),
            unschedulable_timeout: self.config.unschedulable_timeout,
            resync_interval: self.resync_interval,
        }
    }

    /// What [`Executor::run`] and [`Executor::follow`] share after the wait: a cancel deletes
    /// the Job (its pod gets SIGTERM and the preStop teardown); a failure logs the pods' output
    /// (when `redactor` can mask the env values) and keeps the Job for its TTL. Before an end is
    /// returned for reporting, the Job is marked: deleted (success, with cleanup) or labelled
    /// `oz-reported=true`, so no later instance adopts and reports it again. A task that ends
    /// while the worker is leaving, or whose Job another instance took over, returns
    /// [`Exit::Spawned`] (handed off: no report from this instance, its slot frees): the report
    /// is the other instance's.
    async fn conclude(
        &self,
        job_name: &str,
        pod_selector: &str,
        outcome: Outcome,
        redactor: Option<&Redactor>,
    ) -> Result<Exit, TaskFailure> {
        let result = match outcome {
            Outcome::Cancelled => {
                self.delete_job(job_name).await;
                return Ok(Exit::Cancelled);
            }
            Outcome::Succeeded => Ok(Exit::Succeeded),
            Outcome::Failed(failure) => {
                tracing::info!(job = %job_name, reason = %failure.reason, "Kubernetes task failed; keeping the Job for its TTL.");
                match redactor {
                    Some(redactor) => self.log_pod_output(job_name, pod_selector, redactor).await,
                    None => {
                        tracing::info!(job = %job_name, "Not copying the adopted task's output: its env values are in a Secret the worker does not read, so they could not be masked.")
                    }
                }
                Err(failure)
            }
        };
        let delete = result.is_ok() && self.config.cleanup;
        let owner = {
            let _marking = self.finishing.read().await;
            if self.leaving.is_cancelled() {
                None
            } else {
                Some(self.mark_reported(job_name, delete).await)
            }
        };
        match owner {
            Some(Owner::Ours) => result,
            None => {
                tracing::info!(job = %job_name, "Kubernetes task ended while the worker is leaving; the next worker instance adopts and reports it.");
                Ok(Exit::Spawned)
            }
            Some(Owner::TakenOver(other)) => {
                tracing::warn!(job = %job_name, instance_id = %other, "Another worker instance took this Kubernetes Job over (this one's Lease lapsed); it reports the outcome.");
                Ok(Exit::Spawned)
            }
        }
    }

    /// Marks a finished Job as reported by this instance: deletes it (`delete`) or labels it
    /// `oz-reported=true`, each under a resourceVersion precondition, unless its instance label
    /// names another instance. A Job that is gone, or an API error, counts as ours (the outcome
    /// is reported; at worst a later instance reports a failed Job once more).
    async fn mark_reported(&self, job_name: &str, delete: bool) -> Owner {
        let jobs: Api<Job> = Api::namespaced(self.client.client.clone(), &self.config.namespace);
        let attempt = async {
            for _ in 0..5 {
                let job = match jobs.get(job_name).await {
                    Ok(job) => job,
                    Err(e) => {
                        if api_code(&e) != Some(404) {
                            tracing::warn!(job = %job_name, error = %api_message(&e), "Could not read the Kubernetes Job to mark it reported.");
                        }
                        return Owner::Ours;
                    }
                };
                let labels = job.metadata.labels.clone().unwrap_or_default();
                if let Some(owner) = labels.get(LABEL_INSTANCE_ID)
                    && owner.as_str() != &*self.instance_id
                {
                    return Owner::TakenOver(owner.clone());
                }
                let resource_version = job.metadata.resource_version.clone();
                let marked = if delete {
                    let dp = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        preconditions: Some(Preconditions {
                            resource_version,
                            uid: None,
                        }),
                        ..DeleteParams::default()
                    };
                    jobs.delete(job_name, &dp).await.map(|_| ())
                } else {
                    let patch = serde_json::json!({ "metadata": {
                        "resourceVersion": resource_version,
                        "labels": { LABEL_REPORTED: REPORTED },
                    }});
                    jobs.patch(job_name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                };
                match marked {
                    Ok(()) => {
                        tracing::debug!(job = %job_name, deleted = delete, "Marked the Kubernetes Job reported.");
                        return Owner::Ours;
                    }
                    Err(e) if api_code(&e) == Some(409) => continue,
                    Err(e) if api_code(&e) == Some(404) => return Owner::Ours,
                    Err(e) => {
                        tracing::warn!(job = %job_name, error = %api_message(&e), "Could not mark the Kubernetes Job reported.");
                        return Owner::Ours;
                    }
                }
            }
            Owner::Ours
        };
        tokio::time::timeout(CLEANUP_TIMEOUT, attempt)
            .await
            .unwrap_or(Owner::Ours)
    }

    /// A redactor for an adopted Job's output: its literal env values and the `-e` entries, or
    /// `None` when some value comes from the task's Secret (which the worker may not read).
    fn job_spec_redactor(&self, job: &Job) -> Option<Redactor> {
        let pod = job.spec.as_ref()?.template.spec.as_ref()?;
        let mut env = self.config.environment.clone();
        let containers = pod
            .init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter());
        for var in containers.flat_map(|c| c.env.iter().flatten()) {
            if var
                .value_from
                .as_ref()
                .and_then(|from| from.secret_key_ref.as_ref())
                .is_some()
            {
                return None;
            }
            if let Some(value) = &var.value {
                env.push(var.name.clone(), value.clone());
            }
        }
        Some(Redactor::for_env(&env))
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

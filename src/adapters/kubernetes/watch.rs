//! Waiting for task Jobs' outcomes from two shared watches per worker, one on Jobs and one on
//! Pods, both selected by this worker's labels (`kube::runtime::watcher`: list, then watch from
//! the list's resource version, re-list on `410 Gone`, restart with exponential backoff on
//! errors). Their events keep an in-memory copy of this worker's Jobs and Pods; each task
//! subscribes to its own Job and pods and is woken when they change, so the API server holds
//! two watches for the worker however many tasks run, and re-lists happen once per worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch as signal;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{api_code, api_message};
use super::failure::{JobState, PodCheck, inspect_pod, inspect_pod_events, job_failure, job_state};
use super::names::LABEL_EXECUTION_HASH;
use crate::domain::{FailureReason, TaskFailure};

/// How a watched task ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// The Job is `Complete`.
    Succeeded,
    /// A pod or the Job failed.
    Failed(TaskFailure),
    /// The cancellation token fired.
    Cancelled,
}

/// Consecutive errors of a shared watch (each after a backoff: 0.8 s, 1.6 s, 3.2 s, …) after
/// which the tasks waiting on it fail.
const MAX_WATCH_ERRORS: u32 = 6;

/// The worker's copy of its Jobs and Pods, fed by the shared watches.
#[derive(Default)]
struct State {
    /// Jobs by name.
    jobs: HashMap<String, Job>,
    /// Pods by execution hash, then by pod name.
    pods: HashMap<String, HashMap<String, Pod>>,
    /// Objects received during a re-list, swapped in at its end.
    jobs_relist: Option<HashMap<String, Job>>,
    pods_relist: Option<HashMap<String, HashMap<String, Pod>>>,
    /// Whether each watch has completed its first list.
    jobs_listed: bool,
    pods_listed: bool,
    /// Consecutive errors of each watch and the last one's message.
    jobs_errors: (u32, String),
    pods_errors: (u32, String),
    /// Waiting tasks by Job name: their subscription id and their wake-up signal.
    subscribers: HashMap<String, (u64, signal::Sender<()>)>,
    /// The id of the next subscription.
    next_id: u64,
    /// Job name by execution hash, for pods.
    by_hash: HashMap<String, String>,
    /// Re-lists done by the watches (the first lists included).
    lists: u64,
}

impl State {
    fn wake_job(&self, name: &str) {
        if let Some((_, tx)) = self.subscribers.get(name) {
            tx.send_replace(());
        }
    }

    fn wake_hash(&self, hash: &str) {
        if let Some(name) = self.by_hash.get(hash) {
            self.wake_job(name);
        }
    }

    fn wake_all(&self) {
        for (_, tx) in self.subscribers.values() {
            tx.send_replace(());
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A kind the shared watches follow: where it goes in [`State`].
trait Watched: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static {
    const KIND: &'static str;
    fn apply(state: &mut State, object: Self, relist: bool);
    fn delete(state: &mut State, object: &Self);
    fn relist_start(state: &mut State);
    fn relist_done(state: &mut State);
    fn errors(state: &mut State) -> &mut (u32, String);
}

fn name_of<K: Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}

fn hash_of(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_EXECUTION_HASH))
        .cloned()
        .unwrap_or_default()
}

impl Watched for Job {
    const KIND: &'static str = "Job";

    fn apply(state: &mut State, mut job: Job, relist: bool) {
        job.metadata.managed_fields = None;
        let name = name_of(&job);
        match (&mut state.jobs_relist, relist) {
            (Some(buffer), true) => {
                buffer.insert(name, job);
            }
            _ => {
                state.jobs.insert(name.clone(), job);
                state.wake_job(&name);
            }
        }
    }

    fn delete(state: &mut State, job: &Job) {
        let name = name_of(job);
        state.jobs.remove(&name);
        state.wake_job(&name);
    }

    fn relist_start(state: &mut State) {
        state.jobs_relist = Some(HashMap::new());
    }

    fn relist_done(state: &mut State) {
        if let Some(jobs) = state.jobs_relist.take() {
            state.jobs = jobs;
        }
        state.jobs_listed = true;
        state.lists += 1;
        state.wake_all();
    }

    fn errors(state: &mut State) -> &mut (u32, String) {
        &mut state.jobs_errors
    }
}

impl Watched for Pod {
    const KIND: &'static str = "Pod";

    fn apply(state: &mut State, mut pod: Pod, relist: bool) {
        pod.metadata.managed_fields = None;
        let (hash, name) = (hash_of(&pod), name_of(&pod));
        match (&mut state.pods_relist, relist) {
            (Some(buffer), true) => {
                buffer.entry(hash).or_default().insert(name, pod);
            }
            _ => {
                state
                    .pods
                    .entry(hash.clone())
                    .or_default()
                    .insert(name, pod);
                state.wake_hash(&hash);
            }
        }
    }

    fn delete(state: &mut State, pod: &Pod) {
        let (hash, name) = (hash_of(pod), name_of(pod));
        if let Some(pods) = state.pods.get_mut(&hash) {
            pods.remove(&name);
            if pods.is_empty() {
                state.pods.remove(&hash);
            }
        }
        state.wake_hash(&hash);
    }

    fn relist_start(state: &mut State) {
        state.pods_relist = Some(HashMap::new());
    }

    fn relist_done(state: &mut State) {
        if let Some(pods) = state.pods_relist.take() {
            state.pods = pods;
        }
        state.pods_listed = true;
        state.lists += 1;
        state.wake_all();
    }

    fn errors(state: &mut State) -> &mut (u32, String) {
        &mut state.pods_errors
    }
}

/// The shared Job and Pod watches of one worker; dropping the last clone stops them.
#[derive(Clone)]
pub(super) struct Informer {
    state: Arc<Mutex<State>>,
    /// The two watch tasks; dropping the set aborts them.
    _tasks: Arc<tokio::task::JoinSet<()>>,
}

impl Informer {
    /// Starts the two watches on `jobs` and `pods`, selected by `selector`.
    pub(super) fn start(jobs: Api<Job>, pods: Api<Pod>, selector: &str) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(follow(jobs, selector.to_owned(), state.clone()));
        tasks.spawn(follow(pods, selector.to_owned(), state.clone()));
        Self {
            state,
            _tasks: Arc::new(tasks),
        }
    }

    /// Lists done by the shared watches so far (two at start, then one per re-list).
    pub(super) fn lists(&self) -> u64 {
        lock(&self.state).lists
    }

    fn subscribe(&self, job_name: &str, execution_hash: &str) -> Subscription {
        let (tx, rx) = signal::channel(());
        let mut state = lock(&self.state);
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.insert(job_name.to_owned(), (id, tx));
        state
            .by_hash
            .insert(execution_hash.to_owned(), job_name.to_owned());
        Subscription {
            informer: self.clone(),
            job_name: job_name.to_owned(),
            execution_hash: execution_hash.to_owned(),
            id,
            rx,
        }
    }
}

/// Feeds one kind's watch events into the state, for as long as the informer lives.
async fn follow<K: Watched>(api: Api<K>, selector: String, state: Arc<Mutex<State>>) {
    let config = watcher::Config::default().labels(&selector).timeout(290);
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let mut state = lock(&state);
        match event {
            Ok(event) => {
                *K::errors(&mut state) = (0, String::new());
                match event {
                    watcher::Event::Apply(object) => K::apply(&mut state, object, false),
                    watcher::Event::Delete(object) => K::delete(&mut state, &object),
                    watcher::Event::Init => K::relist_start(&mut state),
                    watcher::Event::InitApply(object) => K::apply(&mut state, object, true),
                    watcher::Event::InitDone => K::relist_done(&mut state),
                }
            }
            Err(e) => {
                let message = match &e {
                    watcher::Error::InitialListFailed(e)
                    | watcher::Error::WatchStartFailed(e)
                    | watcher::Error::WatchFailed(e) => api_message(e),
                    other => other.to_string(),
                };
                tracing::debug!(kind = K::KIND, error = %message, "Shared watch error; retrying with backoff.");
                let errors = K::errors(&mut state);
                *errors = (errors.0 + 1, message);
                if errors.0 >= MAX_WATCH_ERRORS {
                    state.wake_all();
                }
            }
        }
    }
}

/// One task's view of the shared state: its Job and its pods.
struct Subscription {
    informer: Informer,
    job_name: String,
    execution_hash: String,
    id: u64,
    rx: signal::Receiver<()>,
}

/// A copy of one task's slice of the state.
struct Slice {
    job: Option<Job>,
    pods: Vec<Pod>,
    jobs_listed: bool,
    jobs_errors: (u32, String),
    pods_errors: (u32, String),
}

impl Subscription {
    fn slice(&mut self) -> Slice {
        self.rx.mark_unchanged();
        let state = lock(&self.informer.state);
        let mut pods: Vec<Pod> = state
            .pods
            .get(&self.execution_hash)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Slice {
            job: state.jobs.get(&self.job_name).cloned(),
            pods,
            jobs_listed: state.jobs_listed,
            jobs_errors: state.jobs_errors.clone(),
            pods_errors: state.pods_errors.clone(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = lock(&self.informer.state);
        let ours = state
            .subscribers
            .get(&self.job_name)
            .is_some_and(|(id, _)| *id == self.id);
        if ours {
            state.subscribers.remove(&self.job_name);
            state.by_hash.remove(&self.execution_hash);
        }
    }
}

/// The APIs and identity of one task Job.
pub(super) struct JobWatch {
    /// The worker's shared watches.
    pub informer: Informer,
    /// Jobs in the namespace (for the check of a Job the watch never showed).
    pub jobs: Api<Job>,
    /// Events in the namespace.
    pub events: Api<Event>,
    /// The Job's name.
    pub job_name: String,
    /// The namespace.
    pub namespace: String,
    /// The value of the Job's pods' execution-hash label.
    pub execution_hash: String,
    /// The unschedulable fail-fast; `None` disables.
    pub unschedulable_timeout: Option<Duration>,
    /// How long to wait for the shared watch to show the Job before asking for it directly.
    pub resync_interval: Duration,
}

enum Step {
    Done(Outcome),
    Continue,
}

impl JobWatch {
    /// Waits until the Job completes, a failure shows, or `cancel` fires.
    pub(super) async fn outcome(&self, cancel: &CancellationToken) -> Outcome {
        let mut subscription = self
            .informer
            .subscribe(&self.job_name, &self.execution_hash);
        let mut seen = false;
        let mut check_at = Instant::now() + self.resync_interval;
        // Events are listed once per pod version that needs them.
        let mut events_checked: HashMap<String, String> = HashMap::new();
        loop {
            if cancel.is_cancelled() {
                return Outcome::Cancelled;
            }
            let slice = subscription.slice();
            for (errors, reason, what) in [
                (&slice.jobs_errors, FailureReason::JobWatch, "Jobs"),
                (&slice.pods_errors, FailureReason::PodWatch, "pods"),
            ] {
                if errors.0 >= MAX_WATCH_ERRORS {
                    return Outcome::Failed(TaskFailure::backend(
                        reason,
                        format!(
                            "failed to watch the Kubernetes {what} of Job {}: {}",
                            self.job_name, errors.1
                        ),
                    ));
                }
            }
            match &slice.job {
                Some(job) => {
                    seen = true;
                    if let Step::Done(outcome) = self.on_job(job, &slice.pods).await {
                        return outcome;
                    }
                }
                // Seen once, then gone (a delete event, or missing from a re-list).
                None if seen && slice.jobs_listed => return Outcome::Failed(self.deleted()),
                None => {}
            }
            let mut wake = None;
            for pod in &slice.pods {
                if let Some(failure) = self.on_pod(pod, &mut wake, &mut events_checked).await {
                    return Outcome::Failed(failure);
                }
            }
            let deadline = wake.map_or(check_at, |w| w.min(check_at));
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Outcome::Cancelled,
                _ = subscription.rx.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            if Instant::now() < check_at {
                continue;
            }
            // Every resync interval: look at pending pods' events again (a mount failure shows
            // only there), and ask for a Job the shared watch has not shown yet (deleted between
            // its creation and a re-list, say).
            check_at = Instant::now() + self.resync_interval;
            events_checked.clear();
            if !seen {
                match self.jobs.get(&self.job_name).await {
                    Ok(job) => {
                        if let Step::Done(outcome) = self.on_job(&job, &slice.pods).await {
                            return outcome;
                        }
                    }
                    Err(e) if api_code(&e) == Some(404) => {
                        return Outcome::Failed(self.deleted());
                    }
                    Err(e) => {
                        tracing::debug!(job = %self.job_name, error = %api_message(&e), "Could not get the Job.");
                    }
                }
            }
        }
    }

    async fn on_job(&self, job: &Job, pods: &[Pod]) -> Step {
        match job_state(job) {
            JobState::Running => Step::Continue,
            JobState::Complete => Step::Done(Outcome::Succeeded),
            JobState::Failed { reason, message } => {
                // A pod-level failure is more specific than the Job's. The shared pod watch may
                // lag behind the Job watch (the Job controller reacts to the same pod update),
                // so when the cached pods show nothing, ask the API server for them once.
                let mut ignored = None;
                let mut checked = HashMap::new();
                for pod in pods {
                    if let Some(failure) = self.on_pod(pod, &mut ignored, &mut checked).await {
                        return Step::Done(Outcome::Failed(failure));
                    }
                }
                let fresh: Api<Pod> =
                    Api::namespaced(self.jobs.clone().into_client(), &self.namespace);
                let params = ListParams::default()
                    .labels(&format!("{LABEL_EXECUTION_HASH}={}", self.execution_hash));
                match fresh.list(&params).await {
                    Ok(list) => {
                        for pod in &list.items {
                            if let Some(failure) =
                                self.on_pod(pod, &mut ignored, &mut checked).await
                            {
                                return Step::Done(Outcome::Failed(failure));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(job = %self.job_name, error = %api_message(&e), "Could not list the failed Job's pods.");
                    }
                }
                Step::Done(Outcome::Failed(job_failure(
                    &self.job_name,
                    &self.namespace,
                    &reason,
                    &message,
                )))
            }
        }
    }

    async fn on_pod(
        &self,
        pod: &Pod,
        wake: &mut Option<Instant>,
        events_checked: &mut HashMap<String, String>,
    ) -> Option<TaskFailure> {
        if pod.metadata.deletion_timestamp.is_some()
            && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
        {
            return None;
        }
        match inspect_pod(pod, Timestamp::now(), self.unschedulable_timeout) {
            PodCheck::Failed(failure) => Some(failure),
            PodCheck::UnschedulableFor(left) => {
                let at = Instant::now() + left + Duration::from_millis(20);
                *wake = Some(wake.map_or(at, |w| w.min(at)));
                None
            }
            PodCheck::Fine {
                events_needed: false,
            } => None,
            PodCheck::Fine {
                events_needed: true,
            } => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let version = pod.metadata.resource_version.clone().unwrap_or_default();
                if events_checked.get(&uid) == Some(&version) {
                    return None;
                }
                events_checked.insert(uid.clone(), version);
                let lp = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
                let events = match self.events.list(&lp).await {
                    Ok(list) => list.items,
                    Err(e) => {
                        tracing::debug!(error = %api_message(&e), "Could not list pod events.");
                        Vec::new()
                    }
                };
                inspect_pod_events(pod, &events)
            }
        }
    }

    fn deleted(&self) -> TaskFailure {
        TaskFailure::backend(
            FailureReason::JobWatch,
            format!(
                "Kubernetes Job {} in namespace {} was deleted before it finished",
                self.job_name, self.namespace
            ),
        )
    }
}

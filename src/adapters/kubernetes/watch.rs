//! Waiting for a task Job's outcome: a GET of the Job and a LIST of its pods (the resync), then
//! watches from those resource versions, re-listing on a `410 Gone`, on a closed stream, every
//! resync interval, and when an unschedulable pod's timeout falls due.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{api_code, api_message};
use super::failure::{JobState, PodCheck, inspect_pod, inspect_pod_events, job_failure, job_state};
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

/// Consecutive failures to open a watch before the task fails.
const MAX_OPEN_FAILURES: u32 = 3;

/// The least time between two openings of the same watch.
const MIN_REOPEN: Duration = Duration::from_secs(1);

type EventStream<K> = Pin<Box<dyn Stream<Item = kube::Result<WatchEvent<K>>> + Send>>;

/// The APIs and identity of one task Job.
pub(super) struct JobWatch {
    /// Jobs in the namespace.
    pub jobs: Api<Job>,
    /// Pods in the namespace.
    pub pods: Api<Pod>,
    /// Events in the namespace.
    pub events: Api<Event>,
    /// The Job's name.
    pub job_name: String,
    /// The namespace.
    pub namespace: String,
    /// The label selector of the Job's pods.
    pub pod_selector: String,
    /// The unschedulable fail-fast; `None` disables.
    pub unschedulable_timeout: Option<Duration>,
    /// The safety-net resync period.
    pub resync_interval: Duration,
}

enum Step {
    Done(Outcome),
    Continue,
}

impl JobWatch {
    /// Waits until the Job completes, a failure shows, or `cancel` fires.
    pub(super) async fn outcome(&self, cancel: &CancellationToken) -> Outcome {
        let mut job_stream: Option<EventStream<Job>> = None;
        let mut pod_stream: Option<EventStream<Pod>> = None;
        let (mut job_version, mut pod_version) = (String::new(), String::new());
        let mut need_resync = true;
        let mut next_resync = Instant::now();
        let mut unschedulable_wake: Option<Instant> = None;
        let (mut job_failures, mut pod_failures) = (0u32, 0u32);
        // A watch that closes at once is re-opened at most once a second (no hot loop).
        let (mut job_next_open, mut pod_next_open) = (Instant::now(), Instant::now());
        loop {
            if cancel.is_cancelled() {
                return Outcome::Cancelled;
            }
            if need_resync {
                match self.resync(&mut unschedulable_wake).await {
                    Ok((Step::Done(outcome), _, _)) => return outcome,
                    Ok((Step::Continue, jv, pv)) => {
                        (job_version, pod_version) = (jv, pv);
                        // Fresh versions: re-open both watches from them.
                        job_stream = None;
                        pod_stream = None;
                    }
                    Err(failure) => return Outcome::Failed(failure),
                }
                need_resync = false;
                next_resync = Instant::now() + self.resync_interval;
            }
            if job_stream.is_none() && Instant::now() >= job_next_open {
                job_next_open = Instant::now() + MIN_REOPEN;
                let wp = WatchParams::default()
                    .fields(&format!("metadata.name={}", self.job_name))
                    .timeout(290);
                match self.jobs.watch(&wp, &job_version).await {
                    Ok(s) => job_stream = Some(s.boxed()),
                    Err(e) => {
                        job_failures += 1;
                        if job_failures >= MAX_OPEN_FAILURES {
                            return Outcome::Failed(TaskFailure::backend(
                                FailureReason::JobWatch,
                                format!(
                                    "failed to watch Kubernetes Job {}: {}",
                                    self.job_name,
                                    api_message(&e)
                                ),
                            ));
                        }
                    }
                }
            }
            if pod_stream.is_none() && Instant::now() >= pod_next_open {
                pod_next_open = Instant::now() + MIN_REOPEN;
                let wp = WatchParams::default()
                    .labels(&self.pod_selector)
                    .timeout(290);
                match self.pods.watch(&wp, &pod_version).await {
                    Ok(s) => pod_stream = Some(s.boxed()),
                    Err(e) => {
                        pod_failures += 1;
                        if pod_failures >= MAX_OPEN_FAILURES {
                            return Outcome::Failed(TaskFailure::backend(
                                FailureReason::PodWatch,
                                format!(
                                    "failed to watch the pods of Kubernetes Job {}: {}",
                                    self.job_name,
                                    api_message(&e)
                                ),
                            ));
                        }
                    }
                }
            }
            let mut wake = next_resync;
            if let Some(at) = unschedulable_wake {
                wake = wake.min(at);
            }
            if job_stream.is_none() {
                wake = wake.min(job_next_open);
            }
            if pod_stream.is_none() {
                wake = wake.min(pod_next_open);
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Outcome::Cancelled,
                event = next_event(&mut job_stream) => match event {
                    Some(Ok(WatchEvent::Added(job) | WatchEvent::Modified(job))) => {
                        job_failures = 0;
                        remember(&mut job_version, &job.metadata);
                        if let Step::Done(outcome) = self.on_job(&job).await {
                            return outcome;
                        }
                    }
                    Some(Ok(WatchEvent::Deleted(_))) => return Outcome::Failed(self.deleted()),
                    Some(Ok(WatchEvent::Bookmark(b))) => job_version = b.metadata.resource_version,
                    Some(Ok(WatchEvent::Error(status))) => {
                        tracing::debug!(job = %self.job_name, code = status.code, "Job watch error; re-listing.");
                        need_resync = true;
                    }
                    Some(Err(_)) | None => job_stream = None,
                },
                event = next_event(&mut pod_stream) => match event {
                    Some(Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod))) => {
                        pod_failures = 0;
                        remember(&mut pod_version, &pod.metadata);
                        if let Some(failure) = self.on_pod(&pod, &mut unschedulable_wake).await {
                            return Outcome::Failed(failure);
                        }
                    }
                    Some(Ok(WatchEvent::Deleted(pod))) => remember(&mut pod_version, &pod.metadata),
                    Some(Ok(WatchEvent::Bookmark(b))) => pod_version = b.metadata.resource_version,
                    Some(Ok(WatchEvent::Error(status))) => {
                        tracing::debug!(job = %self.job_name, code = status.code, "Pod watch error; re-listing.");
                        need_resync = true;
                    }
                    Some(Err(_)) | None => pod_stream = None,
                },
                () = tokio::time::sleep_until(wake) => {
                    if unschedulable_wake.is_some_and(|at| at <= Instant::now()) || next_resync <= Instant::now() {
                        need_resync = true;
                    }
                }
            }
        }
    }

    /// GET the Job, evaluate it, LIST its pods and inspect each. Returns the versions to watch from.
    async fn resync(
        &self,
        wake: &mut Option<Instant>,
    ) -> Result<(Step, String, String), TaskFailure> {
        let job = match self.jobs.get(&self.job_name).await {
            Ok(job) => job,
            Err(e) if api_code(&e) == Some(404) => return Err(self.deleted()),
            Err(e) => {
                return Err(TaskFailure::backend(
                    FailureReason::JobWatch,
                    format!(
                        "failed to get Kubernetes Job {}: {}",
                        self.job_name,
                        api_message(&e)
                    ),
                ));
            }
        };
        if let Step::Done(outcome) = self.on_job(&job).await {
            return Ok((Step::Done(outcome), String::new(), String::new()));
        }
        let listed = self
            .pods
            .list(&ListParams::default().labels(&self.pod_selector))
            .await
            .map_err(|e| {
                TaskFailure::backend(
                    FailureReason::PodWatch,
                    format!(
                        "failed to list the pods of Kubernetes Job {}: {}",
                        self.job_name,
                        api_message(&e)
                    ),
                )
            })?;
        *wake = None;
        for pod in &listed.items {
            if let Some(failure) = self.on_pod(pod, wake).await {
                return Ok((
                    Step::Done(Outcome::Failed(failure)),
                    String::new(),
                    String::new(),
                ));
            }
        }
        let job_version = job.metadata.resource_version.unwrap_or_default();
        let pod_version = listed.metadata.resource_version.unwrap_or_default();
        Ok((Step::Continue, job_version, pod_version))
    }

    async fn on_job(&self, job: &Job) -> Step {
        match job_state(job) {
            JobState::Running => Step::Continue,
            JobState::Complete => Step::Done(Outcome::Succeeded),
            JobState::Failed { reason, message } => {
                // A pod-level failure is more specific than the Job's.
                let listed = self
                    .pods
                    .list(&ListParams::default().labels(&self.pod_selector))
                    .await;
                let mut ignored = None;
                for pod in listed.map(|l| l.items).unwrap_or_default() {
                    if let Some(failure) = self.on_pod(&pod, &mut ignored).await {
                        return Step::Done(Outcome::Failed(failure));
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

    async fn on_pod(&self, pod: &Pod, wake: &mut Option<Instant>) -> Option<TaskFailure> {
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

fn remember(
    version: &mut String,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) {
    if let Some(v) = &meta.resource_version {
        version.clone_from(v);
    }
}

/// The next event of an open stream; pending forever when there is none.
async fn next_event<K>(stream: &mut Option<EventStream<K>>) -> Option<kube::Result<WatchEvent<K>>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

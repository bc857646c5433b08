//! Pod and Job state → the spec's failure reasons and messages (spec §2.6): pure functions.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::domain::{FailureReason, TaskFailure};

/// Waiting reasons that fail the task at once.
const FATAL_WAITING: [&str; 6] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
];

/// What the Job's conditions say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JobState {
    /// Neither `Complete` nor `Failed` yet.
    Running,
    /// `Complete=True`.
    Complete,
    /// `Failed=True`, with the condition's reason and message.
    Failed {
        /// The condition's reason (e.g. `DeadlineExceeded`).
        reason: String,
        /// The condition's message.
        message: String,
    },
}

/// Reads the Job's terminal conditions.
pub(super) fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    for condition in conditions.iter().filter(|c| c.status == "True") {
        match condition.type_.as_str() {
            "Complete" => return JobState::Complete,
            "Failed" => {
                return JobState::Failed {
                    reason: condition.reason.clone().unwrap_or_default(),
                    message: condition.message.clone().unwrap_or_default(),
                };
            }
            _ => {}
        }
    }
    JobState::Running
}

/// The failure of a Job whose pods showed no more specific one: `active_deadline` when the
/// condition mentions a deadline, else `job_failed`.
pub(super) fn job_failure(
    job_name: &str,
    namespace: &str,
    reason: &str,
    message: &str,
) -> TaskFailure {
    let text = format!("{reason} {message}").to_lowercase();
    let kind = if text.contains("deadline") {
        FailureReason::ActiveDeadline
    } else {
        FailureReason::JobFailed
    };
    TaskFailure::backend(
        kind,
        format!(
            "kubernetes Job {job_name} in namespace {namespace} failed. Job reason: {reason}. Job message: {message}"
        ),
    )
}

/// The result of inspecting one pod's status (steps 1-4 of spec §2.6).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PodCheck {
    /// The pod shows a failure.
    Failed(TaskFailure),
    /// The pod is unschedulable and will time out after this long (wake up then).
    UnschedulableFor(Duration),
    /// No failure in the status; if `events_needed`, look for mount failures in its events.
    Fine {
        /// The phase is `Pending` or `Failed`.
        events_needed: bool,
    },
}

/// Inspects a pod's status: eviction, init containers (restartable sidecars' exit codes are
/// ignored), containers, then the unschedulable timeout (`now` − creation ≥ `timeout`).
pub(super) fn inspect_pod(
    pod: &Pod,
    now: Timestamp,
    unschedulable_timeout: Option<Duration>,
) -> PodCheck {
    let Some(status) = pod.status.as_ref() else {
        return PodCheck::Fine {
            events_needed: false,
        };
    };
    let reason = status.reason.as_deref().unwrap_or_default();
    let message = status.message.as_deref().unwrap_or_default();
    if reason.eq_ignore_ascii_case("evicted") || message.to_lowercase().contains("evict") {
        return PodCheck::Failed(TaskFailure::backend(
            FailureReason::Evicted,
            format!("{} was evicted{}", pod_context(pod), details(pod, None)),
        ));
    }
    let restartable: Vec<&str> = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    for c in status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default()
    {
        if let Some(f) = container_failure(pod, c, true, restartable.contains(&c.name.as_str())) {
            return PodCheck::Failed(f);
        }
    }
    for c in status.container_statuses.as_deref().unwrap_or_default() {
        if let Some(f) = container_failure(pod, c, false, false) {
            return PodCheck::Failed(f);
        }
    }
    let unschedulable = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
    if let (Some(condition), Some(timeout)) = (unschedulable, unschedulable_timeout)
        && !timeout.is_zero()
    {
        let created = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, |t| t.0);
        let waited = now.duration_since(created).unsigned_abs();
        if waited >= timeout {
            return PodCheck::Failed(TaskFailure::backend(
                FailureReason::Unschedulable,
                format!(
                    "{} is unschedulable. Pod reason: Unschedulable. Pod message: {}",
                    pod_context(pod),
                    condition.message.as_deref().unwrap_or_default()
                ),
            ));
        }
        return PodCheck::UnschedulableFor(timeout - waited);
    }
    let phase = status.phase.as_deref().unwrap_or_default();
    PodCheck::Fine {
        events_needed: matches!(phase, "Pending" | "Failed"),
    }
}

/// Steps 5-6 of spec §2.6, for a pod whose status showed nothing: a `FailedMount` event (or
/// `MountVolume.SetUp failed`) → `volume_mount`; then phase `Failed` → `active_deadline` or
/// `job_failed`.
pub(super) fn inspect_pod_events(pod: &Pod, events: &[Event]) -> Option<TaskFailure> {
    let mount = events.iter().find(|e| {
        e.reason.as_deref() == Some("FailedMount")
            || e.message
                .as_deref()
                .unwrap_or_default()
                .contains("MountVolume.SetUp failed")
    });
    if let Some(event) = mount {
        return Some(TaskFailure::backend(
            FailureReason::VolumeMount,
            format!(
                "{} failed to mount a volume. Kubernetes event reason: {}. Kubernetes event message: {}",
                pod_context(pod),
                event.reason.as_deref().unwrap_or_default(),
                event.message.as_deref().unwrap_or_default()
            ),
        ));
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Failed") {
        return None;
    }
    let text = format!(
        "{} {}",
        status.reason.as_deref().unwrap_or_default(),
        status.message.as_deref().unwrap_or_default()
    )
    .to_lowercase();
    let reason = if text.contains("deadline") {
        FailureReason::ActiveDeadline
    } else {
        FailureReason::JobFailed
    };
    Some(TaskFailure::backend(
        reason,
        format!("{} failed{}", pod_context(pod), details(pod, None)),
    ))
}

/// 128 + signal when the container died of a signal, else its exit code.
pub(super) fn exit_code(exit_code: i32, signal: Option<i32>) -> i32 {
    match signal {
        Some(s) if s > 0 => 128 + s,
        _ => exit_code,
    }
}

fn container_failure(
    pod: &Pod,
    status: &ContainerStatus,
    init: bool,
    restartable: bool,
) -> Option<TaskFailure> {
    let kind = if init { "init container" } else { "container" };
    let state = status.state.as_ref()?;
    if let Some(t) = state.terminated.as_ref()
        && !restartable
    {
        let code = exit_code(t.exit_code, t.signal);
        if code == 0 {
            return None;
        }
        let reason = if init {
            FailureReason::InitContainer
        } else if t.reason.as_deref() == Some("OOMKilled") {
            FailureReason::ContainerOom
        } else {
            FailureReason::ContainerExit
        };
        let mut text = format!(
            "{kind} {} in {} exited with code {code}",
            status.name,
            pod_context(pod)
        );
        if let Some(name) = signal_name(t.signal.filter(|s| *s > 0).unwrap_or(code - 128)) {
            text.push_str(&format!(" ({name})"));
        }
        text.push_str(&details(
            pod,
            Some((t.reason.as_deref(), t.message.as_deref())),
        ));
        if code == 143 {
            let who = if init { "the setup" } else { "the task" };
            text.push_str(&format!(
                ". Kubernetes or the container runtime asked {who} process to stop (SIGTERM); check the pod's events and node activity for eviction, preemption, node drain, activeDeadlineSeconds, or manual deletion"
            ));
        }
        return Some(TaskFailure::backend(reason, text).with_exit_code(code));
    }
    let waiting = state.waiting.as_ref()?;
    let why = waiting.reason.as_deref().unwrap_or_default();
    if !FATAL_WAITING.contains(&why) {
        return None;
    }
    let reason = match why {
        // `ErrImageNeverPull`: `imagePullPolicy: Never` and the image is not on the node.
        "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" => FailureReason::ImagePull,
        "InvalidImageName" => FailureReason::InvalidImage,
        _ if init => FailureReason::InitContainer,
        _ => FailureReason::ContainerCreate,
    };
    let mut text = format!(
        "{kind} {} in {} is waiting: {why}",
        status.name,
        pod_context(pod)
    );
    if let Some(m) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
        text.push_str(&format!(": {m}"));
    }
    text.push_str(&details(pod, None));
    Some(TaskFailure::backend(reason, text))
}

/// "pod <pod> (namespace <ns>[, job <job>])".
pub(super) fn pod_context(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    match pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")) {
        Some(job) => format!("pod {name} (namespace {ns}, job {job})"),
        None => format!("pod {name} (namespace {ns})"),
    }
}

fn details(pod: &Pod, container: Option<(Option<&str>, Option<&str>)>) -> String {
    let status = pod.status.as_ref();
    let mut out = String::new();
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(phase) = nonempty(status.and_then(|s| s.phase.as_deref())) {
        out.push_str(&format!(". Pod phase: {phase}"));
    }
    let (c_reason, c_message) = container.unwrap_or_default();
    let reason = nonempty(c_reason).or_else(|| nonempty(status.and_then(|s| s.reason.as_deref())));
    let message =
        nonempty(c_message).or_else(|| nonempty(status.and_then(|s| s.message.as_deref())));
    if let Some(reason) = reason {
        out.push_str(&format!(". Pod reason: {reason}"));
    }
    if let Some(message) = message {
        out.push_str(&format!(". Pod message: {message}"));
    }
    out
}

fn signal_name(signal: i32) -> Option<String> {
    Some(match signal {
        1 => "SIGHUP".to_owned(),
        2 => "SIGINT".to_owned(),
        3 => "SIGQUIT".to_owned(),
        6 => "SIGABRT".to_owned(),
        9 => "SIGKILL".to_owned(),
        15 => "SIGTERM".to_owned(),
        s if s > 0 => format!("signal {s}"),
        _ => return None,
    })
}

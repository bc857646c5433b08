//! Failure mapping tables: pod status, events and Job conditions → reasons and messages.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::adapters::kubernetes::failure::{
    JobState, PodCheck, exit_code, inspect_pod, inspect_pod_events, job_failure, job_state,
};
use crate::domain::FailureReason;

fn pod(status: serde_json::Value, spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": "p", "namespace": "ns", "labels": { "job-name": "j" },
                      "creationTimestamp": "2026-01-01T00:00:00Z" },
        "spec": spec, "status": status
    }))
    .unwrap()
}

fn terminated(name: &str, code: i32, reason: &str) -> serde_json::Value {
    json!({ "name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": { "terminated": { "exitCode": code, "reason": reason } } })
}

fn waiting(name: &str, reason: &str) -> serde_json::Value {
    json!({ "name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": { "waiting": { "reason": reason, "message": "details" } } })
}

#[test]
fn pod_status_maps_to_reasons() {
    let sidecar_spec = json!({ "containers": [{ "name": "task" }],
        "initContainers": [{ "name": "db", "restartPolicy": "Always" }, { "name": "setup" }] });
    let now = "2026-01-01T00:00:10Z".parse().unwrap();
    let timeout = Some(Duration::from_secs(30));
    let cases = [
        (
            json!({ "phase": "Failed", "reason": "Evicted", "message": "low memory" }),
            Some((FailureReason::Evicted, None)),
        ),
        (
            json!({ "initContainerStatuses": [terminated("setup", 2, "Error")] }),
            Some((FailureReason::InitContainer, Some(2))),
        ),
        (
            json!({ "phase": "Running", "initContainerStatuses": [terminated("db", 143, "Error")] }),
            None,
        ),
        (
            json!({ "initContainerStatuses": [waiting("db", "ImagePullBackOff")] }),
            Some((FailureReason::ImagePull, None)),
        ),
        (
            json!({ "initContainerStatuses": [waiting("setup", "CreateContainerConfigError")] }),
            Some((FailureReason::InitContainer, None)),
        ),
        (
            json!({ "containerStatuses": [terminated("task", 137, "OOMKilled")] }),
            Some((FailureReason::ContainerOom, Some(137))),
        ),
        (
            json!({ "containerStatuses": [terminated("task", 1, "Error")] }),
            Some((FailureReason::ContainerExit, Some(1))),
        ),
        (
            json!({ "containerStatuses": [terminated("task", 0, "Completed")] }),
            None,
        ),
        (
            json!({ "containerStatuses": [waiting("task", "InvalidImageName")] }),
            Some((FailureReason::InvalidImage, None)),
        ),
        (
            json!({ "containerStatuses": [waiting("task", "CreateContainerError")] }),
            Some((FailureReason::ContainerCreate, None)),
        ),
        (
            json!({ "containerStatuses": [waiting("task", "ContainerCreating")] }),
            None,
        ),
    ];
    for (status, want) in cases {
        let got = match inspect_pod(&pod(status.clone(), sidecar_spec.clone()), now, timeout) {
            PodCheck::Failed(f) => Some((f.reason, f.exit_code)),
            _ => None,
        };
        assert_eq!(got, want, "{status}");
    }
    let sigterm = inspect_pod(
        &pod(
            json!({ "phase": "Failed", "containerStatuses": [terminated("task", 143, "Error")] }),
            json!(null),
        ),
        now,
        None,
    );
    let PodCheck::Failed(f) = sigterm else {
        panic!("failed")
    };
    assert!(f.message.starts_with("container task in pod p (namespace ns, job j) exited with code 143 (SIGTERM). Pod phase: Failed. Pod reason: Error"), "{}", f.message);
    assert!(
        f.message.contains(
            "eviction, preemption, node drain, activeDeadlineSeconds, or manual deletion"
        )
    );
}

#[test]
fn unschedulable_fails_only_after_the_timeout_and_never_when_disabled() {
    let status = json!({ "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": "0/1 nodes" }] });
    let p = pod(status, json!(null));
    let at = |s: &str| format!("2026-01-01T00:00:{s}Z").parse().unwrap();
    let timeout = Some(Duration::from_secs(30));
    assert_eq!(
        inspect_pod(&p, at("10"), timeout),
        PodCheck::UnschedulableFor(Duration::from_secs(20))
    );
    let PodCheck::Failed(f) = inspect_pod(&p, at("30"), timeout) else {
        panic!("times out")
    };
    assert_eq!(f.reason, FailureReason::Unschedulable);
    assert!(
        f.message
            .ends_with("is unschedulable. Pod reason: Unschedulable. Pod message: 0/1 nodes")
    );
    assert_eq!(
        inspect_pod(&p, at("59"), Some(Duration::ZERO)),
        PodCheck::Fine {
            events_needed: true
        }
    );
    assert_eq!(
        inspect_pod(&p, at("59"), None),
        PodCheck::Fine {
            events_needed: true
        }
    );
}

#[test]
fn events_and_failed_phase_map_to_volume_mount_and_deadline() {
    let pending = pod(json!({ "phase": "Pending" }), json!(null));
    let event: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": { "name": "e" }, "involvedObject": {}, "reason": "FailedMount",
        "message": "MountVolume.SetUp failed for volume \"x\"" }))
    .unwrap();
    let f = inspect_pod_events(&pending, &[event]).unwrap();
    assert_eq!(f.reason, FailureReason::VolumeMount);
    assert!(
        f.message
            .contains("Kubernetes event message: MountVolume.SetUp failed")
    );
    assert!(inspect_pod_events(&pending, &[]).is_none());
    let failed = pod(
        json!({ "phase": "Failed", "reason": "DeadlineExceeded", "message": "Pod was active on the node longer than the specified deadline" }),
        json!(null),
    );
    assert_eq!(
        inspect_pod_events(&failed, &[]).unwrap().reason,
        FailureReason::ActiveDeadline
    );
    let failed = pod(
        json!({ "phase": "Failed", "reason": "NodeLost" }),
        json!(null),
    );
    assert_eq!(
        inspect_pod_events(&failed, &[]).unwrap().reason,
        FailureReason::JobFailed
    );
}

#[test]
fn job_conditions_and_exit_codes() {
    let job = |conditions: serde_json::Value| {
        serde_json::from_value(json!({ "status": { "conditions": conditions } })).unwrap()
    };
    assert_eq!(job_state(&job(json!([]))), JobState::Running);
    assert_eq!(
        job_state(&job(json!([{ "type": "Complete", "status": "True" }]))),
        JobState::Complete
    );
    assert_eq!(
        job_state(&job(json!([{ "type": "Complete", "status": "False" }]))),
        JobState::Running
    );
    let failed = job_state(&job(
        json!([{ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "m" }]),
    ));
    assert_eq!(
        failed,
        JobState::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "m".into()
        }
    );
    assert_eq!(
        job_failure("j", "ns", "DeadlineExceeded", "").reason,
        FailureReason::ActiveDeadline
    );
    let f = job_failure(
        "j",
        "ns",
        "BackoffLimitExceeded",
        "has reached the specified backoff limit",
    );
    assert_eq!(f.reason, FailureReason::JobFailed);
    assert_eq!(
        f.message,
        "kubernetes Job j in namespace ns failed. Job reason: BackoffLimitExceeded. Job message: has reached the specified backoff limit"
    );
    assert_eq!(exit_code(1, None), 1);
    assert_eq!(exit_code(0, Some(9)), 137);
}

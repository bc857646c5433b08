//! The executor against an in-process fake API server (a `tower::service_fn` behind a real
//! `kube::Client`), for what a v1.20 server silently drops: native sidecars (init containers
//! with `restartPolicy: Always`) exiting 143 while the Job completes, or failing to pull.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{config, spec};
use crate::adapters::kubernetes::KubernetesExecutor;
use crate::domain::{Exit, FailureReason};
use crate::ports::executor::Executor;

#[derive(Default)]
struct Fake {
    requests: Vec<(Method, String)>,
    job: Option<Value>,
    sidecar_status: Value,
    /// Answer the first Job watch with a `410 Gone` ERROR event.
    expire_first_watch: bool,
    job_watches: usize,
    /// The Secret as the worker sent it.
    secret: Option<Value>,
    /// Refuse the Secret create with a 403.
    refuse_secret: bool,
    /// Whether the pods were listed (the Job completes only after its pod ran).
    pods_listed: bool,
}

fn respond(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn pod(fake: &Fake) -> Value {
    let job = fake.job.as_ref().unwrap();
    let mut spec = job["spec"]["template"]["spec"].clone();
    // The fake keeps what a 1.33 server keeps: the native sidecar's restartPolicy.
    spec["initContainers"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] == "db");
    json!({ "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p-1", "namespace": "ns", "uid": "pod-uid", "resourceVersion": "5",
                      "labels": job["spec"]["template"]["metadata"]["labels"] },
        "spec": spec,
        "status": { "phase": "Running",
            "initContainerStatuses": [fake.sidecar_status],
            "containerStatuses": [{ "name": "task", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                "state": { "terminated": { "exitCode": 0, "reason": "Completed" } } }] } })
}

async fn serve(
    fake: Arc<Mutex<Fake>>,
    req: Request<Body>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let mut fake = fake.lock().unwrap();
    fake.requests
        .push((parts.method.clone(), format!("{path}?{query}")));
    let watch = query.contains("watch=true");
    let response = match (parts.method, path.as_str()) {
        (Method::POST, "/api/v1/namespaces/ns/secrets") if fake.refuse_secret => respond(
            StatusCode::FORBIDDEN,
            &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
                "message": "secrets is forbidden: exceeded quota" }),
        ),
        (Method::POST, "/api/v1/namespaces/ns/secrets") => {
            let secret: Value = serde_json::from_slice(&body).unwrap();
            fake.secret = Some(secret.clone());
            respond(StatusCode::CREATED, &secret)
        }
        (Method::POST, "/apis/batch/v1/namespaces/ns/jobs") => {
            let mut job: Value = serde_json::from_slice(&body).unwrap();
            job["metadata"]["uid"] = json!("job-uid");
            job["metadata"]["resourceVersion"] = json!("1");
            fake.job = Some(job.clone());
            respond(StatusCode::CREATED, &job)
        }
        (Method::GET, p)
            if p.starts_with("/apis/batch/v1/namespaces/ns/jobs")
                && watch
                && fake.expire_first_watch
                && fake.job_watches == 0 =>
        {
            fake.job_watches += 1;
            let gone = json!({ "type": "ERROR", "object": { "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "code": 410, "reason": "Expired", "message": "too old resource version" } });
            Response::new(Body::from(format!("{gone}\n").into_bytes()))
        }
        (Method::GET, p)
            if p.starts_with("/apis/batch/v1/namespaces/ns/jobs")
                && watch
                && (!fake.pods_listed || fake.sidecar_status["state"].get("waiting").is_some()) =>
        {
            // The pod has not run (or cannot start): the Job does not change.
            fake.job_watches += 1;
            Response::new(Body::from(Vec::new()))
        }
        (Method::GET, p) if p.starts_with("/apis/batch/v1/namespaces/ns/jobs") && watch => {
            fake.job_watches += 1;
            // One MODIFIED event: the Job completed (after the pod list showed the sidecar's 143).
            let mut job = fake.job.clone().unwrap();
            job["metadata"]["resourceVersion"] = json!("9");
            job["status"] =
                json!({ "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] });
            let line =
                serde_json::to_string(&json!({ "type": "MODIFIED", "object": job })).unwrap();
            Response::new(Body::from(format!("{line}\n").into_bytes()))
        }
        (Method::GET, p) if p.starts_with("/apis/batch/v1/namespaces/ns/jobs/") => {
            respond(StatusCode::OK, fake.job.as_ref().unwrap())
        }
        (Method::GET, "/apis/batch/v1/namespaces/ns/jobs") => respond(
            StatusCode::OK,
            &json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": { "resourceVersion": "1" },
                "items": fake.job.iter().collect::<Vec<_>>() }),
        ),
        (Method::GET, "/api/v1/namespaces/ns/pods") if watch => {
            Response::new(Body::from(Vec::new()))
        }
        (Method::GET, "/api/v1/namespaces/ns/pods") => {
            fake.pods_listed = true;
            respond(
                StatusCode::OK,
                &json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": { "resourceVersion": "5" }, "items": [pod(&fake)] }),
            )
        }
        (Method::GET, "/api/v1/namespaces/ns/events") => respond(
            StatusCode::OK,
            &json!({
            "apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": [] }),
        ),
        (Method::DELETE, _) => respond(
            StatusCode::OK,
            &json!({ "kind": "Status", "apiVersion": "v1", "status": "Success" }),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "not in the fake" }),
        ),
    };
    Ok(response)
}

async fn run_with_sidecar(
    sidecar_status: Value,
) -> (Result<Exit, crate::domain::TaskFailure>, Arc<Mutex<Fake>>) {
    run_fake(Fake {
        sidecar_status,
        ..Fake::default()
    })
    .await
}

async fn run_fake(fake: Fake) -> (Result<Exit, crate::domain::TaskFailure>, Arc<Mutex<Fake>>) {
    let fake = Arc::new(Mutex::new(fake));
    let state = fake.clone();
    let service = tower::service_fn(move |req| serve(state.clone(), req));
    let client = kube::Client::new(service, "ns");
    let config = crate::adapters::kubernetes::KubernetesConfig {
        namespace: "ns".into(),
        pod_template: Some(
            json!({ "initContainers": [{ "name": "db", "image": "pg", "restartPolicy": "Always" }] }),
        ),
        ..config()
    };
    let executor = KubernetesExecutor::with_client(client, &config).unwrap();
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        executor.run(&spec(), CancellationToken::new()),
    )
    .await
    .expect("the executor finishes");
    (outcome, fake)
}

#[tokio::test]
async fn native_sidecar_exiting_143_does_not_fail_a_completing_job() {
    let (outcome, fake) = run_with_sidecar(
        json!({ "name": "db", "ready": false, "restartCount": 0, "image": "pg", "imageID": "",
        "state": { "terminated": { "exitCode": 143, "reason": "Error" } } }),
    )
    .await;
    assert_eq!(outcome, Ok(Exit::Succeeded));
    let fake = fake.lock().unwrap();
    let sent = &fake.job.as_ref().unwrap()["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(
        sent[1]["restartPolicy"], "Always",
        "the native sidecar is sent as such: {sent}"
    );
    let methods: Vec<String> = fake
        .requests
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        methods
            .iter()
            .any(|r| r.starts_with("DELETE /apis/batch/v1/namespaces/ns/jobs/")),
        "{methods:?}"
    );
    assert!(
        methods[0].starts_with("POST /apis/batch/v1/namespaces/ns/jobs")
            && methods[1].starts_with("POST /api/v1/namespaces/ns/secrets"),
        "the Job comes first, so the Secret can be owned by it from its creation: {methods:?}"
    );
    let owners = &fake.secret.as_ref().unwrap()["metadata"]["ownerReferences"];
    assert_eq!(
        owners,
        &json!([{ "apiVersion": "batch/v1", "kind": "Job", "name": fake.job.as_ref().unwrap()["metadata"]["name"], "uid": "job-uid" }]),
        "the Secret is created owned by the Job"
    );
    assert!(
        !methods.iter().any(|r| r.contains("/secrets/")),
        "the Secret is never patched or deleted by the worker: {methods:?}"
    );
}

#[tokio::test]
async fn a_refused_secret_fails_the_task_as_job_create_and_deletes_the_job() {
    let (outcome, fake) = run_fake(Fake {
        refuse_secret: true,
        ..Fake::default()
    })
    .await;
    let failure = outcome.unwrap_err();
    assert_eq!(failure.reason, FailureReason::JobCreate);
    assert!(
        failure
            .message
            .contains("failed to create Kubernetes Secret for the task environment: secrets is forbidden: exceeded quota (403)"),
        "{}",
        failure.message
    );
    let fake = fake.lock().unwrap();
    let methods: Vec<String> = fake
        .requests
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert_eq!(methods.len(), 3, "{methods:?}");
    assert!(
        methods[2].starts_with("DELETE /apis/batch/v1/namespaces/ns/jobs/oz-task-"),
        "the Job, which could never start, is deleted: {methods:?}"
    );
}

#[tokio::test]
async fn native_sidecar_that_cannot_pull_fails_the_task() {
    let (outcome, _) = run_with_sidecar(json!({ "name": "db", "ready": false, "restartCount": 0, "image": "pg", "imageID": "",
        "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"pg\"" } } })).await;
    let failure = outcome.unwrap_err();
    assert_eq!(failure.reason, FailureReason::ImagePull);
    assert!(
        failure.message.contains("init container db in pod p-1"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn an_expired_watch_relists_and_resumes() {
    let sidecar = json!({ "name": "db", "ready": true, "restartCount": 0, "image": "pg", "imageID": "",
        "state": { "running": {} } });
    let (outcome, fake) = run_fake(Fake {
        sidecar_status: sidecar,
        expire_first_watch: true,
        ..Fake::default()
    })
    .await;
    assert_eq!(outcome, Ok(Exit::Succeeded));
    let fake = fake.lock().unwrap();
    let job_lists = fake
        .requests
        .iter()
        .filter(|(m, p)| {
            m == Method::GET
                && p.starts_with("/apis/batch/v1/namespaces/ns/jobs?")
                && !p.contains("watch=true")
        })
        .count();
    assert_eq!(
        job_lists, 2,
        "one list before the first watch, one after the 410"
    );
    assert!(fake.job_watches >= 2, "the watch resumed after the re-list");
}

//! Kubernetes backend overhead through the real daemon, against the real test API server
//! v1.20.2 (scripts/setup/40-kubernetes.sh), in one run:
//!
//! 1. the API server's own round trips, on the kind of object the worker creates: a Job create
//!    (request to response), and a watch event (Job create sent to its `ADDED` event on a watch
//!    that was already open);
//! 2. the real daemon in this process (`WsTaskSource` + `Supervisor` + `KubernetesExecutor`,
//!    preflight included) driven by a `LocalControlPlane` on 127.0.0.1, one task at a time, the
//!    bench playing the kubelet:
//!    * assignment (`assign()` sent) → the task Job's `ADDED` event on the bench's Job watch,
//!      as a ratio of a create round trip and of a watch event round trip (the observation
//!      itself costs one watch event, so the second ratio is the like-for-like one);
//!    * pod terminated (the status patch sent) → `task_completed` received, as a ratio of a
//!      watch event round trip; the job controller's part of it (pod terminated → the Job's
//!      `Complete` condition on the bench's watch) is printed too, since the worker only
//!      reports success once the Job is `Complete`;
//!    * the API requests the worker sends per task (median, min, max).
//!
//! Needs `OZ_TEST_KUBECONFIG` (admin kubeconfig); prints why and exits 0 without it.
//! Run: `source /tmp/oz/env` (or `eval "$(bash scripts/setup/40-kubernetes.sh start | tail -1)"`),
//! then `cargo bench --bench kubernetes`. Without `--bench` (e.g. under `cargo test
//! --all-targets`) it does a small smoke run.

#![allow(
    clippy::disallowed_methods,
    reason = "benches read their service addresses from the environment, time phases and spawn tasks they await"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Daemon, median, ms, ratio};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};
use oz_agent_worker::adapters::kubernetes::names::TaskNames;
use oz_agent_worker::adapters::kubernetes::{KubernetesConfig, KubernetesExecutor};
use oz_agent_worker::domain::spec::SpecSettings;
use oz_local_control_plane::sample_assignment;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Requests the worker sends before both of its watches are open: Job create, Secret create,
/// GET Job, LIST pods, WATCH Job, WATCH pods.
const STEADY_REQUESTS: u64 = 6;
/// Bound on every wait for the API server or the daemon.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full {
        15
    } else {
        println!("kubernetes bench: smoke run; use `cargo bench --bench kubernetes` for figures");
        2
    };
    let Some(path) = std::env::var_os("OZ_TEST_KUBECONFIG") else {
        println!(
            "kubernetes bench SKIPPED: OZ_TEST_KUBECONFIG unset (source /tmp/oz/env or run scripts/setup/40-kubernetes.sh start)"
        );
        return;
    };
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let admin = Client::try_from(config).unwrap();
    let ns = format!("oz-bench-{:08x}", fastrand::u32(..));
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);

    // 1. The API server's own round trips.
    let (mut create_rtt, mut watch_rtt) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let name = format!("rtt-{i}");
        let mut events = watch(&jobs, Some(&format!("metadata.name={name}")), None).await;
        let bare: Job = serde_json::from_value(json!({ "metadata": { "name": name },
            "spec": { "backoffLimit": 0, "template": { "spec": { "restartPolicy": "Never",
                "containers": [{ "name": "c", "image": "oz-test/busybox:1" }] } } } }))
        .unwrap();
        let sent = Instant::now();
        jobs.create(&PostParams::default(), &bare).await.unwrap();
        create_rtt.push(sent.elapsed());
        next_added(&mut events).await;
        watch_rtt.push(sent.elapsed());
        jobs.delete(&name, &DeleteParams::background())
            .await
            .unwrap();
    }

    // 2. The daemon, one task at a time.
    let worker = KubernetesConfig {
        worker_id: format!("oz-bench-{:08x}", fastrand::u32(..)),
        namespace: ns.clone(),
        kubeconfig: Some(path.into()),
        ..KubernetesConfig::default()
    };
    let executor = KubernetesExecutor::connect(&worker).await.expect("connect");
    let daemon = Daemon::start(
        &worker.worker_id,
        Arc::new(executor.clone()),
        SpecSettings {
            default_image: worker.default_image.clone(),
            ..SpecSettings::default()
        },
    )
    .await;
    let mut samples = Samples::default();
    // Round 0 warms up the path (connections, the job controller's informers) and is not kept.
    for i in 0..=rounds {
        let sample = task(&daemon, &executor, &worker, &jobs, &pods, i).await;
        if i > 0 {
            samples.push(sample);
        }
    }
    daemon.stop().await;

    let (create, watch_event) = (median(create_rtt), median(watch_rtt));
    let (created, completed) = (median(samples.created), median(samples.completed));
    let job_complete = median(samples.job_complete);
    let requests = samples.requests;
    println!(
        "kubernetes bench: the real daemon vs API server v1.20.2 on loopback, {rounds} tasks, one at a time, medians"
    );
    println!(
        "  API server: Job create round trip              {}",
        ms(create)
    );
    println!(
        "  API server: watch event (create -> ADDED)      {}",
        ms(watch_event)
    );
    println!(
        "  assignment -> Job ADDED                        {} = {:.2}x a create, {:.2}x a watch event",
        ms(created),
        ratio(created, create),
        ratio(created, watch_event)
    );
    println!(
        "  pod terminated -> task_completed               {} = {:.2}x a watch event",
        ms(completed),
        ratio(completed, watch_event)
    );
    println!(
        "    of which the job controller (-> Job Complete) {} = {:.2}x a watch event",
        ms(job_complete),
        ratio(job_complete, watch_event)
    );
    println!(
        "  API requests per task (worker)                 median {}, min {}, max {}",
        median(requests.clone()),
        requests.iter().min().unwrap(),
        requests.iter().max().unwrap()
    );
    let _ = Api::<Namespace>::all(admin)
        .delete(&ns, &DeleteParams::default())
        .await;
}

#[derive(Default)]
struct Samples {
    created: Vec<Duration>,
    completed: Vec<Duration>,
    job_complete: Vec<Duration>,
    requests: Vec<u64>,
}

struct Sample {
    created: Duration,
    completed: Duration,
    job_complete: Duration,
    requests: u64,
}

impl Samples {
    fn push(&mut self, s: Sample) {
        self.created.push(s.created);
        self.completed.push(s.completed);
        self.job_complete.push(s.job_complete);
        self.requests.push(s.requests);
    }
}

/// One task through the daemon, the bench playing the kubelet.
async fn task(
    daemon: &Daemon,
    executor: &KubernetesExecutor,
    worker: &KubernetesConfig,
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    i: usize,
) -> Sample {
    let task_id = format!(
        "019f5de4-{i:04x}-762e-92ed-{:012x}",
        fastrand::u64(..1 << 48)
    );
    let data = sample_assignment(&task_id);
    let names = TaskNames::new(
        &worker.worker_id,
        &task_id,
        data["execution_id"].as_str().unwrap(),
        &worker.extra_labels,
    );
    let job_field = format!("metadata.name={}", names.job_name);
    let mut job_events = watch(jobs, Some(&job_field), None).await;
    let mut pod_events = watch(pods, None, Some(&names.pod_selector())).await;

    let before = executor.api_requests();
    let assigned = daemon.assign(&data);
    next_added(&mut job_events).await;
    let created = assigned.elapsed();
    let pod = next_added(&mut pod_events).await;
    let pod_name = pod.metadata.name.unwrap();
    // The worker's watches start from the versions of its first GET and LIST, so once both
    // watch requests are out it sees every later change through them. This polls the
    // worker's own request counter (a condition, not a timed wait).
    let settled = Instant::now();
    while executor.api_requests() - before < STEADY_REQUESTS {
        assert!(
            settled.elapsed() < WAIT,
            "the worker never opened its watches"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({ "status": { "phase": "Succeeded", "containerStatuses": [{ "name": "task",
        "ready": false, "restartCount": 0, "image": "oz-test/busybox:1", "imageID": "",
        "state": { "terminated": { "exitCode": 0, "reason": "Completed",
            "startedAt": now, "finishedAt": now } } }] } });
    let terminated = Instant::now();
    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let (job_complete, completed) = tokio::join!(
        async {
            loop {
                match tokio::time::timeout(WAIT, job_events.next()).await {
                    Ok(Some(Ok(WatchEvent::Modified(job))))
                        if job
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter()
                                    .any(|c| c.type_ == "Complete" && c.status == "True")
                            }) =>
                    {
                        return terminated.elapsed();
                    }
                    Ok(Some(Ok(_))) => {}
                    other => panic!("Job watch ended before Complete: {other:?}"),
                }
            }
        },
        daemon.completed(&task_id),
    );
    Sample {
        created,
        completed: completed - terminated,
        job_complete,
        requests: executor.api_requests() - before,
    }
}

/// A watch opened at the current list version (so it sees every change from now on).
async fn watch<K>(
    api: &Api<K>,
    fields: Option<&str>,
    labels: Option<&str>,
) -> BoxStream<'static, kube::Result<WatchEvent<K>>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (mut lp, mut wp) = (ListParams::default(), WatchParams::default());
    if let Some(fields) = fields {
        lp = lp.fields(fields);
        wp = wp.fields(fields);
    }
    if let Some(labels) = labels {
        lp = lp.labels(labels);
        wp = wp.labels(labels);
    }
    let version = api
        .list_metadata(&lp)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.watch(&wp, &version).await.unwrap().boxed()
}

/// The object of the next `ADDED` event.
async fn next_added<K: std::fmt::Debug>(
    events: &mut BoxStream<'static, kube::Result<WatchEvent<K>>>,
) -> K {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Ok(WatchEvent::Added(object)))) => return object,
            Ok(Some(Ok(_))) => {}
            other => panic!("watch ended before ADDED: {other:?}"),
        }
    }
}

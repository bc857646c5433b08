//! Kubernetes backend cost and overhead through the real daemon (`WsTaskSource`, `Supervisor`
//! and `KubernetesExecutor`, in this process, driven by a `LocalControlPlane` on 127.0.0.1),
//! against the v1.20.2 test cluster of scripts/setup/40-kubernetes.sh, in one run:
//!
//! 1. Scale: N concurrent tasks (500 with `--bench`) whose pods stay Pending (a node selector no
//!    node matches), assigned at a steady pace. Prints the watches the worker holds (deltas of
//!    the API server's own `apiserver_registered_watchers` and `apiserver_longrunning_gauge`
//!    from before the daemon started), the API requests per task by verb and resource (deltas of
//!    `apiserver_request_total`, every client included: the job controller's and scheduler's
//!    share is listed separately by resource) and the worker's own request count, the process's
//!    RSS and CPU time (the worker runs in this process; the bench's own part is a few
//!    watches), and assignment → Job `ADDED` (on the bench's watch) p50/p99. Then cancels all of
//!    them and prints the time until every Job and Secret of the worker is gone.
//! 2. On the real node: a trivial task (the stand-in `oz` exiting 0) from assignment to
//!    `task_completed`, against the same pod created directly as a bare Job (create → the
//!    `Complete` condition on a watch), alternating, as a ratio of medians.
//!
//! Needs `OZ_TEST_KUBECONFIG`; part 2 also `OZ_TEST_KUBE_NODE`, `OZ_TEST_DOCKER_IMAGE` and
//! `OZ_TEST_KUBE_SIDECAR`; prints why and skips without them. Run:
//! `eval "$(bash scripts/setup/40-kubernetes.sh start | tail -1)"` (after 20-docker.sh), then
//! `cargo bench --bench kubernetes`. Without `--bench` (e.g. under `cargo test --all-targets`)
//! it does a small smoke run.

#![allow(
    clippy::disallowed_methods,
    reason = "benches read their service addresses from the environment, time phases and spawn tasks they await"
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Daemon, median, ms, ratio};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use oz_agent_worker::adapters::kubernetes::names::{TaskNames, worker_job_selector};
use oz_agent_worker::adapters::kubernetes::{
    ImagePullPolicy, KubernetesConfig, KubernetesExecutor,
};
use oz_agent_worker::domain::spec::SpecSettings;
use oz_local_control_plane::sample_assignment;
use serde_json::json;

/// Bound on every wait for the API server or the daemon.
const WAIT: Duration = Duration::from_secs(120);
/// Pace of the assignments in part 1.
const PACE: Duration = Duration::from_millis(20);

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let full = std::env::args().any(|a| a == "--bench");
    let (tasks, rounds) = if full {
        (500, 7)
    } else {
        println!("kubernetes bench: smoke run; use `cargo bench --bench kubernetes` for figures");
        (5, 1)
    };
    let Some(path) = std::env::var_os("OZ_TEST_KUBECONFIG") else {
        println!(
            "kubernetes bench SKIPPED: OZ_TEST_KUBECONFIG unset (run scripts/setup/40-kubernetes.sh start)"
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
    scale(&admin, &ns, path.clone().into(), tasks).await;
    node_overhead(&admin, &ns, path.into(), rounds).await;
    let _ = Api::<Namespace>::all(admin)
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// Part 1: N concurrent Pending tasks.
async fn scale(admin: &Client, ns: &str, kubeconfig: std::path::PathBuf, tasks: usize) {
    let worker = KubernetesConfig {
        worker_id: format!("oz-bench-{:08x}", fastrand::u32(..)),
        namespace: ns.to_owned(),
        kubeconfig: Some(kubeconfig),
        unschedulable_timeout: Some(Duration::from_secs(3600)),
        pod_template: Some(json!({ "nodeSelector": { "oz-bench/pool": "nowhere" } })),
        ..KubernetesConfig::default()
    };
    let jobs: Api<Job> = Api::namespaced(admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let selector = worker_job_selector(&worker.worker_id);
    // The bench's own Job watch (one), opened before the baseline so it is not counted.
    let version = jobs
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut last_version = version.clone();
    let mut job_events = jobs
        .watch(&WatchParams::default().labels(&selector), &version)
        .await
        .unwrap()
        .boxed();
    let executor = KubernetesExecutor::connect(&worker).await.expect("connect");
    let base = metrics(admin).await;
    let (cpu0, preflight_requests) = (cpu_time(), executor.api_requests());
    let daemon = Daemon::start(
        &worker.worker_id,
        Arc::new(executor.clone()),
        SpecSettings::default(),
    )
    .await;
    let mut assigned = HashMap::new();
    let mut ids = Vec::new();
    let started = Instant::now();
    for i in 0..tasks {
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
        assigned.insert(names.job_name, daemon.assign(&data));
        ids.push(task_id);
        tokio::time::sleep_until((started + PACE * (i as u32 + 1)).into()).await;
    }
    let mut latencies = Vec::new();
    while latencies.len() < tasks {
        match tokio::time::timeout(WAIT, job_events.next()).await {
            Ok(Some(Ok(WatchEvent::Added(job)))) => {
                let seen = Instant::now();
                if let Some(v) = &job.metadata.resource_version {
                    last_version.clone_from(v);
                }
                let name = job.metadata.name.unwrap_or_default();
                if let Some(at) = assigned.get(&name) {
                    latencies.push(seen - *at);
                }
            }
            Ok(Some(Ok(_))) => {}
            // The API server ends a watch after its timeout: go on from the last version seen.
            Ok(None) => {
                job_events = jobs
                    .watch(&WatchParams::default().labels(&selector), &last_version)
                    .await
                    .unwrap()
                    .boxed();
            }
            other => panic!("Job watch ended: {other:?}"),
        }
    }
    // Steady state: let every task settle on its watch slice (pods scheduled → Unschedulable).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let at_load = metrics(admin).await;
    let (rss, cpu) = (rss_kib(), cpu_time() - cpu0);
    let worker_requests = executor.api_requests() - preflight_requests;
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "kubernetes bench part 1: {tasks} concurrent tasks (pods Pending: node selector matches nothing), assigned every {} ms, API server v1.20.2",
        PACE.as_millis()
    );
    let watchers =
        |m: &Metrics, kind: &str| m.get(&format!("apiserver_registered_watchers|kind={kind}"));
    for kind in ["Job", "Pod", "Event", "Secret"] {
        println!(
            "  watches held by the worker, {kind:<6} (registered_watchers delta)   {}",
            watchers(&at_load, kind) - watchers(&base, kind)
        );
    }
    println!(
        "  long-running WATCH requests delta (apiserver_longrunning_gauge)   {}",
        at_load.get("apiserver_longrunning_gauge|verb=WATCH")
            - base.get("apiserver_longrunning_gauge|verb=WATCH")
    );
    println!(
        "  API requests per task, the worker's own count                     {:.2}",
        worker_requests as f64 / tasks as f64
    );
    println!(
        "  API requests per task by verb and resource (apiserver_request_total delta, all clients):"
    );
    let mut keys: Vec<&String> = at_load
        .0
        .keys()
        .filter(|k| k.starts_with("apiserver_request_total|"))
        .collect();
    keys.sort();
    for key in keys {
        let delta = at_load.get(key) - base.get(key);
        if delta >= 1.0 {
            println!(
                "    {:<48} {:.2}",
                key.trim_start_matches("apiserver_request_total|"),
                delta / tasks as f64
            );
        }
    }
    println!(
        "  process RSS (worker in-process)                                    {} MiB",
        rss / 1024
    );
    println!(
        "  process CPU time while assigning and holding (user+sys)            {}",
        ms(cpu)
    );
    println!(
        "  assignment -> Job ADDED p50 {}, p99 {}, max {}",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(*latencies.last().unwrap())
    );
    println!(
        "  shared-watch lists so far                                          {}",
        executor.watch_lists()
    );

    let cancelled = Instant::now();
    for id in &ids {
        daemon.cp.cancel(id).unwrap();
    }
    let lp = ListParams::default().labels(&selector);
    let mut jobs_gone = None;
    loop {
        let left_jobs = jobs.list_metadata(&lp).await.unwrap().items.len();
        let left_secrets = secrets.list_metadata(&lp).await.unwrap().items.len();
        if left_jobs == 0 && jobs_gone.is_none() {
            jobs_gone = Some(cancelled.elapsed());
        }
        if left_jobs == 0 && left_secrets == 0 {
            break;
        }
        assert!(
            cancelled.elapsed() < WAIT * 5,
            "{left_jobs} Jobs, {left_secrets} Secrets left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  cancel all {tasks} -> every Job gone (the worker's deletes)         {}",
        ms(jobs_gone.unwrap_or_default())
    );
    println!(
        "  cancel all {tasks} -> every Job and Secret gone (+ garbage collector) {}",
        ms(cancelled.elapsed())
    );
    daemon.stop().await;
    // The bare operation after the worker's part, so the RSS above is the worker's.
    let bare = bare_creates(admin, ns, tasks).await;
    println!(
        "  bare (the bench's own client, same pace): Job + Secret create, create -> Job ADDED p50 {}, p99 {}",
        ms(bare.0),
        ms(bare.1)
    );
    println!(
        "  ratio worker / bare: p50 {:.2}, p99 {:.2}",
        ratio(pct(0.5), bare.0),
        ratio(pct(0.99), bare.1)
    );
}

/// The bare operation at the same pace: N Jobs (Pending behind a node selector) and their
/// Secrets created directly, each as its own task; create sent → the Job's `ADDED` on a watch,
/// p50 and p99. Deletes them (and waits) before returning.
async fn bare_creates(admin: &Client, ns: &str, tasks: usize) -> (Duration, Duration) {
    let jobs: Api<Job> = Api::namespaced(admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let lp = ListParams::default().labels("oz-bench-bare=1");
    let version = jobs
        .list_metadata(&lp)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = jobs
        .watch(&WatchParams::default().labels("oz-bench-bare=1"), &version)
        .await
        .unwrap()
        .boxed();
    let started = Instant::now();
    let mut sent = HashMap::new();
    let mut creates = Vec::new();
    for i in 0..tasks {
        let name = format!("bare-scale-{i}");
        let job: Job = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "oz-bench-bare": "1" } },
            "spec": { "backoffLimit": 0, "template": { "spec": { "restartPolicy": "Never",
                "nodeSelector": { "oz-bench/pool": "nowhere" },
                "containers": [{ "name": "task", "image": "oz-test/busybox:1" }] } } } }))
        .unwrap();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "oz-bench-bare": "1" } },
            "stringData": { "K": "v" } }))
        .unwrap();
        sent.insert(name, Instant::now());
        let (jobs, secrets) = (jobs.clone(), secrets.clone());
        creates.push(tokio::spawn(async move {
            jobs.create(&PostParams::default(), &job).await.unwrap();
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
        }));
        tokio::time::sleep_until((started + PACE * (i as u32 + 1)).into()).await;
    }
    let mut latencies = Vec::new();
    while latencies.len() < tasks {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Ok(WatchEvent::Added(job)))) => {
                if let Some(at) = sent.get(job.metadata.name.as_deref().unwrap_or_default()) {
                    latencies.push(at.elapsed());
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("Job watch ended: {other:?}"),
        }
    }
    for create in creates {
        create.await.unwrap();
    }
    let dp = DeleteParams::background();
    jobs.delete_collection(&dp, &lp).await.unwrap();
    secrets.delete_collection(&dp, &lp).await.unwrap();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    (pct(0.5), pct(0.99))
}

/// Part 2: a trivial task on the real node vs the same pod as a bare Job.
async fn node_overhead(admin: &Client, ns: &str, kubeconfig: std::path::PathBuf, rounds: usize) {
    let (Some(_), Ok(image), Ok(sidecar)) = (
        std::env::var_os("OZ_TEST_KUBE_NODE"),
        std::env::var("OZ_TEST_DOCKER_IMAGE"),
        std::env::var("OZ_TEST_KUBE_SIDECAR"),
    ) else {
        println!(
            "kubernetes bench part 2 SKIPPED: no node (OZ_TEST_KUBE_NODE, OZ_TEST_DOCKER_IMAGE, OZ_TEST_KUBE_SIDECAR)"
        );
        return;
    };
    let worker = KubernetesConfig {
        worker_id: format!("oz-bench-node-{:08x}", fastrand::u32(..)),
        namespace: ns.to_owned(),
        kubeconfig: Some(kubeconfig),
        image_pull_policy: ImagePullPolicy::Never,
        preflight_image: image.clone(),
        ..KubernetesConfig::default()
    };
    let jobs: Api<Job> = Api::namespaced(admin.clone(), ns);
    let executor = KubernetesExecutor::connect(&worker).await.expect("connect");
    let daemon = Daemon::start(
        &worker.worker_id,
        Arc::new(executor.clone()),
        SpecSettings::default(),
    )
    .await;
    let version = jobs
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = jobs
        .watch(&WatchParams::default(), &version)
        .await
        .unwrap()
        .boxed();
    let (mut through_worker, mut bare) = (Vec::new(), Vec::new());
    // Round 0 warms up (images, connections) and is not kept.
    for i in 0..=rounds {
        let task_id = format!(
            "019f5de4-{i:04x}-762e-92ed-{:012x}",
            fastrand::u64(..1 << 48)
        );
        let mut data = sample_assignment(&task_id);
        data["docker_image"] = json!(image);
        data["sidecar_image"] = json!(sidecar);
        let sent = daemon.assign(&data);
        let done = daemon.completed(&task_id).await;
        // The worker's Job as created, for the bare copy of its pod.
        let template = loop {
            match tokio::time::timeout(WAIT, events.next()).await {
                Ok(Some(Ok(WatchEvent::Added(job))))
                    if job
                        .metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.contains(&task_id)) =>
                {
                    break job.spec.unwrap().template;
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("Job watch ended: {other:?}"),
            }
        };
        // The same pod, minus the worker's labels and its Secret's env refs (gone with its Job).
        let mut spec = template.spec.unwrap();
        for c in spec
            .init_containers
            .iter_mut()
            .flatten()
            .chain(spec.containers.iter_mut())
        {
            if let Some(env) = c.env.as_mut() {
                env.retain(|e| e.value_from.is_none());
            }
        }
        let name = format!("bare-{i}");
        let job: Job = serde_json::from_value(json!({ "metadata": { "name": name },
            "spec": { "backoffLimit": 0, "template": { "spec": spec } } }))
        .unwrap();
        let created = Instant::now();
        jobs.create(&PostParams::default(), &job).await.unwrap();
        loop {
            match tokio::time::timeout(WAIT, events.next()).await {
                Ok(Some(Ok(WatchEvent::Modified(job))))
                    if job.metadata.name.as_deref() == Some(name.as_str())
                        && job
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter()
                                    .any(|c| c.type_ == "Complete" && c.status == "True")
                            }) =>
                {
                    break;
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("Job watch ended: {other:?}"),
            }
        }
        let bare_time = created.elapsed();
        jobs.delete(&name, &DeleteParams::background())
            .await
            .unwrap();
        if i > 0 {
            through_worker.push(done - sent);
            bare.push(bare_time);
        }
    }
    daemon.stop().await;
    let (w, b) = (median(through_worker), median(bare));
    println!(
        "kubernetes bench part 2: a trivial task on the real node (kubelet + dockershim + Docker), {rounds} rounds, medians"
    );
    println!(
        "  bare: create Job -> Job Complete (same pod)        {}",
        ms(b)
    );
    println!(
        "  worker: assignment -> task_completed               {}",
        ms(w)
    );
    println!(
        "  overhead ratio                                     {:.3}",
        ratio(w, b)
    );
}

/// Sums of the API server's metrics by name and the labels that matter here.
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

async fn metrics(admin: &Client) -> Metrics {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin.request_text(request).await.expect("/metrics");
    let mut sums = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let labels: BTreeMap<&str, &str> = labels
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        let key = match name {
            "apiserver_registered_watchers" => {
                format!("{name}|kind={}", labels.get("kind").unwrap_or(&""))
            }
            "apiserver_longrunning_gauge" => {
                format!("{name}|verb={}", labels.get("verb").unwrap_or(&""))
            }
            "apiserver_request_total" => format!(
                "{name}|{} {}{}",
                labels.get("verb").unwrap_or(&""),
                labels.get("resource").unwrap_or(&""),
                labels
                    .get("subresource")
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            ),
            _ => continue,
        };
        *sums.entry(key).or_insert(0.0) += value;
    }
    Metrics(sums)
}

/// This process's resident set size, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// This process's user + system CPU time.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // Linux reports in clock ticks of 1/100 s (USER_HZ) on every common configuration.
    Duration::from_millis(ticks * 10)
}

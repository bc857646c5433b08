//! Kubernetes executor latency against the real test API server (scripts/setup/40-kubernetes.sh):
//! assignment → Job created and pod terminated → run() returns, each as a ratio of the API
//! server's own round trip for a create and for a watch event, plus API requests per task.
//!
//! Run: `bash scripts/setup/40-kubernetes.sh start` (prints the exports), then
//! `OZ_TEST_KUBECONFIG=... cargo bench --bench kubernetes`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use oz_agent_worker::adapters::kubernetes::names::TaskNames;
use oz_agent_worker::adapters::kubernetes::{KubernetesConfig, KubernetesExecutor};
use oz_agent_worker::domain::spec::{SpecSettings, prepare};
use oz_agent_worker::domain::{Assignment, TaskId};
use oz_agent_worker::ports::executor::Executor;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a 2-round smoke test.
    let rounds = if std::env::args().any(|a| a == "--bench") {
        15
    } else {
        2
    };
    let Some(path) = std::env::var_os("OZ_TEST_KUBECONFIG") else {
        println!(
            "kubernetes bench skipped: OZ_TEST_KUBECONFIG unset (run scripts/setup/40-kubernetes.sh start)"
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
        metadata: kube::api::ObjectMeta {
            name: Some(ns.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();

    // The API server's own round trips: a create, and a change seen through a watch.
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let mut create_rtt = Vec::new();
    for i in 0..rounds {
        let map = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("rtt-{i}")),
                ..Default::default()
            },
            ..Default::default()
        };
        // A freshly opened watch needs a moment before the server streams to it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        maps.create(&PostParams::default(), &map).await.unwrap();
        create_rtt.push(start.elapsed());
    }
    // A watch event: from sending a create to its ADDED event, on Pods (served from the API
    // server's watch cache, as the worker's Job and Pod watches are).
    let bare_pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let (mut watch_rtt, mut patch_rtt) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let name = format!("w-{i}");
        let version = bare_pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let wp = WatchParams::default().fields(&format!("metadata.name={name}"));
        let mut stream = bare_pods.watch(&wp, &version).await.unwrap().boxed();
        let pod: Pod = serde_json::from_value(json!({ "metadata": { "name": name },
            "spec": { "containers": [{ "name": "c", "image": "oz-test/busybox:1" }] } }))
        .unwrap();
        let start = Instant::now();
        bare_pods
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        while let Some(Ok(event)) = stream.next().await {
            if matches!(event, WatchEvent::Added(_)) {
                break;
            }
        }
        watch_rtt.push(start.elapsed());
        let start = Instant::now();
        let patch = Patch::Merge(json!({ "metadata": { "labels": { "k": "v" } } }));
        bare_pods
            .patch(&name, &PatchParams::default(), &patch)
            .await
            .unwrap();
        patch_rtt.push(start.elapsed());
    }

    // The executor, one task at a time, with the bench playing the kubelet.
    let worker = KubernetesConfig {
        worker_id: "oz-bench".into(),
        namespace: ns.clone(),
        kubeconfig: Some(path.into()),
        ..KubernetesConfig::default()
    };
    let executor = KubernetesExecutor::connect(&worker).await.expect("connect");
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let (mut to_created, mut to_completed, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    let mut to_job_complete = Vec::new();
    for i in 0..rounds {
        let mut assignment = Assignment::new(TaskId::parse(format!("bench-task-{i}")).unwrap());
        assignment
            .env_vars
            .insert("GITHUB_TOKEN".into(), "secret".into());
        let spec = prepare(&assignment, &SpecSettings::default());
        let names = TaskNames::new(
            &worker.worker_id,
            spec.task_id.as_str(),
            &spec.execution_id,
            &worker.extra_labels,
        );
        let list = jobs.list(&ListParams::default()).await.unwrap();
        let wp = WatchParams::default().fields(&format!("metadata.name={}", names.job_name));
        let mut job_events = jobs
            .watch(&wp, &list.metadata.resource_version.unwrap())
            .await
            .unwrap()
            .boxed();
        let before = executor.api_requests();
        let ex = executor.clone();
        let assigned = Instant::now();
        let run = tokio::spawn(async move { ex.run(&spec, CancellationToken::new()).await });
        while let Some(Ok(event)) = job_events.next().await {
            if matches!(event, WatchEvent::Added(_)) {
                to_created.push(assigned.elapsed());
                break;
            }
        }
        let lp = ListParams::default().labels(&names.pod_selector());
        let pod = loop {
            if let Some(pod) = pods.list(&lp).await.unwrap().items.into_iter().next() {
                break pod.metadata.name.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({ "status": { "phase": "Succeeded", "containerStatuses": [{ "name": "task", "ready": false,
            "restartCount": 0, "image": "i", "imageID": "", "state": { "terminated": { "exitCode": 0, "reason": "Completed",
            "startedAt": now, "finishedAt": now } } }] } });
        let terminated = Instant::now();
        pods.patch_status(&pod, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        while let Some(Ok(event)) = job_events.next().await {
            if let WatchEvent::Modified(job) = event
                && job
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Complete"))
            {
                to_job_complete.push(terminated.elapsed());
                break;
            }
        }
        run.await.unwrap().expect("task succeeds");
        to_completed.push(terminated.elapsed());
        requests.push(executor.api_requests() - before);
    }
    let (create, watch) = (median(create_rtt), median(watch_rtt));
    let (created, completed) = (median(to_created), median(to_completed));
    println!("kubernetes executor vs API server v1.20.2 on loopback ({rounds} rounds, medians)");
    println!("  API server create round trip:       {}", ms(create));
    println!("  API server watch event round trip:  {}", ms(watch));
    println!(
        "  assignment -> Job created:          {} ({:.1}x a create)",
        ms(created),
        created.as_secs_f64() / create.as_secs_f64()
    );
    println!(
        "  pod terminated -> run() returns:    {} ({:.1}x a watch event; includes the job controller marking the Job Complete)",
        ms(completed),
        completed.as_secs_f64() / watch.as_secs_f64()
    );
    println!(
        "    of which the job controller (pod terminated -> Job Complete seen by a watch): {}",
        ms(median(to_job_complete))
    );
    println!(
        "  (API server patch round trip alone: {})",
        ms(median(patch_rtt))
    );
    println!(
        "  API requests per successful task:   {} (min {}, max {})",
        requests[requests.len() / 2],
        requests.iter().min().unwrap(),
        requests.iter().max().unwrap()
    );
    let _ = Api::<Namespace>::all(admin)
        .delete(&ns, &Default::default())
        .await;
}

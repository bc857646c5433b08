//! Restarts on the Kubernetes backend, on the test cluster's real API server and kubelet: two
//! live executors with one worker id never adopt each other's Jobs (both Leases renewed); two
//! rolling restarts of the real worker binary (SIGTERM, then a new process with the same worker
//! id) report every run exactly once with its real outcome; a SIGKILLed worker's Job is
//! adopted once its Lease lapses; a Job that failed while no worker ran is reported by the next
//! one; a task that ends while its worker leaves, or after its Job was taken over, is handed
//! off unreported and unmarked. Waits are on events (frames, Lease renewals, pod phases, Job labels), each bounded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use nix::sys::signal::Signal;
use oz_agent_worker::adapters::kubernetes::KubernetesExecutor;
use oz_agent_worker::adapters::kubernetes::names::{TaskNames, lease_name};
use oz_agent_worker::domain::Exit;
use oz_agent_worker::ports::executor::Executor;
use oz_local_control_plane::LocalControlPlane;
use oz_protocol::WorkerMessage;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::restart::{Worker, wait_nth_open};
use crate::support::daemon::{self, next};
use crate::support::kubernetes as k8s;
use crate::support::require;

const WAIT: Duration = Duration::from_secs(120);
const SECRET: &str = "s3cr3t-restart-token";

/// The renew time of `name`'s Lease, when it exists.
async fn renew_time(leases: &Api<Lease>, name: &str) -> Option<String> {
    let lease = leases.get_opt(name).await.ok()??;
    Some(lease.spec?.renew_time?.0.to_string())
}

/// Waits until `name`'s Lease has been renewed `times` times after now.
async fn renewed(leases: &Api<Lease>, name: &str, times: usize) {
    let mut last = renew_time(leases, name).await.expect("the Lease exists");
    for _ in 0..times {
        let previous = last.clone();
        last = k8s::eventually("the Lease to be renewed", WAIT, || async {
            renew_time(leases, name)
                .await
                .filter(|now| *now != previous)
        })
        .await;
    }
}

#[tokio::test]
async fn kubernetes_two_live_executors_with_one_worker_id_never_adopt_each_others_jobs() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let admin = k8s::admin().await;
    let mut config = k8s::worker_config(&k8s::namespace(&admin).await);
    config.worker_id = format!("oz-two-{:08x}", fastrand::u32(..));
    config.lease_duration = Duration::from_secs(2);
    let first = KubernetesExecutor::without_preflight(&config)
        .await
        .unwrap();
    first.hold_lease().await.unwrap();
    let second = KubernetesExecutor::without_preflight(&config)
        .await
        .unwrap();
    second.hold_lease().await.unwrap();
    assert_ne!(first.instance_id(), second.instance_id());

    // Each runs a task (pods bound to the pretend node: they stay pending, i.e. running).
    let mut runs = Vec::new();
    let mut jobs_of = BTreeMap::new();
    for executor in [&first, &second] {
        let spec = k8s::task_spec(SECRET);
        let names = k8s::names(&config, &spec);
        jobs_of.insert(names.job_name.clone(), executor.instance_id().to_owned());
        let (running, cancel) = (executor.clone(), CancellationToken::new());
        let token = cancel.clone();
        let run = tokio::spawn(async move { running.run(&spec, token).await });
        k8s::task_pod(&admin, &config.namespace, &names).await;
        runs.push((run, cancel));
    }

    // Several Lease periods pass with both Leases renewed: neither adopts the other's Job.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &config.namespace);
    for _ in 0..3 {
        renewed(&leases, &lease_name(first.instance_id()), 1).await;
        renewed(&leases, &lease_name(second.instance_id()), 1).await;
        assert_eq!(first.adopt_orphans().await, Vec::new());
        assert_eq!(second.adopt_orphans().await, Vec::new());
    }
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &config.namespace);
    for (job_name, owner) in &jobs_of {
        let job = jobs.get(job_name).await.unwrap();
        assert_eq!(
            job.metadata.labels.unwrap()["oz-instance-id"],
            *owner,
            "{job_name} still belongs to the instance that created it"
        );
    }

    // Once the first one has shut down (its Lease deleted), the second adopts its Job at once.
    for (run, cancel) in runs.drain(..1) {
        run.abort();
        drop(cancel);
    }
    first.shutdown().await;
    assert!(
        leases
            .get_opt(&lease_name(first.instance_id()))
            .await
            .unwrap()
            .is_none(),
        "a clean shutdown deletes the Lease"
    );
    let adopted = second.adopt_orphans().await;
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    let job = jobs.get(&adopted[0].handle).await.unwrap();
    assert_eq!(
        job.metadata.labels.unwrap()["oz-instance-id"],
        second.instance_id()
    );
    // Following it and cancelling it deletes the Job, as a cancel of `run` does.
    let cancel = CancellationToken::new();
    cancel.cancel();
    assert_eq!(
        second.follow(&adopted[0], cancel).await,
        Ok(Exit::Cancelled)
    );
    for (run, cancel) in runs {
        cancel.cancel();
        assert_eq!(run.await.unwrap(), Ok(Exit::Cancelled));
    }
    second.shutdown().await;
}

/// A worker config file on the real node, with a short Lease.
fn node_config(dir: &tempfile::TempDir, namespace: &str, worker_id: &str) -> PathBuf {
    let image = k8s::node_image();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "worker_id: {worker_id}\nbackend:\n  kubernetes:\n    namespace: {namespace}\n    \
             kubeconfig: {}\n    default_image: {image}\n    preflight_image: {image}\n    \
             image_pull_policy: Never\n    lease_duration: 2s\n",
            k8s::admin_kubeconfig().unwrap().display()
        ),
    )
    .unwrap();
    path
}

/// Assigns a task on the node whose stand-in `oz` sleeps `sleep` seconds then exits `exit`.
fn assign(cp: &LocalControlPlane, sleep: u32, exit: u32) -> (String, TaskNames) {
    let task_id = format!("019f5de4-{:04x}-762e-92ed-199c971abcba", fastrand::u16(..));
    let mut data = daemon::assignment_with_secret(&task_id, SECRET);
    data["docker_image"] = json!(k8s::node_image());
    data["sidecar_image"] = json!(k8s::node_sidecar());
    data["env_vars"]["OZ_STANDIN_SLEEP"] = json!(sleep.to_string());
    data["env_vars"]["OZ_STANDIN_EXIT"] = json!(exit.to_string());
    cp.assign(&data).unwrap();
    let names = TaskNames::new(
        "",
        &task_id,
        data["execution_id"].as_str().unwrap(),
        &BTreeMap::new(),
    );
    (task_id, names)
}

/// Waits until the pod of every task runs (its containers started).
async fn all_running(admin: &kube::Client, namespace: &str, tasks: &[(String, TaskNames)]) {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    for (_, names) in tasks {
        let lp = ListParams::default().labels(&names.pod_selector());
        k8s::eventually("the task's pod to run", WAIT, || async {
            let listed = pods.list(&lp).await.ok()?;
            listed
                .items
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .then_some(())
        })
        .await;
    }
}

/// Every frame per task id, read until every task in `tasks` has a terminal report.
async fn frames_until_all_terminal(
    cp: &LocalControlPlane,
    tasks: &[String],
    frames: &mut BTreeMap<String, Vec<WorkerMessage>>,
) {
    let done = |frames: &BTreeMap<String, Vec<WorkerMessage>>| {
        tasks.iter().all(|t| {
            frames
                .get(t)
                .is_some_and(|f| f.iter().any(WorkerMessage::is_terminal))
        })
    };
    while !done(frames) {
        let received = tokio::time::timeout(WAIT, cp.next_message(WAIT))
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no terminal report for every run: {frames:?}"));
        if let Some(message) = received.message {
            frames
                .entry(message.task_id().to_owned())
                .or_default()
                .push(message);
        }
    }
}

/// Reads whatever frames are left (none expected to be terminal).
async fn drain(cp: &LocalControlPlane, frames: &mut BTreeMap<String, Vec<WorkerMessage>>) {
    while let Some(received) = cp.next_message(Duration::from_millis(500)).await {
        if let Some(message) = received.message {
            frames
                .entry(message.task_id().to_owned())
                .or_default()
                .push(message);
        }
    }
}

fn terminals(frames: &[WorkerMessage]) -> Vec<&WorkerMessage> {
    frames.iter().filter(|m| m.is_terminal()).collect()
}

#[tokio::test]
async fn kubernetes_rolling_restart_of_the_worker_reports_every_run_exactly_once() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let admin = k8s::admin().await;
    let namespace = k8s::namespace(&admin).await;
    let worker_id = format!("oz-rolling-{:08x}", fastrand::u32(..));
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(&dir, &namespace, &worker_id);
    let cp = daemon::control_plane().await;
    let mut old = Worker::spawn(&cp, &config, &[]);
    wait_nth_open(&cp, 1).await;

    // Four runs, one of which exits 3; each sleeps long enough to outlive the restarts.
    let mut tasks = Vec::new();
    for exit in [0, 0, 3, 0] {
        tasks.push(assign(&cp, 25, exit));
    }
    let mut frames: BTreeMap<String, Vec<WorkerMessage>> = BTreeMap::new();
    while frames.len() < tasks.len() {
        let message = next(&cp).await.message.expect("a worker message");
        assert!(
            matches!(message, WorkerMessage::TaskClaimed { .. }),
            "{message:?}"
        );
        frames
            .entry(message.task_id().to_owned())
            .or_default()
            .push(message);
    }
    all_running(&admin, &namespace, &tasks).await;

    // Two rolling restarts while the runs go on: SIGTERM (the leaving process deletes its
    // Lease), then a new process; the second restart comes once the first new process has
    // adopted every Job, so the third one adopts Jobs that were adopted already.
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &namespace);
    let owners = || async {
        let mut owners = Vec::new();
        for (_, names) in &tasks {
            let job = jobs.get(&names.job_name).await.ok()?;
            owners.push(job.metadata.labels?.get("oz-instance-id")?.clone());
        }
        Some(owners)
    };
    let first_owners = owners().await.expect("every Job is labelled");
    old.signal_and_wait(Signal::SIGTERM).await;
    let mut second = Worker::spawn(&cp, &config, &[]);
    k8s::eventually("the second worker to adopt every Job", WAIT, || async {
        let now = owners().await?;
        now.iter()
            .zip(&first_owners)
            .all(|(now, first)| now != first)
            .then_some(())
    })
    .await;
    second.signal_and_wait(Signal::SIGTERM).await;
    let mut third = Worker::spawn(&cp, &config, &[]);
    let ids: Vec<String> = tasks.iter().map(|(t, _)| t.clone()).collect();
    frames_until_all_terminal(&cp, &ids, &mut frames).await;
    third.signal_and_wait(Signal::SIGTERM).await;
    drain(&cp, &mut frames).await;

    let (mut once, mut twice, mut never) = (0, 0, 0);
    for (task_id, _) in &tasks {
        match terminals(&frames[task_id]).len() {
            0 => never += 1,
            1 => once += 1,
            _ => twice += 1,
        }
    }
    eprintln!(
        "rolling restarts (2): runs {}, reported exactly once {once}, twice or more {twice}, never {never}",
        tasks.len()
    );
    assert_eq!((once, twice, never), (tasks.len(), 0, 0), "{frames:#?}");
    for (i, (task_id, names)) in tasks.iter().enumerate() {
        let task_frames = &frames[task_id];
        let claims = task_frames
            .iter()
            .filter(|m| matches!(m, WorkerMessage::TaskClaimed { .. }))
            .count();
        assert_eq!(claims, 1, "one claim, by the old worker: {task_frames:?}");
        match terminals(task_frames)[0] {
            WorkerMessage::TaskCompleted { task_state, .. } if i != 2 => {
                assert_eq!(task_state, &None, "{task_frames:?}");
            }
            WorkerMessage::TaskFailed {
                failure_reason,
                exit_code,
                message,
                ..
            } if i == 2 => {
                assert_eq!(
                    (failure_reason.as_deref(), *exit_code),
                    (Some("container_exit"), Some(3)),
                    "{message}"
                );
                assert!(!message.contains(SECRET), "{message}");
            }
            other => panic!("run {i}: unexpected terminal report {other:?}"),
        }
        // The successful Jobs are gone; the failed one stays, marked reported.
        let job = jobs.get_opt(&names.job_name).await.unwrap();
        if i == 2 {
            let labels = job.expect("a failed Job stays").metadata.labels.unwrap();
            assert_eq!(labels.get("oz-reported").map(String::as_str), Some("true"));
        } else {
            assert!(
                job.is_none_or(|j| j.metadata.deletion_timestamp.is_some()),
                "the successful Job is deleted"
            );
        }
    }
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &namespace);
    assert_eq!(
        leases
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        0,
        "both workers deleted their Lease at shutdown"
    );
}

/// One worker process on the real node, running one claimed task (stand-in sleeping `sleep`
/// seconds, then exiting `exit`), with everything a restart test needs around it.
struct OneRunning {
    admin: kube::Client,
    namespace: String,
    /// Holds the config file.
    _dir: tempfile::TempDir,
    config: PathBuf,
    cp: LocalControlPlane,
    old: Worker,
    task: (String, TaskNames),
    /// The `task_claimed` the control plane received.
    claimed: WorkerMessage,
}

async fn one_running(prefix: &str, sleep: u32, exit: u32) -> OneRunning {
    let admin = k8s::admin().await;
    let namespace = k8s::namespace(&admin).await;
    let worker_id = format!("{prefix}-{:08x}", fastrand::u32(..));
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(&dir, &namespace, &worker_id);
    let cp = daemon::control_plane().await;
    let old = Worker::spawn(&cp, &config, &[]);
    wait_nth_open(&cp, 1).await;
    let task = assign(&cp, sleep, exit);
    let claimed = next(&cp).await.message.expect("a worker message");
    assert!(
        matches!(claimed, WorkerMessage::TaskClaimed { .. }),
        "{claimed:?}"
    );
    all_running(&admin, &namespace, std::slice::from_ref(&task)).await;
    OneRunning {
        admin,
        namespace,
        _dir: dir,
        config,
        cp,
        old,
        task,
        claimed,
    }
}

#[tokio::test]
async fn kubernetes_a_sigkilled_workers_job_is_adopted_once_its_lease_lapses() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let OneRunning {
        admin,
        namespace,
        _dir,
        config,
        cp,
        mut old,
        task,
        claimed,
    } = one_running("oz-killed", 15, 0).await;
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &namespace);
    let owner = |job: Job| job.metadata.labels.unwrap()["oz-instance-id"].clone();
    let old_instance = owner(jobs.get(&task.1.job_name).await.unwrap());

    // SIGKILL: the Lease stays behind, unrenewed; the new worker adopts once it lapses.
    old.signal_and_wait(Signal::SIGKILL).await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &namespace);
    assert!(
        leases
            .get_opt(&lease_name(&old_instance))
            .await
            .unwrap()
            .is_some(),
        "a killed worker cannot delete its Lease"
    );
    let mut new = Worker::spawn(&cp, &config, &[]);
    let mut frames = BTreeMap::from([(task.0.clone(), vec![claimed])]);
    frames_until_all_terminal(&cp, std::slice::from_ref(&task.0), &mut frames).await;
    new.signal_and_wait(Signal::SIGTERM).await;
    drain(&cp, &mut frames).await;
    let task_frames = &frames[&task.0];
    let ends = terminals(task_frames);
    assert_eq!(ends.len(), 1, "reported exactly once: {task_frames:?}");
    assert!(
        matches!(
            ends[0],
            WorkerMessage::TaskCompleted {
                task_state: None,
                ..
            }
        ),
        "{task_frames:?}"
    );
    assert_eq!(
        task_frames
            .iter()
            .filter(|m| matches!(m, WorkerMessage::TaskClaimed { .. }))
            .count(),
        1,
        "no new claim: {task_frames:?}"
    );
    assert!(
        leases
            .get_opt(&lease_name(&old_instance))
            .await
            .unwrap()
            .is_none(),
        "the dead instance's Lease is deleted once none of its Jobs is left"
    );
}

#[tokio::test]
async fn kubernetes_a_job_that_failed_while_no_worker_ran_is_reported_by_the_next_one() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let OneRunning {
        admin,
        namespace,
        _dir,
        config,
        cp,
        mut old,
        task,
        claimed,
    } = one_running("oz-offline", 3, 5).await;
    old.signal_and_wait(Signal::SIGKILL).await;

    // The run fails while no worker runs: its Job is finished, unmarked, its report owed.
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &namespace);
    k8s::eventually("the Job to fail", WAIT, || async {
        let job = jobs.get(&task.1.job_name).await.ok()?;
        (job.status?.failed.unwrap_or(0) > 0).then_some(())
    })
    .await;
    let mut new = Worker::spawn(&cp, &config, &[]);
    let mut frames = BTreeMap::from([(task.0.clone(), vec![claimed])]);
    frames_until_all_terminal(&cp, std::slice::from_ref(&task.0), &mut frames).await;
    new.signal_and_wait(Signal::SIGTERM).await;
    drain(&cp, &mut frames).await;
    let task_frames = &frames[&task.0];
    let ends = terminals(task_frames);
    assert_eq!(ends.len(), 1, "reported exactly once: {task_frames:?}");
    match ends[0] {
        WorkerMessage::TaskFailed {
            failure_reason,
            exit_code,
            message,
            ..
        } => assert_eq!(
            (failure_reason.as_deref(), *exit_code),
            (Some("container_exit"), Some(5)),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let job = jobs.get(&task.1.job_name).await.unwrap();
    assert_eq!(
        job.metadata
            .labels
            .unwrap()
            .get("oz-reported")
            .map(String::as_str),
        Some("true"),
        "the reported Job is marked, so no later worker reports it again"
    );
}

#[tokio::test]
async fn kubernetes_two_live_worker_processes_with_one_id_each_report_their_own_runs() {
    if !require("kubernetes node", k8s::node_available()) {
        return;
    }
    let admin = k8s::admin().await;
    let namespace = k8s::namespace(&admin).await;
    let worker_id = format!("oz-pair-{:08x}", fastrand::u32(..));
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(&dir, &namespace, &worker_id);
    let cp = daemon::control_plane().await;
    let mut first = Worker::spawn(&cp, &config, &[]);
    wait_nth_open(&cp, 1).await;
    // Assignments go to the newest connection: one run for each worker, each outliving several
    // 2 s Lease periods (and so several orphan scans by the other worker).
    let first_run = assign(&cp, 12, 0);
    let mut second = Worker::spawn(&cp, &config, &[]);
    wait_nth_open(&cp, 2).await;
    let second_run = assign(&cp, 12, 0);
    let runs = [first_run.0.clone(), second_run.0.clone()];
    // (task id, connection) of every frame, until both runs have a terminal report.
    let mut seen: Vec<(String, u64, WorkerMessage)> = Vec::new();
    while !runs.iter().all(|run| {
        seen.iter()
            .any(|(task, _, m)| task == run && m.is_terminal())
    }) {
        let received = next(&cp).await;
        if let Some(message) = received.message {
            seen.push((message.task_id().to_owned(), received.connection, message));
        }
    }
    second.signal_and_wait(Signal::SIGTERM).await;
    first.signal_and_wait(Signal::SIGTERM).await;
    while let Some(received) = cp.next_message(Duration::from_millis(500)).await {
        if let Some(message) = received.message {
            seen.push((message.task_id().to_owned(), received.connection, message));
        }
    }
    for run in &runs {
        let frames: Vec<_> = seen.iter().filter(|(task, _, _)| task == run).collect();
        let claim = frames
            .iter()
            .find(|(_, _, m)| matches!(m, WorkerMessage::TaskClaimed { .. }))
            .expect("claimed");
        let ends: Vec<_> = frames.iter().filter(|(_, _, m)| m.is_terminal()).collect();
        assert_eq!(ends.len(), 1, "reported exactly once: {frames:?}");
        assert!(
            matches!(
                ends[0].2,
                WorkerMessage::TaskCompleted {
                    task_state: None,
                    ..
                }
            ),
            "{frames:?}"
        );
        assert_eq!(
            ends[0].1, claim.1,
            "reported by the worker that claimed it, not adopted by the other one: {frames:?}"
        );
    }
}

/// A task on the pretend node, run by a fresh executor holding its Lease.
struct PretendRun {
    admin: kube::Client,
    executor: KubernetesExecutor,
    namespace: String,
    names: TaskNames,
    pod: String,
    run: tokio::task::JoinHandle<Result<Exit, oz_agent_worker::domain::TaskFailure>>,
}

async fn pretend_run() -> PretendRun {
    let admin = k8s::admin().await;
    let mut config = k8s::worker_config(&k8s::namespace(&admin).await);
    config.worker_id = format!("oz-hand-{:08x}", fastrand::u32(..));
    let executor = KubernetesExecutor::without_preflight(&config)
        .await
        .unwrap();
    executor.hold_lease().await.unwrap();
    let spec = k8s::task_spec(SECRET);
    let names = k8s::names(&config, &spec);
    let running = executor.clone();
    let run = tokio::spawn(async move { running.run(&spec, CancellationToken::new()).await });
    let pod = k8s::task_pod(&admin, &config.namespace, &names).await;
    PretendRun {
        admin,
        executor,
        namespace: config.namespace,
        names,
        pod,
        run,
    }
}

#[tokio::test]
async fn kubernetes_pretend_kubelet_a_task_ending_while_the_worker_leaves_is_left_unreported_for_the_next()
 {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let PretendRun {
        admin,
        executor,
        namespace,
        names,
        pod,
        run,
    } = pretend_run().await;
    executor.shutdown().await;
    k8s::set_pod_status(&admin, &namespace, &pod, k8s::PodStatus::Exited(0)).await;
    assert_eq!(
        tokio::time::timeout(WAIT, run).await.unwrap().unwrap(),
        Ok(Exit::Spawned),
        "handed off: no report from the leaving worker"
    );
    let job = Api::<Job>::namespaced(admin.clone(), &namespace)
        .get(&names.job_name)
        .await
        .expect("the Job stays for the next worker");
    let labels = job.metadata.labels.unwrap();
    assert_eq!(labels.get("oz-reported"), None, "not marked");
    assert_eq!(labels["oz-instance-id"], executor.instance_id());
}

#[tokio::test]
async fn kubernetes_pretend_kubelet_a_task_whose_job_was_taken_over_is_left_to_the_new_owner() {
    if !require("kubernetes api server", k8s::available()) {
        return;
    }
    let PretendRun {
        admin,
        executor,
        namespace,
        names,
        pod,
        run,
    } = pretend_run().await;
    // Another instance took the Job over (as after this one's Lease lapsed).
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &namespace);
    jobs.patch(
        &names.job_name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            &json!({ "metadata": { "labels": { "oz-instance-id": "0000000000000001" } } }),
        ),
    )
    .await
    .unwrap();
    k8s::set_pod_status(&admin, &namespace, &pod, k8s::PodStatus::Exited(0)).await;
    assert_eq!(
        tokio::time::timeout(WAIT, run).await.unwrap().unwrap(),
        Ok(Exit::Spawned),
        "handed off: the new owner reports it"
    );
    let job = jobs
        .get(&names.job_name)
        .await
        .expect("not deleted by the old owner");
    assert_eq!(job.metadata.labels.unwrap().get("oz-reported"), None);
    executor.shutdown().await;
}

//! Instances on the real Docker Engine: two live workers with one worker id never touch each
//! other's containers; a dead instance's container whose run is owed a report is adopted and
//! followed to its real end by the next one (through the executor and through the real worker
//! binary after a SIGKILL), and one owed nothing is cleaned up.

use std::time::Duration;

use bollard::models::ContainerSummaryStateEnum;
use oz_agent_worker::adapters::docker::DockerExecutor;
use oz_agent_worker::adapters::docker::labels::LABEL_INSTANCE_ID;
use oz_agent_worker::adapters::state::Instances;
use oz_agent_worker::domain::{Exit, FailureReason};
use oz_agent_worker::ports::executor::Executor;
use oz_local_control_plane::{LocalControlPlane, sample_assignment};
use oz_protocol::WorkerMessage;
use tokio_util::sync::CancellationToken;

use super::restart::{Worker, wait_nth_open};
use crate::support::daemon::{control_plane, next};
use crate::support::docker as d;

/// A dead instance (its executor dropped mid-run, its lock released, as when its process is
/// killed) that had journaled `spec`'s claim as sent: returns the running container's id.
async fn die_mid_run(
    state: &std::path::Path,
    worker: &str,
    spec: oz_agent_worker::ports::executor::TaskSpec,
) -> String {
    let dead = Instances::open(state, worker).unwrap();
    let dead_id = dead.instance_id().to_owned();
    dead.record_claim(spec.task_id.as_str()).unwrap();
    dead.record_claim_sent(spec.task_id.as_str()).unwrap();
    let mut config = d::config(worker);
    config.instances = Some(dead);
    let executor = d::executor(config).await;
    let run = tokio::spawn(async move {
        let _ = executor.run(&spec, CancellationToken::new()).await;
    });
    let probe = d::executor(d::config(&d::worker_id("probe"))).await;
    let id = wait_running(&probe, worker, &dead_id).await;
    run.abort();
    let _ = run.await;
    id
}

#[tokio::test]
async fn a_dead_instances_running_task_is_adopted_and_followed_to_its_real_exit_code() {
    let Some(images) = d::setup().await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let worker = d::worker_id("adopt");
    let spec = d::spec(
        "adopt",
        &images.image,
        &images.sidecar,
        &[("OZ_STANDIN_SLEEP", "3"), ("OZ_STANDIN_EXIT", "7")],
    );
    let task_id = spec.task_id.clone();
    let container = die_mid_run(state.path(), &worker, spec).await;

    let next = Instances::open(state.path(), &worker).unwrap();
    let mut config = d::config(&worker);
    config.instances = Some(next.clone());
    let executor = d::executor(config).await;
    let orphans = executor.adopt_orphans().await;
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(orphans[0].task_id, task_id);
    assert_eq!(orphans[0].handle, container);
    // The app's recovery then moves the task's journal entry to the adopter, so the next
    // scan sees it owned by a live instance.
    oz_agent_worker::app::restart::recover(
        &next,
        None,
        true,
        &std::iter::once(task_id.as_str().to_owned()).collect(),
    );
    assert!(executor.adopt_orphans().await.is_empty(), "adopted once");
    let failure = executor
        .follow(&orphans[0], CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::ContainerExit, "{failure:?}");
    assert_eq!(failure.exit_code, Some(7));
    assert!(
        d::containers(executor.client(), &worker).await.is_empty(),
        "the followed container is removed at its end"
    );
}

#[tokio::test]
async fn a_cancel_for_an_adopted_task_stops_its_container() {
    let Some(images) = d::setup().await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let worker = d::worker_id("adopt-cancel");
    let spec = d::spec(
        "adopt-cancel",
        &images.image,
        &images.sidecar,
        &[("OZ_STANDIN_SLEEP", "300")],
    );
    die_mid_run(state.path(), &worker, spec).await;
    let next = Instances::open(state.path(), &worker).unwrap();
    let mut config = d::config(&worker);
    config.instances = Some(next);
    let executor = d::executor(config).await;
    let orphans = executor.adopt_orphans().await;
    assert_eq!(orphans.len(), 1);
    let cancel = CancellationToken::new();
    cancel.cancel();
    assert_eq!(
        executor.follow(&orphans[0], cancel).await,
        Ok(Exit::Cancelled)
    );
    assert!(d::containers(executor.client(), &worker).await.is_empty());
}

#[tokio::test]
async fn a_third_instance_leaves_alone_a_container_a_live_instance_adopted() {
    let Some(images) = d::setup().await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let worker = d::worker_id("adopt-live");
    let spec = d::spec(
        "adopt-live",
        &images.image,
        &images.sidecar,
        &[("OZ_STANDIN_SLEEP", "300")],
    );
    let container = die_mid_run(state.path(), &worker, spec).await;
    // The second instance adopts it (its journal now lists the task) and stays alive.
    let second = Instances::open(state.path(), &worker).unwrap();
    let mut config = d::config(&worker);
    config.instances = Some(second.clone());
    let adopter = d::executor(config).await;
    let orphans = adopter.adopt_orphans().await;
    assert_eq!(orphans.len(), 1);
    oz_agent_worker::app::restart::recover(
        &second,
        None,
        true,
        &std::iter::once(orphans[0].task_id.as_str().to_owned()).collect(),
    );
    assert_eq!(second.journal().len(), 1, "the adopter journals the task");
    // A third instance starts: the container still carries the dead first instance's label.
    let third = Instances::open(state.path(), &worker).unwrap();
    let mut config = d::config(&worker);
    config.instances = Some(third);
    let other = d::executor(config).await;
    assert!(other.adopt_orphans().await.is_empty());
    assert!(
        is_running(&other, &container).await,
        "the third instance left the adopted container running"
    );
    let cancel = CancellationToken::new();
    cancel.cancel();
    assert_eq!(
        adopter.follow(&orphans[0], cancel).await,
        Ok(Exit::Cancelled)
    );
}

/// A worker config on the Docker backend with a state directory, in `dir`.
fn docker_worker_config(
    dir: &std::path::Path,
    worker: &str,
    pull_policy: &str,
) -> std::path::PathBuf {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "worker_id: {worker}\nstate_dir: {}\nbackend:\n  docker:\n    pull_policy: {pull_policy}\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    config
}

/// A sample assignment run in `image` with the test sidecar and the stand-in's `env`.
fn docker_assignment(
    task: &str,
    image: &str,
    images: &d::Images,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let mut assignment = sample_assignment(task);
    assignment["docker_image"] = image.into();
    assignment["sidecar_image"] = images.sidecar.clone().into();
    for (key, value) in env {
        assignment["env_vars"][*key] = (*value).into();
    }
    assignment
}

/// Waits until the worker claimed the run and its container runs on the engine.
async fn claimed_and_running(cp: &LocalControlPlane, worker: &str) {
    loop {
        if let Some(WorkerMessage::TaskClaimed { .. }) = next(cp).await.message {
            break;
        }
    }
    let probe = d::executor(d::config(&d::worker_id("probe"))).await;
    let running = d::eventually(Duration::from_secs(30), || async {
        d::containers(probe.client(), worker)
            .await
            .iter()
            .any(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
    })
    .await;
    assert!(running, "the task container never ran");
}

/// The frames the control plane receives up to the first terminal report.
async fn until_terminal(cp: &LocalControlPlane) -> Vec<WorkerMessage> {
    let mut seen = Vec::new();
    loop {
        let Some(message) = next(cp).await.message else {
            continue;
        };
        let terminal = matches!(
            message,
            WorkerMessage::TaskCompleted { .. } | WorkerMessage::TaskFailed { .. }
        );
        seen.push(message);
        if terminal {
            return seen;
        }
    }
}

/// Stops `worker`, then checks that no other report arrives and no container of `worker_id`
/// is left on the engine.
async fn stop_and_check_nothing_more(cp: &LocalControlPlane, mut worker: Worker, worker_id: &str) {
    worker
        .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
        .await;
    while let Some(received) = cp.next_message(Duration::from_millis(300)).await {
        assert!(received.message.is_none(), "reported again: {received:?}");
    }
    let probe = d::executor(d::config(&d::worker_id("probe"))).await;
    assert!(d::containers(probe.client(), worker_id).await.is_empty());
}

#[tokio::test]
async fn a_sigkilled_docker_worker_s_run_is_followed_by_the_next_process_and_reported_once() {
    let Some(images) = d::setup().await else {
        return;
    };
    let cp = control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let worker = d::worker_id("kill-docker");
    let config = docker_worker_config(dir.path(), &worker, "if-not-present");
    let env = [("OZ_STANDIN_SLEEP", "4"), ("OZ_STANDIN_EXIT", "9")];
    let assignment = docker_assignment("docker-killed", &images.image, &images, &env);

    let mut first = Worker::spawn(&cp, &config, &[]);
    wait_nth_open(&cp, 1).await;
    cp.assign(&assignment).unwrap();
    claimed_and_running(&cp, &worker).await;
    first
        .signal_and_wait(nix::sys::signal::Signal::SIGKILL)
        .await;

    let second = Worker::spawn(&cp, &config, &[]);
    let seen = until_terminal(&cp).await;
    let Some(WorkerMessage::TaskFailed {
        failure_reason,
        exit_code,
        message,
        ..
    }) = seen.last().cloned()
    else {
        panic!("{seen:?}");
    };
    assert_eq!(
        (failure_reason.as_deref(), exit_code),
        (Some("container_exit"), Some(9)),
        "the real outcome, not a restart failure: {message}"
    );
    assert_eq!(
        seen.len(),
        1,
        "no claim again, one terminal report: {seen:?}"
    );
    stop_and_check_nothing_more(&cp, second, &worker).await;
}
/// The id of the running task container of `worker` created by `instance`.
async fn wait_running(executor: &DockerExecutor, worker: &str, instance: &str) -> String {
    let found = std::sync::Mutex::new(String::new());
    let running = d::eventually(Duration::from_secs(30), || async {
        let list = d::containers(executor.client(), worker).await;
        match list.into_iter().find(|c| {
            c.state == Some(ContainerSummaryStateEnum::RUNNING)
                && c.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_INSTANCE_ID))
                    .map(String::as_str)
                    == Some(instance)
        }) {
            Some(c) => {
                *found.lock().unwrap() = c.id.unwrap_or_default();
                true
            }
            None => false,
        }
    })
    .await;
    assert!(running, "the task container never ran");
    found.into_inner().unwrap()
}

async fn is_running(executor: &DockerExecutor, id: &str) -> bool {
    executor
        .client()
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.running)
        .unwrap_or(false)
}

#[tokio::test]
async fn a_second_live_worker_with_the_same_id_leaves_the_first_ones_task_running() {
    let Some(images) = d::setup().await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let worker = d::worker_id("two-live");
    let first = Instances::open(state.path(), &worker).unwrap();
    let mut config = d::config(&worker);
    config.instances = Some(first.clone());
    let executor = d::executor(config).await;
    let spec = d::spec(
        "two-live",
        &images.image,
        &images.sidecar,
        &[("OZ_STANDIN_SLEEP", "300")],
    );
    let token = CancellationToken::new();
    let (outcome, ()) = tokio::join!(executor.run(&spec, token.clone()), async {
        let id = wait_running(&executor, &worker, first.instance_id()).await;
        // A second worker process with the same id starts on the same engine.
        let second = Instances::open(state.path(), &worker).unwrap();
        let mut config = d::config(&worker);
        config.instances = Some(second);
        let _second = d::executor(config).await;
        assert!(
            is_running(&executor, &id).await,
            "the second worker's start-up stopped the first one's task"
        );
        token.cancel();
    });
    assert_eq!(
        outcome,
        Ok(Exit::Cancelled),
        "the first worker's task ended only by its own cancel"
    );
    d::clean(executor.client(), &worker).await;
}

#[tokio::test]
async fn a_dead_instances_unjournaled_task_container_is_removed_by_the_next_instance() {
    let Some(images) = d::setup().await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let worker = d::worker_id("dead-inst");
    let dead = Instances::open(state.path(), &worker).unwrap();
    let dead_id = dead.instance_id().to_owned();
    let mut config = d::config(&worker);
    config.instances = Some(dead);
    let executor = d::executor(config).await;
    let spec = d::spec(
        "dead-inst",
        &images.image,
        &images.sidecar,
        &[("OZ_STANDIN_SLEEP", "300")],
    );
    let docker = executor.client().clone();
    let run = tokio::spawn(async move {
        let _ = executor.run(&spec, CancellationToken::new()).await;
    });
    let probe = d::executor(d::config(&d::worker_id("probe"))).await;
    let id = wait_running(&probe, &worker, &dead_id).await;
    // The instance dies: its run is dropped mid-wait and its lock released, as when its
    // process is killed (the container keeps running).
    run.abort();
    let _ = run.await;
    assert!(is_running(&probe, &id).await);

    let next = Instances::open(state.path(), &worker).unwrap();
    let mut config = d::config(&worker);
    config.instances = Some(next.clone());
    let _next = d::executor(config).await;
    assert!(
        d::containers(&docker, &worker).await.is_empty(),
        "the dead instance's container is removed"
    );
    assert_eq!(
        next.claim_dead(),
        vec![dead_id],
        "claimed by the next instance"
    );
}

#[tokio::test]
async fn a_worker_killed_during_an_image_pull_is_reported_once_as_restarted_by_the_next_one() {
    let Some(images) = d::setup().await else {
        return;
    };
    // A "registry" that accepts connections and never answers: the engine's pull hangs in it.
    let registry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let image = format!(
        "127.0.0.1:{}/oz-test/never-served:1",
        registry.local_addr().unwrap().port()
    );
    let cp = control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let worker = d::worker_id("kill-pull");
    let config = docker_worker_config(dir.path(), &worker, "always");
    let assignment = docker_assignment("pull-killed", &image, &images, &[]);

    let mut first = Worker::spawn(&cp, &config, &[]);
    wait_nth_open(&cp, 1).await;
    cp.assign(&assignment).unwrap();
    // The pull has begun once the engine connects to the registry.
    let held = tokio::time::timeout(Duration::from_secs(30), registry.accept())
        .await
        .expect("the engine never contacted the registry")
        .unwrap();
    first
        .signal_and_wait(nix::sys::signal::Signal::SIGKILL)
        .await;
    drop(held);
    drop(registry);

    let second = Worker::spawn(&cp, &config, &[]);
    let seen = until_terminal(&cp).await;
    let Some(WorkerMessage::TaskFailed {
        failure_reason,
        message,
        ..
    }) = seen.last().cloned()
    else {
        panic!("{seen:?}");
    };
    assert_eq!(
        failure_reason.as_deref(),
        Some(oz_agent_worker::app::restart::RESTART_REASON.as_str())
    );
    assert_eq!(message, oz_agent_worker::app::restart::RESTARTED_MESSAGE);
    let claims = seen
        .iter()
        .filter(|m| matches!(m, WorkerMessage::TaskClaimed { .. }))
        .count();
    assert_eq!(claims, 1, "claimed by the first process only: {seen:?}");
    stop_and_check_nothing_more(&cp, second, &worker).await;
}

#[tokio::test]
async fn a_live_docker_worker_adopts_the_running_task_of_a_peer_with_its_id_that_dies() {
    let Some(images) = d::setup().await else {
        return;
    };
    let cp = control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let worker = d::worker_id("peer-dies");
    let config = docker_worker_config(dir.path(), &worker, "if-not-present");
    let env = [("OZ_STANDIN_SLEEP", "6"), ("OZ_STANDIN_EXIT", "4")];
    let assignment = docker_assignment("peer-run", &images.image, &images, &env);

    let mut first = Worker::spawn(&cp, &config, &[]);
    wait_nth_open(&cp, 1).await;
    cp.assign(&assignment).unwrap();
    claimed_and_running(&cp, &worker).await;
    // A live peer with the same worker id and state directory, scanning every 200 ms.
    let second = Worker::spawn(&cp, &config, &["--orphan-scan-interval", "200ms"]);
    wait_nth_open(&cp, 2).await;
    first
        .signal_and_wait(nix::sys::signal::Signal::SIGKILL)
        .await;
    let seen = until_terminal(&cp).await;
    let Some(WorkerMessage::TaskFailed {
        failure_reason,
        exit_code,
        ..
    }) = seen.last().cloned()
    else {
        panic!("{seen:?}");
    };
    assert_eq!(
        (failure_reason.as_deref(), exit_code),
        (Some("container_exit"), Some(4)),
        "the peer followed the container to its real end: {seen:?}"
    );
    stop_and_check_nothing_more(&cp, second, &worker).await;
}

//! Instances on the real Docker Engine: two live workers with one worker id never touch each
//! other's containers, and a dead instance's containers are cleaned up by the next one.

use std::time::Duration;

use bollard::models::ContainerSummaryStateEnum;
use oz_agent_worker::adapters::docker::DockerExecutor;
use oz_agent_worker::adapters::docker::labels::LABEL_INSTANCE_ID;
use oz_agent_worker::adapters::state::Instances;
use oz_agent_worker::domain::Exit;
use oz_agent_worker::ports::executor::Executor;
use tokio_util::sync::CancellationToken;

use crate::support::docker as d;

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
async fn a_dead_instances_task_container_is_removed_by_the_next_instance() {
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

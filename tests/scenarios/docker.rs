//! The Docker backend against the real Docker Engine, with the busybox test images and the
//! local registry of `scripts/setup/20-docker.sh`: outcomes, graceful cancel, no-cleanup, the
//! container's settings, the sidecar cache, create/start failures, the sweep and preflight.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerSummaryStateEnum, VolumeCreateRequest};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, ListVolumesOptionsBuilder, RemoveVolumeOptions,
};
use futures_util::StreamExt;
use oz_agent_worker::adapters::docker::labels::{
    LABEL_EXECUTION_ID, LABEL_ROLE, LABEL_TASK_ID, LABEL_WORKER_ID, Owner, Role, worker_filter,
};
use oz_agent_worker::adapters::docker::{DockerError, DockerExecutor};
use oz_agent_worker::app::config::{Backend, load};
use oz_agent_worker::domain::task::InstanceShape;
use oz_agent_worker::domain::{Exit, FailureReason};
use oz_agent_worker::ports::executor::Executor;
use tokio_util::sync::CancellationToken;

use crate::support::docker as d;
use crate::support::docker::run;

#[tokio::test]
async fn a_successful_task_completes_and_leaves_no_container() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("success");
    let executor = d::executor(d::config(&worker)).await;
    let spec = d::spec("success", &images.image, &images.sidecar, &[]);
    assert_eq!(run(&executor, &spec).await, Ok(Exit::Succeeded));
    assert!(d::containers(executor.client(), &worker).await.is_empty());
}

#[tokio::test]
async fn a_non_zero_exit_is_container_exit_with_the_code_and_output_tail() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("exit");
    let executor = d::executor(d::config(&worker)).await;
    let spec = d::spec(
        "exit",
        &images.image,
        &images.sidecar,
        &[("OZ_STANDIN_EXIT", "3")],
    );
    let failure = run(&executor, &spec).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::ContainerExit);
    assert_eq!(failure.exit_code, Some(3));
    assert!(
        failure
            .message
            .starts_with("container exited with non-zero status: 3"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("standin: args: agent run"),
        "{}",
        failure.message
    );
    assert!(d::containers(executor.client(), &worker).await.is_empty());
}

#[tokio::test]
async fn secrets_in_the_output_tail_are_redacted() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("redact");
    let executor = d::executor(d::config(&worker)).await;
    let secret = "ghp_topsecret_0123456789";
    let spec = d::spec(
        "redact",
        &images.image,
        &images.sidecar,
        &[
            ("GITHUB_TOKEN", secret),
            ("OZ_STANDIN_PRINT", secret),
            ("OZ_STANDIN_EXIT", "1"),
        ],
    );
    let failure = run(&executor, &spec).await.unwrap_err();
    assert!(!failure.message.contains(secret), "{}", failure.message);
    assert!(
        failure.message.contains("standin: ***"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn memory_exhaustion_is_container_oom() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("oom");
    let executor = d::executor(d::config(&worker)).await;
    let mut spec = d::spec(
        "oom",
        &images.image,
        &images.sidecar,
        &[("OZ_STANDIN_OOM", "1600m")],
    );
    spec.instance_shape = Some(InstanceShape {
        vcpus: None,
        memory_gb: Some(1),
    });
    let failure = run(&executor, &spec).await.unwrap_err();
    assert_eq!(
        failure.reason,
        FailureReason::ContainerOom,
        "{}",
        failure.message
    );
    assert_eq!(failure.exit_code, Some(137));
}

async fn wait_running(executor: &DockerExecutor, worker: &str) -> String {
    let found = std::sync::Mutex::new(String::new());
    let running = d::eventually(Duration::from_secs(30), || async {
        let list = d::containers(executor.client(), worker).await;
        match list
            .into_iter()
            .find(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
        {
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

#[tokio::test]
async fn cancel_mid_run_stops_and_removes_the_container() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("cancel");
    let executor = d::executor(d::config(&worker)).await;
    let spec = d::spec(
        "cancel",
        &images.image,
        &images.sidecar,
        &[("OZ_STANDIN_SLEEP", "300")],
    );
    let mut events = d::task_container_events(executor.client(), &worker);
    let token = CancellationToken::new();
    let (outcome, id) = tokio::join!(executor.run(&spec, token.clone()), async {
        let id = wait_running(&executor, &worker).await;
        token.cancel();
        id
    });
    assert_eq!(outcome, Ok(Exit::Cancelled));
    assert!(d::containers(executor.client(), &worker).await.is_empty());

    // Graceful: SIGTERM first, which the stand-in traps (exit 143); no SIGKILL was needed.
    let seen = events
        .until(Duration::from_secs(30), |e| {
            d::action(e) == "destroy" && d::actor_id(e) == id
        })
        .await;
    let ours: Vec<_> = seen.iter().filter(|e| d::actor_id(e) == id).collect();
    let term = ours
        .iter()
        .position(|e| d::action(e) == "kill" && d::attribute(e, "signal") == Some("15"));
    let die = ours.iter().position(|e| d::action(e) == "die");
    let (Some(term), Some(die)) = (term, die) else {
        panic!("no SIGTERM then die for {id}: {ours:?}");
    };
    assert!(
        term < die,
        "SIGTERM came after the container died: {ours:?}"
    );
    assert_eq!(
        d::attribute(ours[die], "exitCode"),
        Some("143"),
        "the agent ended on its SIGTERM trap: {ours:?}"
    );
    assert!(
        !ours
            .iter()
            .any(|e| d::action(e) == "kill" && d::attribute(e, "signal") == Some("9")),
        "no SIGKILL for an agent that stops on SIGTERM: {ours:?}"
    );
}

#[tokio::test]
async fn no_cleanup_keeps_containers_and_stops_cancelled_ones() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("keep");
    let mut config = d::config(&worker);
    config.cleanup = false;
    let grace = Duration::from_secs(1);
    config.stop_grace = grace;
    let executor = d::executor(config).await;
    let docker = executor.client().clone();

    let done = d::spec("keep-done", &images.image, &images.sidecar, &[]);
    assert_eq!(run(&executor, &done).await, Ok(Exit::Succeeded));
    let kept = d::containers(&docker, &worker).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].state, Some(ContainerSummaryStateEnum::EXITED));

    // Ignores SIGTERM, so the stop needs the kill after the grace period.
    let stubborn = d::spec(
        "keep-cancel",
        &images.image,
        &images.sidecar,
        &[("OZ_STANDIN_SLEEP", "300"), ("OZ_STANDIN_IGNORE_TERM", "1")],
    );
    let mut events = d::task_container_events(&docker, &worker);
    let token = CancellationToken::new();
    let (outcome, id) = tokio::join!(executor.run(&stubborn, token.clone()), async {
        let id = wait_running(&executor, &worker).await;
        token.cancel();
        id
    });
    assert_eq!(outcome, Ok(Exit::Cancelled));
    let state = docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(
        state.running,
        Some(false),
        "a cancelled container must not be left running"
    );
    assert_eq!(state.exit_code, Some(137));

    // The engine's own clock: the SIGKILL came no earlier than the grace period after SIGTERM.
    let seen = events
        .until(Duration::from_secs(30), |e| {
            d::action(e) == "stop" && d::actor_id(e) == id
        })
        .await;
    let signal_at = |signal: &str| {
        seen.iter()
            .find(|e| {
                d::actor_id(e) == id
                    && d::action(e) == "kill"
                    && d::attribute(e, "signal") == Some(signal)
            })
            .and_then(|e| e.time_nano)
            .unwrap_or_else(|| panic!("no kill with signal {signal} for {id}"))
    };
    let (term, kill) = (signal_at("15"), signal_at("9"));
    let waited = Duration::from_nanos(u64::try_from(kill - term).expect("SIGKILL after SIGTERM"));
    assert!(
        waited >= grace,
        "SIGKILL {waited:?} after SIGTERM, before the {grace:?} grace period"
    );
    d::clean(&docker, &worker).await;
}

#[tokio::test]
async fn the_container_gets_env_binds_limits_labels_and_no_worker_key() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("inspect");
    let host_dir = tempfile::tempdir().unwrap();
    let mut config = d::config(&worker);
    config.cleanup = false;
    config.environment.push("OPERATOR_VAR", "op");
    config.environment.push("SHARED", "from-operator");
    config
        .volumes
        .push(format!("{}:/data", host_dir.path().display()));
    let executor = d::executor(config).await;
    let docker = executor.client().clone();
    let mut spec = d::spec(
        "inspect",
        &images.image,
        &images.sidecar,
        &[("SHARED", "from-server"), ("OZ_STANDIN_WRITE", "/data/out")],
    );
    spec.instance_shape = Some(InstanceShape {
        vcpus: Some(1),
        memory_gb: Some(2),
    });
    assert_eq!(run(&executor, &spec).await, Ok(Exit::Succeeded));

    let written = std::fs::read_to_string(host_dir.path().join("out")).unwrap();
    assert_eq!(written.trim(), format!("written-by-{}", spec.task.id));

    let kept = d::containers(&docker, &worker).await;
    assert_eq!(kept.len(), 1);
    let inspect = docker
        .inspect_container(
            kept[0].id.as_deref().unwrap(),
            None::<InspectContainerOptions>,
        )
        .await
        .unwrap();
    let config = inspect.config.unwrap();
    let env = config.env.unwrap();
    let names: Vec<&str> = env.iter().map(|e| e.split('=').next().unwrap()).collect();
    assert!(env.contains(&"SHARED=from-operator".to_owned()), "{env:?}");
    assert!(env.contains(&"OPERATOR_VAR=op".to_owned()));
    assert!(env.contains(&format!("TASK_ID={}", spec.task.id)));
    assert_eq!(names.iter().filter(|n| **n == "SHARED").count(), 1);
    let mut expected: Vec<&str> = spec.env.keys().chain(["OPERATOR_VAR", "PATH"]).collect();
    expected.sort_unstable();
    expected.dedup();
    let mut got = names.clone();
    got.sort_unstable();
    assert_eq!(
        got, expected,
        "no variable beyond the task's, the operator's and the image's"
    );
    assert!(!names.contains(&"WARP_API_KEY"));
    assert_eq!(config.working_dir.as_deref(), Some("/workspace"));
    assert_eq!(config.cmd.unwrap()[0], "/agent/entrypoint.sh");
    let labels = config.labels.unwrap();
    assert_eq!(labels.get(LABEL_WORKER_ID), Some(&worker));
    assert_eq!(
        labels.get(LABEL_TASK_ID).map(String::as_str),
        Some(spec.task_id.as_str())
    );
    assert_eq!(labels.get(LABEL_EXECUTION_ID), Some(&spec.execution_id));
    assert_eq!(labels.get(LABEL_ROLE).map(String::as_str), Some("task"));
    let host = inspect.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.memory, Some(2 << 30));
    assert_eq!(host.memory_swap, Some(2 << 30));
    let binds = host.binds.unwrap();
    assert!(binds[0].ends_with(":/agent:ro"), "{binds:?}");
    assert_eq!(binds[1], format!("{}:/data", host_dir.path().display()));
    d::clean(&docker, &worker).await;
}

#[tokio::test]
async fn a_new_sidecar_is_prepared_once_for_two_concurrent_tasks() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("once");
    let executor = d::executor(d::config(&worker)).await;
    let docker = executor.client().clone();
    let sidecar = d::unique_sidecar(&docker, &images.sidecar).await;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let a = d::spec("once-a", &images.image, &sidecar, &[]);
    let b = d::spec("once-b", &images.image, &sidecar, &[]);
    let (ra, rb) = tokio::join!(run(&executor, &a), run(&executor, &b));
    assert_eq!((ra, rb), (Ok(Exit::Succeeded), Ok(Exit::Succeeded)));

    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["create".to_owned()]),
        (
            "label".to_owned(),
            vec![
                format!("{LABEL_WORKER_ID}={worker}"),
                format!("{LABEL_ROLE}={}", Role::SidecarHelper.as_str()),
            ],
        ),
    ]);
    let options = EventsOptionsBuilder::default()
        .since(&since.to_string())
        .until(&until.to_string())
        .filters(&filters)
        .build();
    let helpers = docker.events(Some(options)).count().await;
    assert_eq!(
        helpers, 2,
        "one preparation = one holder + one source container"
    );
    assert!(
        d::containers(&docker, &worker).await.is_empty(),
        "helpers are removed"
    );
    // The volume is labelled with the worker and the task that prepared it.
    let volumes = docker
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::default()
                .filters(&oz_agent_worker::adapters::docker::labels::worker_filter(
                    &worker,
                ))
                .build(),
        ))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default();
    assert_eq!(volumes.len(), 1);
    assert_eq!(
        volumes[0].labels.get(LABEL_ROLE).map(String::as_str),
        Some("sidecar-volume")
    );
    d::clean(&docker, &worker).await;
    d::remove_image(&docker, &sidecar).await;
}

#[tokio::test]
async fn a_sidecar_volume_deleted_or_replaced_outside_the_worker_is_prepared_again() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("volume-gone");
    let executor = d::executor(d::config(&worker)).await;
    let docker = executor.client().clone();
    let sidecar = d::unique_sidecar(&docker, &images.sidecar).await;
    let first = d::spec("volume-first", &images.image, &sidecar, &[]);
    assert_eq!(run(&executor, &first).await, Ok(Exit::Succeeded));
    let volume = {
        let options = ListVolumesOptionsBuilder::default()
            .filters(&worker_filter(&worker))
            .build();
        let list = docker.list_volumes(Some(options)).await.unwrap();
        let mut names: Vec<String> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names.len(), 1, "one sidecar volume: {names:?}");
        names.remove(0)
    };

    // Deleted: a task mounting the name would get an empty auto-created volume.
    docker
        .remove_volume(&volume, None::<RemoveVolumeOptions>)
        .await
        .unwrap();
    let second = d::spec("volume-deleted", &images.image, &sidecar, &[]);
    assert_eq!(run(&executor, &second).await, Ok(Exit::Succeeded));

    // Replaced by an empty volume of the same name (what `docker run -v NAME:/x` creates).
    docker
        .remove_volume(&volume, None::<RemoveVolumeOptions>)
        .await
        .unwrap();
    let empty = VolumeCreateRequest {
        name: Some(volume.clone()),
        ..VolumeCreateRequest::default()
    };
    docker.create_volume(empty).await.unwrap();
    let third = d::spec("volume-emptied", &images.image, &sidecar, &[]);
    assert_eq!(run(&executor, &third).await, Ok(Exit::Succeeded));

    d::clean(&docker, &worker).await;
    let _ = docker
        .remove_volume(&volume, None::<RemoveVolumeOptions>)
        .await;
    d::remove_image(&docker, &sidecar).await;
}

#[tokio::test]
async fn a_container_that_cannot_start_is_container_start_naming_the_missing_program() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("no-start");
    let executor = d::executor(d::config(&worker)).await;
    let docker = executor.client().clone();
    // The plain busybox image as the sidecar: /agent has no entrypoint.sh.
    let spec = d::spec("no-start", &images.image, &images.image, &[]);
    let failure = run(&executor, &spec).await.unwrap_err();
    assert_eq!(
        failure.reason,
        FailureReason::ContainerStart,
        "{}",
        failure.message
    );
    assert!(
        failure.message.starts_with("failed to start container: "),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("/agent/entrypoint.sh"),
        "{}",
        failure.message
    );
    assert!(
        d::containers(&docker, &worker).await.is_empty(),
        "the container that did not start is removed"
    );
    d::clean(&docker, &worker).await;
}

#[tokio::test]
async fn a_valid_volume_the_engine_refuses_is_container_create() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("no-create");
    let host_dir = tempfile::tempdir().unwrap();
    // Passes config validation, but /agent is the sidecar's mount point too.
    let volume = format!("{}:/agent", host_dir.path().display());
    let args = [
        "oz-agent-worker",
        "--worker-id",
        &worker,
        "--api-key",
        "test-key",
        "--pull-policy",
        "if-not-present",
        "-v",
        &volume,
    ];
    let loaded = load(args, &|_| None).expect("a valid configuration");
    let Backend::Docker(config) = loaded.invocation.config().backend.clone() else {
        panic!("the default backend is docker");
    };
    assert_eq!(config.volumes, vec![volume.clone()]);
    let executor = d::executor(config).await;
    let spec = d::spec("no-create", &images.image, &images.sidecar, &[]);
    let failure = run(&executor, &spec).await.unwrap_err();
    assert_eq!(
        failure.reason,
        FailureReason::ContainerCreate,
        "{}",
        failure.message
    );
    assert!(
        failure.message.starts_with("failed to create container: "),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("/agent"), "{}", failure.message);
    assert!(d::containers(executor.client(), &worker).await.is_empty());
}

#[tokio::test]
async fn start_up_sweeps_what_a_crashed_worker_left() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("sweep");
    let docker = d::client().await.unwrap();
    let owner = Owner {
        worker_id: worker.clone(),
        instance_id: String::new(),
        task_id: "crashed".into(),
        execution_id: "e".into(),
    };
    let body = bollard::models::ContainerCreateBody {
        image: Some(images.image.clone()),
        cmd: Some(vec!["sleep".into(), "300".into()]),
        labels: Some(owner.labels(Role::Task)),
        ..Default::default()
    };
    let id = docker.create_container(None, body).await.unwrap().id;
    docker.start_container(&id, None).await.unwrap();
    let other = d::worker_id("sweep-other");
    let other_owner = Owner {
        worker_id: other.clone(),
        ..owner.clone()
    };
    let body = bollard::models::ContainerCreateBody {
        image: Some(images.image.clone()),
        cmd: Some(vec!["true".into()]),
        labels: Some(other_owner.labels(Role::SidecarHelper)),
        ..Default::default()
    };
    docker.create_container(None, body).await.unwrap();

    let _executor = d::executor(d::config(&worker)).await;
    assert!(
        d::containers(&docker, &worker).await.is_empty(),
        "the orphan is removed"
    );
    assert_eq!(
        d::containers(&docker, &other).await.len(),
        1,
        "other workers' containers stay"
    );
    d::clean(&docker, &other).await;
}

#[tokio::test]
async fn an_unreachable_engine_fails_start_up_naming_the_socket() {
    let socket = "unix:///nonexistent/oz-test/docker.sock";
    let config = oz_agent_worker::adapters::docker::DockerConfig::default();
    let err = DockerExecutor::connect_to(socket, config, None)
        .await
        .unwrap_err();
    assert!(matches!(err, DockerError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "failed to reach Docker daemon at unix:///nonexistent/oz-test/docker.sock"
        ),
        "{text}"
    );
    let tcp = DockerExecutor::connect_to("tcp://127.0.0.1:1", Default::default(), None)
        .await
        .unwrap_err();
    assert!(tcp.to_string().contains("127.0.0.1:1"), "{tcp}");
}

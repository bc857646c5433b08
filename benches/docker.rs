//! Docker backend overhead, measured in one run against the real engine:
//!
//! 1. `DockerExecutor::run` of a trivial task (sidecar cached, `if-not-present`) against the bare
//!    minimum of Docker API calls for the same container (create, start, wait, remove) made
//!    directly with bollard, interleaved, N times each: medians and their ratio;
//! 2. the real daemon (WsTaskSource + Supervisor + DockerExecutor, in this process) driven by a
//!    `LocalControlPlane` on 127.0.0.1: the time from `assign()` to receiving `task_completed`
//!    for the same trivial container, interleaved with (1): its median and its ratio to the
//!    bare sequence;
//! 3. the first task with a new sidecar (pull check + materialisation) against the second.
//!
//! Needs the engine and the images of `scripts/setup/20-docker.sh` (`OZ_TEST_DOCKER_IMAGE`,
//! `OZ_TEST_DOCKER_SIDECAR`); prints why and exits 0 without them.
//! Run: `source scripts/setup/20-docker.sh && cargo bench --bench docker`. Without `--bench`
//! (e.g. under `cargo test --all-targets`) it does a small smoke run.

#![allow(
    clippy::disallowed_methods,
    reason = "benches read their service addresses from the environment, time phases and spawn tasks they await"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use oz_agent_worker::adapters::docker::container::container_env;
use oz_agent_worker::adapters::docker::image::content_digest;
use oz_agent_worker::adapters::docker::reference::ImageRef;
use oz_agent_worker::adapters::docker::sidecar::volume_name;
use oz_agent_worker::adapters::docker::{DockerConfig, DockerExecutor, PullPolicy};
use oz_agent_worker::domain::Exit;
use oz_agent_worker::domain::spec::{SpecSettings, TaskSpec, prepare};
use oz_agent_worker::domain::task::{Assignment, TaskId};
use oz_agent_worker::ports::executor::Executor;
use oz_local_control_plane::sample_assignment;
use tokio_util::sync::CancellationToken;

mod common;

use common::{Daemon, median, ms, ratio};

/// Assigns a trivial container task `id` (made unique) to `daemon` and times it until
/// `task_completed`.
async fn timed_task(daemon: &Daemon, id: &str, image: &str, sidecar: &str) -> Duration {
    let id = format!("{id}-{:06x}", fastrand::u32(..0xff_ffff));
    let mut data = sample_assignment(&id);
    data["docker_image"] = image.into();
    data["sidecar_image"] = sidecar.into();
    let started = daemon.assign(&data);
    daemon.completed(&id).await.duration_since(started)
}

fn spec(n: usize, image: &str, sidecar: &str) -> TaskSpec {
    let mut a = Assignment::new(TaskId::parse(format!("bench-{n}")).unwrap());
    a.docker_image = Some(image.to_owned());
    a.sidecar_image = Some(sidecar.to_owned());
    prepare(&a, &SpecSettings::default())
}

/// create, start, wait, remove: the least any Docker runner must do.
async fn bare(docker: &Docker, body: ContainerCreateBody) -> Duration {
    let started = Instant::now();
    let id = docker.create_container(None, body).await.unwrap().id;
    docker.start_container(&id, None).await.unwrap();
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let status = docker.wait_container(&id, Some(options)).next().await;
    assert!(matches!(status, Some(Ok(_))), "{status:?}");
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    docker.remove_container(&id, Some(options)).await.unwrap();
    started.elapsed()
}

async fn timed_run(executor: &DockerExecutor, spec: &TaskSpec) -> Duration {
    let started = Instant::now();
    let outcome = executor.run(spec, CancellationToken::new()).await;
    assert_eq!(outcome, Ok(Exit::Succeeded));
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (n, rounds) = if full {
        (10, 3)
    } else {
        println!("docker bench: smoke run; use `cargo bench --bench docker` for figures");
        (2, 1)
    };
    let (Ok(image), Ok(sidecar)) = (
        std::env::var("OZ_TEST_DOCKER_IMAGE"),
        std::env::var("OZ_TEST_DOCKER_SIDECAR"),
    ) else {
        println!("docker bench SKIPPED: source scripts/setup/20-docker.sh first");
        return;
    };
    let from_env = |name: &str| std::env::var(name).ok();
    let config = DockerConfig {
        worker_id: format!("oz-bench-{:08x}", fastrand::u32(..)),
        pull_policy: PullPolicy::IfNotPresent,
        // The standard Docker environment, as the app reads it.
        docker_host: oz_agent_worker::adapters::docker::docker_host(&from_env),
        client_config_dir: oz_agent_worker::adapters::docker::client_config_dir(&from_env),
        ..DockerConfig::default()
    };
    let executor = match DockerExecutor::connect(config.clone()).await {
        Ok(executor) => executor,
        Err(e) => {
            println!("docker bench SKIPPED: {e}");
            return;
        }
    };
    let docker = executor.client().clone();
    for needed in [&image, &sidecar] {
        if let Err(e) = docker.inspect_image(needed).await {
            println!(
                "docker bench SKIPPED: image {needed} is missing ({e}); run scripts/setup/20-docker.sh"
            );
            return;
        }
    }

    // Warm up: the sidecar volume exists and the executor's cache knows it.
    timed_run(&executor, &spec(0, &image, &sidecar)).await;
    let inspect = docker.inspect_image(&sidecar).await.unwrap();
    let volume = volume_name(
        &ImageRef::parse(&sidecar).unwrap().familiar_repository(),
        &content_digest(&inspect).unwrap(),
    );
    let bare_body = |spec: &TaskSpec| {
        let mut cmd = vec!["/agent/entrypoint.sh".to_owned()];
        cmd.extend(spec.args.iter().cloned());
        ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(cmd),
            env: Some(container_env(spec, &config).to_kv_strings()),
            working_dir: Some("/workspace".to_owned()),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{volume}:/agent:ro")]),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    };
    bare(&docker, bare_body(&spec(0, &image, &sidecar))).await;

    let daemon_config = DockerConfig {
        worker_id: format!("{}-daemon", config.worker_id),
        ..config.clone()
    };
    let daemon_executor = DockerExecutor::connect(daemon_config)
        .await
        .expect("docker");
    let daemon = Daemon::start(
        &format!("{}-daemon", config.worker_id),
        Arc::new(daemon_executor),
        SpecSettings::default(),
    )
    .await;
    // Warm up the daemon's own executor (its sidecar cache) through the whole path.
    timed_task(&daemon, "warm", &image, &sidecar).await;

    let (mut bare_times, mut worker_times, mut daemon_times) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=n {
        let s = spec(i, &image, &sidecar);
        bare_times.push(bare(&docker, bare_body(&s)).await);
        worker_times.push(timed_run(&executor, &s).await);
        daemon_times.push(timed_task(&daemon, &format!("daemon-{i}"), &image, &sidecar).await);
    }
    let (b, w, dm) = (
        median(bare_times),
        median(worker_times),
        median(daemon_times),
    );
    println!("docker bench: trivial task, N={n} each, interleaved, sidecar cached, if-not-present");
    println!("  bare create/start/wait/remove          median {}", ms(b));
    println!("  DockerExecutor::run                    median {}", ms(w));
    println!("  daemon assign() -> task_completed      median {}", ms(dm));
    println!(
        "  ratio executor/bare                    {:.3}",
        ratio(w, b)
    );
    println!(
        "  ratio daemon/bare (target <= 1.10)     {:.3}",
        ratio(dm, b)
    );
    daemon.stop().await;

    // A new sidecar: a commit of the test sidecar with a unique label, so its digest is new.
    for round in 1..=rounds {
        let tag = format!("{:08x}", fastrand::u32(..));
        let body = ContainerCreateBody {
            image: Some(sidecar.clone()),
            cmd: Some(vec!["true".to_owned()]),
            ..ContainerCreateBody::default()
        };
        let id = docker.create_container(None, body).await.unwrap().id;
        let options = CommitContainerOptionsBuilder::default()
            .container(&id)
            .repo("oz-test/sidecar-bench")
            .tag(&tag)
            .build();
        let labels = HashMap::from([("oz-bench".to_owned(), tag.clone())]);
        let commit = ContainerConfig {
            labels: Some(labels),
            ..ContainerConfig::default()
        };
        let new_image = docker.commit_container(options, commit).await.unwrap().id;
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        docker.remove_container(&id, Some(options)).await.unwrap();
        let fresh = format!("oz-test/sidecar-bench:{tag}");
        let first = timed_run(&executor, &spec(100 + round, &image, &fresh)).await;
        let second = timed_run(&executor, &spec(200 + round, &image, &fresh)).await;
        println!(
            "  new sidecar round {round}: first task {} , second task {} (ratio {:.2})",
            ms(first),
            ms(second),
            first.as_secs_f64() / second.as_secs_f64()
        );
        let volume = volume_name("oz-test/sidecar-bench", &new_image);
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        let _ = docker.remove_volume(&volume, Some(options)).await;
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        let _ = docker.remove_image(&fresh, Some(options), None).await;
    }
}

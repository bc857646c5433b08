//! Image resolution on the real Docker Engine: pulls from the local registry, the pull
//! policies, registry credentials from the Docker client config (the htpasswd registry), and
//! missing or malformed images (`scripts/setup/20-docker.sh` provides the registries).

use std::time::Duration;

use base64::Engine as _;
use bollard::query_parameters::TagImageOptionsBuilder;
use oz_agent_worker::adapters::docker::PullPolicy;
use oz_agent_worker::domain::{Exit, FailureReason};

use crate::support::docker as d;
use crate::support::docker::run;

#[tokio::test]
async fn images_are_pulled_from_a_registry_with_the_always_policy() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("pull");
    let mut config = d::config(&worker);
    config.pull_policy = PullPolicy::Always;
    let executor = d::executor(config).await;
    let docker = executor.client().clone();
    let _registry_only = d::registry_only_lock().await;
    d::remove_image(&docker, &images.registry_only).await;
    let spec = d::spec("pull", &images.registry_only, &images.registry_sidecar, &[]);
    assert_eq!(run(&executor, &spec).await, Ok(Exit::Succeeded));
    assert!(
        docker.inspect_image(&images.registry_only).await.is_ok(),
        "the image was pulled"
    );
    // `always` pulls even a local image, so one that is in no registry fails; the engine
    // refuses the pull before any progress, so (as in the reference) there is no fallback to
    // the local copy.
    let local_only = d::spec("pull-local", &images.image, &images.registry_sidecar, &[]);
    let failure = run(&executor, &local_only).await.unwrap_err();
    assert_eq!(
        failure.reason,
        FailureReason::ImagePull,
        "{}",
        failure.message
    );
    assert!(
        failure.message.starts_with(&format!(
            "failed to pull image docker.io/{}: ",
            images.image
        )),
        "{}",
        failure.message
    );
    assert!(docker.inspect_image(&images.image).await.is_ok());
}

#[tokio::test]
async fn the_if_not_present_policy_pulls_an_absent_image_and_only_then() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("if-absent");
    let mut config = d::config(&worker);
    config.pull_policy = PullPolicy::IfNotPresent;
    let executor = d::executor(config).await;
    let docker = executor.client().clone();
    let _registry_only = d::registry_only_lock().await;
    d::remove_image(&docker, &images.registry_only).await;
    assert!(
        docker.inspect_image(&images.registry_only).await.is_err(),
        "absent before the task"
    );
    let mut events = d::image_events(&docker);

    let absent = d::spec("if-absent", &images.registry_only, &images.sidecar, &[]);
    assert_eq!(run(&executor, &absent).await, Ok(Exit::Succeeded));
    assert!(
        docker.inspect_image(&images.registry_only).await.is_ok(),
        "the image was pulled"
    );
    events
        .until(Duration::from_secs(30), |e| {
            d::action(e) == "pull" && d::actor_id(e) == images.registry_only
        })
        .await;

    // Present now: the next task does not pull. A tag made after it marks the end of its events.
    let present = d::spec("if-present", &images.registry_only, &images.sidecar, &[]);
    assert_eq!(run(&executor, &present).await, Ok(Exit::Succeeded));
    let marker = format!("oz-test/if-not-present-marker:{:08x}", fastrand::u32(..));
    let (repo, tag) = marker.split_once(':').unwrap();
    let options = TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    docker
        .tag_image(&images.registry_only, Some(options))
        .await
        .unwrap();
    let seen = events
        .until(Duration::from_secs(30), |e| {
            d::action(e) == "tag" && d::attribute(e, "name") == Some(marker.as_str())
        })
        .await;
    let pulls = seen
        .iter()
        .filter(|e| d::action(e) == "pull" && d::actor_id(e) == images.registry_only)
        .count();
    assert_eq!(pulls, 1, "pulled for the first task only");
    d::remove_image(&docker, &marker).await;
    d::remove_image(&docker, &images.registry_only).await;
}

#[tokio::test]
async fn a_registry_that_needs_credentials_gets_those_of_the_docker_client_config() {
    let Some(images) = d::setup().await else {
        return;
    };
    let Some(auth) = d::auth_registry() else {
        return;
    };
    let worker = d::worker_id("auth");
    let mut config = d::config(&worker);
    config.pull_policy = PullPolicy::Always;
    let client_config = |auths: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), auths).unwrap();
        dir
    };
    let auths = |user: &str, password: &str| {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{encoded}"}}}}}}"#,
            auth.registry
        )
    };
    let spec = || d::spec("auth", &auth.image, &images.registry_sidecar, &[]);
    let docker = d::client().await.unwrap();
    d::remove_image(&docker, &auth.image).await;

    // No entry for the registry: a specific image_pull failure, fast.
    let none = client_config(r#"{"auths":{}}"#);
    let executor = d::executor_with_client_config(config.clone(), none.path()).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), run(&executor, &spec()))
        .await
        .expect("a registry that wants credentials never hangs");
    let failure = outcome.unwrap_err();
    assert_eq!(
        failure.reason,
        FailureReason::ImagePull,
        "{}",
        failure.message
    );
    let want = format!(
        "failed to pull image {}: registry {} requires credentials, and the Docker client \
         config (DOCKER_CONFIG or ~/.docker/config.json) has none for it (",
        auth.image, auth.registry
    );
    assert!(failure.message.starts_with(&want), "{}", failure.message);
    assert!(
        failure.message.contains("no basic auth credentials"),
        "{}",
        failure.message
    );

    // A wrong password: refused, and the message says so without showing it.
    let wrong = client_config(&auths(&auth.user, "not-the-password"));
    let executor = d::executor_with_client_config(config.clone(), wrong.path()).await;
    let failure = run(&executor, &spec()).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::ImagePull);
    assert!(
        failure.message.contains(&format!(
            "registry {} refused the credentials from the Docker client config",
            auth.registry
        )),
        "{}",
        failure.message
    );
    assert!(!failure.message.contains("not-the-password"));
    assert!(docker.inspect_image(&auth.image).await.is_err());

    // The right `auths` entry: pulled and run.
    let right = client_config(&auths(&auth.user, &auth.password));
    let executor = d::executor_with_client_config(config, right.path()).await;
    assert_eq!(run(&executor, &spec()).await, Ok(Exit::Succeeded));
    assert!(
        docker.inspect_image(&auth.image).await.is_ok(),
        "the image was pulled with the credentials"
    );
    d::remove_image(&docker, &auth.image).await;
}

#[tokio::test]
async fn the_never_policy_uses_local_images_and_never_pulls() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("never");
    let mut config = d::config(&worker);
    config.pull_policy = PullPolicy::Never;
    let executor = d::executor(config).await;
    let local = d::spec("never-local", &images.image, &images.sidecar, &[]);
    assert_eq!(run(&executor, &local).await, Ok(Exit::Succeeded));
    let missing = d::spec(
        "never-missing",
        &format!("{}/oz-test/never-pulled:1", images.registry),
        &images.sidecar,
        &[],
    );
    let failure = run(&executor, &missing).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::ImagePull);
    assert!(
        failure
            .message
            .contains("not present locally and the pull policy is never"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn missing_and_bad_images_fail_fast_with_specific_reasons() {
    let Some(images) = d::setup().await else {
        return;
    };
    let worker = d::worker_id("bad-image");
    let mut config = d::config(&worker);
    config.pull_policy = PullPolicy::Always;
    let executor = d::executor(config).await;
    let cases = [
        (
            format!("{}/oz-test/does-not-exist:1", images.registry),
            images.sidecar.clone(),
            FailureReason::ImagePull,
        ),
        (
            "registry.nonexistent.invalid/x/y:1".to_owned(),
            images.sidecar.clone(),
            FailureReason::ImagePull,
        ),
        (
            "Not A Reference".to_owned(),
            images.sidecar.clone(),
            FailureReason::InvalidImage,
        ),
        (
            images.registry_image.clone(),
            format!("{}/oz-test/no-such-sidecar:1", images.registry),
            FailureReason::SidecarPrep,
        ),
        (
            images.registry_image.clone(),
            "bad sidecar ref".to_owned(),
            FailureReason::InvalidImage,
        ),
    ];
    for (image, sidecar, reason) in cases {
        let spec = d::spec("bad-image", &image, &sidecar, &[]);
        let outcome = tokio::time::timeout(Duration::from_secs(60), run(&executor, &spec))
            .await
            .expect("a bad image never hangs");
        let failure = outcome.unwrap_err();
        assert_eq!(
            failure.reason, reason,
            "{image} / {sidecar}: {}",
            failure.message
        );
        assert!(
            failure.message.contains(&image)
                || failure.message.contains(&sidecar)
                || reason == FailureReason::InvalidImage,
            "{}",
            failure.message
        );
    }
    assert!(d::containers(executor.client(), &worker).await.is_empty());
}

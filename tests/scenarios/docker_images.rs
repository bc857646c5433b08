//! Image resolution on the real Docker Engine: pulls from the local registry, the pull
//! policies, and missing or malformed images (`scripts/setup/20-docker.sh` provides both).

use std::time::Duration;

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
    d::remove_image(&docker, &images.registry_only).await;
    let spec = d::spec("pull", &images.registry_only, &images.registry_sidecar, &[]);
    assert_eq!(run(&executor, &spec).await, Ok(Exit::Succeeded));
    assert!(
        docker.inspect_image(&images.registry_only).await.is_ok(),
        "the image was pulled"
    );
    // `always` pulls even a local image, so one that is in no registry fails.
    let local_only = d::spec("pull-local", &images.image, &images.sidecar, &[]);
    let failure = run(&executor, &local_only).await.unwrap_err();
    assert_eq!(
        failure.reason,
        FailureReason::ImagePull,
        "{}",
        failure.message
    );
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

//! Image resolution: the daemon's platform, the pull policy, pulls with the daemon's platform and
//! registry credentials, and the platform check after a pull (moby/moby#42325).

use std::fmt;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::ImageInspect;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Halt;
use super::config::PullPolicy;
use super::reference::ImageRef;
use crate::domain::{FailureReason, TaskFailure};

/// A pull fails when the engine reports no progress for this long (a registry that accepts
/// connections and then never answers must not hang a task).
pub const PULL_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// An engine platform (OS and architecture, no variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub arch: String,
}

impl Platform {
    /// True for the two platforms the worker supports.
    pub fn is_supported(&self) -> bool {
        self.os == "linux" && (self.arch == "amd64" || self.arch == "arm64")
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// What to pull, and how.
pub struct PullRequest<'a> {
    /// The image.
    pub image: &'a ImageRef,
    /// The pull policy.
    pub policy: PullPolicy,
    /// Registry credentials (`None`: anonymous).
    pub credentials: Option<DockerCredentials>,
    /// The failure reason for this image (`image_pull` for the task image, `sidecar_prep` for
    /// sidecars).
    pub reason: FailureReason,
}

/// Makes `request.image` present locally for `platform`, following the pull policy, and returns
/// its inspection. The pull itself stops when `cancel` fires.
///
/// # Errors
/// [`Halt::Cancelled`], or a failure with `request.reason` (or `invalid_image` when the engine
/// rejects the reference).
pub async fn ensure(
    docker: &Docker,
    platform: &Platform,
    request: PullRequest<'_>,
    cancel: &CancellationToken,
) -> Result<ImageInspect, Halt> {
    let image = request.image.local_name();
    let local = match docker.inspect_image(&image).await {
        Ok(inspect) => Some(inspect),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(e) => {
            return Err(failure(
                request.reason,
                format!("failed to inspect image {image}: {}", server_message(&e)),
            ));
        }
    };
    let local_fits = local
        .as_ref()
        .is_some_and(|i| image_platform(i) == *platform);
    let pull = match request.policy {
        PullPolicy::Always => true,
        PullPolicy::IfNotPresent => !local_fits,
        PullPolicy::Never => false,
    };
    if !pull {
        return match local {
            Some(inspect) => check_platform(&image, inspect, platform, request.reason),
            None => Err(failure(
                request.reason,
                format!("image {image} is not present locally and the pull policy is never"),
            )),
        };
    }
    tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(Halt::Cancelled),
        pulled = pull_image(docker, platform, &request) => pulled?,
    }
    let inspect = docker.inspect_image(&image).await.map_err(|e| {
        failure(
            request.reason,
            format!(
                "failed to inspect image {image} after pulling it: {}",
                server_message(&e)
            ),
        )
    })?;
    check_platform(&image, inspect, platform, request.reason)
}

async fn pull_image(
    docker: &Docker,
    platform: &Platform,
    request: &PullRequest<'_>,
) -> Result<(), Halt> {
    let image = request.image;
    let options = CreateImageOptionsBuilder::default()
        .from_image(&image.repository())
        .tag(image.pull_tag())
        .platform(&platform.to_string())
        .build();
    let mut progress = docker.create_image(Some(options), None, request.credentials.clone());
    loop {
        match tokio::time::timeout(PULL_IDLE_TIMEOUT, progress.next()).await {
            Err(_) => {
                return Err(failure(
                    request.reason,
                    format!(
                        "failed to pull image {image}: no progress from the registry for {}s",
                        PULL_IDLE_TIMEOUT.as_secs()
                    ),
                ));
            }
            Ok(None) => return Ok(()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                let mut message = server_message(&e);
                if let Some(hint) = credentials_hint(&message, request) {
                    message = format!("{hint} ({message})");
                }
                let reason = match &e {
                    BollardError::DockerResponseServerError {
                        status_code: 400, ..
                    } => FailureReason::InvalidImage,
                    _ if message.contains("invalid reference format") => {
                        FailureReason::InvalidImage
                    }
                    _ => request.reason,
                };
                return Err(failure(
                    reason,
                    format!("failed to pull image {image}: {message}"),
                ));
            }
        }
    }
}

/// What the operator can do when a registry asks for credentials, if `message` (the engine's)
/// says that it did.
pub(crate) fn credentials_hint(message: &str, request: &PullRequest<'_>) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let refused = [
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
    ]
    .iter()
    .any(|m| lower.contains(m));
    if !refused {
        return None;
    }
    let registry = &request.image.domain;
    Some(match (&request.credentials, request.reason) {
        (_, FailureReason::SidecarPrep) => format!(
            "registry {registry} requires credentials, but sidecar images are pulled anonymously"
        ),
        (Some(_), _) => format!(
            "registry {registry} refused the credentials from the Docker client config \
             (DOCKER_CONFIG or ~/.docker/config.json)"
        ),
        (None, _) => format!(
            "registry {registry} requires credentials, and the Docker client config \
             (DOCKER_CONFIG or ~/.docker/config.json) has none for it"
        ),
    })
}

/// Checks that `inspect` (of `image`) is for the engine's `platform`.
///
/// # Errors
/// A failure with `reason` naming both platforms.
pub(crate) fn check_platform(
    image: &str,
    inspect: ImageInspect,
    platform: &Platform,
    reason: FailureReason,
) -> Result<ImageInspect, Halt> {
    let actual = image_platform(&inspect);
    if actual != *platform {
        return Err(failure(
            reason,
            format!("image {image} is for platform {actual}, but this worker requires {platform}"),
        ));
    }
    Ok(inspect)
}

fn image_platform(inspect: &ImageInspect) -> Platform {
    Platform {
        os: inspect.os.clone().unwrap_or_default(),
        arch: inspect.architecture.clone().unwrap_or_default(),
    }
}

/// The content address of an image: the digest of its first repo digest, else its image id.
pub fn content_digest(inspect: &ImageInspect) -> Option<String> {
    inspect
        .repo_digests
        .as_ref()
        .and_then(|d| d.first())
        .and_then(|d| d.split_once('@'))
        .map(|(_, digest)| digest.to_owned())
        .or_else(|| inspect.id.clone())
}

/// The engine's message without bollard's wrapping.
pub fn server_message(error: &BollardError) -> String {
    match error {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn failure(reason: FailureReason, message: String) -> Halt {
    Halt::Failed(TaskFailure::backend(reason, message))
}

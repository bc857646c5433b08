//! Sidecar images materialised into named volumes keyed by their digest (a content-addressed
//! cache), prepared once per digest even when concurrent tasks ask for it.
//!
//! Materialisation needs no program in the sidecar image: a never-started container of the image
//! is exported as a tar stream, which the engine unpacks (`PUT /archive`) into the volume through
//! a second never-started container that mounts it. A marker file written last tells a complete
//! volume from one a crash interrupted; both helper containers are always removed. A volume
//! deleted or replaced outside the worker is noticed before its next use and prepared again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{BollardDate, ContainerCreateBody, HostConfig, Volume, VolumeCreateRequest};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::TryStreamExt;
use tokio::sync::Mutex as AsyncMutex;

use super::container;
use super::image::server_message;
use super::labels::{Owner, Role};
use crate::domain::task::SidecarMount;
use crate::domain::{FailureReason, TaskFailure};

/// The file written last into a complete sidecar volume.
pub const COMPLETE_MARKER: &str = ".oz-sidecar-complete";
/// Where the helper container mounts the volume.
const TARGET: &str = "/target";

/// Checks the sidecar list: non-empty images and mount paths, absolute paths, no duplicates.
///
/// # Errors
/// A `sidecar_prep` failure naming the bad entry.
pub fn validate(sidecars: &[SidecarMount]) -> Result<(), TaskFailure> {
    let fail = |m: String| Err(TaskFailure::backend(FailureReason::SidecarPrep, m));
    for (i, sidecar) in sidecars.iter().enumerate() {
        if sidecar.image.trim().is_empty() {
            return fail(format!("sidecar {i} has an empty image"));
        }
        if sidecar.mount_path.is_empty() {
            return fail(format!("sidecar {} has an empty mount path", sidecar.image));
        }
        if !sidecar.mount_path.starts_with('/') {
            return fail(format!(
                "sidecar {} has a relative mount path {:?} (expected an absolute path)",
                sidecar.image, sidecar.mount_path
            ));
        }
        if sidecars[..i]
            .iter()
            .any(|s| s.mount_path == sidecar.mount_path)
        {
            return fail(format!(
                "duplicate sidecar mount path {:?}",
                sidecar.mount_path
            ));
        }
    }
    Ok(())
}

/// The volume of a sidecar: the familiar repository with every character outside
/// `[A-Za-z0-9_.-]` replaced by `-`, then `-` and the first 12 hex digits of the digest
/// (`warpdotdev/warp-agent` + `sha256:0123456789abcdef…` → `warpdotdev-warp-agent-0123456789ab`).
pub fn volume_name(familiar_repository: &str, digest: &str) -> String {
    let repo: String = familiar_repository
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let suffix = match digest.split_once(':') {
        Some((_, hex)) if !hex.contains(':') => hex.chars().take(12).collect(),
        _ => digest.replace(':', "-"),
    };
    format!("{repo}-{suffix}")
}

/// The bind spec of a sidecar volume: read-only unless `read_write`.
pub fn bind(volume: &str, mount_path: &str, read_write: bool) -> String {
    if read_write {
        format!("{volume}:{mount_path}")
    } else {
        format!("{volume}:{mount_path}:ro")
    }
}

/// Per-volume preparation state: concurrent tasks wanting the same sidecar wait for one
/// preparation, and a volume prepared earlier is checked again before each reuse.
#[derive(Debug, Default)]
pub struct SidecarCache {
    volumes: Mutex<HashMap<String, Arc<AsyncMutex<Option<Verified>>>>>,
}

/// What a sidecar volume looked like right after the worker last found it complete. The local
/// driver's `CreatedAt` is the ctime of the volume's data directory, so a volume deleted and
/// created again (for example auto-created empty by a container that mounts the name), or one
/// written to, no longer matches and is verified again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verified {
    created_at: Option<BollardDate>,
    labels: HashMap<String, String>,
}

impl Verified {
    fn of(volume: &Volume) -> Self {
        Self {
            created_at: volume.created_at.clone(),
            labels: volume.labels.clone(),
        }
    }
}

impl SidecarCache {
    /// Makes `volume` hold the filesystem of `image` (a local image name). The first task of a
    /// worker process prepares it (or finds it complete); later tasks reuse it after one volume
    /// inspection, and prepare it again when it was deleted or replaced outside the worker. A
    /// failed preparation is retried by the next task.
    ///
    /// Not cancellable on purpose: it is short, local, and shared with other tasks.
    ///
    /// # Errors
    /// A `sidecar_prep` failure.
    pub async fn prepare(
        &self,
        docker: &Docker,
        volume: &str,
        image: &str,
        owner: &Owner,
    ) -> Result<(), TaskFailure> {
        let state = {
            let mut volumes = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(volumes.entry(volume.to_owned()).or_default())
        };
        let mut verified = state.lock().await;
        let failed = |message: String| {
            TaskFailure::backend(
                FailureReason::SidecarPrep,
                format!("failed to prepare sidecar {image} in volume {volume}: {message}"),
            )
        };
        if let Some(known) = verified.as_ref() {
            match inspect_volume(docker, volume).await.map_err(failed)? {
                Some(current) if Verified::of(&current) == *known => return Ok(()),
                Some(_) => tracing::warn!(
                    %volume,
                    "The sidecar volume changed outside the worker; checking it again."
                ),
                None => tracing::warn!(
                    %volume,
                    "The sidecar volume was deleted outside the worker; preparing it again."
                ),
            }
            *verified = None;
        }
        let prepared = materialise_if_needed(docker, volume, image, owner)
            .await
            .map_err(failed)?;
        *verified = Some(Verified::of(&prepared));
        Ok(())
    }
}

/// The volume's inspection, or `None` when it does not exist.
async fn inspect_volume(docker: &Docker, volume: &str) -> Result<Option<Volume>, String> {
    match docker.inspect_volume(volume).await {
        Ok(inspect) => Ok(Some(inspect)),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(format!("cannot inspect the volume: {}", server_message(&e))),
    }
}

/// Creates `volume` if needed and fills it unless it holds the completion marker; returns its
/// inspection once complete.
async fn materialise_if_needed(
    docker: &Docker,
    volume: &str,
    image: &str,
    owner: &Owner,
) -> Result<Volume, String> {
    let existed = inspect_volume(docker, volume).await?.is_some();
    if !existed {
        let request = VolumeCreateRequest {
            name: Some(volume.to_owned()),
            labels: Some(owner.labels(Role::SidecarVolume)),
            ..VolumeCreateRequest::default()
        };
        docker
            .create_volume(request)
            .await
            .map_err(|e| format!("cannot create the volume: {}", server_message(&e)))?;
    }
    let holder = create_helper(docker, image, owner, Some(volume)).await?;
    let result = fill_unless_complete(docker, &holder, image, owner).await;
    container::remove(docker, &holder).await;
    if result.is_err() && !existed {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        if let Err(e) = docker.remove_volume(volume, Some(options)).await {
            tracing::warn!(%volume, error = %e, "Could not remove a half-prepared sidecar volume.");
        }
    }
    result?;
    inspect_volume(docker, volume)
        .await?
        .ok_or_else(|| "the volume disappeared right after it was prepared".to_owned())
}

async fn fill_unless_complete(
    docker: &Docker,
    holder: &str,
    image: &str,
    owner: &Owner,
) -> Result<(), String> {
    let marker = format!("{TARGET}/{COMPLETE_MARKER}");
    let options = ContainerArchiveInfoOptionsBuilder::default()
        .path(&marker)
        .build();
    match docker
        .get_container_archive_info(holder, Some(options))
        .await
    {
        Ok(_) => return Ok(()),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(format!("cannot check the volume: {}", server_message(&e))),
    }
    tracing::info!(%image, "Materialising a sidecar image into its volume.");
    let source = create_helper(docker, image, owner, None).await?;
    let copied = copy_filesystem(docker, &source, holder).await;
    container::remove(docker, &source).await;
    copied?;
    let options = UploadToContainerOptionsBuilder::default()
        .path(TARGET)
        .build();
    docker
        .upload_to_container(
            holder,
            Some(options),
            bollard::body_full(marker_tar(image).into()),
        )
        .await
        .map_err(|e| format!("cannot write the completion marker: {}", server_message(&e)))
}

async fn copy_filesystem(docker: &Docker, source: &str, holder: &str) -> Result<(), String> {
    let export = docker
        .export_container(source)
        .map_err(|e| std::io::Error::other(server_message(&e)));
    let options = UploadToContainerOptionsBuilder::default()
        .path(TARGET)
        .build();
    docker
        .upload_to_container(holder, Some(options), bollard::body_try_stream(export))
        .await
        .map_err(|e| format!("cannot copy the image's filesystem: {}", server_message(&e)))
}

/// A never-started container of `image`, optionally mounting `volume` at [`TARGET`].
async fn create_helper(
    docker: &Docker,
    image: &str,
    owner: &Owner,
    volume: Option<&str>,
) -> Result<String, String> {
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["true".to_owned()]),
        labels: Some(owner.labels(Role::SidecarHelper)),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            binds: volume.map(|v| vec![format!("{v}:{TARGET}")]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(None, body)
        .await
        .map(|r| r.id)
        .map_err(|e| format!("cannot create a helper container: {}", server_message(&e)))
}

/// A tar archive holding only [`COMPLETE_MARKER`], whose content names `image`.
pub fn marker_tar(image: &str) -> Vec<u8> {
    let content = format!("{image}\n");
    let mut header = [0u8; 512];
    let mut put =
        |offset: usize, bytes: &[u8]| header[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0, COMPLETE_MARKER.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", content.len()).as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content.as_bytes());
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.resize(out.len() + 1024, 0);
    out
}

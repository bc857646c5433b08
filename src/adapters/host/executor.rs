//! `HostExecutor`: the Direct backend's handle, its startup preflight and its
//! `Executor` implementation. The per-task flow lives in `run.rs`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::config::DirectConfig;
use super::environment::{HostEnv, find_in_path};
use super::process::{self, LiveGroups};
use super::workspace::{self, create_private_dir};
use crate::domain::{Exit, TaskFailure};
use crate::ports::executor::{Executor, TaskSpec};

/// Why the Direct backend cannot start (the startup preflight failed).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No `oz_path` was configured and `oz` is not on `PATH`.
    #[error("oz CLI not found in PATH")]
    OzNotFound,
    /// `target_dir` does not exist or cannot be read.
    #[error("target_dir {}: {source}", path.display())]
    TargetDirUnavailable {
        /// The configured directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `target_dir` exists but is not a directory.
    #[error("target_dir {} is not a directory", path.display())]
    TargetDirNotADirectory {
        /// The configured path.
        path: PathBuf,
    },
    /// `workspace_root` could not be created.
    #[error("cannot create workspace_root {}: {source}", path.display())]
    WorkspaceRoot {
        /// The configured directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Runs `oz agent run …` as a host process in a per-task workspace (or a fixed target
/// directory). Cheap to clone; clones share the bookkeeping used by [`Executor::shutdown`].
///
/// Behaviour beyond the Go reference (each is deliberate):
/// * **Process groups.** Setup, agent and teardown each run as the leader of a new process
///   group. Cancellation sends SIGTERM to the whole group and SIGKILL after
///   [`DirectConfig::kill_grace`] (the reference SIGKILLs the direct child only). When the
///   leader exits, the rest of its group is SIGKILLed: no process outlives its task, even if
///   the `run` future is dropped.
/// * **Captured output.** stdout/stderr are piped and each line is logged as an `info` event
///   with `task_id`, `phase` (`setup`/`agent`/`teardown`) and `stream` fields, so it follows
///   `--log-level` and `--log-format`; the last ~2 KiB are kept. Failure messages end
///   with `; last output: <tail>`. Every task env value of 4+ characters (except the
///   worker-derived, non-secret ones in [`NOT_REDACTED`](super::NOT_REDACTED)) and the worker's
///   `WARP_API_KEY` are replaced by `***` in both (a multi-line value line by line). Draining the pipes after an exit is bounded,
///   so an escaped grandchild holding them cannot hang the task.
/// * **Teardown after cancellation.** The reference skips teardown once the task was
///   cancelled (it ran under the cancelled context). Here teardown still runs after a
///   cancellation or shutdown, bounded to [`TEARDOWN_AFTER_CANCEL`](super::TEARDOWN_AFTER_CANCEL);
///   in normal runs it is stopped only if the task is cancelled meanwhile (then with the same
///   bound). Teardown failures never fail the task.
/// * **No-cleanup.** As in the reference, `--no-cleanup` in per-task mode keeps the workspace
///   and skips teardown, so the task's state is left exactly as the agent left it for debugging.
///   Processes are still killed.
/// * **Shutdown.** The reference deletes every entry under `workspace_root`, whoever created it
///   and even under no-cleanup. Here `shutdown` SIGKILLs process groups still alive and deletes
///   only the per-task workspaces this worker created and still holds, and nothing under
///   no-cleanup.
#[derive(Debug, Clone)]
pub struct HostExecutor {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) config: DirectConfig,
    pub(super) oz: PathBuf,
    pub(super) host_env: HostEnv,
    pub(super) groups: LiveGroups,
    /// Per-task workspaces created by this worker and not yet removed, with a use count.
    pub(super) workspaces: Mutex<HashMap<PathBuf, usize>>,
}

impl HostExecutor {
    /// Builds the backend with an explicit snapshot of the worker's environment (the one setup
    /// and teardown inherit, and where `PATH`, `HOME`, `TMPDIR` come from), running the
    /// preflight: the oz binary is `oz_path` (not validated) or `oz` on `PATH`; a
    /// `target_dir` must be an existing directory; otherwise `workspace_root` is created with
    /// mode 0700.
    ///
    /// # Errors
    /// [`HostError`] naming the failed check.
    pub fn with_host_env(config: &DirectConfig, host_env: HostEnv) -> Result<Self, HostError> {
        let oz = match &config.oz_path {
            Some(path) => path.clone(),
            None => find_in_path("oz", host_env.get("PATH")).ok_or(HostError::OzNotFound)?,
        };
        match &config.target_dir {
            Some(dir) => check_target_dir(dir)?,
            None => create_private_dir(&config.workspace_root).map_err(|source| {
                HostError::WorkspaceRoot {
                    path: config.workspace_root.clone(),
                    source,
                }
            })?,
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                oz,
                host_env,
                groups: LiveGroups::default(),
                workspaces: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The oz binary this backend runs.
    pub fn oz_path(&self) -> &Path {
        &self.inner.oz
    }
}

fn check_target_dir(dir: &Path) -> Result<(), HostError> {
    let metadata = std::fs::metadata(dir).map_err(|source| HostError::TargetDirUnavailable {
        path: dir.to_path_buf(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(HostError::TargetDirNotADirectory {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

impl Inner {
    pub(super) fn hold_workspace(&self, dir: &Path) {
        *self
            .workspaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(dir.to_path_buf())
            .or_default() += 1;
    }

    pub(super) fn release_workspace(&self, dir: &Path) {
        let mut held = self
            .workspaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(dir) {
            *count -= 1;
            if *count == 0 {
                held.remove(dir);
            }
        }
    }
}

#[async_trait]
impl Executor for HostExecutor {
    async fn run(&self, spec: &TaskSpec, cancel: CancellationToken) -> Result<Exit, TaskFailure> {
        super::run::run_task(&self.inner, spec, &cancel).await
    }

    /// Kills process groups still alive, then deletes the per-task workspaces this worker
    /// created and still holds (none under no-cleanup). Never touches other entries of
    /// `workspace_root` or a target directory.
    async fn shutdown(&self) {
        process::kill_all(&self.inner.groups);
        if !self.inner.config.cleanup {
            return;
        }
        let held: Vec<PathBuf> = self
            .inner
            .workspaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(dir, _)| dir)
            .collect();
        for dir in held {
            if let Err(error) = workspace::remove_dir_if_present(&dir).await {
                tracing::warn!(workspace = %dir.display(), %error, operation = "remove_workspace", "cleanup.failed");
            }
        }
    }
}

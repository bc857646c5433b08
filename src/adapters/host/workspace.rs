//! The filesystem side of one Direct task: the per-task workspace (or the fixed target
//! directory), the isolated git global config, and the `oz-env-*` environment file that the
//! setup command may fill.
//!
//! Knows nothing about processes or the task environment. Deleting a workspace runs on
//! tokio's blocking pool, so a large tree neither stalls an async worker thread nor escapes
//! the caller's timeout.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

/// Mode of the workspace root and of every per-task workspace.
pub(crate) const WORKSPACE_MODE: u32 = 0o700;

/// Why a workspace could not be prepared. The text goes into a `workspace_setup` failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkspaceError {
    /// The task id cannot be used as a directory name.
    #[error("invalid task ID for workspace path: {0:?}")]
    InvalidTaskId(String),
    /// A filesystem operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// True when `task_id` is one safe path component: not empty, `.` or `..`, no `/` or `\`,
/// no NUL, and equal to its own file name.
pub(crate) fn is_safe_path_component(task_id: &str) -> bool {
    !task_id.is_empty()
        && task_id != "."
        && task_id != ".."
        && !task_id.contains(['/', '\\', '\0'])
        && Path::new(task_id).file_name().and_then(|n| n.to_str()) == Some(task_id)
}

/// Creates `path` (and its parents) with mode 0700, like `mkdir -p -m 0700`.
pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(WORKSPACE_MODE)
        .create(path)
}

/// Where one task runs and the files the worker created for it.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The task's working directory.
    pub dir: PathBuf,
    /// True in target-dir mode: the directory is the operator's and is never deleted.
    pub shared: bool,
    /// `GIT_CONFIG_GLOBAL` (the file itself is not created).
    pub git_config: PathBuf,
    /// The environment file handed to setup as `OZ_ENVIRONMENT_FILE`.
    env_file: Option<NamedTempFile>,
    /// Target-dir mode: the temp dir holding `.gitconfig`, outside the checkout.
    git_config_dir: Option<TempDir>,
}

impl Workspace {
    /// Prepares the workspace of `task_id`: `target_dir` when set, else
    /// `<workspace_root>/<task_id>` with mode 0700.
    ///
    /// # Errors
    /// [`WorkspaceError`] for an unsafe task id or a filesystem failure.
    pub(crate) fn prepare(
        task_id: &str,
        workspace_root: &Path,
        target_dir: Option<&Path>,
    ) -> Result<Self, WorkspaceError> {
        if !is_safe_path_component(task_id) {
            return Err(WorkspaceError::InvalidTaskId(task_id.to_owned()));
        }
        let (dir, shared, git_config, git_config_dir) = match target_dir {
            Some(target) => {
                let temp = tempfile::Builder::new()
                    .prefix("oz-gitconfig-")
                    .tempdir()
                    .map_err(|source| WorkspaceError::Io {
                        what: "cannot create git config directory in",
                        path: std::env::temp_dir(),
                        source,
                    })?;
                let git_config = temp.path().join(".gitconfig");
                (target.to_path_buf(), true, git_config, Some(temp))
            }
            None => {
                let dir = workspace_root.join(task_id);
                create_private_dir(&dir)
                    .and_then(|()| {
                        fs::set_permissions(&dir, Permissions::from_mode(WORKSPACE_MODE))
                    })
                    .map_err(|source| WorkspaceError::Io {
                        what: "cannot create workspace",
                        path: dir.clone(),
                        source,
                    })?;
                let git_config = dir.join(".gitconfig");
                (dir, false, git_config, None)
            }
        };
        let env_file = tempfile::Builder::new()
            .prefix("oz-env-")
            .tempfile_in(&dir)
            .map_err(|source| WorkspaceError::Io {
                what: "cannot create environment file in",
                path: dir.clone(),
                source,
            })?;
        Ok(Self {
            dir,
            shared,
            git_config,
            env_file: Some(env_file),
            git_config_dir,
        })
    }

    /// The environment file's path (`OZ_ENVIRONMENT_FILE`).
    pub(crate) fn env_file_path(&self) -> Option<&Path> {
        self.env_file.as_ref().map(NamedTempFile::path)
    }

    /// Reads the environment file the setup command may have written.
    pub(crate) fn read_env_file(&self) -> io::Result<String> {
        match self.env_file_path() {
            Some(path) => fs::read_to_string(path),
            None => Ok(String::new()),
        }
    }

    /// Cleanup step 1: removes the environment file (idempotent).
    pub(crate) fn remove_env_file(&mut self) -> io::Result<()> {
        match self.env_file.take() {
            Some(file) => match file.close() {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Cleanup step 2 (per-task mode, cleanup on): deletes the workspace recursively, off the
    /// async worker threads (see [`remove_dir_if_present`]). A missing directory is not an
    /// error. Never touches a target directory.
    pub(crate) async fn remove_dir(&self) -> io::Result<()> {
        if self.shared {
            return Ok(());
        }
        remove_dir_if_present(&self.dir).await
    }

    /// Cleanup step 3 (target-dir mode): removes the temp git-config directory (idempotent).
    pub(crate) fn remove_git_config_dir(&mut self) -> io::Result<()> {
        match self.git_config_dir.take() {
            Some(dir) => dir.close(),
            None => Ok(()),
        }
    }
}

/// `rm -rf path` on tokio's blocking pool, treating "already gone" as success.
///
/// The deletion never blocks an async worker thread, and a caller's timeout bounds the wait:
/// dropping the future stops waiting while the deletion finishes in the background.
pub(crate) async fn remove_dir_if_present(path: &Path) -> io::Result<()> {
    match tokio::fs::remove_dir_all(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

//! Configuration of the Direct backend (`backend.direct` in YAML), already validated.

use std::path::PathBuf;
use std::time::Duration;

use crate::adapters::state::Instances;
use crate::domain::env::EnvList;

/// Default `workspace_root`.
pub const DEFAULT_WORKSPACE_ROOT: &str = "/var/lib/oz/workspaces";
/// Default grace period between SIGTERM and SIGKILL when a task is cancelled.
pub(super) const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// The Direct backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectConfig {
    /// Parent of the per-task workspaces (ignored when `target_dir` is set).
    pub workspace_root: PathBuf,
    /// A fixed directory every task runs in (no per-task isolation); `--target-dir` wins.
    pub target_dir: Option<PathBuf>,
    /// The `oz` binary; looked up on `PATH` when unset.
    pub oz_path: Option<PathBuf>,
    /// Run with `/bin/sh -c` before the agent.
    pub setup_command: Option<String>,
    /// Run with `/bin/sh -c` after the agent.
    pub teardown_command: Option<String>,
    /// Operator environment: YAML `environment` then `-e` (CLI wins), de-duplicated.
    pub environment: EnvList,
    /// False under `--no-cleanup` / `cleanup: false`.
    pub cleanup: bool,
    /// SIGTERM → SIGKILL grace period on cancel (`kill_grace_period`, default 10 s).
    pub kill_grace: Duration,
    /// This process's instance in the state directory, where each task's process groups and
    /// workspace are journaled so that a worker restarted after a crash can end and remove
    /// them. `None` (tests, benches): nothing is journaled.
    pub instances: Option<Instances>,
}

impl Default for DirectConfig {
    fn default() -> Self {
        Self {
            workspace_root: PathBuf::from(DEFAULT_WORKSPACE_ROOT),
            target_dir: None,
            oz_path: None,
            setup_command: None,
            teardown_command: None,
            environment: EnvList::new(),
            cleanup: true,
            kill_grace: DEFAULT_KILL_GRACE,
            instances: None,
        }
    }
}

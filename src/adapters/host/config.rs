//! Configuration of the Direct backend: the raw `backend.direct` YAML block, its validation
//! (merged with `-e` and `--target-dir`) into [`DirectConfig`], and its effective-config
//! section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::adapters::state::Instances;

use serde::{Deserialize, Serialize};

use crate::adapters::backend_config::checks::absolute;
use crate::adapters::backend_config::duration::format_go_duration;
use crate::adapters::backend_config::{
    BackendSection, Context, Findings, RawEnvEntry, RedactedEnv, Unknown, grace, merged_env,
    redacted, scalar_text, to_yaml, unknown_with_env,
};
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

/// `backend.direct`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawDirect {
    workspace_root: Option<String>,
    target_dir: Option<String>,
    oz_path: Option<String>,
    setup_command: Option<String>,
    teardown_command: Option<String>,
    #[serde(default)]
    environment: Vec<RawEnvEntry>,
    #[serde(default, deserialize_with = "scalar_text")]
    kill_grace_period: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The effective `backend.direct` section.
#[derive(Serialize)]
struct Effective<'a> {
    workspace_root: &'a Path,
    target_dir: Option<&'a Path>,
    oz_path: Option<&'a Path>,
    setup_command: Option<&'a str>,
    teardown_command: Option<&'a str>,
    environment: Vec<RedactedEnv<'a>>,
    kill_grace_period: String,
}

impl BackendSection for DirectConfig {
    const NAME: &'static str = "direct";
    const CLI_FLAGS: &'static [&'static str] = &["--target-dir"];
    type Raw = RawDirect;

    fn unknown_keys(raw: &RawDirect) -> Vec<String> {
        unknown_with_env(&raw.unknown, &raw.environment)
    }

    fn parse(raw: RawDirect, context: &Context<'_>, findings: &mut Findings) -> Self {
        let mut path = |field: &str, text: Option<String>| -> Option<PathBuf> {
            let text = text.filter(|t| !t.is_empty())?;
            absolute(text.as_ref())
                .map_err(|reason| findings.problem(format!("invalid {field} {text:?}: {reason}")))
                .ok()
        };
        let workspace_root = path(
            "backend.direct.workspace_root",
            Some(
                raw.workspace_root
                    .clone()
                    .unwrap_or_else(|| DEFAULT_WORKSPACE_ROOT.to_owned()),
            ),
        );
        let target_dir = match context.target_dir {
            Some(from_cli) => path("--target-dir", Some(from_cli.display().to_string())),
            None => path("backend.direct.target_dir", raw.target_dir.clone()),
        };
        let oz_path = match raw.oz_path.clone().filter(|p| !p.is_empty()) {
            Some(text) if text.contains('/') => path("backend.direct.oz_path", Some(text)),
            other => other.map(PathBuf::from),
        };
        let defaults = DirectConfig::default();
        DirectConfig {
            workspace_root: workspace_root.unwrap_or(defaults.workspace_root),
            target_dir,
            oz_path,
            setup_command: raw.setup_command.clone().filter(|c| !c.trim().is_empty()),
            teardown_command: raw
                .teardown_command
                .clone()
                .filter(|c| !c.trim().is_empty()),
            environment: merged_env("backend.direct", &raw.environment, context, findings),
            cleanup: context.cleanup,
            kill_grace: grace(
                "backend.direct.kill_grace_period",
                raw.kill_grace_period.as_deref(),
                defaults.kill_grace,
                findings,
            ),
            // Set at start-up, once the state directory is open.
            instances: None,
        }
    }

    fn effective(&self) -> serde_norway::Value {
        to_yaml(&Effective {
            workspace_root: &self.workspace_root,
            target_dir: self.target_dir.as_deref(),
            oz_path: self.oz_path.as_deref(),
            setup_command: self.setup_command.as_deref(),
            teardown_command: self.teardown_command.as_deref(),
            environment: redacted(&self.environment),
            kill_grace_period: format_go_duration(self.kill_grace),
        })
    }
}

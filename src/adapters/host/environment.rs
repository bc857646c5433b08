//! The environments of the Direct backend's processes, as the Go worker builds them:
//! the task env, and what the setup command, the agent and the teardown command each see.
//!
//! The worker's own environment is a snapshot ([`HostEnv`]) that `main.rs` takes once and the
//! app hands to the backend, so tests can supply their own and the adapter never reads the
//! process environment.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use crate::domain::env::EnvList;
use crate::domain::spec::TaskSpec;

/// `OZ_WORKER_BACKEND` for this backend.
pub const BACKEND_NAME: &str = "direct";
/// The only host variables the agent inherits.
pub const AGENT_HOST_VARS: [&str; 3] = ["HOME", "TMPDIR", "PATH"];
/// The worker's API key variable: never given to the agent, always redacted.
pub const API_KEY_VAR: &str = "WARP_API_KEY";

/// A snapshot of the worker's environment. Its `Debug` shows the names only: the values include
/// the worker's API key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HostEnv(Vec<(OsString, OsString)>);

impl std::fmt::Debug for HostEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HostEnv")
            .field(&self.0.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish()
    }
}

impl HostEnv {
    /// An explicit environment (tests, or a sanitised one).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&OsStr> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_os_str())
    }

    /// The value of `key` as UTF-8 text, if set and valid UTF-8 (as `std::env::var(key).ok()`).
    pub fn var(&self, key: &str) -> Option<String> {
        self.get(key).and_then(OsStr::to_str).map(str::to_owned)
    }

    /// All pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.0.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }
}

/// Task env = spec env + operator env (last wins), then the harness variable, then
/// `GIT_CONFIG_GLOBAL` (#72, #77).
pub(crate) fn task_env(
    spec: &TaskSpec,
    operator: &EnvList,
    workspace: &Path,
    git_config: &Path,
) -> EnvList {
    let mut env = spec.env.clone();
    env.overlay(operator);
    let harness = spec
        .task
        .agent_config
        .as_ref()
        .and_then(|c| c.trimmed_harness());
    match harness {
        Some("claude") => env.push(
            "CLAUDE_CONFIG_DIR",
            workspace.join(".claude").to_string_lossy(),
        ),
        Some("codex") => env.push("CODEX_HOME", workspace.join(".codex").to_string_lossy()),
        _ => {}
    }
    env.push("GIT_CONFIG_GLOBAL", git_config.to_string_lossy());
    env.dedup_last_wins()
}

/// Merges the pairs the setup command wrote over the task env, then re-applies
/// `GIT_CONFIG_GLOBAL` so setup cannot override it (#77).
pub(crate) fn merge_env_file(
    task: &EnvList,
    from_file: Vec<(String, String)>,
    git_config: &Path,
) -> EnvList {
    let mut env = task.clone();
    env.overlay(&from_file.into_iter().collect());
    env.push("GIT_CONFIG_GLOBAL", git_config.to_string_lossy());
    env.dedup_last_wins()
}

/// The `OZ_*` variables setup and teardown get.
pub(crate) fn oz_vars(task_id: &str, workspace: &Path, env_file: Option<&Path>) -> EnvList {
    let mut env = EnvList::new();
    env.push("OZ_WORKSPACE_ROOT", workspace.to_string_lossy());
    env.push("OZ_WORKER_BACKEND", BACKEND_NAME);
    env.push("OZ_RUN_ID", task_id);
    if let Some(file) = env_file {
        env.push("OZ_ENVIRONMENT_FILE", file.to_string_lossy());
    }
    env
}

/// Setup: the FULL host env, overlaid with the task env and the `OZ_*` variables.
pub(crate) fn setup_env(host: &HostEnv, task: &EnvList, oz: &EnvList) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = host.0.clone();
    env.extend(pairs(task));
    env.extend(pairs(oz));
    env
}

/// Teardown: the full host env plus only `OZ_WORKSPACE_ROOT`, `GIT_CONFIG_GLOBAL`,
/// `OZ_WORKER_BACKEND` and `OZ_RUN_ID` (no task env, no env file).
pub(crate) fn teardown_env(
    host: &HostEnv,
    oz: &EnvList,
    git_config: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = host.0.clone();
    env.extend(pairs(oz));
    env.push(("GIT_CONFIG_GLOBAL".into(), git_config.into()));
    env
}

/// The agent: only `HOME`, `TMPDIR` and `PATH` from the host, overlaid with the task env. The
/// worker's credentials (`WARP_API_KEY`) and the `OZ_*` variables never reach it.
pub(crate) fn agent_env(host: &HostEnv, task: &EnvList) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = AGENT_HOST_VARS
        .iter()
        .filter_map(|key| host.get(key).map(|v| (OsString::from(key), v.to_owned())))
        .collect();
    env.extend(pairs(task));
    env
}

fn pairs(env: &EnvList) -> impl Iterator<Item = (OsString, OsString)> + '_ {
    env.iter().map(|(k, v)| (k.into(), v.into()))
}

/// Finds an executable `name` in `path` (a `PATH` value).
pub(crate) fn find_in_path(name: &str, path: Option<&OsStr>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

//! Configuration of the Docker backend: the raw `backend.docker` YAML block, its validation
//! (merged with `-v`, `-e` and `--pull-policy`) into [`DockerConfig`], and its effective-config
//! section.

use std::time::Duration;

use crate::adapters::state::Instances;

use serde::{Deserialize, Serialize};

use crate::adapters::backend_config::checks::check_volume;
use crate::adapters::backend_config::duration::format_go_duration;
use crate::adapters::backend_config::{
    BackendSection, Context, Findings, RawEnvEntry, RedactedEnv, Unknown, grace, merged_env,
    redacted, scalar_text, to_yaml, unknown_with_env,
};
use crate::domain::env::EnvList;

/// When to pull a task's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull before every task (the reference's behaviour).
    #[default]
    Always,
    /// Pull only when the image is not present locally.
    IfNotPresent,
    /// Never pull; a missing image fails the task.
    Never,
}

impl PullPolicy {
    /// Parses `always`, `if-not-present` or `never`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "always" => Some(Self::Always),
            "if-not-present" => Some(Self::IfNotPresent),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::IfNotPresent => "if-not-present",
            Self::Never => "never",
        }
    }
}

/// The Docker backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// This worker's id (for labels).
    pub worker_id: String,
    /// This process's instance in the state directory: its id goes on every label, and the
    /// start-up sweep touches only containers of instances it reports dead. `None` (tests,
    /// benches): containers are labelled with an empty instance id and the sweep removes only
    /// containers whose instance label is empty.
    pub instances: Option<Instances>,
    /// Bind specs: YAML `volumes` then `-v`, validated as `HOST:CONTAINER[:MODE]`.
    pub volumes: Vec<String>,
    /// Operator environment: YAML `environment` then `-e` (CLI wins), de-duplicated.
    pub environment: EnvList,
    /// False under `--no-cleanup` / `cleanup: false`.
    pub cleanup: bool,
    /// YAML `pull_policy` / `--pull-policy`.
    pub pull_policy: PullPolicy,
    /// SIGTERM → kill grace period when a task is cancelled (`stop_grace_period`, default 10 s).
    pub stop_grace: Duration,
    /// The engine endpoint: `DOCKER_HOST` when set and not empty, else
    /// [`DEFAULT_DOCKER_HOST`](super::DEFAULT_DOCKER_HOST) (see [`super::docker_host`]).
    pub docker_host: String,
    /// The Docker client config directory for registry credentials: `DOCKER_CONFIG`, else
    /// `$HOME/.docker`; `None` pulls anonymously (see [`super::client_config_dir`]).
    pub client_config_dir: Option<std::path::PathBuf>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            worker_id: String::new(),
            instances: None,
            volumes: Vec::new(),
            environment: EnvList::new(),
            cleanup: true,
            pull_policy: PullPolicy::Always,
            stop_grace: Duration::from_secs(10),
            docker_host: super::DEFAULT_DOCKER_HOST.to_owned(),
            client_config_dir: None,
        }
    }
}

/// `backend.docker`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawDocker {
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    environment: Vec<RawEnvEntry>,
    pull_policy: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    stop_grace_period: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The effective `backend.docker` section.
#[derive(Serialize)]
struct Effective<'a> {
    volumes: &'a [String],
    environment: Vec<RedactedEnv<'a>>,
    pull_policy: &'a str,
    stop_grace_period: String,
}

impl BackendSection for DockerConfig {
    const NAME: &'static str = "docker";
    const CLI_FLAGS: &'static [&'static str] = &["--volumes", "--pull-policy"];
    type Raw = RawDocker;

    fn unknown_keys(raw: &RawDocker) -> Vec<String> {
        unknown_with_env(&raw.unknown, &raw.environment)
    }

    fn parse(raw: RawDocker, context: &Context<'_>, findings: &mut Findings) -> Self {
        for (index, spec) in raw.volumes.iter().enumerate() {
            if let Err(reason) = check_volume(spec) {
                findings.problem(format!(
                    "invalid backend.docker.volumes[{index}] {spec:?}: {reason}"
                ));
            }
        }
        for (index, spec) in context.volumes.iter().enumerate() {
            if spec.contains(',') {
                continue; // already reported with the other CLI checks
            }
            if let Err(reason) = check_volume(spec) {
                findings.problem(format!(
                    "invalid --volumes value #{} {spec:?}: {reason}",
                    index + 1
                ));
            }
        }
        let pull_policy = match (context.pull_policy, raw.pull_policy.as_deref()) {
            (Some(from_cli), _) => PullPolicy::parse(from_cli).unwrap_or_default(),
            (None, Some(text)) => PullPolicy::parse(text).unwrap_or_else(|| {
                findings.problem(format!(
                    "invalid backend.docker.pull_policy {text:?}: expected always, \
                     if-not-present or never"
                ));
                PullPolicy::default()
            }),
            (None, None) => PullPolicy::default(),
        };
        let defaults = DockerConfig::default();
        DockerConfig {
            worker_id: context.worker_id.clone(),
            // Set at start-up, once the state directory is open.
            instances: None,
            volumes: raw.volumes.iter().chain(context.volumes).cloned().collect(),
            environment: merged_env("backend.docker", &raw.environment, context, findings),
            cleanup: context.cleanup,
            pull_policy,
            docker_host: super::docker_host(context.env),
            client_config_dir: super::client_config_dir(context.env),
            stop_grace: grace(
                "backend.docker.stop_grace_period",
                raw.stop_grace_period.as_deref(),
                defaults.stop_grace,
                findings,
            ),
        }
    }

    fn effective(&self) -> serde_norway::Value {
        to_yaml(&Effective {
            volumes: &self.volumes,
            environment: redacted(&self.environment),
            pull_policy: self.pull_policy.as_str(),
            stop_grace_period: format_go_duration(self.stop_grace),
        })
    }
}

//! Configuration of the Docker backend (`backend.docker` in YAML), already validated.

use std::time::Duration;

use crate::adapters::state::Instances;
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
        }
    }
}

//! Configuration of the Kubernetes backend (`backend.kubernetes` in YAML), already validated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::env::EnvList;

/// Default `namespace`.
pub(super) const DEFAULT_NAMESPACE: &str = "default";
/// Default `preflight_image`.
pub(super) const DEFAULT_PREFLIGHT_IMAGE: &str = "busybox:1.36";
/// Default `unschedulable_timeout`.
pub(super) const DEFAULT_UNSCHEDULABLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `active_deadline_seconds` when the config sets none (8 h, as the reference's chart).
pub const DEFAULT_ACTIVE_DEADLINE_SECONDS: i64 = 28_800;
/// Default `ttl_seconds_after_finished` when cleanup is on.
pub const DEFAULT_TTL_SECONDS_AFTER_FINISHED: i32 = 86_400;

/// `image_pull_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImagePullPolicy {
    /// `Always`.
    Always,
    /// `Never`.
    Never,
    /// `IfNotPresent` (default).
    #[default]
    IfNotPresent,
}

impl ImagePullPolicy {
    /// Parses the exact Kubernetes spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "Always" => Some(Self::Always),
            "Never" => Some(Self::Never),
            "IfNotPresent" => Some(Self::IfNotPresent),
            _ => None,
        }
    }

    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::Never => "Never",
            Self::IfNotPresent => "IfNotPresent",
        }
    }
}

/// The Kubernetes backend's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    /// This worker's id (for labels).
    pub worker_id: String,
    /// Namespace for Jobs (default `default`).
    pub namespace: String,
    /// Explicit kubeconfig; else in-cluster; else default loading rules.
    pub kubeconfig: Option<PathBuf>,
    /// Image when the server sends none.
    pub default_image: Option<String>,
    /// Pull policy for task containers.
    pub image_pull_policy: ImagePullPolicy,
    /// Mount sidecars as image volumes instead of copying them with init containers.
    pub use_image_volumes: bool,
    /// Image of the start-up preflight Job.
    pub preflight_image: String,
    /// Replaces the server's sidecar image when it sent one.
    pub sidecar_image: Option<String>,
    /// Harness → coding CLI sidecar image.
    pub coding_cli_sidecars: BTreeMap<String, String>,
    /// Setup command, run in an init container.
    pub setup_command: Option<String>,
    /// Teardown command.
    pub teardown_command: Option<String>,
    /// Extra labels for Jobs and Pods.
    pub extra_labels: BTreeMap<String, String>,
    /// Extra annotations for Jobs and Pods.
    pub extra_annotations: BTreeMap<String, String>,
    /// Job `activeDeadlineSeconds` (default 8 h).
    pub active_deadline_seconds: Option<i64>,
    /// Job `ttlSecondsAfterFinished` (default 86400 when cleanup is on, unset when off).
    pub ttl_seconds_after_finished: Option<i32>,
    /// `sizeLimit` of the workspace `emptyDir`, a Kubernetes quantity.
    pub workspace_size_limit: Option<String>,
    /// Fail fast when a pod stays unschedulable this long; `None` disables.
    pub unschedulable_timeout: Option<Duration>,
    /// A raw PodSpec merged under the worker's required fields (keys keep their camelCase).
    pub pod_template: Option<serde_json::Value>,
    /// Raw ResourceRequirements for the preflight Job's containers.
    pub preflight_resources: Option<serde_json::Value>,
    /// `-e` entries: the task env for the task and setup containers.
    pub environment: EnvList,
    /// False under `--no-cleanup` / `cleanup: false`.
    pub cleanup: bool,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            worker_id: String::new(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            kubeconfig: None,
            default_image: None,
            image_pull_policy: ImagePullPolicy::IfNotPresent,
            use_image_volumes: false,
            preflight_image: DEFAULT_PREFLIGHT_IMAGE.to_owned(),
            sidecar_image: None,
            coding_cli_sidecars: BTreeMap::new(),
            setup_command: None,
            teardown_command: None,
            extra_labels: BTreeMap::new(),
            extra_annotations: BTreeMap::new(),
            active_deadline_seconds: Some(DEFAULT_ACTIVE_DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(DEFAULT_TTL_SECONDS_AFTER_FINISHED),
            workspace_size_limit: None,
            unschedulable_timeout: Some(DEFAULT_UNSCHEDULABLE_TIMEOUT),
            pod_template: None,
            preflight_resources: None,
            environment: EnvList::new(),
            cleanup: true,
        }
    }
}

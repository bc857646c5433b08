//! Configuration of the Kubernetes backend: the raw `backend.kubernetes` YAML block (raw
//! `pod_template` and `preflight_resources` sub-trees kept verbatim, camelCase keys intact), its
//! validation (merged with `-e`) into [`KubernetesConfig`], its retired keys, and its
//! effective-config section.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::adapters::backend_config::checks::{
    absolute, check_quantity, expand_tilde, has_whitespace,
};
use crate::adapters::backend_config::duration::{format_go_duration, parse_go_duration};
use crate::adapters::backend_config::{
    BackendSection, Context, Findings, RedactedEnv, Unknown, bad_duration, redacted, scalar_text,
    text_map, to_yaml,
};
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
    /// `leaseDurationSeconds` of this worker process's Lease (default 30 s, whole seconds, at
    /// least 1 s): how long after its last renewal another instance may adopt its Jobs.
    pub lease_duration: Duration,
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
            lease_duration: super::lease::DEFAULT_LEASE_DURATION,
            pod_template: None,
            preflight_resources: None,
            environment: EnvList::new(),
            cleanup: true,
        }
    }
}

/// `backend.kubernetes`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawKubernetes {
    namespace: Option<String>,
    kubeconfig: Option<String>,
    default_image: Option<String>,
    image_pull_policy: Option<String>,
    use_image_volumes: Option<bool>,
    preflight_image: Option<String>,
    sidecar_image: Option<String>,
    #[serde(default, deserialize_with = "text_map")]
    coding_cli_sidecars: BTreeMap<String, String>,
    setup_command: Option<String>,
    teardown_command: Option<String>,
    #[serde(default, deserialize_with = "text_map")]
    extra_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "text_map")]
    extra_annotations: BTreeMap<String, String>,
    active_deadline_seconds: Option<i64>,
    ttl_seconds_after_finished: Option<i64>,
    #[serde(default, deserialize_with = "scalar_text")]
    workspace_size_limit: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    unschedulable_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    lease_duration: Option<String>,
    pod_template: Option<serde_json::Value>,
    preflight_resources: Option<serde_json::Value>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Keys removed by the Go worker's newer versions, with where each now belongs.
const RETIRED_KEYS: [(&str, &str); 7] = [
    ("image_pull_secret", "pod_template.imagePullSecrets"),
    ("service_account", "pod_template.serviceAccountName"),
    ("node_selector", "pod_template.nodeSelector"),
    ("tolerations", "pod_template.tolerations"),
    (
        "resources",
        "the task container's resources in pod_template.containers",
    ),
    (
        "termination_grace_period_seconds",
        "pod_template.terminationGracePeriodSeconds",
    ),
    (
        "environment",
        "-e flags or the task container's env in pod_template.containers",
    ),
];

/// The effective `backend.kubernetes` section.
#[derive(Serialize)]
struct Effective<'a> {
    namespace: &'a str,
    kubeconfig: Option<&'a std::path::Path>,
    default_image: Option<&'a str>,
    image_pull_policy: &'a str,
    use_image_volumes: bool,
    preflight_image: &'a str,
    sidecar_image: Option<&'a str>,
    coding_cli_sidecars: &'a BTreeMap<String, String>,
    setup_command: Option<&'a str>,
    teardown_command: Option<&'a str>,
    extra_labels: &'a BTreeMap<String, String>,
    extra_annotations: &'a BTreeMap<String, String>,
    active_deadline_seconds: Option<i64>,
    ttl_seconds_after_finished: Option<i32>,
    workspace_size_limit: Option<&'a str>,
    unschedulable_timeout: Option<String>,
    lease_duration: String,
    pod_template: Option<&'a serde_json::Value>,
    preflight_resources: Option<&'a serde_json::Value>,
    /// From `-e` (the file has no Kubernetes environment list).
    environment: Vec<RedactedEnv<'a>>,
}

impl BackendSection for KubernetesConfig {
    const NAME: &'static str = "kubernetes";
    const CLI_FLAGS: &'static [&'static str] = &[];
    type Raw = RawKubernetes;

    fn unknown_keys(raw: &RawKubernetes) -> Vec<String> {
        raw.unknown.keys().cloned().collect()
    }

    fn retired_key(key: &str) -> Option<String> {
        RETIRED_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, home)| {
                format!("set it in {home} (backend.kubernetes.pod_template takes a raw PodSpec)")
            })
    }

    fn parse(raw: RawKubernetes, context: &Context<'_>, findings: &mut Findings) -> Self {
        let defaults = KubernetesConfig::default();
        let mut image = |field: &str, value: Option<String>| -> Option<String> {
            let value = value.filter(|v| !v.is_empty())?;
            if has_whitespace(&value) {
                findings.problem(format!(
                    "invalid backend.kubernetes.{field} {value:?}: must not contain whitespace"
                ));
            }
            Some(value)
        };
        let default_image = image("default_image", raw.default_image);
        let preflight_image = image("preflight_image", raw.preflight_image);
        let sidecar_image = image("sidecar_image", raw.sidecar_image);
        for (harness, sidecar) in &raw.coding_cli_sidecars {
            image(
                &format!("coding_cli_sidecars.{harness}"),
                Some(sidecar.clone()),
            );
        }
        let kubeconfig = raw.kubeconfig.filter(|k| !k.is_empty()).and_then(|text| {
            let expanded = expand_tilde(&text, (context.env)("HOME").as_deref());
            absolute(&expanded)
                .map_err(|reason| {
                    findings.problem(format!(
                        "invalid backend.kubernetes.kubeconfig {text:?}: {reason}"
                    ))
                })
                .ok()
        });
        let image_pull_policy = match raw.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
            None => ImagePullPolicy::default(),
            Some(text) => ImagePullPolicy::parse(text).unwrap_or_else(|| {
                findings.problem(format!(
                    "invalid backend.kubernetes.image_pull_policy {text:?}: expected Always, Never \
                     or IfNotPresent"
                ));
                ImagePullPolicy::default()
            }),
        };
        let active_deadline_seconds = match raw.active_deadline_seconds {
            None => Some(DEFAULT_ACTIVE_DEADLINE_SECONDS),
            Some(0) => None,
            Some(seconds) if seconds < 0 => {
                findings.problem(format!(
                    "invalid backend.kubernetes.active_deadline_seconds {seconds}: expected a \
                     positive number of seconds, or 0 for no deadline"
                ));
                None
            }
            Some(seconds) => Some(seconds),
        };
        let ttl_seconds_after_finished = match raw.ttl_seconds_after_finished {
            None => context
                .cleanup
                .then_some(DEFAULT_TTL_SECONDS_AFTER_FINISHED),
            Some(seconds) => i32::try_from(seconds).ok().filter(|s| *s >= 0).or_else(|| {
                findings.problem(format!(
                    "invalid backend.kubernetes.ttl_seconds_after_finished {seconds}: expected 0 to {}",
                    i32::MAX
                ));
                None
            }),
        };
        let workspace_size_limit = raw.workspace_size_limit.filter(|q| !q.is_empty());
        if let Some(quantity) = &workspace_size_limit
            && let Err(reason) = check_quantity(quantity)
        {
            findings.problem(format!(
                "invalid backend.kubernetes.workspace_size_limit {quantity:?}: {reason}"
            ));
        }
        let unschedulable_timeout = match raw.unschedulable_timeout.as_deref() {
            None => defaults.unschedulable_timeout,
            Some(text) => match parse_go_duration(text) {
                Ok(parsed) if parsed.is_non_positive() => None,
                Ok(parsed) => Some(parsed.magnitude),
                Err(_) => {
                    findings.problem(bad_duration(
                        "backend.kubernetes.unschedulable_timeout",
                        text,
                    ));
                    None
                }
            },
        };
        let lease_duration = match raw.lease_duration.as_deref() {
            None => defaults.lease_duration,
            Some(text) => match parse_go_duration(text) {
                Ok(parsed)
                    if !parsed.is_non_positive()
                        && parsed.magnitude >= Duration::from_secs(1)
                        && parsed.magnitude.subsec_nanos() == 0 =>
                {
                    parsed.magnitude
                }
                Ok(_) => {
                    findings.problem(format!(
                        "invalid backend.kubernetes.lease_duration {text:?}: expected whole \
                         seconds, at least 1s (e.g. 30s)"
                    ));
                    defaults.lease_duration
                }
                Err(_) => {
                    findings.problem(bad_duration("backend.kubernetes.lease_duration", text));
                    defaults.lease_duration
                }
            },
        };
        let mut raw_tree = |field: &str, value: Option<serde_json::Value>| {
            let value = value.filter(|v| !v.is_null())?;
            if !value.is_object() {
                findings.problem(format!(
                    "invalid backend.kubernetes.{field}: expected a mapping with Kubernetes \
                     (camelCase) keys"
                ));
            }
            Some(value)
        };
        let pod_template = raw_tree("pod_template", raw.pod_template);
        let preflight_resources = raw_tree("preflight_resources", raw.preflight_resources);
        KubernetesConfig {
            worker_id: context.worker_id.clone(),
            namespace: raw
                .namespace
                .filter(|n| !n.is_empty())
                .unwrap_or(defaults.namespace),
            kubeconfig,
            default_image,
            image_pull_policy,
            use_image_volumes: raw.use_image_volumes.unwrap_or(false),
            preflight_image: preflight_image.unwrap_or(defaults.preflight_image),
            sidecar_image,
            coding_cli_sidecars: raw.coding_cli_sidecars,
            setup_command: raw.setup_command.filter(|c| !c.trim().is_empty()),
            teardown_command: raw.teardown_command.filter(|c| !c.trim().is_empty()),
            extra_labels: raw.extra_labels,
            extra_annotations: raw.extra_annotations,
            active_deadline_seconds,
            ttl_seconds_after_finished,
            workspace_size_limit,
            unschedulable_timeout,
            lease_duration,
            pod_template,
            preflight_resources,
            environment: context.cli_env.dedup_last_wins(),
            cleanup: context.cleanup,
        }
    }

    fn effective(&self) -> serde_norway::Value {
        let k8s = self;
        to_yaml(&Effective {
            namespace: &k8s.namespace,
            kubeconfig: k8s.kubeconfig.as_deref(),
            default_image: k8s.default_image.as_deref(),
            image_pull_policy: k8s.image_pull_policy.as_str(),
            use_image_volumes: k8s.use_image_volumes,
            preflight_image: &k8s.preflight_image,
            sidecar_image: k8s.sidecar_image.as_deref(),
            coding_cli_sidecars: &k8s.coding_cli_sidecars,
            setup_command: k8s.setup_command.as_deref(),
            teardown_command: k8s.teardown_command.as_deref(),
            extra_labels: &k8s.extra_labels,
            extra_annotations: &k8s.extra_annotations,
            active_deadline_seconds: k8s.active_deadline_seconds,
            ttl_seconds_after_finished: k8s.ttl_seconds_after_finished,
            workspace_size_limit: k8s.workspace_size_limit.as_deref(),
            unschedulable_timeout: k8s.unschedulable_timeout.map(format_go_duration),
            lease_duration: format_go_duration(k8s.lease_duration),
            pod_template: k8s.pod_template.as_ref(),
            preflight_resources: k8s.preflight_resources.as_ref(),
            environment: redacted(&k8s.environment),
        })
    }
}

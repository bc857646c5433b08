//! The raw YAML config file (spec §4.4): serde structs that mirror the file exactly, strict
//! about keys. Each struct captures keys it does not know in `unknown` (instead of
//! `deny_unknown_fields`, which stops at the first), so every unknown key is reported at once,
//! with its path, the file and, for block-style YAML, its line. The raw sub-trees
//! `pod_template` and `preflight_resources` are kept verbatim (camelCase keys intact).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer};

/// Unknown keys of one mapping, with their (ignored) values.
type Unknown = BTreeMap<String, serde_norway::Value>;

/// The top level of the file.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawFile {
    pub worker_id: Option<String>,
    pub cleanup: Option<bool>,
    pub max_concurrent_tasks: Option<i64>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub idle_on_complete: Option<String>,
    pub health_listen: Option<String>,
    /// `log_level`: used when `--log-level` is absent.
    pub log_level: Option<String>,
    /// `debug_log_capture`: newer Go workers' block, kept raw and checked in validation.
    pub debug_log_capture: Option<serde_norway::Value>,
    pub state_dir: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub drain_timeout: Option<String>,
    pub backend: Option<RawBackends>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `backend:`. Each block is `None` when absent, `Some(None)` when present but null.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawBackends {
    #[serde(default, deserialize_with = "present")]
    pub docker: Option<Option<RawDocker>>,
    #[serde(default, deserialize_with = "present")]
    pub direct: Option<Option<RawDirect>>,
    #[serde(default, deserialize_with = "present")]
    pub kubernetes: Option<Option<RawKubernetes>>,
    #[serde(default, deserialize_with = "present")]
    pub command: Option<Option<RawCommand>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `backend.docker`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawDocker {
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub environment: Vec<RawEnvEntry>,
    pub pull_policy: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub stop_grace_period: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `backend.direct`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawDirect {
    pub workspace_root: Option<String>,
    pub target_dir: Option<String>,
    pub oz_path: Option<String>,
    pub setup_command: Option<String>,
    pub teardown_command: Option<String>,
    #[serde(default)]
    pub environment: Vec<RawEnvEntry>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub kill_grace_period: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `backend.command`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawCommand {
    pub dispatch_command: Option<String>,
    pub cancel_command: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub dispatch_timeout: Option<String>,
    #[serde(default)]
    pub environment: Vec<RawEnvEntry>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `backend.kubernetes`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawKubernetes {
    pub namespace: Option<String>,
    pub kubeconfig: Option<String>,
    pub default_image: Option<String>,
    pub image_pull_policy: Option<String>,
    pub use_image_volumes: Option<bool>,
    pub preflight_image: Option<String>,
    pub sidecar_image: Option<String>,
    #[serde(default, deserialize_with = "text_map")]
    pub coding_cli_sidecars: BTreeMap<String, String>,
    pub setup_command: Option<String>,
    pub teardown_command: Option<String>,
    #[serde(default, deserialize_with = "text_map")]
    pub extra_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "text_map")]
    pub extra_annotations: BTreeMap<String, String>,
    pub active_deadline_seconds: Option<i64>,
    pub ttl_seconds_after_finished: Option<i64>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub workspace_size_limit: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub unschedulable_timeout: Option<String>,
    pub pod_template: Option<serde_json::Value>,
    pub preflight_resources: Option<serde_json::Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One `environment` entry: `{name, value?}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawEnvEntry {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub value: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Kubernetes keys removed by the reference, with where each now belongs.
pub(crate) const LEGACY_KUBERNETES_KEYS: [(&str, &str); 7] = [
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

/// Parses the file's text. Hard errors (YAML syntax, a wrong type, an empty document) come back
/// as one message; unknown keys come back as a list so that validation can report them with
/// everything else.
pub(crate) fn parse(path: &Path, text: &str) -> Result<(RawFile, Vec<String>), String> {
    let shown = path.display();
    let document: serde_norway::Value = serde_norway::from_str(text)
        .map_err(|err| format!("failed to parse config file {shown}: {err}"))?;
    match document {
        serde_norway::Value::Null => {
            return Err(format!(
                "failed to parse config file {shown}: the file is empty (or only comments); \
                 expected a mapping with keys such as worker_id and backend"
            ));
        }
        serde_norway::Value::Mapping(_) => {}
        _ => {
            return Err(format!(
                "failed to parse config file {shown}: expected a mapping at the top level"
            ));
        }
    }
    let raw: RawFile = serde_norway::from_str(text)
        .map_err(|err| format!("failed to parse config file {shown}: {err}"))?;
    let problems = unknown_keys(&raw)
        .into_iter()
        .map(|(parent, key)| {
            let full = if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            };
            let at = match locate_key(text, &full) {
                Some(line) => format!("{shown}:{line}"),
                None => shown.to_string(),
            };
            match legacy_hint(&parent, &key) {
                Some(home) => format!(
                    "{at}: {full} is no longer supported: set it in {home} \
                     (backend.kubernetes.pod_template takes a raw PodSpec)"
                ),
                None => format!("{at}: unknown key {full:?}"),
            }
        })
        .collect();
    Ok((raw, problems))
}

/// Where a legacy Kubernetes key now belongs, when `key` is one under `backend.kubernetes`.
fn legacy_hint(parent: &str, key: &str) -> Option<&'static str> {
    (parent == "backend.kubernetes")
        .then(|| LEGACY_KUBERNETES_KEYS.iter().find(|(k, _)| *k == key))
        .flatten()
        .map(|(_, home)| *home)
}

/// Every unknown key as `(parent path, key)`, in file-structure order.
fn unknown_keys(raw: &RawFile) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |parent: &str, unknown: &Unknown| {
        out.extend(unknown.keys().map(|k| (parent.to_owned(), k.clone())));
    };
    add("", &raw.unknown);
    let Some(backends) = &raw.backend else {
        return out;
    };
    add("backend", &backends.unknown);
    let env_keys = |prefix: &str, entries: &[RawEnvEntry], add: &mut dyn FnMut(&str, &Unknown)| {
        for (index, entry) in entries.iter().enumerate() {
            add(&format!("{prefix}.environment[{index}]"), &entry.unknown);
        }
    };
    if let Some(Some(docker)) = &backends.docker {
        add("backend.docker", &docker.unknown);
        env_keys("backend.docker", &docker.environment, &mut add);
    }
    if let Some(Some(direct)) = &backends.direct {
        add("backend.direct", &direct.unknown);
        env_keys("backend.direct", &direct.environment, &mut add);
    }
    if let Some(Some(kubernetes)) = &backends.kubernetes {
        add("backend.kubernetes", &kubernetes.unknown);
    }
    if let Some(Some(command)) = &backends.command {
        add("backend.command", &command.unknown);
        env_keys("backend.command", &command.environment, &mut add);
    }
    out
}

/// The 1-based line of the key at dotted `path` (list indices like `[0]` are skipped), for
/// block-style YAML. `None` when it cannot be told (flow style, odd layout).
pub(crate) fn locate_key(text: &str, path: &str) -> Option<usize> {
    let wanted: Vec<&str> = path
        .split('.')
        .map(|segment| segment.split('[').next().unwrap_or(segment))
        .collect();
    let lines: Vec<Option<(usize, &str)>> = text.lines().map(key_of_line).collect();
    'candidates: for (index, line) in lines.iter().enumerate() {
        let Some((mut indent, key)) = *line else {
            continue;
        };
        if Some(&key) != wanted.last() {
            continue;
        }
        // Walk up through ancestors: each is the nearest earlier line with a smaller key indent.
        let mut depth = wanted.len() - 1;
        for earlier in lines[..index].iter().rev() {
            let Some((parent_indent, parent_key)) = *earlier else {
                continue;
            };
            if parent_indent >= indent {
                continue;
            }
            if depth == 0 || wanted[depth - 1] != parent_key {
                continue 'candidates;
            }
            depth -= 1;
            indent = parent_indent;
        }
        if depth == 0 {
            return Some(index + 1);
        }
    }
    None
}

/// The key on a block-YAML line and the column it starts at (after any `- ` list markers).
fn key_of_line(line: &str) -> Option<(usize, &str)> {
    let mut column = line.len() - line.trim_start_matches(' ').len();
    let mut rest = &line[column..];
    while let Some(after) = rest.strip_prefix("- ") {
        let trimmed = after.trim_start_matches(' ');
        column += rest.len() - trimmed.len();
        rest = trimmed;
    }
    if rest.starts_with('#') {
        return None;
    }
    let (key, _) = rest.split_once(':')?;
    let key = key.trim_end().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty() && !key.contains([' ', '{', '['])).then_some((column, key))
}

/// `Option<Option<T>>` that tells a null value (`Some(None)`) from an absent key (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A scalar read as raw text, so `10m`, `0` and `30` all work unquoted.
fn scalar_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let value = Option::<serde_norway::Value>::deserialize(deserializer)?;
    value.map(scalar_to_text::<D::Error>).transpose()
}

/// A string-to-string map whose values may be any scalar (`true`, `3`), read as text.
fn text_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, serde_norway::Value>>::deserialize(deserializer)?;
    map.unwrap_or_default()
        .into_iter()
        .map(|(key, value)| Ok((key, scalar_to_text::<D::Error>(value)?)))
        .collect()
}

fn scalar_to_text<E: serde::de::Error>(value: serde_norway::Value) -> Result<String, E> {
    match value {
        serde_norway::Value::String(text) => Ok(text),
        serde_norway::Value::Number(number) => Ok(number.to_string()),
        serde_norway::Value::Bool(flag) => Ok(flag.to_string()),
        _ => Err(E::custom("expected a scalar (string, number or boolean)")),
    }
}

//! Backend selection (CLI `--backend`, else the first block in the file in the order direct,
//! kubernetes, command, docker, else docker) and the construction of each adapter's validated
//! section from the raw file block plus the CLI.

use std::path::PathBuf;
use std::time::Duration;

use super::Backend;
use super::checks::{absolute, check_quantity, check_volume, expand_tilde, has_whitespace};
use super::cli::{CliArgs, CliPullPolicy};
use super::duration::parse_go_duration;
use super::file::{RawCommand, RawDirect, RawDocker, RawEnvEntry, RawFile, RawKubernetes};
use super::validate::{EnvLookup, Findings};
use crate::adapters::command::CommandConfig;
use crate::adapters::command::DEFAULT_DISPATCH_TIMEOUT;
use crate::adapters::docker::{DockerConfig, PullPolicy};
use crate::adapters::host::DEFAULT_WORKSPACE_ROOT;
use crate::adapters::host::DirectConfig;
use crate::adapters::kubernetes::{
    DEFAULT_ACTIVE_DEADLINE_SECONDS, DEFAULT_TTL_SECONDS_AFTER_FINISHED,
};
use crate::adapters::kubernetes::{ImagePullPolicy, KubernetesConfig};
use crate::domain::env::EnvList;

/// The chosen backend with its raw file block (default when the file has none).
pub(crate) enum SelectedBackend {
    Docker(RawDocker),
    Direct(RawDirect),
    Kubernetes(Box<RawKubernetes>),
    /// `None` when the file has no `backend.command` block.
    Command(Option<RawCommand>),
}

/// What every section builder needs besides its raw block.
pub(crate) struct Context<'a> {
    pub cli: &'a CliArgs,
    pub worker_id: String,
    pub cleanup: bool,
    /// The parsed `-e` entries, in order (not yet de-duplicated).
    pub cli_env: &'a EnvList,
    pub env: EnvLookup<'a>,
}

/// Picks the backend. Reports more than one configured block, and warns about null blocks and
/// blocks that the CLI's choice makes the worker ignore.
pub(crate) fn select(
    cli_backend: Option<&str>,
    raw: &RawFile,
    file_path: Option<&str>,
    findings: &mut Findings,
) -> SelectedBackend {
    let blocks = raw.backend.clone().unwrap_or_default();
    let in_file = file_path.unwrap_or("the config file");
    let presence = [
        ("direct", blocks.direct.as_ref().map(Option::is_some)),
        (
            "kubernetes",
            blocks.kubernetes.as_ref().map(Option::is_some),
        ),
        ("command", blocks.command.as_ref().map(Option::is_some)),
        ("docker", blocks.docker.as_ref().map(Option::is_some)),
    ];
    for (name, _) in presence.iter().filter(|(_, p)| *p == Some(false)) {
        findings.warn(format!(
            "backend.{name} in {in_file} has no value, so it does not select the {name} \
             backend; write `{name}: {{}}` to select it with defaults"
        ));
    }
    let configured: Vec<&str> = presence
        .iter()
        .filter(|(_, p)| *p == Some(true))
        .map(|(name, _)| *name)
        .collect();
    if configured.len() > 1 {
        findings.problem(format!(
            "at most one backend may be configured (backend in {in_file} has: {})",
            configured.join(", ")
        ));
    }
    let name = match cli_backend.filter(|b| !b.is_empty()) {
        Some(from_cli) => {
            for other in configured.iter().filter(|b| **b != from_cli) {
                findings.warn(format!(
                    "backend.{other} in {in_file} is ignored because --backend {from_cli} was given"
                ));
            }
            from_cli
        }
        None => configured.first().copied().unwrap_or("docker"),
    };
    match name {
        "direct" => SelectedBackend::Direct(blocks.direct.flatten().unwrap_or_default()),
        "kubernetes" => {
            SelectedBackend::Kubernetes(Box::new(blocks.kubernetes.flatten().unwrap_or_default()))
        }
        "command" => SelectedBackend::Command(blocks.command.flatten()),
        _ => SelectedBackend::Docker(blocks.docker.flatten().unwrap_or_default()),
    }
}

/// Builds the selected backend's validated section.
pub(crate) fn build(
    selected: SelectedBackend,
    context: &Context<'_>,
    findings: &mut Findings,
) -> Option<Backend> {
    let before = findings.problems.len();
    let backend = match selected {
        SelectedBackend::Docker(raw) => Backend::Docker(docker(raw, context, findings)),
        SelectedBackend::Direct(raw) => Backend::Direct(direct(raw, context, findings)),
        SelectedBackend::Kubernetes(raw) => {
            Backend::Kubernetes(Box::new(kubernetes(*raw, context, findings)))
        }
        SelectedBackend::Command(raw) => Backend::Command(command(raw, context, findings)),
    };
    (findings.problems.len() == before).then_some(backend)
}

fn docker(raw: RawDocker, context: &Context<'_>, findings: &mut Findings) -> DockerConfig {
    for (index, spec) in raw.volumes.iter().enumerate() {
        if let Err(reason) = check_volume(spec) {
            findings.problem(format!(
                "invalid backend.docker.volumes[{index}] {spec:?}: {reason}"
            ));
        }
    }
    for (index, spec) in context.cli.volumes.iter().enumerate() {
        if spec.contains(',') {
            continue; // already reported
        }
        if let Err(reason) = check_volume(spec) {
            findings.problem(format!(
                "invalid --volumes value #{} {spec:?}: {reason}",
                index + 1
            ));
        }
    }
    let pull_policy = match (context.cli.pull_policy, raw.pull_policy.as_deref()) {
        (Some(from_cli), _) => match from_cli {
            CliPullPolicy::Always => PullPolicy::Always,
            CliPullPolicy::IfNotPresent => PullPolicy::IfNotPresent,
            CliPullPolicy::Never => PullPolicy::Never,
        },
        (None, Some(text)) => PullPolicy::parse(text).unwrap_or_else(|| {
            findings.problem(format!(
                "invalid backend.docker.pull_policy {text:?}: expected always, if-not-present \
                 or never"
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
        volumes: raw
            .volumes
            .iter()
            .chain(&context.cli.volumes)
            .cloned()
            .collect(),
        environment: merged_env("backend.docker", &raw.environment, context, findings),
        cleanup: context.cleanup,
        pull_policy,
        stop_grace: grace(
            "backend.docker.stop_grace_period",
            raw.stop_grace_period.as_deref(),
            defaults.stop_grace,
            findings,
        ),
    }
}

fn direct(raw: RawDirect, context: &Context<'_>, findings: &mut Findings) -> DirectConfig {
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
    let target_dir = match &context.cli.target_dir {
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

fn command(
    raw: Option<RawCommand>,
    context: &Context<'_>,
    findings: &mut Findings,
) -> CommandConfig {
    let raw = raw.unwrap_or_default();
    let dispatch_command = raw
        .dispatch_command
        .clone()
        .filter(|c| !c.trim().is_empty());
    if dispatch_command.is_none() {
        findings.problem(
            "backend.command.dispatch_command is required: the command backend needs a \
             dispatch command",
        );
    }
    let dispatch_timeout = match raw.dispatch_timeout.as_deref() {
        None => DEFAULT_DISPATCH_TIMEOUT,
        Some(text) => match parse_go_duration(text) {
            Ok(parsed) if parsed.is_non_positive() => DEFAULT_DISPATCH_TIMEOUT,
            Ok(parsed) => parsed.magnitude,
            Err(_) => {
                findings.problem(bad_duration("backend.command.dispatch_timeout", text));
                DEFAULT_DISPATCH_TIMEOUT
            }
        },
    };
    CommandConfig {
        worker_id: context.worker_id.clone(),
        server_root_url: context.cli.server_root_url.clone(),
        dispatch_command: dispatch_command.unwrap_or_default(),
        cancel_command: raw.cancel_command.clone().filter(|c| !c.trim().is_empty()),
        dispatch_timeout,
        environment: merged_env("backend.command", &raw.environment, context, findings),
    }
}

fn kubernetes(
    raw: RawKubernetes,
    context: &Context<'_>,
    findings: &mut Findings,
) -> KubernetesConfig {
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
        pod_template,
        preflight_resources,
        environment: context.cli_env.dedup_last_wins(),
        cleanup: context.cleanup,
    }
}

/// The file's `environment` list, then the CLI `-e` entries (CLI wins), de-duplicated.
fn merged_env(
    section: &str,
    entries: &[RawEnvEntry],
    context: &Context<'_>,
    findings: &mut Findings,
) -> EnvList {
    let mut list = EnvList::new();
    for (index, entry) in entries.iter().enumerate() {
        let field = format!("{section}.environment[{index}].name");
        match entry.name.as_deref() {
            None | Some("") => findings.problem(format!("{field} is required")),
            Some(name) if name.contains([' ', '\t']) => {
                findings.problem(format!(
                    "invalid {field} {name:?}: must not contain whitespace"
                ));
            }
            Some(name) => {
                let value = entry.value.clone().or_else(|| (context.env)(name));
                list.push(name, value.unwrap_or_default());
            }
        }
    }
    list.overlay(context.cli_env);
    list.dedup_last_wins()
}

/// A non-negative grace period, or the default when unset.
pub(super) fn grace(
    field: &str,
    text: Option<&str>,
    default: Duration,
    findings: &mut Findings,
) -> Duration {
    let Some(text) = text else { return default };
    match parse_go_duration(text) {
        Ok(parsed) if parsed.negative => {
            findings.problem(format!("invalid {field} {text:?}: must not be negative"));
            default
        }
        Ok(parsed) => parsed.magnitude,
        Err(_) => {
            findings.problem(bad_duration(field, text));
            default
        }
    }
}

/// The message for a value that is not a Go duration.
fn bad_duration(field: &str, text: &str) -> String {
    format!("invalid {field} {text:?}: expected a Go duration such as 30s or 1m30s")
}

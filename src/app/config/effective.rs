//! The effective configuration as YAML, for `oz-agent-worker check`. Secrets are redacted: the
//! API key, and every environment value (only keys are shown, since `-e` values may be
//! credentials). Keys come out in the order of the config file reference.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::duration::format_go_duration;
use super::{Backend, Config, LogFormat, LogLevel};
use crate::domain::env::EnvList;

/// What replaces a secret in the output.
pub const REDACTED: &str = "<redacted>";

/// Renders `config` as YAML with the API key and all environment values redacted.
pub fn effective_config_text(config: &Config) -> String {
    let view = Effective {
        worker_id: &config.worker_id,
        api_key: REDACTED,
        web_socket_url: &config.web_socket_url,
        server_root_url: &config.server_root_url,
        session_sharing_server_url: config.session_sharing_server_url.as_deref(),
        log_level: match config.log_level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        },
        log_format: match config.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
        max_concurrent_tasks: config.max_concurrent_tasks,
        idle_on_complete: config.idle_on_complete.as_deref(),
        cleanup: config.cleanup,
        health_listen: config.health_listen.map(|addr| addr.to_string()),
        state_dir: &config.state_dir,
        drain_timeout: format_go_duration(config.drain_timeout),
        backend: BTreeMap::from([(config.backend.name(), section(&config.backend))]),
    };
    serde_norway::to_string(&view)
        .unwrap_or_else(|err| format!("# failed to render the effective config: {err}\n"))
}

#[derive(Serialize)]
struct Effective<'a> {
    worker_id: &'a str,
    api_key: &'a str,
    web_socket_url: &'a str,
    server_root_url: &'a str,
    session_sharing_server_url: Option<&'a str>,
    log_level: &'a str,
    log_format: &'a str,
    max_concurrent_tasks: i64,
    idle_on_complete: Option<&'a str>,
    cleanup: bool,
    health_listen: Option<String>,
    state_dir: &'a Path,
    drain_timeout: String,
    backend: BTreeMap<&'static str, Section<'a>>,
}

/// One backend's settings; rendered under its name (`backend: {docker: ...}`).
#[derive(Serialize)]
#[serde(untagged)]
enum Section<'a> {
    Docker {
        volumes: &'a [String],
        environment: Vec<RedactedEnv<'a>>,
        pull_policy: &'a str,
        stop_grace_period: String,
    },
    Direct {
        workspace_root: &'a Path,
        target_dir: Option<&'a Path>,
        oz_path: Option<&'a Path>,
        setup_command: Option<&'a str>,
        teardown_command: Option<&'a str>,
        environment: Vec<RedactedEnv<'a>>,
        kill_grace_period: String,
    },
    Kubernetes {
        namespace: &'a str,
        kubeconfig: Option<&'a Path>,
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
        pod_template: Option<&'a serde_json::Value>,
        preflight_resources: Option<&'a serde_json::Value>,
        /// From `-e` (the file has no Kubernetes environment list).
        environment: Vec<RedactedEnv<'a>>,
    },
    Command {
        dispatch_command: &'a str,
        cancel_command: Option<&'a str>,
        dispatch_timeout: String,
        environment: Vec<RedactedEnv<'a>>,
    },
}

/// `{name: KEY, value: <redacted>}`.
#[derive(Serialize)]
struct RedactedEnv<'a> {
    name: &'a str,
    value: &'static str,
}

fn redacted(env: &EnvList) -> Vec<RedactedEnv<'_>> {
    env.keys()
        .map(|name| RedactedEnv {
            name,
            value: REDACTED,
        })
        .collect()
}

fn section(backend: &Backend) -> Section<'_> {
    match backend {
        Backend::Docker(docker) => Section::Docker {
            volumes: &docker.volumes,
            environment: redacted(&docker.environment),
            pull_policy: docker.pull_policy.as_str(),
            stop_grace_period: format_go_duration(docker.stop_grace),
        },
        Backend::Direct(direct) => Section::Direct {
            workspace_root: &direct.workspace_root,
            target_dir: direct.target_dir.as_deref(),
            oz_path: direct.oz_path.as_deref(),
            setup_command: direct.setup_command.as_deref(),
            teardown_command: direct.teardown_command.as_deref(),
            environment: redacted(&direct.environment),
            kill_grace_period: format_go_duration(direct.kill_grace),
        },
        Backend::Kubernetes(k8s) => Section::Kubernetes {
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
            pod_template: k8s.pod_template.as_ref(),
            preflight_resources: k8s.preflight_resources.as_ref(),
            environment: redacted(&k8s.environment),
        },
        Backend::Command(command) => Section::Command {
            dispatch_command: &command.dispatch_command,
            cancel_command: command.cancel_command.as_deref(),
            dispatch_timeout: format_go_duration(command.dispatch_timeout),
            environment: redacted(&command.environment),
        },
    }
}

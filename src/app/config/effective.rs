//! The effective configuration as YAML, for `oz-agent-worker check`. Secrets are redacted: the
//! API key, and every environment value (only keys are shown, since `-e` values may be
//! credentials).

use serde_json::{Map, Value, json};

use super::duration::format_go_duration;
use super::{Backend, Config, LogFormat, LogLevel};
use crate::domain::env::EnvList;

/// What replaces a secret in the output.
pub const REDACTED: &str = "<redacted>";

/// Renders `config` as YAML with the API key and all environment values redacted.
pub fn effective_config_text(config: &Config) -> String {
    let mut top = Map::new();
    top.insert("worker_id".into(), json!(config.worker_id));
    top.insert("api_key".into(), json!(REDACTED));
    top.insert("web_socket_url".into(), json!(config.web_socket_url));
    top.insert("server_root_url".into(), json!(config.server_root_url));
    top.insert(
        "session_sharing_server_url".into(),
        json!(config.session_sharing_server_url),
    );
    top.insert("log_level".into(), json!(log_level(config.log_level)));
    top.insert(
        "log_format".into(),
        json!(match config.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }),
    );
    top.insert(
        "max_concurrent_tasks".into(),
        json!(config.max_concurrent_tasks),
    );
    top.insert("idle_on_complete".into(), json!(config.idle_on_complete));
    top.insert("cleanup".into(), json!(config.cleanup));
    top.insert(
        "health_listen".into(),
        json!(config.health_listen.map(|addr| addr.to_string())),
    );
    let mut backend = Map::new();
    backend.insert(
        config.backend.name().into(),
        backend_section(&config.backend),
    );
    top.insert("backend".into(), Value::Object(backend));
    serde_norway::to_string(&Value::Object(top))
        .unwrap_or_else(|err| format!("# failed to render the effective config: {err}\n"))
}

fn log_level(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

fn backend_section(backend: &Backend) -> Value {
    match backend {
        Backend::Docker(docker) => json!({
            "volumes": docker.volumes,
            "environment": redacted_env(&docker.environment),
            "pull_policy": docker.pull_policy.as_str(),
            "stop_grace_period": format_go_duration(docker.stop_grace),
        }),
        Backend::Direct(direct) => json!({
            "workspace_root": direct.workspace_root,
            "target_dir": direct.target_dir,
            "oz_path": direct.oz_path,
            "setup_command": direct.setup_command,
            "teardown_command": direct.teardown_command,
            "environment": redacted_env(&direct.environment),
            "kill_grace_period": format_go_duration(direct.kill_grace),
        }),
        Backend::Command(command) => json!({
            "dispatch_command": command.dispatch_command,
            "cancel_command": command.cancel_command,
            "dispatch_timeout": format_go_duration(command.dispatch_timeout),
            "environment": redacted_env(&command.environment),
        }),
        Backend::Kubernetes(k8s) => json!({
            "namespace": k8s.namespace,
            "kubeconfig": k8s.kubeconfig,
            "default_image": k8s.default_image,
            "image_pull_policy": k8s.image_pull_policy.as_str(),
            "use_image_volumes": k8s.use_image_volumes,
            "preflight_image": k8s.preflight_image,
            "sidecar_image": k8s.sidecar_image,
            "coding_cli_sidecars": k8s.coding_cli_sidecars,
            "setup_command": k8s.setup_command,
            "teardown_command": k8s.teardown_command,
            "extra_labels": k8s.extra_labels,
            "extra_annotations": k8s.extra_annotations,
            "active_deadline_seconds": k8s.active_deadline_seconds,
            "ttl_seconds_after_finished": k8s.ttl_seconds_after_finished,
            "workspace_size_limit": k8s.workspace_size_limit,
            "unschedulable_timeout": k8s.unschedulable_timeout.map(format_go_duration),
            "pod_template": k8s.pod_template,
            "preflight_resources": k8s.preflight_resources,
            "environment": redacted_env(&k8s.environment),
        }),
    }
}

/// `[{name: KEY, value: <redacted>}, ...]`.
fn redacted_env(env: &EnvList) -> Value {
    Value::Array(
        env.keys()
            .map(|key| json!({ "name": key, "value": REDACTED }))
            .collect(),
    )
}

//! The effective configuration as YAML, for `oz-agent-worker check`. Secrets are redacted: the
//! API key, and every environment value (only keys are shown, since `-e` values may be
//! credentials). Keys come out in the order of the config file reference; each backend's section
//! comes from its own config module.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{Config, LogFormat, LogLevel, REDACTED};
use crate::adapters::backend_config::duration::format_go_duration;

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
        orphan_scan_interval: format_go_duration(config.orphan_scan_interval),
        backend: BTreeMap::from([(config.backend.name(), config.backend.effective())]),
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
    orphan_scan_interval: String,
    backend: BTreeMap<&'static str, serde_norway::Value>,
}

//! Logging setup: `tracing` to stderr, as text (default) or JSON lines, at `--log-level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::app::config::{LogFormat, LogLevel};

impl LogLevel {
    /// The `tracing` directive for this level, applied to this crate and its dependencies.
    pub fn directive(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Installs the global subscriber. Dependencies are capped at `warn` so their debug output
/// (which can include HTTP bodies) never reaches the log.
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = EnvFilter::new(format!("warn,oz_agent_worker={}", level.directive()));
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

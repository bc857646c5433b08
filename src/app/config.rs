//! Configuration: the CLI (clap), the YAML file (strict), their merge (CLI over file over
//! defaults) and validation into a typed [`Config`]. Validation does no I/O beyond reading the
//! file and reports every bad field by name.
//!
//! Two stages: [`load`] parses the command line (`cli`) and the file (`file`) into raw structs,
//! then `validate` (with each backend's own config module, through the table in `backends`) merges and checks them without I/O,
//! reading environment variables only through the `env` seam it is given. Departure from the
//! Go worker: the YAML is read with `serde_norway`, not a layered-config crate, to keep key case
//! and line numbers; and `-e`/`-v` values containing commas are rejected (see `validate`).

mod backends;
mod cli;
mod effective;
mod file;
mod validate;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;

pub use crate::adapters::backend_config::REDACTED;
pub use backends::Backend;
pub use effective::effective_config_text;

use crate::adapters::backend_config::Findings;
use crate::adapters::backend_config::checks;
use crate::domain::ApiKey;

/// Default WebSocket URL (hidden `--web-socket-url`).
pub const DEFAULT_WEB_SOCKET_URL: &str = "wss://oz.warp.dev/api/v1/selfhosted/worker/ws";
/// Default server root URL (hidden `--server-root-url`).
pub const DEFAULT_SERVER_ROOT_URL: &str = "https://app.warp.dev";

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// `debug`.
    Debug,
    /// `info` (default).
    #[default]
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines on stderr (default).
    #[default]
    Text,
    /// One JSON object per line on stderr.
    Json,
}

/// The validated, merged configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `--worker-id` or YAML `worker_id`; never starts with `warp`.
    pub worker_id: String,
    /// `--api-key` or `WARP_API_KEY`.
    pub api_key: ApiKey,
    /// The control plane's WebSocket URL (`ws://` or `wss://`).
    pub web_socket_url: String,
    /// Forwarded in argv and env.
    pub server_root_url: String,
    /// Forwarded in argv when set.
    pub session_sharing_server_url: Option<String>,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Log encoding.
    pub log_format: LogFormat,
    /// 0 or negative means unlimited.
    pub max_concurrent_tasks: i64,
    /// Passed verbatim to `--idle-on-complete`.
    pub idle_on_complete: Option<String>,
    /// False under `--no-cleanup` / `cleanup: false`.
    pub cleanup: bool,
    /// The backend and its section.
    pub backend: Backend,
    /// Where `/healthz` and `/readyz` are served when set (`--health-listen`).
    pub health_listen: Option<SocketAddr>,
    /// `--state-dir` or YAML `state_dir`: instance locks and the crash journal (absolute).
    pub state_dir: PathBuf,
    /// `--drain-timeout` or YAML `drain_timeout`: how long running tasks may finish after the
    /// first SIGTERM before they are stopped (zero: stopped at once).
    pub drain_timeout: std::time::Duration,
    /// `--orphan-scan-interval` or YAML `orphan_scan_interval`: how often a running worker
    /// looks for what dead worker processes with its worker id left behind (zero: only at
    /// start-up).
    pub orphan_scan_interval: std::time::Duration,
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// Run the worker.
    Run(Config),
    /// `oz-agent-worker check`: print [`effective_config_text`] and exit 0, without connecting.
    Check(Config),
}

impl Invocation {
    /// The validated config, whichever the invocation.
    pub fn config(&self) -> &Config {
        match self {
            Self::Run(config) | Self::Check(config) => config,
        }
    }
}

/// A successful [`load`]: what to do, plus warnings for the caller to log once logging is set
/// up (for example a `backend.direct:` block with no value, which selects nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// Run or check.
    pub invocation: Invocation,
    /// Human-readable warnings; none contains a secret.
    pub warnings: Vec<String>,
    /// The absolute path of the config file that was read, if any (for a start-up log line).
    pub config_file: Option<PathBuf>,
}

/// Why [`load`] did not produce a config. `Display` is the full (possibly multi-line) message;
/// none contains the API key or an env value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `--help` or `--version`: not a failure. Print the text on stdout and exit 0.
    Informational(String),
    /// A command-line usage error from clap (unknown flag, bad enum value, missing value),
    /// with usage text. Exit 64.
    Usage(String),
    /// The config file could not be read or parsed, or fields are invalid: every problem found,
    /// each naming its field and what was expected. Exit 64.
    Invalid(Vec<String>),
}

impl ConfigError {
    /// The process exit code: 0 for `--help`/`--version`, 64 (EX_USAGE) for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Informational(_) => 0,
            Self::Usage(_) | Self::Invalid(_) => 64,
        }
    }

    /// True when the text belongs on stdout (`--help`, `--version`) rather than stderr.
    pub fn is_informational(&self) -> bool {
        matches!(self, Self::Informational(_))
    }

    /// The individual problems of an [`ConfigError::Invalid`]; empty otherwise.
    pub fn problems(&self) -> &[String] {
        match self {
            Self::Invalid(problems) => problems,
            _ => &[],
        }
    }

    fn from_clap(err: &clap::Error) -> Self {
        let text = err.render().to_string().trim_end().to_owned();
        if err.use_stderr() {
            Self::Usage(text)
        } else {
            Self::Informational(text)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Informational(text) | Self::Usage(text) => f.write_str(text),
            Self::Invalid(problems) if problems.len() == 1 => {
                write!(f, "invalid configuration: {}", problems[0])
            }
            Self::Invalid(problems) => {
                write!(f, "invalid configuration ({} problems):", problems.len())?;
                for problem in problems {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses `args` (including the program name, as from [`std::env::args_os`]), reads the
/// `--config-file` if given, merges and validates. Environment variables (`WARP_API_KEY`,
/// `HOME`, and the host values inherited by bare `-e KEY` and by YAML env entries without a
/// `value`) are read only through `env`, so tests pass a map; `main` passes
/// `&|name| std::env::var(name).ok()`.
///
/// # Errors
/// [`ConfigError`]: informational for `--help`/`--version`, otherwise every problem found.
pub fn load<I, T>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let parsed = cli::Cli::try_parse_from(args).map_err(|err| ConfigError::from_clap(&err))?;
    let mut findings = Findings::default();
    let file = match &parsed.args.config_file {
        None => None,
        Some(given) => {
            let path = config_file_path(given, env).map_err(|e| ConfigError::Invalid(vec![e]))?;
            let text = std::fs::read_to_string(&path).map_err(|err| {
                ConfigError::Invalid(vec![format!(
                    "failed to read config file {}: {err}",
                    path.display()
                )])
            })?;
            let (raw, unknown_keys) =
                file::parse(&path, &text).map_err(|e| ConfigError::Invalid(vec![e]))?;
            findings.problems.extend(unknown_keys);
            Some((path, raw))
        }
    };
    let mut file = file;
    let shown_path = file.as_ref().map(|(path, _)| path.display().to_string());
    let input = file
        .as_mut()
        .zip(shown_path.as_deref())
        .map(|((_, raw), path)| validate::FileInput { path, raw });
    let config = validate::validate(&parsed.args, input, env, &mut findings);
    match config {
        Some(config) if findings.problems.is_empty() => Ok(Loaded {
            invocation: match parsed.command {
                Some(cli::CliCommand::Check) => Invocation::Check(config),
                None => Invocation::Run(config),
            },
            warnings: findings.warnings,
            config_file: file.map(|(path, _)| path),
        }),
        _ => Err(ConfigError::Invalid(findings.problems)),
    }
}

/// `--config-file` with `~` expanded (through `HOME` from `env`) and made absolute.
fn config_file_path(given: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, String> {
    let expanded = checks::expand_tilde(&given.to_string_lossy(), env("HOME").as_deref());
    if expanded.is_absolute() {
        return Ok(expanded);
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(&expanded))
        .map_err(|err| {
            format!(
                "invalid --config-file {:?}: cannot make it absolute: {err}",
                given.display()
            )
        })
}

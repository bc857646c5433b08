//! The command line (clap derive): every flag of the Go worker plus our additions, all global so
//! they work before and after the `check` subcommand. This is the raw, unvalidated stage; it
//! reads no environment variables (the API key's `WARP_API_KEY` fallback goes through the env
//! seam in [`super::load`]).

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use super::{DEFAULT_SERVER_ROOT_URL, DEFAULT_WEB_SOCKET_URL};

/// The raw command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "oz-agent-worker",
    bin_name = "oz-agent-worker",
    about = "Self-hosted worker for Warp ambient agents.",
    version = env!("OZ_BUILD_VERSION"),
    propagate_version = true,
    disable_help_subcommand = true
)]
pub(crate) struct Cli {
    /// What to do; running the worker when absent.
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    /// The flags.
    #[command(flatten)]
    pub args: CliArgs,
}

/// Subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub(crate) enum CliCommand {
    /// Validate the configuration and print the effective config (secrets redacted), without
    /// connecting anywhere.
    Check,
}

/// Every flag. Repeatable `-e`/`-v` values are never split on commas: a value containing a
/// comma is rejected during validation (see [`super::validate`]).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct CliArgs {
    /// YAML config file. `~` is expanded and the path made absolute.
    #[arg(long, global = true, value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// Execution backend (default: the one configured in the file, else docker).
    #[arg(long, global = true, value_name = "BACKEND", value_parser = backend_values())]
    pub backend: Option<String>,

    /// API key for the Warp server [env: WARP_API_KEY]. The flag wins over the variable.
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,

    /// This worker's id (required here or as `worker_id` in the config file).
    #[arg(long, global = true, value_name = "ID")]
    pub worker_id: Option<String>,

    /// WebSocket URL of the Warp server.
    #[arg(long, global = true, hide = true, default_value = DEFAULT_WEB_SOCKET_URL)]
    pub web_socket_url: String,

    /// Root URL of the Warp server.
    #[arg(long, global = true, hide = true, default_value = DEFAULT_SERVER_ROOT_URL)]
    pub server_root_url: String,

    /// Session-sharing server URL forwarded to the agent.
    #[arg(long, global = true, hide = true, default_value = "")]
    pub session_sharing_server_url: String,

    /// Log verbosity [default: `log_level` in the config file, else info].
    #[arg(long, global = true, value_enum)]
    pub log_level: Option<CliLogLevel>,

    /// Log encoding on stderr.
    #[arg(long, global = true, value_enum, default_value_t = CliLogFormat::Text)]
    pub log_format: CliLogFormat,

    /// Direct backend only: run every task in this directory (overrides `target_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,

    /// Keep containers, Jobs and workspaces after tasks finish.
    #[arg(long, global = true)]
    pub no_cleanup: bool,

    /// Docker only, repeatable: HOST_PATH:CONTAINER_PATH or HOST_PATH:CONTAINER_PATH:MODE.
    /// A value may not contain a comma: repeat the flag, or use the config file.
    #[arg(short = 'v', long = "volumes", global = true, value_name = "SPEC")]
    pub volumes: Vec<String>,

    /// Repeatable: KEY=VALUE, or bare KEY to inherit from the host. A value may not contain a
    /// comma: repeat the flag, or use the config file.
    #[arg(short = 'e', long = "env", global = true, value_name = "ENV")]
    pub env: Vec<String>,

    /// Maximum concurrent tasks; 0 (or negative) means unlimited.
    #[arg(
        long,
        global = true,
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub max_concurrent_tasks: i64,

    /// How long to keep the oz agent alive after a task completes, for follow-ups (e.g. 45m,
    /// 10m, 0s). Defaults to 45m when not set.
    #[arg(
        long,
        global = true,
        default_value = "",
        hide_default_value = true,
        value_name = "DURATION"
    )]
    pub idle_on_complete: String,

    /// Docker only: when to pull a task's image.
    #[arg(long, global = true, value_enum, value_name = "POLICY")]
    pub pull_policy: Option<CliPullPolicy>,

    /// Serve /healthz and /readyz on this address (e.g. 127.0.0.1:8080). Off by default.
    #[arg(long, global = true, value_name = "ADDR")]
    pub health_listen: Option<String>,

    /// Local state (instance locks and the crash journal); default /var/lib/oz-agent-worker.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// On the first SIGTERM, let running tasks finish for up to this long before stopping
    /// them (e.g. 10m); 0 (default) stops them at once.
    #[arg(long, global = true, value_name = "DURATION")]
    pub drain_timeout: Option<String>,

    /// How often to look for tasks left by dead worker processes with this worker id (their
    /// containers, Jobs or journal), besides at start-up (e.g. 30s, the default); 0: only at
    /// start-up.
    #[arg(long, global = true, value_name = "DURATION")]
    pub orphan_scan_interval: Option<String>,
}

/// `--log-level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum CliLogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum CliLogFormat {
    #[default]
    Text,
    Json,
}

/// `--pull-policy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CliPullPolicy {
    /// Pull before every task.
    Always,
    /// Pull only when the image is missing locally.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl CliPullPolicy {
    /// The config spelling (`always`, `if-not-present`, `never`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::IfNotPresent => "if-not-present",
            Self::Never => "never",
        }
    }
}

/// `--backend` accepts the backend table's names and, hidden, the empty string (the Go
/// worker's "not set").
fn backend_values() -> PossibleValuesParser {
    let mut names: Vec<&str> = super::backends::names().collect();
    names.sort_unstable_by_key(|name| *name != super::backends::DEFAULT_BACKEND);
    PossibleValuesParser::new(
        names
            .into_iter()
            .map(PossibleValue::new)
            .chain([PossibleValue::new("").hide(true)]),
    )
}

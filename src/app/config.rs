//! Configuration: the CLI (clap), the YAML file (strict), their merge (CLI over file over
//! defaults) and validation into a typed [`Config`]. Validation does no I/O beyond reading the
//! file and reports every bad field by name.

use std::fmt;
use std::net::SocketAddr;

use crate::adapters::command::CommandConfig;
use crate::adapters::docker::DockerConfig;
use crate::adapters::host::DirectConfig;
use crate::adapters::kubernetes::KubernetesConfig;

/// Default WebSocket URL (hidden `--web-socket-url`).
pub const DEFAULT_WEB_SOCKET_URL: &str = "wss://oz.warp.dev/api/v1/selfhosted/worker/ws";
/// Default server root URL (hidden `--server-root-url`).
pub const DEFAULT_SERVER_ROOT_URL: &str = "https://app.warp.dev";

/// The worker's API key. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The secret value; call only where it is sent (the `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

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

/// The selected backend with its validated section.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// `docker` (also the default when nothing is selected).
    Docker(DockerConfig),
    /// `kubernetes`.
    Kubernetes(Box<KubernetesConfig>),
    /// `direct`.
    Direct(DirectConfig),
    /// `command`.
    Command(CommandConfig),
}

impl Backend {
    /// The backend's name: `docker`, `kubernetes`, `direct` or `command`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Docker(_) => "docker",
            Self::Kubernetes(_) => "kubernetes",
            Self::Direct(_) => "direct",
            Self::Command(_) => "command",
        }
    }
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
}

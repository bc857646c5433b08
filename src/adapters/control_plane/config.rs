//! The WebSocket adapter's own config section.

use std::time::Duration;

use crate::adapters::control_plane::backoff::BackoffConfig;
use crate::domain::ApiKey;

/// Everything [`super::WsTaskSource`] needs; nothing else is read.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// `ws://` or `wss://` URL; `worker_id` is merged into its query.
    pub url: String,
    /// This worker's id (the `worker_id` query parameter).
    pub worker_id: String,
    /// Sent only as `Authorization: Bearer <key>` on the upgrade request.
    pub api_key: ApiKey,
    /// The `User-Agent` header, e.g. `oz-agent-worker/0.1.0`.
    pub user_agent: String,
    /// How often a ping is sent (30 s).
    pub ping_interval: Duration,
    /// The connection is dead after this long with nothing read (60 s).
    pub pong_wait: Duration,
    /// Bound on each frame write (10 s).
    pub write_timeout: Duration,
    /// Bound on the close frame at shutdown (10 s).
    pub close_timeout: Duration,
    /// Bound on the TCP/TLS connect and HTTP upgrade (45 s).
    pub handshake_timeout: Duration,
    /// Reconnect back-off.
    pub backoff: BackoffConfig,
    /// Frames larger than this are logged and ignored (16 MiB). Frames larger than four times
    /// this end the connection at the transport level.
    pub max_frame_size: usize,
}

impl WsConfig {
    /// The reference defaults for `url`, `worker_id` and `api_key`, with a
    /// `oz-agent-worker/<crate version>` User-Agent.
    pub fn new(url: impl Into<String>, worker_id: impl Into<String>, api_key: ApiKey) -> Self {
        Self {
            url: url.into(),
            worker_id: worker_id.into(),
            api_key,
            user_agent: default_user_agent(),
            ping_interval: Duration::from_secs(30),
            pong_wait: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(45),
            backoff: BackoffConfig::default(),
            max_frame_size: 16 * 1024 * 1024,
        }
    }
}

/// `oz-agent-worker/<crate version>`.
pub(super) fn default_user_agent() -> String {
    format!("oz-agent-worker/{}", env!("CARGO_PKG_VERSION"))
}

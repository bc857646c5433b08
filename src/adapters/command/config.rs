//! Configuration of the Command backend (`backend.command` in YAML), already validated.

use std::time::Duration;

use crate::domain::env::EnvList;

/// Default `dispatch_timeout`.
pub const DEFAULT_DISPATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The Command backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandConfig {
    /// This worker's id (goes into the payload).
    pub worker_id: String,
    /// The server root URL (goes into the payload and `OZ_SERVER_ROOT_URL`).
    pub server_root_url: String,
    /// Run with `/bin/sh -c`, the payload on stdin. Required.
    pub dispatch_command: String,
    /// Run with `/bin/sh -c` on user cancellation.
    pub cancel_command: Option<String>,
    /// Bound on one dispatch (default 60 s; ≤ 0 means the default).
    pub dispatch_timeout: Duration,
    /// Operator environment for the dispatch and cancel subprocesses only.
    pub environment: EnvList,
}

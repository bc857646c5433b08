//! The Direct backend: runs `oz agent run` as a host process in a per-task workspace
//! (as the Go worker's Direct backend does), with setup/teardown hooks, process-group supervision and captured, redacted
//! output. Knows nothing about the control plane or the supervisor.

mod config;
mod dotenv;
mod environment;
mod executor;
mod output;
mod process;
mod run;
mod workspace;

#[cfg(test)]
mod tests;

pub use config::{DEFAULT_WORKSPACE_ROOT, DirectConfig};
pub use environment::{AGENT_HOST_VARS, API_KEY_VAR, BACKEND_NAME, HostEnv};
pub use executor::{HostError, HostExecutor};
pub use run::{NOT_REDACTED, TEARDOWN_AFTER_CANCEL, TEARDOWN_KILL_GRACE};

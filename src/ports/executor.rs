//! The executor port: runs one task on a backend (Docker, Kubernetes, host processes, an
//! external command) until it reaches a terminal state.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use crate::domain::spec::TaskSpec;
use crate::domain::{Exit, TaskFailure, TaskId};

/// Why the best-effort cancel hook failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CancelError(pub String);

/// An execution backend.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs `spec` to a terminal state.
    ///
    /// # Errors
    /// A [`TaskFailure`] with the protocol's reason (`image_pull`, `agent_invocation`, …) and the
    /// exit code when a process status was observed. The failure's message must hold no secret.
    ///
    /// # Cancellation
    /// When `cancel` fires, the executor stops the workload (gracefully, then forcefully),
    /// cleans up what it created, and returns `Ok(Exit::Cancelled)`. The future itself is
    /// never dropped by the app before it returns.
    async fn run(&self, spec: &TaskSpec, cancel: CancellationToken) -> Result<Exit, TaskFailure>;

    /// The extra, best-effort cancel hook called for every user cancellation, in addition to
    /// firing the run's token. Carries no env or secrets. The default does nothing.
    ///
    /// # Errors
    /// [`CancelError`] is only logged.
    ///
    /// # Cancellation
    /// The app bounds it with a timeout (10 s) and may drop it then.
    async fn cancel(&self, task_id: &TaskId, execution_id: &str) -> Result<(), CancelError> {
        let _ = (task_id, execution_id);
        Ok(())
    }

    /// True when running tasks must survive a worker restart (Kubernetes, Command): worker
    /// shutdown then leaves them alone instead of cancelling them.
    fn survives_daemon_restart(&self) -> bool {
        false
    }

    /// Releases backend resources at worker shutdown. Bounded by the app (10 s).
    async fn shutdown(&self) {}
}

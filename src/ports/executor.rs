//! The executor port: runs one task on a backend (Docker, Kubernetes, host processes, an
//! external command) until it reaches a terminal state.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use crate::domain::spec::TaskSpec;
use crate::domain::{Exit, FailureReason, TaskFailure, TaskId};

/// A task that a dead worker process (instance) with this worker id left on the backend, and
/// that this process has taken over: still running, or finished with no terminal report sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The run.
    pub task_id: TaskId,
    /// The execution id it was started with (may be empty).
    pub execution_id: String,
    /// What the backend needs to find it again (a container id, a Job name).
    pub handle: String,
}

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

    /// The worker is about to stop while the tasks it preserves keep running (called once, at
    /// the end of intake and drain, before reports are flushed; only for backends whose
    /// `survives_daemon_restart` is true). A task that ends after this should not be concluded
    /// as reported by this process, whose reports may no longer reach the server: the backend
    /// leaves it to the next worker process. The default does nothing.
    fn leaving(&self) {}

    /// Takes over what dead worker processes with this worker id left running on the backend
    /// (or finished there without a terminal report), so that [`Executor::follow`] can see each
    /// to its end. A backend must take an orphan over atomically: two live processes never
    /// both get it. Called once at start-up, then every [`Executor::orphan_scan_interval`].
    /// The default finds none.
    async fn adopt_orphans(&self) -> Vec<Orphan> {
        Vec::new()
    }

    /// How often to look for orphans again after start-up (`None`: only at start-up). A
    /// backend whose instances can die while this one lives (Kubernetes: another pod) sets it.
    fn orphan_scan_interval(&self) -> Option<Duration> {
        None
    }

    /// Follows an adopted task to its end, as [`Executor::run`] would have from the same point:
    /// the same errors and the same cancellation contract, and the same clean-up.
    ///
    /// # Errors
    /// As [`Executor::run`]. The default, for backends that adopt nothing, fails with
    /// `unknown`.
    async fn follow(
        &self,
        orphan: &Orphan,
        cancel: CancellationToken,
    ) -> Result<Exit, TaskFailure> {
        let _ = cancel;
        Err(TaskFailure::backend(
            FailureReason::Unknown,
            format!(
                "this backend cannot follow the adopted task {}",
                orphan.task_id
            ),
        ))
    }

    /// Releases backend resources at worker shutdown. Bounded by the app (10 s).
    async fn shutdown(&self) {}
}

//! The task-source port: the control plane, seen as a stream of events in and reports out.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{Assignment, TaskId, TaskReport};

/// What the control plane (or the connection to it) tells the app.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlEvent {
    /// A well-formed task assignment.
    Assigned(Box<Assignment>),
    /// The server asked to cancel a task.
    CancelRequested(TaskId),
    /// A connection was established.
    Connected,
    /// The connection ended (remote close, read timeout, or local shutdown).
    Disconnected,
    /// A dial or handshake failed; the source backs off and retries by itself.
    DialFailed,
}

/// Errors of the task source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source has stopped and accepts no more reports.
    #[error("control-plane connection is closed")]
    Closed,
    /// The source cannot run at all (e.g. an invalid URL); not retried.
    #[error("control-plane source cannot start: {0}")]
    Fatal(String),
}

/// The control plane.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TaskSource: Send + Sync {
    /// Connects, reconnects with back-off, decodes frames and pushes [`ControlEvent`]s until
    /// `cancel` fires. Malformed frames are logged by the source and never reach `events`.
    ///
    /// # Errors
    /// [`SourceError::Fatal`] only for problems that retrying cannot fix.
    ///
    /// # Cancellation
    /// When `cancel` fires, the source sends a close frame (bounded), stops and returns
    /// `Ok(())`. Reports not yet written are dropped then: call [`TaskSource::flush`] first.
    async fn run(
        &self,
        events: mpsc::Sender<ControlEvent>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError>;

    /// Queues a report. Never blocks. Reports are written in order, survive reconnects, and
    /// a report whose write fails is written again on the next connection.
    ///
    /// # Errors
    /// [`SourceError::Closed`] once the source has stopped.
    fn report(&self, report: TaskReport) -> Result<(), SourceError>;

    /// Waits until every queued report has been written, or `timeout` passes. Returns true
    /// when the queue drained.
    ///
    /// # Cancellation
    /// Dropping the future only stops the wait.
    async fn flush(&self, timeout: Duration) -> bool;
}

//! The outbound queue shared by every connection: serialized reports in FIFO order. A message
//! leaves the queue only after its write succeeded, so a failed write is retried on the next
//! connection (at-least-once delivery; a message cut off mid-write may arrive twice).

use std::collections::VecDeque;
use std::time::Duration;

use oz_protocol::WorkerMessage;
use tokio::sync::watch;

/// One encoded report, with what a log line may say about it.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// The wire `type`.
    pub(crate) kind: &'static str,
    /// The run it is about.
    pub(crate) task_id: String,
    /// The frame text.
    pub(crate) text: String,
}

impl From<&WorkerMessage> for Outgoing {
    fn from(message: &WorkerMessage) -> Self {
        Self {
            kind: message.kind(),
            task_id: message.task_id().to_owned(),
            text: message.encode(),
        }
    }
}

/// Called with a message's type and task id once it was written to the socket.
pub(crate) type WrittenHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// The shared queue. Only the connection currently writing pops from it.
pub(crate) struct Outbox {
    queue: watch::Sender<VecDeque<Outgoing>>,
    written: std::sync::OnceLock<WrittenHook>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Self {
            queue: watch::Sender::new(VecDeque::new()),
            written: std::sync::OnceLock::new(),
        }
    }

    /// Sets the hook called after each successful write (once; later calls are ignored).
    pub(crate) fn on_written(&self, hook: WrittenHook) {
        let _ = self.written.set(hook);
    }

    /// Appends a message. Never blocks.
    pub(crate) fn push(&self, message: Outgoing) {
        self.queue.send_modify(|queue| queue.push_back(message));
    }

    /// A receiver that is notified of every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<VecDeque<Outgoing>> {
        self.queue.subscribe()
    }

    /// Removes the front message after it was written.
    pub(crate) fn pop_written(&self) {
        let mut popped = None;
        self.queue.send_modify(|queue| {
            popped = queue.pop_front();
        });
        if let (Some(hook), Some(message)) = (self.written.get(), popped) {
            hook(message.kind, &message.task_id);
        }
    }

    /// How many messages wait.
    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Waits until the queue is empty or `timeout` passes; true when it drained.
    pub(crate) async fn drained(&self, timeout: Duration) -> bool {
        let mut rx = self.queue.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(VecDeque::is_empty))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Waits for the front message: returns it at once when the queue is non-empty.
pub(crate) async fn next_message(rx: &mut watch::Receiver<VecDeque<Outgoing>>) -> Outgoing {
    loop {
        if let Some(front) = rx.borrow_and_update().front() {
            return front.clone();
        }
        if rx.changed().await.is_err() {
            // The sender lives as long as the source; never resolve if it is gone.
            std::future::pending::<()>().await;
        }
    }
}

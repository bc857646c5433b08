//! The outbound queue shared by every connection: serialized reports in FIFO order, delivered
//! at least once across abrupt connection drops.
//!
//! A report moves through two stages. It waits in `pending` until the current connection
//! writes it; a successful write moves it to `written`, tagged with the number of the last
//! ping sent before it. A successful write only means the bytes reached this host's kernel, so
//! the report stays in `written` until the server proves it read past it: a pong answering a
//! ping sent *after* the write (the server reads a connection in order, so by the time it
//! answers that ping it has read the report), or the server's answer to our close frame at
//! shutdown. When a connection ends any other way (reset, read or write error, a close the
//! server started, a liveness timeout), everything still in `written` goes back to the front of
//! `pending`, in its original order, and is sent again on the next connection. A report can
//! therefore arrive twice (byte for byte identical, in the original order), never zero times
//! while the process lives. A failed write leaves the report at the front of `pending`.
//!
//! Nothing here drops a report: the bound on how much can wait is enforced upstream, by the
//! connection no longer reading the socket (so no new assignment, hence no new report, can
//! arrive) while [`Outbox::len`] is at [`READ_PAUSE_AT`].

use std::collections::VecDeque;
use std::time::Duration;

use oz_protocol::WorkerMessage;
use tokio::sync::watch;

/// While this many reports wait (pending or unconfirmed), the connection stops reading the
/// socket: no new assignment is decoded until the server has taken some reports. Terminal
/// reports of tasks already running are still accepted above it; there is at most one per task.
pub(crate) const READ_PAUSE_AT: usize = 4096;

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

/// Where a report is on its way to the server, as told to the hook set with
/// [`super::WsTaskSource::on_delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// About to be written to the socket: from here on the server may see it (a process killed
    /// right after the write can still get the bytes out).
    Sending,
    /// The server proved it read the report (a later ping answered, or our close echoed).
    /// Until then a dying process cannot know: a socket closed with unread input is reset
    /// by the kernel, which discards what it had not sent yet.
    Confirmed,
}

/// Called with the stage, the message's type and its task id: [`Delivery::Sending`] just
/// before each write, [`Delivery::Confirmed`] once the server has read it. The crash journal
/// uses both (see `app::restart`).
pub(crate) type DeliveryHook = Box<dyn Fn(Delivery, &str, &str) + Send + Sync>;

/// A report written on the current connection and not yet confirmed.
#[derive(Debug)]
struct Written {
    /// The number of the last ping sent before the write (0: none yet).
    after_ping: u64,
    message: Outgoing,
}

/// Both stages of the queue.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    pending: VecDeque<Outgoing>,
    written: VecDeque<Written>,
}

impl Queues {
    /// The next report to write, if any.
    pub(crate) fn front(&self) -> Option<&Outgoing> {
        self.pending.front()
    }

    /// How many reports wait to be written.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// The shared queue. Only the connection currently writing takes from it.
pub(crate) struct Outbox {
    queue: watch::Sender<Queues>,
    hook: std::sync::OnceLock<DeliveryHook>,
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
            queue: watch::Sender::new(Queues::default()),
            hook: std::sync::OnceLock::new(),
        }
    }

    /// Sets the delivery hook (once; later calls are ignored).
    pub(crate) fn on_delivery(&self, hook: DeliveryHook) {
        let _ = self.hook.set(hook);
    }

    /// Tells the hook that `message` is about to be written.
    pub(crate) fn sending(&self, message: &Outgoing) {
        if let Some(hook) = self.hook.get() {
            hook(Delivery::Sending, message.kind, &message.task_id);
        }
    }

    fn tell_confirmed(&self, confirmed: Vec<Outgoing>) {
        if let Some(hook) = self.hook.get() {
            for message in confirmed {
                hook(Delivery::Confirmed, message.kind, &message.task_id);
            }
        }
    }

    /// Appends a message. Never blocks and never drops.
    pub(crate) fn push(&self, message: Outgoing) {
        self.queue
            .send_modify(|queue| queue.pending.push_back(message));
    }

    /// A receiver that is notified of every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Queues> {
        self.queue.subscribe()
    }

    /// The front message was written after ping number `last_ping` was sent: it waits for the
    /// answer to a later ping.
    pub(crate) fn mark_written(&self, last_ping: u64) {
        self.queue.send_modify(|queue| {
            if let Some(message) = queue.pending.pop_front() {
                queue.written.push_back(Written {
                    after_ping: last_ping,
                    message,
                });
            }
        });
    }

    /// The server answered ping number `ping`: every report written before it was sent is
    /// delivered. Returns how many were confirmed.
    pub(crate) fn confirm(&self, ping: u64) -> usize {
        let mut confirmed = Vec::new();
        self.queue.send_if_modified(|queue| {
            while queue.written.front().is_some_and(|w| w.after_ping < ping) {
                if let Some(written) = queue.written.pop_front() {
                    confirmed.push(written.message);
                }
            }
            !confirmed.is_empty()
        });
        let count = confirmed.len();
        self.tell_confirmed(confirmed);
        count
    }

    /// True when some written report is not covered by ping number `last_ping` or earlier, so
    /// a new ping would confirm it.
    pub(crate) fn awaits_ping(&self, last_ping: u64) -> bool {
        self.queue
            .borrow()
            .written
            .back()
            .is_some_and(|w| w.after_ping >= last_ping)
    }

    /// The connection ended cleanly (the server answered our close frame): everything written
    /// on it was read.
    pub(crate) fn confirm_all(&self) {
        let mut confirmed = Vec::new();
        self.queue.send_if_modified(|queue| {
            confirmed.extend(queue.written.drain(..).map(|w| w.message));
            !confirmed.is_empty()
        });
        self.tell_confirmed(confirmed);
    }

    /// The connection ended without proof that the server read everything: the unconfirmed
    /// reports go back to the front of the queue, in order. Returns how many.
    pub(crate) fn requeue_unconfirmed(&self) -> usize {
        let mut requeued = 0;
        self.queue.send_if_modified(|queue| {
            while let Some(written) = queue.written.pop_back() {
                queue.pending.push_front(written.message);
                requeued += 1;
            }
            requeued > 0
        });
        requeued
    }

    /// How many messages wait, written-but-unconfirmed ones included.
    pub(crate) fn len(&self) -> usize {
        let queue = self.queue.borrow();
        queue.pending.len() + queue.written.len()
    }

    /// Waits until nothing waits to be written or `timeout` passes; true when it drained.
    /// Written reports still awaiting confirmation do not count: the close handshake that
    /// follows a flush confirms them.
    pub(crate) async fn drained(&self, timeout: Duration) -> bool {
        let mut rx = self.queue.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|q| q.pending.is_empty()))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Waits for the front message: returns it at once when the queue is non-empty.
pub(crate) async fn next_message(rx: &mut watch::Receiver<Queues>) -> Outgoing {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: usize) -> Outgoing {
        Outgoing {
            kind: "task_claimed",
            task_id: format!("t{n}"),
            text: format!("r{n}"),
        }
    }

    fn pending(outbox: &Outbox) -> Vec<String> {
        let queue = outbox.queue.borrow();
        queue.pending.iter().map(|m| m.text.clone()).collect()
    }

    #[test]
    fn a_written_report_is_requeued_in_order_until_a_later_ping_is_answered() {
        let outbox = Outbox::new();
        for n in 0..4 {
            outbox.push(report(n));
        }
        outbox.mark_written(0); // r0 before any ping
        outbox.mark_written(0); // r1
        // ping 1 sent here
        outbox.mark_written(1); // r2 after ping 1
        assert!(outbox.awaits_ping(1));
        assert_eq!(outbox.confirm(1), 2, "pong 1 confirms r0 and r1 only");
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.requeue_unconfirmed(), 1);
        assert_eq!(pending(&outbox), ["r2", "r3"]);
    }

    #[test]
    fn a_clean_close_confirms_everything_written() {
        let outbox = Outbox::new();
        outbox.push(report(0));
        outbox.mark_written(5);
        outbox.confirm_all();
        assert_eq!(outbox.requeue_unconfirmed(), 0);
        assert_eq!(outbox.len(), 0);
        assert!(!outbox.awaits_ping(5));
    }

    #[test]
    fn the_hook_hears_of_a_report_before_its_write_and_after_its_confirmation_only() {
        use std::sync::{Arc, Mutex};
        let heard = Arc::new(Mutex::new(Vec::new()));
        let outbox = Outbox::new();
        let sink = heard.clone();
        outbox.on_delivery(Box::new(move |stage, kind, task| {
            sink.lock()
                .unwrap()
                .push(format!("{stage:?} {kind} {task}"));
        }));
        outbox.push(report(0));
        outbox.push(report(1));
        outbox.sending(&report(0));
        outbox.mark_written(0);
        outbox.sending(&report(1));
        outbox.mark_written(1);
        assert_eq!(outbox.confirm(1), 1);
        // The connection drops: r1 is re-queued, not confirmed.
        assert_eq!(outbox.requeue_unconfirmed(), 1);
        outbox.sending(&report(1));
        outbox.mark_written(0);
        outbox.confirm_all();
        assert_eq!(
            *heard.lock().unwrap(),
            [
                "Sending task_claimed t0",
                "Sending task_claimed t1",
                "Confirmed task_claimed t0",
                "Sending task_claimed t1",
                "Confirmed task_claimed t1",
            ]
        );
    }

    #[test]
    fn an_old_pong_confirms_nothing_written_after_its_ping() {
        let outbox = Outbox::new();
        outbox.push(report(0));
        outbox.mark_written(3);
        assert_eq!(outbox.confirm(3), 0);
        assert_eq!(outbox.confirm(4), 1);
    }
}

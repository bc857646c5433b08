//! The Warp control plane over WebSocket (the protocol the Go worker speaks): [`WsTaskSource`] implements the
//! [`TaskSource`] port.
//!
//! It dials the configured URL with `worker_id` in the query and `Authorization: Bearer`,
//! keeps the connection alive with pings (dead after `pong_wait` with nothing read), decodes
//! frames into [`ControlEvent`]s, and writes reports from a queue shared by every connection:
//! a report leaves the queue only once the server proved it read it (see `outbox.rs`), so reports
//! survive reconnects and abrupt drops, at least once.
//! Reconnects back off exponentially with jitter and do not reset after short-lived
//! connections. Only this module speaks the wire protocol (through the `oz-protocol` crate).
//!
//! Bad frames are logged and ignored; the `decode` module has the table of what the worker replies.

mod backoff;
mod config;
mod decode;
mod handshake;

mod connection;
mod outbox;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use url::Url;

pub use backoff::{Backoff, BackoffConfig, InvalidBackoff};
pub use config::WsConfig;
pub use handshake::{UrlError, worker_url};
pub use outbox::Delivery;

use crate::domain::TaskReport;
use crate::ports::{ControlEvent, SourceError, TaskSource};
use connection::ConnectionEnd;
use outbox::{Outbox, Outgoing};

/// Why a [`WsConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsConfigError {
    /// The URL is unusable.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The back-off settings are inconsistent.
    #[error(transparent)]
    Backoff(#[from] InvalidBackoff),
    /// A timing setting is zero.
    #[error("{0} must be positive")]
    ZeroDuration(&'static str),
}

/// The WebSocket task source. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct WsTaskSource {
    config: WsConfig,
    url: Url,
    outbox: Outbox,
    running: AtomicBool,
    stopped: AtomicBool,
}

impl WsTaskSource {
    /// Validates `config` (URL scheme, back-off, non-zero timings) without any I/O.
    ///
    /// # Errors
    /// [`WsConfigError`] naming the bad setting.
    pub fn new(config: WsConfig) -> Result<Self, WsConfigError> {
        let url = worker_url(&config.url, &config.worker_id)?;
        Backoff::new(config.backoff)?;
        for (name, value) in [
            ("ping_interval", config.ping_interval),
            ("pong_wait", config.pong_wait),
            ("write_timeout", config.write_timeout),
            ("close_timeout", config.close_timeout),
            ("handshake_timeout", config.handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(WsConfigError::ZeroDuration(name));
            }
        }
        Ok(Self {
            config,
            url,
            outbox: Outbox::new(),
            running: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        })
    }

    /// The URL actually dialled (with `worker_id`); safe to log.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Calls `hook` with the stage, wire type and task id of each report just before it is
    /// written and once the server has confirmed reading it (used by the crash journal). Only
    /// the first hook set counts.
    pub fn on_delivery(&self, hook: impl Fn(Delivery, &str, &str) + Send + Sync + 'static) {
        self.outbox.on_delivery(Box::new(hook));
    }

    /// How many reports wait to be written.
    pub fn pending_reports(&self) -> usize {
        self.outbox.len()
    }

    async fn connect_loop(
        &self,
        events: &mpsc::Sender<ControlEvent>,
        cancel: &CancellationToken,
    ) -> Result<(), SourceError> {
        let mut backoff =
            Backoff::new(self.config.backoff).map_err(|err| SourceError::Fatal(err.to_string()))?;
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            info!("Connecting to {}", self.url);
            let dialled = tokio::select! {
                dialled = handshake::dial(&self.config, &self.url) => dialled,
                () = cancel.cancelled() => return Ok(()),
            };
            let socket = match dialled {
                Ok(socket) => socket,
                Err(err) => {
                    let delay = backoff.next_delay();
                    if err.is_auth() {
                        error!(
                            "Failed to connect: {err}, retrying in {}: the server refused the \
                             worker's credentials; check WARP_API_KEY / the worker's API key",
                            seconds(delay)
                        );
                    } else {
                        error!("Failed to connect: {err}, retrying in {}", seconds(delay));
                    }
                    if !emit(events, ControlEvent::DialFailed, cancel).await
                        || !sleep_or_cancel(delay, cancel).await
                    {
                        return Ok(());
                    }
                    continue;
                }
            };
            info!("Successfully connected to server");
            // The lines Warp's troubleshooting pages tell operators to look for.
            info!("Connected to Oz");
            info!("Listening for tasks");
            let opened = Instant::now();
            if !emit(events, ControlEvent::Connected, cancel).await {
                return Ok(());
            }
            let end = connection::serve(socket, &self.config, &self.outbox, events, cancel).await;
            let reason = match end {
                ConnectionEnd::Cancelled | ConnectionEnd::EventsClosed => {
                    // Best effort: on a local shutdown the app has usually stopped reading.
                    // It records the connection's end itself once this source has returned
                    // (`bootstrap::record_connection_end`), before the final metrics flush.
                    let _ = events.try_send(ControlEvent::Disconnected);
                    return Ok(());
                }
                ConnectionEnd::Lost(reason) => reason,
            };
            warn!("Connection closed, will attempt to reconnect: {reason}");
            if !emit(events, ControlEvent::Disconnected, cancel).await {
                return Ok(());
            }
            let lived = opened.elapsed();
            if !backoff.connection_ended(lived) {
                let delay = backoff.next_delay();
                warn!(
                    "Connection lasted only {}; waiting {} before reconnecting",
                    seconds(lived),
                    seconds(delay)
                );
                if !sleep_or_cancel(delay, cancel).await {
                    return Ok(());
                }
            }
        }
    }
}

#[async_trait]
impl TaskSource for WsTaskSource {
    async fn run(
        &self,
        events: mpsc::Sender<ControlEvent>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(SourceError::Fatal(
                "the WebSocket task source is already running".to_owned(),
            ));
        }
        let result = self.connect_loop(&events, &cancel).await;
        self.stopped.store(true, Ordering::SeqCst);
        result
    }

    fn report(&self, report: TaskReport) -> Result<(), SourceError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(SourceError::Closed);
        }
        self.outbox.push(Outgoing::from(&decode::message(&report)));
        Ok(())
    }

    async fn flush(&self, timeout: Duration) -> bool {
        self.outbox.drained(timeout).await
    }
}

/// Decodes one inbound frame exactly as a connection does (the `oz-protocol` decoder, then the
/// conversion to domain values) and says whether the worker would act on it. For the fuzz
/// targets and benches; the connection itself never calls it.
#[doc(hidden)]
pub fn decode_inbound_frame(frame: &[u8], max_frame_size: usize) -> bool {
    !matches!(
        decode::decode_frame(frame, max_frame_size),
        decode::Inbound::Rejected(_)
    )
}

/// Sends an event unless `cancel` fires first; false when the source should stop.
async fn emit(
    events: &mpsc::Sender<ControlEvent>,
    event: ControlEvent,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        sent = events.send(event) => sent.is_ok(),
        () = cancel.cancelled() => false,
    }
}

/// Sleeps `delay`; false when `cancel` fired first.
async fn sleep_or_cancel(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = cancel.cancelled() => false,
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

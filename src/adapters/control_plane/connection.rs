//! One connection generation: a single task owns the socket and serves reads, writes, pings,
//! the liveness deadline and the close frame from one `select!` loop. Nothing outlives the
//! connection, so nothing of an old connection can touch a new one, and there is exactly one
//! writer.
//!
//! Every ping carries its number (8 bytes, big-endian) and the server's pong echoes it, which
//! tells the outbox which written reports the server has read (see [`super::outbox`]). After a
//! burst of reports the loop sends a ping at once, so a report is confirmed about one round
//! trip after its write; at most one such ping is in flight. A connection that ends without a
//! completed close handshake hands its unconfirmed reports back to the outbox, to be sent again.
//! While [`READ_PAUSE_AT`] reports wait to be written, the loop stops reading the socket
//! (backpressure: the server's further assignments wait in the socket buffers).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::adapters::control_plane::config::WsConfig;
use crate::adapters::control_plane::decode::{Inbound, decode_frame};
use crate::adapters::control_plane::outbox::{Outbox, Outgoing, READ_PAUSE_AT, next_message};
use crate::ports::ControlEvent;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum ConnectionEnd {
    /// `cancel` fired; the close frame was sent (or timed out).
    Cancelled,
    /// The app dropped the events receiver.
    EventsClosed,
    /// The connection failed or was closed by the server.
    Lost(String),
}

/// A WebSocket as the connection loop needs it: the real TCP/TLS socket, or an in-memory pipe
/// in tests (so liveness can be checked with paused time).
pub(crate) trait WsStream:
    futures_util::Stream<Item = Result<Message, WsError>>
    + futures_util::Sink<Message, Error = WsError>
    + Unpin
{
}

impl<T> WsStream for T where
    T: futures_util::Stream<Item = Result<Message, WsError>>
        + futures_util::Sink<Message, Error = WsError>
        + Unpin
{
}

/// Serves one established connection until it ends, then settles the outbox: reports written
/// on it are confirmed by a completed close handshake, and sent again otherwise.
pub(crate) async fn serve(
    socket: impl WsStream,
    config: &WsConfig,
    outbox: &Outbox,
    events: &mpsc::Sender<ControlEvent>,
    cancel: &CancellationToken,
) -> ConnectionEnd {
    let (end, closed_cleanly) = serve_inner(socket, config, outbox, events, cancel).await;
    if closed_cleanly {
        outbox.confirm_all();
    } else {
        let requeued = outbox.requeue_unconfirmed();
        if requeued > 0 {
            warn!(
                "{requeued} report(s) written on the ended connection were not confirmed by the \
                 server; they will be sent again on the next connection"
            );
        }
    }
    end
}

/// The connection loop; also says whether our close frame was answered.
async fn serve_inner(
    mut socket: impl WsStream,
    config: &WsConfig,
    outbox: &Outbox,
    events: &mpsc::Sender<ControlEvent>,
    cancel: &CancellationToken,
) -> (ConnectionEnd, bool) {
    let mut outbound = outbox.subscribe();
    let mut read_deadline = Instant::now() + config.pong_wait;
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Number of the last ping sent, and of the last one the server answered.
    let mut last_ping: u64 = 0;
    let mut last_pong: u64 = 0;
    loop {
        let reading = outbound.borrow().pending_len() < READ_PAUSE_AT;
        let confirm_due = last_pong == last_ping && outbox.awaits_ping(last_ping);
        // Biased: shutdown first, then reads (a pending frame proves liveness before the
        // deadline is checked), then the deadline, pings, the confirming ping (before writes,
        // so a long backlog does not starve confirmation) and writes.
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                let clean = close(&mut socket, config.close_timeout).await;
                return (ConnectionEnd::Cancelled, clean);
            }
            frame = socket.next(), if reading => {
                read_deadline = Instant::now() + config.pong_wait;
                let message = match frame {
                    None => return (ConnectionEnd::Lost("connection closed".to_owned()), false),
                    Some(Err(err)) => {
                        return (ConnectionEnd::Lost(format!("read error: {err}")), false);
                    }
                    Some(Ok(message)) => message,
                };
                let event = match message {
                    Message::Text(text) => inbound_event(text.as_bytes(), config.max_frame_size),
                    Message::Binary(bytes) => inbound_event(&bytes, config.max_frame_size),
                    Message::Close(frame) => {
                        log_close(frame.as_ref());
                        // The library echoes the close; the next read then ends the loop.
                        None
                    }
                    Message::Pong(payload) => {
                        if let Ok(number) = <[u8; 8]>::try_from(payload.as_ref()) {
                            let number = u64::from_be_bytes(number);
                            if number <= last_ping {
                                last_pong = last_pong.max(number);
                                outbox.confirm(number);
                            }
                        }
                        None
                    }
                    Message::Ping(_) | Message::Frame(_) => None,
                };
                if let Some(event) = event {
                    tokio::select! {
                        sent = events.send(event) => if sent.is_err() {
                            let clean = close(&mut socket, config.close_timeout).await;
                            return (ConnectionEnd::EventsClosed, clean);
                        },
                        () = cancel.cancelled() => {
                            let clean = close(&mut socket, config.close_timeout).await;
                            return (ConnectionEnd::Cancelled, clean);
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(read_deadline) => {
                return (ConnectionEnd::Lost(format!(
                    "nothing read for {:?} (no pong): connection considered dead",
                    config.pong_wait
                )), false);
            }
            _ = ping.tick() => {
                if let Err(reason) = send_ping(&mut socket, &mut last_ping, config).await {
                    return (ConnectionEnd::Lost(reason), false);
                }
            }
            () = std::future::ready(()), if confirm_due => {
                if let Err(reason) = send_ping(&mut socket, &mut last_ping, config).await {
                    return (ConnectionEnd::Lost(reason), false);
                }
            }
            message = next_message(&mut outbound) => {
                outbox.sending(&message);
                let sent = tokio::time::timeout(
                    config.write_timeout,
                    socket.send(Message::text(message.text.clone())),
                ).await;
                match sent {
                    Ok(Ok(())) => {
                        outbox.mark_written(last_ping);
                        log_sent(&message);
                    }
                    Ok(Err(err)) => {
                        return (ConnectionEnd::Lost(format!("WebSocket write error: {err}")), false);
                    }
                    Err(_) => {
                        return (
                            ConnectionEnd::Lost("WebSocket write error: write timed out".to_owned()),
                            false,
                        );
                    }
                }
            }
        }
    }
}

/// Sends the next numbered ping, bounded by the write timeout.
async fn send_ping(
    socket: &mut impl WsStream,
    last_ping: &mut u64,
    config: &WsConfig,
) -> Result<(), String> {
    *last_ping += 1;
    let payload = last_ping.to_be_bytes().to_vec();
    let sent = tokio::time::timeout(
        config.write_timeout,
        socket.send(Message::Ping(payload.into())),
    )
    .await;
    match sent {
        Ok(Ok(())) => {
            debug!("WebSocket ping sent");
            Ok(())
        }
        Ok(Err(err)) => Err(format!("Failed to send ping: {err}")),
        Err(_) => Err("Failed to send ping: write timed out".to_owned()),
    }
}

/// Decodes one data frame and logs a rejection; never logs the frame itself.
fn inbound_event(frame: &[u8], max_frame_size: usize) -> Option<ControlEvent> {
    debug!(bytes = frame.len(), "WebSocket received a data frame");
    match decode_frame(frame, max_frame_size) {
        Inbound::Assignment(assignment) => {
            debug!(task_id = %assignment.task_id, "Decoded task_assignment");
            Some(ControlEvent::Assigned(assignment))
        }
        Inbound::Cancellation(task_id) => {
            debug!(task_id = %task_id, "Decoded task_cancellation");
            Some(ControlEvent::CancelRequested(task_id))
        }
        Inbound::Rejected(rejection) => {
            match &rejection.task_id {
                Some(task_id) => {
                    warn!(task_id = %task_id, "Ignoring control-plane frame: {rejection}")
                }
                None => warn!("Ignoring control-plane frame: {rejection}"),
            }
            None
        }
    }
}

/// Logs a written report by its type and task id only: a failure message can carry the tail of
/// a task's output, so the frame itself never reaches the log, at any level.
fn log_sent(message: &Outgoing) {
    debug!(task_id = %message.task_id, bytes = message.text.len(), "WebSocket sent {}", message.kind);
}

fn log_close(frame: Option<&CloseFrame>) {
    match frame {
        Some(frame) if !matches!(frame.code, CloseCode::Away | CloseCode::Abnormal) => {
            error!(
                "WebSocket read error: close {} {}",
                u16::from(frame.code),
                frame.reason.as_str()
            );
        }
        _ => debug!("WebSocket closed by server"),
    }
}

/// Sends close 1000 and waits for the server's echo, all bounded by `timeout`; true when the
/// server answered (it has then read everything sent before the close frame).
async fn close(socket: &mut impl WsStream, timeout: Duration) -> bool {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let handshake = async {
        socket.send(Message::Close(Some(frame))).await?;
        let mut answered = false;
        while let Some(Ok(message)) = socket.next().await {
            answered |= matches!(message, Message::Close(_));
        }
        Ok::<bool, WsError>(answered)
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(answered)) => {
            debug!("WebSocket close frame sent");
            answered
        }
        Ok(Err(err)) => {
            warn!("Failed to close WebSocket cleanly: {err}");
            false
        }
        Err(_) => {
            warn!("Failed to close WebSocket cleanly: timed out after {timeout:?}");
            false
        }
    }
}

//! One connection generation: a single task owns the socket and serves reads, writes, pings,
//! the liveness deadline and the close frame from one `select!` loop. Nothing outlives the
//! connection, so nothing of an old connection can touch a new one, and there is exactly one
//! writer.

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
use crate::adapters::control_plane::outbox::{Outbox, Outgoing, next_message};
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

/// Serves one established connection until it ends.
pub(crate) async fn serve(
    mut socket: impl WsStream,
    config: &WsConfig,
    outbox: &Outbox,
    events: &mpsc::Sender<ControlEvent>,
    cancel: &CancellationToken,
) -> ConnectionEnd {
    let mut outbound = outbox.subscribe();
    let mut read_deadline = Instant::now() + config.pong_wait;
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Biased: shutdown first, then reads (a pending frame proves liveness before the
        // deadline is checked), then the deadline, pings and writes.
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                close(&mut socket, config.close_timeout).await;
                return ConnectionEnd::Cancelled;
            }
            frame = socket.next() => {
                read_deadline = Instant::now() + config.pong_wait;
                let message = match frame {
                    None => return ConnectionEnd::Lost("connection closed".to_owned()),
                    Some(Err(err)) => return ConnectionEnd::Lost(format!("read error: {err}")),
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
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
                };
                if let Some(event) = event {
                    tokio::select! {
                        sent = events.send(event) => if sent.is_err() {
                            close(&mut socket, config.close_timeout).await;
                            return ConnectionEnd::EventsClosed;
                        },
                        () = cancel.cancelled() => {
                            close(&mut socket, config.close_timeout).await;
                            return ConnectionEnd::Cancelled;
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(read_deadline) => {
                return ConnectionEnd::Lost(format!(
                    "nothing read for {:?} (no pong): connection considered dead",
                    config.pong_wait
                ));
            }
            _ = ping.tick() => {
                let sent = tokio::time::timeout(
                    config.write_timeout,
                    socket.send(Message::Ping(Vec::new().into())),
                ).await;
                match sent {
                    Ok(Ok(())) => debug!("WebSocket ping sent"),
                    Ok(Err(err)) => return ConnectionEnd::Lost(format!("Failed to send ping: {err}")),
                    Err(_) => return ConnectionEnd::Lost("Failed to send ping: write timed out".to_owned()),
                }
            }
            message = next_message(&mut outbound) => {
                let sent = tokio::time::timeout(
                    config.write_timeout,
                    socket.send(Message::text(message.text.clone())),
                ).await;
                match sent {
                    Ok(Ok(())) => {
                        outbox.pop_written();
                        log_sent(&message);
                    }
                    Ok(Err(err)) => {
                        return ConnectionEnd::Lost(format!("WebSocket write error: {err}"));
                    }
                    Err(_) => {
                        return ConnectionEnd::Lost("WebSocket write error: write timed out".to_owned());
                    }
                }
            }
        }
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

/// Sends close 1000 and waits for the server's echo, all bounded by `timeout`.
async fn close(socket: &mut impl WsStream, timeout: Duration) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let handshake = async {
        socket.send(Message::Close(Some(frame))).await?;
        while let Some(Ok(_)) = socket.next().await {}
        Ok::<(), WsError>(())
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(())) => debug!("WebSocket close frame sent"),
        Ok(Err(err)) => warn!("Failed to close WebSocket cleanly: {err}"),
        Err(_) => warn!("Failed to close WebSocket cleanly: timed out after {timeout:?}"),
    }
}

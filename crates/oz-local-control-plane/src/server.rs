//! The local control plane's server side: the accept loop, HTTP routing with hyper, the
//! WebSocket upgrade, the run API, one task per connection that owns its socket, and the
//! dispatcher that sends queued runs to connected workers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::{self, API_PREFIX, ApiRequest, Connections};
use super::api_model::assignment;
use super::ledger::Ledger;
use super::runs::{Reaction, RunStore};
use super::{
    ConnectionId, ConnectionInfo, Handshake, Received, RunOptions, SendError, ServerOptions,
    WS_PATH, timestamp,
};
use oz_protocol::{WorkerMessage, encode_assignment, encode_cancellation};

/// The largest run API body accepted.
const MAX_BODY: usize = 1 << 20;
/// How often the dispatcher runs without being woken: it promotes claimed runs, fails
/// orphaned ones and offers runs whose retry delay has passed.
const DISPATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// What the handle asks a connection task to do.
#[derive(Debug)]
pub(super) enum Command {
    /// Send a text frame.
    Send(String),
    /// Send a close frame with this code.
    Close(u16),
    /// Drop the socket without a close frame.
    Drop,
    /// Reset the TCP connection (`SO_LINGER` 0, then close: an RST, and whatever the worker
    /// sent that was not read yet is discarded).
    Reset,
}

/// State shared by the handle and the server tasks.
#[derive(Debug)]
pub(super) struct Shared {
    api_key: String,
    pub(super) options: watch::Sender<ServerOptions>,
    pub(super) connections: watch::Sender<Vec<ConnectionInfo>>,
    pub(super) handshakes: watch::Sender<Vec<Handshake>>,
    commands: std::sync::Mutex<BTreeMap<ConnectionId, mpsc::UnboundedSender<Command>>>,
    messages_tx: mpsc::UnboundedSender<Received>,
    pub(super) messages_rx: Mutex<mpsc::UnboundedReceiver<Received>>,
    next_id: AtomicU64,
    /// Runs created through the run API.
    pub(super) runs: std::sync::Mutex<RunStore>,
    run_options: RunOptions,
    /// The `worker_id` of each open, served connection.
    worker_ids: std::sync::Mutex<BTreeMap<ConnectionId, String>>,
    /// Wakes the dispatcher when a run may have become due: a run was created or cancelled,
    /// a worker's message freed or took a slot, a connection opened or ended.
    pub(super) wake: Notify,
    /// Every report received, per task, with duplicates counted.
    pub(super) ledger: std::sync::Mutex<Ledger>,
}

impl Shared {
    pub(super) fn new(api_key: String, run_options: RunOptions) -> Self {
        let (messages_tx, messages_rx) = mpsc::unbounded_channel();
        Self {
            api_key,
            options: watch::Sender::new(ServerOptions::default()),
            connections: watch::Sender::new(Vec::new()),
            handshakes: watch::Sender::new(Vec::new()),
            commands: std::sync::Mutex::new(BTreeMap::new()),
            messages_tx,
            messages_rx: Mutex::new(messages_rx),
            next_id: AtomicU64::new(1),
            runs: std::sync::Mutex::new(
                RunStore::new(run_options.retry_delay)
                    .configured(run_options.dispatch, run_options.orphan_timeout),
            ),
            wake: Notify::new(),
            run_options,
            worker_ids: std::sync::Mutex::new(BTreeMap::new()),
            ledger: std::sync::Mutex::new(Ledger::default()),
        }
    }

    pub(super) fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, RunStore> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `command` to connection `id`.
    fn send_to(&self, id: ConnectionId, command: Command) -> Result<(), SendError> {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        let tx = commands.get(&id).ok_or(SendError::NoConnection)?;
        tx.send(command).map_err(|_| SendError::NoConnection)
    }

    /// Promotes claimed runs and sends every due queued run to a connection of its worker id.
    fn dispatch(&self) {
        let workers = Connections::worker_ids(self);
        let now = tokio::time::Instant::now().into_std();
        let mut store = self.lock_runs();
        store.tick(now, timestamp::now_us(), &workers);
        for (run_id, conn) in store.offers(now, &workers) {
            let Some(run) = store.get(&run_id) else {
                continue;
            };
            let frame = encode_assignment(&assignment(run, &self.run_options));
            self.lock_ledger().assigned(&run_id);
            if self.send_to(conn, Command::Send(frame)).is_err() {
                store.undeliverable(&run_id);
            }
        }
    }

    /// Sends `command` to the newest open connection.
    pub(super) fn send_newest(&self, command: Command) -> Result<ConnectionId, SendError> {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        let (id, tx) = commands.iter().next_back().ok_or(SendError::NoConnection)?;
        tx.send(command).map_err(|_| SendError::NoConnection)?;
        Ok(*id)
    }

    /// Sends a fresh command to every open connection.
    pub(super) fn broadcast(&self, command: impl Fn() -> Command) {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        for tx in commands.values() {
            let _ = tx.send(command());
        }
    }

    /// Connection `id` of `worker_id` opened: it gets the pending cancellations of that id.
    fn on_connected(&self, id: ConnectionId, worker_id: &str) {
        let store = self.lock_runs();
        for run_id in store.on_connected(worker_id) {
            self.send_cancellation(id, &run_id);
        }
    }

    fn update_connection(&self, id: ConnectionId, change: impl FnOnce(&mut ConnectionInfo)) {
        self.connections.send_modify(|conns| {
            if let Some(conn) = conns.iter_mut().find(|c| c.id == id) {
                change(conn);
            }
        });
    }
}

impl Connections for Shared {
    fn worker_ids(&self) -> BTreeMap<ConnectionId, String> {
        self.worker_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn send_cancellation(&self, conn: ConnectionId, run_id: &str) -> bool {
        let frame = encode_cancellation(run_id);
        self.send_to(conn, Command::Send(frame)).is_ok()
    }
}

/// Accepts TCP connections until `stop` fires; each is served as HTTP/1.1 with upgrades.
pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        let inner_tracker = tracker.clone();
        // As Go's net package does for Warp's server: no Nagle delay on small frames (pongs,
        // assignments), which would otherwise wait for the worker's delayed ACK.
        let _ = stream.set_nodelay(true);
        // A second descriptor of the socket, kept by an upgraded connection so it can reset it.
        let fd = stream.as_fd().try_clone_to_owned().ok().map(Arc::new);
        tracker.spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                let stop = stop.clone();
                let tracker = inner_tracker.clone();
                let fd = fd.clone();
                async move { Ok::<_, Infallible>(route(request, shared, stop, tracker, fd).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let _ = connection.await;
        });
    }
}

/// Routes one HTTP request: [`WS_PATH`] upgrades, the run API under `/api/v1/agent/`.
async fn route(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
    fd: Option<Arc<OwnedFd>>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if path == WS_PATH {
        return upgrade(request, shared, stop, tracker, fd);
    }
    if !path.starts_with(&format!("{API_PREFIX}/agent/")) && path != format!("{API_PREFIX}/agent") {
        return text_response(StatusCode::NOT_FOUND, "not found");
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
        let detail = format!("the body could not be read (at most {MAX_BODY} bytes)");
        return api::problem(StatusCode::UNPROCESSABLE_ENTITY, &path, &detail);
    };
    let body = body.to_bytes();
    let api_request = ApiRequest {
        method: &parts.method,
        path: &path,
        query: parts.uri.query(),
        authorization: parts
            .headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        body: &body,
    };
    // The store stays locked while a cancel reads the connections and sends, so a connection
    // that opens meanwhile either is among them or gets the cancellation from `on_connected`.
    let response = {
        let mut store = shared.lock_runs();
        api::handle(&api_request, &shared.api_key, &mut store, shared.as_ref())
    };
    shared.wake.notify_one();
    response
}

/// Runs the dispatcher when woken (a slot freed, a run was created…) and every
/// [`DISPATCH_EVERY`], until `stop` fires.
pub(super) async fn dispatch_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(DISPATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => shared.dispatch(),
            () = shared.wake.notified() => shared.dispatch(),
        }
    }
}

fn upgrade(
    mut request: Request<Incoming>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
    fd: Option<Arc<OwnedFd>>,
) -> Response<Full<Bytes>> {
    let options = shared.options.borrow().clone();
    let expected = format!("Bearer {}", shared.api_key);
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == expected.as_bytes());
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let status = match (options.reject_handshakes, authorized, &key) {
        (Some(status), _, _) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        }
        (None, false, _) => StatusCode::UNAUTHORIZED,
        (None, true, None) => StatusCode::BAD_REQUEST,
        (None, true, Some(_)) => StatusCode::SWITCHING_PROTOCOLS,
    };
    let handshake = Handshake {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        status: status.as_u16(),
    };
    shared.handshakes.send_modify(|h| h.push(handshake.clone()));
    let Some(key) = key.filter(|_| status == StatusCode::SWITCHING_PROTOCOLS) else {
        let reason = status.canonical_reason().unwrap_or("rejected");
        return text_response(status, reason);
    };

    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let worker_id = handshake
        .query_pairs()
        .into_iter()
        .find(|(key, _)| key == "worker_id")
        .map(|(_, value)| value)
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut request);
    tracker.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (tx, rx) = mpsc::unbounded_channel();
        // Registered for sending before it is published as open, so a caller that saw it
        // open (`wait_connections`) can send to it at once.
        if !options.close_after_accept {
            shared
                .commands
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, tx);
            shared
                .worker_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, worker_id.clone());
            shared.on_connected(id, &worker_id);
            shared.wake.notify_one();
        }
        shared.connections.send_modify(|conns| {
            conns.push(ConnectionInfo {
                id,
                handshake,
                open: true,
                pings: 0,
                close_code: None,
            });
        });
        if options.close_after_accept {
            drop(socket);
        } else {
            serve_connection(id, socket, rx, &shared, &stop, fd.as_deref()).await;
            shared
                .worker_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            shared
                .commands
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            shared.lock_runs().on_disconnected(id, timestamp::now_us());
            shared.wake.notify_one();
        }
        shared.update_connection(id, |conn| conn.open = false);
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

type ServerSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Owns one connection's socket: runs commands from the handle and records what arrives.
async fn serve_connection(
    id: ConnectionId,
    mut socket: ServerSocket,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shared: &Shared,
    stop: &CancellationToken,
    fd: Option<&OwnedFd>,
) {
    let mut options = shared.options.subscribe();
    loop {
        let reading = options.borrow_and_update().answer_pings;
        tokio::select! {
            () = stop.cancelled() => return,
            _ = options.changed() => {}
            command = commands.recv() => match command {
                Some(Command::Send(text)) => {
                    if socket.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Command::Close(code)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
                    let _ = socket.close(Some(frame)).await;
                }
                Some(Command::Reset) => {
                    if let Some(fd) = fd {
                        let _ = socket2::SockRef::from(fd).set_linger(Some(std::time::Duration::ZERO));
                    }
                    return;
                }
                Some(Command::Drop) | None => return,
            },
            frame = socket.next(), if reading => match frame {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str().to_owned();
                    let message = WorkerMessage::parse(&text).ok();
                    // A repeated report (the worker re-sends what a dropped connection may have
                    // lost) is recorded, not applied again.
                    let duplicate = message
                        .as_ref()
                        .is_some_and(|message| shared.lock_ledger().record(&text, message));
                    let reaction = message.as_ref().filter(|_| !duplicate).map(|message| {
                        let now = tokio::time::Instant::now().into_std();
                        shared.lock_runs().on_message(id, message, now, timestamp::now_us())
                    });
                    if reaction == Some(Reaction::Applied) {
                        shared.wake.notify_one();
                    }
                    let task_id = message.as_ref().map(|m| m.task_id().to_owned());
                    let received = Received { connection: id, text, message, duplicate };
                    let _ = shared.messages_tx.send(received);
                    if reaction == Some(Reaction::CancelAgain) && let Some(task_id) = task_id {
                        let frame = encode_cancellation(&task_id);
                        if socket.send(Message::text(frame)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Ping(_))) => shared.update_connection(id, |c| c.pings += 1),
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    shared.update_connection(id, |c| c.close_code = code);
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

fn text_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

//! A local control plane: the project's stand-in for Warp's server, not part of the worker.
//!
//! [`LocalControlPlane`] speaks the SERVER side of the protocol on a loopback address, with the
//! `oz-protocol` crate's messages; it does not depend on the worker. Tests and the `oz-local-control-plane`
//! binary use it to push assignments and cancellations, read what the worker sends, inspect
//! handshakes, and misbehave on purpose (reject handshakes, stop answering pings, close right
//! after accepting, drop or reset connections, send raw frames). Reports are recorded per task
//! and applied idempotently: a repeated report is counted as a duplicate, not applied twice.
//!
//! It accepts TCP itself and serves HTTP/1.1 with hyper, upgrading only requests for
//! [`WS_PATH`]. Under `/api/v1/agent/runs` it also answers the part of Oz's public run API
//! that creates and follows runs (see `api`), so the official `oz-agent-sdk` can drive it;
//! those runs are routed to connected workers by `worker_id` (see `runs`).

mod api;
mod api_model;
mod ledger;
mod runs;
mod server;
mod timestamp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use ledger::TaskReports;
use oz_protocol::{WorkerMessage, encode_assignment, encode_cancellation};
pub use runs::{DEFAULT_ORPHAN_TIMEOUT, Dispatch, ORPHANED, RunState, error_for_reason};
use server::{Command, Shared};

/// The WebSocket path, as on Warp's server.
pub const WS_PATH: &str = "/api/v1/selfhosted/worker/ws";

/// Identifies one accepted WebSocket connection; ids count up from 1.
pub type ConnectionId = u64;

/// A running local control plane. Dropping it stops the server.
#[derive(Debug)]
pub struct LocalControlPlane {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// How the server behaves; change it at any time with the `set_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Answer every upgrade with this status (e.g. 401, 403, 503) instead of accepting.
    pub reject_handshakes: Option<u16>,
    /// When false the server stops reading its connections, so no pongs are sent and nothing
    /// is received until it is set back to true.
    pub answer_pings: bool,
    /// Accept the upgrade, then drop the connection at once.
    pub close_after_accept: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            reject_handshakes: None,
            answer_pings: true,
            close_after_accept: false,
        }
    }
}

/// How runs created through the run API become assignments.
#[derive(Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Sent as every assignment's `env_vars` (secrets: never logged).
    pub secrets: BTreeMap<String, String>,
    /// Sent as `docker_image`, when set.
    pub docker_image: Option<String>,
    /// Sent as `sidecar_image`, when set.
    pub sidecar_image: Option<String>,
    /// How long a rejected run waits before it is offered again: with
    /// [`Dispatch::FixedDelay`] after every rejection; with [`Dispatch::Capacity`] only after
    /// one for another reason than capacity (the worker is shutting down).
    pub retry_delay: Duration,
    /// How queued runs are offered (capacity-aware by default).
    pub dispatch: Dispatch,
    /// How long a claimed run may go without any connection of its worker id before it is
    /// marked `FAILED` as orphaned.
    pub orphan_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            secrets: BTreeMap::new(),
            docker_image: None,
            sidecar_image: None,
            retry_delay: Duration::from_secs(1),
            dispatch: Dispatch::Capacity,
            orphan_timeout: DEFAULT_ORPHAN_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("docker_image", &self.docker_image)
            .field("sidecar_image", &self.sidecar_image)
            .field("retry_delay", &self.retry_delay)
            .field("dispatch", &self.dispatch)
            .field("orphan_timeout", &self.orphan_timeout)
            .finish()
    }
}

/// A run as the local control plane tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// `run_id`.
    pub id: String,
    /// The state.
    pub state: RunState,
    /// `config.worker_host`.
    pub worker_host: String,
    /// How many times it was sent to a worker.
    pub offers: u32,
    /// The latest status message.
    pub status_message: Option<String>,
}

/// One upgrade request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Every header, names lower-case, in order.
    pub headers: Vec<(String, String)>,
    /// The status the server answered with (101 when accepted).
    pub status: u16,
}

impl Handshake {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The decoded query pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let query = self.query.as_deref().unwrap_or_default();
        url::form_urlencoded::parse(query.as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect()
    }
}

/// What the server knows about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection.
    pub id: ConnectionId,
    /// The upgrade request that opened it.
    pub handshake: Handshake,
    /// False once the server has seen it end (or dropped it).
    pub open: bool,
    /// Pings received from the worker.
    pub pings: u64,
    /// The close code the worker sent, if it sent a close frame.
    pub close_code: Option<u16>,
}

/// One frame the worker sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The connection it arrived on.
    pub connection: ConnectionId,
    /// The frame text.
    pub text: String,
    /// The decoded message, or `None` when the frame is not one of the worker messages.
    pub message: Option<WorkerMessage>,
    /// True when it repeats a report already received for the same task since its latest
    /// assignment (the worker sends again what a dropped connection may have lost); it was
    /// counted in [`LocalControlPlane::duplicate_reports`] and not applied again.
    pub duplicate: bool,
}

/// Why a frame could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection is open.
    #[error("no worker is connected")]
    NoConnection,
}

impl LocalControlPlane {
    /// Binds `addr` (use port 0 for an ephemeral port) and starts serving. `api_key` is the
    /// bearer token the worker must present; anything else gets 401.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(addr: SocketAddr, api_key: impl Into<String>) -> std::io::Result<Self> {
        Self::start_with(addr, api_key, RunOptions::default()).await
    }

    /// As [`LocalControlPlane::start`], with `runs` configuring the run API's assignments.
    /// The run API accepts the same bearer key as the worker connection.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start_with(
        addr: SocketAddr,
        api_key: impl Into<String>,
        runs: RunOptions,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(api_key.into(), runs));
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(server::dispatch_loop(shared.clone(), stop.clone()));
        tracker.spawn(server::accept_loop(
            listener,
            shared.clone(),
            stop.clone(),
            tracker.clone(),
        ));
        Ok(Self {
            shared,
            addr,
            stop,
            tracker,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/api/v1`: the `OZ_API_BASE_URL` for the SDK.
    pub fn api_base_url(&self) -> String {
        format!("http://{}{}", self.addr, api::API_PREFIX)
    }

    /// How many `task_rejected` messages put a run back in the queue so far.
    pub fn rejections(&self) -> u64 {
        let store = self.shared.runs.lock().unwrap_or_else(|e| e.into_inner());
        store.rejections()
    }

    /// Every run created through the run API, oldest first.
    pub fn runs(&self) -> Vec<RunSummary> {
        let store = self.shared.runs.lock().unwrap_or_else(|e| e.into_inner());
        store
            .all()
            .into_iter()
            .map(|run| RunSummary {
                id: run.id.clone(),
                state: run.state,
                worker_host: run.spec.worker_host.clone(),
                offers: run.offers,
                status_message: run.status_message.clone(),
            })
            .collect()
    }

    /// `ws://<addr>/api/v1/selfhosted/worker/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, WS_PATH)
    }

    /// Sends a `task_assignment` with `data` as its data object to the newest open connection.
    ///
    /// # Errors
    /// [`SendError::NoConnection`] when no worker is connected.
    pub fn assign(&self, data: &serde_json::Value) -> Result<ConnectionId, SendError> {
        if let Some(task_id) = data.get("task_id").and_then(serde_json::Value::as_str) {
            self.shared.lock_ledger().assigned(task_id);
        }
        self.send_raw(encode_assignment(data))
    }

    /// How many reports arrived that repeated one already received (see [`Received::duplicate`]).
    pub fn duplicate_reports(&self) -> u64 {
        self.shared.lock_ledger().duplicates()
    }

    /// Every task the worker reported on, with what arrived since its latest assignment.
    pub fn task_reports(&self) -> BTreeMap<String, TaskReports> {
        self.shared.lock_ledger().tasks()
    }

    /// Sends a `task_cancellation` for `task_id` to the newest open connection.
    ///
    /// # Errors
    /// [`SendError::NoConnection`] when no worker is connected.
    pub fn cancel(&self, task_id: &str) -> Result<ConnectionId, SendError> {
        self.send_raw(encode_cancellation(task_id))
    }

    /// Sends `text` as a text frame, verbatim, to the newest open connection.
    ///
    /// # Errors
    /// [`SendError::NoConnection`] when no worker is connected.
    pub fn send_raw(&self, text: impl Into<String>) -> Result<ConnectionId, SendError> {
        self.shared.send_newest(Command::Send(text.into()))
    }

    /// The next frame the worker sent, waiting at most `timeout`.
    pub async fn next_message(&self, timeout: Duration) -> Option<Received> {
        let mut messages = self.shared.messages_rx.lock().await;
        tokio::time::timeout(timeout, messages.recv())
            .await
            .ok()
            .flatten()
    }

    /// Every connection accepted so far, oldest first.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.shared.connections.borrow().clone()
    }

    /// Waits until `ready` holds for the connection list, at most `timeout`; returns the list
    /// it held for.
    pub async fn wait_connections(
        &self,
        timeout: Duration,
        ready: impl Fn(&[ConnectionInfo]) -> bool,
    ) -> Option<Vec<ConnectionInfo>> {
        let mut rx = self.shared.connections.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|conns| ready(conns))).await;
        match waited {
            Ok(Ok(conns)) => Some(conns.clone()),
            _ => None,
        }
    }

    /// Every upgrade request received so far, accepted or not.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.shared.handshakes.borrow().clone()
    }

    /// Waits until at least `count` upgrade requests arrived, at most `timeout`.
    pub async fn wait_handshakes(&self, count: usize, timeout: Duration) -> Option<Vec<Handshake>> {
        let mut rx = self.shared.handshakes.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|h| h.len() >= count)).await;
        match waited {
            Ok(Ok(handshakes)) => Some(handshakes.clone()),
            _ => None,
        }
    }

    /// Drops every open connection abruptly (no close frame).
    pub fn drop_all_connections(&self) {
        self.shared.broadcast(|| Command::Drop);
    }

    /// Resets every open connection at the TCP level (`SO_LINGER` 0, then close): the worker
    /// reads a connection reset, and what it wrote that the server had not read yet is lost.
    pub fn reset_all_connections(&self) {
        self.shared.broadcast(|| Command::Reset);
    }

    /// Sends a close frame with `code` on every open connection.
    pub fn close_all_connections(&self, code: u16) {
        self.shared.broadcast(|| Command::Close(code));
    }

    /// Answers future upgrades with `status` (`None` accepts again).
    pub fn set_reject_handshakes(&self, status: Option<u16>) {
        self.shared
            .options
            .send_modify(|o| o.reject_handshakes = status);
    }

    /// Stops (false) or resumes (true) reading connections, and so answering pings.
    pub fn set_answer_pings(&self, answer: bool) {
        self.shared.options.send_modify(|o| o.answer_pings = answer);
    }

    /// Drops connections right after accepting them (true) or serves them (false).
    pub fn set_close_after_accept(&self, close: bool) {
        self.shared
            .options
            .send_modify(|o| o.close_after_accept = close);
    }

    /// The current options.
    pub fn options(&self) -> ServerOptions {
        self.shared.options.borrow().clone()
    }

    /// A receiver notified whenever the connection list changes.
    pub fn watch_connections(&self) -> watch::Receiver<Vec<ConnectionInfo>> {
        self.shared.connections.subscribe()
    }

    /// Stops accepting, drops every connection and waits for the server's tasks.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for LocalControlPlane {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A sample `task_assignment` data object for `task_id`, shaped like Warp's server sends it
/// (capitalised `owner` keys, an agent config snapshot and a task-scoped env var).
pub fn sample_assignment(task_id: &str) -> serde_json::Value {
    serde_json::json!({
        "task_id": task_id,
        "execution_id": format!("{task_id}-exec-1"),
        "task": {
            "id": task_id,
            "title": format!("Local sample task {task_id}"),
            "task_definition": {"prompt": "Say hello"},
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "owner": {"Type": "USER", "Id": 1},
            "agent_config_snapshot": {"idle_timeout_minutes": 1}
        },
        "env_vars": {"WARP_API_KEY": "local-task-key"},
        "additional_sidecars": [],
        "additional_oz_args": []
    })
}

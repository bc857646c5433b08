//! The worker's small HTTP server (hyper 1, HTTP/1.1): `/metrics` (Prometheus text, when the
//! exporter is `prometheus`), `/healthz` (the process is alive) and `/readyz` (connected to the
//! control plane and the backend's preflight passed). Anything else is 404.
//!
//! `/metrics` answers as the Go worker's handler (client_golang's `promhttp.HandlerFor` with the
//! registry set): `Content-Type: text/plain; version=0.0.4; charset=utf-8; escaping=underscores`,
//! a gzip body when the request's `Accept-Encoding` accepts gzip, and the handler's own
//! `promhttp_metric_handler_errors_total{cause="encoding"|"gathering"}` counter, both primed
//! at 0, counting failures to encode (or gather) the exposition.
//!
//! The reference server's timeouts apply: 5 s to read request headers, 10 s of write
//! without progress, 120 s idle; it listens on every address the host resolves to.
//!
//! Every accept loop and connection runs on a [`TaskTracker`] its owner holds (the
//! [`HealthServer`], or the metrics pipeline): stopping cancels them and waits for them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::OtelError;
use crate::ports::Readiness;

/// The reference's Prometheus server read timeout, used for request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The reference's write timeout: a response write that makes no progress for this long
/// closes the connection (a client that stopped reading).
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The reference's idle timeout: a keep-alive connection with nothing to read for this long
/// is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// `/healthz` and `/readyz` on their own listener, for when the exporter is not `prometheus`
/// (the app wires `--health-listen`). Stops when dropped (without waiting) or on
/// [`HealthServer::stop`].
#[derive(Debug)]
pub struct HealthServer {
    addr: SocketAddr,
    _stop: DropGuard,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl HealthServer {
    /// Binds `addr` (port 0 picks a free one) and serves. Call from inside a tokio runtime.
    pub fn bind(addr: SocketAddr, readiness: Readiness) -> Result<HealthServer, OtelError> {
        let listeners = bind_all(&[addr], &addr.to_string())?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let addr = serve(listeners, None, readiness, stop.clone(), &tasks)?[0];
        Ok(HealthServer {
            addr,
            _stop: stop.clone().drop_guard(),
            stop,
            tasks,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, closes the open ones and waits until every task of the
    /// server has ended.
    pub async fn stop(&self) {
        stop_tasks(&self.stop, &self.tasks).await;
    }
}

/// Binds the Prometheus listeners on `host:port`: one per address `host` resolves to (so
/// `localhost` answers on both `127.0.0.1` and `::1` where it names both), all on one port.
/// An empty host means all interfaces.
pub(crate) fn bind_prometheus(host: &str, port: u16) -> Result<Vec<StdTcpListener>, OtelError> {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let shown = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| OtelError::Bind {
            addr: shown.clone(),
            source,
        })?
        .collect();
    bind_all(&addrs, &shown)
}

/// Binds every address of `addrs` (duplicates once), all on the port of the first one bound
/// when the port is 0. An address whose family this host lacks (no IPv6) is skipped; any
/// other failure, or no address bound at all, is an error naming `shown`.
pub(crate) fn bind_all(
    addrs: &[SocketAddr],
    shown: &str,
) -> Result<Vec<StdTcpListener>, OtelError> {
    let error = |source| OtelError::Bind {
        addr: shown.to_owned(),
        source,
    };
    let mut listeners: Vec<StdTcpListener> = Vec::new();
    let mut bound: Vec<SocketAddr> = Vec::new();
    let mut skipped = None;
    for addr in addrs {
        let mut addr = *addr;
        if addr.port() == 0
            && let Some(first) = bound.first()
        {
            addr.set_port(first.port());
        }
        if bound.contains(&addr) {
            continue;
        }
        match StdTcpListener::bind(addr) {
            Ok(listener) => {
                listener.set_nonblocking(true).map_err(error)?;
                bound.push(listener.local_addr().map_err(error)?);
                listeners.push(listener);
            }
            Err(source) if family_unavailable(&source) => {
                tracing::debug!(%addr, %source, "skipping an address this host cannot bind");
                skipped = Some(source);
            }
            Err(source) => return Err(error(source)),
        }
    }
    if listeners.is_empty() {
        return Err(error(skipped.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host resolved to no address",
            )
        })));
    }
    Ok(listeners)
}

/// `EADDRNOTAVAIL` or `EAFNOSUPPORT`: e.g. `::1` on a host without IPv6.
fn family_unavailable(error: &std::io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    error.kind() == std::io::ErrorKind::AddrNotAvailable
        || error.raw_os_error() == Some(EAFNOSUPPORT)
}

/// Cancels the server's tasks and waits until they have all ended (each one ends on `stop`).
pub(crate) async fn stop_tasks(stop: &CancellationToken, tasks: &TaskTracker) {
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}

/// Serves every listener on the current tokio runtime until `stop` fires, on tasks of `tasks`
/// (the caller owns them: see [`stop_tasks`]); returns the bound addresses, in order.
pub(crate) fn serve(
    listeners: Vec<StdTcpListener>,
    registry: Option<Registry>,
    readiness: Readiness,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> Result<Vec<SocketAddr>, OtelError> {
    let handler_errors = registry.as_ref().map(register_handler_errors).transpose()?;
    let state = Arc::new(Endpoints {
        registry,
        handler_errors,
        readiness,
    });
    let mut addrs = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let bind_error = |source| OtelError::Bind {
            addr: "listener".to_owned(),
            source,
        };
        addrs.push(listener.local_addr().map_err(bind_error)?);
        let listener = TcpListener::from_std(listener).map_err(bind_error)?;
        tasks.spawn(accept_loop(
            listener,
            Arc::clone(&state),
            stop.clone(),
            tasks.clone(),
        ));
    }
    Ok(addrs)
}

struct Endpoints {
    registry: Option<Registry>,
    handler_errors: Option<prometheus::IntCounterVec>,
    readiness: Readiness,
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<Endpoints>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "metrics/health listener accept failed");
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        let stop = stop.clone();
        tasks.spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(state.answer(&request)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(
                    TokioIo::new(Deadlines::new(stream, IDLE_TIMEOUT, WRITE_TIMEOUT)),
                    service,
                );
            tokio::select! {
                () = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

impl Endpoints {
    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".to_owned(),
            );
        }
        match (request.uri().path(), &self.registry) {
            ("/healthz", _) => text(StatusCode::OK, "ok\n".to_owned()),
            ("/readyz", _) => self.readyz(),
            ("/metrics", Some(registry)) => metrics(
                registry,
                self.handler_errors.as_ref(),
                accepts_gzip(request.headers()),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
        }
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        let connected = self.readiness.connected();
        let backend_ready = self.readiness.backend_ready();
        if connected && backend_ready {
            text(StatusCode::OK, "ready\n".to_owned())
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: connected={connected} backend_ready={backend_ready}\n"),
            )
        }
    }
}

/// The `Content-Type` of `/metrics`, as client_golang's promhttp sends the text format.
pub(crate) const METRICS_CONTENT_TYPE: &str =
    "text/plain; version=0.0.4; charset=utf-8; escaping=underscores";

/// The promhttp handler's own error counter, registered in the worker's registry with both
/// causes primed at 0, as client_golang does when the handler is given the registry.
pub(crate) fn register_handler_errors(
    registry: &Registry,
) -> Result<prometheus::IntCounterVec, OtelError> {
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "promhttp_metric_handler_errors_total",
            "Total number of internal errors encountered by the promhttp metric handler.",
        ),
        &["cause"],
    )
    .map_err(|error| OtelError::Exporter(error.to_string()))?;
    registry
        .register(Box::new(counter.clone()))
        .map_err(|error| OtelError::Exporter(error.to_string()))?;
    counter.with_label_values(&["gathering"]);
    counter.with_label_values(&["encoding"]);
    Ok(counter)
}

/// True when `Accept-Encoding` lists gzip with a non-zero quality.
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| {
            let mut pieces = part.split(';').map(str::trim);
            let coding = pieces.next().unwrap_or("");
            let refused = pieces.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn metrics(
    registry: &Registry,
    errors: Option<&prometheus::IntCounterVec>,
    gzip: bool,
) -> Response<Full<Bytes>> {
    let count_error = |cause: &str| {
        if let Some(errors) = errors {
            errors.with_label_values(&[cause]).inc();
        }
    };
    let encoder = TextEncoder::new();
    let mut body = Vec::with_capacity(16 * 1024);
    if let Err(error) = encoder.encode(&registry.gather(), &mut body) {
        count_error("encoding");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error encoding and sending metric family: {error}\n"),
        );
    }
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, METRICS_CONTENT_TYPE);
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::default(),
        );
        match std::io::Write::write_all(&mut encoder, &body).and_then(|()| encoder.finish()) {
            Ok(compressed) => {
                body = compressed;
                response = response.header(header::CONTENT_ENCODING, "gzip");
            }
            Err(error) => {
                count_error("encoding");
                tracing::debug!(%error, "gzip of the metrics exposition failed; sending it plain");
            }
        }
    }
    response
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// A stream with the reference server's idle and write timeouts, which hyper lacks: a read
/// that makes no progress for `idle` (nothing arrives on a kept-alive connection) and a write
/// that makes no progress for `write` (the client stopped reading) fail with `TimedOut`, and
/// hyper then closes the connection.
pub(crate) struct Deadlines<S> {
    inner: S,
    idle: Duration,
    write: Duration,
    read_stall: Option<Pin<Box<Sleep>>>,
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl<S> Deadlines<S> {
    pub(crate) fn new(inner: S, idle: Duration, write: Duration) -> Self {
        Deadlines {
            inner,
            idle,
            write,
            read_stall: None,
            write_stall: None,
        }
    }
}

/// Pending until `limit` has passed since the stall began (armed on the first call).
fn stalled(
    slot: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Error> {
    let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no progress for {limit:?}"),
        )),
        Poll::Pending => Poll::Pending,
    }
}

/// Passes a ready result through (ending the stall) or fails a stall past `limit`.
fn bounded<T>(
    polled: Poll<io::Result<T>>,
    slot: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    match polled {
        Poll::Ready(result) => {
            *slot = None;
            Poll::Ready(result)
        }
        Poll::Pending => stalled(slot, limit, cx).map(Err),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlines<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        bounded(polled, &mut this.read_stall, this.idle, cx)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlines<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        bounded(polled, &mut this.write_stall, this.write, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        bounded(polled, &mut this.write_stall, this.write, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        bounded(polled, &mut this.write_stall, this.write, cx)
    }
}

//! The worker's small HTTP server (hyper 1, HTTP/1.1): `/metrics` (Prometheus text, when the
//! exporter is `prometheus`), `/healthz` (the process is alive) and `/readyz` (connected to the
//! control plane and the backend's preflight passed). Anything else is 404.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::OtelError;
use crate::ports::Readiness;

/// The reference's Prometheus server read timeout, used for request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// `/healthz` and `/readyz` on their own listener, for when the exporter is not `prometheus`
/// (the app wires `--health-listen`). Stops when dropped or on [`HealthServer::stop`].
#[derive(Debug)]
pub struct HealthServer {
    addr: SocketAddr,
    _stop: DropGuard,
    stop: CancellationToken,
}

impl HealthServer {
    /// Binds `addr` (port 0 picks a free one) and serves. Call from inside a tokio runtime.
    pub fn bind(addr: SocketAddr, readiness: Readiness) -> Result<HealthServer, OtelError> {
        let listener = bind_listener(&[addr], &addr.to_string())?;
        let stop = CancellationToken::new();
        let addr = serve(listener, None, readiness, stop.clone())?;
        Ok(HealthServer {
            addr,
            _stop: stop.clone().drop_guard(),
            stop,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Binds the Prometheus listener on `host:port`; an empty host means all interfaces.
pub(crate) fn bind_prometheus(host: &str, port: u16) -> Result<StdTcpListener, OtelError> {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let shown = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| OtelError::Bind {
            addr: shown.clone(),
            source,
        })?
        .collect();
    bind_listener(&addrs, &shown)
}

fn bind_listener(addrs: &[SocketAddr], shown: &str) -> Result<StdTcpListener, OtelError> {
    let listener = StdTcpListener::bind(addrs).map_err(|source| OtelError::Bind {
        addr: shown.to_owned(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| OtelError::Bind {
            addr: shown.to_owned(),
            source,
        })?;
    Ok(listener)
}

/// Serves `listener` on the current tokio runtime until `stop` fires; returns the bound address.
pub(crate) fn serve(
    listener: StdTcpListener,
    registry: Option<Registry>,
    readiness: Readiness,
    stop: CancellationToken,
) -> Result<SocketAddr, OtelError> {
    let bind_error = |source| OtelError::Bind {
        addr: "listener".to_owned(),
        source,
    };
    let addr = listener.local_addr().map_err(bind_error)?;
    let listener = TcpListener::from_std(listener).map_err(bind_error)?;
    let state = Arc::new(Endpoints {
        registry,
        readiness,
    });
    tokio::spawn(accept_loop(listener, state, stop));
    Ok(addr)
}

struct Endpoints {
    registry: Option<Registry>,
    readiness: Readiness,
}

async fn accept_loop(listener: TcpListener, state: Arc<Endpoints>, stop: CancellationToken) {
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
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(state.answer(&request)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
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
            ("/metrics", Some(registry)) => metrics(registry),
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

fn metrics(registry: &Registry) -> Response<Full<Bytes>> {
    let encoder = TextEncoder::new();
    let mut body = Vec::with_capacity(16 * 1024);
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, encoder.format_type())
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default(),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode metrics: {error}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

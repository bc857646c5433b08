//! The HTTP upgrade: the URL with `worker_id` merged into its query, the request headers, and
//! the classification of dial failures. The API key appears only in the `Authorization` header.

use std::fmt;

use http::{HeaderValue, header};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::adapters::control_plane::config::WsConfig;

/// An established connection.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why the configured URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL.
    #[error("web socket URL is not a valid URL: {0}")]
    Invalid(String),
    /// Not `ws://` or `wss://`.
    #[error("web socket URL must use ws:// or wss://, got {0}://")]
    Scheme(String),
}

/// Returns `url` with `worker_id` set (replacing any existing values), keys sorted and values
/// form-encoded the way Go's `url.Values.Encode` does (space becomes `+`).
///
/// # Errors
/// [`UrlError`] for an unparsable URL or a scheme other than `ws`/`wss`.
pub fn worker_url(url: &str, worker_id: &str) -> Result<Url, UrlError> {
    let mut parsed = Url::parse(url).map_err(|err| UrlError::Invalid(err.to_string()))?;
    if !matches!(parsed.scheme(), "ws" | "wss") {
        return Err(UrlError::Scheme(parsed.scheme().to_owned()));
    }
    let mut pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(key, _)| key != "worker_id")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    pairs.push(("worker_id".to_owned(), worker_id.to_owned()));
    // A stable sort keeps the order of repeated keys, as Go does.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let query = pairs
        .iter()
        .map(|(key, value)| format!("{}={}", go_query_escape(key), go_query_escape(value)))
        .collect::<Vec<_>>()
        .join("&");
    parsed.set_query(Some(&query));
    Ok(parsed)
}

/// Go's `url.QueryEscape`: unreserved bytes stay, space becomes `+`, the rest is `%XX`.
fn go_query_escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char);
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Why a dial failed, in terms the reconnect loop logs.
#[derive(Debug)]
pub(crate) enum DialError {
    /// The server answered the upgrade with a non-101 status.
    Status(u16, String),
    /// The handshake did not finish within the timeout.
    Timeout,
    /// Anything else (DNS, TCP, TLS, protocol).
    Other(String),
}

impl DialError {
    /// True for 401 and 403: the key is wrong or revoked.
    pub(crate) fn is_auth(&self) -> bool {
        matches!(self, Self::Status(401 | 403, _))
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code, reason) => {
                write!(
                    f,
                    "failed to dial WebSocket: bad handshake: {code} {reason}"
                )
            }
            Self::Timeout => f.write_str("failed to dial WebSocket: handshake timed out"),
            Self::Other(err) => write!(f, "failed to dial WebSocket: {err}"),
        }
    }
}

/// Opens one connection: GET upgrade with `Authorization: Bearer <key>` and the User-Agent,
/// no compression, no sub-protocol.
pub(crate) async fn dial(config: &WsConfig, url: &Url) -> Result<Socket, DialError> {
    if url.scheme() == "wss" {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|err| DialError::Other(err.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", config.api_key.expose()))
        .map_err(|_| DialError::Other("the API key is not a valid header value".to_owned()))?;
    let user_agent = HeaderValue::from_str(&config.user_agent)
        .map_err(|_| DialError::Other("the User-Agent is not a valid header value".to_owned()))?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    request.headers_mut().insert(header::USER_AGENT, user_agent);
    let connect =
        tokio_tungstenite::connect_async_with_config(request, Some(transport_limits(config)), true);
    match tokio::time::timeout(config.handshake_timeout, connect).await {
        Err(_) => Err(DialError::Timeout),
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            Err(DialError::Status(
                status.as_u16(),
                status.canonical_reason().unwrap_or("").to_owned(),
            ))
        }
        Ok(Err(err)) => Err(DialError::Other(err.to_string())),
    }
}

/// The transport's hard limits: four times the decoder's limit, so a frame a little too large
/// is still read, rejected and logged rather than ending the connection.
pub(crate) fn transport_limits(config: &WsConfig) -> WebSocketConfig {
    let hard_limit = config.max_frame_size.saturating_mul(4);
    WebSocketConfig::default()
        .max_message_size(Some(hard_limit))
        .max_frame_size(Some(hard_limit))
}

//! The OTLP/HTTP client, wrapped so that a failing export says where and why: one warning per
//! failing export naming the endpoint and the cause (connection refused, DNS, TLS, timeout or
//! the collector's HTTP status), where the SDK itself only says `network error`. An identical
//! line is not repeated within [`REPEAT_WINDOW`]; the next one says how many were held back.

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// An identical failure line is logged at most once in this window.
pub(crate) const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Where the limiter reads the time (a manual clock in tests).
pub(crate) type Now = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Decides which failure lines are logged: a line differing from the last one always is; an
/// identical one only once [`REPEAT_WINDOW`] has passed since it was last logged.
#[derive(Debug, Default)]
pub(crate) struct RepeatLimiter {
    last: Option<(String, Instant)>,
    held_back: u64,
}

impl RepeatLimiter {
    /// The line to log for `line` at `now`, or `None` to hold it back.
    pub(crate) fn admit(&mut self, line: &str, now: Instant) -> Option<String> {
        if let Some((last, at)) = &self.last
            && last == line
            && now.saturating_duration_since(*at) < REPEAT_WINDOW
        {
            self.held_back += 1;
            return None;
        }
        let shown = match std::mem::take(&mut self.held_back) {
            0 => line.to_owned(),
            n => format!("{line} ({n} identical failures not logged since the last line)"),
        };
        self.last = Some((line.to_owned(), now));
        Some(shown)
    }

    /// An export succeeded: the next failure is logged whatever it says.
    pub(crate) fn reset(&mut self) {
        self.last = None;
        self.held_back = 0;
    }
}

/// The blocking reqwest client of the HTTP exporter, logging failures as described above.
pub(crate) struct LoggingClient {
    inner: reqwest::blocking::Client,
    endpoint: String,
    limiter: Mutex<RepeatLimiter>,
    now: Now,
}

impl std::fmt::Debug for LoggingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggingClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl LoggingClient {
    /// Wraps `inner`; `endpoint` is the configured endpoint, as shown in the log line.
    pub(crate) fn new(inner: reqwest::blocking::Client, endpoint: String, now: Now) -> Self {
        LoggingClient {
            inner,
            endpoint,
            limiter: Mutex::new(RepeatLimiter::default()),
            now,
        }
    }

    /// Logs the warning for a failed export when the limiter lets it through, and returns it.
    fn failed(&self, cause: &str) -> Option<String> {
        let line = format!("OTLP metrics export to {} failed: {cause}", self.endpoint);
        let admitted = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(&line, (self.now)());
        if let Some(line) = &admitted {
            tracing::warn!("{line}");
        }
        admitted
    }

    /// Looks at one export's outcome: a success re-arms the limiter; a failure is logged
    /// (see [`LoggingClient::failed`]). Returns the line logged, if any.
    pub(crate) fn observe(&self, result: &Result<Response<Bytes>, HttpError>) -> Option<String> {
        match result {
            Ok(response) if response.status().is_success() => {
                self.limiter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .reset();
                None
            }
            Ok(response) => self.failed(&format!(
                "the collector answered HTTP {}",
                response.status()
            )),
            Err(error) => self.failed(&cause(error.as_ref())),
        }
    }
}

#[async_trait]
impl HttpClient for LoggingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let result = self.inner.send_bytes(request).await;
        self.observe(&result);
        result
    }
}

/// A short cause (connection refused, DNS, TLS, timeout) followed by the error chain.
pub(crate) fn cause(error: &(dyn StdError + 'static)) -> String {
    let mut chain = Vec::new();
    let mut refused = false;
    let mut timed_out = false;
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        if let Some(reqwest) = error.downcast_ref::<reqwest::Error>() {
            timed_out |= reqwest.is_timeout();
        }
        let text = error.to_string();
        if chain.last() != Some(&text) {
            chain.push(text);
        }
        current = error.source();
    }
    let detail = chain.join(": ");
    let lower = detail.to_ascii_lowercase();
    let kind = if refused || lower.contains("connection refused") {
        "connection refused"
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        "DNS resolution failed"
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        "TLS failed"
    } else if timed_out || lower.contains("timed out") {
        "timed out"
    } else {
        "network error"
    };
    format!("{kind} ({detail})")
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests run a real HTTP server on a thread they join and read real time for the manual clock's origin"
)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use futures_util::FutureExt;

    use super::*;

    /// A client for `endpoint` whose limiter reads the returned manual clock.
    fn client(endpoint: &str) -> (LoggingClient, Arc<Mutex<Instant>>) {
        let clock = Arc::new(Mutex::new(Instant::now()));
        let read = clock.clone();
        let now: Now = Arc::new(move || *read.lock().unwrap());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let inner = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        (LoggingClient::new(inner, endpoint.to_owned(), now), clock)
    }

    /// One export through the real client; the line it logged, if any.
    fn export(client: &LoggingClient, url: &str) -> Option<String> {
        let request = Request::post(url).body(Bytes::from_static(b"x")).unwrap();
        // The blocking client completes the request within the first poll.
        let result = client.inner.send_bytes(request).now_or_never().unwrap();
        client.observe(&result)
    }

    #[test]
    fn a_closed_port_is_one_line_naming_the_endpoint_and_connection_refused_per_minute() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/v1/metrics");
        let (client, clock) = client(&url);
        let first = export(&client, &url).expect("the first failure is logged");
        assert!(first.contains(&url), "{first}");
        assert!(first.contains("connection refused"), "{first}");
        // The next intervals within the minute say the same: held back.
        *clock.lock().unwrap() += Duration::from_secs(10);
        assert_eq!(export(&client, &url), None);
        *clock.lock().unwrap() += Duration::from_secs(49);
        assert_eq!(export(&client, &url), None);
        // A minute after the last line: logged again, saying how many were held back.
        *clock.lock().unwrap() += Duration::from_secs(1);
        let again = export(&client, &url).expect("logged again after a minute");
        assert!(again.starts_with(&first), "{again}");
        assert!(again.contains("2 identical failures not logged"), "{again}");
    }

    #[test]
    fn a_collector_answering_503_is_named_with_its_status_and_a_new_cause_is_logged_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                stream
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .unwrap();
            }
        });
        let url = format!("http://{addr}/v1/metrics");
        let (client, _clock) = client(&url);
        let line = export(&client, &url).expect("logged");
        assert!(line.contains(&url) && line.contains("HTTP 503"), "{line}");
        assert_eq!(export(&client, &url), None, "identical within the minute");
        server.join().unwrap();
        // The server is gone: a different cause is logged at once.
        let refused = export(&client, &url).expect("a new cause is logged at once");
        assert!(refused.contains("connection refused"), "{refused}");
    }

    #[test]
    fn an_unknown_host_is_a_dns_failure() {
        let url = "http://collector.invalid:4318/v1/metrics";
        let (client, _clock) = client(url);
        let line = export(&client, url).expect("logged");
        assert!(line.contains("DNS resolution failed"), "{line}");
    }

    #[test]
    fn a_success_rearms_the_limiter() {
        let mut limiter = RepeatLimiter::default();
        let now = Instant::now();
        assert!(limiter.admit("a", now).is_some());
        assert!(limiter.admit("a", now).is_none());
        limiter.reset();
        assert_eq!(limiter.admit("a", now).as_deref(), Some("a"));
    }
}

//! A minimal HTTP/1.0 GET for loopback test servers (no client crate needed).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GETs `path_and_query` from `addr`: (status, body). Panics when it gets no answer (tests only).
pub(crate) async fn get(addr: SocketAddr, path_and_query: &str) -> (u16, String) {
    try_get(addr, path_and_query)
        .await
        .unwrap_or_else(|| panic!("no HTTP answer from {addr}{path_and_query}"))
}

/// GETs: (status, body), or `None` when `addr` does not answer (for polling a starting server).
pub(crate) async fn try_get(addr: SocketAddr, path_and_query: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

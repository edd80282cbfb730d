//! A minimal HTTP/1.0 GET for readiness probes on loopback.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// GET `path` from `addr` (host:port); the status code and body, or None when the server
/// does not answer within a second.
pub async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    get_within(addr, path, Duration::from_secs(1)).await
}

/// [`get`] with its own time limit, for large answers from a loaded server.
pub async fn get_within(addr: &str, path: &str, limit: Duration) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    timeout(limit, exchange).await.ok().flatten()
}

/// Serves `render()` as a Prometheus text exposition on every connection, until the
/// task is dropped.
pub async fn serve_text(listener: tokio::net::TcpListener, render: impl Fn() -> String) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let body = render();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

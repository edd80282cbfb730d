//! A webhook receiver on loopback: records every POST (headers and body) and answers
//! with the status it is set to, as a Slack or JSON webhook endpoint would.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// One request received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
    /// The status answered; 0 while (or if) the request is held.
    pub answered: u16,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    addr: String,
    status: Arc<AtomicU16>,
    hold: tokio::sync::watch::Sender<bool>,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free loopback port, answering 200.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let status = Arc::new(AtomicU16::new(200));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (status.clone(), received.clone());
        let hold = tokio::sync::watch::Sender::new(false);
        let h = hold.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, r, h) = (s.clone(), r.clone(), h.subscribe());
                tokio::spawn(async move {
                    let _ = serve(stream, &s, &r, h).await;
                });
            }
        });
        Ok(Receiver {
            addr,
            status,
            hold,
            received,
            task,
        })
    }

    /// The URL to post to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answer every request from now on with `code`.
    pub fn answer(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// While on, requests are recorded when they arrive and answered only once it is
    /// turned off: a sender that dies meanwhile never learns they arrived.
    pub fn hold(&self, on: bool) {
        self.hold.send_replace(on);
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    status: &AtomicU16,
    received: &Mutex<Vec<Received>>,
    mut hold: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before the headers ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before the body ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length])
        .unwrap_or(serde_json::Value::Null);
    let index = {
        let mut all = received.lock().unwrap_or_else(|p| p.into_inner());
        all.push(Received {
            headers,
            body,
            answered: 0,
        });
        all.len() - 1
    };
    let _ = hold.wait_for(|held| !*held).await;
    let code = status.load(Ordering::SeqCst);
    let answer = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(answer.as_bytes()).await?;
    received.lock().unwrap_or_else(|p| p.into_inner())[index].answered = code;
    Ok(())
}

//! A metrics endpoint whose counters grow at rates the test sets, for live scrapes.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Result;
use tokio::{net::TcpListener, task::JoinHandle};

#[derive(Debug, Clone, Copy)]
struct Counter {
    value: f64,
    rate: f64,
    since: Instant,
}

impl Counter {
    fn now(&self) -> f64 {
        self.value + self.rate * self.since.elapsed().as_secs_f64()
    }
}

/// Serves `/metrics` with counters, each growing at its own rate per second.
pub struct Exporter {
    addr: String,
    counters: Arc<Mutex<BTreeMap<String, Counter>>>,
    task: JoinHandle<()>,
}

impl Exporter {
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let counters: Arc<Mutex<BTreeMap<String, Counter>>> = Default::default();
        let shared = counters.clone();
        let task = tokio::spawn(async move {
            crate::http::serve_text(listener, move || render(&shared)).await
        });
        Ok(Self {
            addr,
            counters,
            task,
        })
    }

    /// host:port to scrape.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sets the growth rate (per second) of a series such as
    /// `http_requests_total{service="a",code="200"}`, keeping its current value.
    pub fn set_rate(&self, series: &str, rate: f64) {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let value = map.get(series).map(Counter::now).unwrap_or(0.0);
        map.insert(
            series.to_string(),
            Counter {
                value,
                rate,
                since: Instant::now(),
            },
        );
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn render(counters: &Mutex<BTreeMap<String, Counter>>) -> String {
    let map = counters.lock().unwrap_or_else(|p| p.into_inner());
    map.iter()
        .map(|(series, c)| format!("{series} {}\n", c.now()))
        .collect()
}

//! Prometheus on loopback, optionally with history backfilled by promtool.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail};

use crate::{Binaries, Server, free_port, process::wait_until, workdir::new_workdir};

/// What a Prometheus should scrape and hold.
#[derive(Debug, Clone, Default)]
pub struct PrometheusConfig {
    /// Scrape interval, e.g. "1s". Default "1s".
    pub scrape_interval: Option<String>,
    /// Scrape targets as (job, "host:port").
    pub targets: Vec<(String, String)>,
    /// OpenMetrics text to backfill with `promtool tsdb create-blocks-from openmetrics`
    /// before the server starts (must end with `# EOF`).
    pub backfill: Option<String>,
    /// Extra YAML appended to the config file (e.g. `rule_files:`).
    pub extra_config: Option<String>,
    /// Extra command-line flags (e.g. `--query.max-samples=1000`).
    pub flags: Vec<String>,
}

/// A running Prometheus. Killed on drop; `stop` and `restart` keep its data and port.
pub struct Prometheus {
    server: Option<Server>,
    port: u16,
    data: PathBuf,
    config_file: PathBuf,
    bin: Binaries,
    flags: Vec<String>,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub async fn start(config: PrometheusConfig) -> Result<Self> {
        let bin = Binaries::locate()?;
        let dir = new_workdir("prometheus")?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        if let Some(text) = &config.backfill {
            let input = dir.path().join("backfill.om");
            std::fs::write(&input, text)?;
            let out = Command::new(&bin.promtool)
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&input)
                .arg(&data)
                .output()
                .context("running promtool")?;
            if !out.status.success() {
                bail!(
                    "promtool backfill failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::fs::remove_file(&input)?;
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config_yaml(&config))?;
        let mut prom = Self {
            server: None,
            port: free_port()?,
            data,
            config_file,
            bin,
            flags: config.flags.clone(),
            dir,
        };
        prom.restart().await?;
        Ok(prom)
    }

    /// Base URL of the HTTP API, e.g. http://127.0.0.1:9090.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn promtool(&self) -> &std::path::Path {
        &self.bin.promtool
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Server::pid)
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Waits until every configured target has been scraped successfully (Prometheus
    /// discovers static targets a few seconds after it starts), as a Prometheus that
    /// has been running for a while would be.
    pub async fn wait_scraping(&self) {
        let addr = self.addr();
        crate::wait::eventually(
            "Prometheus scraping its targets",
            Duration::from_secs(60),
            || async {
                let body = crate::http::get(&addr, "/api/v1/targets?state=active").await;
                let up = body.as_ref().is_some_and(|(code, text)| {
                    *code == 200
                        && text.contains("\"health\":\"up\"")
                        && !text.contains("\"health\":\"unknown\"")
                });
                crate::wait::reached(up, body)
            },
        )
        .await;
    }

    /// Kills the server; data and port stay for `restart`.
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// Starts the server (again) on the same port and data; returns once it is ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.server = None;
        let mut cmd = Command::new(&self.bin.prometheus);
        cmd.arg(format!("--config.file={}", self.config_file.display()))
            .arg(format!("--storage.tsdb.path={}", self.data.display()))
            .arg(format!("--web.listen-address={}", self.addr()))
            // Backfilled history may be weeks old: keep it.
            .arg("--storage.tsdb.retention.time=10y")
            .arg("--log.level=warn")
            .args(&self.flags);
        let log = self.dir.path().join("prometheus.log");
        let mut server = Server::start("prometheus", cmd, &log)?;
        let addr = self.addr();
        wait_until(&mut server, Duration::from_secs(30), || async {
            matches!(crate::http::get(&addr, "/-/ready").await, Some((200, _)))
        })
        .await?;
        self.server = Some(server);
        Ok(())
    }
}

fn config_yaml(config: &PrometheusConfig) -> String {
    let interval = config.scrape_interval.as_deref().unwrap_or("1s");
    let mut yaml =
        format!("global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n");
    if !config.targets.is_empty() {
        yaml.push_str("scrape_configs:\n");
        for (job, addr) in &config.targets {
            yaml.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
    }
    if let Some(extra) = &config.extra_config {
        yaml.push_str(extra);
    }
    yaml
}

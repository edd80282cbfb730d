//! SloPolicy evaluation at scale: 100 SloPolicies x 2 objectives (availability and
//! latency) against one Prometheus holding 28 days of history.
//!
//! Prints queries per round, time per round (in-process reconciles, concurrency 8)
//! and the peak RSS of the `guardrails run` binary evaluating the same policies.
//! Run with `make bench`.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use guardrails::{
    api::SloPolicy,
    controller::{Context, slo_policy},
    telemetry::Metrics,
};
use guardrails_sandbox::{ControlPlane, Prometheus, PrometheusConfig, free_port, http};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, api::PostParams};

const POLICIES: usize = 100;
const ROUNDS: usize = 3;

fn history(end: i64) -> String {
    let mut times = Vec::new();
    let mut t = end - (28 * 86400 + 3600);
    while t <= end {
        times.push(t);
        t += if end - t <= 7 * 3600 { 60 } else { 1800 };
    }
    let mut out = String::from("# TYPE http_requests counter\n");
    let series = |out: &mut String, name: &str, labels: &str, share: f64| {
        for &t in &times {
            let v = (t - times[0]) as f64 * 10.0 * share;
            let _ = writeln!(out, "{name}{{{labels}}} {v} {t}");
        }
    };
    for i in 0..POLICIES {
        series(
            &mut out,
            "http_requests_total",
            &format!("service=\"s{i}\",code=\"200\""),
            0.999,
        );
        series(
            &mut out,
            "http_requests_total",
            &format!("service=\"s{i}\",code=\"500\""),
            0.001,
        );
    }
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for i in 0..POLICIES {
        series(
            &mut out,
            "http_request_duration_seconds_bucket",
            &format!("service=\"s{i}\",le=\"0.3\""),
            0.995,
        );
        series(
            &mut out,
            "http_request_duration_seconds_bucket",
            &format!("service=\"s{i}\",le=\"+Inf\""),
            1.0,
        );
        series(
            &mut out,
            "http_request_duration_seconds_count",
            &format!("service=\"s{i}\""),
            1.0,
        );
        series(
            &mut out,
            "http_request_duration_seconds_sum",
            &format!("service=\"s{i}\""),
            0.1,
        );
    }
    out.push_str("# EOF\n");
    out
}

fn policy(i: usize) -> SloPolicy {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: guardrails.dev/v1alpha1
kind: SloPolicy
metadata: {{name: s{i}, namespace: bench}}
spec:
  interval: 10s
  objectives:
    - name: availability
      target: 99.9
      indicator: {{ratio: {{errors: 'http_requests_total{{service="s{i}",code="500"}}', total: 'http_requests_total{{service="s{i}"}}'}}}}
    - name: latency
      target: 99
      indicator: {{latency: {{histogram: 'http_request_duration_seconds_bucket{{service="s{i}"}}', threshold: "0.3"}}}}
"#
    ))
    .expect("bench policy")
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary =
        std::env::var("GUARDRAILS_BIN").unwrap_or_else(|_| "target/release/guardrails".into());
    anyhow::ensure!(
        std::path::Path::new(&binary).is_file(),
        "{binary} not found: build it first (make bench does)"
    );
    let setup = Instant::now();
    let cp = ControlPlane::start().await?;
    let client = cp.client()?;
    cp.install_crds(&client, &guardrails::api::crds()).await?;
    let now = Timestamp::now().as_second();
    let prom = Prometheus::start(PrometheusConfig {
        backfill: Some(history(now - now % 60 - 60)),
        ..Default::default()
    })
    .await?;
    let ns = "bench".to_string();
    let mut namespace = k8s_openapi::api::core::v1::Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    Api::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let api = Api::<SloPolicy>::namespaced(client.clone(), &ns);
    let mut policies = Vec::new();
    for i in 0..POLICIES {
        policies.push(Arc::new(
            api.create(&PostParams::default(), &policy(i)).await?,
        ));
    }
    println!(
        "setup: {:.1}s (control plane, Prometheus with 28d x {} series, {POLICIES} SloPolicies)",
        setup.elapsed().as_secs_f64(),
        POLICIES * 6
    );

    // In-process rounds: every policy reconciled once, 8 at a time.
    let ctx = Context::new(client.clone(), Some(prom.url()), Metrics::default());
    println!("round  policies  queries  seconds  queries/s");
    for round in 1..=ROUNDS {
        let before = ctx.sources.queries_sent();
        let start = Instant::now();
        let results: Vec<_> = stream::iter(policies.iter().cloned())
            .map(|p| slo_policy::reconcile(p, ctx.clone()))
            .buffer_unordered(8)
            .collect()
            .await;
        let secs = start.elapsed().as_secs_f64();
        let failed = results.iter().filter(|r| r.is_err()).count();
        anyhow::ensure!(failed == 0, "{failed} reconciles failed");
        let queries = ctx.sources.queries_sent() - before;
        println!(
            "{round:>5}  {POLICIES:>8}  {queries:>7}  {secs:>7.2}  {:>9.0}",
            queries as f64 / secs
        );
    }

    // The operator binary on the same policies: peak RSS over three intervals.
    let port = free_port()?;
    let mut child = Command::new(&binary)
        .args(["run", "--namespace", &ns, "--prometheus-url", &prom.url()])
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(35) {
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = http::get(&format!("127.0.0.1:{port}"), "/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let reconciles = metric_sum(&metrics, "guardrails_reconcile_total{");
    let queries = metric_sum(&metrics, "guardrails_prometheus_queries_total");
    println!(
        "operator binary: peak RSS {:.1} MiB over 35s; {reconciles:.0} reconciles, {queries:.0} queries ({:.1} per policy evaluation)",
        peak as f64 / 1024.0,
        queries / reconciles.max(1.0)
    );
    Ok(())
}

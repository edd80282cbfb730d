//! Time to recover from a bad canary, and API writes per rollout.
//!
//! Five times: a canary with 20% errors (analysis interval 5s, failureLimit 2); time
//! from the first bad sample Prometheus scraped (its scrape timestamp) to the canary
//! Deployment at zero replicas, and to detection (first failing tick). Then one healthy
//! rollout through four steps: the operator's API writes from the new revision to
//! Succeeded. Run with `make bench`.

use std::time::{Duration, Instant};

use guardrails::{
    api::{GuardedRollout, Phase},
    controller::{self, Context},
    prometheus::{MetricSource, PrometheusSource},
    telemetry::Metrics,
};
use guardrails_sandbox::{ControlPlane, Prometheus, PrometheusConfig, Simulator, simulator};
use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

const RUNS: usize = 5;

fn target(error_rate: f64) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "labels": {"app": "app"}},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}, "annotations": {simulator::ERROR_RATE: error_rate.to_string()}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
    }))
    .unwrap()
}

fn rollout(steps: serde_json::Value) -> GuardedRollout {
    serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": "app"},
        "spec": {"targetRef": {"name": "app"}, "steps": steps,
            "analysis": {"interval": "5s", "failureLimit": 2, "checks": [{"name": "error-rate",
                "query": "(sum(rate(http_requests_total{namespace=\"{{namespace}}\",pod=~\"{{canary_pods}}\",code=\"500\"}[{{interval}}])) or vector(0)) / sum(rate(http_requests_total{namespace=\"{{namespace}}\",pod=~\"{{canary_pods}}\"}[{{interval}}]))",
                "max": 0.05}]}}
    }))
    .unwrap()
}

async fn phase(api: &Api<GuardedRollout>) -> Option<Phase> {
    api.get("app").await.ok()?.status?.phase
}

async fn wait_phase(api: &Api<GuardedRollout>, want: Phase) -> anyhow::Result<()> {
    let start = Instant::now();
    while phase(api).await != Some(want) {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "phase {want:?} not reached"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn ship(client: &Client, ns: &str, image: &str, error_rate: f64) -> anyhow::Result<()> {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {simulator::ERROR_RATE: error_rate.to_string()}},
        "spec": {"containers": [{"name": "app", "image": image}]}}}});
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch("app", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    Ok(())
}

async fn setup(
    client: &Client,
    cp: &ControlPlane,
    name: &str,
    steps: serde_json::Value,
) -> anyhow::Result<String> {
    let ns = cp.namespace(client, name).await?;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &target(0.0))
        .await?;
    let api = Api::<GuardedRollout>::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &rollout(steps)).await?;
    wait_phase(&api, Phase::Idle).await?;
    Ok(ns)
}

fn writes(metrics: &Metrics) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("guardrails_api_writes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn summary(label: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let p50 = v[v.len() / 2];
    let max = v[v.len() - 1];
    let all: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
    println!(
        "{label}: p50 {p50:.1}s, max {max:.1}s over {} runs ({})",
        v.len(),
        all.join(", ")
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client()?;
    cp.install_crds(&client, &guardrails::api::crds()).await?;
    let sim = Simulator::start(client.clone(), None).await?;
    let prom = Prometheus::start(PrometheusConfig {
        targets: vec![("sim".into(), sim.addr().to_string())],
        ..Default::default()
    })
    .await?;
    let source = PrometheusSource::new(&prom.url())?;
    let metrics = Metrics::default();
    let ctx = Context::new(client.clone(), Some(prom.url()), metrics.clone());
    let operator = tokio::spawn(controller::run(ctx, None, 8));

    let mut recover = Vec::new();
    let mut detect = Vec::new();
    for run in 1..=RUNS {
        let ns = setup(
            &client,
            &cp,
            &format!("bad-{run}"),
            json!([{"setWeight": 25}, {"pause": {"duration": "5m"}}]),
        )
        .await?;
        let api = Api::<GuardedRollout>::namespaced(client.clone(), &ns);
        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
        ship(&client, &ns, "app:2", 0.2).await?;
        let bad = format!(
            "timestamp(min(http_requests_total{{namespace=\"{ns}\",pod=~\"app-canary-.+\",code=\"500\"}} > 0))"
        );
        let start = Instant::now();
        let mut first_bad: Option<f64> = None;
        let zero_at = loop {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(120),
                "run {run}: no rollback"
            );
            if first_bad.is_none() {
                first_bad = source.scalar(&bad, Timestamp::now()).await?;
            }
            let canary = deployments.get_opt("app-canary").await?;
            let drained = canary.is_some_and(|c| {
                c.spec.and_then(|s| s.replicas) == Some(0)
                    && c.status.and_then(|s| s.ready_replicas).unwrap_or(0) == 0
            });
            if first_bad.is_some() && drained && phase(&api).await == Some(Phase::RolledBack) {
                break Timestamp::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let first_bad = first_bad.unwrap_or_default();
        let status = api.get("app").await?.status.unwrap_or_default();
        let detected = status.history.first().and_then(|h| h.detected_at.clone());
        let secs = |t: Timestamp| t.as_millisecond() as f64 / 1000.0 - first_bad;
        recover.push(secs(zero_at));
        if let Some(d) = detected {
            detect.push(secs(d.0));
        }
        println!(
            "run {run}: first bad sample -> canary at 0 replicas {:.1}s",
            secs(zero_at)
        );
    }
    summary(
        "time to recover (first bad sample scraped -> canary at zero)",
        recover,
    );
    summary(
        "time to detect (first bad sample scraped -> first failing tick)",
        detect,
    );

    let ns = setup(&client, &cp, "healthy", json!([{"setWeight": 25}, {"pause": {"duration": "5s"}}, {"setWeight": 50}, {"pause": {"duration": "5s"}}])).await?;
    let api = Api::<GuardedRollout>::namespaced(client.clone(), &ns);
    let before = writes(&metrics);
    ship(&client, &ns, "app:2", 0.0).await?;
    wait_phase(&api, Phase::Progressing).await?;
    wait_phase(&api, Phase::Succeeded).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "API writes for one healthy rollout of 4 steps (status, deployments, annotations, events): {:.0}",
        writes(&metrics) - before
    );
    operator.abort();
    Ok(())
}

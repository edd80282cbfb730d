//! Everything the stories run on: etcd + kube-apiserver, Prometheus with four weeks of
//! history, the simulator, the operator binary, the portal's Deployments and the
//! examples. Every server dies with this process.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use guardrails::api::{GuardedRollout, PromDuration, SloPolicy};
use guardrails_sandbox::simulator::RPS;
use guardrails_sandbox::{
    ControlPlane, Prometheus, PrometheusConfig, Server, Simulator, free_port,
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace};
use kube::{Api, Client, api::PostParams};
use serde_json::json;

use crate::{
    history,
    state::{Servers, StateDir},
    timeline::Timeline,
};

pub const NAMESPACE: &str = "portal";
/// (service, replicas of its primary, requests per second per pod)
pub const SERVICES: [(&str, i32, &str); 3] = [
    ("share-link", 4, "100"),
    ("asset-pipeline", 3, "20"),
    ("notification", 2, "100"),
];

/// Demo timings: the examples' production values would make a demo take an hour.
pub const ANALYSIS_INTERVAL: &str = "5s";
pub const PAUSE: &str = "10s";
pub const SLO_INTERVAL: &str = "10s";

pub struct Cluster {
    pub client: Client,
    pub prometheus_url: String,
    // Dropped in this order: the operator first, the control plane last.
    _operator: Server,
    _sim: Simulator,
    _prom: Prometheus,
    _cp: ControlPlane,
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn operator_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("driver binary has no folder")?
        .join("guardrails");
    if !bin.exists() {
        bail!(
            "operator binary {} not found: build it with `cargo build --bins`",
            bin.display()
        );
    }
    Ok(bin)
}

impl Cluster {
    pub async fn start(state: &StateDir, tl: &Timeline) -> Result<Self> {
        let operator_bin = operator_binary()?;
        let cp = start_control_plane(state, tl).await?;
        let client = cp.client()?;
        let sim = Simulator::start(client.clone(), Some(NAMESPACE)).await?;
        let prom = start_prometheus(&sim, tl).await?;
        let metrics_port = free_port()?;
        let mut cmd = Command::new(&operator_bin);
        cmd.arg("run")
            .arg(format!("--prometheus-url={}", prom.url()))
            .arg(format!("--namespace={NAMESPACE}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .env("KUBECONFIG", state.kubeconfig());
        let operator = Server::start("guardrails", cmd, &state.operator_log())?;
        tl.say(
            "setup",
            format!(
                "operator running (guardrails run), metrics at http://127.0.0.1:{metrics_port}/metrics, log {}",
                state.operator_log().display()
            ),
        );
        record_servers(state, &cp, &prom, &operator, metrics_port)?;
        let cluster = Self {
            client,
            prometheus_url: prom.url(),
            _operator: operator,
            _sim: sim,
            _prom: prom,
            _cp: cp,
        };
        cluster.deploy_services(tl).await?;
        cluster.apply_examples(tl).await?;
        Ok(cluster)
    }

    async fn deploy_services(&self, tl: &Timeline) -> Result<()> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        for (service, replicas, rps) in SERVICES {
            let d: Deployment = serde_json::from_value(json!({
                "metadata": {"name": service, "labels": {"app": service}},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": service}},
                    "template": {
                        "metadata": {"labels": {"app": service}, "annotations": {RPS: rps}},
                        "spec": {"containers": [{"name": "app", "image": format!("portal/{service}:1.0")}]}
                    }
                }
            }))?;
            api.create(&PostParams::default(), &d).await?;
        }
        tl.say(
            "setup",
            "Deployments share-link (4 replicas, 100 requests/s each), asset-pipeline (3, 20/s) and notification (2, 100/s) running version 1.0",
        );
        Ok(())
    }

    async fn apply_examples(&self, tl: &Timeline) -> Result<()> {
        let slos: Api<SloPolicy> = Api::namespaced(self.client.clone(), NAMESPACE);
        let rollouts: Api<GuardedRollout> = Api::namespaced(self.client.clone(), NAMESPACE);
        let pp = PostParams::default();
        for (service, ..) in SERVICES {
            let dir = examples_dir().join(service);
            let mut slo: SloPolicy = read_yaml(&dir.join("slopolicy.yaml"))?;
            slo.spec.interval = SLO_INTERVAL.parse()?;
            slos.create(&pp, &slo).await?;
            let mut gr: GuardedRollout = read_yaml(&dir.join("guardedrollout.yaml"))?;
            demo_timings(&mut gr)?;
            rollouts.create(&pp, &gr).await?;
        }
        tl.say(
            "setup",
            format!(
                "applied examples/{{share-link,asset-pipeline,notification}}/ with demo timings: \
                 analysis every {ANALYSIS_INTERVAL}, timed pauses {PAUSE}, SLO evaluation every {SLO_INTERVAL}"
            ),
        );
        Ok(())
    }
}

/// Shortens the example's intervals and timed pauses; manual pauses stay manual.
pub fn demo_timings(gr: &mut GuardedRollout) -> Result<()> {
    gr.spec.analysis.interval = ANALYSIS_INTERVAL.parse()?;
    let pause: PromDuration = PAUSE.parse()?;
    for step in &mut gr.spec.steps {
        if let Some(p) = step.pause.as_mut()
            && p.duration.is_some()
        {
            p.duration = Some(pause.clone());
        }
    }
    Ok(())
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn prom_port(p: &Prometheus) -> Result<u16> {
    p.addr()
        .rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .context("Prometheus address without a port")
}

/// etcd and kube-apiserver with the CRDs and the demo namespace; its kubeconfig in the
/// state directory.
async fn start_control_plane(state: &StateDir, tl: &Timeline) -> Result<ControlPlane> {
    tl.say("setup", "starting etcd and kube-apiserver on loopback");
    let cp = ControlPlane::start().await?;
    let client = cp.client()?;
    cp.install_crds(&client, &guardrails::api::crds()).await?;
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client)
        .create(&PostParams::default(), &ns)
        .await?;
    let kubeconfig = std::fs::read_to_string(cp.kubeconfig())?
        .replace("namespace: default", &format!("namespace: {NAMESPACE}"));
    std::fs::write(state.kubeconfig(), kubeconfig)?;
    tl.say(
        "setup",
        format!(
            "control plane ready at {}, CRDs installed, namespace {NAMESPACE}",
            cp.url()
        ),
    );
    Ok(cp)
}

/// Prometheus scraping the simulator, with the portal's request history backfilled.
async fn start_prometheus(sim: &Simulator, tl: &Timeline) -> Result<Prometheus> {
    let end = k8s_openapi::jiff::Timestamp::now().as_second() - 300;
    let prom = Prometheus::start(PrometheusConfig {
        targets: vec![("portal".into(), sim.addr().to_string())],
        backfill: Some(history::openmetrics(&history::portal(), NAMESPACE, end)),
        ..Default::default()
    })
    .await?;
    tl.say(
        "setup",
        format!(
            "Prometheus ready at {} with {} days of request history; scraping the simulated pods every second",
            prom.url(),
            history::DAYS
        ),
    );
    for p in history::portal() {
        let incident = if p.incident.is_some() {
            ", mostly by an incident four days ago"
        } else {
            ""
        };
        tl.say(
            p.service,
            format!(
                "history: {:.0}% of the error budget spent ({}% objective){incident}",
                history::consumed(p.error_ratio(), p.target),
                p.target,
            ),
        );
    }
    Ok(prom)
}

/// The ports and processes `make demo-down` stops.
fn record_servers(
    state: &StateDir,
    cp: &ControlPlane,
    prom: &Prometheus,
    operator: &Server,
    metrics_port: u16,
) -> Result<()> {
    let mut ports = vec![("prometheus".to_string(), prom_port(prom)?)];
    let names = ["etcd", "etcd-peer", "kube-apiserver"];
    ports.extend(
        names
            .iter()
            .map(|n| n.to_string())
            .zip(cp.ports().iter().copied()),
    );
    ports.push(("operator-metrics".into(), metrics_port));
    let mut processes: Vec<(String, u32)> = vec![
        ("etcd".into(), cp.pids()[0]),
        ("kube-apiserver".into(), cp.pids()[1]),
        ("guardrails".into(), operator.pid()),
    ];
    if let Some(pid) = prom.pid() {
        processes.push(("prometheus".into(), pid));
    }
    state.write_servers(&Servers { processes, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_get_demo_timings_and_keep_manual_pauses() {
        let mut gr: GuardedRollout =
            read_yaml(&examples_dir().join("notification/guardedrollout.yaml")).unwrap();
        demo_timings(&mut gr).unwrap();
        assert_eq!(gr.spec.analysis.interval.as_str(), ANALYSIS_INTERVAL);
        let pauses: Vec<Option<String>> = gr
            .spec
            .steps
            .iter()
            .filter_map(|s| s.pause.as_ref())
            .map(|p| p.duration.as_ref().map(|d| d.to_string()))
            .collect();
        assert_eq!(pauses, vec![Some("10s".into()), Some("10s".into()), None]);
        gr.spec.validate().unwrap();
    }
}

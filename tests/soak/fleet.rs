//! The services under delivery: each a Deployment and a GuardedRollout (some through a
//! Gateway API HTTPRoute), shipped one revision after another, good or bad at random,
//! some paused by a person for a while mid-canary.

use std::time::{Duration, Instant};

use guardrails::{
    api::{GuardedRollout, HistoryEntry, Outcome, Phase},
    rollout::workloads,
};
use guardrails_sandbox::simulator;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service as KubeService};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::ledger::{Ledger, Rng};

/// Steps of every rollout (setWeight, pause, setWeight, pause).
pub const STEPS: i64 = 4;

/// Replicas of every target: 25% and 50% need different canary sizes, so no two steps
/// can complete in one reconcile and the step order can be checked write by write.
const REPLICAS: i32 = 4;
/// Error rate of a bad revision's pods.
const BAD: f64 = 0.5;
/// Share of revisions that are good.
const GOOD_SHARE: f64 = 0.6;
/// How long a person holds a paused canary.
const HOLD: Duration = Duration::from_secs(6);

/// The providerErrors timeout of every rollout; outages longer than this may roll back.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Service {
    pub name: String,
    pub gateway: bool,
    /// Someone sets spec.paused for a while during each canary.
    pub pauses: bool,
    version: u32,
    /// The image the primary must run: the last one promoted.
    pub stable: String,
    pub shipped: Option<Shipped>,
    paused_at: Option<Instant>,
}

/// A revision under delivery.
pub struct Shipped {
    pub image: String,
    pub good: bool,
    /// Its revision as the operator names it (the hash of the target's pod template).
    revision: String,
    pub paused: bool,
}

pub fn services(n: usize) -> Vec<Service> {
    (0..n)
        .map(|i| Service {
            name: format!("svc-{i:02}"),
            gateway: i % 4 == 0,
            pauses: i % 5 == 1,
            version: 1,
            stable: format!("svc-{i:02}:1"),
            shipped: None,
            paused_at: None,
        })
        .collect()
}

fn deployment(name: &str, image: &str, error_rate: f64) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name},
                    "annotations": {simulator::ERROR_RATE: error_rate.to_string()}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}
    }))
    .unwrap()
}

fn rollout(s: &Service) -> GuardedRollout {
    let check = json!({
        "name": "error-rate",
        "query": "(sum(rate(http_requests_total{namespace=\"{{namespace}}\",pod=~\"{{canary_pods}}\",code=\"500\"}[{{interval}}])) or vector(0)) / sum(rate(http_requests_total{namespace=\"{{namespace}}\",pod=~\"{{canary_pods}}\"}[{{interval}}]))",
        "max": 0.05
    });
    let mut spec = json!({
        "targetRef": {"name": s.name},
        "steps": [{"setWeight": 25}, {"pause": {"duration": "5s"}},
                  {"setWeight": 50}, {"pause": {"duration": "5s"}}],
        "analysis": {"interval": "5s", "failureLimit": 2, "noData": {"timeout": "1m"},
            "providerErrors": {"timeout": format!("{}s", PROVIDER_TIMEOUT.as_secs())},
            "checks": [check]}
    });
    if s.gateway {
        spec["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": s.name, "port": 80}});
    }
    serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": s.name}, "spec": spec
    }))
    .unwrap()
}

async fn create_route(client: &Client, ns: &str, name: &str) -> kube::Result<()> {
    let svc: KubeService = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    Api::<KubeService>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await?;
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "httproutes"),
    );
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": name, "port": 80}]}]}
    }))
    .unwrap();
    routes.create(&PostParams::default(), &route).await?;
    Ok(())
}

/// Every service's objects, created once.
pub async fn create(client: &Client, ns: &str, services: &[Service]) -> kube::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let rollouts: Api<GuardedRollout> = Api::namespaced(client.clone(), ns);
    for s in services {
        deployments
            .create(&PostParams::default(), &deployment(&s.name, &s.stable, 0.0))
            .await?;
        if s.gateway {
            create_route(client, ns, &s.name).await?;
        }
        rollouts.create(&PostParams::default(), &rollout(s)).await?;
    }
    Ok(())
}

fn phase(gr: &GuardedRollout) -> Option<Phase> {
    gr.status.as_ref()?.phase
}

fn newest(gr: &GuardedRollout) -> Option<HistoryEntry> {
    gr.status.as_ref()?.history.first().cloned()
}

/// Nothing under way: a new revision may be shipped.
pub fn settled(gr: &GuardedRollout) -> bool {
    matches!(
        phase(gr),
        Some(Phase::Idle | Phase::Succeeded | Phase::RolledBack)
    )
}

/// One pass of the people around the services: ship where nothing is under way (while
/// `shipping`), judge what finished, pause and resume. API errors (an apiserver restart)
/// skip the pass.
pub async fn pass(
    client: &Client,
    ns: &str,
    services: &mut [Service],
    ledger: &Ledger,
    rng: &mut Rng,
    shipping: bool,
) -> kube::Result<()> {
    let rollouts: Api<GuardedRollout> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let all = rollouts.list(&Default::default()).await?;
    for s in services.iter_mut() {
        let Some(gr) = all.items.iter().find(|g| g.name_any() == s.name) else {
            continue;
        };
        hold(s, gr, &rollouts).await?;
        if s.shipped.is_some() {
            judge(s, gr, ledger);
        } else if shipping && settled(gr) && s.paused_at.is_none() {
            ship(s, &deployments, rng, ledger).await?;
        }
    }
    Ok(())
}

async fn ship(
    s: &mut Service,
    deployments: &Api<Deployment>,
    rng: &mut Rng,
    ledger: &Ledger,
) -> kube::Result<()> {
    s.version += 1;
    let good = rng.chance(GOOD_SHARE);
    let image = format!("{}:{}", s.name, s.version);
    if !good {
        // Known bad before any pod of it exists.
        ledger.shipped_bad(&image);
    }
    let rate = if good { 0.0 } else { BAD };
    let patch = json!({"spec": {"template": {
        "metadata": {"annotations": {simulator::ERROR_RATE: rate.to_string()}},
        "spec": {"containers": [{"name": "app", "image": image}]}}}});
    let target = deployments
        .patch(&s.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    let template = workloads::user_template(&target).expect("a Deployment has a template");
    s.shipped = Some(Shipped {
        image,
        good,
        revision: workloads::revision(&template),
        paused: false,
    });
    Ok(())
}

/// A finished delivery of the shipped revision: counted, and checked against what the
/// revision deserves.
fn judge(s: &mut Service, gr: &GuardedRollout, ledger: &Ledger) {
    let shipped = s.shipped.as_ref().expect("judged only while shipped");
    let Some(entry) = newest(gr).filter(|e| settled(gr) && e.revision == shipped.revision) else {
        return;
    };
    let reason = entry.reason.clone().unwrap_or_default();
    match (entry.outcome, shipped.good) {
        (Outcome::Promoted, true) => s.stable = shipped.image.clone(),
        (Outcome::Promoted, false) => ledger.violation(format!(
            "{}: bad revision {} promoted",
            s.name, shipped.image
        )),
        (Outcome::RolledBack, false) => {}
        (Outcome::RolledBack, true) => {
            if !(reason.starts_with("Prometheus failing")
                && ledger.in_long_outage(PROVIDER_TIMEOUT))
            {
                ledger.violation(format!(
                    "{}: good revision {} rolled back: {reason}",
                    s.name, shipped.image
                ));
            }
        }
        (other, _) => ledger.violation(format!(
            "{}: {} ended {other:?}: {reason}",
            s.name, shipped.image
        )),
    }
    ledger.decided(entry.outcome, shipped.good);
    s.shipped = None;
}

/// For services a person pauses: spec.paused on once the canary runs, off after HOLD.
async fn hold(
    s: &mut Service,
    gr: &GuardedRollout,
    rollouts: &Api<GuardedRollout>,
) -> kube::Result<()> {
    let canary_running = phase(gr) == Some(Phase::Progressing);
    let paused = match (&mut s.shipped, s.paused_at) {
        (Some(shipped), None) if s.pauses && !shipped.paused && canary_running => {
            shipped.paused = true;
            true
        }
        (_, Some(at)) if at.elapsed() >= HOLD => false,
        _ => return Ok(()),
    };
    let patch: Value = json!({"spec": {"paused": paused}});
    rollouts
        .patch(&s.name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    s.paused_at = paused.then(Instant::now);
    Ok(())
}

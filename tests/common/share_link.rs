//! The portal's share-link service as shipped in examples/share-link, on the realistic
//! simulator: set up, ship a revision, and time a broken canary.

use std::time::{Duration, Instant};

use guardrails::api::{GuardedRollout, SloPolicy};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::env::{Env, deployment};
use guardrails::api::Phase;

/// An example file with only its durations shortened: pauses and analysis 5 s, SLO
/// evaluation 10 s. Everything else (queries, checks, gates, windows) as shipped.
pub fn example(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(super::repo_path(path)).unwrap();
    let mut v: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let spec = &mut v["spec"];
    if let Some(steps) = spec["steps"].as_array_mut() {
        for s in steps
            .iter_mut()
            .filter(|s| s["pause"]["duration"].is_string())
        {
            s["pause"]["duration"] = json!("5s");
        }
        spec["analysis"]["interval"] = json!("5s");
    } else {
        spec["interval"] = json!("10s");
    }
    v
}

/// share-link's SloPolicy (evaluated every 10 s) and a `share-link` Deployment of two
/// pods with these template annotations, Idle under its GuardedRollout `gr`.
pub async fn share_link(env: &Env, annotations: serde_json::Value, gr: serde_json::Value) {
    let d = deployment("share-link", "app:1", 2, annotations);
    env.deployments()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let slo: SloPolicy =
        serde_json::from_value(example("examples/share-link/slopolicy.yaml")).unwrap();
    Api::<SloPolicy>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &slo)
        .await
        .unwrap();
    let gr: GuardedRollout = serde_json::from_value(gr).unwrap();
    env.rollouts()
        .create(&PostParams::default(), &gr)
        .await
        .unwrap();
    env.wait_phase("share-link", Phase::Idle, 60).await;
}

pub async fn ship_share_link(env: &Env, annotations: serde_json::Value) {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:2"}]}}}});
    env.deployments()
        .patch(
            "share-link",
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .unwrap();
}

/// The GuardedRollout exactly as shipped: analysis every 30 s, failureLimit 2.
pub fn shipped_share_link() -> serde_json::Value {
    let path = super::repo_path("examples/share-link/guardedrollout.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// How long the canary of a broken revision just shipped served: from its first ready
/// pod to none left. Panics if it never serves, or serves for over a minute.
pub async fn broken_canary_served(env: &Env) -> Duration {
    let serving = || {
        env.sim
            .pods(&env.ns, "share-link-canary")
            .iter()
            .any(|p| p.1)
    };
    let start = Instant::now();
    while !serving() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the canary never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = Instant::now();
    while serving() {
        assert!(
            ready.elapsed() < Duration::from_secs(90),
            "the canary kept serving"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ready.elapsed()
}

/// Share (percent) of a 99.9%/28-day error budget spent by a canary taking 10% of the
/// traffic and failing every request for `served`.
pub fn budget_share(served: Duration) -> f64 {
    0.1 * served.as_secs_f64() / (0.001 * 28.0 * 86400.0) * 100.0
}

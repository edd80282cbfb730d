//! Idle cost: 200 adopted GuardedRollouts with nothing to ship (half of them with
//! notifications) cost no API reads, no Prometheus queries and no reconciles over a
//! minute, counted from the apiserver's and Prometheus' own metrics.

mod common;

use std::time::Duration;

use common::env::*;
use guardrails::api::{GuardedRollout, Phase};
use serde_json::json;

const ROLLOUTS: usize = 200;

/// Sum of the counter samples on `text`'s lines that start with `family{` and contain
/// every one of `labels`.
fn counter(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GETs of the objects a rollout reads, as the apiserver counted them.
async fn api_reads(env: &Env) -> f64 {
    let resources = [
        "deployments",
        "guardedrollouts",
        "slopolicies",
        "horizontalpodautoscalers",
        "secrets",
    ];
    requests(env, "GET", &resources).await
}

/// Requests with `verb` on any of `resources`, as the apiserver counted them.
async fn requests(env: &Env, verb: &str, resources: &[&str]) -> f64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = env
        .client
        .request_text(req)
        .await
        .expect("apiserver /metrics");
    let verb = format!("verb=\"{verb}\"");
    resources
        .iter()
        .map(|r| {
            let resource = format!("resource=\"{r}\"");
            counter(&text, "apiserver_request_total", &[&verb, &resource])
        })
        .sum()
}

/// Instant queries Prometheus answered.
async fn queries(env: &Env) -> f64 {
    let (code, text) = guardrails_sandbox::http::get(&env.prom.addr(), "/metrics")
        .await
        .expect("Prometheus /metrics");
    assert_eq!(code, 200);
    counter(
        &text,
        "prometheus_http_requests_total",
        &["handler=\"/api/v1/query\""],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_rollouts_cost_no_reads_no_queries_and_no_reconciles() {
    let env = env("idle").await;
    env.create_rollouts((0..ROLLOUTS).map(|i| format!("app-{i:03}")))
        .await;
    let idle = |g: &GuardedRollout| g.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle);
    guardrails_sandbox::wait::eventually(
        "every rollout adopted and Idle",
        Duration::from_secs(180),
        || async {
            let list = env.rollouts().list(&Default::default()).await.unwrap();
            let waiting = list.items.iter().filter(|g| !idle(g)).count();
            if list.items.len() == ROLLOUTS && waiting == 0 {
                Ok(())
            } else {
                Err(waiting)
            }
        },
    )
    .await;
    // Nothing left to change: every target scaled to 0 and seen so by the Deployment
    // controller (the simulator's status writes wake the rollout that watches it).
    guardrails_sandbox::wait::eventually(
        "every target at 0 and every primary available",
        Duration::from_secs(180),
        || async {
            let list = env.deployments().list(&Default::default()).await.unwrap();
            let unsettled = list
                .items
                .iter()
                .filter(|d| {
                    let name = d.metadata.name.as_deref().unwrap_or_default();
                    let status = d.status.clone().unwrap_or_default();
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let settled = status.observed_generation == d.metadata.generation
                        && status.replicas.unwrap_or(0) == want
                        && status.available_replicas.unwrap_or(0) == want;
                    !settled || (!name.ends_with("-primary") && want != 0)
                })
                .count();
            if unsettled == 0 {
                Ok(())
            } else {
                Err(unsettled)
            }
        },
    )
    .await;
    let receiver = notifications_on_every_other_rollout(&env).await;
    // Adoption's last requeues settle first; then a minute of nothing to do.
    env.reconciles_once_quiet(Duration::from_secs(5), Duration::ZERO)
        .await;
    let (reads, asked, reconciles) = (api_reads(&env).await, queries(&env).await, env.reconciles());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let reads = api_reads(&env).await - reads;
    let asked = queries(&env).await - asked;
    let reconciles = env.reconciles() - reconciles;
    eprintln!(
        "{ROLLOUTS} idle rollouts over 60 s: {reads} GETs, {asked} queries, {reconciles} reconciles"
    );
    assert_eq!(
        (reads, asked, reconciles),
        (0.0, 0.0, 0),
        "(GETs, Prometheus queries, reconciles) over a minute of {ROLLOUTS} idle rollouts"
    );
    assert!(receiver.received().is_empty(), "nothing to tell");
    a_canary_reads_the_watch_stores(&env).await;
}

/// Half of the rollouts tell a webhook; once their Secret is read and their mark set
/// (NotificationsReady), the notifier has nothing to do either.
async fn notifications_on_every_other_rollout(env: &Env) -> guardrails_sandbox::Receiver {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams, PostParams};
    let receiver = guardrails_sandbox::Receiver::start().await.unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "guardrails-notifications"},
        "stringData": {"url": receiver.url()},
    }))
    .unwrap();
    kube::Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let on =
        json!({"spec": {"notifications": {"secretRef": {"name": "guardrails-notifications"}}}});
    for i in (0..ROLLOUTS).step_by(2) {
        env.rollouts()
            .patch(
                &format!("app-{i:03}"),
                &PatchParams::default(),
                &Patch::Merge(&on),
            )
            .await
            .unwrap();
    }
    let ready = |g: &GuardedRollout| {
        g.status.as_ref().is_some_and(|s| {
            guardrails::conditions::get(
                &s.conditions,
                guardrails::conditions::ConditionType::NotificationsReady,
            )
            .is_some_and(|c| c.status == "True")
        })
    };
    guardrails_sandbox::wait::eventually(
        "NotificationsReady on every other rollout",
        Duration::from_secs(120),
        || async {
            let list = env.rollouts().list(&Default::default()).await.unwrap();
            let n = list.items.iter().filter(|g| ready(g)).count();
            guardrails_sandbox::wait::reached(n == ROLLOUTS / 2, n)
        },
    )
    .await;
    receiver
}

/// One of them ships: its canary runs every step and is promoted, deciding on what the
/// watch stores hold. A GET happens only when the store has not caught up with a write
/// (of the operator's or the shipper's), so there are fewer than the operator's writes.
async fn a_canary_reads_the_watch_stores(env: &Env) {
    let writes = || {
        ["status", "deployment", "annotations", "autoscaler"]
            .iter()
            .map(|k| env.metrics.writes(k))
            .sum::<u64>()
    };
    let lists = || requests(env, "LIST", &["horizontalpodautoscalers"]);
    let (reads, wrote, reconciles) = (api_reads(env).await, writes(), env.reconciles());
    let listed = lists().await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}});
    env.deployments()
        .patch(
            "app-000",
            &Default::default(),
            &kube::api::Patch::Strategic(patch),
        )
        .await
        .unwrap();
    env.wait_step("app-000", 3, 60).await;
    env.wait_phase("app-000", Phase::Succeeded, 60).await;
    let reads = api_reads(env).await - reads;
    let wrote = writes() - wrote;
    let reconciles = env.reconciles() - reconciles;
    let listed = lists().await - listed;
    eprintln!(
        "one canary to promotion: {reconciles} reconciles, {wrote} writes, {reads} GETs, \
         {listed} autoscaler LISTs"
    );
    assert_eq!(
        listed, 0.0,
        "autoscalers come from a watch, not a LIST per reconcile"
    );
    assert!(reconciles >= 8, "{reconciles} reconciles: the canary ran");
    assert!(
        reads <= wrote as f64,
        "{reads} GETs for {wrote} writes over {reconciles} reconciles: reads come from the stores"
    );
}

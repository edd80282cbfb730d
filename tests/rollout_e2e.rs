//! Canary delivery end to end: promotion, rollback on each check kind and on burn, a
//! Prometheus outage, an operator restart, a superseded revision. Real apiserver + etcd,
//! Prometheus scraping the simulator every second, a 5 s analysis interval.

mod common;

use std::time::Duration;

use common::env::*;
use guardrails::{
    api::{Outcome, Phase, SloPolicy},
    conditions::{self, ConditionType},
};
use guardrails_sandbox::simulator;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn healthy_canary_is_promoted_through_every_step() {
    let env = env("gr-healthy").await;
    env.create(&target("app:1", 0.0), &rollout(json!([]))).await;
    let (image, replicas) = env.image_of("app-primary").await;
    assert_eq!(
        (image.as_str(), replicas),
        ("app:1", 2),
        "primary adopts the target"
    );
    env.wait_replicas("app", 0, 10).await;

    env.ship("app:2", 0.0).await;
    env.wait_phase("app", Phase::Progressing, 20).await;
    let gr = env.wait_phase("app", Phase::Succeeded, 90).await;
    let status = gr.status.unwrap();
    assert_eq!(env.image_of("app-primary").await, ("app:2".to_string(), 2));
    env.wait_replicas("app-canary", 0, 10).await;
    assert_eq!(status.history[0].outcome, Outcome::Promoted);
    assert_eq!(
        status.stable_revision,
        status.history[0].revision.clone().into()
    );
    let reasons: Vec<String> = env.events("app").await.into_iter().map(|e| e.0).collect();
    for r in [
        "CanaryStarted",
        "StepCompleted",
        "Promoting",
        "Promoted",
        "PhaseChanged",
    ] {
        assert!(
            reasons.contains(&r.to_string()),
            "no {r} event in {reasons:?}"
        );
    }
    let ready = conditions::get(&status.conditions, ConditionType::Ready).unwrap();
    assert_eq!(ready.status, "True");
    // Idle, nothing in flight: the watches wake it on a change, nothing else does (the
    // window is longer than any poll would be).
    let idle = env
        .reconciles_once_quiet(Duration::from_secs(3), Duration::from_secs(35))
        .await;
    assert_eq!(
        idle, 0,
        "an idle rollout was reconciled {idle} times in 35 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_canary_is_rolled_back_and_not_retried() {
    let env = env("gr-errors").await;
    env.create(&target("app:1", 0.0), &rollout(json!([]))).await;
    env.ship("app:2", 0.2).await;
    let gr = env.wait_phase("app", Phase::RolledBack, 90).await;
    let status = gr.status.unwrap();
    assert_eq!(
        env.image_of("app-primary").await.0,
        "app:1",
        "primary never changed"
    );
    env.wait_replicas("app-canary", 0, 10).await;
    let failed = status.failed_revision.clone().expect("failedRevision");
    let h = &status.history[0];
    assert_eq!(
        (h.outcome, h.revision.as_str()),
        (Outcome::RolledBack, failed.as_str())
    );
    assert!(h.detected_at.is_some());
    assert!(
        h.reason.as_ref().unwrap().contains("error-rate"),
        "{:?}",
        h.reason
    );
    let events = env.events("app").await;
    let rolled = events
        .iter()
        .find(|e| e.0 == "RolledBack")
        .expect("RolledBack event");
    assert!(
        rolled.1.contains("error-rate") && rolled.1.contains("> 0.05"),
        "{rolled:?}"
    );
    // Not retried: once the rollback has finished (the canary gone), nothing is written
    // for 8 s and it stays rolled back.
    env.wait_for("app", 20, "rollback finished", |g| {
        g.status
            .as_ref()
            .unwrap()
            .history
            .first()
            .is_some_and(|h| h.finished_at.is_some())
    })
    .await;
    let writes = env
        .writes_over(Duration::from_secs(8), &["status", "deployment"])
        .await;
    assert_eq!(writes, 0, "a rolled-back revision is left alone");
    let gr = env.rollouts().get("app").await.unwrap();
    assert_eq!(gr.status.unwrap().phase, Some(Phase::RolledBack));
    assert_eq!(env.image_of("app-canary").await.1, 0);
    let stalled = conditions::get(
        &env.rollouts()
            .get("app")
            .await
            .unwrap()
            .status
            .unwrap()
            .conditions,
        ConditionType::Stalled,
    )
    .unwrap()
    .status
    .clone();
    assert_eq!(stalled, "True");
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_regression_against_the_primary_is_rolled_back() {
    let env = env("gr-latency").await;
    let compare = json!([{
        "name": "p99-vs-primary",
        "compare": {
            "query": "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{namespace=\"{{namespace}}\",pod=~\"{{pods}}\"}[{{interval}}])))",
            "maxIncrease": 20
        }
    }]);
    let gr = rollout_with(
        json!([{"setWeight": 25}, {"pause": {"duration": "30s"}}]),
        compare,
    );
    env.create(&target("app:1", 0.0), &gr).await;
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {simulator::LATENCY_MS: "500"}}, "spec": {"containers": [{"name": "app", "image": "app:2"}]}}}});
    env.deployments()
        .patch("app", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let gr = env.wait_phase("app", Phase::RolledBack, 90).await;
    let s = status(&gr);
    assert_last_reason(&s, "p99-vs-primary");
    assert_eq!(env.image_of("app-primary").await.0, "app:1");
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_burning_its_slo_is_rolled_back() {
    let env = env("gr-burn").await;
    let slo = app_slo(99.0, json!({"window": "1h", "interval": "1h"}));
    Api::<SloPolicy>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &slo)
        .await
        .unwrap();
    let mut gr = rollout_with(
        json!([{"setWeight": 25}, {"pause": {"duration": "30s"}}]),
        json!([{"name": "canary-burn", "sloBurnRate": {"objective": "availability", "window": "10s", "max": 5}}]),
    );
    gr.spec.slo_policy_ref = Some(guardrails::api::LocalRef { name: "app".into() });
    gr.spec.analysis.abort_on_burn_rate_alert = guardrails::api::AbortOnAlert::None;
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.2).await;
    let gr = env.wait_phase("app", Phase::RolledBack, 90).await;
    let s = status(&gr);
    assert_last_reason(&s, "canary-burn");
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_outage_holds_the_weight_then_rolls_back_at_the_timeout() {
    let mut env = env("gr-outage").await;
    let gr = rollout_with(
        json!([{"setWeight": 25}, {"pause": {"duration": "2m"}}]),
        json!([error_rate_check()]),
    );
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.0).await;
    env.wait_for("app", 60, "a passing tick at 25%", |g| {
        let s = status(g);
        s.current_step == Some(1) && s.analysis.as_ref().is_some_and(|a| a.passing_ticks >= 1)
    })
    .await;
    // Away shorter than the timeout (15s): the weight holds, then analysis continues.
    env.prom.stop();
    let held = env
        .wait_for("app", 20, "provider errors seen", |g| {
            status(g)
                .analysis
                .as_ref()
                .is_some_and(|a| a.provider_errors_since.is_some())
        })
        .await;
    let s = status(&held);
    assert_eq!(
        (s.phase, s.canary_weight, s.current_step),
        (Some(Phase::Progressing), Some(25), Some(1))
    );
    let passing = s.analysis.as_ref().unwrap().passing_ticks;
    env.prom.restart().await.unwrap();
    env.wait_for("app", 30, "analysis continues", |g| {
        status(g)
            .analysis
            .as_ref()
            .is_some_and(|a| a.provider_errors_since.is_none() && a.passing_ticks > passing)
    })
    .await;
    // Away past the timeout: rolled back, never promoted.
    env.prom.stop();
    let gr = env.wait_phase("app", Phase::RolledBack, 60).await;
    let s = status(&gr);
    assert_last_reason(&s, "Prometheus failing");
    assert!(!s.history.iter().any(|h| h.outcome == Outcome::Promoted));
    assert_eq!(env.image_of("app-primary").await.0, "app:1");
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_operator_resumes_the_same_step() {
    let mut env = env("gr-restart").await;
    let gr = rollout_with(
        json!([{"setWeight": 25}, {"pause": {"duration": "15s"}}, {"setWeight": 50}, {"pause": {"duration": "5s"}}]),
        json!([error_rate_check()]),
    );
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.0).await;
    let before = env.wait_step("app", 1, 60).await;
    let started = status(&before).step_started_at.clone();
    env.operator.abort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cp = guardrails_sandbox::ControlPlane::shared(&guardrails::api::crds()).unwrap();
    let operator = Operator::unelected(cp.config().clone());
    env.operator = start_operator(operator, &env.ns, env.prom.url(), &env.metrics);
    let after = env
        .wait_for("app", 20, "reconciled again", |g| {
            status(g)
                .analysis
                .as_ref()
                .and_then(|a| a.last_tick_time.clone())
                > status(&before)
                    .analysis
                    .as_ref()
                    .and_then(|a| a.last_tick_time.clone())
        })
        .await;
    assert_eq!(
        status(&after).current_step,
        Some(1),
        "same step after the restart"
    );
    assert_eq!(
        status(&after).step_started_at,
        started,
        "the step was not restarted"
    );
    let done = env.wait_phase("app", Phase::Succeeded, 90).await;
    let promoted = status(&done)
        .history
        .iter()
        .filter(|h| h.outcome == Outcome::Promoted)
        .count();
    assert_eq!(promoted, 1);
    let events = env.events("app").await;
    assert_eq!(
        events.iter().filter(|e| e.0 == "Promoted").count(),
        1,
        "promoted once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_revision_supersedes_the_running_canary() {
    let env = env("gr-supersede").await;
    let gr = rollout_with(
        json!([{"setWeight": 25}, {"pause": {"duration": "10s"}}]),
        json!([error_rate_check()]),
    );
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.0).await;
    let first = env.wait_step("app", 1, 60).await;
    let old = status(&first).canary_revision.clone().unwrap();
    env.ship("app:3", 0.0).await;
    let gr = env
        .wait_for("app", 30, "superseded", |g| {
            status(g)
                .canary_revision
                .as_ref()
                .is_some_and(|r| *r != old)
        })
        .await;
    let s = status(&gr);
    assert!(
        s.history
            .iter()
            .any(|h| h.revision == old && h.outcome == Outcome::Superseded)
    );
    assert!(
        s.current_step.unwrap_or(0) <= 1
            && s.analysis.as_ref().is_none_or(|a| a.passing_ticks <= 1),
        "analysis restarted"
    );
    env.wait_phase("app", Phase::Succeeded, 90).await;
    assert_eq!(env.image_of("app-primary").await.0, "app:3");
}

//! GuardedRollout end to end: real apiserver + etcd, Prometheus scraping the simulator
//! every second, and the operator's controllers, with a 5 s analysis interval.

mod common;

use std::time::Duration;

use common::env::*;
use guardrails::{
    api::{GuardedRollout, Outcome, Phase, SloPolicy},
    conditions::{self, ConditionType},
    telemetry::Metrics,
};
use guardrails_sandbox::simulator;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
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
    assert_eq!(env.image_of("app").await.1, 0, "target scaled to zero");

    env.ship("app:2", 0.0).await;
    env.wait_phase("app", Phase::Progressing, 20).await;
    let gr = env.wait_phase("app", Phase::Succeeded, 90).await;
    let status = gr.status.unwrap();
    assert_eq!(env.image_of("app-primary").await, ("app:2".to_string(), 2));
    assert_eq!(env.image_of("app-canary").await.1, 0);
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
    assert_eq!(env.image_of("app-canary").await.1, 0);
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
async fn frozen_budget_blocks_features_but_not_corrective_changes_or_overrides() {
    let env = env("gr-frozen").await;
    let slo = app_slo(99.9, json!({"interval": "1h"}));
    Api::<SloPolicy>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &slo)
        .await
        .unwrap();
    let mut gr = rollout(json!([]));
    gr.spec.slo_policy_ref = Some(guardrails::api::LocalRef { name: "app".into() });
    env.create(&target("app:1", 0.0), &gr).await;
    // The SloPolicy controller evaluated it once (interval 1h); the test now owns the gate.
    env.set_gate("Frozen").await;

    env.ship("app:2", 0.0).await;
    let gr = env.wait_phase("app", Phase::Blocked, 20).await;
    let msg = gr.status.as_ref().unwrap().message.clone().unwrap();
    assert!(
        msg.contains("feature change") && msg.contains("Frozen"),
        "{msg}"
    );
    assert!(env.events("app").await.iter().any(|e| e.0 == "GateBlocked"));
    assert_eq!(env.image_of("app-canary").await.1, 0);

    // The gate opens: the blocked canary starts by itself.
    env.set_gate("Open").await;
    env.wait_phase("app", Phase::Succeeded, 90).await;

    // Frozen again: a corrective change goes through.
    env.set_gate("Frozen").await;
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"guardrails.dev/change-class": "corrective"}}, "spec": {"containers": [{"name": "app", "image": "app:3"}]}}}});
    env.deployments()
        .patch("app", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let gr = env.wait_phase("app", Phase::Progressing, 20).await;
    assert_eq!(
        gr.status.unwrap().gate.unwrap().change_class,
        guardrails::api::ChangeClass::Corrective
    );
    env.wait_phase("app", Phase::Succeeded, 90).await;

    // Frozen, a feature, and the override annotation: through, and recorded.
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"guardrails.dev/change-class": "feature"}}, "spec": {"containers": [{"name": "app", "image": "app:4"}]}}}});
    env.deployments()
        .patch("app", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    env.wait_phase("app", Phase::Blocked, 20).await;
    let ann = json!({"metadata": {"annotations": {"guardrails.dev/override-gate": "incident 42"}}});
    env.rollouts()
        .patch("app", &PatchParams::default(), &Patch::Merge(ann))
        .await
        .unwrap();
    let gr = env.wait_phase("app", Phase::Progressing, 20).await;
    assert_eq!(
        gr.status.unwrap().gate.unwrap().r#override.as_deref(),
        Some("incident 42")
    );
    assert!(
        env.events("app")
            .await
            .iter()
            .any(|e| e.0 == "GateOverridden" && e.1.contains("incident 42"))
    );
    let gr = env.rollouts().get("app").await.unwrap();
    assert!(
        !gr.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("guardrails.dev/override-gate"),
        "annotation consumed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_rollout_gets_a_condition_and_others_carry_on() {
    let env = env("gr-invalid").await;
    env.create(&target("app:1", 0.0), &rollout(json!([]))).await;
    let mut bad = rollout(json!([]));
    bad.metadata.name = Some("bad".into());
    bad.spec.analysis.checks[0].query = Some("sum(rate(x[{{interval}}])".into());
    env.rollouts()
        .create(&PostParams::default(), &bad)
        .await
        .unwrap();
    let gr = env
        .wait_for("bad", 20, "InvalidSpec", |g| {
            g.status
                .as_ref()
                .and_then(|s| conditions::get(&s.conditions, ConditionType::Ready))
                .is_some_and(|c| c.reason == "InvalidSpec")
        })
        .await;
    let cond = conditions::get(
        &gr.status.as_ref().unwrap().conditions,
        ConditionType::Stalled,
    )
    .unwrap()
    .clone();
    assert_eq!(cond.status, "True");
    assert!(
        cond.message.contains("spec.analysis.checks[0].query"),
        "{}",
        cond.message
    );
    assert!(env.events("bad").await.iter().any(|e| e.0 == "InvalidSpec"));
    // Gateway API routing to an HTTPRoute that does not exist: said so, not ignored.
    let mut gw = rollout(json!([]));
    gw.metadata.name = Some("gw".into());
    gw.spec.target_ref.name = "gw-target".into();
    gw.spec.traffic_routing.gateway_api = Some(guardrails::api::GatewayApiRouting {
        http_route: "nowhere".into(),
        port: 8080,
        service: None,
    });
    env.rollouts()
        .create(&PostParams::default(), &gw)
        .await
        .unwrap();
    let msg = env.wait_stalled("gw", "RouteNotFound").await;
    assert!(
        msg.contains("spec.trafficRouting.gatewayAPI.httpRoute") && msg.contains("nowhere"),
        "{msg}"
    );
    // A second rollout for the same target is refused, the first keeps it.
    let mut twin = rollout(json!([]));
    twin.metadata.name = Some("twin".into());
    env.rollouts()
        .create(&PostParams::default(), &twin)
        .await
        .unwrap();
    let msg = env.wait_stalled("twin", "InvalidSpec").await;
    assert!(
        msg.contains("already managed by GuardedRollout app"),
        "{msg}"
    );
    // A rollout whose target does not exist says so.
    let mut orphan = rollout(json!([]));
    orphan.metadata.name = Some("orphan".into());
    orphan.spec.target_ref.name = "nope".into();
    env.rollouts()
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    let msg = env.wait_stalled("orphan", "TargetNotFound").await;
    assert!(msg.contains("nope"), "{msg}");
    assert!(
        env.events("orphan")
            .await
            .iter()
            .any(|e| e.0 == "TargetNotFound")
    );
    // The valid one in the same namespace still ships.
    env.ship("app:2", 0.0).await;
    env.wait_phase("app", Phase::Succeeded, 90).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_rollout_gives_the_target_its_replicas_back() {
    let env = env("gr-delete").await;
    env.create(&target("app:1", 0.0), &rollout(json!([]))).await;
    assert_eq!(env.image_of("app").await.1, 0);
    let phase_series = |m: &Metrics| {
        m.render()
            .lines()
            .filter(|l| l.starts_with("guardrails_rollout_phase{"))
            .count()
    };
    assert_eq!(phase_series(&env.metrics), 8, "one series per phase");
    env.rollouts()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("app", 30).await;
    assert!(
        env.rollouts().get_opt("app").await.unwrap().is_none(),
        "finalizer finished"
    );
    assert_eq!(
        env.image_of("app").await.1,
        2,
        "target back at its recorded replicas"
    );
    assert!(
        env.deployments()
            .get_opt("app-primary")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        phase_series(&env.metrics),
        0,
        "phase series of the deleted rollout"
    );
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
    assert!(
        s.history[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("p99-vs-primary"),
        "{:?}",
        s.history[0].reason
    );
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
    assert!(
        s.history[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("canary-burn"),
        "{:?}",
        s.history[0].reason
    );
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
    assert!(
        s.history[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("Prometheus failing"),
        "{:?}",
        s.history[0].reason
    );
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
    let before = env
        .wait_for("app", 60, "in the long pause", |g| {
            status(g).current_step == Some(1)
        })
        .await;
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
    let first = env
        .wait_for("app", 60, "canary of app:2 at 25%", |g| {
            status(g).current_step == Some(1)
        })
        .await;
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

#[tokio::test(flavor = "multi_thread")]
async fn manual_actions_and_spec_paused() {
    let env = env("gr-manual").await;
    // A pause without duration waits for a promote.
    let gr = rollout_with(
        json!([{"setWeight": 25}, {"pause": {}}]),
        json!([error_rate_check()]),
    );
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.0).await;
    env.wait_for("app", 60, "waiting in the manual pause", |g| {
        let s = status(g);
        s.current_step == Some(1) && s.analysis.as_ref().is_some_and(|a| a.passing_ticks >= 2)
    })
    .await;
    assert_eq!(
        status(&env.rollouts().get("app").await.unwrap()).phase,
        Some(Phase::Paused),
        "a pause without duration is shown as Paused"
    );
    env.rollouts()
        .patch(
            "app",
            &PatchParams::default(),
            &annotate("guardrails.dev/promote", ""),
        )
        .await
        .unwrap();
    let gr = env.wait_phase("app", Phase::Succeeded, 60).await;
    assert_eq!(env.image_of("app-primary").await.0, "app:2");
    assert_eq!(
        status(&gr).history[0].reason.as_deref(),
        Some("promoted by hand")
    );

    // Abort rolls back at once; retry starts the same revision again.
    env.ship("app:3", 0.0).await;
    env.wait_for("app", 60, "canary of app:3", |g| {
        status(g).current_step == Some(1)
    })
    .await;
    env.rollouts()
        .patch(
            "app",
            &PatchParams::default(),
            &annotate("guardrails.dev/abort", "wrong build"),
        )
        .await
        .unwrap();
    let gr = env.wait_phase("app", Phase::RolledBack, 30).await;
    assert_eq!(status(&gr).history[0].outcome, Outcome::Aborted);
    assert!(
        status(&gr).history[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("wrong build")
    );
    env.rollouts()
        .patch(
            "app",
            &PatchParams::default(),
            &annotate("guardrails.dev/retry", ""),
        )
        .await
        .unwrap();
    env.wait_for("app", 30, "canary running again", |g| {
        let s = status(g);
        matches!(s.phase, Some(Phase::Progressing | Phase::Paused)) && s.canary_revision.is_some()
    })
    .await;

    // spec.paused holds the steps.
    let pause = json!({"spec": {"paused": true}});
    env.rollouts()
        .patch("app", &PatchParams::default(), &Patch::Merge(pause))
        .await
        .unwrap();
    let by_spec = |g: &GuardedRollout| {
        status(g)
            .message
            .is_some_and(|m| m.contains("paused (spec.paused)"))
    };
    let paused = env.wait_for("app", 30, "paused by spec", by_spec).await;
    assert_eq!(status(&paused).phase, Some(Phase::Paused));
    // Analysis goes on, the workloads do not move.
    let moved = env
        .writes_over(Duration::from_secs(6), &["deployment"])
        .await;
    assert_eq!(moved, 0, "the canary was resized while paused by spec");
    let later = env.rollouts().get("app").await.unwrap();
    assert_eq!(status(&later).phase, Some(Phase::Paused));
    assert_eq!(status(&later).current_step, status(&paused).current_step);
    let resume = json!({"spec": {"paused": false}});
    env.rollouts()
        .patch("app", &PatchParams::default(), &Patch::Merge(resume))
        .await
        .unwrap();
    env.wait_for("app", 30, "no longer held by spec.paused", |g| !by_spec(g))
        .await;
    let gr = env.rollouts().get("app").await.unwrap();
    let ann = gr.metadata.annotations.unwrap_or_default();
    for key in [
        "guardrails.dev/promote",
        "guardrails.dev/abort",
        "guardrails.dev/retry",
    ] {
        assert!(!ann.contains_key(key), "{key} consumed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_rbac_is_enough_for_a_whole_delivery() {
    let env = env_with("gr-rbac", true).await;
    let slo = app_slo(99.9, json!({"interval": "10s"}));
    let slos = Api::<SloPolicy>::namespaced(env.client.clone(), &env.ns);
    slos.create(&PostParams::default(), &slo).await.unwrap();
    let mut gr = rollout(json!([]));
    gr.spec.slo_policy_ref = Some(guardrails::api::LocalRef { name: "app".into() });
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.0).await;
    env.wait_phase("app", Phase::Succeeded, 90).await;
    assert_eq!(env.image_of("app-primary").await.0, "app:2");
    let policy = common::wait_for(&slos, "app", 30, "SloPolicy evaluated", |p| {
        p.status.as_ref().is_some_and(|s| s.gate.is_some())
    })
    .await;
    assert!(policy.status.unwrap().last_evaluation_time.is_some());
    assert!(env.events("app").await.iter().any(|e| e.0 == "Promoted"));

    // Deletion: finalizer, target scaled back, managed Deployments deleted.
    env.rollouts()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    common::wait_for(&env.deployments(), "app", 30, "target restored", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(2)
    })
    .await;
    env.wait_gone("app", 30).await;
    assert!(env.rollouts().get_opt("app").await.unwrap().is_none());
}

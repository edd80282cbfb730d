//! Decisions that hold during an incident, end to end on the realistic simulator: the
//! fix ships while the service pages, a stale click is dropped, a canary that cannot be
//! analysed leaves traffic, and every shipped example promotes a healthy canary.

mod common;

use std::time::Duration;

use common::{env::*, share_link::*};
use guardrails::api::{GuardedRollout, LocalRef, Outcome, Phase, SloPolicy};
use guardrails_sandbox::simulator;
use guardrails_sandbox::wait::eventually;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// A SloPolicy on the app's requests whose page tier fires within seconds of a 20%
/// error rate (1m/10s windows at burn rate 2 of a 99% target), its budget over 10m.
fn fast_paging_slo() -> SloPolicy {
    app_slo(
        99.0,
        json!({"window": "10m", "interval": "10s", "alerting": {"burnRateTiers": [
            {"severity": "page", "longWindow": "1m", "shortWindow": "10s", "burnRate": 2}]}}),
    )
}

fn slos(env: &Env) -> Api<SloPolicy> {
    Api::namespaced(env.client.clone(), &env.ns)
}

fn guarded(steps: serde_json::Value) -> GuardedRollout {
    let mut gr = rollout_with(steps, json!([error_rate_check()]));
    gr.spec.slo_policy_ref = Some(LocalRef { name: "app".into() });
    gr
}

async fn wait_paging_and_frozen(env: &Env) {
    common::wait_for(&slos(env), "app", 60, "page firing, budget frozen", |p| {
        let s = p.status.clone().unwrap_or_default();
        s.gate == Some(guardrails::api::Gate::Frozen)
            && s.objectives
                .iter()
                .any(|o| o.firing_alerts.contains(&guardrails::api::Severity::Page))
    })
    .await;
}

async fn ship_corrective(env: &Env, image: &str) {
    env.ship_with(
        image,
        json!({simulator::ERROR_RATE: "0", "guardrails.dev/change-class": "corrective"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrective_fix_ships_while_the_service_pages_and_the_budget_is_frozen() {
    let env = env("dc-incident").await;
    slos(&env)
        .create(&PostParams::default(), &fast_paging_slo())
        .await
        .unwrap();
    // The incident: the running version fails 20% of its requests.
    let gr = guarded(json!([{"setWeight": 25}, {"pause": {"duration": "5s"}}]));
    env.create(&target("app:1", 0.2), &gr).await;
    wait_paging_and_frozen(&env).await;
    ship_corrective(&env, "app:2").await;
    let done = env.wait_phase("app", Phase::Succeeded, 90).await;
    let h = &status(&done).history[0];
    assert_eq!(h.outcome, Outcome::Promoted, "{h:?}");
    assert_eq!(env.image_of("app-primary").await.0, "app:2");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fix_after_a_bad_canary_ships_while_the_bad_canarys_errors_still_page() {
    let env = env("dc-after-bad").await;
    slos(&env)
        .create(&PostParams::default(), &fast_paging_slo())
        .await
        .unwrap();
    let gr = guarded(json!([{"setWeight": 50}, {"pause": {"duration": "5s"}}]));
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.6).await;
    let bad = env.wait_phase("app", Phase::RolledBack, 90).await;
    assert_eq!(status(&bad).history[0].outcome, Outcome::RolledBack);
    // The bad canary's errors are still in the windows: the service pages.
    wait_paging_and_frozen(&env).await;
    ship_corrective(&env, "app:3").await;
    env.wait_for("app", 30, "the fix's canary", |g| {
        status(g).canary_revision.is_some() && status(g).phase == Some(Phase::Progressing)
    })
    .await;
    let done = env.wait_phase("app", Phase::Succeeded, 90).await;
    assert_eq!(status(&done).history[0].outcome, Outcome::Promoted);
    assert_eq!(env.image_of("app-primary").await.0, "app:3");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_actions_are_dropped_and_the_next_bad_canary_is_still_rolled_back() {
    let env = env("dc-stale").await;
    env.create(&target("app:1", 0.0), &rollout(json!([]))).await;
    let all = json!({"metadata": {"annotations": {
        "guardrails.dev/promote": "", "guardrails.dev/abort": "old", "guardrails.dev/retry": "",
        "guardrails.dev/override-gate": "old incident"}}});
    env.rollouts()
        .patch("app", &PatchParams::default(), &Patch::Merge(all))
        .await
        .unwrap();
    env.wait_for("app", 20, "every annotation consumed", |g| {
        let ann = g.metadata.annotations.clone().unwrap_or_default();
        !ann.keys().any(|k| k.starts_with("guardrails.dev/"))
    })
    .await;
    let four = "four ActionDropped Events";
    let dropped: Vec<String> = eventually(four, Duration::from_secs(10), || async {
        let dropped: Vec<String> = env
            .events("app")
            .await
            .into_iter()
            .filter(|e| e.0 == "ActionDropped")
            .map(|e| e.1)
            .collect();
        if dropped.len() == 4 {
            Ok(dropped)
        } else {
            Err(dropped)
        }
    })
    .await;
    for key in ["promote", "abort", "retry", "override-gate"] {
        let key = format!("guardrails.dev/{key} dropped");
        assert!(
            dropped.iter().any(|d| d.contains(&key)),
            "{key}: {dropped:?}"
        );
    }
    env.ship("app:2", 0.5).await;
    let gr = env.wait_phase("app", Phase::RolledBack, 90).await;
    let h = &status(&gr).history[0];
    assert_eq!(h.outcome, Outcome::RolledBack);
    assert!(
        h.reason.as_deref().unwrap_or("").contains("error-rate"),
        "{h:?}"
    );
    assert_eq!(env.image_of("app-primary").await.0, "app:1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slo_policy_deleted_mid_canary_drains_it_and_the_revision_restarts_when_it_returns() {
    let env = env("dc-slo-gone").await;
    let mut slo = fast_paging_slo();
    slo.spec.alerting.burn_rate_tiers[0].burn_rate = 1000.0;
    slos(&env)
        .create(&PostParams::default(), &slo)
        .await
        .unwrap();
    let gr = guarded(json!([{"setWeight": 25}, {"pause": {"duration": "20s"}}]));
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.0).await;
    let serving = env.wait_step("app", 1, 60).await;
    let rev = status(&serving).canary_revision.unwrap();
    slos(&env)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_phase("app", Phase::Blocked, 30).await;
    common::wait_for(
        &env.deployments(),
        "app-canary",
        20,
        "canary drained",
        |d| available(d, 0),
    )
    .await;
    assert!(
        env.events("app")
            .await
            .iter()
            .any(|e| e.0 == "CanaryDrained")
    );
    slo.metadata.resource_version = None;
    slos(&env)
        .create(&PostParams::default(), &slo)
        .await
        .unwrap();
    let again = env
        .wait_for("app", 60, "the same revision from the first step", |g| {
            status(g).phase == Some(Phase::Progressing)
                && status(g).canary_revision.as_deref() == Some(rev.as_str())
        })
        .await;
    assert!(status(&again).current_step.unwrap_or(0) <= 1);
    env.wait_phase("app", Phase::Succeeded, 90).await;
    assert_eq!(env.sim.lost(&env.ns, "app"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_promotes_a_healthy_canary() {
    let env = env("dc-examples").await;
    let services = ["share-link", "asset-pipeline", "notification"];
    let deployments = env.deployments();
    for name in services {
        // Busy services: a spotless canary shows it is within a 99.9% objective after
        // about 5,300 requests.
        let d = deployment(name, "app:1", 2, json!({simulator::RPS: "200"}));
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
        let slo: SloPolicy =
            serde_json::from_value(example(&format!("examples/{name}/slopolicy.yaml"))).unwrap();
        slos(&env)
            .create(&PostParams::default(), &slo)
            .await
            .unwrap();
        let gr: GuardedRollout =
            serde_json::from_value(example(&format!("examples/{name}/guardedrollout.yaml")))
                .unwrap();
        env.rollouts()
            .create(&PostParams::default(), &gr)
            .await
            .unwrap();
    }
    for name in services {
        env.wait_phase(name, Phase::Idle, 60).await;
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}});
        deployments
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap();
    }
    for name in services {
        let mut promoted_by_hand = false;
        let mut last = None;
        let mut evidence_passed = false;
        for _ in 0..600 {
            let gr = env.rollouts().get(name).await.unwrap();
            let s = status(&gr);
            evidence_passed |= s.analysis.iter().flat_map(|a| &a.checks).any(|c| {
                c.name == "errors-vs-primary" && c.result == guardrails::api::CheckResult::Pass
            });
            if s.phase == Some(Phase::Succeeded) {
                last = Some(s);
                break;
            }
            assert_ne!(s.phase, Some(Phase::RolledBack), "{name}: {s:#?}");
            // A pause without a duration waits for a person: the test is that person.
            if s.phase == Some(Phase::Paused) && !promoted_by_hand {
                let ann = json!({"metadata": {"annotations": {"guardrails.dev/promote": ""}}});
                env.rollouts()
                    .patch(name, &PatchParams::default(), &Patch::Merge(ann))
                    .await
                    .unwrap();
                promoted_by_hand = true;
            }
            last = Some(s);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let s = last.unwrap();
        assert_eq!(s.phase, Some(Phase::Succeeded), "{name}: {s:#?}");
        assert_eq!(s.history[0].outcome, Outcome::Promoted, "{name}");
        assert!(
            evidence_passed,
            "{name}: promoted on a pass of its evidence"
        );
        assert_eq!(env.sim.lost(&env.ns, name), 0.0, "{name}");
    }
}

/// A build failing every request, at 10% under the shipped settings: before, the first
/// tick came 30 s after the canary started and the second failed one 30 s later. The
/// sequential check reads at every scrape (1 s here): the canary is gone within two
/// scrapes (for increase() to see it), one reading and the scale-down.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_failing_every_request_is_gone_within_seconds() {
    let env = env("dc-broken").await;
    share_link(&env, json!({}), shipped_share_link()).await;
    ship_share_link(&env, json!({simulator::ERROR_RATE: "1"})).await;
    let served = broken_canary_served(&env).await;
    let done = env.wait_phase("share-link", Phase::RolledBack, 30).await;
    let s = status(&done);
    assert_last_reason(&s, "errors-vs-primary: canary");
    println!(
        "broken canary served errors for {:.1} s: {:.4}% of a 99.9%/28d budget ({:?})",
        served.as_secs_f64(),
        budget_share(served),
        s.history[0].reason
    );
    // Two scrapes, one reading (1 s each), the scale-down; 3 s for a loaded machine.
    assert!(
        served < Duration::from_secs(6),
        "served errors for {served:?}"
    );
    assert_eq!(env.sim.lost(&env.ns, "share-link"), 0.0);
}

/// A trickle of 3 requests a minute proves nothing either way: the sequential check
/// stays Inconclusive, nothing is promoted or rolled back, and after maxDuration the
/// rollout waits for a person.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_with_a_trickle_of_traffic_stays_inconclusive_and_waits() {
    let env = env("dc-trickle").await;
    let mut gr = example("examples/share-link/guardedrollout.yaml");
    gr["spec"]["analysis"]["checks"][0]["sequential"]["maxDuration"] = json!("30s");
    share_link(&env, json!({}), gr).await;
    ship_share_link(&env, json!({simulator::RPS: "0.05"})).await;
    let waiting = common::wait_for(
        &env.rollouts(),
        "share-link",
        90,
        "waiting for a person",
        |gr| status(gr).phase == Some(Phase::Paused),
    )
    .await;
    let s = status(&waiting);
    let message = s.message.clone().unwrap_or_default();
    assert!(
        message.contains("errors-vs-primary inconclusive after 30s, waiting for a person"),
        "{message}"
    );
    let check = &s.analysis.as_ref().unwrap().checks[0];
    assert_eq!(
        check.result,
        guardrails::api::CheckResult::Inconclusive,
        "{check:?}"
    );
    let evidence = check.evidence.as_ref().unwrap();
    assert!(evidence.canary.requests <= 3, "{evidence:?}");
    assert!(evidence.primary.requests > 500, "{evidence:?}");
    assert!(
        s.history.is_empty(),
        "nothing promoted or rolled back: {:?}",
        s.history
    );
    assert_eq!(
        s.canary_revision.as_deref().map(|_| ()),
        Some(()),
        "the canary still serves"
    );
    assert_eq!(env.sim.lost(&env.ns, "share-link"), 0.0);
}

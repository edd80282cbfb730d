//! What people and policy do to GuardedRollouts, end to end: the budget gate and its
//! override, invalid specs, deletion, manual actions, the documented RBAC. Real
//! apiserver + etcd, Prometheus scraping the simulator, a 5 s analysis interval.

mod common;

use std::time::Duration;

use common::env::*;
use guardrails::{
    api::{GuardedRollout, Outcome, Phase, SloPolicy},
    conditions::{self, ConditionType},
    telemetry::Metrics,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

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
    // Nothing of its own exists: it holds no finalizer, and a deletion takes it at once.
    let finalizers = env
        .rollouts()
        .get("orphan")
        .await
        .unwrap()
        .metadata
        .finalizers;
    assert!(finalizers.unwrap_or_default().is_empty());
    env.rollouts()
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    assert!(env.rollouts().get_opt("orphan").await.unwrap().is_none());
    // The valid one in the same namespace still ships.
    env.ship("app:2", 0.0).await;
    env.wait_phase("app", Phase::Succeeded, 90).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_rollout_gives_the_target_its_replicas_back() {
    let env = env("gr-delete").await;
    env.create(&target("app:1", 0.0), &rollout(json!([]))).await;
    env.wait_replicas("app", 0, 10).await;
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
    assert_last_reason(&status(&gr), "wrong build");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_start_gives_every_rollout_a_status_before_adopting_any() {
    use guardrails_sandbox::ControlPlane;
    use k8s_openapi::jiff::Timestamp;
    const ROLLOUTS: usize = 24;
    let mut env = env("cold-start").await;
    env.operator.abort();
    env.create_rollouts((0..ROLLOUTS).map(|i| format!("app-{i:02}")))
        .await;
    let cp = ControlPlane::shared(&guardrails::api::crds()).unwrap();
    let started = Timestamp::now();
    let operator = Operator::unelected(cp.config().clone());
    env.operator = start_operator(operator, &env.ns, env.prom.url(), &env.metrics);
    for i in 0..ROLLOUTS {
        env.wait_phase(&format!("app-{i:02}"), Phase::Idle, 120)
            .await;
    }

    let writes: Vec<_> = cp
        .audited_writes()
        .unwrap()
        .into_iter()
        .filter(|w| w.at() > started)
        .filter_map(|w| {
            let r = w.object_ref.clone()?;
            (r.namespace.as_deref() == Some(env.ns.as_str())).then_some((w, r))
        })
        .collect();
    let mut first_status = std::collections::BTreeMap::new();
    for (w, r) in &writes {
        if r.resource == "guardedrollouts" && r.subresource.as_deref() == Some("status") {
            let name = r.name.clone().unwrap_or_default();
            first_status.entry(name).or_insert(w.at());
        }
    }
    // The finalizer, the managed Deployments, the target's scale: any adoption write.
    let first_adoption = writes
        .iter()
        .filter(|(_, r)| r.subresource.is_none())
        .filter(|(_, r)| ["guardedrollouts", "deployments"].contains(&r.resource.as_str()))
        .map(|(w, _)| w)
        .min_by_key(|w| w.at())
        .expect("adoption writes");
    assert_eq!(first_status.len(), ROLLOUTS, "every rollout got a status");
    let (last, at) = first_status.iter().max_by_key(|(_, at)| **at).unwrap();
    assert!(
        *at < first_adoption.at(),
        "the first status of {last} ({at}) came after an adoption write: {}",
        first_adoption.describe()
    );
    // Each first status announces an adoption; those Events wait for the last status.
    let first_event = writes
        .iter()
        .filter(|(_, r)| r.resource == "events")
        .map(|(w, _)| w)
        .min_by_key(|w| w.at())
        .expect("the adoptions' Events");
    assert!(
        *at < first_event.at(),
        "an Event went out before the first status of {last} ({at}): {}",
        first_event.describe()
    );
    // The stable template is one value to server-side apply, not a field per key.
    // (The 1.20 apiserver does not name the subresource of an entry.)
    let gr = env.rollouts().get(last).await.unwrap();
    let tracked = gr
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find_map(|m| {
            let fields = m.fields_v1?.0;
            fields
                .pointer("/f:status/f:stableTemplate/f:template")
                .cloned()
        })
        .expect("the status manager owns the stable template");
    assert_eq!(
        tracked,
        json!({}),
        "the template's fields tracked one by one"
    );
}

//! Real workloads end to end: pods that take seconds to become ready or never do, a
//! primary deleted by hand, an autoscaler, a GitOps tool re-applying replicas. Requests
//! that found no ready pod are counted by the simulator; the answer must be 0.

mod common;

use std::time::Duration;

use common::env::*;
use guardrails::api::{Outcome, Phase};
use guardrails_sandbox::simulator;
use kube::{
    Api,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
};
use serde_json::json;

/// Requests of the `app` Service that found no ready pod so far.
fn lost(env: &Env) -> f64 {
    env.sim.lost(&env.ns, "app")
}

/// Reconciles of the GuardedRollout controller so far.

#[tokio::test(flavor = "multi_thread")]
async fn adopting_and_promoting_pods_that_need_8s_loses_no_request() {
    let env = env("wl-adopt").await;
    let slow = json!({simulator::READY_AFTER_MS: "8000"});
    env.deployments()
        .create(
            &PostParams::default(),
            &target_with("app:1", 4, slow.clone()),
        )
        .await
        .unwrap();
    common::wait_for(&env.deployments(), "app", 30, "the target serves", |d| {
        available(d, 4)
    })
    .await;
    env.rollouts()
        .create(&PostParams::default(), &rollout(json!([])))
        .await
        .unwrap();
    let adopting = env.wait_phase("app", Phase::Initializing, 10).await;
    assert!(adopting.status.unwrap().target_replicas == Some(4));
    assert_eq!(
        env.image_of("app").await.1,
        4,
        "the target serves while the primary starts"
    );
    env.wait_phase("app", Phase::Idle, 40).await;
    env.wait_replicas("app", 0, 10).await;
    assert_eq!(lost(&env), 0.0, "requests lost while adopting");

    env.ship_with("app:2", slow).await;
    let done = env.wait_phase("app", Phase::Succeeded, 150).await;
    assert_eq!(done.status.unwrap().history[0].outcome, Outcome::Promoted);
    assert_eq!(env.image_of("app-primary").await, ("app:2".to_string(), 4));
    assert_eq!(lost(&env), 0.0, "requests lost while promoting");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_mid_canary_hands_the_target_back_first_and_says_what_it_runs() {
    let env = env("wl-delete").await;
    env.canary_in_pause("5m").await;
    env.rollouts()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("app", 60).await;
    assert_eq!(lost(&env), 0.0, "requests lost while deleting");
    let target = env.deployments().get("app").await.unwrap();
    assert!(
        available(&target, 2),
        "the target serves again: {:?}",
        target.status
    );
    for managed in ["app-primary", "app-canary"] {
        assert!(
            env.deployments().get_opt(managed).await.unwrap().is_none(),
            "{managed}"
        );
    }
    let events = env.events("app").await;
    let warning = events
        .iter()
        .find(|e| e.0 == "TargetNotStable")
        .unwrap_or_else(|| panic!("a TargetNotStable event in {events:?}"));
    assert!(
        warning.1.contains("the canary under analysis"),
        "{warning:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_that_never_becomes_ready_is_rolled_back_at_the_deadline() {
    let env = env("wl-never-ready").await;
    let mut gr = rollout(json!([]));
    gr.spec.progress_deadline = "20s".parse().unwrap();
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship_with("app:2", json!({simulator::NEVER_READY: "true"}))
        .await;
    env.wait_for("app", 20, "the canary asked for", |g| {
        status(g).unavailable_since.is_some()
    })
    .await;
    // Stuck, it is woken by the watches, not by polling.
    let before = env.reconciles();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = env.reconciles() - before;
    // A reconcile reads the rollout and its Deployments; none means no API request.
    assert!(during <= 1, "{during} reconciles in 10 s while stuck");

    let gr = env.wait_phase("app", Phase::RolledBack, 40).await;
    let h = status(&gr).history[0].clone();
    let reason = h.reason.unwrap_or_default();
    assert!(
        reason.starts_with(
            "ProgressDeadlineExceeded: Deployment app-canary not fully available after 20s"
        ),
        "{reason}"
    );
    assert_eq!(
        env.image_of("app-primary").await.0,
        "app:1",
        "primary keeps the old template"
    );
    common::wait_for(&env.deployments(), "app-canary", 10, "canary at 0", |d| {
        available(d, 0)
    })
    .await;
    assert!(
        env.events("app")
            .await
            .iter()
            .any(|e| e.0 == "ProgressDeadlineExceeded")
    );
    assert_eq!(lost(&env), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_primary_is_rebuilt_from_the_stable_template_never_the_canarys() {
    let env = env("wl-primary-gone").await;
    env.canary_in_pause("15s").await;
    env.deployments()
        .delete("app-primary", &DeleteParams::default())
        .await
        .unwrap();
    let mut images = Vec::new();
    for _ in 0..40 {
        if let Some(d) = env.deployments().get_opt("app-primary").await.unwrap() {
            let image = d.spec.unwrap().template.spec.unwrap().containers[0]
                .image
                .clone();
            images.push(image.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!images.is_empty(), "the primary was rebuilt");
    assert!(images.iter().all(|i| i == "app:1"), "{images:?}");
    assert!(
        env.events("app")
            .await
            .iter()
            .any(|e| e.0 == "PrimaryRebuilt")
    );
    env.wait_phase("app", Phase::Succeeded, 90).await;
    assert_eq!(env.image_of("app-primary").await.0, "app:2");
    assert_eq!(
        lost(&env),
        0.0,
        "the canary served while the primary was gone"
    );
}

fn autoscalers(env: &Env) -> Api<DynamicObject> {
    // The test apiserver (1.20) serves autoscaling/v2beta2; the operator speaks both.
    let gvk = GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers");
    Api::namespaced_with(env.client.clone(), &env.ns, &resource)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_autoscaled_service_ships_without_the_operator_reverting_the_autoscaler() {
    let env = env("wl-hpa").await;
    let hpa: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "app"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                 "minReplicas": 2, "maxReplicas": 10,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                     "target": {"type": "Utilization", "averageUtilization": 70}}}]}
    }))
    .unwrap();
    autoscalers(&env)
        .create(&PostParams::default(), &hpa)
        .await
        .unwrap();
    let gr = rollout_with(
        json!([{"setWeight": 25}, {"pause": {"duration": "10s"}}]),
        json!([error_rate_check()]),
    );
    env.create(&target("app:1", 0.0), &gr).await;
    let copy = common::wait_for(
        &autoscalers(&env),
        "app-primary",
        20,
        "the primary's autoscaler",
        |_| true,
    )
    .await;
    assert_eq!(copy.data["spec"]["scaleTargetRef"]["name"], "app-primary");
    assert_eq!(copy.data["spec"]["maxReplicas"], 10);
    // Idle, the user edits their autoscaler: its watch event wakes the rollout, and the
    // copy follows (no reconcile would come otherwise for minutes).
    env.wait_phase("app", Phase::Idle, 30).await;
    env.reconciles_once_quiet(Duration::from_secs(3), Duration::ZERO)
        .await;
    autoscalers(&env)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxReplicas": 12}})),
        )
        .await
        .unwrap();
    common::wait_for(
        &autoscalers(&env),
        "app-primary",
        10,
        "the copy at maxReplicas 12",
        |c| c.data["spec"]["maxReplicas"] == 12,
    )
    .await;

    // The test plays the autoscaler: the primary grows to 5.
    let scale = |n: i32| Patch::Merge(json!({"spec": {"replicas": n}}));
    let params = PatchParams {
        field_manager: Some("kube-controller-manager".into()),
        ..Default::default()
    };
    env.deployments()
        .patch("app-primary", &params, &scale(5))
        .await
        .unwrap();
    env.ship("app:2", 0.0).await;
    let mut sizes = Vec::new();
    let mut canary = Vec::new();
    for _ in 0..200 {
        sizes.push(env.image_of("app-primary").await.1);
        canary.push(env.image_of("app-canary").await.1);
        let s = status(&env.rollouts().get("app").await.unwrap());
        if s.phase == Some(Phase::Succeeded) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        status(&env.rollouts().get("app").await.unwrap()).phase,
        Some(Phase::Succeeded)
    );
    assert!(
        sizes.iter().all(|n| *n == 5),
        "the primary's size was reverted: {sizes:?}"
    );
    assert!(
        canary.contains(&2),
        "canary at 25% of 5 = ceil(5*25/75) = 2: {canary:?}"
    );
    assert_eq!(env.image_of("app-primary").await, ("app:2".to_string(), 5));

    env.rollouts()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("app", 60).await;
    assert_eq!(
        env.image_of("app").await.1,
        5,
        "the target gets the autoscaler's size"
    );
    assert!(
        autoscalers(&env)
            .get_opt("app-primary")
            .await
            .unwrap()
            .is_none()
    );
    let user = autoscalers(&env).get("app").await.unwrap();
    assert_eq!(
        user.data["spec"]["scaleTargetRef"]["name"], "app",
        "the user's own, untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gitops_writer_reapplying_the_targets_replicas_is_named() {
    let env = env("wl-gitops").await;
    env.create(&target("app:1", 0.0), &rollout(json!([]))).await;
    // Argo CD without ignoreDifferences: re-applies replicas: 2 every 5 s.
    let writer = {
        let api = env.deployments();
        tokio::spawn(async move {
            let params = PatchParams {
                field_manager: Some("argocd-controller".into()),
                ..Default::default()
            };
            loop {
                let patch = Patch::Merge(json!({"spec": {"replicas": 2}}));
                let _ = api.patch("app", &params, &patch).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };
    let gr = env
        .wait_for("app", 20, "TargetConflict", |g| {
            status(g)
                .conditions
                .iter()
                .any(|c| c.type_ == "TargetConflict" && c.status == "True")
        })
        .await;
    let condition = status(&gr)
        .conditions
        .into_iter()
        .find(|c| c.type_ == "TargetConflict")
        .unwrap();
    assert!(
        condition.message.contains("argocd-controller"),
        "{}",
        condition.message
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    writer.abort();
    // Repeated Events are folded into one with a series count: count both.
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), &env.ns)
            .list(&Default::default())
            .await
            .unwrap();
    let warnings: Vec<_> = events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("TargetScaledUp"))
        .collect();
    let told: i32 = warnings
        .iter()
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum();
    assert_eq!(told, 1, "named once, not every 5 s: {warnings:#?}");
    let note = warnings[0].note.clone().unwrap_or_default();
    assert!(note.contains("argocd-controller"), "{note}");
    common::wait_for(&env.deployments(), "app", 10, "target back at 0", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    })
    .await;
}

/// An operator that starts on rollouts that exist already (a restart, an upgrade, a new
/// replica taking over) adopts every one, also with more of them than reconciles run at
/// once: a reconcile that finds the watch stores without their first list comes back
/// shortly instead of holding the controller (and so the stores) back.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_starting_on_more_rollouts_than_it_reconciles_at_once_adopts_them_all() {
    const ROLLOUTS: usize = 24;
    let (cp, client, ns) = common::cluster("existing").await;
    let mut env = env_in(client, ns, Operator::unelected(cp.config().clone())).await;
    env.operator.abort();
    env.create_rollouts((0..ROLLOUTS).map(|i| format!("app-{i:02}")))
        .await;
    let operator = Operator::unelected(cp.config().clone());
    env.operator = start_operator(operator, &env.ns, env.prom.url(), &env.metrics);
    guardrails_sandbox::wait::eventually(
        "every rollout adopted",
        Duration::from_secs(60),
        || async {
            let list = env.rollouts().list(&Default::default()).await.unwrap();
            let idle = |g: &guardrails::api::GuardedRollout| {
                g.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle)
            };
            match list.items.iter().filter(|g| !idle(g)).count() {
                0 => Ok(()),
                waiting => Err(waiting),
            }
        },
    )
    .await;
}

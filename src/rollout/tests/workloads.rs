//! Workloads as they are in a real cluster: pods that never become ready, a primary
//! that disappears, an autoscaler that owns the primary's size, a status that was lost.

use super::*;
use std::time::Duration;

use crate::api::RevisionTemplate;

fn last_plan(w: &World) -> Plan {
    w.last.as_ref().unwrap().plan.clone().unwrap()
}

#[test]
fn a_canary_that_never_becomes_ready_is_rolled_back_at_the_progress_deadline() {
    let mut w = World::new();
    w.never_ready = Some("r2".into());
    w.ship("r2");
    w.run();
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    assert!(w.status.unavailable_since.is_some());
    // No tick runs without ready pods; the deadline (10m) still comes.
    w.now += 9 * 60;
    w.run();
    assert_eq!(w.phase(), Phase::Progressing, "not before the deadline");
    let requeue = w.last.as_ref().unwrap().requeue;
    assert!(
        requeue <= Duration::from_secs(60),
        "wakes for the deadline: {requeue:?}"
    );
    w.now += 60;
    w.run();
    assert_eq!(w.phase(), Phase::RolledBack);
    let reason = w.status.history[0].reason.clone().unwrap();
    assert!(
        reason.starts_with(
            "ProgressDeadlineExceeded: Deployment app-canary not fully available after 10m"
        ) && reason.contains("0/1 ready"),
        "{reason}"
    );
    assert!(
        w.reasons()
            .contains(&RolloutEvent::ProgressDeadlineExceeded)
    );
    assert_eq!(w.status.failed_revision.as_deref(), Some("r2"));
    let plan = last_plan(&w);
    assert_eq!(
        plan.primary.unwrap().revision,
        "r1",
        "primary keeps the old template"
    );
    assert_eq!(plan.canary.replicas, 0);
}

#[test]
fn a_stuck_canary_does_not_poll() {
    let mut w = World::new();
    w.never_ready = Some("r2".into());
    w.ship("r2");
    w.run();
    w.run();
    let requeue = w.last.as_ref().unwrap().requeue;
    assert!(
        requeue >= Duration::from_secs(10),
        "watches tell it when the canary changes: {requeue:?}"
    );
}

#[test]
fn a_promotion_whose_primary_never_becomes_available_is_rolled_back_to_the_stable_template() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.walk();
    assert_eq!(w.phase(), Phase::Promoting);
    // The primary took r2 but its new pods never become ready.
    let primary = w.obs.primary.as_mut().unwrap();
    (primary.ready, primary.available) = (0, 0);
    w.decide_only();
    assert_eq!(w.phase(), Phase::Promoting);
    w.now += 600;
    w.decide_only();
    assert_eq!(w.phase(), Phase::RolledBack);
    let reason = w.status.history[0].reason.clone().unwrap();
    assert!(reason.contains("Deployment app-primary"), "{reason}");
    let primary = last_plan(&w).primary.unwrap();
    assert_eq!(primary.revision, "r1", "back to the stable revision");
    assert_eq!(w.status.stable_revision.as_deref(), Some("r1"));
}

#[test]
fn a_deleted_primary_is_rebuilt_from_the_stable_template_never_the_canarys() {
    let mut w = World::new();
    assert!(w.status.stable_template.is_some(), "kept from adoption");
    w.ship("r2");
    w.run();
    w.run();
    w.obs.primary = None;
    w.tick(CheckResult::Pass, 0.0);
    let primary = last_plan(&w).primary.unwrap();
    assert_eq!(primary.revision, "r1");
    assert!(
        !last_plan(&w).scale_target_to_zero,
        "no primary serves: the target is not scaled down (someone may have scaled it up)"
    );
    assert!(w.reasons().contains(&RolloutEvent::PrimaryRebuilt));
    assert!(w.last.as_ref().unwrap().stall.is_none());
}

#[test]
fn an_unknown_stable_template_stalls_instead_of_guessing() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.status.stable_template = Some(RevisionTemplate {
        revision: "r0".into(),
        template: Default::default(),
    });
    w.obs.primary = None;
    w.run();
    let d = w.last.as_ref().unwrap();
    assert!(
        d.plan.as_ref().unwrap().primary.is_none(),
        "primary left alone"
    );
    assert!(
        !d.plan.as_ref().unwrap().scale_target_to_zero,
        "the target may serve while no primary does"
    );
    let Some(Stall::PrimaryTemplateUnknown(m)) = &d.stall else {
        panic!("stalled: {:?}", d.stall)
    };
    assert!(
        m.contains("revision r1") && m.contains("app-primary"),
        "{m}"
    );
}

#[test]
fn readoption_after_a_lost_status_keeps_the_primary_and_its_size() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    // The status is lost mid-canary: the target holds r2 at 0 replicas (ours).
    w.status = Default::default();
    w.obs.target.as_mut().unwrap().replicas = 0;
    w.run();
    assert_eq!(
        w.status.stable_revision.as_deref(),
        Some("r1"),
        "not the target's r2"
    );
    assert_eq!(
        w.status.target_replicas,
        Some(4),
        "the primary's size, not our 0"
    );
    assert_eq!(last_plan(&w).primary.unwrap().revision, "r1");
    // The primary already serves: nothing of ours changes, so nothing would wake the
    // rollout for a second decision.
    assert_eq!(
        w.phase(),
        Phase::Progressing,
        "r2 is analysed as a canary at once"
    );
    assert_eq!(w.status.canary_revision.as_deref(), Some("r2"));
}

#[test]
fn a_revision_shipped_during_adoption_starts_once_the_primary_serves() {
    let mut w = World::unadopted();
    w.obs.gate = open_gate();
    w.run();
    assert_eq!(w.phase(), Phase::Initializing);
    w.ship("r2");
    w.run();
    assert_eq!(
        w.phase(),
        Phase::Progressing,
        "the decision that sees the primary serve starts r2"
    );
    assert_eq!(w.status.stable_revision.as_deref(), Some("r1"));
    assert_eq!(last_plan(&w).primary.unwrap().revision, "r1");
}

#[test]
fn an_autoscaled_primary_keeps_the_autoscalers_size() {
    let mut w = World::new();
    w.obs.autoscaled = true;
    w.obs.primary.as_mut().unwrap().replicas = 9;
    w.run();
    assert_eq!(last_plan(&w).primary.unwrap().replicas, 9, "never reverted");
    w.ship("r2");
    w.run();
    w.run();
    assert_eq!(w.status.canary_weight, Some(10));
    assert_eq!(last_plan(&w).canary.replicas, 1, "ceil(9*10/90)");
    w.obs.primary.as_mut().unwrap().replicas = 18;
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(
        last_plan(&w).canary.replicas,
        2,
        "follows the primary: ceil(18*10/90)"
    );
    assert_eq!(last_plan(&w).primary.unwrap().replicas, 18);
}

#[test]
fn a_clock_behind_the_status_ends_no_pause_early() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.tick(CheckResult::Pass, 0.0);
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(w.status.current_step, Some(1), "in the 1m pause");
    w.now -= 3600;
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(
        w.status.current_step,
        Some(1),
        "a clock an hour behind is no hour elapsed"
    );
}

#[test]
fn a_writer_scaling_the_target_up_is_named_once_and_scaled_back() {
    let mut w = World::new();
    let scale_up = |w: &mut World| {
        let t = w.obs.target.as_mut().unwrap();
        t.replicas = 3;
        t.scaled_by = Some("argocd-application-controller".into());
    };
    scale_up(&mut w);
    w.decide_only();
    assert!(w.reasons().contains(&RolloutEvent::TargetScaledUp));
    let note = &w.last.as_ref().unwrap().notes[0].message;
    assert!(
        note.contains("scaled to 3 by argocd-application-controller"),
        "{note}"
    );
    assert!(last_plan(&w).scale_target_to_zero);
    let seen = w.status.target_scaled_up.clone().unwrap();
    assert_eq!(seen.manager, "argocd-application-controller");
    // Again five seconds later: scaled back again, but not said again.
    w.now += 5;
    scale_up(&mut w);
    w.decide_only();
    assert!(
        !w.reasons().contains(&RolloutEvent::TargetScaledUp),
        "said once"
    );
    assert!(last_plan(&w).scale_target_to_zero);
    // A target at 0 is no conflict.
    w.obs.target.as_mut().unwrap().replicas = 0;
    w.now += 5;
    w.decide_only();
    assert_eq!(
        w.status.target_scaled_up.as_ref().unwrap().last_seen,
        seen_after(&seen, 5)
    );
}

fn seen_after(seen: &crate::api::TargetScaledUp, secs: i64) -> Time {
    Time(seen.last_seen.0 + k8s_openapi::jiff::SignedDuration::from_secs(secs))
}

#[test]
fn route_weights_never_go_back_while_the_canary_grows() {
    let mut w = World::new();
    w.spec.traffic_routing.gateway_api = Some(crate::api::GatewayApiRouting {
        http_route: "r".into(),
        port: 8080,
        service: None,
    });
    let route = |w: &World| last_plan(w).route_weight;
    w.ship("r2");
    w.run();
    w.run();
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(route(&w), Some(10));
    w.tick(CheckResult::Pass, 0.0);
    w.now += 60;
    // The pause ends; the canary is asked for 50% but its new pods are not ready yet.
    let mut seen = Vec::new();
    for _ in 0..3 {
        w.obs.tick = Some(check(CheckResult::Pass, 0.0));
        w.now += 10;
        w.decide_only();
        seen.push(route(&w));
        let size = last_plan(&w).canary.replicas;
        let c = w.obs.canary.as_mut().unwrap();
        c.replicas = size;
        c.ready = 1;
    }
    assert_eq!(w.status.canary_weight, Some(50));
    assert!(
        seen.iter().all(|r| *r == Some(10)),
        "held at 10, never 0: {seen:?}"
    );
    w.run();
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(
        route(&w),
        Some(50),
        "moves once the canary is ready: {seen:?}"
    );
}

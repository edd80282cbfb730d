//! Steps, weights and promotion of a healthy canary.

use super::*;

#[test]
fn adoption_records_the_target_and_creates_the_primary() {
    let mut w = World::unadopted();
    let d = w.run().clone();
    assert_eq!(d.status.phase, Some(Phase::Initializing));
    assert_eq!(d.status.target_replicas, Some(3));
    assert_eq!(d.status.stable_revision.as_deref(), Some("r1"));
    let plan = d.plan.unwrap();
    let primary = plan.primary.as_ref().expect("a primary");
    assert_eq!(primary.revision, "r1", "the target's template");
    assert_eq!((primary.replicas, plan.canary.replicas), (4, 0));
    assert!(
        !plan.scale_target_to_zero,
        "the target serves until the primary is available"
    );
    w.run();
    assert_eq!(w.phase(), Phase::Idle);
    let plan = w.last.as_ref().unwrap().plan.clone().unwrap();
    assert!(plan.scale_target_to_zero, "the primary serves: target to 0");
    // Nothing to ship: Idle stays Idle.
    w.run();
    assert_eq!(w.phase(), Phase::Idle);
}

#[test]
fn a_canary_starts_at_its_first_step_in_one_decision() {
    let mut w = World::new();
    w.ship("r2");
    let d = w.decide_only().clone();
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    assert_eq!(d.status.current_step, Some(0));
    assert_eq!(d.status.canary_weight, Some(10), "the first step's weight");
    assert!(d.status.unavailable_since.is_some(), "its deadline counts");
    let canary = d.plan.unwrap().canary;
    assert_eq!((canary.revision.as_str(), canary.replicas), ("r2", 1));
    let reasons: Vec<_> = d.notes.iter().map(|n| n.reason).collect();
    assert!(
        reasons.contains(&RolloutEvent::CanaryStarted),
        "{reasons:?}"
    );
}

#[test]
fn a_canary_started_under_spec_paused_waits_without_pods() {
    let mut w = World::new();
    w.spec.paused = true;
    w.ship("r2");
    let d = w.decide_only().clone();
    assert_eq!(d.status.phase, Some(Phase::Paused));
    assert_eq!(d.status.canary_revision.as_deref(), Some("r2"));
    assert_eq!(d.status.canary_weight, Some(0));
    assert_eq!(d.plan.unwrap().canary.replicas, 0);
}

#[test]
fn primary_defaults_to_the_target_size() {
    let mut w = World::new();
    w.spec.replicas = None;
    w.run();
    assert_eq!(w.obs.primary.as_ref().unwrap().replicas, 3);
}

#[test]
fn healthy_canary_walks_every_step_and_is_promoted() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    assert!(w.reasons().contains(&RolloutEvent::CanaryStarted));
    assert!(w.reasons().contains(&RolloutEvent::GateAllowed));
    assert_eq!(w.status.canary_weight, Some(10));
    assert_eq!(w.obs.canary.as_ref().unwrap().replicas, 1, "ceil(4*10/90)");
    w.walk();
    assert_eq!(w.phase(), Phase::Promoting);
    assert_eq!(
        w.last
            .as_ref()
            .unwrap()
            .plan
            .as_ref()
            .unwrap()
            .primary
            .as_ref()
            .map(|p| p.revision.as_str()),
        Some("r2"),
        "the primary takes the canary's template"
    );
    w.run();
    assert_eq!(w.phase(), Phase::Succeeded);
    assert_eq!(w.status.stable_revision.as_deref(), Some("r2"));
    assert_eq!(
        w.obs.primary.as_ref().unwrap().revision.as_deref(),
        Some("r2")
    );
    assert_eq!(w.obs.canary.as_ref().unwrap().replicas, 0);
    w.run();
    let h = &w.status.history[0];
    assert_eq!((h.revision.as_str(), h.outcome), ("r2", Outcome::Promoted));
    assert_eq!(h.reason.as_deref(), Some("all 3 steps passed"));
    assert!(h.started_at.is_some() && h.finished_at.is_some());
    // The pause held for its full minute.
    assert!(w.now >= 60);
}

#[test]
fn pause_needs_a_passing_tick_at_the_current_weight() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    w.run(); // weight 10 ready: step 1 done, pause starts
    assert_eq!(w.status.current_step, Some(1));
    w.now += 120;
    w.run();
    assert_eq!(w.status.current_step, Some(1), "no passing tick yet");
    w.tick(CheckResult::NoData, 0.0);
    assert_eq!(w.status.current_step, Some(1), "no data is not a pass");
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(w.status.current_step, Some(2));
}

#[test]
fn pause_without_duration_waits_for_a_promote() {
    let mut w = World::new();
    w.spec.steps[1].pause.as_mut().unwrap().duration = None;
    w.ship("r2");
    w.run();
    for _ in 0..10 {
        w.tick(CheckResult::Pass, 0.0);
    }
    assert_eq!(w.status.current_step, Some(1));
    assert_eq!(w.phase(), Phase::Paused, "held until a person promotes");
    let msg = w.status.message.clone().unwrap_or_default();
    assert!(msg.contains("waiting for a manual promote"), "{msg}");
    w.obs.manual.promote = true;
    w.run();
    assert_eq!(w.phase(), Phase::Promoting);
}

#[test]
fn route_weight_waits_for_a_ready_canary_and_drops_on_rollback() {
    let mut w = World::new();
    w.spec.traffic_routing.gateway_api = Some(crate::api::GatewayApiRouting {
        http_route: "r".into(),
        port: 8080,
        service: None,
    });
    w.ship("r2");
    let route = |w: &World| w.last.as_ref().unwrap().plan.as_ref().unwrap().route_weight;
    w.run(); // the canary starts at weight 10; it was not yet sized for it
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(w.status.canary_weight, Some(10));
    assert_eq!(route(&w), Some(0), "no traffic before the canary is ready");
    assert_eq!(w.obs.canary.as_ref().unwrap().replicas, 1, "ceil(4*10/100)");
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(route(&w), Some(10), "traffic once it is ready");
    w.tick(CheckResult::Fail, 0.5);
    w.tick(CheckResult::Fail, 0.5);
    assert_eq!(w.phase(), Phase::RolledBack);
    assert_eq!(route(&w), Some(0));
    let plan = w.last.as_ref().unwrap().plan.clone().unwrap();
    assert_eq!(plan.canary.replicas, 0);
}

#[test]
fn replica_ratio_has_no_route() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    assert_eq!(
        w.last.as_ref().unwrap().plan.as_ref().unwrap().route_weight,
        None
    );
}

#[test]
fn first_tick_waits_one_interval_after_the_canary_started() {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
    let at = |s: i64| Time(Timestamp::from_second(s).unwrap());
    let mut w = World::new();
    w.spec.analysis.interval = "30s".parse().unwrap();
    let mut status = GuardedRolloutStatus {
        phase: Some(Phase::Progressing),
        canary_weight: Some(10),
        canary_started_at: Some(at(1000)),
        ..Default::default()
    };
    let canary = settled(Some("r2".into()), 1);
    let due =
        |s: &GuardedRolloutStatus, now: i64| super::tick_due(&w.spec, s, Some(&canary), &at(now));
    assert!(
        !due(&status, 1010),
        "the window would still hold older pods' samples"
    );
    assert!(due(&status, 1030));
    status.analysis = Some(crate::api::AnalysisStatus {
        last_tick_time: Some(at(1030)),
        ..Default::default()
    });
    assert!(!due(&status, 1050));
    assert!(due(&status, 1060));
    status.canary_weight = Some(0);
    assert!(!due(&status, 2000), "no traffic, no tick");
}

#[test]
fn decide_is_deterministic_for_a_restart() {
    // The same status and observations give the same decision: a restarted operator
    // resumes where status says it was.
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    let a = decide(&w.spec, &w.status, &w.obs, &w.time());
    let b = decide(&w.spec, &w.status, &w.obs, &w.time());
    assert_eq!(a, b);
}

#[test]
fn missing_target_leaves_everything_alone() {
    let mut w = World::new();
    w.obs.target = None;
    let d = w.run().clone();
    assert!(d.plan.is_none());
    assert_eq!(d.notes[0].reason, RolloutEvent::TargetNotFound);
    assert_eq!(w.phase(), Phase::Idle);
}

//! Decisions that must hold during an incident, one test per defect found.

use super::*;

#[test]
fn a_corrective_fix_is_not_rolled_back_for_the_page_it_fixes() {
    let mut w = World::new();
    // The incident: budget spent, page tier firing since t=0.
    w.obs.gate = firing(Gate::Frozen, Severity::Page, 0);
    w.now += 60;
    w.obs.target.as_mut().unwrap().change_class = Some(ChangeClass::Corrective);
    w.ship("fix");
    w.run();
    assert_eq!(
        w.phase(),
        Phase::Progressing,
        "corrective passes a Frozen gate"
    );
    // Even a tier that starts during the canary does not abort the fix.
    w.obs.gate = firing(Gate::Frozen, Severity::Page, w.now + 5);
    w.walk();
    assert_eq!(w.phase(), Phase::Promoting);
}

#[test]
fn a_fix_after_a_bad_canary_is_not_rolled_back_for_the_bad_canarys_alert() {
    let mut w = World::new();
    w.ship("bad");
    w.run();
    w.obs.gate = firing(Gate::Frozen, Severity::Page, w.now + 5);
    w.now += 10;
    w.run();
    assert_eq!(
        w.phase(),
        Phase::RolledBack,
        "the tier started during the bad canary"
    );
    // The next revision, a fix, starts while the bad canary's errors still page.
    if let Referenced::Found(g) = &mut w.obs.gate {
        g.state = Some(Gate::Open);
    }
    w.now += 30;
    w.ship("fix");
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    w.walk();
    assert_eq!(
        w.phase(),
        Phase::Promoting,
        "not rolled back for an older alert"
    );
}

fn dropped(w: &World) -> Vec<String> {
    w.last
        .as_ref()
        .unwrap()
        .notes
        .iter()
        .filter(|n| n.reason == RolloutEvent::ActionDropped)
        .map(|n| n.message.clone())
        .collect()
}

#[test]
fn a_stale_promote_read_while_idle_is_dropped_and_the_next_canary_is_analysed() {
    let mut w = World::new();
    w.obs.manual.promote = true;
    w.run();
    let d = w.last.as_ref().unwrap();
    assert_eq!(
        d.consumed,
        vec![crate::api::ANNOTATION_PROMOTE],
        "consumed while Idle"
    );
    assert!(
        dropped(&w)[0].contains("no canary in flight to promote"),
        "{:?}",
        dropped(&w)
    );
    // The next revision fails its checks: rolled back, not promoted.
    w.ship("bad");
    w.run();
    w.tick(CheckResult::Fail, 0.5);
    w.tick(CheckResult::Fail, 0.5);
    assert_eq!(w.phase(), Phase::RolledBack);
}

#[test]
fn stale_abort_retry_and_override_are_dropped_with_an_event() {
    let mut w = World::new();
    w.obs.manual = Manual {
        promote: false,
        abort: Some("old".into()),
        retry: true,
        override_gate: Some("old incident".into()),
    };
    w.run();
    assert_eq!(w.last.as_ref().unwrap().consumed.len(), 3);
    let notes = dropped(&w);
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert_eq!(w.phase(), Phase::Idle);
}

#[test]
fn an_override_read_while_the_gate_is_open_does_not_open_a_later_frozen_gate() {
    let mut w = World::new();
    w.obs.manual.override_gate = Some("incident 7".into());
    w.run();
    assert_eq!(dropped(&w).len(), 1);
    w.obs.gate = firing(Gate::Frozen, Severity::Ticket, 0);
    w.ship("feature");
    w.run();
    assert_eq!(w.phase(), Phase::Blocked, "the old override is gone");
    // Read while it is blocked, it lets that revision through.
    w.obs.manual.override_gate = Some("incident 8".into());
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(
        w.status.gate.as_ref().unwrap().r#override.as_deref(),
        Some("incident 8")
    );
}

#[test]
fn an_abort_while_promoting_returns_the_primary_to_the_stable_template() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.walk();
    assert_eq!(w.phase(), Phase::Promoting);
    w.obs.manual.abort = Some("wrong build".into());
    w.decide_only();
    assert_eq!(w.phase(), Phase::RolledBack);
    let plan = w.last.as_ref().unwrap().plan.clone().unwrap();
    assert_eq!(plan.primary.unwrap().revision, "r1");
    assert_eq!(w.status.history[0].outcome, Outcome::Aborted);
}

fn serving_canary() -> World {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.tick(CheckResult::Pass, 0.0);
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(w.status.current_step, Some(1));
    assert!(w.obs.canary.as_ref().unwrap().replicas > 0);
    w
}

#[test]
fn an_invalid_spec_mid_canary_drains_the_canary_then_restarts_it_from_the_first_step() {
    let mut w = serving_canary();
    let why = "spec.analysis.checks[0].query: does not parse";
    w.obs.blocker = Some(Blocker::InvalidSpec(why.into()));
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(w.phase(), Phase::Blocked);
    assert_eq!(w.obs.canary.as_ref().unwrap().replicas, 0, "drained");
    assert!(w.reasons().contains(&RolloutEvent::CanaryDrained));
    assert!(matches!(
        w.last.as_ref().unwrap().stall,
        Some(Stall::Blocked(_))
    ));
    assert_eq!(w.status.history[0].outcome, Outcome::Blocked);
    w.run();
    assert_eq!(w.phase(), Phase::Blocked, "waits while the spec is invalid");
    assert_eq!(
        w.status.history.len(),
        1,
        "blocked once, not on every reconcile"
    );
    w.obs.blocker = None;
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(
        w.status.canary_revision.as_deref(),
        Some("r2"),
        "the same revision"
    );
    assert_eq!(w.status.current_step, Some(0), "from the first step");
}

#[test]
fn a_slo_policy_deleted_mid_canary_drains_the_canary_until_it_returns() {
    let mut w = serving_canary();
    w.obs.gate = Referenced::Missing;
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(w.phase(), Phase::Blocked);
    assert_eq!(w.obs.canary.as_ref().unwrap().replicas, 0);
    w.run();
    assert_eq!(w.phase(), Phase::Blocked);
    w.obs.gate = open_gate();
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(w.status.current_step, Some(0));
}

#[test]
fn the_provider_error_clock_stops_when_prometheus_answers_with_no_data() {
    let mut w = serving_canary();
    w.spec.analysis.no_data.timeout = "10m".parse().unwrap();
    w.tick(CheckResult::Error, 0.0);
    assert!(w.analysis().provider_errors_since.is_some());
    // Prometheus answers (no data) for six quiet minutes...
    for _ in 0..36 {
        w.tick(CheckResult::NoData, 0.0);
    }
    assert_eq!(w.phase(), Phase::Progressing);
    assert!(w.analysis().provider_errors_since.is_none());
    // ...then one timeout is one timeout, not "failing for 370s".
    w.tick(CheckResult::Error, 0.0);
    assert_eq!(w.phase(), Phase::Progressing);
}

#[test]
fn a_canary_is_never_promoted_while_its_checks_have_no_data() {
    let mut w = serving_canary();
    // The pause ends (1m) while Prometheus answers with no data: the last step, a
    // setWeight, would otherwise complete on readiness alone and promote unanalysed.
    for _ in 0..5 {
        w.tick(CheckResult::NoData, 0.0);
    }
    assert_eq!(w.phase(), Phase::Progressing);
    assert_ne!(
        w.status.history.first().map(|h| h.outcome),
        Some(Outcome::Promoted)
    );
    w.walk();
    assert!(
        matches!(w.phase(), Phase::Promoting | Phase::Succeeded),
        "promoted on passing ticks"
    );
}

#[test]
fn a_query_returning_several_series_is_an_invalid_check_not_a_prometheus_outage() {
    let mut w = serving_canary();
    let mut checks = check(CheckResult::Invalid, 0.0);
    checks[0].message = Some("query returned 3 series; it must return a single number".into());
    w.now += 10;
    w.obs.tick = Some(checks);
    w.run();
    let Some(Stall::Blocked(Blocker::InvalidSpec(m))) = &w.last.as_ref().unwrap().stall else {
        panic!("stalled: {:?}", w.last.as_ref().unwrap().stall)
    };
    assert!(
        m.contains("checks[0] (error-rate)") && m.contains("3 series"),
        "{m}"
    );
    let a = w.analysis();
    assert!(
        a.provider_errors_since.is_none(),
        "not a Prometheus failure"
    );
    assert_eq!(w.phase(), Phase::Progressing, "held, never passed");
}

#[test]
fn a_route_that_disappears_mid_canary_drains_the_canary_until_it_returns() {
    let mut w = serving_canary();
    let why = "spec.trafficRouting.gatewayAPI.httpRoute: HTTPRoute r not found";
    w.obs.blocker = Some(Blocker::RouteNotFound(why.into()));
    w.tick(CheckResult::Pass, 0.0);
    assert_eq!(w.phase(), Phase::Blocked);
    assert_eq!(w.obs.canary.as_ref().unwrap().replicas, 0, "drained");
    let d = w.last.as_ref().unwrap();
    assert!(matches!(
        d.stall,
        Some(Stall::Blocked(Blocker::RouteNotFound(_)))
    ));
    assert!(
        d.requeue <= std::time::Duration::from_secs(10),
        "looks again soon"
    );
    w.obs.blocker = None;
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(w.status.current_step, Some(0));
}

//! Analysis outcomes: failures, missing data, provider errors, burn-rate alerts.

use super::*;

#[test]
fn failing_canary_rolls_back_after_the_failure_limit_and_is_not_retried() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    w.tick(CheckResult::Fail, 0.2);
    assert_eq!(w.phase(), Phase::Progressing);
    assert!(w.reasons().contains(&RolloutEvent::AnalysisFailed));
    let first_fail = w.time();
    w.tick(CheckResult::Fail, 0.2);
    assert_eq!(w.phase(), Phase::RolledBack);
    assert_eq!(w.status.failed_revision.as_deref(), Some("r2"));
    assert_eq!(
        w.obs.canary.as_ref().unwrap().replicas,
        0,
        "canary to zero at once"
    );
    assert_eq!(
        w.obs.primary.as_ref().unwrap().revision.as_deref(),
        Some("r1"),
        "primary untouched"
    );
    let note = w
        .last
        .as_ref()
        .unwrap()
        .notes
        .iter()
        .find(|n| n.reason == RolloutEvent::RolledBack)
        .unwrap();
    assert!(
        note.message.contains("error-rate 0.2 > 0.01 for 2 ticks"),
        "{}",
        note.message
    );
    w.run();
    let h = &w.status.history[0];
    assert_eq!(h.outcome, Outcome::RolledBack);
    assert_eq!(h.detected_at, Some(first_fail));
    assert!(h.finished_at.is_some());
    // Not retried while the template stays the same.
    w.run();
    assert_eq!(w.phase(), Phase::RolledBack);
    assert_eq!(w.status.canary_revision, None);
    // A retry starts it again.
    w.obs.manual.retry = true;
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    assert!(w.consumed(crate::api::ANNOTATION_RETRY));
}

#[test]
fn a_passing_tick_resets_consecutive_failures() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    w.tick(CheckResult::Fail, 0.2);
    w.tick(CheckResult::Pass, 0.0);
    w.tick(CheckResult::Fail, 0.2);
    assert_ne!(w.phase(), Phase::RolledBack);
    assert_eq!(w.analysis().consecutive_failures, 1);
}

#[test]
fn provider_errors_hold_then_roll_back_at_the_timeout() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    w.tick(CheckResult::Error, 0.0);
    w.tick(CheckResult::Error, 0.0);
    assert_eq!(w.phase(), Phase::Progressing, "holds");
    assert_eq!(
        w.status.current_step,
        Some(1),
        "weight 10 reached, but nothing passed"
    );
    // Back before the timeout: analysis continues.
    w.tick(CheckResult::Pass, 0.0);
    assert!(w.analysis().provider_errors_since.is_none());
    // Away past the timeout (30s): rolled back.
    for _ in 0..4 {
        w.tick(CheckResult::Error, 0.0);
    }
    assert_eq!(w.phase(), Phase::RolledBack);
    assert!(
        w.status.history[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("Prometheus failing")
    );
}

#[test]
fn no_data_holds_then_rolls_back_and_never_promotes() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    for _ in 0..6 {
        w.tick(CheckResult::NoData, 0.0);
        assert_ne!(w.phase(), Phase::Promoting);
    }
    w.tick(CheckResult::NoData, 0.0);
    assert_eq!(w.phase(), Phase::RolledBack);
}

#[test]
fn burn_rate_alert_of_the_slo_policy_rolls_back() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.obs.gate = firing(Gate::Open, Severity::Page, w.now);
    w.run();
    assert_eq!(w.phase(), Phase::RolledBack);
    // A ticket does not abort under the default (page).
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.obs.gate = firing(Gate::Open, Severity::Ticket, w.now);
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
}

#[test]
fn reverting_the_target_to_the_stable_revision_ends_the_rollback() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    w.tick(CheckResult::Fail, 0.2);
    w.tick(CheckResult::Fail, 0.2);
    assert_eq!(w.phase(), Phase::RolledBack);
    // Git is reverted: the target holds the stable revision again.
    w.ship("r1");
    w.run();
    assert_eq!(w.phase(), Phase::Idle, "nothing left for a person to do");
    assert_eq!(
        w.status.failed_revision.as_deref(),
        Some("r2"),
        "still remembered"
    );
    // Shipping the bad revision again does not start it, and says so.
    w.ship("r2");
    w.run();
    assert_eq!(w.phase(), Phase::RolledBack);
    assert_eq!(w.obs.canary.as_ref().unwrap().replicas, 0);
}

#[test]
fn only_a_rolled_back_canary_leaves_without_waiting_for_the_route() {
    let plan = |w: &World| w.last.as_ref().unwrap().plan.clone().unwrap();
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    assert!(plan(&w).canary_waits_for_route, "a canary under analysis");
    w.tick(CheckResult::Fail, 0.2);
    w.tick(CheckResult::Fail, 0.2);
    assert_eq!(w.phase(), Phase::RolledBack);
    assert!(
        !plan(&w).canary_waits_for_route,
        "a bad canary goes at once"
    );
}

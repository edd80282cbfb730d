//! Sequential checks: read between ticks, a Fail rolls back at once, Inconclusive never
//! passes and waits for a person after maxDuration.

use super::*;
use crate::api::{Check, EvidenceStatus, RequestCounts, SequentialCheck};

/// The spec with a sequential check (maxDuration 2m) after the error-rate query.
fn with_sequential() -> World {
    let mut w = World::new();
    w.spec.analysis.checks.push(Check {
        name: "evidence".into(),
        sequential: Some(SequentialCheck {
            max_duration: crate::dur!("2m"),
            ..SequentialCheck::of("availability")
        }),
        ..Default::default()
    });
    w
}

fn sequential(result: CheckResult) -> CheckStatus {
    CheckStatus {
        name: "evidence".into(),
        value: None,
        min: None,
        max: None,
        result,
        message: Some("canary 30 errors in 30 requests vs primary 0 in 270".into()),
        evidence: Some(EvidenceStatus {
            canary: RequestCounts {
                requests: 30,
                errors: 30,
            },
            primary: RequestCounts {
                requests: 270,
                errors: 0,
            },
            vs_primary: 0.0,
            vs_objective: 0.0,
            bound: 4.6,
            decision: result,
        }),
    }
}

impl World {
    /// A tick: the error-rate query passes, the sequential check says `result`.
    fn tick_with(&mut self, result: CheckResult) {
        self.now += 10;
        let mut checks = check(CheckResult::Pass, 0.0);
        checks.push(sequential(result));
        self.obs.tick = Some(checks);
        self.run();
    }

    /// A reading of the sequential check alone, one second on.
    fn evidence(&mut self, result: CheckResult) {
        self.now += 1;
        self.obs.evidence = Some(vec![sequential(result)]);
        self.run();
    }
}

#[test]
fn a_fail_read_between_ticks_rolls_back_at_once_whatever_the_failure_limit() {
    let mut w = with_sequential();
    w.ship("r2");
    w.run();
    w.run();
    w.evidence(CheckResult::Inconclusive);
    assert_eq!(w.phase(), Phase::Progressing);
    w.evidence(CheckResult::Fail);
    let detected = w.time();
    assert_eq!(w.phase(), Phase::RolledBack);
    assert_eq!(
        w.obs.canary.as_ref().unwrap().replicas,
        0,
        "canary gone at once"
    );
    w.run();
    let h = &w.status.history[0];
    assert_eq!(
        (h.outcome, h.detected_at.clone()),
        (Outcome::RolledBack, Some(detected))
    );
    let reason = h.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("evidence: canary 30 errors in 30 requests"),
        "{reason}"
    );
}

#[test]
fn a_fail_on_a_tick_rolls_back_on_that_tick() {
    let mut w = with_sequential();
    w.ship("r2");
    w.run();
    w.run();
    w.tick_with(CheckResult::Fail);
    assert_eq!(w.phase(), Phase::RolledBack);
}

#[test]
fn readings_between_ticks_count_no_passing_tick() {
    let mut w = with_sequential();
    w.ship("r2");
    w.run();
    w.run();
    for _ in 0..5 {
        w.evidence(CheckResult::Pass);
    }
    assert_eq!(w.analysis().passing_ticks, 0);
    assert_eq!(
        w.analysis().checks.len(),
        1,
        "only the sequential check was read"
    );
    w.tick_with(CheckResult::Pass);
    assert_eq!(w.analysis().passing_ticks, 1);
    assert_eq!(w.analysis().checks.len(), 2);
}

#[test]
fn inconclusive_never_passes_and_after_max_duration_waits_for_a_person() {
    let mut w = with_sequential();
    w.ship("r2");
    w.run();
    w.run();
    // Past the one-minute pause, with every other check passing.
    for _ in 0..10 {
        w.tick_with(CheckResult::Inconclusive);
    }
    assert_eq!(w.status.current_step, Some(1), "the pause holds");
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(w.analysis().consecutive_failures, 0, "not a failure either");
    for _ in 0..3 {
        w.tick_with(CheckResult::Inconclusive);
    }
    assert_eq!(w.phase(), Phase::Paused);
    let message = w.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("evidence inconclusive after 2m, waiting for a person"),
        "{message}"
    );
    // Evidence arrives after all: the rollout goes on by itself.
    w.evidence(CheckResult::Pass);
    w.tick_with(CheckResult::Pass);
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(w.status.current_step, Some(2), "{:?}", w.status.message);
}

#[test]
fn a_person_promotes_a_canary_left_inconclusive() {
    let mut w = with_sequential();
    w.ship("r2");
    w.run();
    w.run();
    for _ in 0..13 {
        w.tick_with(CheckResult::Inconclusive);
    }
    assert_eq!(w.phase(), Phase::Paused);
    w.obs.manual.promote = true;
    w.run();
    assert_eq!(w.phase(), Phase::Promoting);
}

#[test]
fn evidence_counts_only_once_every_canary_pod_runs_the_revision() {
    let mut w = with_sequential();
    w.ship("r2");
    w.run();
    w.run();
    let started = w.analysis().evidence_since.clone();
    assert!(started.is_some(), "a fresh canary has no earlier pods");
    // A fix supersedes it; the bad revision's pods linger while the new ones start.
    w.ship("r3");
    w.decide_only();
    w.now += 1;
    let canary = w.obs.canary.as_mut().unwrap();
    (canary.revision, canary.pods, canary.updated) = (Some("r3".into()), 2, 1);
    w.decide_only();
    assert_eq!(w.status.canary_revision.as_deref(), Some("r3"));
    assert_eq!(
        w.analysis().evidence_since,
        None,
        "old pods would count as the fix's"
    );
    w.now += 5;
    let canary = w.obs.canary.as_mut().unwrap();
    (canary.pods, canary.updated) = (1, 1);
    w.decide_only();
    assert_eq!(w.analysis().evidence_since, Some(w.time()));
}

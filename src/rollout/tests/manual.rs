//! Manual actions and superseding revisions.

use super::*;

#[test]
fn a_new_revision_supersedes_the_canary() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.run();
    w.tick(CheckResult::Pass, 0.0);
    w.ship("r3");
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(w.status.canary_revision.as_deref(), Some("r3"));
    assert_eq!(w.status.current_step, Some(0), "analysis restarts");
    assert_eq!(w.analysis().passing_ticks, 0);
    assert!(w.reasons().contains(&RolloutEvent::Superseded));
    assert!(
        w.status
            .history
            .iter()
            .any(|h| h.revision == "r2" && h.outcome == Outcome::Superseded)
    );
    // Back to the stable template: the canary just goes.
    w.ship("r1");
    w.run();
    assert_eq!(w.phase(), Phase::Idle);
    assert_eq!(w.obs.canary.as_ref().unwrap().replicas, 0);
}

#[test]
fn abort_promote_and_paused_do_what_they_say() {
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.obs.manual.abort = Some("bad dashboard".into());
    w.run();
    assert_eq!(w.phase(), Phase::RolledBack);
    assert_eq!(w.status.history[0].outcome, Outcome::Aborted);
    assert!(
        w.status.history[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("bad dashboard")
    );

    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.obs.manual.promote = true;
    w.run();
    assert_eq!(w.phase(), Phase::Promoting);
    w.run();
    assert_eq!(w.phase(), Phase::Succeeded);
    assert_eq!(
        w.status.history[0].reason.as_deref(),
        Some("promoted by hand"),
        "the history says who promoted"
    );

    let mut w = World::new();
    w.spec.paused = true;
    w.ship("r2");
    w.run();
    for _ in 0..5 {
        w.tick(CheckResult::Pass, 0.0);
    }
    assert_eq!(w.phase(), Phase::Paused);
    assert_eq!(w.status.current_step, Some(0));
    // Analysis still rolls back while paused.
    w.tick(CheckResult::Fail, 1.0);
    w.tick(CheckResult::Fail, 1.0);
    assert_eq!(w.phase(), Phase::RolledBack);
}

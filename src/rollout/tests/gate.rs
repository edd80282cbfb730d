//! The budget gate at the start of a canary.

use super::*;

#[test]
fn frozen_gate_blocks_features_lets_corrective_through_and_unblocks_itself() {
    let mut w = World::new();
    w.obs.gate = Referenced::Found(GateView {
        state: Some(Gate::Frozen),
        reason: Some("availability consumed 120%".into()),
        firing: vec![],
    });
    w.ship("r2");
    w.run();
    assert_eq!(w.phase(), Phase::Blocked);
    assert!(
        w.status.message.as_ref().unwrap().contains("Frozen"),
        "{:?}",
        w.status.message
    );
    assert!(w.reasons().contains(&RolloutEvent::GateBlocked));
    assert_eq!(w.status.history[0].outcome, Outcome::Blocked);
    assert_eq!(w.obs.canary.as_ref().unwrap().replicas, 0);
    // Blocked once, not on every reconcile.
    w.run();
    assert!(!w.reasons().contains(&RolloutEvent::GateBlocked));
    assert_eq!(w.status.history.len(), 1);
    // The gate opens: the canary starts by itself.
    w.obs.gate = open_gate();
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);

    // A corrective change goes through a frozen gate.
    let mut w = World::new();
    w.obs.gate = Referenced::Found(GateView {
        state: Some(Gate::Frozen),
        ..Default::default()
    });
    w.obs.target.as_mut().unwrap().change_class = Some(ChangeClass::Corrective);
    w.ship("r2");
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(
        w.status.gate.as_ref().unwrap().change_class,
        ChangeClass::Corrective
    );
}

#[test]
fn restricted_gate_lets_critical_through() {
    let mut w = World::new();
    w.obs.gate = Referenced::Found(GateView {
        state: Some(Gate::Restricted),
        ..Default::default()
    });
    w.spec.change_class = ChangeClass::Critical;
    w.ship("r2");
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
}

#[test]
fn override_annotation_lets_a_change_through_and_is_recorded() {
    let mut w = World::new();
    w.obs.gate = Referenced::Found(GateView {
        state: Some(Gate::Frozen),
        ..Default::default()
    });
    w.ship("r2");
    w.run();
    assert_eq!(w.phase(), Phase::Blocked);
    w.obs.manual.override_gate = Some("incident 42: fix needed now".into());
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
    let gate = w.status.gate.clone().unwrap();
    assert_eq!(
        gate.r#override.as_deref(),
        Some("incident 42: fix needed now")
    );
    assert!(gate.allowed);
    assert!(w.reasons().contains(&RolloutEvent::GateOverridden));
    assert!(w.consumed(crate::api::ANNOTATION_OVERRIDE_GATE));
}

#[test]
fn missing_or_unevaluated_slo_policy_blocks() {
    let mut w = World::new();
    w.obs.gate = Referenced::Missing;
    w.ship("r2");
    w.run();
    assert_eq!(w.phase(), Phase::Blocked);
    assert!(w.reasons().contains(&RolloutEvent::SloPolicyNotFound));
    let mut w = World::new();
    w.obs.gate = Referenced::Found(GateView::default());
    w.ship("r2");
    w.run();
    assert_eq!(w.phase(), Phase::Blocked);
    // Without a sloPolicyRef there is no gate.
    let mut w = World::new();
    w.obs.gate = Referenced::NotReferenced;
    w.ship("r2");
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
}

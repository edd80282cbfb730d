//! Table tests of the rollout state machine: a tiny world applies each plan as a
//! Deployment controller would, and the clock moves by hand.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::*;
use crate::api::{
    ChangeClass, CheckResult, CheckStatus, Gate, GuardedRolloutSpec, GuardedRolloutStatus, Outcome,
    Phase, Severity,
};
use crate::reasons::RolloutEvent;

mod decisions;
mod workloads;

struct World {
    spec: GuardedRolloutSpec,
    status: GuardedRolloutStatus,
    obs: Observations,
    now: i64,
    last: Option<Decision>,
    /// A revision whose pods never become ready (a bad image).
    never_ready: Option<String>,
}

fn spec() -> GuardedRolloutSpec {
    serde_yaml::from_str(
        r#"
targetRef: {name: app}
sloPolicyRef: {name: app}
replicas: 4
steps:
  - setWeight: 10
  - pause: {duration: 1m}
  - setWeight: 50
analysis:
  interval: 10s
  failureLimit: 2
  noData: {timeout: 1m}
  providerErrors: {timeout: 30s}
  checks:
    - {name: error-rate, query: 'q', max: 0.01}
"#,
    )
    .unwrap()
}

fn check(result: CheckResult, value: f64) -> Vec<CheckStatus> {
    vec![CheckStatus {
        name: "error-rate".into(),
        value: Some(value),
        min: None,
        max: Some(0.01),
        result,
        message: None,
    }]
}

fn open_gate() -> Referenced<GateView> {
    Referenced::Found(GateView {
        state: Some(Gate::Open),
        reason: Some("fine".into()),
        firing: vec![],
    })
}

impl World {
    fn new() -> Self {
        let mut w = World {
            spec: spec(),
            status: Default::default(),
            obs: Observations {
                target: Some(Target {
                    revision: "r1".into(),
                    replicas: 3,
                    change_class: None,
                    template: Default::default(),
                    scaled_by: None,
                }),
                gate: open_gate(),
                ..Default::default()
            },
            now: 0,
            last: None,
            never_ready: None,
        };
        w.run();
        w.run();
        assert_eq!(w.phase(), Phase::Idle);
        w
    }

    fn time(&self) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + self.now).unwrap())
    }

    /// One reconcile; the plan is then carried out completely.
    fn run(&mut self) -> &Decision {
        self.decide_only();
        if let Some(plan) = self.last.as_ref().and_then(|d| d.plan.clone()) {
            self.apply(&plan);
        }
        self.last.as_ref().unwrap()
    }

    /// One reconcile whose plan nobody carries out (the workloads do not move).
    fn decide_only(&mut self) -> &Decision {
        let d = decide(&self.spec, &self.status, &self.obs, &self.time());
        self.status = d.status.clone();
        self.obs.tick = None;
        self.obs.manual = Manual::default();
        self.last = Some(d);
        self.last.as_ref().unwrap()
    }

    fn apply(&mut self, plan: &Plan) {
        if let Some(p) = &plan.primary {
            self.obs.primary = Some(self.rolled_out(&p.revision, p.replicas));
        }
        let c = &plan.canary;
        self.obs.canary = Some(self.rolled_out(&c.revision, c.replicas));
        if plan.scale_target_to_zero
            && let Some(t) = self.obs.target.as_mut()
        {
            t.replicas = 0;
        }
    }

    /// A Deployment after its controller is done: all ready, unless the revision's
    /// pods never become ready.
    fn rolled_out(&self, revision: &str, replicas: i32) -> Workload {
        let mut w = settled(Some(revision.into()), replicas);
        if self.never_ready.as_deref() == Some(revision) {
            (w.ready, w.available) = (0, 0);
        }
        w
    }

    fn phase(&self) -> Phase {
        self.status.phase.unwrap()
    }

    fn ship(&mut self, rev: &str) {
        self.obs.target.as_mut().unwrap().revision = rev.into();
    }

    fn tick(&mut self, result: CheckResult, value: f64) -> &Decision {
        self.now += 10;
        self.obs.tick = Some(check(result, value));
        self.run()
    }

    /// Whether the last decision consumed this annotation.
    fn consumed(&self, annotation: &str) -> bool {
        self.last.as_ref().unwrap().consumed.contains(&annotation)
    }

    fn reasons(&self) -> Vec<RolloutEvent> {
        self.last
            .as_ref()
            .unwrap()
            .notes
            .iter()
            .map(|n| n.reason)
            .collect()
    }

    /// Healthy ticks until the phase leaves Progressing (bounded).
    fn walk(&mut self) {
        for _ in 0..30 {
            if self.phase() != Phase::Progressing {
                return;
            }
            self.tick(CheckResult::Pass, 0.001);
        }
    }
}

fn settled(revision: Option<String>, replicas: i32) -> Workload {
    Workload {
        revision,
        replicas,
        pods: replicas,
        ready: replicas,
        updated: replicas,
        available: replicas,
        current: true,
        deadline_exceeded: None,
        template: Some(Default::default()),
    }
}

#[test]
fn adoption_records_the_target_and_creates_the_primary() {
    let mut w = World {
        spec: spec(),
        status: Default::default(),
        obs: Observations {
            target: Some(Target {
                revision: "r1".into(),
                replicas: 3,
                change_class: None,
                template: Default::default(),
                scaled_by: None,
            }),
            ..Default::default()
        },
        now: 0,
        last: None,
        never_ready: None,
    };
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
    w.run();
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
    assert_eq!(w.status.analysis.as_ref().unwrap().consecutive_failures, 1);
}

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
    assert!(
        w.status
            .analysis
            .as_ref()
            .unwrap()
            .provider_errors_since
            .is_none()
    );
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
    w.obs.gate = Referenced::Found(GateView {
        state: Some(Gate::Open),
        reason: None,
        firing: vec![(Severity::Page, Some(w.time()))],
    });
    w.run();
    assert_eq!(w.phase(), Phase::RolledBack);
    // A ticket does not abort under the default (page).
    let mut w = World::new();
    w.ship("r2");
    w.run();
    w.obs.gate = Referenced::Found(GateView {
        state: Some(Gate::Open),
        reason: None,
        firing: vec![(Severity::Ticket, Some(w.time()))],
    });
    w.run();
    assert_eq!(w.phase(), Phase::Progressing);
}

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
    assert_eq!(w.status.analysis.as_ref().unwrap().passing_ticks, 0);
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
fn missing_target_leaves_everything_alone() {
    let mut w = World::new();
    w.obs.target = None;
    let d = w.run().clone();
    assert!(d.plan.is_none());
    assert_eq!(d.notes[0].reason, RolloutEvent::TargetNotFound);
    assert_eq!(w.phase(), Phase::Idle);
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
fn route_weight_waits_for_a_ready_canary_and_drops_on_rollback() {
    let mut w = World::new();
    w.spec.traffic_routing.gateway_api = Some(crate::api::GatewayApiRouting {
        http_route: "r".into(),
        port: 8080,
        service: None,
    });
    w.ship("r2");
    w.run();
    let route = |w: &World| w.last.as_ref().unwrap().plan.as_ref().unwrap().route_weight;
    w.run(); // weight 10 decided; the canary was not yet sized for it
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

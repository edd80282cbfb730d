//! Table tests of the rollout state machine: a tiny world applies each plan as a
//! Deployment controller would, and the clock moves by hand.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::*;
use crate::api::{
    AnalysisStatus, ChangeClass, CheckResult, CheckStatus, Gate, GuardedRolloutSpec,
    GuardedRolloutStatus, Outcome, Phase, Severity,
};
use crate::reasons::RolloutEvent;

mod analysis;
mod decisions;
mod evidence;
mod gate;
mod manual;
mod steps;
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
        evidence: None,
    }]
}

/// A gate in `state` with `severity` firing since `since` (seconds on the test clock).
fn firing(state: Gate, severity: Severity, since: i64) -> Referenced<GateView> {
    Referenced::Found(GateView {
        state: Some(state),
        reason: Some("budget spent".into()),
        firing: vec![(
            severity,
            Some(Time(Timestamp::from_second(1_800_000_000 + since).unwrap())),
        )],
    })
}

fn open_gate() -> Referenced<GateView> {
    Referenced::Found(GateView {
        state: Some(Gate::Open),
        reason: Some("fine".into()),
        firing: vec![],
    })
}

impl World {
    /// The target r1 at 3 replicas, not adopted yet, no SloPolicy.
    fn unadopted() -> Self {
        World {
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
        }
    }

    /// Adopted and Idle, with an Open gate.
    fn new() -> Self {
        let mut w = Self::unadopted();
        w.obs.gate = open_gate();
        w.run();
        w.run();
        assert_eq!(w.phase(), Phase::Idle);
        w
    }

    fn analysis(&self) -> &AnalysisStatus {
        self.status
            .analysis
            .as_ref()
            .expect("an analysis under way")
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
        self.obs.evidence = None;
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

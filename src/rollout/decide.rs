//! decide(spec, status, observations, now) -> Decision. Pure: the clock is an argument.

use std::time::Duration;

use crate::traffic;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    gate::{allowed, effective_class},
    model::*,
    steps, tick,
};
use crate::api::{
    ANNOTATION_ABORT, ANNOTATION_OVERRIDE_GATE, ANNOTATION_PROMOTE, ANNOTATION_RETRY,
    AnalysisStatus, GateStatus, GuardedRolloutSpec, GuardedRolloutStatus, HistoryEntry, Outcome,
    Phase,
};

/// Most history entries kept.
pub const HISTORY_LIMIT: usize = 10;

struct Machine<'a> {
    spec: &'a GuardedRolloutSpec,
    obs: &'a Observations,
    now: &'a Time,
    s: GuardedRolloutStatus,
    notes: Vec<Note>,
    consumed: Vec<&'static str>,
    requeue: Duration,
}

/// The next status, the workloads as they should be, and what to tell people.
pub fn decide(
    spec: &GuardedRolloutSpec,
    status: &GuardedRolloutStatus,
    obs: &Observations,
    now: &Time,
) -> Decision {
    let mut m = Machine {
        spec,
        obs,
        now,
        s: status.clone(),
        notes: Vec::new(),
        consumed: Vec::new(),
        requeue: Duration::from_secs(30),
    };
    let Some(target) = &obs.target else {
        m.s.message = Some(format!(
            "target Deployment {} not found",
            spec.target_ref.name
        ));
        if status.message != m.s.message {
            m.note(
                Reason::TargetNotFound,
                m.s.message.clone().unwrap_or_default(),
            );
        }
        return m.finish(None);
    };
    if m.s.phase.is_none() || m.s.stable_revision.is_none() {
        m.adopt(target);
    } else {
        m.step(target);
    }
    let plan = m.plan();
    m.finish(Some(plan))
}

impl Machine<'_> {
    fn note(&mut self, reason: Reason, message: impl Into<String>) {
        self.notes.push(Note {
            reason,
            message: message.into(),
        });
    }

    fn requeue_within(&mut self, d: Duration) {
        self.requeue = self.requeue.min(d.max(Duration::from_millis(500)));
    }

    fn set_phase(&mut self, phase: Phase, message: impl Into<String>) {
        self.s.phase = Some(phase);
        self.s.message = Some(message.into());
    }

    fn primary_replicas(&self) -> i32 {
        self.spec.replicas.or(self.s.target_replicas).unwrap_or(1)
    }

    /// First sight: remember the target's size, run its template as the primary.
    fn adopt(&mut self, target: &Target) {
        if self.s.target_replicas.is_none() {
            self.s.target_replicas = Some(target.replicas);
        }
        self.s.stable_revision = Some(target.revision.clone());
        self.s.replicas = Some(self.primary_replicas());
        self.set_phase(
            Phase::Initializing,
            "adopting the target: creating the primary",
        );
        self.note(
            Reason::Adopted,
            format!(
                "adopted revision {} with {} replicas",
                target.revision, target.replicas
            ),
        );
        self.requeue_within(Duration::from_secs(1));
    }

    fn step(&mut self, target: &Target) {
        self.s.replicas = Some(self.primary_replicas());
        let phase = self.s.phase.unwrap_or(Phase::Initializing);
        match phase {
            Phase::Initializing => self.initializing(),
            Phase::Idle | Phase::Succeeded | Phase::RolledBack | Phase::Blocked => {
                self.steady(target)
            }
            Phase::Progressing | Phase::Paused => self.canary(target),
            Phase::Promoting => self.promoting(),
        }
        self.mark_drained();
    }

    fn initializing(&mut self) {
        let stable = self.s.stable_revision.clone().unwrap_or_default();
        let ready = self
            .obs
            .primary
            .as_ref()
            .is_some_and(|p| p.settled(&stable, self.primary_replicas()));
        if ready {
            self.set_phase(Phase::Idle, format!("primary serves revision {stable}"));
        } else {
            self.requeue_within(Duration::from_secs(1));
        }
    }

    /// No canary runs. A new revision starts one if the gate allows.
    fn steady(&mut self, target: &Target) {
        let rev = target.revision.as_str();
        if self.obs.manual.retry {
            self.consumed.push(ANNOTATION_RETRY);
            if self.s.failed_revision.as_deref() == Some(rev) {
                self.s.failed_revision = None;
                self.note(Reason::Retried, format!("retrying revision {rev}"));
            }
        }
        if self.s.stable_revision.as_deref() == Some(rev) {
            if self.s.phase == Some(Phase::Blocked) {
                self.set_phase(Phase::Idle, format!("primary serves revision {rev}"));
            }
            self.s.gate = None;
            return;
        }
        if self.s.failed_revision.as_deref() == Some(rev) {
            // Stays rolled back until the template changes or a retry is asked.
            return;
        }
        self.start(target);
    }

    /// Gate check, then a canary for the target's revision.
    fn start(&mut self, target: &Target) {
        let rev = target.revision.clone();
        let class = effective_class(self.spec, target);
        let gate = match &self.obs.gate {
            None => None,
            Some(None) => {
                let name = self
                    .spec
                    .slo_policy_ref
                    .as_ref()
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                let message = format!("SloPolicy {name} not found: revision {rev} waits");
                if self.s.message.as_deref() != Some(message.as_str()) {
                    self.note(Reason::SloPolicyNotFound, message.clone());
                }
                self.block(&rev, class, None, message);
                return;
            }
            Some(Some(view)) => Some(view),
        };
        let override_reason = self.obs.manual.override_gate.clone();
        let decision = gate.map(|g| (g.state, g.reason.clone()));
        let (state, ok, why) = match decision {
            None => (
                crate::api::Gate::Open,
                true,
                "no SloPolicy: no budget gate".to_string(),
            ),
            Some((None, _)) => (
                crate::api::Gate::Restricted,
                false,
                "the SloPolicy has not been evaluated yet".into(),
            ),
            Some((Some(state), reason)) => {
                (state, allowed(state, class), reason.unwrap_or_default())
            }
        };
        let mut gate_status = GateStatus {
            state,
            change_class: class,
            allowed: ok,
            r#override: None,
        };
        if !ok {
            if let Some(reason) = override_reason {
                self.consumed.push(ANNOTATION_OVERRIDE_GATE);
                gate_status.allowed = true;
                gate_status.r#override = Some(reason.clone());
                self.note(
                    Reason::GateOverridden,
                    format!("gate {state:?} overridden for {class} revision {rev}: {reason}"),
                );
            } else {
                let message = format!("{class} change {rev} blocked: gate {state:?} ({why})");
                self.s.gate = Some(gate_status);
                self.block(&rev, class, Some(state), message);
                return;
            }
        } else {
            self.note(
                Reason::GateAllowed,
                format!("gate {state:?} allows {class} revision {rev}"),
            );
        }
        self.s.gate = Some(gate_status);
        self.s.canary_revision = Some(rev.clone());
        self.s.current_step = Some(0);
        self.s.canary_weight = Some(0);
        self.s.step_started_at = Some(self.now.clone());
        self.s.analysis = Some(AnalysisStatus::default());
        self.s.canary_started_at = Some(self.now.clone());
        self.set_phase(Phase::Progressing, format!("canary {rev} started"));
        self.note(
            Reason::CanaryStarted,
            format!("canary for revision {rev} ({class})"),
        );
        self.requeue_within(Duration::from_millis(500));
    }

    fn block(
        &mut self,
        rev: &str,
        class: crate::api::ChangeClass,
        state: Option<crate::api::Gate>,
        message: String,
    ) {
        let newly =
            self.s.phase != Some(Phase::Blocked) || self.s.canary_revision.as_deref() != Some(rev);
        if newly {
            if state.is_some() {
                self.note(Reason::GateBlocked, message.clone());
            }
            self.push_history(HistoryEntry {
                revision: rev.to_string(),
                change_class: class,
                outcome: Outcome::Blocked,
                started_at: None,
                detected_at: None,
                finished_at: Some(self.now.clone()),
                reason: Some(message.clone()),
            });
        }
        // Remember which revision waits, so that it is blocked once, not on every tick.
        self.s.canary_revision = Some(rev.to_string());
        self.s.current_step = None;
        self.s.canary_weight = Some(0);
        self.s.analysis = None;
        self.set_phase(Phase::Blocked, message);
        self.requeue_within(Duration::from_secs(5));
    }

    /// A canary runs.
    fn canary(&mut self, target: &Target) {
        let rev = self.s.canary_revision.clone().unwrap_or_default();
        if target.revision != rev {
            self.supersede(target, &rev);
            return;
        }
        if let Some(reason) = self.obs.manual.abort.clone() {
            self.consumed.push(ANNOTATION_ABORT);
            self.roll_back(Outcome::Aborted, format!("aborted: {reason}"));
            return;
        }
        if let Some(reason) = self.burn_rate_alert() {
            self.roll_back(Outcome::RolledBack, reason);
            return;
        }
        if let Some(checks) = &self.obs.tick
            && let Some(reason) = self.analyse(checks.clone())
        {
            self.roll_back(Outcome::RolledBack, reason);
            return;
        }
        if self.obs.manual.promote {
            self.consumed.push(ANNOTATION_PROMOTE);
            self.begin_promotion("promoted by hand");
            return;
        }
        if self.spec.paused {
            let msg = steps::describe(self.spec, &self.s, "paused (spec.paused)");
            self.set_phase(Phase::Paused, msg);
            self.requeue_within(self.spec.analysis.interval.as_duration());
            return;
        }
        self.progress();
    }

    fn burn_rate_alert(&self) -> Option<String> {
        let view = self.obs.gate.as_ref()?.as_ref()?;
        let on = self.spec.analysis.abort_on_burn_rate_alert;
        let severity = view.firing.iter().find(|s| on.aborts_on(**s))?;
        let name = self
            .spec
            .slo_policy_ref
            .as_ref()
            .map(|r| r.name.as_str())
            .unwrap_or("");
        Some(format!(
            "SloPolicy {name} fires a {severity:?} burn-rate alert"
        ))
    }

    /// Applies one tick. Returns the rollback reason when the canary must go.
    fn analyse(&mut self, checks: Vec<crate::api::CheckStatus>) -> Option<String> {
        let analysis = self.s.analysis.get_or_insert_with(Default::default);
        let outcome = tick::apply(&self.spec.analysis, analysis, checks, self.now);
        if let Some(note) = outcome.failed_tick {
            self.note(Reason::AnalysisFailed, note);
        }
        outcome.rollback
    }

    /// Moves through the steps; after the last one, promotes.
    fn progress(&mut self) {
        let primary = self.primary_replicas();
        loop {
            let index = self.s.current_step.unwrap_or(0) as usize;
            let Some(step) = self.spec.steps.get(index) else {
                let why = format!("all {} steps passed", self.spec.steps.len());
                self.begin_promotion(&why);
                return;
            };
            let passing = self.s.analysis.as_ref().map_or(0, |a| a.passing_ticks);
            let done = match (step.set_weight, &step.pause) {
                (Some(w), _) => {
                    if self.s.canary_weight != Some(w) {
                        self.s.canary_weight = Some(w);
                        if let Some(a) = &mut self.s.analysis {
                            a.passing_ticks = 0;
                        }
                    }
                    self.canary_ready_at(traffic::canary_replicas(
                        traffic::router(self.spec),
                        primary,
                        w,
                    ))
                }
                (None, Some(pause)) => {
                    let elapsed = self.elapsed_in_step();
                    match &pause.duration {
                        Some(d) if elapsed < d.as_duration() => {
                            self.requeue_within(d.as_duration() - elapsed);
                            false
                        }
                        Some(_) => passing >= 1,
                        None => {
                            let what =
                                steps::describe(self.spec, &self.s, "waiting for a manual promote");
                            self.set_phase(Phase::Paused, what);
                            self.requeue_within(self.spec.analysis.interval.as_duration());
                            return;
                        }
                    }
                }
                (None, None) => true,
            };
            if !done {
                let what = steps::describe(self.spec, &self.s, "");
                self.set_phase(Phase::Progressing, what);
                self.requeue_within(Duration::from_secs(1));
                return;
            }
            self.note(
                Reason::StepCompleted,
                format!("step {}/{} completed", index + 1, self.spec.steps.len()),
            );
            self.s.current_step = Some(index as i32 + 1);
            self.s.step_started_at = Some(self.now.clone());
        }
    }

    fn canary_ready_at(&self, replicas: i32) -> bool {
        let rev = self.s.canary_revision.as_deref().unwrap_or_default();
        self.obs
            .canary
            .as_ref()
            .is_some_and(|c| c.settled(rev, replicas))
    }

    fn elapsed_in_step(&self) -> Duration {
        self.s
            .step_started_at
            .as_ref()
            .map(|t| self.now.0.duration_since(t.0).unsigned_abs())
            .unwrap_or_default()
    }

    fn begin_promotion(&mut self, why: &str) {
        let rev = self.s.canary_revision.clone().unwrap_or_default();
        self.set_phase(Phase::Promoting, promotion_message(&rev, why));
        self.note(
            Reason::Promoting,
            format!("promoting revision {rev}: {why}"),
        );
        self.requeue_within(Duration::from_millis(500));
    }

    /// The primary takes the canary's template; once it is fully rolled out the canary
    /// goes to zero.
    fn promoting(&mut self) {
        let rev = self.s.canary_revision.clone().unwrap_or_default();
        let done = self
            .obs
            .primary
            .as_ref()
            .is_some_and(|p| p.settled(&rev, self.primary_replicas()));
        if !done {
            self.requeue_within(Duration::from_secs(1));
            return;
        }
        // Why it was promoted (steps passed, or by hand) lives in the Promoting message.
        let why = self
            .s
            .message
            .as_deref()
            .and_then(|m| m.strip_prefix(&promotion_message(&rev, "")))
            .unwrap_or("promoted")
            .to_string();
        let entry = self.finished_entry(Outcome::Promoted, Some(why));
        self.push_history(entry);
        self.s.stable_revision = Some(rev.clone());
        self.clear_canary();
        self.set_phase(Phase::Succeeded, format!("revision {rev} promoted"));
        self.note(Reason::Promoted, format!("revision {rev} promoted"));
    }

    fn roll_back(&mut self, outcome: Outcome, reason: String) {
        let rev = self.s.canary_revision.clone().unwrap_or_default();
        let entry = self.finished_entry(outcome, Some(reason.clone()));
        self.push_history(entry);
        self.s.failed_revision = Some(rev.clone());
        self.clear_canary();
        self.set_phase(
            Phase::RolledBack,
            format!("revision {rev} rolled back: {reason}"),
        );
        let r = if outcome == Outcome::Aborted {
            Reason::Aborted
        } else {
            Reason::RolledBack
        };
        self.note(r, format!("revision {rev} rolled back: {reason}"));
        self.requeue_within(Duration::from_millis(500));
    }

    fn supersede(&mut self, target: &Target, old: &str) {
        let entry = self.finished_entry(
            Outcome::Superseded,
            Some(format!("superseded by {}", target.revision)),
        );
        self.push_history(entry);
        self.note(
            Reason::Superseded,
            format!("revision {old} superseded by {}", target.revision),
        );
        self.clear_canary();
        if self.s.stable_revision.as_deref() == Some(target.revision.as_str()) {
            self.set_phase(
                Phase::Idle,
                format!("primary serves revision {}", target.revision),
            );
        } else {
            self.start(target);
        }
    }

    /// A history entry for the current canary, ending now.
    fn finished_entry(&self, outcome: Outcome, reason: Option<String>) -> HistoryEntry {
        let a = self.s.analysis.as_ref();
        HistoryEntry {
            revision: self.s.canary_revision.clone().unwrap_or_default(),
            change_class: self
                .s
                .gate
                .as_ref()
                .map(|g| g.change_class)
                .unwrap_or(self.spec.change_class),
            outcome,
            started_at: self.started_at(),
            detected_at: if outcome == Outcome::RolledBack {
                a.and_then(|a| a.failing_since.clone())
                    .or_else(|| Some(self.now.clone()))
            } else {
                None
            },
            finished_at: None,
            reason,
        }
    }

    fn started_at(&self) -> Option<Time> {
        self.s.canary_started_at.clone()
    }

    fn clear_canary(&mut self) {
        self.s.canary_revision = None;
        self.s.current_step = None;
        self.s.canary_weight = Some(0);
        self.s.step_started_at = None;
        self.s.canary_started_at = None;
    }

    fn push_history(&mut self, entry: HistoryEntry) {
        self.s.history.insert(0, entry);
        self.s.history.truncate(HISTORY_LIMIT);
    }

    /// Stamps finishedAt on the newest entry once the canary is drained.
    fn mark_drained(&mut self) {
        let drained = self.obs.canary.as_ref().is_none_or(Workload::drained);
        if let Some(h) = self.s.history.first_mut()
            && h.finished_at.is_none()
            && drained
        {
            h.finished_at = Some(self.now.clone());
        }
        if self
            .s
            .history
            .first()
            .is_some_and(|h| h.finished_at.is_none())
        {
            self.requeue_within(Duration::from_millis(500));
        }
    }

    /// Desired workloads for the state reached.
    fn plan(&self) -> Plan {
        let primary = self.primary_replicas();
        let phase = self.s.phase.unwrap_or(Phase::Initializing);
        let active = matches!(phase, Phase::Progressing | Phase::Paused | Phase::Promoting);
        let weight = self.s.canary_weight.unwrap_or(0);
        let router = traffic::router(self.spec);
        let canary_replicas = if active {
            traffic::canary_replicas(router, primary, weight)
        } else {
            0
        };
        let route_weight = match router {
            traffic::Router::ReplicaRatio => None,
            traffic::Router::GatewayApi(_) => Some(
                if active && weight > 0 && self.canary_ready_at(canary_replicas) {
                    weight
                } else {
                    0
                },
            ),
        };
        Plan {
            primary_template: match phase {
                Phase::Initializing => PrimaryTemplate::FromTarget,
                Phase::Promoting => PrimaryTemplate::FromCanary,
                _ => PrimaryTemplate::Keep,
            },
            primary_replicas: primary,
            canary_replicas,
            canary_from_target: matches!(phase, Phase::Progressing | Phase::Paused),
            scale_target_to_zero: true,
            route_weight,
        }
    }

    fn finish(self, plan: Option<Plan>) -> Decision {
        Decision {
            status: self.s,
            plan,
            notes: self.notes,
            consumed: self.consumed,
            requeue: self.requeue,
        }
    }
}

/// Status message while promoting; its tail is the history reason once promoted.
fn promotion_message(rev: &str, why: &str) -> String {
    format!("promoting {rev}: {why}")
}

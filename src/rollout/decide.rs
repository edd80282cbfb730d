//! decide(spec, status, observations, now) -> Decision. Pure: the clock is an argument.

use std::time::Duration;

use crate::{reasons::RolloutEvent, traffic};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    gate::{allowed, effective_class},
    model::*,
    steps, tick,
    workloads::Role,
};
use crate::api::{
    ANNOTATION_ABORT, ANNOTATION_OVERRIDE_GATE, ANNOTATION_PROMOTE, ANNOTATION_RETRY,
    AnalysisStatus, GateStatus, GuardedRolloutSpec, GuardedRolloutStatus, HistoryEntry, Outcome,
    Phase, RevisionTemplate, StepKind, TargetScaledUp,
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
    /// Manual actions read and not yet acted on: taken by the step they apply to,
    /// dropped with an Event at the end of the decision otherwise.
    pending: Manual,
    requeue: Duration,
    stall: Option<Stall>,
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
        consumed: obs.manual.keys(),
        pending: obs.manual.clone(),
        requeue: WATCH_FALLBACK,
        stall: None,
    };
    let Some(target) = &obs.target else {
        let message = format!("target Deployment {} not found", spec.target_ref.name);
        m.s.message = Some(message.clone());
        if status.message != m.s.message {
            m.note(RolloutEvent::TargetNotFound, message.clone());
        }
        m.stall = Some(Stall::TargetNotFound(message));
        return m.finish(None);
    };
    if let Some(b) = &obs.blocker {
        m.stall = Some(Stall::Blocked(b.clone()));
        if matches!(b, Blocker::RouteNotFound(_)) {
            // The route may be created any moment: look again soon.
            m.requeue_within(Duration::from_secs(10));
        }
    }
    if m.s.phase.is_none() || m.s.stable_revision.is_none() {
        m.adopt(target);
    } else {
        m.step(target);
    }
    m.remember_stable_template(target);
    let plan = m.plan(target);
    m.finish(Some(plan))
}

/// Time from `since` to `now`; zero when a clock is behind (never negative).
pub fn elapsed(since: &Time, now: &Time) -> Duration {
    now.0
        .duration_since(since.0)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

/// How long a writer that scaled the target up is remembered (one Event per writer in
/// that time; the TargetScaledUp condition stays True as long).
pub const CONFLICT_MEMORY: Duration = Duration::from_secs(600);

/// How long to wait for a watch to tell us something changed, at most.
const WATCH_FALLBACK: Duration = Duration::from_secs(30);

impl Machine<'_> {
    fn note(&mut self, reason: RolloutEvent, message: impl Into<String>) {
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

    /// The primary's size: the autoscaler's current choice when one sizes it, else
    /// spec.replicas, else the target's size at adoption.
    fn primary_replicas(&self) -> i32 {
        let autoscaled = self
            .obs
            .primary
            .as_ref()
            .filter(|_| self.obs.autoscaled)
            .map(|p| p.replicas);
        autoscaled
            .or(self.spec.replicas)
            .or(self.s.target_replicas)
            .unwrap_or(1)
    }

    /// First sight: remember the target's size, run its template as the primary. A
    /// primary of ours that already exists (status lost) keeps what it runs: the target
    /// may hold an unanalysed template, and its size may be the 0 we gave it.
    fn adopt(&mut self, target: &Target) {
        let ours = self.obs.primary.as_ref().filter(|p| p.revision.is_some());
        if self.s.target_replicas.is_none() {
            let size = match ours {
                Some(p) if target.replicas == 0 => p.replicas,
                _ => target.replicas,
            };
            self.s.target_replicas = Some(size);
        }
        let stable = ours
            .and_then(|p| p.revision.clone())
            .unwrap_or_else(|| target.revision.clone());
        self.s.stable_revision = Some(stable.clone());
        self.s.replicas = Some(self.primary_replicas());
        self.set_phase(
            Phase::Initializing,
            "adopting the target: creating the primary; the target serves until it is available",
        );
        self.note(
            RolloutEvent::Adopted,
            format!(
                "adopted revision {stable} with {} replicas",
                self.s.target_replicas.unwrap_or_default()
            ),
        );
    }

    fn step(&mut self, target: &Target) {
        self.s.replicas = Some(self.primary_replicas());
        let phase = self.s.phase.unwrap_or(Phase::Initializing);
        if phase != Phase::Initializing && target.replicas > 0 {
            self.scaled_up_behind_our_back(target);
        }
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

    /// The target was at 0 and someone scaled it up again (a GitOps tool without
    /// ignoreDifferences): it is scaled to 0 again, and who did it is said once in a
    /// while rather than fought in silence.
    fn scaled_up_behind_our_back(&mut self, target: &Target) {
        let manager = target
            .scaled_by
            .clone()
            .unwrap_or_else(|| "an unknown writer".into());
        let known = self.s.target_scaled_up.as_ref().is_some_and(|t| {
            t.manager == manager && elapsed(&t.last_seen, self.now) < CONFLICT_MEMORY
        });
        if !known {
            self.note(
                RolloutEvent::TargetScaledUp,
                format!(
                    "Deployment {} was scaled to {} by {manager} after the operator scaled it \
                     to 0; it is scaled to 0 again. Make {manager} ignore the target's \
                     spec.replicas (see docs/operations.md, GitOps)",
                    self.spec.target_ref.name, target.replicas
                ),
            );
        }
        self.s.target_scaled_up = Some(TargetScaledUp {
            manager,
            replicas: target.replicas,
            last_seen: self.now.clone(),
        });
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
        }
    }

    /// No canary runs. A new revision starts one if the gate allows.
    fn steady(&mut self, target: &Target) {
        let rev = target.revision.as_str();
        if self.pending.retry && self.s.failed_revision.as_deref() == Some(rev) {
            self.pending.retry = false;
            self.s.failed_revision = None;
            self.note(RolloutEvent::Retried, format!("retrying revision {rev}"));
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

    /// Why no canary may run now: an invalid spec, a missing route or SloPolicy.
    fn blocked(&self) -> Option<String> {
        if let Some(b) = &self.obs.blocker {
            return Some(b.message().to_string());
        }
        let name = &self.spec.slo_policy_ref.as_ref()?.name;
        matches!(self.obs.gate, Some(None)).then(|| format!("SloPolicy {name} not found"))
    }

    /// The canary leaves traffic (weight 0, replicas 0) and its revision waits as
    /// Blocked; once fixed it starts again from the first step.
    fn drain(&mut self, why: &str) {
        let rev = self.s.canary_revision.clone().unwrap_or_default();
        let entry = self.finished_entry(Outcome::Blocked, Some(format!("drained: {why}")));
        self.push_history(entry);
        self.note(
            RolloutEvent::CanaryDrained,
            format!("canary {rev} drained: {why}; it starts again from the first step once fixed"),
        );
        self.clear_canary();
        self.s.canary_revision = Some(rev.clone());
        self.s.analysis = None;
        self.set_phase(Phase::Blocked, format!("revision {rev} waits: {why}"));
        self.requeue_within(Duration::from_secs(5));
    }

    /// Gate check, then a canary for the target's revision.
    fn start(&mut self, target: &Target) {
        let rev = target.revision.clone();
        let class = effective_class(self.spec, target);
        if let Some(b) = &self.obs.blocker {
            let message = format!("revision {rev} waits: {}", b.message());
            self.block(&rev, class, None, message);
            return;
        }
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
                    self.note(RolloutEvent::SloPolicyNotFound, message.clone());
                }
                self.block(&rev, class, None, message);
                return;
            }
            Some(Some(view)) => Some(view),
        };
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
            // Only the revision the gate blocks now may use an override read now.
            if let Some(reason) = self.pending.override_gate.take() {
                gate_status.allowed = true;
                gate_status.r#override = Some(reason.clone());
                self.note(
                    RolloutEvent::GateOverridden,
                    format!("gate {state} overridden for {class} revision {rev}: {reason}"),
                );
            } else {
                let message = format!("{class} change {rev} blocked: gate {state} ({why})");
                self.s.gate = Some(gate_status);
                self.block(&rev, class, Some(state), message);
                return;
            }
        } else {
            self.note(
                RolloutEvent::GateAllowed,
                format!("gate {state} allows {class} revision {rev}"),
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
            RolloutEvent::CanaryStarted,
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
                self.note(RolloutEvent::GateBlocked, message.clone());
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
        if let Some(why) = self.blocked() {
            self.drain(&why);
            return;
        }
        if let Some(reason) = self.pending.abort.take() {
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
        if std::mem::take(&mut self.pending.promote) {
            self.begin_promotion("promoted by hand");
            return;
        }
        if self.spec.paused {
            let msg = steps::describe(self.spec, &self.s, "paused (spec.paused)");
            self.set_phase(Phase::Paused, msg);
            self.requeue_within(self.spec.analysis.interval.as_duration());
        } else {
            self.progress();
        }
        if matches!(self.s.phase, Some(Phase::Progressing | Phase::Paused)) {
            let size = self.canary_size();
            let ready = self.canary_ready_at(size);
            let canary = self.obs.canary.clone();
            self.deadline(Role::Canary, canary.as_ref(), ready, size);
        }
    }

    /// The canary's size at its current weight.
    fn canary_size(&self) -> i32 {
        let weight = self.s.canary_weight.unwrap_or(0);
        traffic::router(self.spec).canary_replicas(self.primary_replicas(), weight)
    }

    /// spec.progressDeadline: a workload asked to change that is not fully available in
    /// time is rolled back.
    fn deadline(&mut self, role: Role, w: Option<&Workload>, ready: bool, size: i32) {
        if ready {
            self.s.unavailable_since = None;
            return;
        }
        let since = self
            .s
            .unavailable_since
            .get_or_insert_with(|| self.now.clone())
            .clone();
        let waited = elapsed(&since, self.now);
        let limit = self.spec.progress_deadline.as_duration();
        if waited < limit {
            self.requeue_within(limit - waited);
            return;
        }
        let name = role.name(&self.spec.target_ref.name);
        let seen = w.map_or("it does not exist".to_string(), |w| {
            let condition = w
                .deadline_exceeded
                .as_ref()
                .map(|m| format!("; Progressing: ProgressDeadlineExceeded, {m}"))
                .unwrap_or_default();
            format!(
                "{}/{size} ready, {} available, {} updated{condition}",
                w.ready, w.available, w.updated
            )
        });
        let reason = format!(
            "ProgressDeadlineExceeded: Deployment {name} not fully available after {} ({seen})",
            self.spec.progress_deadline
        );
        self.note(RolloutEvent::ProgressDeadlineExceeded, reason.clone());
        self.roll_back(Outcome::RolledBack, reason);
    }

    /// abortOnBurnRateAlert: a tier of the SloPolicy that started firing after this
    /// canary started. Never for a corrective change (it is the fix for the incident),
    /// and never for a tier already firing before the canary (an earlier bad revision's
    /// errors still in the window are not this canary's).
    fn burn_rate_alert(&self) -> Option<String> {
        let class = self
            .s
            .gate
            .as_ref()
            .map_or(self.spec.change_class, |g| g.change_class);
        if class == crate::api::ChangeClass::Corrective {
            return None;
        }
        let view = self.obs.gate.as_ref()?.as_ref()?;
        let on = self.spec.analysis.abort_on_burn_rate_alert;
        let started = self.s.canary_started_at.as_ref()?;
        let (severity, since) = view.firing.iter().find(|(s, since)| {
            on.aborts_on(*s) && since.as_ref().is_none_or(|t| t.0 >= started.0)
        })?;
        let name = self
            .spec
            .slo_policy_ref
            .as_ref()
            .map(|r| r.name.as_str())
            .unwrap_or("");
        let when = since
            .as_ref()
            .map(|t| format!(" since {}", t.0))
            .unwrap_or_default();
        Some(format!(
            "SloPolicy {name} fires a {severity} burn-rate alert{when}, after the canary started"
        ))
    }

    /// Applies one tick. Returns the rollback reason when the canary must go.
    fn analyse(&mut self, checks: Vec<crate::api::CheckStatus>) -> Option<String> {
        let analysis = self.s.analysis.get_or_insert_with(Default::default);
        let outcome = tick::apply(&self.spec.analysis, analysis, checks, self.now);
        if let Some(note) = outcome.failed_tick {
            self.note(RolloutEvent::AnalysisFailed, note);
        }

        outcome.rollback
    }

    /// Moves through the steps; after the last one, promotes.
    fn progress(&mut self) {
        let primary = self.primary_replicas();
        loop {
            let index = self.s.current_step.unwrap_or(0) as usize;
            let Some(step) = self.spec.steps.get(index) else {
                if !self.analysis_passing() {
                    // Promotion needs a passing tick at the final weight, and none since.
                    let what = steps::describe(self.spec, &self.s, "waiting for a passing tick");
                    self.set_phase(Phase::Progressing, what);
                    return;
                }
                let why = format!("all {} steps passed", self.spec.steps.len());
                self.begin_promotion(&why);
                return;
            };
            let passing = self.s.analysis.as_ref().map_or(0, |a| a.passing_ticks);
            // A step of no kind is an invalid spec, blocked before any decision.
            let Ok(kind) = step.kind() else {
                return;
            };
            let done = match kind {
                StepKind::SetWeight(w) => {
                    if self.s.canary_weight != Some(w) {
                        self.s.canary_weight = Some(w);
                        if let Some(a) = &mut self.s.analysis {
                            a.passing_ticks = 0;
                        }
                    }
                    let size = traffic::router(self.spec).canary_replicas(primary, w);
                    self.canary_ready_at(size)
                }
                StepKind::Pause(duration) => {
                    let elapsed = self.elapsed_in_step();
                    match duration {
                        Some(d) if elapsed < d.as_duration() => {
                            self.requeue_within(d.as_duration() - elapsed);
                            false
                        }
                        Some(_) => passing >= 1 && self.analysis_passing(),
                        None => {
                            let what =
                                steps::describe(self.spec, &self.s, "waiting for a manual promote");
                            self.set_phase(Phase::Paused, what);
                            self.requeue_within(self.spec.analysis.interval.as_duration());
                            return;
                        }
                    }
                }
            };
            if !done {
                let what = steps::describe(self.spec, &self.s, "");
                self.set_phase(Phase::Progressing, what);
                return;
            }
            self.note(
                RolloutEvent::StepCompleted,
                format!("step {}/{} completed", index + 1, self.spec.steps.len()),
            );
            self.s.current_step = Some(index as i32 + 1);
            self.s.step_started_at = Some(self.now.clone());
        }
    }

    /// The analysis stands on a pass: a passing tick at the current weight, and no
    /// failure, missing data or provider error since.
    fn analysis_passing(&self) -> bool {
        self.s.analysis.as_ref().is_some_and(|a| {
            a.passing_ticks >= 1
                && a.consecutive_failures == 0
                && a.no_data_since.is_none()
                && a.provider_errors_since.is_none()
        })
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
            .map(|t| elapsed(t, self.now))
            .unwrap_or_default()
    }

    fn begin_promotion(&mut self, why: &str) {
        let rev = self.s.canary_revision.clone().unwrap_or_default();
        self.set_phase(Phase::Promoting, promotion_message(&rev, why));
        self.note(
            RolloutEvent::Promoting,
            format!("promoting revision {rev}: {why}"),
        );
        self.requeue_within(Duration::from_millis(500));
    }

    /// The primary takes the canary's template; once it is fully rolled out the canary
    /// goes to zero.
    fn promoting(&mut self) {
        if let Some(reason) = self.pending.abort.take() {
            // The primary goes back to the stable template with the rollback.
            self.roll_back(
                Outcome::Aborted,
                format!("aborted while promoting: {reason}"),
            );
            return;
        }
        let rev = self.s.canary_revision.clone().unwrap_or_default();
        let done = self
            .obs
            .primary
            .as_ref()
            .is_some_and(|p| p.settled(&rev, self.primary_replicas()));
        if !done {
            let size = self.primary_replicas();
            let primary = self.obs.primary.clone();
            self.deadline(Role::Primary, primary.as_ref(), false, size);
            return;
        }
        self.s.unavailable_since = None;
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
        self.note(RolloutEvent::Promoted, format!("revision {rev} promoted"));
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
            RolloutEvent::Aborted
        } else {
            RolloutEvent::RolledBack
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
            RolloutEvent::Superseded,
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
        self.s.unavailable_since = None;
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

    /// Keeps the stable revision's template in status, from wherever it is seen, so
    /// the primary can always be rebuilt from it.
    fn remember_stable_template(&mut self, target: &Target) {
        let Some(stable) = self.s.stable_revision.clone() else {
            return;
        };
        if self.stable().is_some() {
            return;
        }
        let from_workload = |w: &Option<Workload>| {
            w.as_ref()
                .filter(|w| w.revision.as_deref() == Some(stable.as_str()))
                .and_then(|w| w.template.clone())
        };
        let found = from_workload(&self.obs.primary)
            .or_else(|| from_workload(&self.obs.canary))
            .or_else(|| (target.revision == stable).then(|| target.template.clone()));
        if let Some(template) = found {
            self.s.stable_template = Some(RevisionTemplate {
                revision: stable,
                template,
            });
        }
    }

    /// The stable revision's template, if known.
    fn stable(&self) -> Option<Desired> {
        let rev = self.s.stable_revision.clone()?;
        let stored = self
            .s
            .stable_template
            .clone()
            .filter(|t| t.revision == rev)?;
        Some(Desired {
            revision: rev,
            template: stored.template,
            replicas: self.primary_replicas(),
        })
    }

    /// Desired workloads for the state reached.
    fn plan(&mut self, target: &Target) -> Plan {
        let phase = self.s.phase.unwrap_or(Phase::Initializing);
        let from_target = |replicas| Desired {
            revision: target.revision.clone(),
            template: target.template.clone(),
            replicas,
        };
        let existing_canary = |replicas| {
            self.obs
                .canary
                .as_ref()
                .and_then(|c| {
                    Some(Desired {
                        revision: c.revision.clone()?,
                        template: c.template.clone()?,
                        replicas,
                    })
                })
                .unwrap_or_else(|| from_target(replicas))
        };
        let canary = match phase {
            Phase::Progressing | Phase::Paused => from_target(self.canary_size()),
            Phase::Promoting => existing_canary(self.canary_size()),
            _ => existing_canary(0),
        };
        let primary = if phase == Phase::Promoting {
            Some(Desired {
                replicas: self.primary_replicas(),
                ..canary.clone()
            })
        } else {
            self.stable()
        };
        self.check_primary(primary.as_ref());
        let route_weight = self.route_weight(phase, canary.replicas);
        Plan {
            primary,
            canary,
            scale_target_to_zero: phase != Phase::Initializing,
            route_weight,
        }
    }

    /// A primary that is gone is rebuilt from the stable template, or the rollout
    /// stalls saying how to recover.
    fn check_primary(&mut self, desired: Option<&Desired>) {
        let stable = self.s.stable_revision.clone().unwrap_or_default();
        let name = Role::Primary.name(&self.spec.target_ref.name);
        match (desired, &self.obs.primary) {
            (None, p) if p.as_ref().and_then(|p| p.revision.as_deref()) != Some(&stable) => {
                self.stall = Some(Stall::PrimaryTemplateUnknown(format!(
                    "Deployment {name} is gone and the template of stable revision {stable} is \
                     known nowhere: set the target's template back to revision {stable} (for \
                     example revert the change in Git), or delete and re-create the \
                     GuardedRollout to adopt the target as it is"
                )));
            }
            (Some(_), None) if self.s.phase != Some(Phase::Initializing) => self.note(
                RolloutEvent::PrimaryRebuilt,
                format!("Deployment {name} was missing: rebuilt from stable revision {stable}"),
            ),
            _ => {}
        }
    }

    /// The weight the router should send the canary (see TrafficRouter::plan_weight).
    fn route_weight(&self, phase: Phase, canary_replicas: i32) -> Option<i32> {
        let router = traffic::router(self.spec);
        let previous = self.previous_weight();
        let needed = router.canary_replicas(self.primary_replicas(), previous);
        let rev = self.s.canary_revision.as_deref().unwrap_or_default();
        let ready_for_previous =
            self.obs.canary.as_ref().is_some_and(|c| {
                c.current && c.revision.as_deref() == Some(rev) && c.ready >= needed
            });
        router.plan_weight(traffic::Split {
            adopted: phase != Phase::Initializing,
            active: matches!(phase, Phase::Progressing | Phase::Paused | Phase::Promoting),
            weight: self.s.canary_weight.unwrap_or(0),
            ready: self.canary_ready_at(canary_replicas),
            previous,
            ready_for_previous,
        })
    }

    /// The weight of the setWeight step before the current weight's, 0 if none.
    fn previous_weight(&self) -> i32 {
        let upto = (self.s.current_step.unwrap_or(0) as usize + 1).min(self.spec.steps.len());
        let weights: Vec<i32> = self.spec.steps[..upto]
            .iter()
            .filter_map(|s| match s.kind() {
                Ok(StepKind::SetWeight(w)) => Some(w),
                _ => None,
            })
            .collect();
        match weights.as_slice() {
            [.., previous, _] => *previous,
            _ => 0,
        }
    }

    /// Actions read but not applicable to anything in flight: dropped, and said so.
    fn drop_leftovers(&mut self) {
        let phase = self
            .s
            .phase
            .map_or("not adopted yet".to_string(), |p| format!("phase {p}"));
        let pending = std::mem::take(&mut self.pending);
        let dropped = [
            (
                pending.promote,
                ANNOTATION_PROMOTE,
                "no canary in flight to promote",
            ),
            (
                pending.abort.is_some(),
                ANNOTATION_ABORT,
                "no canary in flight to abort",
            ),
            (
                pending.retry,
                ANNOTATION_RETRY,
                "the target's revision is not the failed revision",
            ),
            (
                pending.override_gate.is_some(),
                ANNOTATION_OVERRIDE_GATE,
                "no revision is blocked by the gate",
            ),
        ];
        for (_, key, why) in dropped.into_iter().filter(|d| d.0) {
            self.note(
                RolloutEvent::ActionDropped,
                format!(
                    "{key} dropped: {why} ({phase}); it does not carry over to a later revision"
                ),
            );
        }
    }

    /// A check of the running canary whose last answer was not one number stalls the
    /// rollout until the check is fixed (it holds as no data meanwhile).
    fn invalid_check(&mut self) {
        let running = matches!(self.s.phase, Some(Phase::Progressing | Phase::Paused));
        let invalid = self
            .s
            .analysis
            .iter()
            .flat_map(|a| &a.checks)
            .find(|c| c.result == crate::api::CheckResult::Invalid);
        if let (true, None, Some(c)) = (running, &self.stall, invalid) {
            let index = self
                .spec
                .analysis
                .checks
                .iter()
                .position(|k| k.name == c.name);
            let message = format!(
                "spec.analysis.checks[{}] ({}): {}",
                index.unwrap_or_default(),
                c.name,
                c.message.clone().unwrap_or_default()
            );
            self.stall = Some(Stall::Blocked(Blocker::InvalidSpec(message)));
        }
    }

    fn finish(mut self, plan: Option<Plan>) -> Decision {
        self.drop_leftovers();
        self.invalid_check();
        Decision {
            status: self.s,
            plan,
            notes: self.notes,
            consumed: self.consumed,
            requeue: self.requeue,
            stall: self.stall,
        }
    }
}

/// Status message while promoting; its tail is the history reason once promoted.
fn promotion_message(rev: &str, why: &str) -> String {
    format!("promoting {rev}: {why}")
}

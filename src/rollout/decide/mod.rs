//! decide(spec, status, observations, now) -> Decision. Pure: the clock is an argument.

mod canary;
mod manual;
mod outcome;
mod plan;
mod start;

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
    AnalysisStatus, ChangeClass, CheckKind, CheckResult, Gate, GateStatus, GuardedRolloutSpec,
    GuardedRolloutStatus, HistoryEntry, Outcome, Phase, RevisionTemplate, StepKind, TargetScaledUp,
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
        requeue: RESYNC,
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

/// With nothing in flight the watches wake a rollout on every change; this resync only
/// covers a watch event lost on the way, so idle rollouts cost next to nothing.
pub const RESYNC: Duration = Duration::from_secs(600);

impl Machine<'_> {
    pub(super) fn note(&mut self, reason: RolloutEvent, message: impl Into<String>) {
        self.notes.push(Note {
            reason,
            message: message.into(),
        });
    }

    pub(super) fn requeue_within(&mut self, d: Duration) {
        self.requeue = self.requeue.min(d.max(Duration::from_millis(500)));
    }

    pub(super) fn set_phase(&mut self, phase: Phase, message: impl Into<String>) {
        self.s.phase = Some(phase);
        self.s.message = Some(message.into());
    }

    /// The primary's size: the autoscaler's current choice when one sizes it, else
    /// spec.replicas, else the target's size at adoption.
    pub(super) fn primary_replicas(&self) -> i32 {
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
    pub(super) fn adopt(&mut self, target: &Target) {
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
        // A primary of ours that already serves (a lost status) is not waited for.
        self.initializing(target);
    }

    pub(super) fn step(&mut self, target: &Target) {
        self.s.replicas = Some(self.primary_replicas());
        let phase = self.s.phase.unwrap_or(Phase::Initializing);
        if phase != Phase::Initializing && target.replicas > 0 {
            self.scaled_up_behind_our_back(target);
        }
        match phase {
            Phase::Initializing => self.initializing(target),
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
    pub(super) fn scaled_up_behind_our_back(&mut self, target: &Target) {
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

    /// Idle once the primary serves the stable revision, and on at once to what the
    /// target holds: a revision shipped meanwhile starts its canary in this decision
    /// (nothing of ours may change to wake the rollout again).
    pub(super) fn initializing(&mut self, target: &Target) {
        let stable = self.s.stable_revision.clone().unwrap_or_default();
        let ready = self
            .obs
            .primary
            .as_ref()
            .is_some_and(|p| p.settled(&stable, self.primary_replicas()));
        if ready {
            self.set_phase(Phase::Idle, format!("primary serves revision {stable}"));
            self.steady(target);
        }
    }

    /// No canary runs. A new revision starts one if the gate allows.
    pub(super) fn steady(&mut self, target: &Target) {
        let rev = target.revision.as_str();
        if self.pending.retry && self.s.failed_revision.as_deref() == Some(rev) {
            self.pending.retry = false;
            self.s.failed_revision = None;
            self.note(RolloutEvent::Retried, format!("retrying revision {rev}"));
        }
        if self.s.stable_revision.as_deref() == Some(rev) {
            // Back at the stable revision (a revert in Git after a rollback, say): nothing
            // is left for a person to do.
            if matches!(self.s.phase, Some(Phase::Blocked | Phase::RolledBack)) {
                self.set_phase(Phase::Idle, format!("primary serves revision {rev}"));
            }
            self.s.gate = None;
            return;
        }
        if self.s.failed_revision.as_deref() == Some(rev) {
            // Stays rolled back until the template changes or a retry is asked.
            if self.s.phase != Some(Phase::RolledBack) {
                let why = format!("revision {rev} was rolled back: change the template or retry");
                self.set_phase(Phase::RolledBack, why);
            }
            return;
        }
        self.start(target);
    }

    /// Why no canary may run now: an invalid spec, a missing route or SloPolicy.
    pub(super) fn blocked(&self) -> Option<String> {
        if let Some(b) = &self.obs.blocker {
            return Some(b.message().to_string());
        }
        let name = &self.spec.slo_policy_ref.as_ref()?.name;
        matches!(self.obs.gate, Referenced::Missing).then(|| format!("SloPolicy {name} not found"))
    }

    /// The canary leaves traffic (weight 0, replicas 0) and its revision waits as
    /// Blocked; once fixed it starts again from the first step.
    pub(super) fn drain(&mut self, why: &str) {
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

    pub(super) fn finish(mut self, plan: Option<Plan>) -> Decision {
        self.drop_leftovers();
        self.invalid_check();
        // TargetConflict turns False when the writer has been quiet for CONFLICT_MEMORY.
        if let Some(t) = &self.s.target_scaled_up {
            let quiet = elapsed(&t.last_seen, self.now);
            if quiet < CONFLICT_MEMORY {
                self.requeue_within(CONFLICT_MEMORY - quiet);
            }
        }
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

//! Starting a canary: the budget gate, a blocked revision, a superseded one.

use super::*;

impl Machine<'_> {
    /// Gate check, then a canary for the target's revision.
    pub(super) fn start(&mut self, target: &Target) {
        let rev = target.revision.clone();
        let class = effective_class(self.spec, target);
        if let Some(b) = &self.obs.blocker {
            let message = format!("revision {rev} waits: {}", b.message());
            self.block(&rev, class, None, message);
            return;
        }
        // A policy not evaluated yet lets nothing through without an override.
        let (state, ok, why) = match &self.obs.gate {
            Referenced::NotReferenced => (Gate::Open, true, "no SloPolicy: no budget gate".into()),
            Referenced::Missing => return self.policy_missing(&rev, class),
            Referenced::Found(GateView { state: None, .. }) => (
                Gate::Restricted,
                false,
                "the SloPolicy has not been evaluated yet".to_string(),
            ),
            Referenced::Found(GateView {
                state: Some(state),
                reason,
                ..
            }) => (
                *state,
                allowed(*state, class),
                reason.clone().unwrap_or_default(),
            ),
        };
        let mut gate = GateStatus {
            state,
            change_class: class,
            allowed: ok,
            r#override: None,
        };
        if gate.allowed {
            self.note(
                RolloutEvent::GateAllowed,
                format!("gate {state} allows {class} revision {rev}"),
            );
        } else if let Some(reason) = self.pending.override_gate.take() {
            // Only the revision the gate blocks now may use an override read now.
            gate.allowed = true;
            gate.r#override = Some(reason.clone());
            self.note(
                RolloutEvent::GateOverridden,
                format!("gate {state} overridden for {class} revision {rev}: {reason}"),
            );
        } else {
            let message = format!("{class} change {rev} blocked: gate {state} ({why})");
            self.s.gate = Some(gate);
            return self.block(&rev, class, Some(state), message);
        }
        self.s.gate = Some(gate);
        self.begin_canary(&rev, class);
    }

    /// The named SloPolicy does not exist: the revision waits, said once.
    fn policy_missing(&mut self, rev: &str, class: ChangeClass) {
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
        self.block(rev, class, None, message);
    }

    /// A canary at step 0, analysis from scratch, and on through the steps at once: the
    /// first status of a canary already names its step, and the canary is sized for it
    /// in the same reconcile.
    fn begin_canary(&mut self, rev: &str, class: ChangeClass) {
        self.s.canary_revision = Some(rev.to_string());
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
        self.advance();
    }

    pub(super) fn block(
        &mut self,
        rev: &str,
        class: ChangeClass,
        state: Option<Gate>,
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

    pub(super) fn supersede(&mut self, target: &Target, old: &str) {
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
}

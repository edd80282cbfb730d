//! How a revision ends: promotion, rollback, history.

use super::*;

impl Machine<'_> {
    pub(super) fn begin_promotion(&mut self, why: &str) {
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
    pub(super) fn promoting(&mut self) {
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

    pub(super) fn roll_back(&mut self, outcome: Outcome, reason: String) {
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

    /// A history entry for the current canary, ending now.
    pub(super) fn finished_entry(&self, outcome: Outcome, reason: Option<String>) -> HistoryEntry {
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

    pub(super) fn started_at(&self) -> Option<Time> {
        self.s.canary_started_at.clone()
    }

    pub(super) fn clear_canary(&mut self) {
        self.s.canary_revision = None;
        self.s.current_step = None;
        self.s.canary_weight = Some(0);
        self.s.step_started_at = None;
        self.s.canary_started_at = None;
        self.s.unavailable_since = None;
    }

    pub(super) fn push_history(&mut self, entry: HistoryEntry) {
        self.s.history.insert(0, entry);
        self.s.history.truncate(HISTORY_LIMIT);
    }

    /// Stamps finishedAt on the newest entry once the canary is drained.
    pub(super) fn mark_drained(&mut self) {
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
}

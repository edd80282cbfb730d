//! Manual actions that found nothing to act on.

use super::*;

impl Machine<'_> {
    /// Actions read but not applicable to anything in flight: dropped, and said so.
    pub(super) fn drop_leftovers(&mut self) {
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
}

//! What the operator did with a manual action: it removes the annotation when it reads
//! it, then says with an Event whether it acted or dropped it.

use guardrails::reasons::RolloutEvent;
use k8s_openapi::jiff::Timestamp;

use crate::actions::Action;

/// An Event about the rollout: reason, note and when it was last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub reason: String,
    pub note: String,
    pub at: Timestamp,
}

/// The operator's answer to an action.
#[derive(Debug, Clone, PartialEq)]
pub enum Reaction {
    Acted(String),
    Dropped(String),
}

/// The Event reason that means the operator did what `action` asked.
fn acted_reason(action: &Action) -> Option<RolloutEvent> {
    match action {
        Action::Promote => Some(RolloutEvent::Promoting),
        Action::Abort { .. } => Some(RolloutEvent::Aborted),
        Action::Retry => Some(RolloutEvent::Retried),
        Action::OverrideGate { .. } => Some(RolloutEvent::GateOverridden),
        Action::Pause | Action::Resume => None,
    }
}

/// The newest Event since `since` that answers `action`, if any.
pub fn find(action: &Action, events: &[Seen], since: Timestamp) -> Option<Reaction> {
    let acted = acted_reason(action)?.as_str();
    let key = action.annotation()?;
    let dropped = format!("{key} dropped");
    events
        .iter()
        .filter(|e| e.at >= since)
        .filter(|e| {
            e.reason == acted
                || (e.reason == RolloutEvent::ActionDropped.as_str()
                    && e.note.starts_with(&dropped))
        })
        .max_by_key(|e| e.at)
        .map(|e| {
            if e.reason == acted {
                Reaction::Acted(format!("{}: {}", e.reason, e.note))
            } else {
                Reaction::Dropped(e.note.clone())
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(reason: &str, note: &str, at: i64) -> Seen {
        Seen {
            reason: reason.into(),
            note: note.into(),
            at: Timestamp::from_second(at).unwrap(),
        }
    }

    #[test]
    fn the_newest_answer_since_the_request_counts() {
        let since = Timestamp::from_second(100).unwrap();
        let events = [
            seen("Promoting", "promoting r1: promoted by hand", 50),
            seen(
                "ActionDropped",
                "guardrails.dev/abort dropped: no canary",
                120,
            ),
            seen(
                "ActionDropped",
                "guardrails.dev/promote dropped: no canary in flight",
                110,
            ),
        ];
        assert_eq!(
            find(&Action::Promote, &events, since),
            Some(Reaction::Dropped(
                "guardrails.dev/promote dropped: no canary in flight".into()
            ))
        );
        let acted = [seen("Promoting", "promoting r2: promoted by hand", 130)];
        assert!(matches!(
            find(&Action::Promote, &acted, since),
            Some(Reaction::Acted(m)) if m.contains("promoted by hand")
        ));
        assert_eq!(find(&Action::Retry, &events, since), None);
        assert_eq!(find(&Action::Pause, &events, since), None);
    }
}

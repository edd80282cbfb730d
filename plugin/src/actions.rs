//! Manual actions: each is one merge patch on the GuardedRollout. Annotations are
//! consumed by the operator; `pause`/`resume` set `spec.paused`.

use guardrails::api::{
    ANNOTATION_ABORT, ANNOTATION_OVERRIDE_GATE, ANNOTATION_PROMOTE, ANNOTATION_RETRY,
};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Promote,
    Abort { reason: String },
    Retry,
    Pause,
    Resume,
    OverrideGate { reason: String },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Abort { .. } => "abort",
            Action::Retry => "retry",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::OverrideGate { .. } => "override-gate",
        }
    }

    /// The annotation the action sets, for those the operator consumes.
    pub fn annotation(&self) -> Option<&'static str> {
        match self {
            Action::Promote => Some(ANNOTATION_PROMOTE),
            Action::Abort { .. } => Some(ANNOTATION_ABORT),
            Action::Retry => Some(ANNOTATION_RETRY),
            Action::OverrideGate { .. } => Some(ANNOTATION_OVERRIDE_GATE),
            Action::Pause | Action::Resume => None,
        }
    }

    /// The merge patch that asks for the action.
    pub fn patch(&self) -> Value {
        let annotate = |key: &str, value: &str| json!({"metadata": {"annotations": {key: value}}});
        match self {
            Action::Promote => annotate(ANNOTATION_PROMOTE, ""),
            Action::Abort { reason } => annotate(ANNOTATION_ABORT, reason),
            Action::Retry => annotate(ANNOTATION_RETRY, ""),
            Action::Pause => json!({"spec": {"paused": true}}),
            Action::Resume => json!({"spec": {"paused": false}}),
            Action::OverrideGate { reason } => annotate(ANNOTATION_OVERRIDE_GATE, reason),
        }
    }

    /// What the user is told once the patch is accepted.
    pub fn done(&self, namespace: &str, name: &str) -> String {
        let what = match self {
            Action::Promote => "promotion requested",
            Action::Abort { .. } => "rollback requested",
            Action::Retry => "retry of the failed revision requested",
            Action::Pause => "paused (spec.paused=true)",
            Action::Resume => "resumed (spec.paused=false)",
            Action::OverrideGate { .. } => "budget gate override requested",
        };
        format!("guardedrollout {namespace}/{name}: {what}")
    }

    /// A reason must say something: it ends up in status and Events.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Action::Abort { reason } | Action::OverrideGate { reason }
                if reason.trim().is_empty() =>
            {
                Err(format!("{}: --reason must not be empty", self.name()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_follow_the_api_contract() {
        assert_eq!(
            Action::Promote.patch(),
            json!({"metadata": {"annotations": {"guardrails.dev/promote": ""}}})
        );
        assert_eq!(
            Action::Abort {
                reason: "bad build".into()
            }
            .patch(),
            json!({"metadata": {"annotations": {"guardrails.dev/abort": "bad build"}}})
        );
        assert_eq!(
            Action::Retry.patch(),
            json!({"metadata": {"annotations": {"guardrails.dev/retry": ""}}})
        );
        assert_eq!(
            Action::OverrideGate {
                reason: "incident 7".into()
            }
            .patch(),
            json!({"metadata": {"annotations": {"guardrails.dev/override-gate": "incident 7"}}})
        );
        assert_eq!(Action::Pause.patch(), json!({"spec": {"paused": true}}));
        assert_eq!(Action::Resume.patch(), json!({"spec": {"paused": false}}));
    }

    #[test]
    fn empty_reasons_are_refused() {
        assert!(
            Action::OverrideGate { reason: " ".into() }
                .validate()
                .is_err()
        );
        assert!(Action::Abort { reason: "".into() }.validate().is_err());
        assert!(Action::Abort { reason: "x".into() }.validate().is_ok());
        assert!(Action::Promote.validate().is_ok());
    }
}

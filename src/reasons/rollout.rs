//! A GuardedRollout's reasons: its Events and its conditions. Its phases and outcomes are
//! the API's `Phase` and `Outcome`; conditions also use the phase name as reason.

crate::vocabulary! {
    /// Reasons of the Events a GuardedRollout gets.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum RolloutEvent {
        Adopted,
        PhaseChanged,
        GateAllowed,
        GateBlocked,
        GateOverridden,
        CanaryStarted,
        StepCompleted,
        AnalysisFailed,
        RolledBack,
        Aborted,
        Superseded,
        Promoting,
        Promoted,
        Retried,
        TargetNotFound,
        SloPolicyNotFound,
        ProgressDeadlineExceeded,
        PrimaryRebuilt,
        TargetNotStable,
        TargetScaledUp,
        ActionDropped,
        CanaryDrained,
        RouteNotUpdated,
        /// A problem that stops reconciling, published when it appears.
        InvalidSpec,
        RouteNotFound,
        PrimaryTemplateUnknown,
        /// A webhook of spec.notifications could not be told (its Secret, or the receiver).
        NotificationFailed,
    }
}

impl RolloutEvent {
    /// Whether the Event is a Warning.
    pub fn is_warning(self) -> bool {
        use RolloutEvent::*;
        matches!(
            self,
            GateBlocked
                | AnalysisFailed
                | RolledBack
                | Aborted
                | TargetNotFound
                | SloPolicyNotFound
                | ProgressDeadlineExceeded
                | PrimaryRebuilt
                | TargetNotStable
                | TargetScaledUp
                | CanaryDrained
                | RouteNotUpdated
                | InvalidSpec
                | RouteNotFound
                | PrimaryTemplateUnknown
                | NotificationFailed
        )
    }
}

crate::vocabulary! {
    /// Reasons of a GuardedRollout's conditions besides its phase names.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum RolloutCondition {
        /// The spec is invalid; the message names the field.
        InvalidSpec,
        /// The target Deployment does not exist.
        TargetNotFound,
        /// The HTTPRoute named by spec.trafficRouting.gatewayAPI does not exist.
        RouteNotFound,
        /// The primary is gone and the stable revision's template is known nowhere.
        PrimaryTemplateUnknown,
        /// Another writer (named) scaled the target up after the operator scaled it to 0.
        TargetScaledUp,
        /// No writer has scaled the target up lately.
        NoConflict,
        /// The route could not be written (the message says why); retried.
        RouteNotUpdated,
        /// The route carries the weights decided again.
        RouteUpdated,
    }
}

crate::vocabulary! {
    /// Reasons of a GuardedRollout's NotificationsReady condition.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    pub enum NotifyCondition {
        /// The Secret gives a usable URL, and nothing failed since it was read.
        Configured,
        /// The Secret named by spec.notifications.secretRef cannot be read (absent, or not
        /// among those the operator may read).
        SecretNotFound,
        /// The Secret has no usable http(s) URL under its key `url`.
        SecretInvalid,
        /// The receiver refused a message or did not answer; retried with backoff.
        ReceiverFailed,
    }
}

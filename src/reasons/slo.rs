//! A SloPolicy's reasons: its conditions and its Events.

use crate::api::Gate;

crate::vocabulary! {
    /// Reasons of a SloPolicy's Ready condition.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum SloCondition {
        /// The SloPolicy was evaluated against Prometheus.
        Evaluated,
        /// Prometheus could not be queried; the gate is whenUnknown.
        PrometheusUnavailable,
        /// The spec is invalid; the message names the field.
        InvalidSpec,
    }
}

impl SloCondition {
    /// The Event published when the Ready condition takes this reason.
    pub fn event(self) -> SloEvent {
        match self {
            SloCondition::Evaluated => SloEvent::Evaluated,
            SloCondition::PrometheusUnavailable => SloEvent::PrometheusUnavailable,
            SloCondition::InvalidSpec => SloEvent::InvalidSpec,
        }
    }
}

crate::vocabulary! {
    /// Reasons of a SloPolicy's PrometheusRuleReady condition.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum RuleCondition {
        /// The PrometheusRule holds the rules of the current spec.
        Applied,
        /// The spec is invalid, so there are no rules to write (see Ready).
        InvalidSpec,
        /// The cluster serves no monitoring.coreos.com/v1 PrometheusRule.
        CrdMissing,
        /// A PrometheusRule of that name exists and another owner has it.
        NotOwned,
        /// The apiserver refused the write (the message says why, e.g. RBAC).
        Rejected,
    }
}

crate::vocabulary! {
    /// Reasons of the Events a SloPolicy gets.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum SloEvent {
        /// The gate became Open.
        GateOpen,
        /// The gate became Restricted.
        GateRestricted,
        /// The gate became Frozen.
        GateFrozen,
        Evaluated,
        PrometheusUnavailable,
        InvalidSpec,
    }
}

impl SloEvent {
    /// The Event for a gate change to `gate`.
    pub fn gate(gate: Gate) -> SloEvent {
        match gate {
            Gate::Open => SloEvent::GateOpen,
            Gate::Restricted => SloEvent::GateRestricted,
            Gate::Frozen => SloEvent::GateFrozen,
        }
    }

    /// Whether the Event is a Warning.
    pub fn is_warning(self) -> bool {
        !matches!(self, SloEvent::GateOpen | SloEvent::Evaluated)
    }
}

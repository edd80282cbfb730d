//! What the rollout state machine sees and what it asks for.

use std::time::Duration;

use crate::api::{ChangeClass, CheckStatus, Gate, GuardedRolloutStatus, Severity};

/// A managed or target Deployment as observed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workload {
    /// Revision (pod-template hash) the Deployment runs.
    pub revision: Option<String>,
    /// spec.replicas.
    pub replicas: i32,
    /// status.readyReplicas.
    pub ready: i32,
    /// status.updatedReplicas.
    pub updated: i32,
    /// status.observedGeneration == metadata.generation.
    pub current: bool,
}

impl Workload {
    /// Fully rolled out at `replicas` on `revision`.
    pub fn settled(&self, revision: &str, replicas: i32) -> bool {
        self.current
            && self.revision.as_deref() == Some(revision)
            && self.replicas == replicas
            && self.ready >= replicas
            && self.updated >= replicas
    }

    /// Scaled to zero and drained.
    pub fn drained(&self) -> bool {
        self.replicas == 0 && self.ready == 0
    }
}

/// The user's Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Hash of its pod template.
    pub revision: String,
    /// Its replica count now (the operator scales it to 0 after adoption).
    pub replicas: i32,
    /// The pod-template annotation guardrails.dev/change-class, if valid.
    pub change_class: Option<ChangeClass>,
}

/// The referenced SloPolicy as observed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GateView {
    /// Its gate; None until it has been evaluated.
    pub state: Option<Gate>,
    /// Why, from the SloPolicy.
    pub reason: Option<String>,
    /// Severities of its firing burn-rate tiers.
    pub firing: Vec<Severity>,
}

/// Manual actions from annotations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manual {
    pub promote: bool,
    pub abort: Option<String>,
    pub retry: bool,
    pub override_gate: Option<String>,
}

/// Everything `decide` looks at besides spec, status and the clock.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observations {
    /// None: the target Deployment does not exist.
    pub target: Option<Target>,
    pub primary: Option<Workload>,
    pub canary: Option<Workload>,
    /// None: no sloPolicyRef. Some(None): the SloPolicy does not exist.
    pub gate: Option<Option<GateView>>,
    /// Check results, when an analysis tick ran for this reconcile.
    pub tick: Option<Vec<CheckStatus>>,
    pub manual: Manual,
}

/// Where the primary's pod template comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryTemplate {
    /// Leave it as it is.
    Keep,
    /// The target's template (adoption).
    FromTarget,
    /// The canary's template (promotion).
    FromCanary,
}

/// The managed workloads as they should be.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub primary_template: PrimaryTemplate,
    pub primary_replicas: i32,
    /// Canary size; its template follows the target's while a canary runs.
    pub canary_replicas: i32,
    pub canary_from_target: bool,
    /// Scale the target to 0 (after adoption).
    pub scale_target_to_zero: bool,
    /// Canary weight of the HTTPRoute, with Gateway API routing: the step's weight once
    /// the canary is ready for it, else 0.
    pub route_weight: Option<i32>,
}

/// Stable reasons of the Events the rollout emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
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
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::Adopted,
        Reason::PhaseChanged,
        Reason::GateAllowed,
        Reason::GateBlocked,
        Reason::GateOverridden,
        Reason::CanaryStarted,
        Reason::StepCompleted,
        Reason::AnalysisFailed,
        Reason::RolledBack,
        Reason::Aborted,
        Reason::Superseded,
        Reason::Promoting,
        Reason::Promoted,
        Reason::Retried,
        Reason::TargetNotFound,
        Reason::SloPolicyNotFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Adopted => "Adopted",
            Reason::PhaseChanged => "PhaseChanged",
            Reason::GateAllowed => "GateAllowed",
            Reason::GateBlocked => "GateBlocked",
            Reason::GateOverridden => "GateOverridden",
            Reason::CanaryStarted => "CanaryStarted",
            Reason::StepCompleted => "StepCompleted",
            Reason::AnalysisFailed => "AnalysisFailed",
            Reason::RolledBack => "RolledBack",
            Reason::Aborted => "Aborted",
            Reason::Superseded => "Superseded",
            Reason::Promoting => "Promoting",
            Reason::Promoted => "Promoted",
            Reason::Retried => "Retried",
            Reason::TargetNotFound => "TargetNotFound",
            Reason::SloPolicyNotFound => "SloPolicyNotFound",
        }
    }

    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::GateBlocked
                | Reason::AnalysisFailed
                | Reason::RolledBack
                | Reason::Aborted
                | Reason::TargetNotFound
                | Reason::SloPolicyNotFound
        )
    }
}

/// An Event to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub reason: Reason,
    pub message: String,
}

/// The result of one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: GuardedRolloutStatus,
    /// None: leave the workloads alone (e.g. target missing).
    pub plan: Option<Plan>,
    pub notes: Vec<Note>,
    /// Annotations handled, to remove from the object.
    pub consumed: Vec<&'static str>,
    /// When to look again at the latest.
    pub requeue: Duration,
}

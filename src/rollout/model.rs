//! What the rollout state machine sees and what it asks for.

use std::time::Duration;

use k8s_openapi::{api::core::v1::PodTemplateSpec, apimachinery::pkg::apis::meta::v1::Time};

use crate::api::{ChangeClass, CheckStatus, Gate, GuardedRolloutStatus, Severity};
use crate::reasons::RolloutEvent;

/// A managed or target Deployment as observed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workload {
    /// Revision (pod-template hash) the Deployment runs.
    pub revision: Option<String>,
    /// spec.replicas.
    pub replicas: i32,
    /// status.replicas: every pod, old template or new.
    pub pods: i32,
    /// status.readyReplicas.
    pub ready: i32,
    /// status.updatedReplicas.
    pub updated: i32,
    /// status.availableReplicas.
    pub available: i32,
    /// status.observedGeneration == metadata.generation.
    pub current: bool,
    /// The Progressing condition's message when it says ProgressDeadlineExceeded.
    pub deadline_exceeded: Option<String>,
    /// Its pod template as the user wrote it (without our labels).
    pub template: Option<PodTemplateSpec>,
}

impl Workload {
    /// Fully rolled out at `replicas` on `revision`: the Deployment controller has seen
    /// the spec, and every pod runs the template, is ready and available; no old pod is
    /// left.
    pub fn settled(&self, revision: &str, replicas: i32) -> bool {
        self.current
            && self.revision.as_deref() == Some(revision)
            && self.replicas == replicas
            && [self.pods, self.updated, self.ready, self.available]
                .iter()
                .all(|n| *n == replicas)
    }

    /// Every pod runs `revision` (none of an earlier template is left), as far as the
    /// Deployment controller has seen the spec.
    pub fn only_revision(&self, revision: &str) -> bool {
        self.current && self.revision.as_deref() == Some(revision) && self.pods == self.updated
    }

    /// Fully available at its own size, whatever its revision.
    pub fn available_at_size(&self) -> bool {
        self.current
            && [self.pods, self.updated, self.ready, self.available]
                .iter()
                .all(|n| *n == self.replicas)
    }

    /// Scaled to zero and drained.
    pub fn drained(&self) -> bool {
        self.replicas == 0 && self.ready == 0 && self.pods == 0
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
    /// Its pod template.
    pub template: PodTemplateSpec,
    /// The field manager owning spec.replicas, when it is not the operator.
    pub scaled_by: Option<String>,
}

/// The referenced SloPolicy as observed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GateView {
    /// Its gate; None until it has been evaluated.
    pub state: Option<Gate>,
    /// Why, from the SloPolicy.
    pub reason: Option<String>,
    /// Severities of its firing burn-rate tiers, with when each started firing.
    pub firing: Vec<(Severity, Option<Time>)>,
}

/// Manual actions from annotations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manual {
    pub promote: bool,
    pub abort: Option<String>,
    pub retry: bool,
    pub override_gate: Option<String>,
}

impl Manual {
    /// The annotations present: every one is removed once read, whatever the phase.
    pub fn keys(&self) -> Vec<&'static str> {
        use crate::api::{
            ANNOTATION_ABORT, ANNOTATION_OVERRIDE_GATE, ANNOTATION_PROMOTE, ANNOTATION_RETRY,
        };
        [
            (self.promote, ANNOTATION_PROMOTE),
            (self.abort.is_some(), ANNOTATION_ABORT),
            (self.retry, ANNOTATION_RETRY),
            (self.override_gate.is_some(), ANNOTATION_OVERRIDE_GATE),
        ]
        .into_iter()
        .filter_map(|(present, key)| present.then_some(key))
        .collect()
    }
}

/// An object a rollout may name: not named at all, named but missing, or found.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Referenced<T> {
    #[default]
    NotReferenced,
    Missing,
    Found(T),
}

impl<T> Referenced<T> {
    /// The object, when it was found.
    pub fn found(&self) -> Option<&T> {
        match self {
            Referenced::Found(t) => Some(t),
            _ => None,
        }
    }

    pub fn map<U>(&self, f: impl FnOnce(&T) -> U) -> Referenced<U> {
        match self {
            Referenced::NotReferenced => Referenced::NotReferenced,
            Referenced::Missing => Referenced::Missing,
            Referenced::Found(t) => Referenced::Found(f(t)),
        }
    }
}

/// Everything `decide` looks at besides spec, status and the clock.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observations {
    /// None: the target Deployment does not exist.
    pub target: Option<Target>,
    pub primary: Option<Workload>,
    pub canary: Option<Workload>,
    /// The budget gate of the SloPolicy the rollout names.
    pub gate: Referenced<GateView>,
    /// Check results, when an analysis tick ran for this reconcile.
    pub tick: Option<Vec<CheckStatus>>,
    /// Results of the sequential checks alone, when they read evidence between ticks.
    pub evidence: Option<Vec<CheckStatus>>,
    pub manual: Manual,
    /// A HorizontalPodAutoscaler sizes the primary: its replicas are not ours to set.
    pub autoscaled: bool,
    /// Something that stops any canary from running (an invalid spec, a missing route).
    pub blocker: Option<Blocker>,
}

/// What keeps canaries from running until a person fixes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Blocker {
    /// The message names the field.
    InvalidSpec(String),
    RouteNotFound(String),
}

impl Blocker {
    pub fn message(&self) -> &str {
        match self {
            Blocker::InvalidSpec(m) | Blocker::RouteNotFound(m) => m,
        }
    }
}

/// A managed Deployment as it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub revision: String,
    /// The user's template (role labels are added when it is applied).
    pub template: PodTemplateSpec,
    pub replicas: i32,
}

/// The managed workloads as they should be.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// None: leave the primary alone (the stable template is known nowhere).
    pub primary: Option<Desired>,
    pub canary: Desired,
    /// Scale the target to 0: only once the primary is fully available.
    pub scale_target_to_zero: bool,
    /// Canary weight of the HTTPRoute, with Gateway API routing; None: leave the route.
    pub route_weight: Option<i32>,
    /// The canary is not known bad (promoted, or drained while its revision waits): if
    /// the route cannot be moved off it, it keeps serving its share until the route
    /// moves. A rolled-back canary goes at once, route or not.
    pub canary_waits_for_route: bool,
}

/// An Event to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub reason: RolloutEvent,
    pub message: String,
}

/// Why a person must act, beyond the phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Stall {
    TargetNotFound(String),
    PrimaryTemplateUnknown(String),
    Blocked(Blocker),
}

impl Stall {
    pub fn problem(&self) -> super::status::Problem<'_> {
        use super::status::Problem;
        match self {
            Stall::TargetNotFound(m) => Problem::TargetNotFound(m),
            Stall::PrimaryTemplateUnknown(m) => Problem::PrimaryTemplateUnknown(m),
            Stall::Blocked(Blocker::InvalidSpec(m)) => Problem::InvalidSpec(m),
            Stall::Blocked(Blocker::RouteNotFound(m)) => Problem::RouteNotFound(m),
        }
    }
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
    pub stall: Option<Stall>,
}

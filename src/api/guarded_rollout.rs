//! The GuardedRollout custom resource: canary delivery of a Deployment.

use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use super::{Analysis, GuardedRolloutStatus, PromDuration, schema};
use crate::dur;

/// Canary delivery of a Deployment, gated by an SloPolicy's error budget and analysed
/// against Prometheus.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "guardrails.dev",
    version = "v1alpha1",
    kind = "GuardedRollout",
    namespaced,
    status = "GuardedRolloutStatus",
    shortname = "gr",
    shortname = "grollout",
    category = "guardrails",
    derive = "PartialEq",
    doc = "Canary delivery of a Deployment: traffic shifted in steps, analysed against Prometheus and the service's SLO burn rate, promoted or rolled back automatically, and gated by the error budget.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.canaryWeight",
        description = "Percent of traffic on the canary"
    ),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.currentStep",
        description = "Index of the current step"
    ),
    printcolumn(
        name = "Gate",
        type_ = "string",
        json_path = ".status.gate.state",
        description = "Budget gate of the SloPolicy"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GuardedRolloutSpec {
    /// The apps/v1 Deployment, in the same namespace, whose pod template is delivered.
    /// The operator scales it to 0 and runs `<name>-primary` and `<name>-canary` instead.
    pub target_ref: LocalRef,

    /// SloPolicy, in the same namespace, whose budget gate decides whether a canary may
    /// start and whose objectives `sloBurnRate` checks read. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_policy_ref: Option<LocalRef>,

    /// Default class of the changes this rollout ships: feature, fix, critical or
    /// corrective. The pod-template annotation `guardrails.dev/change-class` overrides it
    /// per revision. Default feature.
    #[serde(default)]
    pub change_class: ChangeClass,

    /// Stops progression (no new step starts, nothing is promoted automatically) while
    /// analysis and automatic rollback go on; a manual promote still promotes. Meant for
    /// GitOps.
    #[serde(default)]
    pub paused: bool,

    /// Size of the primary Deployment. Default: the target's replica count at adoption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// A canary, or a primary being promoted, that is not fully available (every pod
    /// updated, ready and available) this long after it was asked to change is rolled
    /// back with reason ProgressDeadlineExceeded. Default 10m.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: PromDuration,

    /// How traffic is split. Default (empty): by replica ratio through the user's own
    /// Service, which selects both the primary and the canary pods.
    #[serde(default)]
    pub traffic_routing: TrafficRouting,

    /// The canary steps, 1 to 50, run in order; after the last one the canary is
    /// promoted. Each step is exactly one of setWeight or pause; weights never decrease.
    #[schemars(length(min = 1, max = 50))]
    pub steps: Vec<Step>,

    /// How the canary is analysed while it serves traffic.
    #[serde(default)]
    pub analysis: Analysis,

    /// A webhook told when a delivery ends (rolled back, blocked...). Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<super::Notifications>,
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

crate::vocabulary! {
/// Class of a change, which the budget gate lets through or not.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ChangeClass {
    /// A new feature: ships only while the gate is Open.
    #[default]
    Feature as "feature",
    /// A non-urgent fix: ships only while the gate is Open.
    Fix as "fix",
    /// A critical fix: ships while the gate is Open or Restricted.
    Critical as "critical",
    /// A change that restores reliability (a revert, a remedy): always ships.
    Corrective as "corrective",
}
}

/// Traffic routing. Empty means replica ratio through the user's Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    /// Split traffic with the weights of a Gateway API HTTPRoute's backendRefs.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "gatewayAPI"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
}

/// Gateway API routing: the operator creates the Services `<target>-primary` and
/// `<target>-canary` (the target's selector plus the role label) and sets the rules of
/// the named HTTPRoute that send traffic to `service` to send the step's weight to the
/// canary Service, once the canary is ready for it; other rules (another Service, a
/// redirect) are never touched. Those rules' own backendRefs come back when the
/// GuardedRollout is deleted. The canary then runs its share of the primary's replicas (at least one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// Name of the HTTPRoute in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub http_route: String,
    /// Port of the backendRefs. The two Services copy every port of `service` (names,
    /// numbers, targetPorts, protocols); without that Service they expose this port and
    /// forward to the same container port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The Service the route's own rules send the target's traffic to. Only rules whose
    /// backendRefs name it (or the managed `<target>-primary`/`<target>-canary`) are
    /// weighted; every other rule stays as its owner wrote it. Default: the target's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// One canary step: exactly one of setWeight or pause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = step_rules)]
pub struct Step {
    /// Send this percent of traffic (0-100) to the canary. The step completes once the
    /// canary is ready at that weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,

    /// Hold the current weight. Completes when the duration has elapsed (or, without a
    /// duration, on a manual promote) and at least one analysis tick passed at this weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
}

fn step_rules(schema: &mut Schema) {
    schema::exactly_one(schema, &["setWeight", "pause"]);
}

/// What a step does, parsed once from the API's "exactly one of" fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind<'a> {
    SetWeight(i32),
    /// Hold for the duration; without one, until a person promotes.
    Pause(Option<&'a PromDuration>),
}

/// Why a step or check has no kind: none or several of its one-of fields are set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("exactly one of {0} must be set")]
pub struct NotExactlyOne(pub &'static str);

impl Step {
    pub fn kind(&self) -> Result<StepKind<'_>, NotExactlyOne> {
        match (self.set_weight, &self.pause) {
            (Some(w), None) => Ok(StepKind::SetWeight(w)),
            (None, Some(p)) => Ok(StepKind::Pause(p.duration.as_ref())),
            _ => Err(NotExactlyOne("setWeight or pause")),
        }
    }
}

/// A pause step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long to hold. Without it the rollout waits for a manual promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<PromDuration>,
}

fn default_progress_deadline() -> PromDuration {
    dur!("10m")
}

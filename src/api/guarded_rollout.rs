//! The GuardedRollout custom resource: canary delivery of a Deployment.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use super::{Gate, PromDuration, PrometheusRef, Severity, schema};
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

    /// Stops progression (no new step starts, nothing is promoted) while analysis and
    /// automatic rollback go on. Meant for GitOps.
    #[serde(default)]
    pub paused: bool,

    /// Size of the primary Deployment. Default: the target's replica count at adoption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

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
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

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
    Feature,
    /// A non-urgent fix: ships only while the gate is Open.
    Fix,
    /// A critical fix: ships while the gate is Open or Restricted.
    Critical,
    /// A change that restores reliability (a revert, a remedy): always ships.
    Corrective,
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

/// Gateway API routing: the operator sets the weights of the primary and canary
/// Services in the named HTTPRoute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// Name of the HTTPRoute in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub http_route: String,
    /// Service port the backendRefs point at.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
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
    schema::add_rules(
        schema,
        &[(
            "has(self.setWeight) != has(self.pause)",
            "exactly one of setWeight or pause must be set",
        )],
    );
}

/// A pause step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long to hold. Without it the rollout waits for a manual promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<PromDuration>,
}

/// Canary analysis settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Prometheus for `query` and `compare` checks. Defaults to the operator's
    /// --prometheus-url. `sloBurnRate` checks use the SloPolicy's Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusRef>,

    /// Time between analysis ticks; also the value of `{{interval}}` in queries.
    /// Default 30s, minimum 5s.
    #[serde(default = "default_analysis_interval")]
    pub interval: PromDuration,

    /// Consecutive failed ticks that roll the canary back. Default 2.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: i32,

    /// While checks return no data the weight holds; after this long the canary is
    /// rolled back. Default 5m.
    #[serde(default = "default_no_data")]
    pub no_data: Timeout,

    /// While Prometheus is unreachable or errors the weight holds; after this long the
    /// canary is rolled back. Default 2m.
    #[serde(default = "default_provider_errors")]
    pub provider_errors: Timeout,

    /// Roll back when the SloPolicy fires a burn-rate alert of this severity or worse:
    /// page, ticket or none. Default page.
    #[serde(default)]
    pub abort_on_burn_rate_alert: AbortOnAlert,

    /// Checks run on every tick, with unique names. A tick fails if any check fails.
    #[serde(default)]
    #[schemars(length(max = 20), schema_with = "schema::named_list::<Check>")]
    pub checks: Vec<Check>,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            prometheus: None,
            interval: default_analysis_interval(),
            failure_limit: default_failure_limit(),
            no_data: default_no_data(),
            provider_errors: default_provider_errors(),
            abort_on_burn_rate_alert: AbortOnAlert::default(),
            checks: Vec::new(),
        }
    }
}

fn default_analysis_interval() -> PromDuration {
    dur!("30s")
}
fn default_failure_limit() -> i32 {
    2
}
fn default_no_data() -> Timeout {
    Timeout {
        timeout: dur!("5m"),
    }
}
fn default_provider_errors() -> Timeout {
    Timeout {
        timeout: dur!("2m"),
    }
}

/// A hold that ends in a rollback after `timeout`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeout {
    /// How long to hold before rolling back.
    pub timeout: PromDuration,
}

/// Which burn-rate alert of the SloPolicy rolls the canary back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AbortOnAlert {
    /// Roll back when a page tier fires.
    #[default]
    Page,
    /// Roll back when a page or a ticket tier fires.
    Ticket,
    /// Never roll back on SloPolicy alerts.
    None,
}

impl AbortOnAlert {
    /// Whether a firing alert of this severity aborts the canary.
    pub fn aborts_on(self, severity: Severity) -> bool {
        match self {
            AbortOnAlert::Page => severity == Severity::Page,
            AbortOnAlert::Ticket => true,
            AbortOnAlert::None => false,
        }
    }
}

/// One analysis check: exactly one of query, sloBurnRate or compare.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = check_rules)]
pub struct Check {
    /// Name of the check, unique in the rollout; shown in status and Events.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// PromQL query returning a single number, compared with min and/or max. Template
    /// variables: {{namespace}}, {{target}}, {{interval}}, {{canary_pods}},
    /// {{primary_pods}}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub query: Option<String>,

    /// Lowest passing value of `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,

    /// Highest passing value of `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,

    /// Burn rate of one SloPolicy objective, computed over the canary pods only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_burn_rate: Option<SloBurnRateCheck>,

    /// A query run once for the canary and once for the primary; fails when the canary's
    /// value exceeds the primary's by more than maxIncrease percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareCheck>,
}

fn check_rules(schema: &mut Schema) {
    schema::add_rules(
        schema,
        &[
            (
                "[has(self.query), has(self.sloBurnRate), has(self.compare)].filter(x, x).size() == 1",
                "exactly one of query, sloBurnRate or compare must be set",
            ),
            (
                "!has(self.query) || has(self.min) || has(self.max)",
                "a query check needs min and/or max",
            ),
            (
                "has(self.query) || (!has(self.min) && !has(self.max))",
                "min and max apply to query checks only",
            ),
            (
                "!has(self.min) || !has(self.max) || self.min <= self.max",
                "min must be <= max",
            ),
        ],
    );
}

/// Checks the canary's own burn rate of an SloPolicy objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloBurnRateCheck {
    /// Name of the objective in the referenced SloPolicy.
    #[schemars(length(min = 1))]
    pub objective: String,
    /// Window of the burn rate, e.g. 5m.
    pub window: PromDuration,
    /// Highest passing burn rate.
    #[schemars(schema_with = "schema::positive_number")]
    pub max: f64,
}

/// Compares the canary with the primary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompareCheck {
    /// PromQL query with {{pods}}, filled once with the canary pods and once with the
    /// primary pods; must return a single number.
    #[schemars(length(min = 1))]
    pub query: String,
    /// Highest passing increase of the canary's value over the primary's, percent.
    #[schemars(range(min = 0))]
    pub max_increase: f64,
}

/// Lifecycle phase of a GuardedRollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Adopting the target and creating the primary.
    Initializing,
    /// The primary serves; nothing to ship.
    Idle,
    /// A new revision waits for the budget gate.
    Blocked,
    /// The canary is moving through its steps.
    Progressing,
    /// Progression is paused (spec.paused or a pause step); analysis continues.
    Paused,
    /// The primary is being updated to the canary's template.
    Promoting,
    /// The last revision was promoted.
    Succeeded,
    /// The last revision was rolled back.
    RolledBack,
}

/// Result of one check on one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CheckResult {
    Pass,
    Fail,
    /// The query returned nothing or NaN.
    NoData,
    /// Prometheus was unreachable or returned an error.
    Error,
}

/// How a revision's delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    Promoted,
    RolledBack,
    Blocked,
    Superseded,
    Aborted,
}

/// Observed state of a GuardedRollout. All progress lives here, so a restarted
/// operator resumes where it was.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardedRolloutStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Initializing, Idle, Blocked, Progressing, Paused, Promoting, Succeeded or RolledBack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// What is happening, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Size of the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Replica count of the target Deployment when it was adopted; restored when the
    /// GuardedRollout is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<i32>,
    /// Revision (pod-template hash) the primary runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// Revision under analysis, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// Last revision rolled back; not retried until the template changes or a retry is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    /// Index of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i32>,
    /// Percent of traffic on the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,
    /// When the current step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// When the current canary started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_started_at: Option<Time>,
    /// Budget gate decision for the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateStatus>,
    /// Analysis of the current canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// Past deliveries, newest first, at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Ready, Reconciling and Stalled (kstatus), each with observedGeneration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The budget gate's decision for a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// Gate of the SloPolicy when the decision was made.
    pub state: Gate,
    /// Change class of the revision.
    pub change_class: ChangeClass,
    /// Whether the revision may ship.
    pub allowed: bool,
    /// Reason given in the guardrails.dev/override-gate annotation, when it was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#override: Option<String>,
}

/// Analysis state of the current canary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// Failed ticks in a row.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// Passing ticks at the current weight.
    #[serde(default)]
    pub passing_ticks: i32,
    /// When the last tick ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick_time: Option<Time>,
    /// First failed tick of the current run of failures (becomes history detectedAt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
    /// Since when checks have returned no data, if they do now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data_since: Option<Time>,
    /// Since when Prometheus has been failing, if it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_errors_since: Option<Time>,
    /// Results of the last tick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
}

/// Result of one check on the last tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// Name of the check.
    pub name: String,
    /// Value the query returned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Lowest passing value, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest passing value, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Pass, Fail, NoData or Error.
    pub result: CheckResult,
    /// Details (the error, or the primary's value for compare checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One past delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Revision delivered.
    pub revision: String,
    /// Its change class.
    pub change_class: ChangeClass,
    /// Promoted, RolledBack, Blocked, Superseded or Aborted.
    pub outcome: Outcome,
    /// When the canary started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// First failing tick, for rollbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// When the canary was drained (or the primary promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Why it ended this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

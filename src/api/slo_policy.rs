//! The SloPolicy custom resource: a service's SLOs, error budget and budget gate.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use super::{PromDuration, PrometheusRef, schema};
use crate::dur;

/// The SLOs of one service, its error budget, its burn-rate alerts and the policy that
/// turns budget consumption into a gate for deployments (Open, Restricted, Frozen).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "guardrails.dev",
    version = "v1alpha1",
    kind = "SloPolicy",
    namespaced,
    status = "SloPolicyStatus",
    shortname = "slo",
    category = "guardrails",
    derive = "PartialEq",
    doc = "The SLOs of one service, its error budget, multi-window burn-rate alerts and the error-budget policy that gates its deployments.",
    printcolumn(
        name = "Gate",
        type_ = "string",
        json_path = ".status.gate",
        description = "Budget gate: Open, Restricted or Frozen"
    ),
    printcolumn(
        name = "Budget left",
        type_ = "number",
        json_path = ".status.errorBudgetRemaining",
        description = "Error budget remaining, percent, lowest objective"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SloPolicySpec {
    /// Name of the service the SLOs describe. Defaults to the SloPolicy's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,

    /// Rolling compliance window over which the SLI and the error budget are computed,
    /// in Prometheus duration syntax. Default 28d.
    #[serde(default = "default_window")]
    pub window: PromDuration,

    /// How often the operator evaluates the SLOs. Default 1m, minimum 10s.
    #[serde(default = "default_interval")]
    pub interval: PromDuration,

    /// Prometheus label that holds the pod name in the indicator series. Used to scope an
    /// SLO to canary pods. Default "pod".
    #[serde(default = "default_pod_label")]
    #[schemars(length(min = 1))]
    pub pod_label: String,

    /// Prometheus to query. Defaults to the operator's --prometheus-url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusRef>,

    /// The service level objectives, 1 to 10, with unique names.
    #[schemars(
        length(min = 1, max = 10),
        schema_with = "schema::named_list::<Objective>"
    )]
    pub objectives: Vec<Objective>,

    /// When budget consumption restricts or freezes deployments.
    #[serde(default)]
    pub budget_policy: BudgetPolicy,

    /// Multi-window burn-rate alerting tiers.
    #[serde(default)]
    pub alerting: Alerting,
}

fn default_window() -> PromDuration {
    dur!("28d")
}
fn default_interval() -> PromDuration {
    dur!("1m")
}
fn default_pod_label() -> String {
    "pod".into()
}

/// One service level objective: an indicator and the percentage of good events it targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Objective {
    /// Name of the objective, unique in the policy (e.g. availability, latency).
    /// Lower-case letters, digits and dashes.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Target percentage of good events over the window, strictly between 0 and 100
    /// (e.g. 99.9).
    #[schemars(schema_with = "schema::open_percent")]
    pub target: f64,

    /// How good and total events are counted.
    pub indicator: Indicator,
}

/// How an objective counts events. Exactly one of `ratio` or `latency`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = indicator_rules)]
pub struct Indicator {
    /// Availability-style indicator from two counters:
    /// SLI = 1 - increase(errors) / increase(total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<RatioIndicator>,

    /// Latency indicator from a Prometheus histogram: good events are those in the bucket
    /// `le=threshold`, total events those in the bucket `le="+Inf"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyIndicator>,
}

fn indicator_rules(schema: &mut Schema) {
    schema::exactly_one(schema, &["ratio", "latency"]);
}

/// Two counters: errors and total. Both are PromQL vector selectors, e.g.
/// `http_requests_total{service="share-link",code=~"5.."}`; the operator builds the
/// queries itself and may add label matchers (to scope the SLO to canary pods).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RatioIndicator {
    /// Vector selector of the counter of failed events.
    #[schemars(length(min = 1))]
    pub errors: String,
    /// Vector selector of the counter of all events.
    #[schemars(length(min = 1))]
    pub total: String,
}

/// A histogram and a latency threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyIndicator {
    /// Vector selector of the histogram's `_bucket` series, e.g.
    /// `http_request_duration_seconds_bucket{service="share-link"}`.
    #[schemars(length(min = 1))]
    pub histogram: String,
    /// Latency threshold in the histogram's unit, written as the `le` label value of one
    /// of its buckets (e.g. "0.3").
    #[schemars(length(min = 1))]
    pub threshold: String,
}

crate::vocabulary! {
/// The gate a service's deployments pass through.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Gate {
    /// Any change may ship.
    Open,
    /// Only critical fixes and corrective changes may ship.
    Restricted,
    /// Only corrective changes may ship.
    Frozen,
}
}

crate::vocabulary! {
/// Where a SloPolicy's indicators were read.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum IndicatorSource {
    /// The recorded series of the policy's rules.
    Recorded,
    /// The policy's own queries over the raw metrics, for every window or for those
    /// not recorded (yet).
    Raw,
}
}

/// Error-budget policy: how much consumed budget restricts or freezes deployments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = budget_policy_rules)]
pub struct BudgetPolicy {
    /// Percent of the error budget consumed at which the gate becomes Restricted (only
    /// critical and corrective changes ship). Default 50.
    #[serde(default = "default_restrict_at")]
    #[schemars(schema_with = "schema::budget_percent")]
    pub restrict_at: f64,

    /// Percent of the error budget consumed at which the gate becomes Frozen (only
    /// corrective changes ship). Default 100; must be >= restrictAt.
    #[serde(default = "default_freeze_at")]
    #[schemars(schema_with = "schema::budget_percent")]
    pub freeze_at: f64,

    /// Gate to apply while the budget cannot be evaluated (Prometheus unreachable or
    /// failing). Default Restricted.
    #[serde(default = "default_when_unknown")]
    pub when_unknown: Gate,
}

fn default_restrict_at() -> f64 {
    50.0
}
fn default_freeze_at() -> f64 {
    100.0
}
fn default_when_unknown() -> Gate {
    Gate::Restricted
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            restrict_at: default_restrict_at(),
            freeze_at: default_freeze_at(),
            when_unknown: default_when_unknown(),
        }
    }
}

fn budget_policy_rules(schema: &mut Schema) {
    schema::add_rules(
        schema,
        &[(
            "self.freezeAt >= self.restrictAt",
            "freezeAt must be >= restrictAt",
        )],
    );
}

/// Multi-window, multi-burn-rate alerting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alerting {
    /// Alerting tiers. A tier fires when the burn rate over both its long and its short
    /// window is at least `burnRate`. Default: the Google SRE workbook tiers
    /// (page 14.4 over 1h/5m, page 6 over 6h/30m, ticket 1 over 3d/6h).
    #[serde(default = "default_tiers")]
    #[schemars(length(min = 1, max = 10))]
    pub burn_rate_tiers: Vec<BurnRateTier>,

    /// A prometheus-operator PrometheusRule (`monitoring.coreos.com/v1`) the operator
    /// owns, named `<policy>-slo` in the policy's namespace, with the recording and
    /// alerting rules `guardrails rules` prints. Off unless enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_rule: Option<OwnedPrometheusRule>,
}

impl Default for Alerting {
    fn default() -> Self {
        Self {
            burn_rate_tiers: default_tiers(),
            prometheus_rule: None,
        }
    }
}

impl Alerting {
    /// Whether the operator is asked to own the policy's PrometheusRule.
    pub fn owns_prometheus_rule(&self) -> bool {
        self.prometheus_rule.as_ref().is_some_and(|r| r.enabled)
    }
}

/// The PrometheusRule the operator keeps for a SloPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnedPrometheusRule {
    /// When true, the operator creates the PrometheusRule, updates it with the spec, and
    /// deletes it with the SloPolicy or when this turns false (a finalizer,
    /// `guardrails.dev/prometheus-rule`, holds the SloPolicy's deletion until it is
    /// gone). The condition `PrometheusRuleReady` says whether it is in place. A
    /// PrometheusRule of that name that the policy does not own is left alone.
    pub enabled: bool,

    /// Labels of the PrometheusRule, e.g. those your Prometheus' `ruleSelector`
    /// matches (kube-prometheus-stack: `release: <its release name>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The Google SRE workbook's multi-window burn-rate tiers.
pub fn default_tiers() -> Vec<BurnRateTier> {
    vec![
        BurnRateTier::new(Severity::Page, dur!("1h"), dur!("5m"), 14.4),
        BurnRateTier::new(Severity::Page, dur!("6h"), dur!("30m"), 6.0),
        BurnRateTier::new(Severity::Ticket, dur!("3d"), dur!("6h"), 1.0),
    ]
}

crate::vocabulary! {
/// Severity of a burn-rate alert.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Wake someone up.
    Page as "page",
    /// Look at it during working hours.
    Ticket as "ticket",
}
}

/// One alerting tier: fires when the burn rate over both windows is >= burnRate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BurnRateTier {
    /// page or ticket.
    pub severity: Severity,
    /// Long window, e.g. 1h. Must be longer than shortWindow.
    pub long_window: PromDuration,
    /// Short window, e.g. 5m; makes the alert reset quickly once the burn stops.
    pub short_window: PromDuration,
    /// Burn rate threshold: how many times faster than sustainable the budget burns
    /// (1 = exactly the whole budget over the window).
    #[schemars(schema_with = "schema::positive_number")]
    pub burn_rate: f64,
}

impl BurnRateTier {
    pub fn new(
        severity: Severity,
        long: PromDuration,
        short: PromDuration,
        burn_rate: f64,
    ) -> Self {
        Self {
            severity,
            long_window: long,
            short_window: short,
            burn_rate,
        }
    }
}

/// Observed state of a SloPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloPolicyStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current budget gate: Open, Restricted or Frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,

    /// Why the gate is what it is, in words a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_reason: Option<String>,

    /// Error budget remaining, percent, of the objective with the least left. May be
    /// negative when the budget is overspent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget_remaining: Option<f64>,

    /// When the operator last evaluated the policy (successfully or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation_time: Option<Time>,

    /// Where the last evaluation read the indicators: `Recorded` (the series of the rules
    /// `guardrails rules` prints, one query per series for every policy of a Prometheus)
    /// or `Raw` (this policy's own queries, when its series are not recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IndicatorSource>,

    /// Per-objective results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<ObjectiveStatus>,

    /// Ready and other conditions, each with the generation it was computed for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Observed state of one objective.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveStatus {
    /// Name of the objective.
    pub name: String,

    /// Service level indicator over the window, percent; null when there was no traffic.
    #[serde(default)]
    pub sli: Option<f64>,

    /// Percent of the error budget consumed over the window (may exceed 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget_consumed: Option<f64>,

    /// Percent of the error budget left (100 - consumed; may be negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget_remaining: Option<f64>,

    /// Burn rate per window used by the alerting tiers, keyed by the window (e.g. "5m").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub burn_rates: BTreeMap<String, f64>,

    /// Severities of the tiers currently firing, e.g. [page].
    #[serde(default)]
    pub firing_alerts: Vec<Severity>,

    /// When each firing severity started firing, e.g. {page: "2026-11-27T10:00:00Z"}.
    /// A canary is aborted by abortOnBurnRateAlert only for a tier that started firing
    /// after the canary started.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub firing_since: BTreeMap<Severity, Time>,

    /// Share of the window that has data, percent, to a tenth of a point (it grows with
    /// time itself; finer steps would rewrite the status at every evaluation of a young
    /// service). A budget computed from minutes of a
    /// 28-day window is the error ratio of those minutes: under 10% the gate reason
    /// says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,

    /// When these values were read from Prometheus. Older than lastEvaluationTime when
    /// the latest evaluation failed and the last good values are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_time: Option<Time>,
}

/// share-link's availability objective: a small valid policy, for tests.
#[cfg(test)]
pub fn example_slo_policy() -> SloPolicy {
    serde_yaml::from_str(
        r#"
apiVersion: guardrails.dev/v1alpha1
kind: SloPolicy
metadata: {name: share-link, namespace: portal}
spec:
  objectives:
    - name: availability
      target: 99.9
      indicator: {ratio: {errors: 'http_requests_total{code=~"5.."}', total: http_requests_total}}
"#,
    )
    .expect("a valid SloPolicy")
}

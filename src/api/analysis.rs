//! A GuardedRollout's analysis: its settings and the check kinds.

use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use super::{NotExactlyOne, PromDuration, PrometheusRef, Severity, schema};
use crate::dur;

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

/// One analysis check: exactly one of query, sloBurnRate, compare or sequential.
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

    /// A sequential test of the canary's errors against the primary's (or, without
    /// primary traffic, the objective's allowed ratio), read every `every`: Fail rolls
    /// back at once, Inconclusive never passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialCheck>,
}

/// What a check measures, parsed once from the API's "exactly one of" fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CheckKind<'a> {
    Query {
        query: &'a str,
        min: Option<f64>,
        max: Option<f64>,
    },
    SloBurnRate(&'a SloBurnRateCheck),
    Compare(&'a CompareCheck),
    Sequential(&'a SequentialCheck),
}

impl Check {
    pub fn kind(&self) -> Result<CheckKind<'_>, NotExactlyOne> {
        let kinds = [
            self.query.as_deref().map(|query| CheckKind::Query {
                query,
                min: self.min,
                max: self.max,
            }),
            self.slo_burn_rate.as_ref().map(CheckKind::SloBurnRate),
            self.compare.as_ref().map(CheckKind::Compare),
            self.sequential.as_ref().map(CheckKind::Sequential),
        ];
        match kinds.into_iter().flatten().collect::<Vec<_>>()[..] {
            [kind] => Ok(kind),
            _ => Err(NotExactlyOne("query, sloBurnRate, compare or sequential")),
        }
    }
}

fn check_rules(schema: &mut Schema) {
    schema::exactly_one(schema, &["query", "sloBurnRate", "compare", "sequential"]);
    schema::add_rules(
        schema,
        &[
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

/// Decides on evidence: a sequential likelihood-ratio test of the canary's error rate
/// against the primary's on the same traffic, valid however often it is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = sequential_rules)]
pub struct SequentialCheck {
    /// Name of the SloPolicy objective whose indicator (ratio or latency) counts the
    /// requests and errors, scoped to the canary's and the primary's pods.
    #[schemars(length(min = 1))]
    pub objective: String,
    /// Worst-case chance of rolling back a canary no worse than `tolerate` (and of
    /// passing one as bad as `detect`). Default 0.01.
    #[serde(default = "default_alpha")]
    #[schemars(range(min = 0.000001, max = 0.5))]
    pub alpha: f64,
    /// Canary/primary error-rate ratio that counts as no worse. Default 1.
    #[serde(default = "default_tolerate")]
    #[schemars(schema_with = "schema::positive_number")]
    pub tolerate: f64,
    /// Canary/primary error-rate ratio that must be caught; above `tolerate`. Default 2.
    #[serde(default = "default_detect")]
    #[schemars(schema_with = "schema::positive_number")]
    pub detect: f64,
    /// How often the evidence is read. Default: the Prometheus scrape interval (its
    /// shortest active target's; 5s while Prometheus cannot tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<PromDuration>,
    /// Still Inconclusive this long after the canary started: the rollout waits for a
    /// person (promote or abort). Default 10m.
    #[serde(default = "default_max_duration")]
    pub max_duration: PromDuration,
}

fn default_alpha() -> f64 {
    0.01
}
fn default_tolerate() -> f64 {
    1.0
}
fn default_detect() -> f64 {
    2.0
}
fn default_max_duration() -> PromDuration {
    dur!("10m")
}

fn sequential_rules(schema: &mut Schema) {
    schema::add_rules(
        schema,
        &[(
            "self.detect > self.tolerate",
            "detect must be above tolerate",
        )],
    );
}

impl SequentialCheck {
    /// A check of `objective` with every default (alpha 0.01, tolerate 1, detect 2,
    /// every scrape, maxDuration 10m), as the API defaults them.
    pub fn of(objective: &str) -> Self {
        Self {
            objective: objective.into(),
            alpha: default_alpha(),
            tolerate: default_tolerate(),
            detect: default_detect(),
            every: None,
            max_duration: default_max_duration(),
        }
    }

    /// The statistic's settings.
    pub fn settings(&self) -> crate::analysis::sequential::Settings {
        crate::analysis::sequential::Settings {
            alpha: self.alpha,
            tolerate: self.tolerate,
            detect: self.detect,
        }
    }
}

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
}

impl Check {
    pub fn kind(&self) -> Result<CheckKind<'_>, NotExactlyOne> {
        match (&self.query, &self.slo_burn_rate, &self.compare) {
            (Some(query), None, None) => Ok(CheckKind::Query {
                query,
                min: self.min,
                max: self.max,
            }),
            (None, Some(b), None) => Ok(CheckKind::SloBurnRate(b)),
            (None, None, Some(c)) => Ok(CheckKind::Compare(c)),
            _ => Err(NotExactlyOne("query, sloBurnRate or compare")),
        }
    }
}

fn check_rules(schema: &mut Schema) {
    schema::exactly_one(schema, &["query", "sloBurnRate", "compare"]);
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

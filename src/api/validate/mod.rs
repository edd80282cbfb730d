//! Validation of specs beyond what the CRD's structural schema checks: the cross-field
//! rules that the CRDs also carry as CEL (for apiservers that evaluate it) and the
//! semantic ones only the operator can check (PromQL parses, windows in order).
//! Every error names the field it is about, as a JSON path from `spec`.

use std::{collections::HashSet, fmt, time::Duration};

use super::{
    Analysis, BudgetPolicy, BurnRateTier, Check, CheckKind, CompareCheck, GuardedRolloutSpec,
    Objective, PrometheusRef, SequentialCheck, SloBurnRateCheck, SloPolicySpec, Step, StepKind,
};
use crate::promql;

mod guarded_rollout;
mod slo_policy;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.objectives[0].target`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All problems found in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}

impl ValidationErrors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

pub const MIN_SLO_INTERVAL: Duration = Duration::from_secs(10);
pub const MIN_ANALYSIS_INTERVAL: Duration = Duration::from_secs(5);

/// Template variables a `query` check may use.
pub const QUERY_VARIABLES: [&str; 5] = [
    "namespace",
    "target",
    "interval",
    "canary_pods",
    "primary_pods",
];

fn check_prometheus(errs: &mut ValidationErrors, field: &str, p: &PrometheusRef) {
    if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
        errs.add(
            field,
            format!("{:?} must start with http:// or https://", p.url),
        );
    }
}

fn check_count(errs: &mut ValidationErrors, field: &str, n: usize, min: usize, max: usize) {
    if n < min || n > max {
        errs.add(field, format!("has {n} items, must have {min} to {max}"));
    }
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests;

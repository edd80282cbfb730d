//! Validation of specs beyond what the CRD's structural schema checks: the cross-field
//! rules that the CRDs also carry as CEL (for apiservers that evaluate it) and the
//! semantic ones only the operator can check (PromQL parses, windows in order).
//! Every error names the field it is about, as a JSON path from `spec`.

use std::{collections::HashSet, fmt, time::Duration};

use super::{
    Analysis, BudgetPolicy, BurnRateTier, Check, CheckKind, CompareCheck, GuardedRolloutSpec,
    Objective, PrometheusRef, SloBurnRateCheck, SloPolicySpec, Step, StepKind,
};
use crate::promql;

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

impl SloPolicySpec {
    /// Checks the spec; returns every problem found.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if self.service.as_deref() == Some("") {
            errs.add("spec.service", "must not be empty when set");
        }
        if self.window.as_duration().is_zero() {
            errs.add("spec.window", "must be longer than 0s");
        }
        if self.interval.as_duration() < MIN_SLO_INTERVAL {
            errs.add(
                "spec.interval",
                format!("{} is below the minimum of 10s", self.interval),
            );
        }
        if !is_label_name(&self.pod_label) {
            errs.add(
                "spec.podLabel",
                format!("{:?} is not a Prometheus label name", self.pod_label),
            );
        }
        if let Some(p) = &self.prometheus {
            check_prometheus(&mut errs, "spec.prometheus.url", p);
        }
        check_count(&mut errs, "spec.objectives", self.objectives.len(), 1, 10);
        let mut names = HashSet::new();
        for (i, o) in self.objectives.iter().enumerate() {
            let path = format!("spec.objectives[{i}]");
            if !names.insert(o.name.as_str()) {
                errs.add(
                    format!("{path}.name"),
                    format!("duplicate objective name {:?}", o.name),
                );
            }
            check_objective(&mut errs, &path, o);
        }
        check_budget_policy(&mut errs, &self.budget_policy);
        check_count(
            &mut errs,
            "spec.alerting.burnRateTiers",
            self.alerting.burn_rate_tiers.len(),
            1,
            10,
        );
        for (i, tier) in self.alerting.burn_rate_tiers.iter().enumerate() {
            check_tier(
                &mut errs,
                &format!("spec.alerting.burnRateTiers[{i}]"),
                tier,
            );
        }
        errs.into_result()
    }
}

fn check_objective(errs: &mut ValidationErrors, path: &str, o: &Objective) {
    if !is_dns_label(&o.name) {
        errs.add(
            format!("{path}.name"),
            format!("{:?} must be lower-case letters, digits and dashes", o.name),
        );
    }
    if !(o.target > 0.0 && o.target < 100.0) {
        errs.add(
            format!("{path}.target"),
            format!("{} must be strictly between 0 and 100", o.target),
        );
    }
    let ind = &o.indicator;
    match (&ind.ratio, &ind.latency) {
        (Some(r), None) => {
            check_selector(errs, &format!("{path}.indicator.ratio.errors"), &r.errors);
            check_selector(errs, &format!("{path}.indicator.ratio.total"), &r.total);
        }
        (None, Some(l)) => {
            check_selector(
                errs,
                &format!("{path}.indicator.latency.histogram"),
                &l.histogram,
            );
            match l.threshold.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => {}
                _ => errs.add(
                    format!("{path}.indicator.latency.threshold"),
                    format!(
                        "{:?} is not a positive number (a bucket boundary such as \"0.3\")",
                        l.threshold
                    ),
                ),
            }
        }
        _ => errs.add(
            format!("{path}.indicator"),
            "exactly one of ratio or latency must be set",
        ),
    }
}

fn check_selector(errs: &mut ValidationErrors, field: &str, text: &str) {
    if let Err(e) = promql::parse_selector(text) {
        errs.add(field, e.to_string());
    }
}

fn check_budget_policy(errs: &mut ValidationErrors, p: &BudgetPolicy) {
    for (field, v) in [("restrictAt", p.restrict_at), ("freezeAt", p.freeze_at)] {
        if !(v > 0.0 && v <= 1000.0) {
            errs.add(
                format!("spec.budgetPolicy.{field}"),
                format!("{v} must be above 0 and at most 1000"),
            );
        }
    }
    if p.freeze_at < p.restrict_at {
        errs.add(
            "spec.budgetPolicy.freezeAt",
            format!("{} must be >= restrictAt ({})", p.freeze_at, p.restrict_at),
        );
    }
}

fn check_tier(errs: &mut ValidationErrors, path: &str, t: &BurnRateTier) {
    if !(t.burn_rate > 0.0 && t.burn_rate.is_finite()) {
        errs.add(
            format!("{path}.burnRate"),
            format!("{} must be above 0", t.burn_rate),
        );
    }
    if t.short_window.as_duration().is_zero() {
        errs.add(format!("{path}.shortWindow"), "must be longer than 0s");
    }
    if t.short_window.as_duration() >= t.long_window.as_duration() {
        errs.add(
            format!("{path}.shortWindow"),
            format!(
                "{} must be shorter than longWindow ({})",
                t.short_window, t.long_window
            ),
        );
    }
}

impl GuardedRolloutSpec {
    /// Checks the spec; returns every problem found. Whether the target and the
    /// SloPolicy exist, and whether a `sloBurnRate` objective is in the SloPolicy, is
    /// checked by the controller against the cluster.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if self.target_ref.name.is_empty() {
            errs.add("spec.targetRef.name", "must not be empty");
        }
        if self
            .slo_policy_ref
            .as_ref()
            .is_some_and(|r| r.name.is_empty())
        {
            errs.add("spec.sloPolicyRef.name", "must not be empty");
        }
        if self.replicas.is_some_and(|r| r < 0) {
            errs.add("spec.replicas", "must be 0 or more");
        }
        if let Some(gw) = &self.traffic_routing.gateway_api {
            if gw.http_route.is_empty() {
                errs.add(
                    "spec.trafficRouting.gatewayAPI.httpRoute",
                    "must not be empty",
                );
            }
            if !(1..=65535).contains(&gw.port) {
                errs.add(
                    "spec.trafficRouting.gatewayAPI.port",
                    format!("{} is not a port", gw.port),
                );
            }
        }
        check_steps(&mut errs, &self.steps);
        check_analysis(&mut errs, &self.analysis, self.slo_policy_ref.is_some());
        errs.into_result()
    }
}

fn check_steps(errs: &mut ValidationErrors, steps: &[Step]) {
    check_count(errs, "spec.steps", steps.len(), 1, 50);
    let mut last_weight: Option<(usize, i32)> = None;
    for (i, step) in steps.iter().enumerate() {
        let path = format!("spec.steps[{i}]");
        match step.kind() {
            Ok(StepKind::SetWeight(w)) => {
                if !(0..=100).contains(&w) {
                    errs.add(format!("{path}.setWeight"), format!("{w} is outside 0-100"));
                }
                if let Some((j, prev)) = last_weight.filter(|(_, prev)| w < *prev) {
                    errs.add(
                        format!("{path}.setWeight"),
                        format!("{w} is lower than steps[{j}].setWeight ({prev}): weights must not decrease"),
                    );
                }
                last_weight = Some((i, w));
            }
            Ok(StepKind::Pause(duration)) => {
                if duration.is_some_and(|d| d.as_duration().is_zero()) {
                    errs.add(
                        format!("{path}.pause.duration"),
                        "must be longer than 0s (omit it to wait for a promote)",
                    );
                }
            }
            Err(e) => errs.add(path, e.to_string()),
        }
    }
}

fn check_analysis(errs: &mut ValidationErrors, a: &Analysis, has_slo_policy: bool) {
    if let Some(p) = &a.prometheus {
        check_prometheus(errs, "spec.analysis.prometheus.url", p);
    }
    if a.interval.as_duration() < MIN_ANALYSIS_INTERVAL {
        errs.add(
            "spec.analysis.interval",
            format!("{} is below the minimum of 5s", a.interval),
        );
    }
    if a.failure_limit < 1 {
        errs.add("spec.analysis.failureLimit", "must be at least 1");
    }
    for (field, t) in [
        ("noData", &a.no_data),
        ("providerErrors", &a.provider_errors),
    ] {
        if t.timeout.as_duration().is_zero() {
            errs.add(
                format!("spec.analysis.{field}.timeout"),
                "must be longer than 0s",
            );
        }
    }
    check_count(errs, "spec.analysis.checks", a.checks.len(), 0, 20);
    let mut names = HashSet::new();
    for (i, check) in a.checks.iter().enumerate() {
        let path = format!("spec.analysis.checks[{i}]");
        if !names.insert(check.name.as_str()) {
            errs.add(
                format!("{path}.name"),
                format!("duplicate check name {:?}", check.name),
            );
        }
        if !is_dns_label(&check.name) {
            errs.add(
                format!("{path}.name"),
                format!(
                    "{:?} must be lower-case letters, digits and dashes",
                    check.name
                ),
            );
        }
        check_check(errs, &path, check, has_slo_policy);
    }
}

fn check_check(errs: &mut ValidationErrors, path: &str, c: &Check, has_slo_policy: bool) {
    let kind = match c.kind() {
        Ok(kind) => kind,
        Err(e) => return errs.add(path, e.to_string()),
    };
    if !matches!(kind, CheckKind::Query { .. }) && (c.min.is_some() || c.max.is_some()) {
        errs.add(path, "min and max apply to query checks only");
    }
    match kind {
        CheckKind::Query { query, min, max } => check_query(errs, path, query, min, max),
        CheckKind::SloBurnRate(s) => check_slo_burn_rate(errs, path, s, has_slo_policy),
        CheckKind::Compare(cmp) => check_compare(errs, path, cmp),
    }
}

fn check_query(
    errs: &mut ValidationErrors,
    path: &str,
    query: &str,
    min: Option<f64>,
    max: Option<f64>,
) {
    match (min, max) {
        (None, None) => errs.add(path, "a query check needs min and/or max"),
        (Some(min), Some(max)) if min > max => errs.add(
            format!("{path}.min"),
            format!("{min} must be <= max ({max})"),
        ),
        _ => {}
    }
    check_template(errs, &format!("{path}.query"), query, &QUERY_VARIABLES);
}

fn check_slo_burn_rate(
    errs: &mut ValidationErrors,
    path: &str,
    s: &SloBurnRateCheck,
    has_slo_policy: bool,
) {
    if !has_slo_policy {
        errs.add(format!("{path}.sloBurnRate"), "needs spec.sloPolicyRef");
    }
    if s.objective.is_empty() {
        errs.add(format!("{path}.sloBurnRate.objective"), "must not be empty");
    }
    if s.window.as_duration().is_zero() {
        errs.add(
            format!("{path}.sloBurnRate.window"),
            "must be longer than 0s",
        );
    }
    if !(s.max > 0.0 && s.max.is_finite()) {
        errs.add(
            format!("{path}.sloBurnRate.max"),
            format!("{} must be above 0", s.max),
        );
    }
}

fn check_compare(errs: &mut ValidationErrors, path: &str, cmp: &CompareCheck) {
    let field = format!("{path}.compare.query");
    let mut vars = QUERY_VARIABLES.to_vec();
    vars.push("pods");
    check_template(errs, &field, &cmp.query, &vars);
    if promql::template_variables(&cmp.query).is_ok_and(|v| !v.contains(&"pods")) {
        errs.add(
            field,
            "must use {{pods}}, filled once for the canary and once for the primary",
        );
    }
    if !(cmp.max_increase >= 0.0 && cmp.max_increase.is_finite()) {
        errs.add(
            format!("{path}.compare.maxIncrease"),
            format!("{} must be 0 or more", cmp.max_increase),
        );
    }
}

/// A query template must only use known variables and parse once they are filled in.
fn check_template(errs: &mut ValidationErrors, field: &str, template: &str, allowed: &[&str]) {
    let sample = promql::Vars::from([
        ("namespace", "ns".to_string()),
        ("target", "app".to_string()),
        ("interval", "30s".to_string()),
        ("canary_pods", "app-canary-[a-z0-9]+-[a-z0-9]+".to_string()),
        (
            "primary_pods",
            "app-primary-[a-z0-9]+-[a-z0-9]+".to_string(),
        ),
        ("pods", "app-canary-[a-z0-9]+-[a-z0-9]+".to_string()),
    ]);
    let vars: promql::Vars = sample
        .into_iter()
        .filter(|(k, _)| allowed.contains(k))
        .collect();
    match promql::render(template, &vars) {
        Err(e) => errs.add(field, e.to_string()),
        Ok(query) => {
            if let Err(e) = promql::parse_query(&query) {
                errs.add(field, e.to_string());
            }
        }
    }
}

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
#[path = "validate_tests.rs"]
mod tests;

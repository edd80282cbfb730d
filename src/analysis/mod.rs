//! Canary analysis: one `evaluate` for every check kind, and the verdict of a tick.
//! No IO: the controller supplies the samples.

pub mod sequential;

use crate::api::{Check, CheckKind, CheckResult, CheckStatus};

/// What a query gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Value(f64),
    /// No series, or NaN.
    NoData,
    /// Prometheus unreachable or the query failed.
    Error(String),
    /// Prometheus answered, but not with one number (several series).
    Invalid(String),
}

/// The samples one check needs on one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `query`: its value. `sloBurnRate`: the canary's burn rate.
    Single(Sample),
    /// `compare`: canary, then primary.
    Pair(Sample, Sample),
}

/// Evaluates one check.
pub fn evaluate(check: &Check, input: &Input) -> CheckStatus {
    let (min, max) = bounds(check);
    let mut status = CheckStatus {
        name: check.name.clone(),
        value: None,
        min,
        max,
        result: CheckResult::NoData,
        message: None,
    };
    match input {
        Input::Single(sample) => match sample {
            Sample::Value(v) if v.is_nan() => status.message = Some("no data (NaN)".into()),
            Sample::Value(v) => {
                status.value = v.is_finite().then_some(*v);
                let out = min.is_some_and(|m| *v < m) || max.is_some_and(|m| *v > m);
                // An infinite value never passes, whatever the bounds.
                status.result = if out || !v.is_finite() {
                    CheckResult::Fail
                } else {
                    CheckResult::Pass
                };
                if !v.is_finite() {
                    status.message = Some(format!("value {v}"));
                }
            }
            Sample::NoData => status.message = Some("no data".into()),
            Sample::Error(e) => {
                status.result = CheckResult::Error;
                status.message = Some(e.clone());
            }
            Sample::Invalid(e) => {
                status.result = CheckResult::Invalid;
                status.message = Some(e.clone());
            }
        },
        Input::Pair(canary, primary) => match (canary, primary) {
            (Sample::Invalid(e), _) | (_, Sample::Invalid(e)) => {
                status.result = CheckResult::Invalid;
                status.message = Some(e.clone());
            }
            (Sample::Error(e), _) | (_, Sample::Error(e)) => {
                status.result = CheckResult::Error;
                status.message = Some(e.clone());
            }
            (Sample::Value(c), Sample::Value(p)) if increase_percent(*c, *p).is_nan() => {
                // Both infinite, or a NaN: not comparable, so not a pass.
                status.message = Some(format!("canary {c} and primary {p} cannot be compared"));
            }
            (Sample::Value(c), Sample::Value(p)) => {
                let increase = increase_percent(*c, *p);
                status.value = Some(*c);
                status.message = Some(format!(
                    "primary {}, increase {}",
                    fmt(*p),
                    fmt_pct(increase)
                ));
                let limit = max.unwrap_or(0.0);
                status.result = if increase > limit {
                    CheckResult::Fail
                } else {
                    CheckResult::Pass
                };
            }
            (c, p) => {
                let side = if matches!(c, Sample::NoData) {
                    "canary"
                } else {
                    "primary"
                };
                if let Sample::Value(v) = c {
                    status.value = Some(*v);
                }
                let _ = p;
                status.message = Some(format!("no data for the {side}"));
            }
        },
    }
    status
}

/// (min, max) shown with a check's status; for compare, max is maxIncrease.
fn bounds(check: &Check) -> (Option<f64>, Option<f64>) {
    match check.kind() {
        Ok(CheckKind::Query { min, max, .. }) => (min, max),
        Ok(CheckKind::SloBurnRate(s)) => (None, Some(s.max)),
        Ok(CheckKind::Compare(c)) => (None, Some(c.max_increase)),
        Err(_) => (None, None),
    }
}

/// Percent by which `canary` exceeds `primary` (negative when lower). A primary of 0
/// makes any positive canary value an infinite increase.
pub fn increase_percent(canary: f64, primary: f64) -> f64 {
    if primary == 0.0 {
        if canary <= 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        (canary - primary) / primary.abs() * 100.0
    }
}

fn fmt(v: f64) -> String {
    format!("{}", crate::slo::math::round_sig(v, 4))
}

fn fmt_pct(v: f64) -> String {
    if v.is_infinite() {
        "infinite".into()
    } else {
        format!("{:.1}%", v)
    }
}

/// The outcome of one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    /// At least one check failed; what failed, for people.
    Fail(String),
    /// No check failed but Prometheus errored.
    ProviderError(String),
    /// No check failed or errored but some had no data.
    NoData(String),
    /// No check failed, but a query does not give one number: fix the check.
    Invalid(String),
}

/// Failures outrank invalid queries, which outrank provider errors, which outrank
/// missing data. None of those is ever a pass.
pub fn verdict(checks: &[CheckStatus]) -> Verdict {
    let of = |r: CheckResult| checks.iter().filter(move |c| c.result == r);
    let failed: Vec<String> = of(CheckResult::Fail).map(describe_failure).collect();
    if !failed.is_empty() {
        return Verdict::Fail(failed.join(", "));
    }
    if let Some(c) = of(CheckResult::Invalid).next() {
        return Verdict::Invalid(format!(
            "{}: {}",
            c.name,
            c.message.clone().unwrap_or_default()
        ));
    }
    if let Some(c) = of(CheckResult::Error).next() {
        return Verdict::ProviderError(format!(
            "{}: {}",
            c.name,
            c.message.clone().unwrap_or_default()
        ));
    }
    let missing: Vec<&str> = of(CheckResult::NoData).map(|c| c.name.as_str()).collect();
    if !missing.is_empty() {
        return Verdict::NoData(format!("no data for {}", missing.join(", ")));
    }
    Verdict::Pass
}

/// e.g. `error-rate 0.083 > 0.01`
pub fn describe_failure(c: &CheckStatus) -> String {
    let value = c.value.map(fmt).unwrap_or_else(|| "?".into());
    match (c.min, c.max, c.value) {
        (Some(min), _, Some(v)) if v < min => format!("{} {value} < {}", c.name, fmt(min)),
        (_, Some(max), _) => match &c.message {
            Some(m) if m.starts_with("primary") => {
                format!("{} {value} ({m}) > {}%", c.name, fmt(max))
            }
            _ => format!("{} {value} > {}", c.name, fmt(max)),
        },
        _ => format!("{} {value}", c.name),
    }
}

#[cfg(test)]
mod tests;

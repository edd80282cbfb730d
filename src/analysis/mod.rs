//! Canary analysis: one `evaluate` for every check kind, and the verdict of a tick.
//! No IO: the controller supplies the samples.

#[cfg(test)]
mod draws;
pub mod evidence;
pub mod sequential;
pub mod sequential_check;

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
    /// `sequential`: the totals of this reading and the evidence so far.
    Sequential(Box<sequential_check::SequentialInput>),
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
        evidence: None,
    };
    match (input, check.kind()) {
        (Input::Single(sample), _) => single(&mut status, sample),
        (Input::Pair(canary, primary), _) => pair(&mut status, canary, primary),
        (Input::Sequential(input), Ok(CheckKind::Sequential(s))) => {
            sequential_check::evaluate(&mut status, s, input)
        }
        (Input::Sequential(_), _) => {
            status.result = CheckResult::Invalid;
            status.message = Some("evidence given to a check that is not sequential".into());
        }
    }
    status
}

/// A failed or unusable sample: its result and message; None for a value or no data.
fn unusable(sample: &Sample) -> Option<(CheckResult, &str)> {
    match sample {
        Sample::Error(e) => Some((CheckResult::Error, e)),
        Sample::Invalid(e) => Some((CheckResult::Invalid, e)),
        Sample::Value(_) | Sample::NoData => None,
    }
}

/// A value checked against min and max.
fn single(status: &mut CheckStatus, sample: &Sample) {
    if let Some((result, why)) = unusable(sample) {
        status.result = result;
        status.message = Some(why.to_string());
        return;
    }
    let v = match sample {
        Sample::Value(v) if !v.is_nan() => *v,
        Sample::Value(_) => return status.message = Some("no data (NaN)".into()),
        _ => return status.message = Some("no data".into()),
    };
    status.value = v.is_finite().then_some(v);
    let out = status.min.is_some_and(|m| v < m) || status.max.is_some_and(|m| v > m);
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

/// The canary's increase over the primary checked against maxIncrease.
fn pair(status: &mut CheckStatus, canary: &Sample, primary: &Sample) {
    // Invalid outranks Error on either side: a broken query is not an outage.
    let worst = [canary, primary]
        .into_iter()
        .filter_map(unusable)
        .min_by_key(|(r, _)| *r != CheckResult::Invalid);
    if let Some((result, why)) = worst {
        status.result = result;
        status.message = Some(why.to_string());
        return;
    }
    let (c, p) = match (canary, primary) {
        (Sample::Value(c), Sample::Value(p)) => (*c, *p),
        (Sample::Value(c), _) => {
            status.value = Some(*c);
            return status.message = Some("no data for the primary".into());
        }
        _ => return status.message = Some("no data for the canary".into()),
    };
    let increase = increase_percent(c, p);
    if increase.is_nan() {
        // Both infinite, or a NaN: not comparable, so not a pass.
        status.message = Some(format!("canary {c} and primary {p} cannot be compared"));
        return;
    }
    status.value = Some(c);
    status.message = Some(format!(
        "primary {}, increase {}",
        fmt(p),
        fmt_pct(increase)
    ));
    status.result = if increase > status.max.unwrap_or(0.0) {
        CheckResult::Fail
    } else {
        CheckResult::Pass
    };
}

/// (min, max) shown with a check's status; for compare, max is maxIncrease.
fn bounds(check: &Check) -> (Option<f64>, Option<f64>) {
    match check.kind() {
        Ok(CheckKind::Query { min, max, .. }) => (min, max),
        Ok(CheckKind::SloBurnRate(s)) => (None, Some(s.max)),
        Ok(CheckKind::Compare(c)) => (None, Some(c.max_increase)),
        Ok(CheckKind::Sequential(_)) | Err(_) => (None, None),
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
    /// Every other check passed; sequential checks have too little evidence yet.
    Inconclusive(String),
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
    let open: Vec<&str> = of(CheckResult::Inconclusive)
        .map(|c| c.name.as_str())
        .collect();
    if !open.is_empty() {
        return Verdict::Inconclusive(format!("{} inconclusive", open.join(", ")));
    }
    Verdict::Pass
}

/// e.g. `error-rate 0.083 > 0.01`; a sequential check's own account.
pub fn describe_failure(c: &CheckStatus) -> String {
    if c.evidence.is_some() {
        return format!("{}: {}", c.name, c.message.clone().unwrap_or_default());
    }
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

//! One evaluation of a SloPolicy: readings in, next status out. No IO, no clock.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{gate, math};
use crate::{
    api::{Gate, ObjectiveStatus, SloPolicySpec, SloPolicyStatus},
    conditions::{self, ConditionType},
    reasons::SloCondition,
};

/// Error ratio (0-1) of one objective per window (by its text, e.g. "5m"), and under
/// [`COVERAGE`] the share (0-1) of the compliance window that has data; `None` is no
/// data.
pub type Readings = BTreeMap<String, Option<f64>>;

/// The key of the coverage reading in [`Readings`] (never a window's text).
pub const COVERAGE: &str = "coverage";

/// Under this share of the window with data (percent), the gate reason says so.
pub const LOW_COVERAGE: f64 = 10.0;

/// What Prometheus said for one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Readings for every objective, in spec order.
    Read(Vec<Readings>),
    /// Some queries failed (a slow 28d query, say): the others' readings, in spec order,
    /// and the failures; the failed windows keep their last good values.
    Partial(Vec<Readings>, Vec<FailedReading>),
    /// Prometheus could not be queried; why.
    Unavailable(String),
}

/// One window of one objective that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedReading {
    /// Index of the objective in the spec.
    pub objective: usize,
    pub window: String,
    pub error: String,
}

/// Every window an evaluation needs: the compliance window, then each tier window once.
pub fn windows(spec: &SloPolicySpec) -> Vec<String> {
    let mut out = vec![spec.window.to_string()];
    for t in &spec.alerting.burn_rate_tiers {
        for w in [&t.long_window, &t.short_window] {
            if !out.iter().any(|x| x == w.as_str()) {
                out.push(w.to_string());
            }
        }
    }
    out
}

/// The next status. `previous` supplies the last good values kept while Prometheus is
/// unavailable, and the condition transition times.
pub fn evaluate(
    spec: &SloPolicySpec,
    generation: Option<i64>,
    previous: &SloPolicyStatus,
    observation: &Observation,
    now: &Time,
) -> SloPolicyStatus {
    let mut status = SloPolicyStatus {
        observed_generation: generation,
        last_evaluation_time: Some(now.clone()),
        conditions: previous.conditions.clone(),
        ..Default::default()
    };
    let (readings, failed): (&[Readings], &[FailedReading]) = match observation {
        Observation::Read(r) => (r, &[]),
        Observation::Partial(r, f) => (r, f),
        Observation::Unavailable(why) => {
            // Keep the last good values, with the time they were read.
            status.objectives = previous.objectives.clone();
            return unknown(spec, status, why, now);
        }
    };
    status.objectives = read_objectives(spec, readings, failed, previous, now);
    if let Some(why) = budget_unread(spec, failed, previous) {
        return unknown(spec, status, &why, now);
    }
    let consumption: Vec<gate::Consumption> = status
        .objectives
        .iter()
        .map(|o| gate::Consumption {
            objective: &o.name,
            consumed: o.error_budget_consumed,
        })
        .collect();
    let (gate, mut reason) = gate::decide(&spec.budget_policy, &consumption);
    reason.push_str(&caveats(spec, &status.objectives, failed));
    finish(status, gate, reason, SloCondition::Evaluated, now)
}

/// Every objective's status from its readings; windows that failed keep their last good
/// values.
fn read_objectives(
    spec: &SloPolicySpec,
    readings: &[Readings],
    failed: &[FailedReading],
    previous: &SloPolicyStatus,
    now: &Time,
) -> Vec<ObjectiveStatus> {
    spec.objectives
        .iter()
        .zip(readings)
        .enumerate()
        .map(|(i, (o, r))| {
            let before = previous.objectives.iter().find(|p| p.name == o.name);
            let lost: Vec<&str> = failed
                .iter()
                .filter(|f| f.objective == i)
                .map(|f| f.window.as_str())
                .collect();
            let read = objective_status(spec, &o.name, o.target, r, before, now);
            keep_failed_windows(spec, read, &lost, before)
        })
        .collect()
}

/// The status while the budget is unknown (`why`): the gate is whenUnknown.
fn unknown(
    spec: &SloPolicySpec,
    status: SloPolicyStatus,
    why: &str,
    now: &Time,
) -> SloPolicyStatus {
    let (gate, reason) = gate::unknown(&spec.budget_policy, why);
    finish(
        status,
        gate,
        reason,
        SloCondition::PrometheusUnavailable,
        now,
    )
}

/// Why an objective's budget is unknown: its compliance window failed and it has no
/// last good value to keep (a new policy or objective). None when every budget is known.
fn budget_unread(
    spec: &SloPolicySpec,
    failed: &[FailedReading],
    previous: &SloPolicyStatus,
) -> Option<String> {
    failed.iter().find_map(|f| {
        let objective = spec.objectives.get(f.objective)?;
        let known = previous.objectives.iter().any(|p| p.name == objective.name);
        (f.window == spec.window.as_str() && !known)
            .then(|| format!("{} {}: {}", objective.name, f.window, f.error))
    })
}

/// What the gate reason adds about thin data and failed queries ("" when neither).
fn caveats(
    spec: &SloPolicySpec,
    objectives: &[ObjectiveStatus],
    failed: &[FailedReading],
) -> String {
    let mut out = String::new();
    for o in objectives {
        if let (Some(c), Some(_)) = (o.coverage, o.error_budget_consumed)
            && c < LOW_COVERAGE
        {
            let share = if c < 0.1 {
                "under 0.1%".to_string()
            } else {
                format!("only {c}%")
            };
            out.push_str(&format!(
                "; {}: data covers {share} of the {} window, which magnifies every error",
                o.name, spec.window
            ));
        }
    }
    if !failed.is_empty() {
        let what: Vec<String> = failed
            .iter()
            .map(|f| {
                let name = spec.objectives.get(f.objective).map_or("", |o| &o.name);
                format!("{name} {}: {}", f.window, f.error)
            })
            .collect();
        out.push_str(&format!(
            "; last good values kept for queries that failed ({})",
            what.join("; ")
        ));
    }
    out
}

/// The gate, its reason, the Ready condition and the smallest remaining budget.
fn finish(
    mut status: SloPolicyStatus,
    gate: Gate,
    reason: String,
    ready: SloCondition,
    now: &Time,
) -> SloPolicyStatus {
    conditions::set(
        &mut status.conditions,
        ConditionType::Ready,
        ready == SloCondition::Evaluated,
        ready.as_str(),
        &reason,
        status.observed_generation,
        now,
    );
    status.gate = Some(gate);
    status.gate_reason = Some(reason);
    status.error_budget_remaining = status
        .objectives
        .iter()
        .filter_map(|o| o.error_budget_remaining)
        .min_by(f64::total_cmp);
    status
}

/// Windows whose query failed keep the last good values (SLI and budget for the
/// compliance window, the burn rate for a tier window); firing tiers follow.
fn keep_failed_windows(
    spec: &SloPolicySpec,
    mut o: ObjectiveStatus,
    lost: &[&str],
    before: Option<&ObjectiveStatus>,
) -> ObjectiveStatus {
    if lost.is_empty() {
        return o;
    }
    if lost.contains(&COVERAGE) {
        o.coverage = before.and_then(|b| b.coverage);
    }
    if lost.contains(&spec.window.as_str()) {
        o.sli = before.and_then(|b| b.sli);
        o.error_budget_consumed = before.and_then(|b| b.error_budget_consumed);
        o.error_budget_remaining = before.and_then(|b| b.error_budget_remaining);
    }
    for w in lost {
        match before.and_then(|b| b.burn_rates.get(*w)) {
            Some(rate) => o.burn_rates.insert(w.to_string(), *rate),
            None => o.burn_rates.remove(*w),
        };
    }
    o.firing_alerts = math::firing(&spec.alerting.burn_rate_tiers, |w| {
        o.burn_rates.get(w).copied()
    });
    o.firing_since.retain(|s, _| o.firing_alerts.contains(s));
    for s in &o.firing_alerts {
        let since = before.and_then(|b| b.firing_since.get(s)).cloned();
        let at = o.observed_time.clone();
        o.firing_since
            .entry(*s)
            .or_insert_with(|| since.or(at).unwrap_or_else(conditions::epoch));
    }
    o
}

fn objective_status(
    spec: &SloPolicySpec,
    name: &str,
    target: f64,
    readings: &Readings,
    previous: Option<&ObjectiveStatus>,
    now: &Time,
) -> ObjectiveStatus {
    let ratio = |w: &str| readings.get(w).copied().flatten();
    let sli = ratio(spec.window.as_str()).map(math::sli);
    let consumed = sli.map(|s| math::budget_consumed(s, target));
    let mut burn_rates = BTreeMap::new();
    for t in &spec.alerting.burn_rate_tiers {
        for w in [&t.long_window, &t.short_window] {
            // A non-finite rate (a counter anomaly) is left out rather than written as null.
            let rate = ratio(w.as_str()).map(|r| math::burn_rate(r, target));
            if let Some(b) = rate.filter(|b| b.is_finite()) {
                burn_rates.insert(w.to_string(), math::round_sig(b, 4));
            }
        }
    }
    let firing_alerts = math::firing(&spec.alerting.burn_rate_tiers, |w| {
        burn_rates.get(w).copied()
    });
    // A tier firing since before keeps its start; one that stopped forgets it.
    let firing_since = firing_alerts
        .iter()
        .map(|s| {
            let since = previous
                .and_then(|p| p.firing_since.get(s))
                .filter(|_| previous.is_some_and(|p| p.firing_alerts.contains(s)))
                .cloned()
                .unwrap_or_else(|| now.clone());
            (*s, since)
        })
        .collect();
    ObjectiveStatus {
        name: name.to_string(),
        sli: sli.map(|s| math::round_sig(s, 7)),
        error_budget_consumed: consumed.map(|c| math::round_sig(c, 4)),
        error_budget_remaining: consumed.map(|c| math::round_sig(100.0 - c, 4)),
        burn_rates,
        firing_alerts,
        firing_since,
        coverage: ratio(COVERAGE).map(coverage_percent),
        observed_time: Some(now.clone()),
    }
}

/// Status for a spec that cannot be evaluated: Ready=False naming the field. The gate
/// is whenUnknown, since nothing about the budget is known.
pub fn invalid(
    spec: &SloPolicySpec,
    generation: Option<i64>,
    previous: &SloPolicyStatus,
    message: &str,
    now: &Time,
) -> SloPolicyStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.gate = Some(spec.budget_policy.when_unknown);
    status.gate_reason = Some(format!("invalid spec: {message}"));
    conditions::set(
        &mut status.conditions,
        ConditionType::Ready,
        false,
        SloCondition::InvalidSpec.as_str(),
        message,
        generation,
        now,
    );
    status
}

/// Coverage (a 0-1 ratio) in percent, to a tenth of a point: the query knows the oldest
/// sample to a 500th of the window, and coverage grows with time itself, so finer digits
/// would change (and write the status) at every evaluation of a young service.
fn coverage_percent(ratio: f64) -> f64 {
    (ratio * 1000.0).round() / 10.0
}

/// The status with every timestamp blanked: two statuses that differ only in
/// timestamps need no write.
pub fn without_timestamps(status: &SloPolicyStatus) -> SloPolicyStatus {
    let mut s = status.clone();
    s.last_evaluation_time = None;
    for o in &mut s.objectives {
        o.observed_time = None;
    }
    for c in &mut s.conditions {
        c.last_transition_time = conditions::epoch();
    }
    s
}

/// A gate transition worth an Event: (from, to).
pub fn gate_transition(
    previous: &SloPolicyStatus,
    next: &SloPolicyStatus,
) -> Option<(Option<Gate>, Gate)> {
    match (previous.gate, next.gate) {
        (from, Some(to)) if from != Some(to) => Some((from, to)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

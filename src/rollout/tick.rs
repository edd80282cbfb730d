//! One analysis tick applied to the analysis status (pure).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    analysis::{self, Verdict},
    api::{Analysis, AnalysisStatus, CheckResult, CheckStatus},
};

/// What a tick changed beyond the counters.
#[derive(Debug, Default, PartialEq)]
pub struct TickOutcome {
    /// For an AnalysisFailed Event.
    pub failed_tick: Option<String>,
    /// The rollback reason, when the canary must go.
    pub rollback: Option<String>,
}

/// Records the tick's results: passes count at the current weight, failures count
/// towards failureLimit, no data and provider errors start their timeout clocks and
/// never count as passes.
pub fn apply(
    spec: &Analysis,
    a: &mut AnalysisStatus,
    checks: Vec<CheckStatus>,
    now: &Time,
) -> TickOutcome {
    let verdict = analysis::verdict(&checks);
    let held = |since: &Option<Time>| {
        since
            .as_ref()
            .map(|t| super::elapsed(t, now))
            .unwrap_or_default()
    };
    a.last_tick_time = Some(now.clone());
    a.last_evidence_time = Some(now.clone());
    let decided = decided_on_evidence(&checks);
    a.checks = checks;
    if let Some(what) = decided {
        // A sequential check's Fail stands on its own: failureLimit does not apply.
        a.consecutive_failures += 1;
        a.failing_since.get_or_insert(now.clone());
        return TickOutcome {
            failed_tick: Some(what.clone()),
            rollback: Some(what),
        };
    }
    match verdict {
        Verdict::Pass => {
            a.consecutive_failures = 0;
            a.passing_ticks += 1;
            a.failing_since = None;
            a.no_data_since = None;
            a.provider_errors_since = None;
            TickOutcome::default()
        }
        Verdict::Fail(what) => {
            a.consecutive_failures += 1;
            a.failing_since.get_or_insert(now.clone());
            a.no_data_since = None;
            a.provider_errors_since = None;
            let (n, limit) = (a.consecutive_failures, spec.failure_limit);
            TickOutcome {
                failed_tick: Some(format!("tick {n}/{limit} failed: {what}")),
                rollback: (n >= limit).then(|| format!("{what} for {n} ticks")),
            }
        }
        // Not a failure, and not a pass either: the weight holds.
        Verdict::Inconclusive(_) => {
            a.consecutive_failures = 0;
            a.failing_since = None;
            a.no_data_since = None;
            a.provider_errors_since = None;
            TickOutcome::default()
        }
        Verdict::ProviderError(why) => {
            a.provider_errors_since.get_or_insert(now.clone());
            let held = held(&a.provider_errors_since);
            TickOutcome {
                failed_tick: None,
                rollback: (held >= spec.provider_errors.timeout.as_duration())
                    .then(|| format!("Prometheus failing for {}s: {why}", held.as_secs())),
            }
        }
        // An invalid query is held like missing data (it is no pass); decide names the
        // check for a fix.
        Verdict::NoData(why) | Verdict::Invalid(why) => {
            // Prometheus answered: its outage, if any, is over.
            a.provider_errors_since = None;
            a.no_data_since.get_or_insert(now.clone());
            let held = held(&a.no_data_since);
            TickOutcome {
                failed_tick: None,
                rollback: (held >= spec.no_data.timeout.as_duration())
                    .then(|| format!("{why} for {}s", held.as_secs())),
            }
        }
    }
}

/// The failures of sequential checks, described; None when none failed.
fn decided_on_evidence(checks: &[CheckStatus]) -> Option<String> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.evidence.is_some() && c.result == CheckResult::Fail)
        .map(analysis::describe_failure)
        .collect();
    (!failed.is_empty()).then(|| failed.join(", "))
}

/// Records a reading of the sequential checks between ticks: their results replace the
/// last ones; a Fail rolls back at once. Nothing else changes (ticks count passes and
/// hold on missing data or errors).
pub fn apply_evidence(a: &mut AnalysisStatus, checks: Vec<CheckStatus>, now: &Time) -> TickOutcome {
    a.last_evidence_time = Some(now.clone());
    let decided = decided_on_evidence(&checks);
    for c in checks {
        match a.checks.iter_mut().find(|old| old.name == c.name) {
            Some(old) => *old = c,
            None => a.checks.push(c),
        }
    }
    let Some(what) = decided else {
        return TickOutcome::default();
    };
    a.failing_since.get_or_insert(now.clone());
    TickOutcome {
        failed_tick: Some(what.clone()),
        rollback: Some(what),
    }
}

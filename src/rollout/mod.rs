//! The GuardedRollout state machine: decide(spec, status, observations, now). No IO.

mod decide;
pub mod deletion;
pub mod gate;
mod model;
pub mod notify;
pub mod status;
pub mod steps;
mod tick;
pub mod workloads;

pub use decide::{CONFLICT_MEMORY, HISTORY_LIMIT, decide, elapsed};
pub use model::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{GuardedRolloutSpec, GuardedRolloutStatus, Phase};

/// Whether an analysis tick is due: the canary serves traffic and `interval` has passed
/// since the last tick, or for the first tick since the canary started. The first window
/// then holds only this canary's traffic: pods of a canary drained moments ago match
/// the same pod regex, and their last healthy samples must not pass for the new revision.
pub fn tick_due(
    spec: &GuardedRolloutSpec,
    status: &GuardedRolloutStatus,
    canary: Option<&Workload>,
    now: &Time,
) -> bool {
    let since = status
        .analysis
        .as_ref()
        .and_then(|a| a.last_tick_time.as_ref())
        .or(status.canary_started_at.as_ref());
    let waited = since.is_none_or(|t| elapsed(t, now) >= spec.analysis.interval.as_duration());
    serving(status, canary) && waited
}

/// Whether the sequential checks read their evidence now, between ticks: the canary
/// serves, every canary pod runs its revision, and `every` has passed since their last
/// reading (or since the pods were all of the revision).
pub fn evidence_due(
    status: &GuardedRolloutStatus,
    canary: Option<&Workload>,
    now: &Time,
    every: std::time::Duration,
) -> bool {
    let Some(a) = status.analysis.as_ref() else {
        return false;
    };
    let Some(start) = a.evidence_since.as_ref() else {
        return false; // pods of an earlier revision still run: nothing to count yet
    };
    let since = a.last_evidence_time.as_ref().unwrap_or(start);
    serving(status, canary) && elapsed(since, now) >= every
}

/// The canary is in its steps and serves traffic.
fn serving(status: &GuardedRolloutStatus, canary: Option<&Workload>) -> bool {
    matches!(status.phase, Some(Phase::Progressing | Phase::Paused))
        && status.canary_weight.unwrap_or(0) > 0
        && canary.is_some_and(|c| c.ready > 0)
}

#[cfg(test)]
mod tests;

//! The GuardedRollout state machine: decide(spec, status, observations, now). No IO.

mod decide;
pub mod gate;
mod model;
pub mod status;
pub mod steps;
mod tick;
pub mod workloads;

pub use decide::{HISTORY_LIMIT, decide};
pub use model::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{GuardedRolloutSpec, GuardedRolloutStatus, Phase};

/// Whether an analysis tick is due: the canary serves traffic and `interval` has passed
/// since the last tick.
pub fn tick_due(
    spec: &GuardedRolloutSpec,
    status: &GuardedRolloutStatus,
    canary: Option<&Workload>,
    now: &Time,
) -> bool {
    let active = matches!(status.phase, Some(Phase::Progressing | Phase::Paused));
    let serving = status.canary_weight.unwrap_or(0) > 0 && canary.is_some_and(|c| c.ready > 0);
    let last = status
        .analysis
        .as_ref()
        .and_then(|a| a.last_tick_time.as_ref());
    let waited = last.is_none_or(|t| {
        now.0.duration_since(t.0).unsigned_abs() >= spec.analysis.interval.as_duration()
    });
    active && serving && waited
}

#[cfg(test)]
mod tests;

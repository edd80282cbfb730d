//! A GuardedRollout's metrics after a decision landed: its phase and canary weight, and
//! the deliveries the decision finished.

use kube::ResourceExt;

use super::super::Context;
use crate::{
    api::{GuardedRollout, GuardedRolloutStatus, HistoryEntry, Phase},
    telemetry::{OutcomeLabels, PhaseLabels, RolloutLabels},
};

pub fn record(
    ctx: &Context,
    gr: &GuardedRollout,
    ns: &str,
    previous: &GuardedRolloutStatus,
    next: &GuardedRolloutStatus,
) {
    let rollout = RolloutLabels {
        namespace: ns.into(),
        name: gr.name_any().into(),
    };
    gauges(ctx, &rollout, next);
    finished(ctx, &rollout, previous, next);
}

/// One series per phase (1 for the current one) and the canary's weight.
fn gauges(ctx: &Context, rollout: &RolloutLabels, next: &GuardedRolloutStatus) {
    let weight = next.canary_weight.unwrap_or(0);
    ctx.metrics
        .canary_weight
        .get_or_create(rollout)
        .set(i64::from(weight));
    for &phase in Phase::ALL {
        let labels = PhaseLabels {
            namespace: rollout.namespace.clone(),
            name: rollout.name.clone(),
            phase: phase.as_str(),
        };
        ctx.metrics
            .rollout_phase
            .get_or_create(&labels)
            .set(i64::from(next.phase == Some(phase)));
    }
}

/// Outcomes and time to detect of the history entries this decision added, and time to
/// recover once an entry's canary is drained (finishedAt, maybe a later decision).
fn finished(
    ctx: &Context,
    rollout: &RolloutLabels,
    previous: &GuardedRolloutStatus,
    next: &GuardedRolloutStatus,
) {
    // finishedAt may be stamped later: not part of an entry's identity.
    let key = |h: &HistoryEntry| {
        (
            h.revision.clone(),
            h.outcome,
            h.started_at.clone(),
            h.reason.clone(),
        )
    };
    for h in &next.history {
        let before = previous.history.iter().find(|p| key(p) == key(h));
        if before.is_none() {
            let labels = OutcomeLabels {
                namespace: rollout.namespace.clone(),
                name: rollout.name.clone(),
                outcome: h.outcome.as_str(),
            };
            ctx.metrics.rollout_outcomes.get_or_create(&labels).inc();
            if let Some(s) = h.detect_seconds() {
                ctx.metrics.detect_seconds.get_or_create(rollout).observe(s);
            }
        }
        if before.is_none_or(|b| b.finished_at.is_none())
            && let Some(s) = h.recover_seconds()
        {
            ctx.metrics
                .recover_seconds
                .get_or_create(rollout)
                .observe(s);
        }
    }
}

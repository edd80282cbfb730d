//! Step progress messages.

use crate::api::{GuardedRolloutSpec, GuardedRolloutStatus};

/// e.g. "step 2/4: weight 10, 3 passing ticks"
pub fn describe(spec: &GuardedRolloutSpec, s: &GuardedRolloutStatus, extra: &str) -> String {
    let step = s.current_step.unwrap_or(0) + 1;
    let ticks = s.analysis.as_ref().map_or(0, |a| a.passing_ticks);
    let mut out = format!(
        "step {step}/{}: weight {}, {ticks} passing ticks",
        spec.steps.len(),
        s.canary_weight.unwrap_or(0)
    );
    if !extra.is_empty() {
        out.push_str("; ");
        out.push_str(extra);
    }
    out
}

//! Step arithmetic: replica-ratio weights and progress messages.

use crate::api::{GuardedRolloutSpec, GuardedRolloutStatus};

/// Canary replicas for weight `w` next to a full primary of `primary` replicas:
/// ceil(primary * w / (100 - w)); 100% means as many as the primary.
pub fn canary_replicas(primary: i32, weight: i32) -> i32 {
    match weight {
        w if w <= 0 || primary <= 0 => 0,
        w if w >= 100 => primary,
        w => {
            let (p, w) = (i64::from(primary), i64::from(w));
            ((p * w + (100 - w) - 1) / (100 - w)) as i32
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ratio_follows_the_contract() {
        assert_eq!(canary_replicas(4, 0), 0);
        assert_eq!(canary_replicas(4, 10), 1); // ceil(0.44)
        assert_eq!(canary_replicas(4, 20), 1);
        assert_eq!(canary_replicas(4, 25), 2); // ceil(1.33)
        assert_eq!(canary_replicas(4, 50), 4);
        assert_eq!(canary_replicas(4, 75), 12);
        assert_eq!(canary_replicas(4, 100), 4);
        assert_eq!(canary_replicas(0, 50), 0);
    }
}

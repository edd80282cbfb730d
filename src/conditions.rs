//! Status conditions (kstatus style): named types and reasons, transitions tracked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The object is fully reconciled and its status can be trusted.
    pub const READY: &str = "Ready";
    /// The operator is working towards the spec (kstatus).
    pub const RECONCILING: &str = "Reconciling";
    /// The operator cannot make progress without a change from a person (kstatus).
    pub const STALLED: &str = "Stalled";
    /// Another writer keeps scaling a GuardedRollout's target up.
    pub const TARGET_CONFLICT: &str = "TargetConflict";
    /// Whether a GuardedRollout's router carries the weights decided (present once a
    /// route write has failed).
    pub const TRAFFIC_ROUTED: &str = "TrafficRouted";
}

/// Condition reasons. Stable: documented in the troubleshooting guide.
pub mod reasons {
    /// The SloPolicy was evaluated against Prometheus.
    pub const EVALUATED: &str = "Evaluated";
    /// Prometheus could not be queried; the gate is whenUnknown.
    pub const PROMETHEUS_UNAVAILABLE: &str = "PrometheusUnavailable";
    /// The spec is invalid; the message names the field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The GuardedRollout's target Deployment does not exist.
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";

    /// The HTTPRoute named by spec.trafficRouting.gatewayAPI does not exist.
    pub const ROUTE_NOT_FOUND: &str = "RouteNotFound";

    /// The primary is gone and the stable revision's template is known nowhere.
    pub const PRIMARY_TEMPLATE_UNKNOWN: &str = "PrimaryTemplateUnknown";

    /// Another writer (named) scaled the target up after the operator scaled it to 0.
    pub const TARGET_SCALED_UP: &str = "TargetScaledUp";
    /// No writer has scaled the target up lately.
    pub const NO_CONFLICT: &str = "NoConflict";

    /// The route could not be written (the message says why); retried.
    pub const ROUTE_NOT_UPDATED: &str = "RouteNotUpdated";
    /// The route carries the weights decided again.
    pub const ROUTE_UPDATED: &str = "RouteUpdated";

    /// Every reason above. GuardedRollout conditions also use the phase name as reason.
    pub const ALL: [&str; 10] = [
        EVALUATED,
        PROMETHEUS_UNAVAILABLE,
        INVALID_SPEC,
        TARGET_NOT_FOUND,
        ROUTE_NOT_FOUND,
        PRIMARY_TEMPLATE_UNKNOWN,
        TARGET_SCALED_UP,
        NO_CONFLICT,
        ROUTE_NOT_UPDATED,
        ROUTE_UPDATED,
    ];
}

/// Sets a condition, keeping its lastTransitionTime when its status did not change.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: transition,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Finds a condition by type.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A fixed placeholder for timestamps when comparing statuses.
pub fn epoch() -> Time {
    Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        set(
            &mut c,
            types::READY,
            true,
            reasons::EVALUATED,
            "a",
            Some(1),
            &at(10),
        );
        set(
            &mut c,
            types::READY,
            true,
            reasons::EVALUATED,
            "b",
            Some(2),
            &at(20),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, at(10));
        assert_eq!(c[0].message, "b");
        assert_eq!(c[0].observed_generation, Some(2));
        set(
            &mut c,
            types::READY,
            false,
            reasons::PROMETHEUS_UNAVAILABLE,
            "x",
            Some(2),
            &at(30),
        );
        assert_eq!(get(&c, types::READY).unwrap().last_transition_time, at(30));
    }
}

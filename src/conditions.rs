//! Status conditions (kstatus style): named types and reasons, transitions tracked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub use crate::reasons::ConditionType;

/// Sets a condition, keeping its lastTransitionTime when its status did not change.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_.as_str() && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    conditions.retain(|c| c.type_ != type_.as_str());
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
pub fn get(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
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
            ConditionType::Ready,
            true,
            "Evaluated",
            "a",
            Some(1),
            &at(10),
        );
        set(
            &mut c,
            ConditionType::Ready,
            true,
            "Evaluated",
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
            ConditionType::Ready,
            false,
            "PrometheusUnavailable",
            "x",
            Some(2),
            &at(30),
        );
        assert_eq!(
            get(&c, ConditionType::Ready).unwrap().last_transition_time,
            at(30)
        );
    }
}

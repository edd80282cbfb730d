//! The budget gate as a rollout sees it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::model::Target;
use crate::api::{ChangeClass, Gate, GuardedRolloutSpec, SloPolicy};

/// Whether a change of `class` may ship through `gate`: Open lets everything through,
/// Restricted only critical and corrective changes, Frozen only corrective ones.
pub fn allowed(gate: Gate, class: ChangeClass) -> bool {
    match gate {
        Gate::Open => true,
        Gate::Restricted => matches!(class, ChangeClass::Critical | ChangeClass::Corrective),
        Gate::Frozen => class == ChangeClass::Corrective,
    }
}

/// The revision's class: the pod-template annotation, else spec.changeClass.
pub fn effective_class(spec: &GuardedRolloutSpec, target: &Target) -> ChangeClass {
    target.change_class.unwrap_or(spec.change_class)
}

/// Evaluations older than this many of the SloPolicy's intervals make its gate stale.
pub const STALE_INTERVALS: u32 = 3;

/// Why the gate a SloPolicy shows cannot be trusted now, if it cannot: its last
/// evaluation is older than three of its intervals, or behind its generation.
/// `evaluated`: the generation and time this process last evaluated it (a status write
/// is skipped when only timestamps change, so that is fresher than lastEvaluationTime).
pub fn stale(
    policy: &SloPolicy,
    evaluated: Option<(Option<i64>, Time)>,
    now: &Time,
) -> Option<String> {
    let status = policy.status.as_ref()?;
    status.gate?;
    let generation = policy.metadata.generation;
    let ours = evaluated.filter(|(g, _)| *g == generation).map(|(_, t)| t);
    if status.observed_generation != generation && ours.is_none() {
        return Some(format!(
            "its status is of generation {:?}, the spec is at {generation:?}",
            status.observed_generation
        ));
    }
    let last = [status.last_evaluation_time.clone(), ours]
        .into_iter()
        .flatten()
        .max_by_key(|t| t.0);
    let limit = policy.spec.interval.as_duration() * STALE_INTERVALS;
    let age = last.as_ref().map(|t| super::elapsed(t, now));
    match age {
        Some(a) if a <= limit => None,
        Some(a) => Some(format!(
            "last evaluated {}s ago, more than {STALE_INTERVALS} intervals of {}",
            a.as_secs(),
            policy.spec.interval
        )),
        None => Some("never evaluated".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_table() {
        use ChangeClass::*;
        let table = [
            (Gate::Open, [true, true, true, true]),
            (Gate::Restricted, [false, false, true, true]),
            (Gate::Frozen, [false, false, false, true]),
        ];
        for (gate, expected) in table {
            for (class, want) in [Feature, Fix, Critical, Corrective]
                .into_iter()
                .zip(expected)
            {
                assert_eq!(allowed(gate, class), want, "{gate:?} {class:?}");
            }
        }
    }
}

#[cfg(test)]
mod stale_tests {
    use super::*;
    use crate::api::SloPolicyStatus;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + secs).unwrap())
    }

    fn policy(generation: i64, observed: i64, evaluated: i64) -> SloPolicy {
        let mut p: SloPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "guardrails.dev/v1alpha1", "kind": "SloPolicy",
            "metadata": {"name": "p", "generation": generation},
            "spec": {"interval": "10s", "objectives": [{"name": "a", "target": 99.0,
                "indicator": {"ratio": {"errors": "e", "total": "t"}}}]}
        }))
        .unwrap();
        p.status = Some(SloPolicyStatus {
            gate: Some(Gate::Open),
            observed_generation: Some(observed),
            last_evaluation_time: Some(at(evaluated)),
            ..Default::default()
        });
        p
    }

    #[test]
    fn a_gate_older_than_three_intervals_or_behind_its_generation_is_stale() {
        assert_eq!(
            stale(&policy(1, 1, 0), None, &at(30)),
            None,
            "exactly three intervals"
        );
        let why = stale(&policy(1, 1, 0), None, &at(31)).unwrap();
        assert!(why.contains("31s ago"), "{why}");
        assert!(
            stale(&policy(2, 1, 0), None, &at(1))
                .unwrap()
                .contains("generation")
        );
    }

    #[test]
    fn an_evaluation_without_a_status_write_keeps_the_gate_fresh() {
        let p = policy(1, 1, 0);
        assert_eq!(stale(&p, Some((Some(1), at(100))), &at(110)), None);
        assert!(
            stale(&p, Some((Some(0), at(100))), &at(110)).is_some(),
            "older generation"
        );
    }
}

//! The budget gate as a rollout sees it.

use super::model::Target;
use crate::api::{ChangeClass, Gate, GuardedRolloutSpec};

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

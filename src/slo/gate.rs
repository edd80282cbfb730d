//! The budget gate: from per-objective budget consumption to Open/Restricted/Frozen.

use crate::api::{BudgetPolicy, Gate};

/// Budget consumption of one objective; `None` when there was no traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumption<'a> {
    pub objective: &'a str,
    pub consumed: Option<f64>,
}

/// The gate and a reason a person can act on.
pub fn decide(policy: &BudgetPolicy, objectives: &[Consumption<'_>]) -> (Gate, String) {
    let worst = objectives
        .iter()
        .filter_map(|o| o.consumed.map(|c| (o.objective, c)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((name, consumed)) = worst else {
        return (
            Gate::Open,
            "no traffic in the window: no objective has data, the gate stays open".into(),
        );
    };
    let gate = if consumed >= policy.freeze_at {
        Gate::Frozen
    } else if consumed >= policy.restrict_at {
        Gate::Restricted
    } else {
        Gate::Open
    };
    let rule = match gate {
        Gate::Frozen => format!(
            "frozen at {}%: only corrective changes ship",
            policy.freeze_at
        ),
        Gate::Restricted => format!(
            "restricted at {}%: only critical and corrective changes ship",
            policy.restrict_at
        ),
        Gate::Open => format!("restricts at {}%", policy.restrict_at),
    };
    let no_data: Vec<&str> = objectives
        .iter()
        .filter(|o| o.consumed.is_none())
        .map(|o| o.objective)
        .collect();
    let mut reason = format!("{name} consumed {consumed:.1}% of its budget ({rule})");
    if !no_data.is_empty() {
        reason.push_str(&format!("; no traffic for {}", no_data.join(", ")));
    }
    (gate, reason)
}

/// The gate while the budget cannot be read.
pub fn unknown(policy: &BudgetPolicy, why: &str) -> (Gate, String) {
    (
        policy.when_unknown,
        format!(
            "budget unknown ({why}); gate is whenUnknown ({}) until Prometheus answers",
            policy.when_unknown
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(objective: &str, consumed: Option<f64>) -> Consumption<'_> {
        Consumption {
            objective,
            consumed,
        }
    }

    #[test]
    fn thresholds_are_inclusive() {
        let p = BudgetPolicy::default();
        assert_eq!(decide(&p, &[c("a", Some(49.9))]).0, Gate::Open);
        assert_eq!(decide(&p, &[c("a", Some(50.0))]).0, Gate::Restricted);
        assert_eq!(decide(&p, &[c("a", Some(99.99))]).0, Gate::Restricted);
        assert_eq!(decide(&p, &[c("a", Some(100.0))]).0, Gate::Frozen);
        assert_eq!(decide(&p, &[c("a", Some(250.0))]).0, Gate::Frozen);
    }

    #[test]
    fn worst_objective_decides_and_is_named() {
        let p = BudgetPolicy::default();
        let (gate, reason) = decide(
            &p,
            &[c("availability", Some(12.4)), c("latency", Some(120.0))],
        );
        assert_eq!(gate, Gate::Frozen);
        assert!(
            reason.starts_with("latency consumed 120.0% of its budget"),
            "{reason}"
        );
    }

    #[test]
    fn no_data_does_not_move_the_gate() {
        let p = BudgetPolicy::default();
        let (gate, reason) = decide(&p, &[c("availability", Some(10.0)), c("latency", None)]);
        assert_eq!(gate, Gate::Open);
        assert!(reason.contains("no traffic for latency"), "{reason}");
        assert_eq!(decide(&p, &[c("availability", None)]).0, Gate::Open);
    }

    #[test]
    fn unknown_uses_the_policy() {
        let p = BudgetPolicy {
            when_unknown: Gate::Frozen,
            ..Default::default()
        };
        let (gate, reason) = unknown(&p, "Prometheus unreachable");
        assert_eq!(gate, Gate::Frozen);
        assert!(reason.contains("Prometheus unreachable"));
    }
}

//! SloPolicy specs.

use super::*;

impl SloPolicySpec {
    /// Checks the spec; returns every problem found.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if self.service.as_deref() == Some("") {
            errs.add("spec.service", "must not be empty when set");
        }
        if self.window.as_duration().is_zero() {
            errs.add("spec.window", "must be longer than 0s");
        }
        if self.interval.as_duration() < MIN_SLO_INTERVAL {
            errs.add(
                "spec.interval",
                format!("{} is below the minimum of 10s", self.interval),
            );
        }
        if !is_label_name(&self.pod_label) {
            errs.add(
                "spec.podLabel",
                format!("{:?} is not a Prometheus label name", self.pod_label),
            );
        }
        if let Some(p) = &self.prometheus {
            check_prometheus(&mut errs, "spec.prometheus.url", p);
        }
        check_count(&mut errs, "spec.objectives", self.objectives.len(), 1, 10);
        let mut names = HashSet::new();
        for (i, o) in self.objectives.iter().enumerate() {
            let path = format!("spec.objectives[{i}]");
            if !names.insert(o.name.as_str()) {
                errs.add(
                    format!("{path}.name"),
                    format!("duplicate objective name {:?}", o.name),
                );
            }
            check_objective(&mut errs, &path, o);
        }
        check_budget_policy(&mut errs, &self.budget_policy);
        check_count(
            &mut errs,
            "spec.alerting.burnRateTiers",
            self.alerting.burn_rate_tiers.len(),
            1,
            10,
        );
        for (i, tier) in self.alerting.burn_rate_tiers.iter().enumerate() {
            check_tier(
                &mut errs,
                &format!("spec.alerting.burnRateTiers[{i}]"),
                tier,
            );
        }
        errs.into_result()
    }
}

fn check_objective(errs: &mut ValidationErrors, path: &str, o: &Objective) {
    if !is_dns_label(&o.name) {
        errs.add(
            format!("{path}.name"),
            format!("{:?} must be lower-case letters, digits and dashes", o.name),
        );
    }
    if !(o.target > 0.0 && o.target < 100.0) {
        errs.add(
            format!("{path}.target"),
            format!("{} must be strictly between 0 and 100", o.target),
        );
    }
    let ind = &o.indicator;
    match (&ind.ratio, &ind.latency) {
        (Some(r), None) => {
            check_selector(errs, &format!("{path}.indicator.ratio.errors"), &r.errors);
            check_selector(errs, &format!("{path}.indicator.ratio.total"), &r.total);
        }
        (None, Some(l)) => {
            check_selector(
                errs,
                &format!("{path}.indicator.latency.histogram"),
                &l.histogram,
            );
            match l.threshold.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => {}
                _ => errs.add(
                    format!("{path}.indicator.latency.threshold"),
                    format!(
                        "{:?} is not a positive number (a bucket boundary such as \"0.3\")",
                        l.threshold
                    ),
                ),
            }
        }
        _ => errs.add(
            format!("{path}.indicator"),
            "exactly one of ratio or latency must be set",
        ),
    }
}

fn check_selector(errs: &mut ValidationErrors, field: &str, text: &str) {
    if let Err(e) = promql::parse_selector(text) {
        errs.add(field, e.to_string());
    }
}

fn check_budget_policy(errs: &mut ValidationErrors, p: &BudgetPolicy) {
    for (field, v) in [("restrictAt", p.restrict_at), ("freezeAt", p.freeze_at)] {
        if !(v > 0.0 && v <= 1000.0) {
            errs.add(
                format!("spec.budgetPolicy.{field}"),
                format!("{v} must be above 0 and at most 1000"),
            );
        }
    }
    if p.freeze_at < p.restrict_at {
        errs.add(
            "spec.budgetPolicy.freezeAt",
            format!("{} must be >= restrictAt ({})", p.freeze_at, p.restrict_at),
        );
    }
}

fn check_tier(errs: &mut ValidationErrors, path: &str, t: &BurnRateTier) {
    if !(t.burn_rate > 0.0 && t.burn_rate.is_finite()) {
        errs.add(
            format!("{path}.burnRate"),
            format!("{} must be above 0", t.burn_rate),
        );
    }
    if t.short_window.as_duration().is_zero() {
        errs.add(format!("{path}.shortWindow"), "must be longer than 0s");
    }
    if t.short_window.as_duration() >= t.long_window.as_duration() {
        errs.add(
            format!("{path}.shortWindow"),
            format!(
                "{} must be shorter than longWindow ({})",
                t.short_window, t.long_window
            ),
        );
    }
}

//! GuardedRollout specs.

use super::*;

impl GuardedRolloutSpec {
    /// Checks the spec; returns every problem found. Whether the target and the
    /// SloPolicy exist, and whether a check's objective is in the SloPolicy, is
    /// checked by the controller against the cluster.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if self.target_ref.name.is_empty() {
            errs.add("spec.targetRef.name", "must not be empty");
        }
        if self
            .slo_policy_ref
            .as_ref()
            .is_some_and(|r| r.name.is_empty())
        {
            errs.add("spec.sloPolicyRef.name", "must not be empty");
        }
        if self.replicas.is_some_and(|r| r < 0) {
            errs.add("spec.replicas", "must be 0 or more");
        }
        if let Some(gw) = &self.traffic_routing.gateway_api {
            if gw.http_route.is_empty() {
                errs.add(
                    "spec.trafficRouting.gatewayAPI.httpRoute",
                    "must not be empty",
                );
            }
            if !(1..=65535).contains(&gw.port) {
                errs.add(
                    "spec.trafficRouting.gatewayAPI.port",
                    format!("{} is not a port", gw.port),
                );
            }
        }
        check_steps(&mut errs, &self.steps);
        check_analysis(&mut errs, &self.analysis, self.slo_policy_ref.is_some());
        errs.into_result()
    }
}

fn check_steps(errs: &mut ValidationErrors, steps: &[Step]) {
    check_count(errs, "spec.steps", steps.len(), 1, 50);
    let mut last_weight: Option<(usize, i32)> = None;
    for (i, step) in steps.iter().enumerate() {
        let path = format!("spec.steps[{i}]");
        match step.kind() {
            Ok(StepKind::SetWeight(w)) => {
                if !(0..=100).contains(&w) {
                    errs.add(format!("{path}.setWeight"), format!("{w} is outside 0-100"));
                }
                if let Some((j, prev)) = last_weight.filter(|(_, prev)| w < *prev) {
                    errs.add(
                        format!("{path}.setWeight"),
                        format!("{w} is lower than steps[{j}].setWeight ({prev}): weights must not decrease"),
                    );
                }
                last_weight = Some((i, w));
            }
            Ok(StepKind::Pause(duration)) => {
                if duration.is_some_and(|d| d.as_duration().is_zero()) {
                    errs.add(
                        format!("{path}.pause.duration"),
                        "must be longer than 0s (omit it to wait for a promote)",
                    );
                }
            }
            Err(e) => errs.add(path, e.to_string()),
        }
    }
}

fn check_analysis(errs: &mut ValidationErrors, a: &Analysis, has_slo_policy: bool) {
    if let Some(p) = &a.prometheus {
        check_prometheus(errs, "spec.analysis.prometheus.url", p);
    }
    if a.interval.as_duration() < MIN_ANALYSIS_INTERVAL {
        errs.add(
            "spec.analysis.interval",
            format!("{} is below the minimum of 5s", a.interval),
        );
    }
    if a.failure_limit < 1 {
        errs.add("spec.analysis.failureLimit", "must be at least 1");
    }
    for (field, t) in [
        ("noData", &a.no_data),
        ("providerErrors", &a.provider_errors),
    ] {
        if t.timeout.as_duration().is_zero() {
            errs.add(
                format!("spec.analysis.{field}.timeout"),
                "must be longer than 0s",
            );
        }
    }
    check_count(errs, "spec.analysis.checks", a.checks.len(), 0, 20);
    let mut names = HashSet::new();
    for (i, check) in a.checks.iter().enumerate() {
        let path = format!("spec.analysis.checks[{i}]");
        if !names.insert(check.name.as_str()) {
            errs.add(
                format!("{path}.name"),
                format!("duplicate check name {:?}", check.name),
            );
        }
        if !is_dns_label(&check.name) {
            errs.add(
                format!("{path}.name"),
                format!(
                    "{:?} must be lower-case letters, digits and dashes",
                    check.name
                ),
            );
        }
        check_check(errs, &path, check, has_slo_policy);
    }
}

fn check_check(errs: &mut ValidationErrors, path: &str, c: &Check, has_slo_policy: bool) {
    let kind = match c.kind() {
        Ok(kind) => kind,
        Err(e) => return errs.add(path, e.to_string()),
    };
    if !matches!(kind, CheckKind::Query { .. }) && (c.min.is_some() || c.max.is_some()) {
        errs.add(path, "min and max apply to query checks only");
    }
    match kind {
        CheckKind::Query { query, min, max } => check_query(errs, path, query, min, max),
        CheckKind::SloBurnRate(s) => check_slo_burn_rate(errs, path, s, has_slo_policy),
        CheckKind::Compare(cmp) => check_compare(errs, path, cmp),
        CheckKind::Sequential(s) => check_sequential(errs, path, s, has_slo_policy),
    }
}

fn check_sequential(
    errs: &mut ValidationErrors,
    path: &str,
    s: &SequentialCheck,
    has_slo_policy: bool,
) {
    let field = |name: &str| format!("{path}.sequential.{name}");
    if !has_slo_policy {
        errs.add(format!("{path}.sequential"), "needs spec.sloPolicyRef");
    }
    if s.objective.is_empty() {
        errs.add(field("objective"), "must not be empty");
    }
    if !(1e-6..=0.5).contains(&s.alpha) {
        errs.add(
            field("alpha"),
            format!("{} must be between 0.000001 and 0.5", s.alpha),
        );
    }
    if !(s.tolerate > 0.0 && s.tolerate.is_finite()) {
        errs.add(field("tolerate"), format!("{} must be above 0", s.tolerate));
    }
    if !(s.detect > s.tolerate && s.detect.is_finite()) {
        errs.add(
            field("detect"),
            format!("{} must be above tolerate ({})", s.detect, s.tolerate),
        );
    }
    if s.every
        .as_ref()
        .is_some_and(|e| e.as_duration() < std::time::Duration::from_secs(1))
    {
        errs.add(
            field("every"),
            "must be 1s or longer (Prometheus' finest scrape)",
        );
    }
    if s.max_duration.as_duration().is_zero() {
        errs.add(field("maxDuration"), "must be longer than 0s");
    }
}

fn check_query(
    errs: &mut ValidationErrors,
    path: &str,
    query: &str,
    min: Option<f64>,
    max: Option<f64>,
) {
    match (min, max) {
        (None, None) => errs.add(path, "a query check needs min and/or max"),
        (Some(min), Some(max)) if min > max => errs.add(
            format!("{path}.min"),
            format!("{min} must be <= max ({max})"),
        ),
        _ => {}
    }
    check_template(errs, &format!("{path}.query"), query, &QUERY_VARIABLES);
}

fn check_slo_burn_rate(
    errs: &mut ValidationErrors,
    path: &str,
    s: &SloBurnRateCheck,
    has_slo_policy: bool,
) {
    if !has_slo_policy {
        errs.add(format!("{path}.sloBurnRate"), "needs spec.sloPolicyRef");
    }
    if s.objective.is_empty() {
        errs.add(format!("{path}.sloBurnRate.objective"), "must not be empty");
    }
    if s.window.as_duration().is_zero() {
        errs.add(
            format!("{path}.sloBurnRate.window"),
            "must be longer than 0s",
        );
    }
    if !(s.max > 0.0 && s.max.is_finite()) {
        errs.add(
            format!("{path}.sloBurnRate.max"),
            format!("{} must be above 0", s.max),
        );
    }
}

fn check_compare(errs: &mut ValidationErrors, path: &str, cmp: &CompareCheck) {
    let field = format!("{path}.compare.query");
    let mut vars = QUERY_VARIABLES.to_vec();
    vars.push("pods");
    check_template(errs, &field, &cmp.query, &vars);
    if promql::template_variables(&cmp.query).is_ok_and(|v| !v.contains(&"pods")) {
        errs.add(
            field,
            "must use {{pods}}, filled once for the canary and once for the primary",
        );
    }
    if !(cmp.max_increase >= 0.0 && cmp.max_increase.is_finite()) {
        errs.add(
            format!("{path}.compare.maxIncrease"),
            format!("{} must be 0 or more", cmp.max_increase),
        );
    }
}

/// A query template must only use known variables and parse once they are filled in.
fn check_template(errs: &mut ValidationErrors, field: &str, template: &str, allowed: &[&str]) {
    let sample = promql::Vars::from([
        ("namespace", "ns".to_string()),
        ("target", "app".to_string()),
        ("interval", "30s".to_string()),
        ("canary_pods", "app-canary-[a-z0-9]+-[a-z0-9]+".to_string()),
        (
            "primary_pods",
            "app-primary-[a-z0-9]+-[a-z0-9]+".to_string(),
        ),
        ("pods", "app-canary-[a-z0-9]+-[a-z0-9]+".to_string()),
    ]);
    let vars: promql::Vars = sample
        .into_iter()
        .filter(|(k, _)| allowed.contains(k))
        .collect();
    match promql::render(template, &vars) {
        Err(e) => errs.add(field, e.to_string()),
        Ok(query) => {
            if let Err(e) = promql::parse_query(&query) {
                errs.add(field, e.to_string());
            }
        }
    }
}

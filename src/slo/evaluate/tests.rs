use super::*;
use crate::api::{Severity, SloPolicySpec};
use k8s_openapi::jiff::Timestamp;

fn spec() -> SloPolicySpec {
    serde_yaml::from_str(
        r#"
objectives:
  - name: availability
    target: 99.9
    indicator: {ratio: {errors: 'e{code=~"5.."}', total: e}}
"#,
    )
    .unwrap()
}

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + secs).unwrap())
}

/// The same reading for every window of spec().
fn every_window(reading: Option<f64>) -> Readings {
    windows(&spec()).into_iter().map(|w| (w, reading)).collect()
}

/// The same error ratio over every window.
fn steady(ratio: f64) -> Observation {
    Observation::Read(vec![every_window(Some(ratio))])
}

#[test]
fn windows_are_the_compliance_window_and_every_tier_window_once() {
    assert_eq!(windows(&spec()), ["28d", "1h", "5m", "6h", "30m", "3d"]);
}

/// The first evaluation of spec() at time 0.
fn fresh(observation: &Observation) -> SloPolicyStatus {
    evaluate(&spec(), Some(1), &Default::default(), observation, &at(0))
}

#[test]
fn healthy_service_is_open() {
    let s = fresh(&steady(0.0001));
    assert_eq!(s.gate, Some(Gate::Open));
    let o = &s.objectives[0];
    assert_eq!(o.sli, Some(99.99));
    assert_eq!(o.error_budget_consumed, Some(10.0));
    assert_eq!(o.error_budget_remaining, Some(90.0));
    assert_eq!(o.burn_rates["5m"], 0.1);
    assert!(o.firing_alerts.is_empty());
    assert_eq!(s.error_budget_remaining, Some(90.0));
    assert_eq!(s.observed_generation, Some(1));
    let ready = conditions::get(&s.conditions, ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", SloCondition::Evaluated.as_str())
    );
}

#[test]
fn overspent_budget_freezes_and_tickets() {
    let s = fresh(&steady(0.0012));
    assert_eq!(s.gate, Some(Gate::Frozen));
    assert_eq!(s.error_budget_remaining, Some(-20.0));
    assert_eq!(s.objectives[0].firing_alerts, vec![Severity::Ticket]);
    assert!(
        s.gate_reason
            .unwrap()
            .contains("availability consumed 120.0%")
    );
}

#[test]
fn fast_burn_pages() {
    let mut readings: Readings = every_window(Some(0.0001));
    readings.insert("1h".into(), Some(0.02));
    readings.insert("5m".into(), Some(0.02));
    let s = fresh(&Observation::Read(vec![readings]));
    assert_eq!(s.objectives[0].firing_alerts, vec![Severity::Page]);
    assert_eq!(
        s.gate,
        Some(Gate::Open),
        "the 28d budget is still mostly there"
    );
}

#[test]
fn no_traffic_is_no_data_and_keeps_the_gate_open() {
    let readings: Readings = every_window(None);
    let s = fresh(&Observation::Read(vec![readings]));
    assert_eq!(s.objectives[0].sli, None);
    assert!(s.objectives[0].burn_rates.is_empty());
    assert_eq!(s.gate, Some(Gate::Open));
    assert_eq!(s.error_budget_remaining, None);
}

#[test]
fn prometheus_away_applies_when_unknown_and_keeps_last_good_values() {
    let good = fresh(&steady(0.0012));
    let down = Observation::Unavailable("Prometheus unreachable: connection refused".into());
    let s = evaluate(&spec(), Some(1), &good, &down, &at(60));
    assert_eq!(
        s.gate,
        Some(Gate::Restricted),
        "whenUnknown defaults to Restricted"
    );
    assert!(
        s.gate_reason
            .as_ref()
            .unwrap()
            .contains("connection refused")
    );
    assert_eq!(s.objectives, good.objectives, "last good values kept");
    assert_eq!(
        s.objectives[0].observed_time,
        Some(at(0)),
        "with the time they were read"
    );
    assert_eq!(s.last_evaluation_time, Some(at(60)));
    let ready = conditions::get(&s.conditions, ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", SloCondition::PrometheusUnavailable.as_str())
    );
    assert_eq!(
        gate_transition(&good, &s),
        Some((Some(Gate::Frozen), Gate::Restricted))
    );

    // Back: values and gate return, Ready goes True again.
    let back = evaluate(&spec(), Some(1), &s, &steady(0.0012), &at(120));
    assert_eq!(back.gate, Some(Gate::Frozen));
    assert_eq!(
        conditions::get(&back.conditions, ConditionType::Ready)
            .unwrap()
            .status,
        "True"
    );
}

#[test]
fn only_timestamps_changed_means_no_write() {
    let a = fresh(&steady(0.0001));
    let b = evaluate(&spec(), Some(1), &a, &steady(0.0001), &at(60));
    assert_ne!(a, b);
    assert_eq!(without_timestamps(&a), without_timestamps(&b));
    let c = evaluate(&spec(), Some(1), &b, &steady(0.0002), &at(120));
    assert_ne!(without_timestamps(&b), without_timestamps(&c));
    assert_eq!(gate_transition(&a, &b), None);
}

#[test]
fn invalid_spec_is_not_ready_and_gate_is_when_unknown() {
    let s = invalid(
        &spec(),
        Some(3),
        &Default::default(),
        "spec.objectives[0].indicator.ratio.total: bad",
        &at(0),
    );
    assert_eq!(s.gate, Some(Gate::Restricted));
    let ready = conditions::get(&s.conditions, ConditionType::Ready).unwrap();
    assert_eq!(ready.reason, SloCondition::InvalidSpec.as_str());
    assert!(
        ready
            .message
            .contains("spec.objectives[0].indicator.ratio.total")
    );
    assert_eq!(ready.observed_generation, Some(3));
}

/// Every window read at `ratio` but the 28d one, whose query timed out.
fn compliance_window_timed_out(ratio: f64) -> Observation {
    let mut readings: Readings = every_window(Some(ratio));
    readings.remove("28d");
    let failed = vec![FailedReading {
        objective: 0,
        window: "28d".into(),
        error: "timeout".into(),
    }];
    Observation::Partial(vec![readings], failed)
}

#[test]
fn one_failed_window_keeps_the_others_and_says_which_failed() {
    let first = fresh(&steady(0.0001));
    // The 28d query times out; the short windows now show a fast burn.
    let s = evaluate(
        &spec(),
        Some(1),
        &first,
        &compliance_window_timed_out(0.02),
        &at(60),
    );
    let o = &s.objectives[0];
    assert_eq!(o.error_budget_consumed, Some(10.0), "28d kept from before");
    assert_eq!(o.burn_rates["5m"], 20.0, "short windows read now");
    assert_eq!(o.firing_alerts, vec![Severity::Page, Severity::Ticket]);
    assert_eq!(s.gate, Some(Gate::Open), "not whenUnknown");
    let reason = s.gate_reason.unwrap();
    assert!(reason.contains("availability 28d: timeout"), "{reason}");
}

/// A first evaluation whose compliance window failed (the short windows read, from
/// recorded series say) has no budget to go by: whenUnknown, not Open.
#[test]
fn a_failed_compliance_window_with_nothing_before_is_an_unknown_budget() {
    let s = fresh(&compliance_window_timed_out(0.0001));
    let policy = spec().budget_policy;
    assert_eq!(s.gate, Some(policy.when_unknown));
    assert_ne!(
        policy.when_unknown,
        Gate::Open,
        "the default tells the two apart"
    );
    let reason = s.gate_reason.unwrap();
    assert!(reason.contains("availability 28d: timeout"), "{reason}");
    let ready = conditions::get(&s.conditions, ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "PrometheusUnavailable")
    );
    assert_eq!(
        s.objectives[0].burn_rates["5m"], 0.1,
        "what was read is shown"
    );
}

#[test]
fn a_budget_from_minutes_of_a_28_day_window_says_so() {
    // Ten seconds of a bad canary are all the data there is: 0.357% of errors.
    let s = fresh(&covered(0.0004));
    let o = &s.objectives[0];
    assert_eq!(o.error_budget_consumed, Some(357.0));
    assert_eq!(o.coverage, Some(0.0));
    let reason = s.gate_reason.unwrap();
    assert!(
        reason.contains("data covers under 0.1% of the 28d window"),
        "{reason}"
    );
    // Two days in: 7.1%.
    let s = fresh(&covered(2.0 / 28.0));
    assert_eq!(s.objectives[0].coverage, Some(7.1));
    let reason = s.gate_reason.unwrap();
    assert!(
        reason.contains("data covers only 7.1% of the 28d window"),
        "{reason}"
    );
}

/// 0.357% of errors in every window, over `coverage` of the compliance window.
fn covered(coverage: f64) -> Observation {
    let mut readings: Readings = every_window(Some(0.00357));
    readings.insert(COVERAGE.into(), Some(coverage));
    Observation::Read(vec![readings])
}

#[test]
fn a_window_filling_up_is_no_write_at_every_evaluation() {
    // Coverage grows with time itself: at every evaluation of a young service. It moves
    // in tenths of a point (the window's data is known to a 500th of it), so an evaluation
    // two minutes later writes nothing; 40 minutes later it does.
    let minutes = |m: f64| m / (28.0 * 24.0 * 60.0);
    for start in [minutes(60.0), 0.015, 0.2] {
        let a = fresh(&covered(start + minutes(10.0)));
        let b = evaluate(
            &spec(),
            Some(1),
            &a,
            &covered(start + minutes(12.0)),
            &at(120),
        );
        assert_eq!(without_timestamps(&a), without_timestamps(&b), "{start}");
        let c = evaluate(
            &spec(),
            Some(1),
            &b,
            &covered(start + minutes(52.0)),
            &at(2520),
        );
        assert_ne!(without_timestamps(&b), without_timestamps(&c), "{start}");
    }
}

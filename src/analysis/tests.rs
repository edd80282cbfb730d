use super::*;
use crate::api::{CompareCheck, SloBurnRateCheck};
use crate::dur;

fn query(min: Option<f64>, max: Option<f64>) -> Check {
    Check {
        name: "error-rate".into(),
        query: Some("q".into()),
        min,
        max,
        ..Default::default()
    }
}

fn compare(max_increase: f64) -> Check {
    Check {
        name: "p99".into(),
        compare: Some(CompareCheck {
            query: "q".into(),
            max_increase,
        }),
        ..Default::default()
    }
}

#[test]
fn thresholds_are_inclusive() {
    let c = query(Some(0.5), Some(1.0));
    for (v, want) in [
        (0.5, CheckResult::Pass),
        (1.0, CheckResult::Pass),
        (0.49, CheckResult::Fail),
        (1.01, CheckResult::Fail),
    ] {
        assert_eq!(
            evaluate(&c, &Input::Single(Sample::Value(v))).result,
            want,
            "{v}"
        );
    }
}

#[test]
fn no_data_and_errors_are_not_passes() {
    let c = query(None, Some(0.01));
    assert_eq!(
        evaluate(&c, &Input::Single(Sample::NoData)).result,
        CheckResult::NoData
    );
    let s = evaluate(&c, &Input::Single(Sample::Error("refused".into())));
    assert_eq!(s.result, CheckResult::Error);
    assert_eq!(s.message.as_deref(), Some("refused"));
}

#[test]
fn burn_rate_check_uses_its_max() {
    let c = Check {
        name: "burn".into(),
        slo_burn_rate: Some(SloBurnRateCheck {
            objective: "availability".into(),
            window: dur!("5m"),
            max: 10.0,
        }),
        ..Default::default()
    };
    let s = evaluate(&c, &Input::Single(Sample::Value(12.0)));
    assert_eq!((s.result, s.max), (CheckResult::Fail, Some(10.0)));
}

#[test]
fn compare_fails_past_the_allowed_increase() {
    let c = compare(20.0);
    let pass = evaluate(&c, &Input::Pair(Sample::Value(0.12), Sample::Value(0.1)));
    assert_eq!(pass.result, CheckResult::Pass);
    let fail = evaluate(&c, &Input::Pair(Sample::Value(0.2), Sample::Value(0.1)));
    assert_eq!(fail.result, CheckResult::Fail);
    assert_eq!(fail.value, Some(0.2));
    assert!(fail.message.as_deref().unwrap().contains("increase 100.0%"));
    let nodata = evaluate(&c, &Input::Pair(Sample::Value(0.2), Sample::NoData));
    assert_eq!(nodata.result, CheckResult::NoData);
    let err = evaluate(
        &c,
        &Input::Pair(Sample::NoData, Sample::Error("down".into())),
    );
    assert_eq!(err.result, CheckResult::Error);
}

#[test]
fn zero_primary_means_any_canary_value_is_an_infinite_increase() {
    assert_eq!(increase_percent(0.0, 0.0), 0.0);
    assert!(increase_percent(0.1, 0.0).is_infinite());
    assert_eq!(increase_percent(0.05, 0.1), -50.0);
}

#[test]
fn verdict_ranks_fail_over_error_over_no_data() {
    let c = query(None, Some(0.01));
    let pass = evaluate(&c, &Input::Single(Sample::Value(0.0)));
    let fail = evaluate(&c, &Input::Single(Sample::Value(0.083)));
    let err = evaluate(&c, &Input::Single(Sample::Error("down".into())));
    let none = evaluate(&c, &Input::Single(Sample::NoData));
    assert_eq!(verdict(std::slice::from_ref(&pass)), Verdict::Pass);
    assert_eq!(verdict(&[]), Verdict::Pass);
    assert_eq!(
        verdict(&[err.clone(), fail.clone(), none.clone()]),
        Verdict::Fail("error-rate 0.083 > 0.01".into())
    );
    assert!(matches!(
        verdict(&[none.clone(), err]),
        Verdict::ProviderError(_)
    ));
    assert_eq!(
        verdict(&[pass, none]),
        Verdict::NoData("no data for error-rate".into())
    );
}

#[test]
fn several_series_is_an_invalid_query_not_a_provider_error() {
    let c = query(None, Some(0.01));
    let s = evaluate(
        &c,
        &Input::Single(Sample::Invalid("query returned 3 series".into())),
    );
    assert_eq!(s.result, CheckResult::Invalid);
    assert!(matches!(verdict(&[s]), Verdict::Invalid(m) if m.contains("3 series")));
}

#[test]
fn nan_and_infinite_values_never_pass() {
    let only_max = query(None, Some(0.01));
    let single = |v| evaluate(&only_max, &Input::Single(Sample::Value(v))).result;
    assert_eq!(single(f64::NAN), CheckResult::NoData);
    assert_eq!(
        single(f64::NEG_INFINITY),
        CheckResult::Fail,
        "below a max, still no pass"
    );
    assert_eq!(single(f64::INFINITY), CheckResult::Fail);
    let c = compare(20.0);
    let pair = |a, b| evaluate(&c, &Input::Pair(Sample::Value(a), Sample::Value(b))).result;
    assert_eq!(
        pair(f64::INFINITY, f64::INFINITY),
        CheckResult::NoData,
        "inf vs inf"
    );
    assert_eq!(pair(f64::INFINITY, 0.2), CheckResult::Fail);
    assert_eq!(pair(0.2, 0.2), CheckResult::Pass);
}

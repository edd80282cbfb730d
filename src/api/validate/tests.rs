//! One rule at a time: start from a valid spec, break one thing, expect exactly the
//! field that was broken to be named.

use super::*;
use crate::api::{
    AbortOnAlert, CompareCheck, GatewayApiRouting, Indicator, LatencyIndicator, LocalRef, Pause,
    RatioIndicator, SequentialCheck, SloBurnRateCheck,
};
use crate::dur;

fn slo() -> SloPolicySpec {
    serde_yaml::from_str(
        r#"
objectives:
  - name: availability
    target: 99.9
    indicator:
      ratio:
        errors: http_requests_total{service="s",code=~"5.."}
        total: http_requests_total{service="s"}
  - name: latency
    target: 99
    indicator:
      latency:
        histogram: http_request_duration_seconds_bucket{service="s"}
        threshold: "0.3"
"#,
    )
    .unwrap()
}

fn rollout() -> GuardedRolloutSpec {
    serde_yaml::from_str(
        r#"
targetRef: {name: share-link}
sloPolicyRef: {name: share-link}
steps:
  - setWeight: 10
  - pause: {duration: 1m}
  - setWeight: 50
  - pause: {}
analysis:
  checks:
    - name: error-rate
      query: sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{canary_pods}}"}[{{interval}}]))
      max: 0.01
    - name: canary-burn
      sloBurnRate: {objective: availability, window: 5m, max: 10}
    - name: p99
      compare:
        query: histogram_quantile(0.99, sum by (le) (rate(x_bucket{pod=~"{{pods}}"}[{{interval}}])))
        maxIncrease: 20
"#,
    )
    .unwrap()
}

/// The fields named by the errors of a spec that must be invalid.
fn fields(result: Result<(), ValidationErrors>) -> Vec<String> {
    result
        .expect_err("spec should be invalid")
        .0
        .into_iter()
        .map(|e| e.field)
        .collect()
}

fn assert_only(result: Result<(), ValidationErrors>, field: &str) {
    assert_eq!(fields(result), vec![field.to_string()]);
}

#[test]
fn valid_specs_pass() {
    slo().validate().unwrap();
    rollout().validate().unwrap();
}

#[test]
fn slo_target_must_be_strictly_between_0_and_100() {
    for t in [0.0, 100.0, -1.0, 150.0, f64::NAN] {
        let mut s = slo();
        s.objectives[0].target = t;
        assert_only(s.validate(), "spec.objectives[0].target");
    }
}

#[test]
fn slo_needs_one_to_ten_objectives() {
    let mut s = slo();
    s.objectives.clear();
    assert_only(s.validate(), "spec.objectives");
    let mut s = slo();
    s.objectives = (0..11)
        .map(|i| {
            let mut o = slo().objectives[0].clone();
            o.name = format!("o{i}");
            o
        })
        .collect();
    assert_only(s.validate(), "spec.objectives");
}

#[test]
fn slo_objective_names_are_unique_dns_labels() {
    let mut s = slo();
    s.objectives[1].name = "availability".into();
    // The second objective is a latency one: only the name is wrong.
    assert_only(s.validate(), "spec.objectives[1].name");
    let mut s = slo();
    s.objectives[0].name = "Avail_ability".into();
    assert_only(s.validate(), "spec.objectives[0].name");
}

#[test]
fn slo_indicator_needs_exactly_one_kind() {
    let mut s = slo();
    s.objectives[0].indicator.latency = slo().objectives[1].indicator.latency.clone();
    assert_only(s.validate(), "spec.objectives[0].indicator");
    let mut s = slo();
    s.objectives[0].indicator = Indicator::default();
    assert_only(s.validate(), "spec.objectives[0].indicator");
}

#[test]
fn slo_selectors_must_be_vector_selectors() {
    let mut s = slo();
    s.objectives[0].indicator.ratio = Some(RatioIndicator {
        errors: "sum(rate(http_requests_total[5m]))".into(),
        total: "http_requests_total".into(),
    });
    assert_only(s.validate(), "spec.objectives[0].indicator.ratio.errors");
    let mut s = slo();
    s.objectives[1].indicator.latency = Some(LatencyIndicator {
        histogram: "x_bucket{".into(),
        threshold: "0.3".into(),
    });
    assert_only(
        s.validate(),
        "spec.objectives[1].indicator.latency.histogram",
    );
}

#[test]
fn slo_latency_threshold_is_a_number() {
    for bad in ["fast", "", "+Inf", "-1"] {
        let mut s = slo();
        s.objectives[1]
            .indicator
            .latency
            .as_mut()
            .unwrap()
            .threshold = bad.into();
        assert_only(
            s.validate(),
            "spec.objectives[1].indicator.latency.threshold",
        );
    }
}

#[test]
fn slo_freeze_at_not_below_restrict_at() {
    let mut s = slo();
    s.budget_policy.restrict_at = 80.0;
    s.budget_policy.freeze_at = 60.0;
    assert_only(s.validate(), "spec.budgetPolicy.freezeAt");
}

#[test]
fn slo_budget_thresholds_in_range() {
    let mut s = slo();
    s.budget_policy.restrict_at = 0.0;
    assert_only(s.validate(), "spec.budgetPolicy.restrictAt");
}

#[test]
fn slo_interval_at_least_10s() {
    let mut s = slo();
    s.interval = dur!("5s");
    assert_only(s.validate(), "spec.interval");
}

#[test]
fn slo_pod_label_is_a_label_name() {
    let mut s = slo();
    s.pod_label = "pod-name".into();
    assert_only(s.validate(), "spec.podLabel");
}

#[test]
fn slo_prometheus_url_is_http() {
    let mut s = slo();
    s.prometheus = Some(crate::api::PrometheusRef {
        url: "prometheus:9090".into(),
    });
    assert_only(s.validate(), "spec.prometheus.url");
}

#[test]
fn slo_tier_short_window_shorter_than_long() {
    let mut s = slo();
    s.alerting.burn_rate_tiers[0].short_window = dur!("2h");
    assert_only(s.validate(), "spec.alerting.burnRateTiers[0].shortWindow");
    let mut s = slo();
    s.alerting.burn_rate_tiers[2].burn_rate = 0.0;
    assert_only(s.validate(), "spec.alerting.burnRateTiers[2].burnRate");
}

#[test]
fn rollout_step_has_exactly_one_kind() {
    let mut r = rollout();
    r.steps[0].pause = Some(Pause::default());
    assert_only(r.validate(), "spec.steps[0]");
    let mut r = rollout();
    r.steps[1] = Step::default();
    assert_only(r.validate(), "spec.steps[1]");
}

#[test]
fn rollout_weights_in_range_and_not_decreasing() {
    let mut r = rollout();
    r.steps[2].set_weight = Some(150);
    assert_only(r.validate(), "spec.steps[2].setWeight");
    let mut r = rollout();
    r.steps[2].set_weight = Some(5);
    assert_only(r.validate(), "spec.steps[2].setWeight");
}

#[test]
fn rollout_needs_one_to_fifty_steps() {
    let mut r = rollout();
    r.steps.clear();
    assert_only(r.validate(), "spec.steps");
    let mut r = rollout();
    r.steps = vec![
        Step {
            set_weight: Some(10),
            pause: None
        };
        51
    ];
    assert_only(r.validate(), "spec.steps");
}

#[test]
fn rollout_target_name_required() {
    let mut r = rollout();
    r.target_ref = LocalRef {
        name: String::new(),
    };
    assert_only(r.validate(), "spec.targetRef.name");
}

#[test]
fn rollout_analysis_interval_at_least_5s() {
    let mut r = rollout();
    r.analysis.interval = dur!("1s");
    assert_only(r.validate(), "spec.analysis.interval");
}

#[test]
fn rollout_failure_limit_positive() {
    let mut r = rollout();
    r.analysis.failure_limit = 0;
    assert_only(r.validate(), "spec.analysis.failureLimit");
}

#[test]
fn rollout_check_has_exactly_one_kind() {
    let mut r = rollout();
    r.analysis.checks[1].compare = r.analysis.checks[2].compare.clone();
    assert_only(r.validate(), "spec.analysis.checks[1]");
}

#[test]
fn rollout_check_names_unique() {
    let mut r = rollout();
    r.analysis.checks[2].name = "error-rate".into();
    assert_only(r.validate(), "spec.analysis.checks[2].name");
}

#[test]
fn rollout_query_check_needs_bounds_in_order() {
    let mut r = rollout();
    r.analysis.checks[0].max = None;
    assert_only(r.validate(), "spec.analysis.checks[0]");
    let mut r = rollout();
    r.analysis.checks[0].min = Some(0.5);
    r.analysis.checks[0].max = Some(0.1);
    assert_only(r.validate(), "spec.analysis.checks[0].min");
    let mut r = rollout();
    r.analysis.checks[1].max = Some(1.0);
    assert_only(r.validate(), "spec.analysis.checks[1]");
}

#[test]
fn rollout_queries_must_parse_after_templating() {
    let mut r = rollout();
    r.analysis.checks[0].query = Some("sum(rate(x[{{interval}}])".into());
    assert_only(r.validate(), "spec.analysis.checks[0].query");
    let mut r = rollout();
    r.analysis.checks[0].query = Some("up{job=\"{{job}}\"}".into());
    assert_only(r.validate(), "spec.analysis.checks[0].query");
    let mut r = rollout();
    // {{pods}} only exists in compare checks.
    r.analysis.checks[0].query = Some("up{pod=~\"{{pods}}\"}".into());
    assert_only(r.validate(), "spec.analysis.checks[0].query");
}

#[test]
fn rollout_compare_uses_pods_and_non_negative_increase() {
    let mut r = rollout();
    r.analysis.checks[2].compare = Some(CompareCheck {
        query: "up".into(),
        max_increase: 20.0,
    });
    assert_only(r.validate(), "spec.analysis.checks[2].compare.query");
    let mut r = rollout();
    r.analysis.checks[2].compare.as_mut().unwrap().max_increase = -5.0;
    assert_only(r.validate(), "spec.analysis.checks[2].compare.maxIncrease");
}

#[test]
fn rollout_slo_burn_rate_needs_policy_ref() {
    let mut r = rollout();
    r.slo_policy_ref = None;
    assert_only(r.validate(), "spec.analysis.checks[1].sloBurnRate");
    let mut r = rollout();
    r.analysis.checks[1].slo_burn_rate = Some(SloBurnRateCheck {
        objective: "availability".into(),
        window: dur!("5m"),
        max: 0.0,
    });
    assert_only(r.validate(), "spec.analysis.checks[1].sloBurnRate.max");
}

#[test]
fn rollout_sequential_settings_are_checked_field_by_field() {
    let sequential = |f: &dyn Fn(&mut SequentialCheck)| {
        let mut r = rollout();
        let mut s = SequentialCheck {
            every: Some(dur!("5s")),
            ..SequentialCheck::of("availability")
        };
        f(&mut s);
        r.analysis.checks[1].slo_burn_rate = None;
        r.analysis.checks[1].sequential = Some(s);
        r
    };
    assert_eq!(sequential(&|_| {}).validate(), Ok(()));
    let field = "spec.analysis.checks[1].sequential";
    assert_only(
        sequential(&|s| s.alpha = 0.0).validate(),
        &format!("{field}.alpha"),
    );
    assert_only(
        sequential(&|s| s.alpha = 0.7).validate(),
        &format!("{field}.alpha"),
    );
    assert_only(
        sequential(&|s| s.detect = 1.0).validate(),
        &format!("{field}.detect"),
    );
    assert_only(
        sequential(&|s| s.tolerate = -1.0).validate(),
        &format!("{field}.tolerate"),
    );
    assert_only(
        sequential(&|s| s.every = Some(dur!("0s"))).validate(),
        &format!("{field}.every"),
    );
    assert_only(
        sequential(&|s| s.max_duration = dur!("0s")).validate(),
        &format!("{field}.maxDuration"),
    );
    assert_only(
        sequential(&|s| s.objective.clear()).validate(),
        &format!("{field}.objective"),
    );
    let mut r = sequential(&|_| {});
    r.slo_policy_ref = None;
    assert_only(r.validate(), field);
}

#[test]
fn rollout_gateway_port_is_a_port() {
    let mut r = rollout();
    r.traffic_routing.gateway_api = Some(GatewayApiRouting {
        http_route: "r".into(),
        port: 0,
        service: None,
    });
    assert_only(r.validate(), "spec.trafficRouting.gatewayAPI.port");
}

#[test]
fn defaults_follow_the_contract() {
    let s = slo();
    assert_eq!(s.window.as_str(), "28d");
    assert_eq!(s.interval.as_str(), "1m");
    assert_eq!(s.pod_label, "pod");
    assert_eq!(s.budget_policy.restrict_at, 50.0);
    assert_eq!(s.budget_policy.freeze_at, 100.0);
    assert_eq!(s.alerting.burn_rate_tiers.len(), 3);
    let r = rollout();
    assert_eq!(r.analysis.interval.as_str(), "30s");
    assert_eq!(r.analysis.failure_limit, 2);
    assert_eq!(r.analysis.no_data.timeout.as_str(), "5m");
    assert_eq!(r.analysis.provider_errors.timeout.as_str(), "2m");
    assert_eq!(r.analysis.abort_on_burn_rate_alert, AbortOnAlert::Page);
    assert_eq!(r.change_class, crate::api::ChangeClass::Feature);
}

#[test]
fn errors_read_well() {
    let mut s = slo();
    s.objectives[0].target = 100.0;
    let text = s.validate().unwrap_err().to_string();
    assert_eq!(
        text,
        "spec.objectives[0].target: 100 must be strictly between 0 and 100"
    );
}

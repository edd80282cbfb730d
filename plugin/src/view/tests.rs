use super::{status::*, *};
use guardrails::api::{GuardedRollout, Severity, SloPolicy};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

fn rollout(status: serde_json::Value) -> GuardedRollout {
    serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": "share-link", "namespace": "portal"},
        "spec": {
            "targetRef": {"name": "share-link"},
            "sloPolicyRef": {"name": "share-link"},
            "steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}, {"pause": {}}],
            "analysis": {"checks": [{"name": "error-rate", "query": "vector(0)", "max": 0.01}]}
        },
        "status": status,
    }))
    .unwrap()
}

fn policy(remaining: f64) -> SloPolicy {
    serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "SloPolicy",
        "metadata": {"name": "share-link", "namespace": "portal"},
        "spec": {"objectives": [
            {"name": "availability", "target": 99.9, "indicator": {"ratio": {"errors": "a", "total": "b"}}},
            {"name": "latency", "target": 99, "indicator": {"latency": {"histogram": "h", "threshold": "0.3"}}}
        ]},
        "status": {
            "gate": "Restricted", "gateReason": "availability consumed 60% of its budget",
            "errorBudgetRemaining": remaining,
            "objectives": [
                {"name": "availability", "sli": 99.94, "errorBudgetConsumed": 100.0 - remaining,
                 "errorBudgetRemaining": remaining, "burnRates": {"5m": 15.0, "1h": 14.5},
                 "firingAlerts": ["page"], "coverage": 3.5},
                {"name": "latency", "sli": null, "firingAlerts": []}
            ]
        }
    }))
    .unwrap()
}

fn t(s: &str) -> serde_json::Value {
    json!(s)
}

#[test]
fn row_shows_the_step_only_while_a_canary_runs() {
    let progressing = rollout(json!({
        "phase": "Progressing", "currentStep": 1, "canaryWeight": 10, "message": "step 2/4",
        "gate": {"state": "Open", "changeClass": "feature", "allowed": true}
    }));
    let row = rollout_row(&progressing, &[policy(40.0)]);
    assert_eq!(row.step, Some(2));
    assert_eq!(row.steps, 4);
    assert_eq!(row.weight, 10);
    assert_eq!(row.gate.as_deref(), Some("Open"));
    assert_eq!(row.change_class.as_deref(), Some("feature"));
    assert_eq!(row.budget_left, Some(40.0));

    let idle = rollout(json!({"phase": "Idle"}));
    let row = rollout_row(&idle, &[policy(40.0)]);
    assert_eq!(row.step, None);
    assert_eq!(
        row.gate.as_deref(),
        Some("Restricted"),
        "falls back to the policy's gate"
    );
    let text = rollouts_text(&[row], false);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("share-link  Idle"), "{text}");
    assert!(text.contains("40.0%"), "{text}");
}

#[test]
fn a_policy_in_another_namespace_is_not_used() {
    let mut p = policy(40.0);
    p.metadata.namespace = Some("other".into());
    let row = rollout_row(&rollout(json!({"phase": "Idle"})), &[p]);
    assert_eq!(row.budget_left, None);
    assert_eq!(row.gate, None);
}

#[test]
fn history_gives_time_to_detect_and_to_recover() {
    let gr = rollout(json!({
        "phase": "RolledBack", "failedRevision": "bad",
        "history": [{
            "revision": "bad", "changeClass": "feature", "outcome": "RolledBack",
            "startedAt": t("2026-11-27T10:00:00Z"), "detectedAt": t("2026-11-27T10:00:12Z"),
            "finishedAt": t("2026-11-27T10:00:21Z"), "reason": "error-rate 0.2 > 0.01 for 2 ticks"
        }, {
            "revision": "good", "changeClass": "feature", "outcome": "Promoted",
            "startedAt": t("2026-11-27T09:00:00Z"), "finishedAt": t("2026-11-27T09:05:00Z")
        }]
    }));
    let v = status_view(&gr, &[], Timestamp::now());
    assert_eq!(v.history[0].detect_seconds, Some(12.0));
    assert_eq!(v.history[0].recover_seconds, Some(9.0));
    assert_eq!(v.history[1].detect_seconds, None);
    let text = status_text(&v);
    assert!(text.contains("12s") && text.contains("9s"), "{text}");
    assert!(text.contains("failed bad"), "{text}");
    assert!(v.steps_detail.iter().all(|s| s.state == StepState::Pending));
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["history"][0]["detectSeconds"], 12.0);
    assert_eq!(json["history"][0]["outcome"], "RolledBack");
    assert_eq!(json["phase"], "RolledBack");
}

#[test]
fn steps_are_marked_done_current_and_pending() {
    let gr = rollout(json!({
        "phase": "Paused", "currentStep": 1, "canaryWeight": 10,
        "analysis": {"consecutiveFailures": 1, "lastTickTime": t("2026-11-27T10:00:00Z"),
            "checks": [{"name": "error-rate", "value": 0.002, "max": 0.01, "result": "Pass"}]}
    }));
    let now: Timestamp = "2026-11-27T10:00:07Z".parse().unwrap();
    let v = status_view(&gr, &[], now);
    let states: Vec<StepState> = v.steps_detail.iter().map(|s| s.state).collect();
    use StepState::*;
    assert_eq!(states, vec![Done, Current, Pending, Pending]);
    assert_eq!(v.last_tick_seconds_ago, Some(7.0));
    let text = status_text(&v);
    assert!(text.contains("[x]  1  setWeight 10"), "{text}");
    assert!(text.contains("[>]  2  pause 1m"), "{text}");
    assert!(text.contains("[ ]  4  pause until promoted"), "{text}");
    assert!(
        text.contains("error-rate  0.002  -    0.01  Pass"),
        "{text}"
    );
    assert!(
        text.contains("last tick 7s ago, 1 failed in a row"),
        "{text}"
    );
    assert!(watch_line(&v).starts_with("Paused step 2/4 weight 10% [error-rate=0.002 Pass]"));
}

#[test]
fn a_sequential_check_shows_its_statistic_bounds_and_counts() {
    let message = "canary 3 errors in 410 requests vs primary 4 in 3,690: statistic 1.27 (Fail at 4.61, Pass at -5.3)";
    let gr = rollout(json!({
        "phase": "Progressing", "currentStep": 1, "canaryWeight": 10,
        "analysis": {"checks": [{"name": "errors-vs-primary", "result": "Inconclusive",
            "message": message,
            "evidence": {"canary": {"requests": 410, "errors": 3},
                "primary": {"requests": 3690, "errors": 4}, "vsPrimary": 1.2734,
                "vsObjective": 0.5, "bound": 4.60517, "decision": "Inconclusive"}}]}
    }));
    let v = status_view(&gr, &[], "2026-11-27T10:00:07Z".parse().unwrap());
    let text = status_text(&v);
    assert!(
        text.contains(&format!(
            "errors-vs-primary  1.27   -5.3  4.61  Inconclusive  {message}"
        )),
        "{text}"
    );
}

#[test]
fn budget_shows_bars_and_firing_tiers() {
    let v = budget_view(&policy(25.0));
    assert_eq!(v.firing, vec![Severity::Page]);
    assert_eq!(v.objectives[1].sli, None);
    let text = budget_text(std::slice::from_ref(&v), false);
    assert!(
        text.contains("[#####...............]  25.0%  page"),
        "{text}"
    );
    assert!(text.contains("SLI no data"), "{text}");
    assert!(text.contains("burn 5m 15, 1h 14.5"), "{text}");
    assert!(text.contains("data for 3.5% of the window"), "{text}");
    let json = serde_json::to_value(&[v]).unwrap();
    assert_eq!(json[0]["gate"], "Restricted");
    assert_eq!(json[0]["objectives"][0]["budgetLeft"], 25.0);
}

#[test]
fn bars_clamp_and_durations_read_well() {
    assert_eq!(bar(Some(-40.0), 4), "[....]");
    assert_eq!(bar(Some(250.0), 4), "[####]");
    assert_eq!(bar(None, 2), "[..]");
    assert_eq!(human_duration(9.4), "9s");
    assert_eq!(human_duration(250.0), "4m10s");
    assert_eq!(human_duration(7380.0), "2h03m");
    assert_eq!(human_duration(3.0 * 86400.0 + 3600.0), "3d1h");
}

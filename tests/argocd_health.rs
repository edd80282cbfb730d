//! The Argo CD health checks in deploy/argocd, run by a Lua 5.1 interpreter (Argo CD runs
//! gopher-lua, a Lua 5.1) over statuses the operator wrote in the e2e stories and over
//! every phase, gate and condition reason of the operator's vocabulary.

use std::str::FromStr;

use guardrails::{
    api::{Gate, GuardedRolloutStatus, Phase, TargetScaledUp},
    conditions,
    reasons::{ConditionType, SloCondition},
    rollout::status::{Problem, set_conditions, set_traffic_routed},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use mlua::{Lua, LuaSerdeExt, serde::SerializeOptions};
use serde_json::{Value, json};

const ROLLOUT: &str = include_str!("../deploy/argocd/guardedrollout-health.lua");
const SLO: &str = include_str!("../deploy/argocd/slopolicy-health.lua");

/// (status, message) the script returns for `obj`.
fn health(script: &str, obj: &Value) -> (String, String) {
    let lua = Lua::new();
    // Argo CD hands the object over without JSON nulls.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua
        .to_value_with(obj, options)
        .expect("JSON converts to Lua");
    lua.globals().set("obj", value).expect("set obj");
    let hs: mlua::Table = lua.load(script).eval().expect("the script runs");
    let status: String = hs.get("status").expect("hs.status");
    let message: String = hs.get("message").expect("hs.message");
    (status, message)
}

fn now() -> Time {
    Time(Timestamp::UNIX_EPOCH)
}

fn rollout(status: &GuardedRolloutStatus) -> Value {
    json!({"metadata": {"name": "app", "generation": 1}, "status": status})
}

/// A status in `phase`, conditions set as the operator sets them.
fn in_phase(phase: Phase, problem: Option<Problem<'_>>) -> GuardedRolloutStatus {
    let mut s = GuardedRolloutStatus {
        phase: Some(phase),
        observed_generation: Some(1),
        message: Some(format!("{phase} now")),
        ..Default::default()
    };
    set_conditions(&mut s, problem, Some(1), &now());
    s
}

#[test]
fn every_phase_has_the_health_its_meaning_gives() {
    for &phase in Phase::ALL {
        let want = match phase {
            Phase::Idle | Phase::Succeeded => "Healthy",
            Phase::RolledBack => "Degraded",
            Phase::Paused | Phase::Blocked => "Suspended",
            Phase::Initializing | Phase::Progressing | Phase::Promoting => "Progressing",
        };
        let (got, message) = health(ROLLOUT, &rollout(&in_phase(phase, None)));
        assert_eq!(got, want, "{phase}: {message}");
        assert!(message.contains(phase.as_str()), "{phase}: {message}");
    }
}

#[test]
fn every_reason_a_person_must_act_on_is_degraded_and_named() {
    let problems = [
        Problem::InvalidSpec("spec.steps[0]: bad"),
        Problem::TargetNotFound("Deployment app not found"),
        Problem::RouteNotFound("HTTPRoute r not found"),
        Problem::PrimaryTemplateUnknown("stable template unknown"),
    ];
    for problem in problems {
        let (got, message) = health(ROLLOUT, &rollout(&in_phase(Phase::Idle, Some(problem))));
        assert_eq!(got, "Degraded", "{problem:?}");
        assert!(message.starts_with(problem.reason().as_str()), "{message}");
        assert!(message.contains(problem.message()), "{message}");
    }
    let mut routed = in_phase(Phase::Progressing, None);
    set_traffic_routed(&mut routed, Some("forbidden"), Some(1), &now());
    let (got, message) = health(ROLLOUT, &rollout(&routed));
    assert_eq!(
        (got.as_str(), message.as_str()),
        ("Degraded", "RouteNotUpdated: forbidden")
    );
    let mut fought = in_phase(Phase::Succeeded, None);
    fought.target_scaled_up = Some(TargetScaledUp {
        manager: "argocd-controller".into(),
        replicas: 3,
        last_seen: now(),
    });
    set_conditions(&mut fought, None, Some(1), &now());
    let (got, message) = health(ROLLOUT, &rollout(&fought));
    assert_eq!(got, "Degraded");
    assert!(message.contains("argocd-controller"), "{message}");
}

#[test]
fn a_spec_the_operator_has_not_seen_is_progressing() {
    let mut obj = rollout(&in_phase(Phase::Succeeded, None));
    obj["metadata"]["generation"] = 2.into();
    let (got, message) = health(ROLLOUT, &obj);
    assert_eq!(
        (got.as_str(), message.as_str()),
        (
            "Progressing",
            "Waiting for the operator to observe generation 2"
        )
    );
    for script in [ROLLOUT, SLO] {
        let (got, _) = health(script, &json!({"metadata": {"generation": 1}}));
        assert_eq!(got, "Progressing", "no status yet");
    }
}

fn policy(gate: Gate, ready: SloCondition) -> Value {
    let mut c = Vec::new();
    let evaluated = ready == SloCondition::Evaluated;
    conditions::set(
        &mut c,
        ConditionType::Ready,
        evaluated,
        ready.as_str(),
        "why",
        Some(3),
        &now(),
    );
    json!({"metadata": {"generation": 3}, "status": {
        "observedGeneration": 3, "gate": gate, "gateReason": "budget", "conditions": c,
    }})
}

#[test]
fn a_policy_is_degraded_only_when_not_evaluated() {
    for &gate in Gate::ALL {
        for &ready in SloCondition::ALL {
            // A Frozen gate is the policy at work: a Degraded policy would hold back the
            // Argo CD sync waves that ship the corrective fix.
            let want = if ready != SloCondition::Evaluated {
                "Degraded"
            } else {
                "Healthy"
            };
            let (got, message) = health(SLO, &policy(gate, ready));
            assert_eq!(got, want, "{gate} {ready}: {message}");
            let named = if ready == SloCondition::Evaluated {
                gate.as_str()
            } else {
                ready.as_str()
            };
            assert!(message.contains(named), "{gate} {ready}: {message}");
        }
    }
}

/// Every condition type, phase and gate the scripts compare with is one the operator uses.
#[test]
fn the_scripts_speak_the_operators_vocabulary() {
    let quoted = |script: &str, pattern: &str| -> Vec<String> {
        regex_lite::Regex::new(pattern)
            .unwrap()
            .captures_iter(script)
            .map(|c| c[1].to_string())
            .collect()
    };
    let types = [
        quoted(ROLLOUT, r#"condition\("(\w+)""#),
        quoted(SLO, r#"c\.type == "(\w+)""#),
    ];
    for t in types.concat() {
        ConditionType::from_str(&t).unwrap_or_else(|_| panic!("condition type {t} unknown"));
    }
    let phases = quoted(ROLLOUT, r#"phase == "(\w+)""#);
    assert_eq!(phases.len(), 2);
    for p in phases {
        Phase::from_str(&p).unwrap_or_else(|_| panic!("phase {p} unknown"));
    }
    for g in quoted(SLO, r#"gate == "(\w+)""#) {
        Gate::from_str(&g).unwrap_or_else(|_| panic!("gate {g} unknown"));
    }
}

/// Objects the operator wrote during the e2e stories (captured with
/// GUARDRAILS_CAPTURE_DIR), with the health Argo CD must show for each.
#[test]
fn statuses_from_the_stories() {
    let cases: &[(&str, &str)] = &[
        ("guardedrollout-initializing.json", "Progressing"),
        ("guardedrollout-progressing.json", "Progressing"),
        ("guardedrollout-manual-pause.json", "Suspended"),
        ("guardedrollout-spec-paused.json", "Suspended"),
        ("guardedrollout-blocked.json", "Suspended"),
        ("guardedrollout-idle.json", "Healthy"),
        ("guardedrollout-succeeded.json", "Healthy"),
        ("guardedrollout-rolledback.json", "Degraded"),
        ("guardedrollout-route-not-updated.json", "Degraded"),
        ("guardedrollout-target-conflict.json", "Degraded"),
        ("guardedrollout-invalid-spec.json", "Degraded"),
        ("guardedrollout-target-not-found.json", "Degraded"),
        ("guardedrollout-route-not-found.json", "Degraded"),
        ("slopolicy-open.json", "Healthy"),
        ("slopolicy-frozen.json", "Healthy"),
        ("slopolicy-prometheus-unavailable.json", "Degraded"),
        ("slopolicy-invalid-spec.json", "Degraded"),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/argocd");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        cases.len(),
        "every fixture in {} has a case",
        dir.display()
    );
    for (file, want) in cases {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let obj: Value = serde_json::from_str(&text).unwrap();
        let script = match obj["kind"].as_str() {
            Some("GuardedRollout") => ROLLOUT,
            Some("SloPolicy") => SLO,
            other => panic!("{file}: kind {other:?}"),
        };
        let (got, message) = health(script, &obj);
        assert_eq!(&got, want, "{file}: {message}");
    }
}

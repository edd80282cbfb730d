//! The CRDs against a real kube-apiserver: examples apply and read back unchanged,
//! invalid objects are rejected with an error that names the field.

mod common;

use std::process::Command;

use common::{cluster, example_files};
use guardrails::api::{GuardedRollout, SloPolicy};
use kube::{
    Api, Resource,
    api::{DynamicObject, PostParams},
    core::ApiResource,
};
use serde_json::{Value, json};

/// True when every field of `expected` is in `actual` with the same value (the server
/// may add defaults).
fn contains(actual: &Value, expected: &Value, path: &str) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e.iter().try_for_each(|(k, v)| {
            let sub = format!("{path}.{k}");
            contains(a.get(k).ok_or(format!("{sub} missing"))?, v, &sub)
        }),
        (Value::Array(a), Value::Array(e)) if a.len() == e.len() => a
            .iter()
            .zip(e)
            .enumerate()
            .try_for_each(|(i, (a, e))| contains(a, e, &format!("{path}[{i}]"))),
        (Value::Number(a), Value::Number(e)) if a.as_f64() == e.as_f64() => Ok(()),
        (a, e) if a == e => Ok(()),
        (a, e) => Err(format!("{path}: expected {e}, read back {a}")),
    }
}

#[tokio::test]
async fn examples_apply_with_kubectl_and_read_back_unchanged() {
    let (cp, client, ns) = cluster("examples").await;
    let files = example_files();
    assert_eq!(
        files.len(),
        6,
        "a SloPolicy and a GuardedRollout for each of the three services"
    );
    for file in files {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(cp.kubeconfig())
            .args(["apply", "-n", &ns, "-f"])
            .arg(&file)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl apply {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let expected: Value = serde_yaml::from_str(&text).unwrap();
        let name = expected["metadata"]["name"].as_str().unwrap();
        let kind = expected["kind"].as_str().unwrap();
        let (read_back, typed_equal) = match kind {
            "SloPolicy" => {
                read_back::<SloPolicy>(&client, &ns, name, &text, |got, want| {
                    want.spec.validate()?;
                    Ok(got.spec == want.spec)
                })
                .await
            }
            "GuardedRollout" => {
                read_back::<GuardedRollout>(&client, &ns, name, &text, |got, want| {
                    want.spec.validate()?;
                    Ok(got.spec == want.spec)
                })
                .await
            }
            other => panic!("unexpected kind {other} in {}", file.display()),
        };
        contains(&read_back["spec"], &expected["spec"], "spec")
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // The server's defaults (from the CRD) equal the operator's defaults (serde).
        assert!(
            typed_equal,
            "{}: defaults differ between CRD and types",
            file.display()
        );
    }
}

/// The object as the server stored it, and `same`'s verdict on it against the file's
/// object (which must validate).
async fn read_back<K>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    text: &str,
    same: fn(&K, &K) -> Result<bool, guardrails::api::validate::ValidationErrors>,
) -> (Value, bool)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
    K::DynamicType: Default,
{
    let got = Api::<K>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let want: K = serde_yaml::from_str(text).unwrap();
    let equal = same(&got, &want).unwrap_or_else(|e| panic!("{name}: {e}"));
    (serde_json::to_value(&got).unwrap(), equal)
}

/// Which layer must reject an invalid object.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    /// The structural schema: every apiserver rejects it.
    Schema,
    /// A CEL rule in the CRD (apiservers with CEL) and `validate()` (all of them).
    Cel,
    /// Only the operator's `validate()` (e.g. PromQL that does not parse).
    Operator,
}

struct Case {
    what: &'static str,
    kind: &'static str,
    spec: Value,
    field: &'static str,
    layer: Layer,
}

fn slo_spec() -> Value {
    json!({
        "objectives": [{
            "name": "availability", "target": 99.9,
            "indicator": {"ratio": {"errors": "http_requests_total{code=~\"5..\"}", "total": "http_requests_total"}}
        }]
    })
}

fn rollout_spec() -> Value {
    json!({
        "targetRef": {"name": "share-link"},
        "steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}],
        "analysis": {"checks": [{"name": "error-rate", "query": "sum(rate(errors_total[{{interval}}]))", "max": 0.01}]}
    })
}

fn with(mut base: Value, pointer: &str, value: Value) -> Value {
    *base
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = value;
    base
}

fn cases() -> Vec<Case> {
    use Layer::*;
    let slo = |what, pointer, value, field, layer| Case {
        what,
        kind: "SloPolicy",
        spec: with(slo_spec(), pointer, value),
        field,
        layer,
    };
    let gr = |what, pointer, value, field, layer| Case {
        what,
        kind: "GuardedRollout",
        spec: with(rollout_spec(), pointer, value),
        field,
        layer,
    };
    let mut missing_target = rollout_spec();
    missing_target.as_object_mut().unwrap().remove("targetRef");
    let mut both_windows = slo_spec();
    both_windows["budgetPolicy"] = json!({"restrictAt": 80, "freezeAt": 60});
    let mut dup = slo_spec();
    let first = dup["objectives"][0].clone();
    dup["objectives"].as_array_mut().unwrap().push(first);
    let mut bad_enum = rollout_spec();
    bad_enum["changeClass"] = json!("urgent");
    let mut bad_unknown = slo_spec();
    bad_unknown["budgetPolicy"] = json!({"whenUnknown": "Closed"});
    let mut bad_severity = slo_spec();
    bad_severity["alerting"] = json!({"burnRateTiers": [{"severity": "sms", "longWindow": "1h", "shortWindow": "5m", "burnRate": 14.4}]});
    vec![
        slo(
            "target 100",
            "/objectives/0/target",
            json!(100),
            "spec.objectives[0].target",
            Schema,
        ),
        slo(
            "no objectives",
            "/objectives",
            json!([]),
            "spec.objectives",
            Schema,
        ),
        slo(
            "window `5 minutes`",
            "/objectives/0/name",
            json!("availability"),
            "spec.window",
            Schema,
        )
        .tap(|c| c.spec["window"] = json!("5 minutes")),
        Case {
            what: "whenUnknown Closed",
            kind: "SloPolicy",
            spec: bad_unknown,
            field: "spec.budgetPolicy.whenUnknown",
            layer: Schema,
        },
        Case {
            what: "severity sms",
            kind: "SloPolicy",
            spec: bad_severity,
            field: "spec.alerting.burnRateTiers[0].severity",
            layer: Schema,
        },
        slo(
            "objective name with capitals",
            "/objectives/0/name",
            json!("Availability"),
            "spec.objectives[0].name",
            Schema,
        ),
        Case {
            what: "duplicate objective names",
            kind: "SloPolicy",
            spec: dup,
            field: "spec.objectives[1]",
            layer: Schema,
        },
        Case {
            what: "changeClass urgent",
            kind: "GuardedRollout",
            spec: bad_enum,
            field: "spec.changeClass",
            layer: Schema,
        },
        gr(
            "weight 150",
            "/steps/0/setWeight",
            json!(150),
            "spec.steps[0].setWeight",
            Schema,
        ),
        Case {
            what: "no targetRef",
            kind: "GuardedRollout",
            spec: missing_target,
            field: "spec.targetRef",
            layer: Schema,
        },
        gr("no steps", "/steps", json!([]), "spec.steps", Schema),
        gr(
            "pause `soon`",
            "/steps/1/pause/duration",
            json!("soon"),
            "spec.steps[1].pause.duration",
            Schema,
        ),
        gr(
            "failureLimit 0",
            "/analysis/checks/0/max",
            json!(0.01),
            "spec.analysis.failureLimit",
            Schema,
        )
        .tap(|c| c.spec["analysis"]["failureLimit"] = json!(0)),
        Case {
            what: "freezeAt below restrictAt",
            kind: "SloPolicy",
            spec: both_windows,
            field: "spec.budgetPolicy.freezeAt",
            layer: Cel,
        },
        gr(
            "two kinds in one step",
            "/steps/0",
            json!({"setWeight": 10, "pause": {}}),
            "spec.steps[0]",
            Cel,
        ),
        gr(
            "min above max",
            "/analysis/checks/0/max",
            json!(0.01),
            "spec.analysis.checks[0].min",
            Cel,
        )
        .tap(|c| c.spec["analysis"]["checks"][0]["min"] = json!(0.5)),
        gr(
            "query and compare in one check",
            "/analysis/checks/0/max",
            json!(0.01),
            "spec.analysis.checks[0]",
            Cel,
        )
        .tap(|c| {
            c.spec["analysis"]["checks"][0]["compare"] =
                json!({"query": "up{pod=~\"{{pods}}\"}", "maxIncrease": 10})
        }),
        gr(
            "sequential detect not above tolerate",
            "/analysis/checks/0/max",
            json!(0.01),
            "spec.analysis.checks[0].sequential",
            Cel,
        )
        .tap(|c| {
            let check = &mut c.spec["analysis"]["checks"][0];
            *check = json!({"name": check["name"].clone(),
                "sequential": {"objective": "availability", "tolerate": 2, "detect": 1.5}});
        }),
        slo(
            "selector is a query",
            "/objectives/0/indicator/ratio/errors",
            json!("sum(rate(x[5m]))"),
            "spec.objectives[0].indicator.ratio.errors",
            Operator,
        ),
        gr(
            "weights going down",
            "/steps/2/setWeight",
            json!(5),
            "spec.steps[2].setWeight",
            Operator,
        ),
        gr(
            "query does not parse",
            "/analysis/checks/0/query",
            json!("sum(rate(x[{{interval}}])"),
            "spec.analysis.checks[0].query",
            Operator,
        ),
    ]
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for Case {}

/// `spec.steps[0].setWeight` -> `spec.steps.setWeight`
fn without_indices(field: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "SloPolicy" => ApiResource::erase::<SloPolicy>(&()),
        _ => ApiResource::erase::<GuardedRollout>(&()),
    }
}

/// Runs the operator's checks on an object the apiserver accepted: CEL rules of the CRD
/// evaluated client-side, and validate(). Returns (CEL rejected, validate() message).
fn operator_verdict(kind: &str, object: &DynamicObject) -> (bool, String) {
    let value = serde_json::to_value(object).unwrap();
    let message = |r: Result<(), guardrails::api::validate::ValidationErrors>| {
        r.map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    };
    match kind {
        "SloPolicy" => {
            let typed: SloPolicy = serde_json::from_value(value).unwrap();
            let cel = kube::core::cel::validate_cel(&typed).is_err();
            (cel, message(typed.spec.validate()))
        }
        _ => {
            let typed: GuardedRollout = serde_json::from_value(value).unwrap();
            let cel = kube::core::cel::validate_cel(&typed).is_err();
            (cel, message(typed.spec.validate()))
        }
    }
}

#[tokio::test]
async fn invalid_objects_are_rejected_naming_the_field() {
    let (_cp, client, ns) = cluster("invalid").await;
    let cases = cases();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let ar = api_resource(case.kind);
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar);
        let mut obj = DynamicObject::new(&format!("case-{i}"), &ar);
        obj.data = json!({"spec": case.spec});
        let created = api.create(&PostParams::default(), &obj).await;
        let problem = match (case.layer, created) {
            (Layer::Schema, Err(kube::Error::Api(status))) if status.code == 422 => {
                // kube-apiserver 1.20 leaves list indices out of field paths; newer ones keep them.
                let named = status.message.contains(case.field)
                    || status.message.contains(&without_indices(case.field));
                (!named).then(|| format!("error does not name {}: {}", case.field, status.message))
            }
            (Layer::Schema, other) => {
                Some(format!("expected a 422 from the apiserver, got {other:?}"))
            }
            (layer, Ok(stored)) => {
                let (cel_rejects, message) = operator_verdict(case.kind, &stored);
                if !message.contains(case.field) {
                    Some(format!(
                        "validate() does not name {}: {message:?}",
                        case.field
                    ))
                } else if cel_rejects != (layer == Layer::Cel) {
                    Some(format!(
                        "CEL rules rejected it: {cel_rejects}, expected {}",
                        layer == Layer::Cel
                    ))
                } else {
                    None
                }
            }
            (_, Err(e)) => Some(format!(
                "apiserver rejected an object only the operator should: {e}"
            )),
        };
        if let Some(p) = problem {
            failures.push(format!("{} ({:?}): {p}", case.what, case.layer));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn status_is_a_subresource() {
    let (_cp, client, ns) = cluster("status").await;
    let api = Api::<SloPolicy>::namespaced(client.clone(), &ns);
    let slo: SloPolicy = serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "SloPolicy",
        "metadata": {"name": "s"}, "spec": slo_spec(),
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &slo).await.unwrap();
    // Status written through the main resource is ignored...
    let mut with_status = created.clone();
    with_status.status = Some(guardrails::api::SloPolicyStatus {
        gate_reason: Some("x".into()),
        ..Default::default()
    });
    let replaced = api
        .replace("s", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(replaced.status.is_none());
    // ...and accepted through /status by server-side apply.
    let patch = json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "SloPolicy",
        "status": {"gate": "Frozen", "gateReason": "availability consumed 120% of its budget", "errorBudgetRemaining": -20.0}
    });
    let pp = kube::api::PatchParams::apply("guardrails-test").force();
    let patched = api
        .patch_status("s", &pp, &kube::api::Patch::Apply(patch))
        .await
        .unwrap();
    let status = patched.status.clone().unwrap();
    assert_eq!(status.gate, Some(guardrails::api::Gate::Frozen));
    assert_eq!(status.error_budget_remaining, Some(-20.0));
    // Writing status does not bump the generation.
    assert_eq!(patched.meta().generation, replaced.meta().generation);
}

#[tokio::test]
async fn a_status_decided_on_a_stale_read_never_lands() {
    use guardrails::{
        api::{GuardedRolloutStatus, Phase},
        controller::{Context, write_status},
        telemetry::Metrics,
    };
    let (_cp, client, ns) = cluster("stale-status").await;
    let api = Api::<GuardedRollout>::namespaced(client.clone(), &ns);
    let gr: GuardedRollout = serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": "app"},
        "spec": {"targetRef": {"name": "app"}, "steps": [{"setWeight": 50}]}
    }))
    .unwrap();
    let read = api.create(&PostParams::default(), &gr).await.unwrap();
    let ctx = Context::new(client.clone(), None, Metrics::default());
    let phase = |p| GuardedRolloutStatus {
        phase: Some(p),
        ..Default::default()
    };
    // One writer decides a rollback on what it read...
    let rolled_back = GuardedRolloutStatus {
        message: Some("rolled back".into()),
        ..phase(Phase::RolledBack)
    };
    let written = write_status(&ctx, &read, &rolled_back).await.unwrap();
    // ...another, still holding the older read, decides Progressing: refused.
    let stale = write_status(&ctx, &read, &phase(Phase::Progressing)).await;
    assert!(
        stale.as_ref().is_err_and(|e| e.is_conflict()),
        "{:?}",
        stale.map(|_| ())
    );
    let now = api.get("app").await.unwrap();
    assert_eq!(now.status.unwrap().phase, Some(Phase::RolledBack));
    // Decided again on the latest, it lands.
    write_status(&ctx, &written, &phase(Phase::Progressing))
        .await
        .unwrap();
    // The status is replaced whole: the message it leaves out is gone.
    let status = api.get("app").await.unwrap().status.unwrap();
    assert_eq!(
        (status.phase, status.message),
        (Some(Phase::Progressing), None)
    );
}

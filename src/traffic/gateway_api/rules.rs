//! An HTTPRoute's rules with our weights (pure): only rules that send to the target are
//! ours; every other rule stays exactly as its owner wrote it.

use serde_json::{Value, json};

use crate::api::Role;

/// backendRefs sending `canary_weight` percent to the canary Service.
pub fn backend_refs(target: &str, port: i32, canary_weight: i32) -> Value {
    let w = canary_weight.clamp(0, 100);
    json!([
        {"group": "", "kind": "Service", "name": Role::Primary.name(target), "port": port, "weight": 100 - w},
        {"group": "", "kind": "Service", "name": Role::Canary.name(target), "port": port, "weight": w},
    ])
}

/// Whether a rule sends traffic to the target: its backendRefs name the target's
/// Service (`service`) or our `<target>-primary`/`<target>-canary`. Rules for other
/// Services, and redirect-only rules without backendRefs, are not ours.
pub fn is_ours(rule: &Value, service: &str, target: &str) -> bool {
    let ours = [
        service.to_string(),
        Role::Primary.name(target),
        Role::Canary.name(target),
    ];
    rule["backendRefs"].as_array().is_some_and(|refs| {
        !refs.is_empty()
            && refs.iter().all(|r| {
                let core = r["kind"].as_str().is_none_or(|k| k == "Service")
                    && r["group"].as_str().is_none_or(|g| g.is_empty());
                core && r["name"]
                    .as_str()
                    .is_some_and(|n| ours.iter().any(|o| o == n))
            })
    })
}

/// `rules` (an HTTPRoute's spec.rules) with the backendRefs of our rules set to `refs`;
/// every other rule, and the matches and filters of ours, stay as they are.
pub fn with_backends(rules: &Value, refs: &Value, service: &str, target: &str) -> Value {
    let mut rules = rules.clone();
    if let Some(list) = rules.as_array_mut() {
        for rule in list.iter_mut().filter(|r| is_ours(r, service, target)) {
            if let Some(obj) = rule.as_object_mut() {
                obj.insert("backendRefs".into(), refs.clone());
            }
        }
    }
    rules
}

/// The backendRefs of every rule, to restore ours later.
pub fn current_backends(rules: &Value) -> Value {
    Value::Array(
        rules
            .as_array()
            .map(|l| l.iter().map(|r| r["backendRefs"].clone()).collect())
            .unwrap_or_default(),
    )
}

/// `rules` with our rules' backendRefs put back from `saved` (as `current_backends`
/// recorded them); rules that are not ours stay as they are now.
pub fn restore_backends(rules: &Value, saved: &Value, service: &str, target: &str) -> Value {
    let mut rules = rules.clone();
    if let (Some(list), Some(saved)) = (rules.as_array_mut(), saved.as_array()) {
        for (rule, refs) in list.iter_mut().zip(saved) {
            if !is_ours(rule, service, target) {
                continue;
            }
            if let Some(obj) = rule.as_object_mut() {
                if refs.is_null() {
                    obj.remove("backendRefs");
                } else {
                    obj.insert("backendRefs".into(), refs.clone());
                }
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> Value {
        json!({"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
            "filters": [{"type": "RequestRedirect",
            "requestRedirect": {"scheme": "https", "statusCode": 301}}]})
    }

    /// Rule shapes and whether each is ours to weight for target "web" (Service "web").
    fn shapes() -> Vec<(&'static str, Value, bool)> {
        vec![
            ("redirect", redirect(), false),
            (
                "header filter only",
                json!({"filters": [{"type": "RequestHeaderModifier"}]}),
                false,
            ),
            ("empty backendRefs", json!({"backendRefs": []}), false),
            (
                "another Service",
                json!({"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                "backendRefs": [{"name": "admin", "port": 80}]}),
                false,
            ),
            (
                "ours",
                json!({"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "1"}]}}],
                "backendRefs": [{"name": "web", "port": 8080}]}),
                true,
            ),
            (
                "ours, explicit core kind",
                json!({"backendRefs": [{"group": "", "kind": "Service", "name": "web", "port": 8080}]}),
                true,
            ),
            (
                "ours, already weighted",
                json!({"backendRefs": backend_refs("web", 8080, 25)}),
                true,
            ),
            (
                "mixed with another Service",
                json!({"backendRefs": [{"name": "web", "port": 8080}, {"name": "admin", "port": 80}]}),
                false,
            ),
            (
                "another kind",
                json!({"backendRefs": [{"name": "web", "kind": "ServiceImport",
                "group": "multicluster.x-k8s.io", "port": 8080}]}),
                false,
            ),
            (
                "another group",
                json!({"backendRefs": [{"name": "web", "group": "x.io", "kind": "Service", "port": 8080}]}),
                false,
            ),
        ]
    }

    #[test]
    fn only_rules_that_send_to_the_target_alone_are_weighted() {
        let refs = backend_refs("web", 8080, 10);
        for (what, rule, ours) in shapes() {
            assert_eq!(is_ours(&rule, "web", "web"), ours, "{what}");
            let rules = json!([rule.clone()]);
            let routed = with_backends(&rules, &refs, "web", "web");
            if ours {
                assert_eq!(routed[0]["backendRefs"], refs, "{what}");
                let mut rest = routed[0].clone();
                rest.as_object_mut().unwrap().remove("backendRefs");
                let mut before = rule.clone();
                before.as_object_mut().unwrap().remove("backendRefs");
                assert_eq!(rest, before, "{what}: matches and filters kept");
            } else {
                assert_eq!(routed, rules, "{what}: untouched");
            }
        }
    }

    #[test]
    fn every_shape_together_is_weighted_and_restored_exactly() {
        let rules = Value::Array(shapes().into_iter().map(|s| s.1).collect());
        let saved = current_backends(&rules);
        let mut routed = rules.clone();
        for w in [5, 25, 50, 0, 100] {
            routed = with_backends(&routed, &backend_refs("web", 8080, w), "web", "web");
            for (i, (what, rule, ours)) in shapes().into_iter().enumerate() {
                if ours {
                    assert_eq!(routed[i]["backendRefs"][1]["weight"], w, "{what}");
                } else {
                    assert_eq!(routed[i], rule, "{what} at weight {w}");
                }
            }
        }
        assert_eq!(restore_backends(&routed, &saved, "web", "web"), rules);
        assert_eq!(
            routed.as_array().unwrap().len(),
            rules.as_array().unwrap().len()
        );
    }

    #[test]
    fn backends_split_the_weight_and_name_our_services() {
        let refs = backend_refs("share-link", 8080, 25);
        assert_eq!(refs[0]["weight"], 75);
        assert_eq!(refs[0]["name"], "share-link-primary");
        assert_eq!(refs[1]["name"], "share-link-canary");
        assert_eq!(backend_refs("a", 80, 140)[1]["weight"], 100);
        assert_eq!(backend_refs("a", 80, -3)[1]["weight"], 0);
    }

    #[test]
    fn a_custom_service_name_is_what_makes_a_rule_ours() {
        let svc = json!({"backendRefs": [{"name": "web-svc", "port": 80}]});
        assert!(is_ours(&svc, "web-svc", "web"));
        assert!(!is_ours(&svc, "web", "web"));
        // Once weighted, the rule names our Services, whatever the user's Service is.
        let routed = with_backends(&json!([svc]), &backend_refs("web", 80, 5), "web-svc", "web");
        assert!(is_ours(&routed[0], "web-svc", "web"));
    }
}

//! How canary traffic is split: by replica ratio through the user's Service, or by the
//! backend weights of a Gateway API HTTPRoute. Pure: sizes, weights and the objects to
//! write; the controller does the IO.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Service, ServicePort, ServiceSpec},
    },
    apimachinery::pkg::{apis::meta::v1::OwnerReference, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use crate::{
    api::{GatewayApiRouting, GuardedRolloutSpec, LABEL_ROLE, LABEL_ROLLOUT},
    rollout::{steps, workloads::Role},
};

/// Annotation on the HTTPRoute holding its rules' backendRefs from before adoption,
/// restored when the GuardedRollout is deleted.
pub const ANNOTATION_ORIGINAL_BACKENDS: &str = "guardrails.dev/original-backend-refs";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Router<'a> {
    /// Canary replicas next to a full primary; the user's Service selects both.
    ReplicaRatio,
    /// Weighted backendRefs of an HTTPRoute to `<target>-primary` / `<target>-canary`
    /// Services.
    GatewayApi(&'a GatewayApiRouting),
}

pub fn router(spec: &GuardedRolloutSpec) -> Router<'_> {
    match &spec.traffic_routing.gateway_api {
        Some(gw) => Router::GatewayApi(gw),
        None => Router::ReplicaRatio,
    }
}

/// Canary replicas for weight `w`. With a route the weight is set by the route, so the
/// canary only needs its share of the primary's capacity (at least one pod).
pub fn canary_replicas(router: Router<'_>, primary: i32, weight: i32) -> i32 {
    match router {
        Router::ReplicaRatio => steps::canary_replicas(primary, weight),
        Router::GatewayApi(_) if weight <= 0 || primary <= 0 => 0,
        Router::GatewayApi(_) => {
            let (p, w) = (i64::from(primary), i64::from(weight.min(100)));
            (((p * w + 99) / 100) as i32).max(1)
        }
    }
}

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

/// The Service in front of one role's pods: the target's selector plus the role label.
pub fn service(
    role: Role,
    target: &Deployment,
    rollout: &str,
    owner: OwnerReference,
    port: i32,
) -> Service {
    let target_name = target.metadata.name.clone().unwrap_or_default();
    let mut selector: BTreeMap<String, String> = target
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    selector.insert(LABEL_ROLE.into(), role.as_str().into());
    Service {
        metadata: ObjectMeta {
            name: Some(role.name(&target_name)),
            namespace: target.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (LABEL_ROLE.to_string(), role.as_str().to_string()),
                (LABEL_ROLLOUT.to_string(), rollout.to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                // Part of the key of the ports list: server-side apply needs it.
                protocol: Some("TCP".into()),
                port,
                target_port: Some(IntOrString::Int(port)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> GatewayApiRouting {
        GatewayApiRouting {
            http_route: "r".into(),
            port: 8080,
            service: None,
        }
    }

    #[test]
    fn route_weighted_canaries_get_their_share_of_capacity() {
        let g = gw();
        let r = Router::GatewayApi(&g);
        assert_eq!(canary_replicas(r, 4, 0), 0);
        assert_eq!(canary_replicas(r, 4, 5), 1, "at least one pod");
        assert_eq!(canary_replicas(r, 4, 25), 1);
        assert_eq!(canary_replicas(r, 4, 50), 2);
        assert_eq!(canary_replicas(r, 4, 100), 4);
        assert_eq!(canary_replicas(Router::ReplicaRatio, 4, 50), 4);
    }

    #[test]
    fn backends_are_replaced_per_rule_and_restored() {
        let rules = json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/s"}}],
             "backendRefs": [{"name": "share-link", "port": 8080}]},
            {"filters": [{"type": "RequestHeaderModifier"}]}
        ]);
        let refs = backend_refs("share-link", 8080, 25);
        assert_eq!(refs[0]["weight"], 75);
        assert_eq!(refs[1]["name"], "share-link-canary");
        let saved = current_backends(&rules);
        let routed = with_backends(&rules, &refs, "share-link", "share-link");
        assert_eq!(routed[0]["matches"], rules[0]["matches"]);
        assert_eq!(routed[0]["backendRefs"], refs);
        assert_eq!(routed[1], rules[1], "a rule without backends is not ours");
        assert_eq!(
            restore_backends(&routed, &saved, "share-link", "share-link"),
            rules
        );
    }

    #[test]
    fn only_rules_that_send_to_the_target_are_weighted() {
        let redirect = json!({"filters": [{"type": "RequestRedirect",
            "requestRedirect": {"scheme": "https", "statusCode": 301}}]});
        let admin = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
            "backendRefs": [{"name": "admin", "port": 80}]});
        let ours = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "web", "port": 8080}]});
        let mixed =
            json!({"backendRefs": [{"name": "web", "port": 8080}, {"name": "admin", "port": 80}]});
        let other_kind = json!({"backendRefs": [{"name": "web", "kind": "ServiceImport",
            "group": "multicluster.x-k8s.io", "port": 8080}]});
        let rules = json!([redirect, admin, ours, mixed, other_kind]);
        let refs = backend_refs("web", 8080, 10);
        let routed = with_backends(&rules, &refs, "web", "web");
        assert_eq!(routed[0], rules[0], "a redirect never gets backendRefs");
        assert_eq!(routed[1], rules[1], "another Service's rule stays");
        assert_eq!(routed[2]["backendRefs"], refs);
        assert_eq!(routed[2]["matches"], rules[2]["matches"]);
        assert_eq!(
            routed[3], rules[3],
            "a rule shared with another Service stays"
        );
        assert_eq!(routed[4], rules[4], "another kind stays");
        // Moving the weight again finds our rule by our Services' names.
        let again = with_backends(&routed, &backend_refs("web", 8080, 50), "web", "web");
        assert_eq!(again[2]["backendRefs"][1]["weight"], 50);
        let saved = current_backends(&rules);
        assert_eq!(restore_backends(&again, &saved, "web", "web"), rules);
        // A custom Service name.
        let svc = json!([{"backendRefs": [{"name": "web-svc", "port": 80}]}]);
        assert!(is_ours(&svc[0], "web-svc", "web"));
        assert!(!is_ours(&svc[0], "web", "web"));
    }
}

//! The `<target>-primary` / `<target>-canary` Services (pure): the target's selector plus
//! the role label, with the ports of the Service the route sent to.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Service, ServicePort, ServiceSpec},
    },
    apimachinery::pkg::{apis::meta::v1::OwnerReference, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;

use crate::api::{LABEL_ROLE, LABEL_ROLLOUT, Role};

/// The ports of the user's Service (names, numbers, targetPorts, protocols, appProtocols),
/// or, without one, `port` to the same container port.
pub fn ports(user: Option<&Service>, port: i32) -> Vec<ServicePort> {
    let copied: Vec<ServicePort> = user
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePort {
            name: p.name,
            // Part of the key of the ports list: server-side apply needs it.
            protocol: Some(p.protocol.unwrap_or_else(|| "TCP".into())),
            port: p.port,
            target_port: Some(p.target_port.unwrap_or(IntOrString::Int(p.port))),
            app_protocol: p.app_protocol,
            node_port: None,
        })
        .collect();
    if !copied.is_empty() {
        return copied;
    }
    vec![ServicePort {
        name: Some("http".into()),
        protocol: Some("TCP".into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    }]
}

/// The Service in front of one role's pods.
pub fn service(
    role: Role,
    target: &Deployment,
    rollout: &str,
    owner: Option<OwnerReference>,
    ports: Vec<ServicePort>,
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
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

/// Whether `current` already selects and exposes what `desired` does.
pub fn up_to_date(current: &Service, desired: &Service) -> bool {
    let (c, d) = (
        current.spec.clone().unwrap_or_default(),
        desired.spec.clone().unwrap_or_default(),
    );
    let key = |p: &ServicePort| {
        (
            p.name.clone(),
            p.port,
            p.target_port.clone(),
            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            p.app_protocol.clone(),
        )
    };
    let keys =
        |ports: &Option<Vec<ServicePort>>| -> Vec<_> { ports.iter().flatten().map(key).collect() };
    c.selector == d.selector
        && keys(&c.ports) == keys(&d.ports)
        && current.metadata.owner_references == desired.metadata.owner_references
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user_service(ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": ports}}))
        .unwrap()
    }

    #[test]
    fn ports_are_copied_from_the_users_service() {
        let user = user_service(json!([
            {"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"},
            {"name": "grpc", "port": 9090, "targetPort": 9091, "protocol": "TCP"},
            {"name": "metrics", "port": 9102, "protocol": "UDP", "nodePort": 30001},
        ]));
        let p = ports(Some(&user), 8080);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].name.as_deref(), Some("http"));
        assert_eq!(p[0].port, 80);
        assert_eq!(p[0].target_port, Some(IntOrString::String("http".into())));
        assert_eq!(
            p[0].protocol.as_deref(),
            Some("TCP"),
            "the default, explicit"
        );
        assert_eq!(p[0].app_protocol.as_deref(), Some("http"));
        assert_eq!(p[1].target_port, Some(IntOrString::Int(9091)));
        assert_eq!(p[2].protocol.as_deref(), Some("UDP"));
        assert_eq!(
            p[2].target_port,
            Some(IntOrString::Int(9102)),
            "defaults to port"
        );
        assert_eq!(
            p[2].node_port, None,
            "ClusterIP Services have no node ports"
        );
    }

    #[test]
    fn without_a_users_service_the_routed_port_is_used() {
        let p = ports(None, 8080);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].port, p[0].target_port.clone()),
            (8080, Some(IntOrString::Int(8080)))
        );
        assert_eq!(ports(Some(&user_service(json!([]))), 81)[0].port, 81);
    }

    #[test]
    fn a_changed_port_makes_the_service_out_of_date() {
        let target: Deployment =
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "n"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}}}))
            .unwrap();
        let owner = Some(OwnerReference::default());
        let user = user_service(json!([{"name": "http", "port": 80, "targetPort": 8080}]));
        let desired = service(
            Role::Canary,
            &target,
            "web",
            owner.clone(),
            ports(Some(&user), 80),
        );
        assert_eq!(desired.metadata.name.as_deref(), Some("web-canary"));
        let selector = desired.spec.as_ref().unwrap().selector.clone().unwrap();
        assert_eq!(selector.get(LABEL_ROLE).map(String::as_str), Some("canary"));
        assert_eq!(selector.get("app").map(String::as_str), Some("web"));
        assert!(up_to_date(&desired, &desired));
        let moved = user_service(json!([{"name": "http", "port": 80, "targetPort": 8081}]));
        let next = service(Role::Canary, &target, "web", owner, ports(Some(&moved), 80));
        assert!(!up_to_date(&desired, &next));
    }
}

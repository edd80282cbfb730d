//! Gateway API routing end to end: real apiserver + etcd with an HTTPRoute CRD, Prometheus
//! scraping the realistic simulator, the operator's controllers. Every route and canary
//! change is recorded from watches, so the order of writes is checked, not sampled.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{cluster, env::*, wait_for};
use futures::StreamExt;
use guardrails::{
    api::{GatewayApiRouting, GuardedRollout, Phase},
    conditions::{self, ConditionType},
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

/// The HTTPRoute CRD (v1) on the shared control plane, once for all stories.
async fn install_routes(client: &Client) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let cp = guardrails_sandbox::ControlPlane::shared(&guardrails::api::crds()).unwrap();
            cp.install_crds(
                client,
                &[guardrails_sandbox::gateway::httproute_crd(&["v1"])],
            )
            .await
            .unwrap();
        })
        .await;
}

fn routes(client: &Client, ns: &str, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", version, "HTTPRoute");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "httproutes"),
    )
}

/// Ours (to the `app` Service), another Service's, and a redirect.
fn three_rules() -> Value {
    json!([
        {"matches": [{"path": {"type": "PathPrefix", "value": "/s/"}}],
         "backendRefs": [{"name": "app", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
         "backendRefs": [{"name": "admin", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
         "filters": [{"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/s/"}, "statusCode": 301}}]}
    ])
}

async fn create_route(api: &Api<DynamicObject>, version: &str, rules: &Value) {
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("gateway.networking.k8s.io/{version}"), "kind": "HTTPRoute",
        "metadata": {"name": "app"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": rules}
    }))
    .unwrap();
    api.create(&PostParams::default(), &route).await.unwrap();
}

/// The user's `app` Service: two named ports, one to a named container port.
async fn create_service(client: &Client, ns: &str) -> Service {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"selector": {"app": "app"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "metrics", "port": 9102, "targetPort": 9102, "protocol": "TCP"}
        ]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap()
}

fn gateway_rollout(steps: Value) -> GuardedRollout {
    let mut gr = rollout_with(steps, json!([error_rate_check()]));
    gr.spec.traffic_routing.gateway_api = Some(GatewayApiRouting {
        http_route: "app".into(),
        port: 80,
        service: None,
    });
    gr
}

/// (primary, canary) weights of the first rule; (-1, -1) when it has no weights.
fn weights(rules: &Value) -> (i64, i64) {
    let refs = &rules[0]["backendRefs"];
    (
        refs[0]["weight"].as_i64().unwrap_or(-1),
        refs[1]["weight"].as_i64().unwrap_or(-1),
    )
}

/// A change seen by a watch, with the resourceVersion it was written at (one etcd: the
/// versions of all objects share one order).
#[derive(Debug, Clone)]
enum Seen {
    Route(u64, Value),
    Canary(u64, i32),
}

impl Seen {
    fn rv(&self) -> u64 {
        match self {
            Seen::Route(rv, _) | Seen::Canary(rv, _) => *rv,
        }
    }
}

/// Records every version of the `app` route and the `app-canary` Deployment's size.
fn record(client: &Client, ns: &str, routes: Api<DynamicObject>) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rv = |o: &kube::api::ObjectMeta| {
        o.resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let log = seen.clone();
    tokio::spawn(async move {
        let mut s = watcher(routes, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(r)) = s.next().await {
            let at = rv(&r.metadata);
            log.lock()
                .unwrap()
                .push(Seen::Route(at, r.data["spec"]["rules"].clone()));
        }
    });
    let log = seen.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let cfg = watcher::Config::default().fields("metadata.name=app-canary");
        let mut s = watcher(deployments, cfg).applied_objects().boxed();
        while let Some(Ok(d)) = s.next().await {
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            log.lock()
                .unwrap()
                .push(Seen::Canary(rv(&d.metadata), replicas));
        }
    });
    seen
}

fn route_weights(seen: &[Seen], after: u64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for s in seen.iter().filter(|s| s.rv() > after) {
        if let Seen::Route(_, rules) = s
            && out.last() != Some(&weights(rules))
        {
            out.push(weights(rules));
        }
    }
    out
}

async fn route_at(api: &Api<DynamicObject>, want: (i64, i64), secs: u64) {
    wait_for(api, "app", secs, &format!("route weights {want:?}"), |r| {
        weights(&r.data["spec"]["rules"]) == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_walk_up_other_rules_stay_and_a_bad_canary_leaves_traffic_first() {
    // With only the documented rights: Services and HTTPRoutes are in deploy/rbac.yaml.
    let env = env_with("gw-walk", true).await;
    install_routes(&env.client).await;
    let routes = routes(&env.client, &env.ns, "v1");
    let user_svc = create_service(&env.client, &env.ns).await;
    let original = three_rules();
    let seen = record(&env.client, &env.ns, routes.clone());
    let steps = json!([{"setWeight": 5}, {"pause": {"duration": "2s"}}, {"setWeight": 25},
        {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}]);

    // The rollout exists before its route: reported, then picked up once it appears.
    env.deployments()
        .create(&PostParams::default(), &target("app:1", 0.0))
        .await
        .unwrap();
    env.rollouts()
        .create(&PostParams::default(), &gateway_rollout(steps))
        .await
        .unwrap();
    env.wait_stalled("app", "RouteNotFound").await;
    create_route(&routes, "v1", &original).await;
    env.wait_phase("app", Phase::Idle, 40).await;

    env.ship("app:2", 0.0).await;
    env.wait_phase("app", Phase::Succeeded, 90).await;
    route_at(&routes, (100, 0), 10).await;
    let walk = route_weights(&seen.lock().unwrap(), 0);
    assert_eq!(
        walk,
        vec![(-1, -1), (100, 0), (95, 5), (75, 25), (50, 50), (100, 0)],
        "adopted, then 5/25/50 without going back to 0, then promoted"
    );
    // The managed Services expose what the user's Service does.
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    for name in ["app-primary", "app-canary"] {
        let svc = services.get(name).await.unwrap().spec.unwrap();
        let key = |p: &k8s_openapi::api::core::v1::ServicePort| {
            (
                p.name.clone(),
                p.port,
                p.target_port.clone(),
                p.protocol.clone(),
            )
        };
        let user_ports = user_svc.spec.as_ref().unwrap().ports.as_ref().unwrap();
        assert_eq!(
            svc.ports.unwrap().iter().map(key).collect::<Vec<_>>(),
            user_ports.iter().map(key).collect::<Vec<_>>(),
            "{name}"
        );
    }

    // A bad canary: off the route before its replicas go.
    let shipped = {
        let last = seen.lock().unwrap().last().map_or(0, Seen::rv);
        env.ship("app:3", 0.5).await;
        last
    };
    env.wait_phase("app", Phase::RolledBack, 60).await;
    route_at(&routes, (100, 0), 10).await;
    wait_for(&env.deployments(), "app-canary", 10, "canary at 0", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    })
    .await;
    let log = seen.lock().unwrap().clone();
    let after: Vec<&Seen> = log.iter().filter(|s| s.rv() > shipped).collect();
    let served = after
        .iter()
        .find(|s| matches!(s, Seen::Route(_, r) if weights(r).1 > 0))
        .map(|s| s.rv())
        .expect("the bad canary got traffic before it was judged");
    let off_route = after
        .iter()
        .find(|s| s.rv() > served && matches!(s, Seen::Route(_, r) if weights(r) == (100, 0)))
        .map(|s| s.rv())
        .expect("route back to (100, 0)");
    let scaled_down = after
        .iter()
        .find(|s| s.rv() > served && matches!(s, Seen::Canary(_, 0)))
        .map(|s| s.rv())
        .expect("canary scaled to 0");
    assert!(
        off_route < scaled_down,
        "route at (100, 0) at {off_route}, canary at 0 replicas at {scaled_down}: {after:?}"
    );
    // Other rules byte-for-byte unchanged at every observation.
    for s in &log {
        if let Seen::Route(rv, rules) = s {
            assert_eq!(rules[1], original[1], "another Service's rule at {rv}");
            assert_eq!(rules[2], original[2], "the redirect at {rv}");
            assert_eq!(
                rules[0]["matches"], original[0]["matches"],
                "our matches at {rv}"
            );
        }
    }

    // Deletion gives the route its own backends back and removes our Services.
    env.rollouts()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("app", 30).await;
    let r = routes.get("app").await.unwrap();
    assert_eq!(r.data["spec"]["rules"], original);
    assert!(
        !r.annotations()
            .contains_key("guardrails.dev/original-backend-refs")
    );
    assert!(services.get_opt("app-canary").await.unwrap().is_none());
    assert!(services.get_opt("app-primary").await.unwrap().is_none());
}

/// Grants `user` the documented ClusterRole with HTTPRoutes read-only, and route writes
/// in `ns` only through the `route-writes` RoleBinding (deleted and re-created by the test).
async fn grant_all_but_route_writes(client: &Client, ns: &str, user: &str) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
    use serde::Deserialize;
    let text = std::fs::read_to_string(common::repo_path("deploy/rbac.yaml")).unwrap();
    let mut role: ClusterRole = serde_yaml::Deserializer::from_str(&text)
        .map(serde_yaml::Value::deserialize)
        .map(Result::unwrap)
        .find(|d| d["kind"] == "ClusterRole")
        .map(|d| serde_yaml::from_value(d).unwrap())
        .unwrap();
    for rule in role.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == "httproutes") {
            rule.verbs = vec!["get".into()];
        }
    }
    role.metadata.name = Some(format!("{ns}-no-route-writes"));
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let subject = json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]);
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{ns}-no-route-writes")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role.metadata.name},
        "subjects": subject
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let writes: Role = serde_json::from_value(json!({
        "metadata": {"name": "route-writes"},
        "rules": [{"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"],
                   "verbs": ["update"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &writes)
        .await
        .unwrap();
    bind_route_writes(client, ns, user).await;
}

async fn bind_route_writes(client: &Client, ns: &str, user: &str) {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "route-writes"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "route-writes"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

fn traffic_routed(gr: &GuardedRollout) -> Option<(String, String, String)> {
    let s = gr.status.as_ref()?;
    conditions::get(&s.conditions, ConditionType::TrafficRouted)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// A canary paused at (50, 50) on an HTTPRoute, run by a user (returned) whose right to
/// write routes has just been taken away.
async fn canary_at_half_without_route_writes(test: &str) -> (Env, Api<DynamicObject>, String) {
    let (cp, client, ns) = cluster(test).await;
    install_routes(&client).await;
    let user = format!("operator-{ns}");
    grant_all_but_route_writes(&client, &ns, &user).await;
    let mut config = cp.config().clone();
    config.auth_info.impersonate = Some(user.clone());
    let env = env_in(client.clone(), ns.clone(), Operator::unelected(config)).await;
    let routes = routes(&client, &ns, "v1");
    create_service(&client, &ns).await;
    create_route(&routes, "v1", &json!([three_rules()[0]])).await;
    let gr = gateway_rollout(json!([{"setWeight": 50}, {"pause": {}}]));
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.0).await;
    env.wait_phase("app", Phase::Paused, 60).await;
    route_at(&routes, (50, 50), 10).await;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), &ns)
        .delete("route-writes", &DeleteParams::default())
        .await
        .unwrap();
    (env, routes, user)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_route_write_never_keeps_a_rolled_back_canary_running() {
    let (env, routes, user) = canary_at_half_without_route_writes("gw-refused").await;
    let (client, ns) = (env.client.clone(), env.ns.clone());
    // The on-call engineer aborts the canary.
    env.rollouts()
        .patch(
            "app",
            &Default::default(),
            &annotate("guardrails.dev/abort", "bad release"),
        )
        .await
        .unwrap();
    wait_for(&env.deployments(), "app-canary", 20, "canary at 0", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    })
    .await;
    let gr = env
        .wait_for("app", 20, "TrafficRouted=False", |g| {
            traffic_routed(g).is_some_and(|c| c.0 == "False")
        })
        .await;
    let (_, reason, message) = traffic_routed(&gr).unwrap();
    assert_eq!(reason, "RouteNotUpdated");
    assert!(message.contains("forbidden"), "{message}");
    assert_eq!(status(&gr).phase, Some(Phase::RolledBack));
    assert_eq!(
        weights(&routes.get("app").await.unwrap().data["spec"]["rules"]),
        (50, 50),
        "the write was refused"
    );

    // The right comes back: the route follows without anyone touching the rollout.
    bind_route_writes(&client, &ns, &user).await;
    route_at(&routes, (100, 0), 30).await;
    let gr = env
        .wait_for("app", 20, "TrafficRouted=True", |g| {
            traffic_routed(g).is_some_and(|c| c.0 == "True")
        })
        .await;
    assert_eq!(traffic_routed(&gr).unwrap().1, "RouteUpdated");
}

/// A healthy canary's share must not go to a Service without endpoints: after its
/// promotion it keeps serving until the route has moved away from it.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_route_write_keeps_a_promoted_canary_serving_until_the_route_moves() {
    let (env, routes, user) = canary_at_half_without_route_writes("gw-promoted").await;
    let (client, ns) = (env.client.clone(), env.ns.clone());
    // The canary is promoted.
    env.rollouts()
        .patch(
            "app",
            &Default::default(),
            &annotate("guardrails.dev/promote", ""),
        )
        .await
        .unwrap();
    env.wait_for("app", 60, "Succeeded with TrafficRouted=False", |g| {
        status(g).phase == Some(Phase::Succeeded)
            && traffic_routed(g).is_some_and(|c| c.0 == "False")
    })
    .await;
    // Half the traffic still goes to the canary Service: its pods stay, through retries.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let canary = env.deployments().get("app-canary").await.unwrap();
        let replicas = canary.spec.and_then(|s| s.replicas).unwrap_or(0);
        assert!(
            replicas > 0,
            "canary drained while the route still sends it 50%"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        weights(&routes.get("app").await.unwrap().data["spec"]["rules"]),
        (50, 50)
    );

    // The right comes back: the route moves, then the canary goes.
    bind_route_writes(&client, &ns, &user).await;
    route_at(&routes, (100, 0), 30).await;
    wait_for(&env.deployments(), "app-canary", 30, "canary at 0", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn httproute_v1beta1_is_spoken_where_v1_is_not_served() {
    // A cluster of its own: the HTTPRoute CRD serves only v1beta1.
    let cp = guardrails_sandbox::ControlPlane::start().await.unwrap();
    let client = cp.client().unwrap();
    let mut crds = guardrails::api::crds();
    crds.push(guardrails_sandbox::gateway::httproute_crd(&["v1beta1"]));
    cp.install_crds(&client, &crds).await.unwrap();
    let ns = cp.namespace(&client, "gw-v1beta1").await.unwrap();
    let operator = Operator::unelected(cp.config().clone());
    let env = env_in(client.clone(), ns.clone(), operator).await;
    let routes = routes(&client, &ns, "v1beta1");
    create_service(&client, &ns).await;
    let original = three_rules();
    create_route(&routes, "v1beta1", &original).await;
    let gr = gateway_rollout(json!([{"setWeight": 50}, {"pause": {"duration": "2s"}}]));
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.0).await;
    route_at(&routes, (50, 50), 60).await;
    env.wait_phase("app", Phase::Succeeded, 60).await;
    route_at(&routes, (100, 0), 10).await;
    env.rollouts()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("app", 30).await;
    assert_eq!(
        routes.get("app").await.unwrap().data["spec"]["rules"],
        original
    );
}

//! The GuardedRollout end-to-end environment: the shared control plane, a namespace,
//! Prometheus scraping the realistic simulator every second, and the operator's
//! controllers with a 5 s analysis interval.

use std::time::Duration;

use guardrails::{
    api::{GuardedRollout, Phase, SloPolicy},
    conditions::{self, ConditionType},
    controller::{
        self, Context,
        clients::{self, Clients},
    },
    telemetry::Metrics,
};
use guardrails_sandbox::{Prometheus, PrometheusConfig, Simulator, simulator};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::cluster;

pub struct Env {
    pub client: Client,
    pub ns: String,
    pub prom: Prometheus,
    pub sim: Simulator,
    pub operator: tokio::task::JoinHandle<()>,
    /// The operator's metrics (shared with every operator this Env starts).
    pub metrics: Metrics,
}

pub fn annotate(key: &str, value: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"annotations": {key: value}}}))
}

/// Fails unless the newest history entry's reason contains `needle`.
pub fn assert_last_reason(status: &guardrails::api::GuardedRolloutStatus, needle: &str) {
    let reason = status.history.first().and_then(|h| h.reason.as_deref());
    assert!(
        reason.is_some_and(|r| r.contains(needle)),
        "the last history reason should contain {needle:?}: {reason:?}"
    );
}

pub fn status(gr: &GuardedRollout) -> guardrails::api::GuardedRolloutStatus {
    gr.status.clone().unwrap_or_default()
}

impl Drop for Env {
    fn drop(&mut self) {
        self.operator.abort();
    }
}

pub async fn env(name: &str) -> Env {
    env_with(name, false).await
}

/// With `documented_rbac`, the operator runs as a user whose only rights are the roles
/// of deploy/rbac.yaml, and reconciles only while holding its leader-election Lease.
pub async fn env_with(name: &str, documented_rbac: bool) -> Env {
    let (cp, client, ns) = cluster(name).await;
    let operator = if documented_rbac {
        grant_documented_rbac(&client, &ns).await;
        let kc = kube::config::Kubeconfig::read_from(cp.restricted_kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        Operator::elected(config)
    } else {
        Operator::unelected(cp.config().clone())
    };
    env_in(client, ns, operator).await
}

/// Who the operator runs as, and whether it reconciles only while holding its
/// leader-election Lease.
pub struct Operator {
    pub config: kube::Config,
    pub elected: bool,
}

impl Operator {
    pub fn unelected(config: kube::Config) -> Self {
        Operator {
            config,
            elected: false,
        }
    }

    pub fn elected(config: kube::Config) -> Self {
        Operator {
            config,
            elected: true,
        }
    }
}

/// The simulator, Prometheus and the operator for namespace `ns` of `client`'s cluster.
pub async fn env_in(client: Client, ns: String, operator: Operator) -> Env {
    let sim = Simulator::start(client.clone(), Some(&ns)).await.unwrap();
    let prom = Prometheus::start(PrometheusConfig {
        targets: vec![("sim".into(), sim.addr().to_string())],
        ..Default::default()
    })
    .await
    .unwrap();
    prom.wait_scraping().await;
    let metrics = Metrics::default();
    let operator = start_operator(operator, &ns, prom.url(), &metrics);
    Env {
        client,
        ns,
        prom,
        sim,
        operator,
        metrics,
    }
}

/// Binds the ClusterRole of deploy/rbac.yaml to the sandbox's restricted user, and its
/// leader-election Role in `ns` (standing in for the operator's namespace).
pub async fn grant_documented_rbac(client: &Client, ns: &str) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use serde::Deserialize;
    let text = std::fs::read_to_string(super::repo_path("deploy/rbac.yaml")).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(serde_yaml::Value::deserialize)
        .map(Result::unwrap)
        .collect();
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("a {kind} in deploy/rbac.yaml"))
    };
    let mut lease_role: Role = serde_yaml::from_value(of_kind("Role")).unwrap();
    lease_role.metadata.namespace = Some(ns.into());
    let lease_binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "guardrails-leader-election", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": lease_role.metadata.name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": guardrails_sandbox::RESTRICTED_USER}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &lease_role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &lease_binding)
        .await
        .unwrap();
    let role: ClusterRole = serde_yaml::from_value(of_kind("ClusterRole")).unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "guardrails-documented"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role.metadata.name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": guardrails_sandbox::RESTRICTED_USER}]
    }))
    .unwrap();
    // Cluster-wide: the first story to get here creates them, the others find them.
    let created = |r: Result<_, kube::Error>| match r {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("{e}"),
    };
    created(
        Api::<ClusterRole>::all(client.clone())
            .create(&PostParams::default(), &role)
            .await
            .map(|_| ()),
    );
    created(
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .map(|_| ()),
    );
}

/// The operator as the binary wires it (clients, timeouts, leadership guard), in this
/// process, for namespace `ns`.
pub fn start_operator(
    operator: Operator,
    ns: &str,
    prometheus: String,
    metrics: &Metrics,
) -> tokio::task::JoinHandle<()> {
    let election_client = clients::election_client(&operator.config).unwrap();
    let election = operator.elected.then(|| {
        let leases = Api::namespaced(election_client, ns);
        guardrails::leader::Election::new(leases, "guardrails", "e2e", Duration::from_secs(5))
    });
    let leadership = election.as_ref().map(|e| e.leadership());
    let clients = Clients::new(operator.config, leadership.as_ref()).unwrap();
    let ctx = Context::with_clients(&clients, Some(prometheus), metrics.clone());
    let controllers = controller::run(ctx, Some(ns.to_string()), 4);
    tokio::spawn(async move {
        match election {
            None => controllers.await,
            Some(e) => e.run(controllers).await.expect("leadership kept"),
        }
    })
}

pub fn target(image: &str, error_rate: f64) -> Deployment {
    target_with(
        image,
        2,
        json!({simulator::ERROR_RATE: error_rate.to_string()}),
    )
}

/// The `app` Deployment with `replicas` and these pod-template annotations.
pub fn target_with(image: &str, replicas: i32, annotations: serde_json::Value) -> Deployment {
    deployment("app", image, replicas, annotations)
}

/// A Deployment whose pods carry `app: <name>` (the Service and metrics label).
pub fn deployment(
    name: &str,
    image: &str,
    replicas: i32,
    annotations: serde_json::Value,
) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    }))
    .unwrap()
}

/// The `app` SloPolicy: availability of the app's requests (500s over all) at `target`,
/// with these further spec fields (window, interval, alerting...).
pub fn app_slo(target: f64, fields: serde_json::Value) -> SloPolicy {
    let mut spec = json!({"objectives": [{"name": "availability", "target": target,
        "indicator": {"ratio": {"errors": "http_requests_total{service=\"app\",code=\"500\"}",
                                "total": "http_requests_total{service=\"app\"}"}}}]});
    for (k, v) in fields.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "SloPolicy",
        "metadata": {"name": "app"}, "spec": spec
    }))
    .unwrap()
}

pub fn error_rate_check() -> serde_json::Value {
    json!({
        "name": "error-rate",
        "query": "(sum(rate(http_requests_total{namespace=\"{{namespace}}\",pod=~\"{{canary_pods}}\",code=\"500\"}[{{interval}}])) or vector(0)) / sum(rate(http_requests_total{namespace=\"{{namespace}}\",pod=~\"{{canary_pods}}\"}[{{interval}}]))",
        "max": 0.05
    })
}

/// Four steps of 5 s pauses, the error-rate check.
pub fn rollout(_: serde_json::Value) -> GuardedRollout {
    rollout_with(
        json!([{"setWeight": 25}, {"pause": {"duration": "5s"}}, {"setWeight": 50}, {"pause": {"duration": "5s"}}]),
        json!([error_rate_check()]),
    )
}

pub fn rollout_with(steps: serde_json::Value, checks: serde_json::Value) -> GuardedRollout {
    serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": "app"},
        "spec": {
            "targetRef": {"name": "app"},
            "steps": steps,
            "analysis": {"interval": "5s", "failureLimit": 2, "noData": {"timeout": "1m"}, "providerErrors": {"timeout": "15s"}, "checks": checks}
        }
    }))
    .unwrap()
}

impl Env {
    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn rollouts(&self) -> Api<GuardedRollout> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// For each name, a one-replica Deployment on app:1 and a GuardedRollout of it with
    /// [`rollout`]'s steps; nothing waits for adoption.
    #[allow(dead_code)]
    pub async fn create_rollouts(&self, names: impl IntoIterator<Item = String>) {
        for name in names {
            self.deployments()
                .create(
                    &PostParams::default(),
                    &deployment(&name, "app:1", 1, json!({})),
                )
                .await
                .unwrap();
            let mut gr = rollout(json!({}));
            gr.metadata.name = Some(name.clone());
            gr.spec.target_ref.name = name;
            self.rollouts()
                .create(&PostParams::default(), &gr)
                .await
                .unwrap();
        }
    }

    pub async fn create(&self, d: &Deployment, gr: &GuardedRollout) {
        self.deployments()
            .create(&PostParams::default(), d)
            .await
            .unwrap();
        self.rollouts()
            .create(&PostParams::default(), gr)
            .await
            .unwrap();
        self.wait_phase("app", Phase::Idle, 30).await;
    }

    /// The `app` target on app:1 adopted with a 25% step and a pause of `pause`, then
    /// app:2 shipped and its canary serving in that pause.
    pub async fn canary_in_pause(&self, pause: &str) {
        let gr = rollout_with(
            json!([{"setWeight": 25}, {"pause": {"duration": pause}}]),
            json!([error_rate_check()]),
        );
        self.create(&target("app:1", 0.0), &gr).await;
        self.ship("app:2", 0.0).await;
        self.wait_for("app", 60, "the canary in its pause", |g| {
            status(g).current_step == Some(1)
        })
        .await;
    }

    /// Changes the target's template (what a Git commit does).
    pub async fn ship(&self, image: &str, error_rate: f64) {
        self.ship_with(
            image,
            json!({simulator::ERROR_RATE: error_rate.to_string()}),
        )
        .await;
    }

    /// Changes the target's image and these pod-template annotations.
    pub async fn ship_with(&self, image: &str, annotations: serde_json::Value) {
        let patch = json!({"spec": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": image}]}
        }}});
        self.deployments()
            .patch("app", &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap();
    }

    pub async fn wait_for(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        ok: impl Fn(&GuardedRollout) -> bool,
    ) -> GuardedRollout {
        super::wait_for(&self.rollouts(), name, secs, what, ok).await
    }

    pub async fn wait_phase(&self, name: &str, phase: Phase, secs: u64) -> GuardedRollout {
        self.wait_for(name, secs, &format!("phase {phase:?}"), |g| {
            g.status.as_ref().and_then(|s| s.phase) == Some(phase)
        })
        .await
    }

    /// Waits for the canary to reach step `index` (0-based, as status.currentStep).
    pub async fn wait_step(&self, name: &str, index: i32, secs: u64) -> GuardedRollout {
        self.wait_for(name, secs, &format!("currentStep {index}"), |g| {
            g.status.as_ref().and_then(|s| s.current_step) == Some(index)
        })
        .await
    }

    /// Waits (up to 20 s) for Stalled=True with `reason`; returns the condition's message.
    pub async fn wait_stalled(&self, name: &str, reason: &str) -> String {
        let stalled = |g: &GuardedRollout| {
            g.status
                .as_ref()
                .and_then(|s| conditions::get(&s.conditions, ConditionType::Stalled))
                .filter(|c| c.status == "True" && c.reason == reason)
                .map(|c| c.message.clone())
        };
        let gr = self
            .wait_for(name, 20, &format!("Stalled {reason}"), |g| {
                stalled(g).is_some()
            })
            .await;
        stalled(&gr).unwrap_or_default()
    }

    /// Waits (up to `secs`) until the GuardedRollout is gone, its finalizer done; fails
    /// the test otherwise.
    pub async fn wait_gone(&self, name: &str, secs: u64) {
        let what = format!("GuardedRollout {name} gone");
        let timeout = Duration::from_secs(secs);
        guardrails_sandbox::wait::eventually(&what, timeout, || async {
            match self.rollouts().get_opt(name).await.unwrap() {
                None => Ok(()),
                Some(left) => Err(left),
            }
        })
        .await;
    }

    /// Writes of these kinds (see Metrics::wrote) the operator makes over `window`: how
    /// a story asserts that nothing happens, rather than sleeping and looking once.
    pub async fn writes_over(&self, window: Duration, kinds: &[&str]) -> u64 {
        let count = || kinds.iter().map(|k| self.metrics.writes(k)).sum::<u64>();
        let before = count();
        tokio::time::sleep(window).await;
        count() - before
    }

    /// GuardedRollout reconciles the operator has run so far.
    pub fn reconciles(&self) -> u64 {
        self.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("guardrails_reconcile_total{"))
            .filter(|l| l.contains("guardedrollout"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until the rollout has not been reconciled for `quiet`, then counts its
    /// reconciles over `window`.
    pub async fn reconciles_once_quiet(&self, quiet: Duration, window: Duration) -> u64 {
        let settled = "no reconcile for a while";
        guardrails_sandbox::wait::eventually(settled, Duration::from_secs(60), || async {
            let before = self.reconciles();
            tokio::time::sleep(quiet).await;
            let during = self.reconciles() - before;
            if during == 0 { Ok(()) } else { Err(during) }
        })
        .await;
        let before = self.reconciles();
        tokio::time::sleep(window).await;
        self.reconciles() - before
    }

    /// Waits (up to `secs`) until Deployment `name` asks for `replicas`: the operator
    /// writes a decision's status before it acts on it, so the act lands just after.
    pub async fn wait_replicas(&self, name: &str, replicas: i32, secs: u64) {
        let what = format!("{name} at {replicas} replicas");
        super::wait_for(&self.deployments(), name, secs, &what, |d| {
            d.spec.as_ref().and_then(|s| s.replicas) == Some(replicas)
        })
        .await;
    }

    pub async fn image_of(&self, name: &str) -> (String, i32) {
        let d = self.deployments().get(name).await.unwrap();
        let spec = d.spec.unwrap();
        (
            spec.template.spec.unwrap().containers[0]
                .image
                .clone()
                .unwrap(),
            spec.replicas.unwrap(),
        )
    }

    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
        super::events_about(&self.client, &self.ns, name).await
    }

    pub async fn set_gate(&self, gate: &str) {
        let api: Api<SloPolicy> = Api::namespaced(self.client.clone(), &self.ns);
        let patch = json!({
            "apiVersion": "guardrails.dev/v1alpha1", "kind": "SloPolicy",
            "status": {"gate": gate, "gateReason": format!("set by the test: {gate}")}
        });
        api.patch_status(
            "app",
            &PatchParams::apply("test").force(),
            &Patch::Apply(patch),
        )
        .await
        .unwrap();
    }
}

/// Every pod of the Deployment is updated, ready and available at `replicas`.
pub fn available(d: &Deployment, replicas: i32) -> bool {
    let s = d.status.clone().unwrap_or_default();
    d.spec.as_ref().and_then(|s| s.replicas) == Some(replicas)
        && s.observed_generation == d.metadata.generation
        && [
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas,
        ]
        .iter()
        .all(|n| n.unwrap_or(0) == replicas)
}

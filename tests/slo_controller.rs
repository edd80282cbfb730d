//! The SloPolicy controller against the real apiserver and a live Prometheus: status
//! and gate follow the data, Prometheus going away and coming back is reported, bad
//! specs get a condition and an Event without stopping the others.

mod common;

use std::{sync::Arc, time::Duration};

use common::cluster;
use guardrails::{
    api::{Gate, Severity, SloPolicy},
    conditions::{self, ConditionType},
    controller::{self, Context},
    reasons::SloCondition,
    telemetry::Metrics,
};
use guardrails_sandbox::wait::{eventually, reached};
use guardrails_sandbox::{Exporter, Prometheus, PrometheusConfig};

use kube::{Api, Client, api::PostParams};

fn policy(name: &str, service: &str) -> SloPolicy {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: guardrails.dev/v1alpha1
kind: SloPolicy
metadata: {{name: {name}}}
spec:
  window: 2m
  interval: 10s
  objectives:
    - name: availability
      target: 99
      indicator:
        ratio:
          errors: 'http_requests_total{{service="{service}",code="500"}}'
          total: 'http_requests_total{{service="{service}"}}'
  alerting:
    burnRateTiers:
      - {{severity: page, longWindow: 1m, shortWindow: 30s, burnRate: 10}}
"#
    ))
    .unwrap()
}

/// Runs the operator's SloPolicy controller for one namespace until the test ends.
fn start_operator(
    client: &Client,
    ns: &str,
    prometheus_url: String,
) -> (Arc<Context>, tokio::task::JoinHandle<()>) {
    let ctx = Context::new(client.clone(), Some(prometheus_url), Metrics::default());
    let task = tokio::spawn(controller::slo_policy::run(
        Some(ns.into()),
        ctx.clone(),
        4,
        Default::default(),
    ));
    (ctx, task)
}

/// Polls the policy until `ok` holds, or fails after `secs` with the last status.
async fn wait_for(
    api: &Api<SloPolicy>,
    name: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&SloPolicy) -> bool,
) -> SloPolicy {
    common::wait_for(api, name, secs, what, ok).await
}

fn ready(p: &SloPolicy) -> Option<(String, String)> {
    let s = p.status.as_ref()?;
    conditions::get(&s.conditions, ConditionType::Ready)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn event_reasons(client: &Client, ns: &str, name: &str) -> Vec<String> {
    common::events_about(client, ns, name)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect()
}

/// Waits until an Event with `reason` is about `name`; fails with the reasons seen.
async fn event_seen(client: &Client, ns: &str, name: &str, reason: &str) {
    let what = format!("{reason} event about {name}");
    eventually(&what, Duration::from_secs(10), || async {
        let seen = event_reasons(client, ns, name).await;
        reached(seen.iter().any(|r| r == reason), seen)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_follows_the_data_and_prometheus_outages() {
    let (_cp, client, ns) = cluster("slo-live").await;
    let exporter = Exporter::start().await.unwrap();
    exporter.set_rate(r#"http_requests_total{service="live",code="200"}"#, 100.0);
    exporter.set_rate(r#"http_requests_total{service="live",code="500"}"#, 0.0);
    let mut prom = Prometheus::start(PrometheusConfig {
        targets: vec![("live".into(), exporter.addr().to_string())],
        ..Default::default()
    })
    .await
    .unwrap();
    let (_ctx, _operator) = start_operator(&client, &ns, prom.url());
    let api = Api::<SloPolicy>::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &policy("live", "live"))
        .await
        .unwrap();

    // Healthy: no errors, gate open.
    let p = wait_for(&api, "live", 40, "healthy and open", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.gate == Some(Gate::Open) && s.objectives.first().is_some_and(|o| o.sli == Some(100.0))
        })
    })
    .await;
    assert_eq!(
        ready(&p),
        Some(("True".into(), SloCondition::Evaluated.as_str().into()))
    );
    assert_eq!(
        p.status.as_ref().unwrap().observed_generation,
        p.metadata.generation
    );
    // A new policy that is evaluated and Open is what was expected: no Event says so
    // (its Events follow its status write within milliseconds).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = event_reasons(&client, &ns, "live").await;
    assert!(
        told.is_empty(),
        "Events about a healthy new policy: {told:?}"
    );

    // A third of the requests fail: the budget of a 99% target is gone, the page tier fires.
    exporter.set_rate(r#"http_requests_total{service="live",code="500"}"#, 50.0);
    let p = wait_for(&api, "live", 60, "frozen and paging", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.gate == Some(Gate::Frozen) && s.objectives[0].firing_alerts.contains(&Severity::Page)
        })
    })
    .await;
    let status = p.status.unwrap();
    assert!(
        status
            .gate_reason
            .as_ref()
            .unwrap()
            .contains("availability consumed"),
        "{:?}",
        status.gate_reason
    );
    assert!(status.error_budget_remaining.unwrap() < 0.0);
    event_seen(&client, &ns, "live", "GateFrozen").await;

    // Prometheus away: gate whenUnknown (Restricted), reason says why, last values kept.
    prom.stop();
    let p = wait_for(&api, "live", 40, "unknown while Prometheus is away", |p| {
        ready(p).is_some_and(|r| r.1 == SloCondition::PrometheusUnavailable.as_str())
    })
    .await;
    let down = p.status.unwrap();
    assert_eq!(down.gate, Some(Gate::Restricted));
    assert!(
        down.gate_reason.as_ref().unwrap().contains("unreachable"),
        "{:?}",
        down.gate_reason
    );
    assert_eq!(
        down.objectives[0].sli, status.objectives[0].sli,
        "last good values kept"
    );
    assert!(
        down.objectives[0].observed_time < down.last_evaluation_time,
        "kept values carry their own time"
    );
    event_seen(
        &client,
        &ns,
        "live",
        SloCondition::PrometheusUnavailable.as_str(),
    )
    .await;

    // Back: evaluated again, frozen again.
    prom.restart().await.unwrap();
    let p = wait_for(
        &api,
        "live",
        40,
        "evaluated after Prometheus is back",
        |p| {
            ready(p).is_some_and(|r| r.1 == SloCondition::Evaluated.as_str())
                && p.status.as_ref().unwrap().gate == Some(Gate::Frozen)
        },
    )
    .await;
    assert!(p.status.unwrap().objectives[0].observed_time > down.objectives[0].observed_time);
    event_seen(&client, &ns, "live", SloCondition::Evaluated.as_str()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_policy_gets_a_condition_and_others_carry_on() {
    let (_cp, client, ns) = cluster("slo-invalid").await;
    let prom = Prometheus::start(PrometheusConfig::default())
        .await
        .unwrap();
    let (ctx, _operator) = start_operator(&client, &ns, prom.url());
    let api = Api::<SloPolicy>::namespaced(client.clone(), &ns);
    let mut bad = policy("bad", "bad");
    bad.spec.objectives[0]
        .indicator
        .ratio
        .as_mut()
        .unwrap()
        .total = "sum(rate(http_requests_total[5m]))".into();
    api.create(&PostParams::default(), &bad).await.unwrap();
    api.create(&PostParams::default(), &policy("good", "good"))
        .await
        .unwrap();

    let p = wait_for(&api, "bad", 30, "invalid condition", |p| {
        ready(p).is_some_and(|r| r.1 == SloCondition::InvalidSpec.as_str())
    })
    .await;
    let cond = conditions::get(&p.status.as_ref().unwrap().conditions, ConditionType::Ready)
        .unwrap()
        .clone();
    assert_eq!(cond.status, "False");
    assert!(
        cond.message
            .contains("spec.objectives[0].indicator.ratio.total"),
        "{}",
        cond.message
    );
    // The good one is evaluated: no traffic at all, so no data and an open gate.
    let good = wait_for(&api, "good", 30, "good evaluated", |p| {
        ready(p).is_some_and(|r| r.1 == SloCondition::Evaluated.as_str())
    })
    .await;
    let status = good.status.unwrap();
    assert_eq!(status.gate, Some(Gate::Open));
    // No recording rules in this Prometheus: read with its own queries, and said so.
    assert_eq!(status.source, Some(guardrails::api::IndicatorSource::Raw));
    event_seen(&client, &ns, "bad", SloCondition::InvalidSpec.as_str()).await;

    // No hot requeue: over 12 s, the invalid policy is not re-reconciled in a loop.
    let count = |ctx: &Context| -> u64 {
        ctx.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("guardrails_reconcile_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    };
    let before = count(&ctx);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let reconciles = count(&ctx) - before;
    assert!(
        reconciles <= 6,
        "{reconciles} reconciles in 12 s: the invalid policy is being requeued hot"
    );

    // Fixing the spec makes it Ready.
    let mut fixed = api.get("bad").await.unwrap();
    fixed.spec = policy("bad", "bad").spec;
    api.replace("bad", &PostParams::default(), &fixed)
        .await
        .unwrap();
    wait_for(&api, "bad", 30, "fixed policy evaluated", |p| {
        ready(p).is_some_and(|r| r.1 == SloCondition::Evaluated.as_str())
    })
    .await;

    // A deleted policy's series go from /metrics; the others stay.
    let series_of = |ctx: &Context, name: &str| {
        let label = format!("name=\"{name}\"");
        ctx.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("guardrails_slo_") && l.contains(&label))
            .count()
    };
    assert!(series_of(&ctx, "good") > 0);
    api.delete("good", &Default::default()).await.unwrap();
    let what = "deleted policy's series removed";
    eventually(what, Duration::from_secs(10), || async {
        let n = series_of(&ctx, "good");
        reached(n == 0, n)
    })
    .await;
    assert!(
        series_of(&ctx, "bad") > 0,
        "the other policy keeps its series"
    );
}

/// The policy's own PrometheusRule, under the documented RBAC: a condition while the
/// cluster serves no PrometheusRule, then the rule with the user's labels and an owner
/// reference (which promtool accepts), following a spec change; someone else's rule of
/// the same name left alone; the rule removed when turned off and when the policy goes.
#[tokio::test(flavor = "multi_thread")]
async fn an_owned_prometheus_rule_follows_the_spec_and_goes_with_the_policy() {
    use guardrails::{controller::slo_policy::rule::FINALIZER, reasons::RuleCondition, slo::rules};
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

    let (cp, client, ns) = cluster("slo-rule").await;
    common::env::grant_documented_rbac(&client, &ns).await;
    let kc = kube::config::Kubeconfig::read_from(cp.restricted_kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let restricted = Client::try_from(config).unwrap();
    let prom = Prometheus::start(PrometheusConfig::default())
        .await
        .unwrap();
    let (_ctx, _operator) = start_operator(&restricted, &ns, prom.url());
    let api = Api::<SloPolicy>::namespaced(client.clone(), &ns);
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "prometheusrules");
    let prometheus_rules = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource);
    let owning = |name: &str, enabled: bool| {
        let mut p = policy(name, name);
        p.spec.alerting.prometheus_rule = serde_json::from_value(serde_json::json!(
            {"enabled": enabled, "labels": {"release": "monitoring"}}
        ))
        .unwrap();
        p
    };
    let rule_condition = |p: &SloPolicy| {
        let s = p.status.as_ref()?;
        conditions::get(&s.conditions, ConditionType::PrometheusRuleReady)
            .map(|c| (c.status.clone(), c.reason.clone(), c.observed_generation))
    };

    // Asked for before the cluster serves PrometheusRules: said, and still evaluated.
    api.create(&PostParams::default(), &owning("owned", true))
        .await
        .unwrap();
    let p = wait_for(&api, "owned", 40, "CrdMissing", |p| {
        rule_condition(p).is_some_and(|c| c.1 == RuleCondition::CrdMissing.as_str())
    })
    .await;
    assert_eq!(ready(&p).unwrap().1, SloCondition::Evaluated.as_str());
    assert!(
        p.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_string())
    );

    // The CRD arrives: the rule appears within an interval.
    let crd_text =
        std::fs::read_to_string(common::repo_path("tests/fixtures/prometheusrule-crd.yaml"))
            .unwrap();
    cp.install_crds(&client, &[serde_yaml::from_str(&crd_text).unwrap()])
        .await
        .unwrap();
    let applied = |generation: i64| {
        move |p: &SloPolicy| {
            rule_condition(p) == Some(("True".into(), "Applied".into(), Some(generation)))
        }
    };
    let p = wait_for(&api, "owned", 40, "Applied", applied(1)).await;
    let rule = prometheus_rules.get("owned-slo").await.unwrap();
    let labels = rule.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("release").map(String::as_str),
        Some("monitoring")
    );
    assert_eq!(
        labels.get(rules::LABEL_SLO_POLICY).map(String::as_str),
        Some("owned")
    );
    let owners = rule.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(Some(&owners[0].uid), p.metadata.uid.as_ref());
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(
        rule.data["spec"],
        rules::prometheus_rule(&p).unwrap()["spec"]
    );
    promtool_accepts(&prom, &rule.data["spec"]);

    // A spec change is followed.
    let patch = serde_json::json!({"spec": {"objectives": [{"name": "availability", "target": 99.5,
        "indicator": {"ratio": {"errors": "http_requests_total{service=\"owned\",code=\"500\"}",
                                "total": "http_requests_total{service=\"owned\"}"}}}]}});
    merge(&api, "owned", patch).await;
    let p = wait_for(&api, "owned", 40, "generation 2 applied", applied(2)).await;
    let changed = prometheus_rules.get("owned-slo").await.unwrap();
    assert_ne!(changed.data["spec"], rule.data["spec"]);
    assert_eq!(
        changed.data["spec"],
        rules::prometheus_rule(&p).unwrap()["spec"]
    );
    promtool_accepts(&prom, &changed.data["spec"]);

    // Someone else's rule of the same name is left alone, and does not hold a deletion.
    let mut theirs = DynamicObject::new("other-slo", &resource).within(&ns);
    theirs.data = serde_json::json!({"spec": {"groups": [{"name": "theirs", "rules": []}]}});
    prometheus_rules
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    api.create(&PostParams::default(), &owning("other", true))
        .await
        .unwrap();
    wait_for(&api, "other", 40, "NotOwned", |p| {
        rule_condition(p).is_some_and(|c| c.1 == RuleCondition::NotOwned.as_str())
    })
    .await;
    api.delete("other", &Default::default()).await.unwrap();
    gone(&api, "other").await;
    let kept = prometheus_rules.get("other-slo").await.unwrap();
    assert_eq!(kept.data["spec"], theirs.data["spec"]);

    let has_rule = || async {
        prometheus_rules
            .get_opt("owned-slo")
            .await
            .unwrap()
            .is_some()
    };
    // Turned off: the rule goes, then the finalizer and the condition.
    let enabled =
        |on: bool| serde_json::json!({"spec": {"alerting": {"prometheusRule": {"enabled": on}}}});
    merge(&api, "owned", enabled(false)).await;
    wait_for(&api, "owned", 40, "rule released", |p| {
        rule_condition(p).is_none()
            && !p
                .metadata
                .finalizers
                .clone()
                .unwrap_or_default()
                .contains(&FINALIZER.to_string())
    })
    .await;
    assert!(!has_rule().await);

    // On again, then the policy is deleted: the rule goes with it.
    merge(&api, "owned", enabled(true)).await;
    wait_for(&api, "owned", 40, "generation 4 applied", applied(4)).await;
    assert!(has_rule().await);
    api.delete("owned", &Default::default()).await.unwrap();
    gone(&api, "owned").await;
    assert!(!has_rule().await);
}

/// `promtool check rules` on a PrometheusRule's spec.
fn promtool_accepts(prom: &Prometheus, spec: &serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(spec).unwrap()).unwrap();
    let out = std::process::Command::new(prom.promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A merge patch of a policy.
async fn merge(api: &Api<SloPolicy>, name: &str, patch: serde_json::Value) {
    use kube::api::{Patch, PatchParams};
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// Waits until the policy no longer exists.
async fn gone(api: &Api<SloPolicy>, name: &str) {
    eventually(
        &format!("{name} deleted"),
        Duration::from_secs(40),
        || async {
            match api.get_opt(name).await.unwrap() {
                None => Ok(()),
                Some(p) => Err(p.metadata.finalizers),
            }
        },
    )
    .await;
}

/// An operator that may not write the finalizer (an older ClusterRole without `patch` on
/// slopolicies) still evaluates the policy, and says why its PrometheusRule is missing.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_prometheus_rule_never_stops_the_evaluation() {
    use guardrails::reasons::RuleCondition;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    let (cp, client, ns) = cluster("slo-rule-refused").await;
    // A user of its own (the admin impersonates it), with only the Role below.
    let user = "slo-without-patch";
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "slo-without-patch"},
        "rules": [
            {"apiGroups": ["guardrails.dev"], "resources": ["slopolicies"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["guardrails.dev"], "resources": ["slopolicies/status"],
             "verbs": ["get", "patch", "update"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"],
             "verbs": ["create", "patch"]}
        ]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "slo-without-patch"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "slo-without-patch"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let mut config = cp.config().clone();
    config.auth_info.impersonate = Some(user.into());
    let prom = Prometheus::start(PrometheusConfig::default())
        .await
        .unwrap();
    let (_ctx, _operator) = start_operator(&Client::try_from(config).unwrap(), &ns, prom.url());
    let api = Api::<SloPolicy>::namespaced(client.clone(), &ns);
    let mut p = policy("refused", "refused");
    p.spec.alerting.prometheus_rule =
        serde_json::from_value(serde_json::json!({"enabled": true})).unwrap();
    api.create(&PostParams::default(), &p).await.unwrap();

    let p = wait_for(&api, "refused", 40, "evaluated, rule refused", |p| {
        let rule = p.status.as_ref().and_then(|s| {
            conditions::get(&s.conditions, ConditionType::PrometheusRuleReady).cloned()
        });
        ready(p).is_some_and(|r| r.1 == SloCondition::Evaluated.as_str())
            && rule.is_some_and(|c| c.reason == RuleCondition::Rejected.as_str())
    })
    .await;
    let status = p.status.unwrap();
    let rule = conditions::get(&status.conditions, ConditionType::PrometheusRuleReady).unwrap();
    assert_eq!(rule.status, "False");
    assert!(rule.message.contains("forbidden"), "{}", rule.message);
    assert_eq!(status.gate, Some(Gate::Open));
    assert!(p.metadata.finalizers.unwrap_or_default().is_empty());
}

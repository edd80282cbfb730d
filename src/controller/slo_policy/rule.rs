//! The PrometheusRule a SloPolicy asks the operator to own
//! (`spec.alerting.prometheusRule`): the rules `guardrails rules` prints, applied when
//! the spec changes and once per operator start, deleted with the policy or when turned
//! off. A finalizer holds the policy's deletion until the rule is gone, so it goes also
//! where no garbage collector runs; the owner reference lets the garbage collector
//! remove it while the operator is away.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::json;
use tracing::warn;

use super::super::{Context, Error, FIELD_MANAGER};
use crate::{
    api::{SloPolicy, SloPolicyStatus},
    conditions::{self, ConditionType},
    reasons::RuleCondition,
    slo::rules,
};

/// Holds a SloPolicy's deletion until its PrometheusRule is deleted.
pub const FINALIZER: &str = "guardrails.dev/prometheus-rule";

fn resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule");
    ApiResource::from_gvk_with_plural(&gvk, "prometheusrules")
}

fn api(ctx: &Context, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), ns, &resource())
}

/// The generation of each policy (by uid) whose rule this process has applied.
#[derive(Clone, Default)]
pub struct Applied(Arc<Mutex<HashMap<String, i64>>>);

impl Applied {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a reconcile goes on with.
pub enum Prepared {
    /// The policy is being deleted; its rule is gone and the finalizer removed.
    Deleted,
    /// The policy, as written when its finalizer was added or removed.
    Go(Arc<SloPolicy>),
}

fn has_finalizer(policy: &SloPolicy) -> bool {
    policy.finalizers().iter().any(|f| f == FINALIZER)
}

/// Deletion, and the finalizer following `enabled`: added before the first rule is
/// written, removed once the rule is deleted.
pub async fn prepare(ctx: &Context, policy: Arc<SloPolicy>) -> Result<Prepared, Error> {
    let wants = policy.spec.alerting.owns_prometheus_rule();
    let deleting = policy.meta().deletion_timestamp.is_some();
    match (deleting, wants, has_finalizer(&policy)) {
        (true, _, true) => {
            remove(ctx, &policy).await?;
            set_finalizer(ctx, &policy, false).await?;
            Ok(Prepared::Deleted)
        }
        (true, _, false) => Ok(Prepared::Deleted),
        (false, true, false) => Ok(Prepared::Go(Arc::new(
            set_finalizer(ctx, &policy, true).await?,
        ))),
        (false, false, true) => {
            remove(ctx, &policy).await?;
            Ok(Prepared::Go(Arc::new(
                set_finalizer(ctx, &policy, false).await?,
            )))
        }
        (false, _, _) => Ok(Prepared::Go(policy)),
    }
}

async fn set_finalizer(ctx: &Context, policy: &SloPolicy, on: bool) -> Result<SloPolicy, Error> {
    super::super::set_finalizer(ctx, policy, FINALIZER, on).await
}

/// Deletes the policy's rule when the policy owns it; an absent rule or CRD is done.
async fn remove(ctx: &Context, policy: &SloPolicy) -> Result<(), Error> {
    let ns = policy.namespace().ok_or(Error::NoNamespace)?;
    let api = api(ctx, &ns);
    let name = rules::prometheus_rule_name(&policy.name_any());
    if let Some(uid) = policy.uid() {
        ctx.rules_applied.map().remove(&uid);
    }
    match api.get_opt(&name).await {
        Ok(Some(rule)) if owned_by(&rule, policy) => {}
        // No such rule, or no PrometheusRule API at all ("404 page not found").
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            ctx.metrics.wrote("prometheusrule");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn owned_by(rule: &DynamicObject, policy: &SloPolicy) -> bool {
    let uid = policy.uid();
    rule.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

/// What became of the rule on this reconcile.
pub enum Outcome {
    /// Not asked for: no condition.
    Off,
    /// Applied by this process for this generation already: the condition stands.
    Unchanged,
    /// The condition to set.
    Set(RuleCondition, String),
}

/// Applies the policy's rule when its generation has not been applied by this process.
pub async fn sync(ctx: &Context, policy: &SloPolicy) -> Outcome {
    if !policy.spec.alerting.owns_prometheus_rule() {
        return Outcome::Off;
    }
    let (uid, generation) = (policy.uid().unwrap_or_default(), policy.meta().generation);
    let generation = generation.unwrap_or_default();
    let said = policy.status.as_ref().and_then(|s| {
        conditions::get(&s.conditions, ConditionType::PrometheusRuleReady)
            .filter(|c| c.status == "True" && c.observed_generation == Some(generation))
    });
    if said.is_some() && ctx.rules_applied.map().get(&uid) == Some(&generation) {
        return Outcome::Unchanged;
    }
    let (reason, message) = apply(ctx, policy).await;
    if reason == RuleCondition::Applied {
        ctx.rules_applied.map().insert(uid, generation);
    } else {
        warn!(%reason, %message, "PrometheusRule not applied");
    }
    Outcome::Set(reason, message)
}

async fn apply(ctx: &Context, policy: &SloPolicy) -> (RuleCondition, String) {
    let mut rule = match rules::prometheus_rule(policy) {
        Ok(rule) => rule,
        Err(e) => return (RuleCondition::InvalidSpec, e),
    };
    let ns = policy.namespace().unwrap_or_default();
    let name = rules::prometheus_rule_name(&policy.name_any());
    let Some(owner) = policy.controller_owner_ref(&()) else {
        return (RuleCondition::Rejected, Error::NoOwnerReference.to_string());
    };
    rule["metadata"]["ownerReferences"] = json!([owner]);
    let api = api(ctx, &ns);
    let crd_missing = || {
        let m = "the cluster serves no monitoring.coreos.com/v1 PrometheusRule: install \
                 prometheus-operator's CRDs, or load `guardrails rules` into Prometheus";
        (RuleCondition::CrdMissing, m.to_string())
    };
    match api.get_opt(&name).await {
        Ok(Some(existing)) if !owned_by(&existing, policy) => {
            let m = format!("PrometheusRule {name} exists and this SloPolicy does not own it");
            return (RuleCondition::NotOwned, m);
        }
        Ok(_) => {}
        // No PrometheusRule API: "404 page not found", not a NotFound status.
        Err(kube::Error::Api(e)) if e.code == 404 => return crd_missing(),
        Err(e) => return (RuleCondition::Rejected, e.to_string()),
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(rule)).await {
        Ok(_) => {
            ctx.metrics.wrote("prometheusrule");
            let m = format!(
                "PrometheusRule {name} holds the rules of generation {}",
                policy.meta().generation.unwrap_or_default()
            );
            (RuleCondition::Applied, m)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => crd_missing(),
        Err(kube::Error::Api(e)) => (RuleCondition::Rejected, e.message),
        Err(e) => (RuleCondition::Rejected, e.to_string()),
    }
}

/// Puts the outcome into the status to write.
pub fn report(status: &mut SloPolicyStatus, outcome: Outcome, generation: Option<i64>, now: &Time) {
    match outcome {
        Outcome::Off => status
            .conditions
            .retain(|c| c.type_ != ConditionType::PrometheusRuleReady.as_str()),
        Outcome::Unchanged => {}
        Outcome::Set(reason, message) => conditions::set(
            &mut status.conditions,
            ConditionType::PrometheusRuleReady,
            reason == RuleCondition::Applied,
            reason.as_str(),
            &message,
            generation,
            now,
        ),
    }
}

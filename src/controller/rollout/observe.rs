//! Reading what a GuardedRollout depends on.

use std::collections::BTreeMap;

use k8s_openapi::{api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Time};
use kube::{Api, ResourceExt};

use super::super::{Context, Error};
use crate::{
    api::{
        ANNOTATION_ABORT, ANNOTATION_CHANGE_CLASS, ANNOTATION_OVERRIDE_GATE, ANNOTATION_PROMOTE,
        ANNOTATION_RETRY, ChangeClass, CheckKind, GuardedRollout, Severity, SloPolicy,
    },
    rollout::{
        GateView, Manual, Referenced, Target, Workload,
        workloads::{ANNOTATION_REVISION, Role, revision, user_template},
    },
};

/// The objects a reconcile reads.
pub struct World {
    pub target: Option<Deployment>,
    pub primary: Option<Deployment>,
    pub canary: Option<Deployment>,
    pub slo: Referenced<SloPolicy>,
    /// What the traffic router read (e.g. the HTTPRoute).
    pub traffic: crate::traffic::Observed,
    pub autoscalers: super::autoscaler::Autoscalers,
    /// How often sequential checks read evidence, while a canary runs and has some.
    pub evidence_every: Option<std::time::Duration>,
}

pub async fn read(
    ctx: &Context,
    stores: &super::Stores,
    gr: &GuardedRollout,
    ns: &str,
) -> Result<World, Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let target_name = &gr.spec.target_ref.name;
    let (primary_name, canary_name) = (
        Role::Primary.name(target_name),
        Role::Canary.name(target_name),
    );
    let (target, primary, canary) = tokio::try_join!(
        stores.target(ns, target_name, &deployments),
        stores.managed(ns, &primary_name, &deployments),
        stores.managed(ns, &canary_name, &deployments),
    )?;
    let slo = match &gr.spec.slo_policy_ref {
        None => Referenced::NotReferenced,
        Some(r) => stores
            .slo_policy(ns, &r.name)
            .map_or(Referenced::Missing, Referenced::Found),
    };
    let router = crate::traffic::router(&gr.spec);
    let traffic = router.observe(&super::io(ctx, gr, ns)).await?;
    let autoscalers = super::autoscaler::read(ctx, &stores.autoscalers, ns, target_name).await?;
    let phase = gr.status.as_ref().and_then(|s| s.phase);
    let evidence_every = match phase {
        Some(crate::api::Phase::Progressing | crate::api::Phase::Paused) => {
            super::checks::evidence_every(ctx, gr, slo.found()).await
        }
        _ => None,
    };
    Ok(World {
        evidence_every,
        target,
        primary,
        canary,
        slo,
        traffic,
        autoscalers,
    })
}

pub fn workload(d: &Deployment) -> Workload {
    let status = d.status.clone().unwrap_or_default();
    let deadline_exceeded = status
        .conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| c.message.clone().unwrap_or_default());
    Workload {
        revision: d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REVISION).cloned()),
        replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        pods: status.replicas.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        current: status.observed_generation.is_some()
            && status.observed_generation == d.metadata.generation,
        deadline_exceeded,
        template: user_template(d),
    }
}

pub fn target(d: &Deployment) -> Option<Target> {
    let spec = d.spec.as_ref()?;
    let class = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(ANNOTATION_CHANGE_CLASS))
        .and_then(|v| {
            serde_json::from_value::<ChangeClass>(serde_json::Value::String(v.clone())).ok()
        });
    Some(Target {
        revision: revision(&spec.template),
        replicas: spec.replicas.unwrap_or(1),
        change_class: class,
        template: spec.template.clone(),
        scaled_by: replicas_owner(d),
    })
}

/// The field manager that last wrote the Deployment's spec.replicas, when it is not
/// the operator (from managedFields).
fn replicas_owner(d: &Deployment) -> Option<String> {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() != Some(crate::controller::FIELD_MANAGER))
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
        })
        .max_by_key(|m| m.time.as_ref().map(|t| t.0))
        .and_then(|m| m.manager.clone())
}

/// The gate as the rollout must take it: a stale one (older than three intervals, or
/// behind its generation) counts as the policy's whenUnknown, saying why.
pub fn gate(
    slo: &Referenced<SloPolicy>,
    evaluations: &crate::controller::Evaluations,
    now: &Time,
) -> Referenced<GateView> {
    slo.map(|p| {
        let status = p.status.clone().unwrap_or_default();
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let evaluated = evaluations.get(ns, &p.name_any());
        let stale = crate::rollout::gate::stale(p, evaluated, now).map(|why| {
            let unknown = p.spec.budget_policy.when_unknown;
            let reason = format!(
                "SloPolicy {}: gate not fresh ({why}): counts as whenUnknown ({unknown})",
                p.name_any()
            );
            (unknown, reason)
        });
        // Per severity, the earliest start across objectives.
        let mut firing: Vec<(Severity, Option<Time>)> = Vec::new();
        for o in &status.objectives {
            for s in &o.firing_alerts {
                let since = o.firing_since.get(s).cloned();
                match firing.iter_mut().find(|(f, _)| f == s) {
                    Some((_, t)) => *t = t.clone().min(since),
                    None => firing.push((*s, since)),
                }
            }
        }
        firing.sort_by_key(|(s, _)| *s);
        match stale {
            Some((unknown, reason)) => GateView {
                state: Some(unknown),
                reason: Some(reason),
                firing,
            },
            None => GateView {
                state: status.gate,
                reason: status.gate_reason,
                firing,
            },
        }
    })
}

pub fn manual(annotations: &BTreeMap<String, String>) -> Manual {
    Manual {
        promote: annotations.contains_key(ANNOTATION_PROMOTE),
        abort: annotations.get(ANNOTATION_ABORT).map(|r| {
            if r.is_empty() {
                "no reason given".into()
            } else {
                r.clone()
            }
        }),
        retry: annotations.contains_key(ANNOTATION_RETRY),
        override_gate: annotations.get(ANNOTATION_OVERRIDE_GATE).map(|r| {
            if r.is_empty() {
                "no reason given".into()
            } else {
                r.clone()
            }
        }),
    }
}

/// A target belongs to one GuardedRollout: the first one to create its primary.
pub fn check_ownership(gr: &GuardedRollout, world: &World) -> Result<(), String> {
    let owner = world
        .primary
        .as_ref()
        .and_then(|p| p.metadata.labels.as_ref())
        .and_then(|l| l.get(crate::api::LABEL_ROLLOUT));
    match owner {
        Some(other) if Some(other.as_str()) != gr.metadata.name.as_deref() => Err(format!(
            "spec.targetRef.name: Deployment {} is already managed by GuardedRollout {other}",
            gr.spec.target_ref.name
        )),
        _ => Ok(()),
    }
}

/// Checks beyond validate(): every objective a check names exists in the SloPolicy.
pub fn check_references(gr: &GuardedRollout, slo: &Referenced<SloPolicy>) -> Result<(), String> {
    let Referenced::Found(policy) = slo else {
        return Ok(());
    };
    for (i, check) in gr.spec.analysis.checks.iter().enumerate() {
        let (kind, objective) = match check.kind() {
            Ok(CheckKind::SloBurnRate(b)) => ("sloBurnRate", &b.objective),
            Ok(CheckKind::Sequential(s)) => ("sequential", &s.objective),
            _ => continue,
        };
        if !policy.spec.objectives.iter().any(|o| &o.name == objective) {
            let known: Vec<&str> = policy
                .spec
                .objectives
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            return Err(format!(
                "spec.analysis.checks[{i}].{kind}.objective: {:?} is not an objective of SloPolicy {} (has {})",
                objective,
                policy.metadata.name.as_deref().unwrap_or(""),
                known.join(", ")
            ));
        }
    }
    Ok(())
}

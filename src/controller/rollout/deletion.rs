//! Deleting a GuardedRollout: the target gets its replicas back and is waited for, then
//! the route weights, the primary's autoscaler and the managed Deployments go.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::info;

use super::{
    super::{Error, FIELD_MANAGER},
    Shared, autoscaler, observe,
};
use crate::{
    api::{GuardedRollout, LABEL_ROLLOUT, Phase},
    reasons::RolloutEvent,
    rollout::{
        deletion::{HandBack, TargetNow, hand_back as next},
        workloads::{Role, revision},
    },
};

/// How often a deletion looks at a target that is scaling up (its watch also wakes it).
const WAIT: Duration = Duration::from_secs(2);

/// The managed Deployments that belong to this rollout (a refused twin's deletion must
/// not touch another rollout's workloads).
async fn ours(api: &Api<Deployment>, gr: &GuardedRollout) -> Result<Vec<Deployment>, Error> {
    let mut found = Vec::new();
    for role in [Role::Canary, Role::Primary] {
        let d = api.get_opt(&role.name(&gr.spec.target_ref.name)).await?;
        if let Some(d) = d.filter(|d| d.labels().get(LABEL_ROLLOUT) == gr.metadata.name.as_ref()) {
            found.push(d);
        }
    }
    Ok(found)
}

/// Phase one: scales the target back and waits until it is fully available. None when
/// the managed objects may go.
pub async fn hand_back(
    gr: &GuardedRollout,
    ctx: &Shared,
    ns: &str,
) -> Result<Option<Action>, Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let managed = ours(&api, gr).await?;
    if managed.is_empty() {
        return Ok(None);
    }
    // Even with the primary gone (deleted by hand), a serving canary is handed over.
    let primary_name = Role::Primary.name(&gr.spec.target_ref.name);
    let primary = managed.iter().find(|d| d.name_any() == primary_name);
    let target_name = &gr.spec.target_ref.name;
    let Some(target) = api.get_opt(target_name).await? else {
        return Ok(None);
    };
    let Some(template) = target.spec.as_ref().map(|s| &s.template) else {
        return Ok(None);
    };
    let now = TargetNow {
        revision: revision(template),
        workload: observe::workload(&target),
    };
    let status = gr.status.clone().unwrap_or_default();
    let autoscaled = autoscaler::read(ctx, &ctx.stores.autoscalers, ns, target_name)
        .await?
        .user
        .is_some();
    let primary_size = primary
        .and_then(|p| p.spec.as_ref()?.replicas)
        .or(status.replicas);
    match next(&status, &now, primary_size, autoscaled) {
        HandBack::Done => Ok(None),
        HandBack::Wait(why) => {
            info!(%why, "deletion waits for the target");
            Ok(Some(Action::requeue(WAIT)))
        }
        HandBack::Scale { replicas, warning } => {
            if let Some(w) = warning {
                let reason = RolloutEvent::TargetNotStable;
                crate::controller::events::publish(ctx, gr, reason, w).await;
            }
            let patch = json!({"spec": {"replicas": replicas}});
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.patch(target_name, &params, &Patch::Merge(patch))
                .await?;
            ctx.metrics.wrote("deployment");
            Ok(Some(Action::requeue(WAIT)))
        }
    }
}

/// Phase two, once the target serves: route weights back, then our objects go.
pub async fn cleanup(gr: Arc<GuardedRollout>, ctx: &Shared, ns: &str) -> Result<Action, Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let managed = ours(&api, &gr).await?;
    if !managed.is_empty() {
        let router = crate::traffic::router(&gr.spec);
        router.restore(&super::io(ctx, &gr, ns)).await?;
        autoscaler::remove(ctx, &ctx.stores.autoscalers, &gr, ns).await?;
    }
    for d in managed {
        super::delete_if_present(&api, &d.name_any()).await?;
    }
    // The rollout is gone: so are its phase and weight series (outcome counters and the
    // detect/recover histograms stay, as counters do).
    let rollout = crate::telemetry::RolloutLabels {
        namespace: ns.into(),
        name: gr.name_any().into(),
    };
    ctx.metrics.canary_weight.remove(&rollout);
    for &phase in Phase::ALL {
        ctx.metrics
            .rollout_phase
            .remove(&crate::telemetry::PhaseLabels {
                namespace: rollout.namespace.clone(),
                name: rollout.name.clone(),
                phase: phase.as_str(),
            });
    }
    Ok(Action::await_change())
}

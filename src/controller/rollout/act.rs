//! Carrying out a decision: managed Deployments, the target's size, consumed
//! annotations, status and Events.

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{super::Context, observe::World};
use crate::{
    api::{GuardedRollout, GuardedRolloutStatus},
    controller::{Error, FIELD_MANAGER, events},
    reasons::RolloutEvent,
    rollout::{
        Decision, Desired, Plan,
        workloads::{ANNOTATION_REVISION, Role, managed, revision, user_template},
    },
    traffic,
};

fn annotation(d: &Deployment, key: &str) -> Option<String> {
    d.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Server-side applies the primary and the canary as the plan says, and scales the
/// target to zero once the primary is available. A route that cannot be written does not
/// hold a rolled-back canary back (it still goes to 0), but a healthy one keeps serving
/// until the route has moved off it: the error is returned in Ok, for the TrafficRouted
/// condition, and retried.
pub async fn apply_plan(
    ctx: &Context,
    stores: &super::Stores,
    gr: &GuardedRollout,
    ns: &str,
    world: &World,
    plan: &Plan,
) -> Result<Option<String>, Error> {
    let Some(target) = &world.target else {
        return Ok(None);
    };
    let owner = gr
        .controller_owner_ref(&())
        .ok_or(Error::NoOwnerReference)?;
    let name = gr.name_any();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);

    // Traffic first: weights only go up once the canary is ready (decide saw it), and go
    // down before the canary shrinks.
    let route_failed = match plan.route_weight {
        Some(weight) => route(ctx, gr, ns, world, target, weight).await,
        None => None,
    };

    let build = |role, d: &Desired| {
        managed(
            role,
            target,
            &name,
            owner.clone(),
            &d.template,
            &d.revision,
            d.replicas,
        )
    };
    if let Some(primary) = &plan.primary {
        let desired = build(Role::Primary, primary);
        ensure(
            ctx,
            stores,
            &api,
            &world.primary,
            &desired,
            &primary.revision,
        )
        .await?;
    }
    // A healthy canary's share must not go to a Service without endpoints.
    let keep_canary = route_failed.is_some() && plan.canary_waits_for_route;
    if !keep_canary {
        let desired = build(Role::Canary, &plan.canary);
        ensure(
            ctx,
            stores,
            &api,
            &world.canary,
            &desired,
            &plan.canary.revision,
        )
        .await?;
    }
    super::autoscaler::ensure(ctx, gr, &world.autoscalers).await?;

    if plan.scale_target_to_zero {
        let scaled = scale_to_zero(ctx, &api, target).await?;
        if let Some(target) = scaled {
            stores.read_target(&target);
        }
    }
    Ok(route_failed)
}

/// The target at 0 replicas, unless it is there already. Only the target that was read
/// (and judged stable) is scaled down: a changed one conflicts and is decided on again.
async fn scale_to_zero(
    ctx: &Context,
    api: &Api<Deployment>,
    target: &Deployment,
) -> Result<Option<Deployment>, Error> {
    if target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) == 0 {
        return Ok(None);
    }
    let patch = json!({
        "metadata": {"resourceVersion": target.resource_version()},
        "spec": {"replicas": 0},
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let scaled = api
        .patch(&target.name_any(), &params, &Patch::Merge(patch))
        .await?;
    ctx.metrics.wrote("deployment");
    Ok(Some(scaled))
}

/// Writes the canary weight; a refusal becomes an Event and the returned note.
async fn route(
    ctx: &Context,
    gr: &GuardedRollout,
    ns: &str,
    world: &World,
    target: &Deployment,
    weight: i32,
) -> Option<String> {
    let router = traffic::router(&gr.spec);
    let io = super::io(ctx, gr, ns);
    let e = router
        .apply(&io, &world.traffic, target, weight)
        .await
        .err()?;
    let note = format!("canary weight {weight} not written: {e}");
    events::publish(ctx, gr, RolloutEvent::RouteNotUpdated, note.clone()).await;
    Some(note)
}

/// Applies a managed Deployment unless it already runs `rev` at the desired size with
/// our labels: most reconciles then write nothing.
async fn ensure(
    ctx: &Context,
    stores: &super::Stores,
    api: &Api<Deployment>,
    current: &Option<Deployment>,
    desired: &Deployment,
    rev: &str,
) -> Result<(), Error> {
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);
    let labels = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
    };
    let up_to_date = current.as_ref().is_some_and(|c| {
        annotation(c, ANNOTATION_REVISION).as_deref() == Some(rev)
            && user_template(c).is_some_and(|t| revision(&t) == rev)
            && replicas(c) == replicas(desired)
            && labels(c) == labels(desired)
            && c.metadata.owner_references == desired.metadata.owner_references
    });
    if up_to_date {
        return Ok(());
    }
    let name = desired.metadata.name.clone().unwrap_or_default();
    // Decided on `current`: if it changed since, the apply conflicts and the next
    // reconcile decides again on what is there now.
    let mut desired = desired.clone();
    desired.metadata.resource_version = current.as_ref().and_then(|c| c.resource_version());
    let written = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await?;
    stores.wrote_managed(&written);
    ctx.metrics.wrote("deployment");
    Ok(())
}

/// Removes handled manual-action annotations; the rollout as written, if it was.
pub async fn consume(
    ctx: &Context,
    gr: &GuardedRollout,
    ns: &str,
    keys: &[&str],
) -> Result<Option<GuardedRollout>, Error> {
    if keys.is_empty() {
        return Ok(None);
    }
    let annotations: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| (k.to_string(), serde_json::Value::Null))
        .collect();
    let api: Api<GuardedRollout> = Api::namespaced(ctx.client.clone(), ns);
    let written = api
        .patch(
            &gr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
        )
        .await?;
    ctx.metrics.wrote("annotations");
    Ok(Some(written))
}

/// Events for the decision's notes and for a phase change (the first phase is the
/// adoption's, which its own Event tells).
pub async fn announce(
    ctx: &Context,
    gr: &GuardedRollout,
    previous: &GuardedRolloutStatus,
    decision: &Decision,
) {
    for note in &decision.notes {
        events::publish(ctx, gr, note.reason, note.message.clone()).await;
    }
    if previous.phase != decision.status.phase
        && let (Some(from), Some(phase)) = (previous.phase, decision.status.phase)
    {
        let message = format!(
            "{from} -> {phase}: {}",
            decision.status.message.clone().unwrap_or_default()
        );
        events::publish(ctx, gr, RolloutEvent::PhaseChanged, message).await;
    }
}

/// Against a real apiserver (the sandbox's): a managed write decided on a stale read.
#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::PostParams;

    #[tokio::test]
    async fn a_managed_write_decided_on_a_stale_read_never_lands() {
        let cp = guardrails_sandbox::ControlPlane::shared(&crate::api::crds()).unwrap();
        let client = cp.client().unwrap();
        let ns = cp.namespace(&client, "stale-managed").await.unwrap();
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let ctx = Context::new(client, None, Default::default());
        let stores = super::super::Stores::empty();
        let primary = |image: &str| -> Deployment {
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "app-primary"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app"}},
                    "template": {"metadata": {"labels": {"app": "app"}},
                        "spec": {"containers": [{"name": "app", "image": image}]}}}
            }))
            .unwrap()
        };
        let read = api
            .create(&PostParams::default(), &primary("app:1"))
            .await
            .unwrap();
        // Someone (another writer, a newer leader) changes it after it was read...
        let mut theirs = read.clone();
        theirs.spec.as_mut().unwrap().replicas = Some(3);
        let latest = api
            .replace("app-primary", &PostParams::default(), &theirs)
            .await
            .unwrap();
        // ...so the write decided on the old read is refused and changes nothing.
        let stale = ensure(&ctx, &stores, &api, &Some(read), &primary("app:2"), "r2").await;
        assert!(stale.as_ref().is_err_and(Error::is_conflict), "{stale:?}");
        let now = api.get("app-primary").await.unwrap();
        assert_eq!(now.spec.unwrap().replicas, Some(3));
        // Decided again on the latest, it lands.
        ensure(&ctx, &stores, &api, &Some(latest), &primary("app:2"), "r2")
            .await
            .unwrap();
        let image = api
            .get("app-primary")
            .await
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(image.containers[0].image.as_deref(), Some("app:2"));
    }
}

//! Gateway API traffic: the `<target>-primary` / `<target>-canary` Services and the
//! backend weights of the user's HTTPRoute.

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};

use super::super::{Context, Error, FIELD_MANAGER};
use crate::{
    api::{GatewayApiRouting, GuardedRollout},
    rollout::workloads::Role,
    traffic,
};

pub fn routes(ctx: &Context, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
    Api::namespaced_with(ctx.client.clone(), ns, &resource)
}

/// Services first (the route must not point at nothing), then the route's weights.
pub async fn apply(
    ctx: &Context,
    gr: &GuardedRollout,
    ns: &str,
    target: &Deployment,
    gw: &GatewayApiRouting,
    route: &DynamicObject,
    canary_weight: i32,
) -> Result<(), Error> {
    let owner = gr.controller_owner_ref(&()).ok_or(Error::NoNamespace)?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    for role in [Role::Primary, Role::Canary] {
        let desired = traffic::service(role, target, &gr.name_any(), owner.clone(), gw.port);
        let name = desired.name_any();
        let current = services.get_opt(&name).await?;
        let same = current.as_ref().is_some_and(|c| {
            let (c, d) = (
                c.spec.clone().unwrap_or_default(),
                desired.spec.clone().unwrap_or_default(),
            );
            c.selector == d.selector
                && c.ports
                    .as_ref()
                    .and_then(|p| p.first())
                    .map(|p| (p.port, p.target_port.clone()))
                    == d.ports
                        .as_ref()
                        .and_then(|p| p.first())
                        .map(|p| (p.port, p.target_port.clone()))
        });
        if !same {
            services
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await?;
            ctx.metrics.wrote("service");
        }
    }

    let target_name = &gr.spec.target_ref.name;
    let service = gw.service.as_deref().unwrap_or(target_name);
    let rules = route.data["spec"]["rules"].clone();
    let desired = traffic::with_backends(
        &rules,
        &traffic::backend_refs(target_name, gw.port, canary_weight),
        service,
        target_name,
    );
    let recorded = route
        .annotations()
        .contains_key(traffic::ANNOTATION_ORIGINAL_BACKENDS);
    if desired == rules && recorded {
        return Ok(());
    }
    let mut next = route.clone();
    if !recorded {
        let original =
            serde_json::to_string(&traffic::current_backends(&rules)).unwrap_or_default();
        next.annotations_mut()
            .insert(traffic::ANNOTATION_ORIGINAL_BACKENDS.into(), original);
    }
    next.data["spec"]["rules"] = desired;
    // resourceVersion from the read: a concurrent edit makes this fail and retry.
    routes(ctx, ns)
        .replace(&route.name_any(), &PostParams::default(), &next)
        .await?;
    ctx.metrics.wrote("httproute");
    Ok(())
}

/// Deletion: the route's original backends come back, then our Services go.
pub async fn remove(
    ctx: &Context,
    gr: &GuardedRollout,
    ns: &str,
    gw: &GatewayApiRouting,
) -> Result<(), Error> {
    let api = routes(ctx, ns);
    if let Some(route) = api.get_opt(&gw.http_route).await?
        && let Some(saved) = route
            .annotations()
            .get(traffic::ANNOTATION_ORIGINAL_BACKENDS)
    {
        let saved: serde_json::Value = serde_json::from_str(saved).unwrap_or_default();
        let mut next = route.clone();
        let target = &gr.spec.target_ref.name;
        let service = gw.service.as_deref().unwrap_or(target);
        next.data["spec"]["rules"] =
            traffic::restore_backends(&route.data["spec"]["rules"], &saved, service, target);
        next.annotations_mut()
            .remove(traffic::ANNOTATION_ORIGINAL_BACKENDS);
        api.replace(&gw.http_route, &PostParams::default(), &next)
            .await?;
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    for role in [Role::Canary, Role::Primary] {
        super::delete_if_present(&services, &role.name(&gr.spec.target_ref.name)).await?;
    }
    Ok(())
}

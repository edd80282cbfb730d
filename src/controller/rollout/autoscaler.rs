//! A HorizontalPodAutoscaler on the target: copied to `<target>-primary`, so the
//! autoscaler sizes the primary (the target, at 0 replicas, is not scaled by it). Spoken
//! as untyped objects so that autoscaling/v2 and, on older clusters, v2beta2 both work.

use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use super::super::{Context, Error, FIELD_MANAGER};
use crate::{
    api::{GuardedRollout, LABEL_ROLE, LABEL_ROLLOUT},
    rollout::workloads::Role,
};

/// autoscaling/v2 where served (Kubernetes 1.23+), else v2beta2.
const VERSIONS: [&str; 2] = ["v2", "v2beta2"];

fn api(ctx: &Context, ns: &str, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers");
    Api::namespaced_with(ctx.client.clone(), ns, &resource)
}

/// The autoscaling version this cluster serves, found once.
static VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The served version's API and the autoscalers of the namespace.
async fn list(
    ctx: &Context,
    ns: &str,
) -> Result<(Api<DynamicObject>, &'static str, Vec<DynamicObject>), Error> {
    let known = VERSION.get().map(std::slice::from_ref);
    let mut last = None;
    for version in known.unwrap_or(&VERSIONS) {
        let api = api(ctx, ns, version);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let _ = VERSION.set(version);
                return Ok((api, version, list.items));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => last = Some(kube::Error::Api(e)),
            // Installed with rights from before autoscalers were copied: carry on
            // without them rather than stop every rollout.
            Err(kube::Error::Api(e)) if e.code == 403 => {
                tracing::warn!(%e, "no right to list HorizontalPodAutoscalers: not copied");
                return Ok((api, version, Vec::new()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or(Error::NoNamespace, Error::from))
}

fn scales(hpa: &DynamicObject, deployment: &str) -> bool {
    let r = &hpa.data["spec"]["scaleTargetRef"];
    r["kind"] == "Deployment" && r["name"] == deployment
}

/// The user's autoscaler of the target, and ours of the primary.
pub struct Autoscalers {
    api: Api<DynamicObject>,
    /// autoscaling/v2 or autoscaling/v2beta2 (list items carry no apiVersion).
    api_version: String,
    pub user: Option<DynamicObject>,
    pub primary: Option<DynamicObject>,
}

pub async fn read(ctx: &Context, ns: &str, target: &str) -> Result<Autoscalers, Error> {
    let (api, version, items) = list(ctx, ns).await?;
    let primary_name = Role::Primary.name(target);
    let find = |name: &str, ours: bool| {
        items
            .iter()
            .find(|h| scales(h, name) && h.labels().contains_key(LABEL_ROLLOUT) == ours)
            .cloned()
    };
    Ok(Autoscalers {
        user: find(target, false),
        primary: find(&primary_name, true),
        api,
        api_version: format!("autoscaling/{version}"),
    })
}

/// The user's autoscaler pointed at the primary (pure).
pub fn for_primary(
    user: &DynamicObject,
    api_version: &str,
    target: &str,
    rollout: &str,
    owner: Value,
) -> Value {
    let mut spec = user.data["spec"].clone();
    spec["scaleTargetRef"]["name"] = json!(Role::Primary.name(target));
    json!({
        "apiVersion": api_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": Role::Primary.name(target),
            "labels": {LABEL_ROLE: Role::Primary.as_str(), LABEL_ROLLOUT: rollout},
            "ownerReferences": [owner],
        },
        "spec": spec,
    })
}

/// Copies the user's autoscaler to the primary when it differs; removes ours when the
/// user's is gone.
pub async fn ensure(ctx: &Context, gr: &GuardedRollout, a: &Autoscalers) -> Result<(), Error> {
    let target = &gr.spec.target_ref.name;
    let name = Role::Primary.name(target);
    let Some(user) = &a.user else {
        if a.primary.is_some() {
            a.api.delete(&name, &Default::default()).await?;
            ctx.metrics.wrote("autoscaler");
        }
        return Ok(());
    };
    let owner = serde_json::to_value(
        gr.controller_owner_ref(&())
            .ok_or(Error::NoOwnerReference)?,
    )
    .unwrap_or_default();
    let desired = for_primary(user, &a.api_version, target, &gr.name_any(), owner);
    if a.primary
        .as_ref()
        .is_some_and(|p| p.data["spec"] == desired["spec"])
    {
        return Ok(());
    }
    a.api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await?;
    ctx.metrics.wrote("autoscaler");
    Ok(())
}

/// Deletion: our copy goes (the user's own autoscaler takes the target again).
pub async fn remove(ctx: &Context, gr: &GuardedRollout, ns: &str) -> Result<(), Error> {
    let a = read(ctx, ns, &gr.spec.target_ref.name).await?;
    if a.primary.is_some() {
        let name = Role::Primary.name(&gr.spec.target_ref.name);
        a.api.delete(&name, &Default::default()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_gets_the_users_autoscaler_pointed_at_it() {
        let user: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 10,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}
        }))
        .unwrap();
        assert!(scales(&user, "web"));
        let copy = for_primary(
            &user,
            "autoscaling/v2",
            "web",
            "web",
            json!({"name": "web"}),
        );
        assert_eq!(copy["metadata"]["name"], "web-primary");
        assert_eq!(copy["apiVersion"], "autoscaling/v2");
        assert_eq!(copy["spec"]["scaleTargetRef"]["name"], "web-primary");
        assert_eq!(copy["spec"]["maxReplicas"], 10);
        assert_eq!(copy["spec"]["metrics"], user.data["spec"]["metrics"]);
        assert_eq!(copy["metadata"]["labels"][LABEL_ROLLOUT], "web");
    }
}

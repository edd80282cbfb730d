//! A HorizontalPodAutoscaler on the target: copied to `<target>-primary`, so the
//! autoscaler sizes the primary (the target, at 0 replicas, is not scaled by it). Spoken
//! as untyped objects so that autoscaling/v2 and, on older clusters, v2beta2 both work.

use kube::{
    Api, Resource, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use super::super::{Context, Error, FIELD_MANAGER};
use super::autoscaler_watch::{Source, Watched, default_resource};
use crate::{
    api::{GuardedRollout, LABEL_ROLE, LABEL_ROLLOUT},
    rollout::workloads::Role,
};

/// The Deployment an autoscaler scales.
pub fn scaled(hpa: &DynamicObject) -> Option<&str> {
    let r = &hpa.data["spec"]["scaleTargetRef"];
    (r["kind"] == "Deployment").then(|| r["name"].as_str())?
}

fn scales(hpa: &DynamicObject, deployment: &str) -> bool {
    scaled(hpa) == Some(deployment)
}

/// The user's autoscaler of the target, and ours of the primary.
pub struct Autoscalers {
    api: Api<DynamicObject>,
    /// autoscaling/v2 or autoscaling/v2beta2 (list items carry no apiVersion).
    api_version: String,
    /// Whether this process may read autoscalers (else it copies none and removes none).
    readable: bool,
    pub user: Option<DynamicObject>,
    pub primary: Option<DynamicObject>,
}

/// The target's autoscalers, from the watch's store (or a LIST, see autoscaler_watch).
pub async fn read(
    ctx: &Context,
    watched: &Watched,
    ns: &str,
    target: &str,
) -> Result<Autoscalers, Error> {
    let primary_name = Role::Primary.name(target);
    let ours = |h: &DynamicObject| {
        h.namespace().as_deref() == Some(ns) && (scales(h, target) || scales(h, &primary_name))
    };
    let (items, r, readable) = match watched.source() {
        Source::None => (Vec::new(), default_resource(), false),
        Source::Watch(store, r) => {
            let items = store.state_filter(ours);
            (items.iter().map(|h| h.as_ref().clone()).collect(), r, true)
        }
        Source::List(r) => {
            let api = Api::namespaced_with(ctx.client.clone(), ns, &r);
            match api.list(&ListParams::default()).await {
                Ok(list) => (list.items, r, true),
                Err(kube::Error::Api(e)) if e.code == 403 => (Vec::new(), r, false),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let find = |name: &str, ours: bool| {
        items
            .iter()
            .find(|h| scales(h, name) && h.labels().contains_key(LABEL_ROLLOUT) == ours)
            .cloned()
    };
    Ok(Autoscalers {
        user: find(target, false),
        primary: find(&primary_name, true),
        api: Api::namespaced_with(ctx.client.clone(), ns, &r),
        api_version: r.api_version.clone(),
        readable,
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
            super::delete_if_present(&a.api, &name).await?;
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
/// A copy the store has not seen yet goes too; without the right to read autoscalers
/// nothing is tried (the copy's owner reference lets the garbage collector take it).
pub async fn remove(
    ctx: &Context,
    watched: &Watched,
    gr: &GuardedRollout,
    ns: &str,
) -> Result<(), Error> {
    let a = read(ctx, watched, ns, &gr.spec.target_ref.name).await?;
    if a.readable {
        let name = Role::Primary.name(&gr.spec.target_ref.name);
        super::delete_if_present(&a.api, &name).await?;
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

//! A HorizontalPodAutoscaler on the target: copied to `<target>-primary`, so the
//! autoscaler sizes the primary (the target, at 0 replicas, is not scaled by it). Spoken
//! as untyped objects so that autoscaling/v2 and, on older clusters, v2beta2 both work.

use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        reflector::{Store, store::Writer},
        watcher,
    },
};
use serde_json::{Value, json};

use super::super::{Aborting, Context, Error, FIELD_MANAGER};
use super::stores::{Listed, trim};
use crate::{
    api::{GuardedRollout, LABEL_ROLE, LABEL_ROLLOUT},
    rollout::workloads::Role,
};

/// autoscaling/v2 where served (Kubernetes 1.23+), else v2beta2.
const VERSIONS: [&str; 2] = ["v2", "v2beta2"];

fn resource(version: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler");
    ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers")
}

fn scoped(client: &Client, namespace: Option<&str>, r: &ApiResource) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, r),
        None => Api::all_with(client.clone(), r),
    }
}

/// The HorizontalPodAutoscalers reconciles read, from a watch of the served version.
/// Without the right to list them (rights from before autoscalers were copied) there is
/// no store, and none is copied.
#[derive(Clone)]
pub struct Watched {
    store: Option<Store<DynamicObject>>,
    resource: ApiResource,
}

impl Watched {
    /// No autoscalers (tests of one write).
    #[cfg(test)]
    pub fn none() -> Self {
        Watched {
            store: None,
            resource: resource(VERSIONS[0]),
        }
    }
}

/// Which version is served and may be listed: None when none may (403 or not served).
/// Retried while the apiserver cannot say.
async fn served(client: &Client, namespace: Option<&str>) -> Option<ApiResource> {
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        let mut last = None;
        for version in VERSIONS {
            let r = resource(version);
            match scoped(client, namespace, &r)
                .list(&ListParams::default().limit(1))
                .await
            {
                Ok(_) => return Some(r),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    tracing::warn!(%e, "no right to list HorizontalPodAutoscalers: not copied");
                    return None;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(e) = last else {
            tracing::warn!("autoscaling/v2 and v2beta2 not served: autoscalers not copied");
            return None;
        };
        tracing::warn!(error = %e, "cannot tell which autoscaling version is served; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Watches the autoscalers of `namespace` (or all) in a task of its own; `listed` is
/// marked once the store has its first list, or at once when there is none to watch.
pub async fn watch(
    client: &Client,
    namespace: Option<&str>,
    listed: &Listed,
) -> (Watched, Option<Aborting>) {
    let Some(r) = served(client, namespace).await else {
        listed.set_done();
        return (
            Watched {
                store: None,
                resource: resource(VERSIONS[0]),
            },
            None,
        );
    };
    let writer = Writer::new(r.clone());
    let store = writer.as_reader();
    let stream = watcher::watcher(scoped(client, namespace, &r), watcher::Config::default())
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .inspect_ok(listed.mark());
    let task = tokio::spawn(stream.for_each(|item| async move {
        if let Err(e) = item {
            tracing::warn!(watch = "HorizontalPodAutoscalers", error = %e, "watch failed, retrying");
        }
    }));
    let watched = Watched {
        store: Some(store),
        resource: r,
    };
    (watched, Some(Aborting(task)))
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

/// The target's autoscalers, from the watch's store.
pub fn read(ctx: &Context, watched: &Watched, ns: &str, target: &str) -> Autoscalers {
    let primary_name = Role::Primary.name(target);
    let find = |name: &str, ours: bool| {
        let store = watched.store.as_ref()?;
        let found = store.find(|h| {
            h.namespace().as_deref() == Some(ns)
                && scales(h, name)
                && h.labels().contains_key(LABEL_ROLLOUT) == ours
        });
        found.map(|h| h.as_ref().clone())
    };
    let r = &watched.resource;
    Autoscalers {
        user: find(target, false),
        primary: find(&primary_name, true),
        api: Api::namespaced_with(ctx.client.clone(), ns, r),
        api_version: r.api_version.clone(),
    }
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
pub async fn remove(
    ctx: &Context,
    watched: &Watched,
    gr: &GuardedRollout,
    ns: &str,
) -> Result<(), Error> {
    let a = read(ctx, watched, ns, &gr.spec.target_ref.name);
    if a.primary.is_some() {
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

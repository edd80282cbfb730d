//! What a rollout reads, from the controller's watch stores rather than GETs.
//!
//! A store can lag the operator's own last write by a watch event. Every write carries
//! the resourceVersion it was decided on, so a stale read costs a conflict and a retry,
//! never a wrong write; the records here keep even that rare:
//! - a rollout is read from the store when the store holds the version this process last
//!   wrote or read; otherwise (our write not seen yet, or someone else's) it is read once;
//! - a managed Deployment older than the generation we last wrote is read once;
//! - a target is read in full only when its generation changes (its spec is what a
//!   rollout uses); the metadata store gives its latest resourceVersion in between.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Resource, ResourceExt,
    api::{GetParams, PartialObjectMeta},
    runtime::reflector::{ObjectRef, Store},
};

use super::{super::Error, compact::Compact};
use crate::api::{GuardedRollout, SloPolicy};

/// The annotation `kubectl apply` leaves: a second copy of the object, never read.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reconcile reads from a cached object: managed fields and the copy
/// `kubectl apply` keeps.
pub fn trim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// Keeps of a Deployment's metadata only what says which version it is.
pub fn trim_to_version(obj: &mut PartialObjectMeta<Deployment>) {
    let meta = &mut obj.metadata;
    *meta = kube::api::ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        generation: meta.generation,
        resource_version: meta.resource_version.take(),
        ..Default::default()
    };
}

/// A target as a rollout uses it: spec and metadata; of the managed fields only who
/// wrote `spec.replicas` (the status is not read).
fn trim_target(d: &mut Deployment) {
    d.status = None;
    if let Some(fields) = d.metadata.managed_fields.as_mut() {
        fields.retain(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
        });
        for m in fields.iter_mut() {
            m.fields_v1 = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                serde_json::json!({"f:spec": {"f:replicas": {}}}),
            ));
        }
    }
    if let Some(a) = d.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A cached Deployment, decoded.
fn decoded(cached: Option<&Compact<Deployment>>) -> Result<Option<Deployment>, Error> {
    let decode = |c: &Compact<Deployment>| c.get().map_err(kube::Error::SerdeError);
    Ok(cached.map(decode).transpose()?)
}

/// The watch stores a rollout reads, and what this process last wrote.
#[derive(Clone)]
pub struct Stores {
    pub rollouts: Store<GuardedRollout>,
    /// Primaries and canaries (label-selected), as JSON.
    pub owned: Store<Compact<Deployment>>,
    /// Every Deployment's name and version.
    pub versions: Store<PartialObjectMeta<Deployment>>,
    pub slo_policies: Store<SloPolicy>,
    pub autoscalers: super::autoscaler_watch::Watched,
    listed: Lists,
    written: Arc<Written>,
}

/// Whether a watch has delivered its first list, for any number of waiters. (A store's
/// own `wait_until_ready` keeps one waker, and the controller reading the store is
/// already waiting on it: a second waiter would take its wake-up.)
#[derive(Clone)]
pub struct Listed(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Listed {
    fn default() -> Self {
        Listed(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Listed {
    /// To inspect a watch stream with, after its reflector: marks the first list done.
    pub fn mark<K>(&self) -> impl FnMut(&kube::runtime::watcher::Event<K>) + use<K> {
        let done = self.0.clone();
        move |event| {
            if matches!(event, kube::runtime::watcher::Event::InitDone) {
                done.send_replace(true);
            }
        }
    }

    /// Marks the first list done (a watch that will never run has nothing to list).
    pub fn set_done(&self) {
        self.0.send_replace(true);
    }

    pub fn is_done(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn done(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }
}

/// The first-list marks of the stores.
#[derive(Clone, Default)]
pub struct Lists {
    pub rollouts: Listed,
    pub owned: Listed,
    pub versions: Listed,
    pub slo_policies: Listed,
    pub autoscalers: Listed,
}

#[derive(Default)]
struct Written {
    /// Rollout uid -> the resourceVersion last written or read.
    rollouts: Mutex<HashMap<String, String>>,
    /// Managed Deployment (namespace/name) -> the generation last written, until the
    /// store has it.
    generations: Mutex<HashMap<String, i64>>,
    /// Target (namespace/name) -> the target as last read in full, as JSON.
    targets: Mutex<HashMap<String, Arc<Compact<Deployment>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// How long a read from the watch cache may take before it is read from etcd instead (a
/// cache behind the version asked for answers 504 after 3 s, which the client retries).
const CACHED_READ: Duration = Duration::from_secs(3);

/// One GET of `name`, not older than `version` (what a watch store last saw of it): the
/// apiserver answers from its watch cache, without a read from etcd. Read from etcd
/// when the cache cannot answer soon (another apiserver behind, say). None when gone.
async fn read_since<K>(api: &Api<K>, name: &str, version: Option<&str>) -> Result<Option<K>, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Some(version) = version {
        let at = GetParams::at(version);
        match tokio::time::timeout(CACHED_READ, api.get_with(name, &at)).await {
            Ok(Ok(o)) => return Ok(Some(o)),
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => return Ok(None),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, name, "cached read failed, reading from etcd")
            }
            Err(_) => tracing::debug!(name, "cached read too slow, reading from etcd"),
        }
    }
    Ok(api.get_opt(name).await?)
}

impl Stores {
    pub fn new(
        rollouts: Store<GuardedRollout>,
        owned: Store<Compact<Deployment>>,
        versions: Store<PartialObjectMeta<Deployment>>,
        slo_policies: Store<SloPolicy>,
        autoscalers: super::autoscaler_watch::Watched,
        listed: Lists,
    ) -> Self {
        Stores {
            rollouts,
            owned,
            versions,
            slo_policies,
            autoscalers,
            listed,
            written: Default::default(),
        }
    }

    /// Stores nothing fills (tests of one write).
    #[cfg(test)]
    pub fn empty() -> Self {
        use kube::runtime::reflector::store;
        let none = super::autoscaler_watch::Watched::none();
        Self::new(
            store().0,
            store().0,
            store().0,
            store().0,
            none,
            Lists::default(),
        )
    }

    /// Waits for the first list of the stores other than the rollouts' own (which the
    /// controller itself fills).
    pub async fn others_ready(&self) {
        let l = &self.listed;
        let watches = [
            ("managed Deployments", &l.owned),
            ("Deployment metadata", &l.versions),
            ("SloPolicies", &l.slo_policies),
            ("HorizontalPodAutoscalers", &l.autoscalers),
        ];
        for (watch, listed) in watches {
            let wait = std::time::Duration::from_secs(30);
            while tokio::time::timeout(wait, listed.done()).await.is_err() {
                tracing::warn!(watch, "rollouts wait for this watch's first list");
            }
        }
    }

    /// Whether every store has its first list. Never awaited inside a reconcile: the
    /// controller feeds the rollouts' store only while its reconciles make progress.
    pub fn ready(&self) -> bool {
        let l = &self.listed;
        [
            &l.rollouts,
            &l.owned,
            &l.versions,
            &l.slo_policies,
            &l.autoscalers,
        ]
        .iter()
        .all(|l| l.is_done())
    }

    /// The latest rollout: the cached one unless this process has seen a version the
    /// store has not (then one GET). None when it is gone.
    pub async fn rollout(
        &self,
        cached: &GuardedRollout,
        api: &Api<GuardedRollout>,
    ) -> Result<Option<GuardedRollout>, Error> {
        let uid = cached.uid().unwrap_or_default();
        let seen = lock(&self.written.rollouts).get(&uid).cloned();
        if seen.is_none() || seen == cached.resource_version() {
            return Ok(Some(cached.clone()));
        }
        // A quorum read: the store may be ahead of what this process saw, or behind it.
        let latest = api.get_opt(&cached.name_any()).await?;
        if let Some(gr) = &latest {
            self.wrote_rollout(gr);
        }
        Ok(latest)
    }

    /// Records the rollout as written (or read) by this process.
    pub fn wrote_rollout(&self, gr: &GuardedRollout) {
        if let (Some(uid), Some(rv)) = (gr.uid(), gr.resource_version()) {
            lock(&self.written.rollouts).insert(uid, rv);
        }
    }

    /// Forgets what was recorded for a rollout that is gone, and for its target.
    pub fn forget_rollout(&self, gr: &GuardedRollout) {
        if let Some(uid) = gr.uid() {
            lock(&self.written.rollouts).remove(&uid);
        }
        if let Some(ns) = gr.metadata.namespace.as_deref() {
            lock(&self.written.targets).remove(&key(ns, &gr.spec.target_ref.name));
        }
    }

    /// A managed Deployment; read (GET) while the store is behind our last write of it
    /// (created or changed by this process, and the watch event not in yet).
    pub async fn managed(
        &self,
        ns: &str,
        name: &str,
        api: &Api<Deployment>,
    ) -> Result<Option<Deployment>, Error> {
        let cached = self.owned.get(&ObjectRef::new(name).within(ns));
        let k = key(ns, name);
        let wrote = lock(&self.written.generations).get(&k).copied();
        let Some(wrote) = wrote else {
            return decoded(cached.as_deref());
        };
        let behind = cached
            .as_ref()
            .is_none_or(|d| d.meta().generation < Some(wrote));
        if !behind {
            // The store has caught up: no need to remember.
            lock(&self.written.generations).remove(&k);
            return decoded(cached.as_deref());
        }
        // Read until the store has our write; forget it once the object is gone or was
        // recreated by someone else (a lower generation than ours).
        let read = api.get_opt(name).await?;
        if read
            .as_ref()
            .is_none_or(|d| d.metadata.generation < Some(wrote))
        {
            lock(&self.written.generations).remove(&k);
        }
        Ok(read)
    }

    /// Records a managed Deployment as written by this process.
    pub fn wrote_managed(&self, d: &Deployment) {
        let meta = &d.metadata;
        if let (Some(ns), Some(name), Some(generation)) =
            (&meta.namespace, &meta.name, meta.generation)
        {
            lock(&self.written.generations).insert(key(ns, name), generation);
        }
    }

    /// The target, read in full only when its generation changed since the last read.
    pub async fn target(
        &self,
        ns: &str,
        name: &str,
        api: &Api<Deployment>,
    ) -> Result<Option<Deployment>, Error> {
        let k = key(ns, name);
        let Some(version) = self.versions.get(&ObjectRef::new(name).within(ns)) else {
            lock(&self.written.targets).remove(&k);
            return Ok(None);
        };
        let known = lock(&self.written.targets).get(&k).cloned();
        if let Some(known) = known.filter(|t| t.uid() == version.uid()) {
            let (ours, theirs) = (known.meta().generation, version.metadata.generation);
            if ours > theirs {
                return decoded(Some(&known));
            }
            if ours == theirs {
                // The same spec; only its status (unread) or metadata moved on.
                let mut d = decoded(Some(&known))?;
                if let Some(d) = d.as_mut() {
                    d.metadata.resource_version = version.resource_version();
                }
                return Ok(d);
            }
        }
        let read = read_since(api, name, version.resource_version().as_deref()).await?;
        match &read {
            Some(d) => self.read_target(d),
            None => {
                lock(&self.written.targets).remove(&k);
            }
        }
        Ok(read.map(|mut d| {
            trim_target(&mut d);
            d
        }))
    }

    /// Records a target as read (or written) in full.
    pub fn read_target(&self, d: &Deployment) {
        let (Some(ns), Some(name)) = (&d.metadata.namespace, &d.metadata.name) else {
            return;
        };
        let mut d = d.clone();
        trim_target(&mut d);
        lock(&self.written.targets).insert(key(ns, name), Arc::new(Compact::new(&d)));
    }

    pub fn slo_policy(&self, ns: &str, name: &str) -> Option<SloPolicy> {
        self.slo_policies
            .get(&ObjectRef::new(name).within(ns))
            .map(|p| p.as_ref().clone())
    }
}

/// Against a real apiserver (the sandbox's), with stores that never catch up.
#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::PostParams;

    #[tokio::test]
    async fn a_read_the_watch_cache_cannot_answer_is_read_from_etcd() {
        let cp = guardrails_sandbox::ControlPlane::shared(&crate::api::crds()).unwrap();
        let client = cp.client().unwrap();
        let ns = cp.namespace(&client, "read-since").await.unwrap();
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, &ns);
        let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
        cm.metadata.name = Some("target".into());
        let created = api.create(&PostParams::default(), &cm).await.unwrap();
        let version = created.metadata.resource_version.clone();

        let cached = read_since(&api, "target", version.as_deref())
            .await
            .unwrap();
        assert_eq!(cached.unwrap().metadata.uid, created.metadata.uid);
        // A version no cache has reached yet (another apiserver's, say): the cache
        // cannot answer, etcd does.
        let ahead = read_since(&api, "target", Some("99999999999"))
            .await
            .unwrap();
        assert_eq!(ahead.unwrap().metadata.uid, created.metadata.uid);
        let gone = read_since(&api, "other", version.as_deref()).await.unwrap();
        assert!(gone.is_none());
    }

    #[tokio::test]
    async fn a_managed_deployment_is_read_until_the_store_has_our_write() {
        let cp = guardrails_sandbox::ControlPlane::shared(&crate::api::crds()).unwrap();
        let client = cp.client().unwrap();
        let ns = cp.namespace(&client, "store-behind").await.unwrap();
        let api: Api<Deployment> = Api::namespaced(client, &ns);
        let created = api
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "app-primary"},
                    "spec": {"selector": {"matchLabels": {"app": "app"}},
                        "template": {"metadata": {"labels": {"app": "app"}},
                            "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let stores = Stores::empty();
        stores.wrote_managed(&created);
        // Every reconcile while the store lacks it reads it, not only the first.
        for reconcile in 0..3 {
            let read = stores.managed(&ns, "app-primary", &api).await.unwrap();
            assert!(read.is_some(), "reconcile {reconcile} saw no primary");
        }
        // Once it is gone, the record goes too (no GET at every reconcile).
        api.delete("app-primary", &Default::default())
            .await
            .unwrap();
        let gone = stores.managed(&ns, "app-primary", &api).await.unwrap();
        assert!(gone.is_none());
        assert!(lock(&stores.written.generations).is_empty());
    }
}

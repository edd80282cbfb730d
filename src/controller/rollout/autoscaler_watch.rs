//! Where reconciles read HorizontalPodAutoscalers from: a watch of the served version
//! (autoscaling/v2, else v2beta2), found in the background so that nothing the apiserver
//! does (a hung connection, rights not granted yet) holds the controller back.
//! - With list and watch rights: a store, filled by a watch; a user's autoscaler
//!   changing its spec (or going) wakes the rollouts of its Deployment.
//! - With list but not watch (rights granted before autoscalers were watched): a LIST
//!   at every read, as before.
//! - Without the right to list them: none is read or copied, and the rights are asked
//!   for again every minute.

use std::{
    collections::{HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchParams},
    runtime::{
        WatchStreamExt,
        reflector::{Store, store::Writer},
        watcher::{self, Event},
    },
};

use super::super::Aborting;
use super::stores::{Listed, trim};

/// autoscaling/v2 where served (Kubernetes 1.23+), else v2beta2.
const VERSIONS: [&str; 2] = ["v2", "v2beta2"];
/// How often rights that were refused are asked for again.
const ASK_AGAIN: Duration = Duration::from_secs(60);

pub fn resource(version: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler");
    ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers")
}

/// The default version's resource: what the controller's trigger stream is typed with.
pub fn default_resource() -> ApiResource {
    resource(VERSIONS[0])
}

fn scoped(client: &Client, namespace: Option<&str>, r: &ApiResource) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, r),
        None => Api::all_with(client.clone(), r),
    }
}

/// Where autoscalers are read from now.
#[derive(Clone)]
pub enum Source {
    /// Nothing may be read (no right yet, or autoscaling not served).
    None,
    /// The watch's store, once it has its first list.
    Watch(Store<DynamicObject>, ApiResource),
    /// A LIST per read: the rights allow list but not watch.
    List(ApiResource),
}

/// The source, shared by the background task that finds it and the reconciles.
#[derive(Clone)]
pub struct Watched(Arc<RwLock<Source>>);

impl Watched {
    pub fn none() -> Self {
        Watched(Arc::new(RwLock::new(Source::None)))
    }

    pub fn source(&self) -> Source {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, source: Source) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = source;
    }
}

/// What the apiserver said about autoscalers.
enum Found {
    Served(ApiResource),
    Forbidden(kube::Error),
    NotServed,
    Failed(kube::Error),
}

/// Which version is served and may be listed.
async fn served(client: &Client, namespace: Option<&str>) -> Found {
    let mut failed = None;
    for version in VERSIONS {
        let r = resource(version);
        match scoped(client, namespace, &r)
            .list(&ListParams::default().limit(1))
            .await
        {
            Ok(_) => return Found::Served(r),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Found::Forbidden(kube::Error::Api(e));
            }
            Err(e) => failed = Some(e),
        }
    }
    failed.map_or(Found::NotServed, Found::Failed)
}

/// Whether the rights allow watching (a watch of one second, dropped at once).
async fn may_watch(client: &Client, namespace: Option<&str>, r: &ApiResource) -> bool {
    let params = WatchParams::default().timeout(1);
    let api = scoped(client, namespace, r);
    !matches!(api.watch(&params, "0").await, Err(kube::Error::Api(e)) if e.code == 403)
}

/// Finds the source in a task of its own (`client` has request timeouts), then watches
/// with `watch_client`. `listed` is marked once reads may start: the store's first
/// list, or at once when there is nothing to watch. The stream carries the autoscalers
/// whose spec or labels changed (or that went), once `started`.
pub fn watch(
    client: Client,
    watch_client: Client,
    namespace: Option<String>,
    listed: Listed,
    started: Arc<std::sync::atomic::AtomicBool>,
) -> (
    Watched,
    impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static,
    Aborting,
) {
    let watched = Watched::none();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = watched.clone();
    let task = tokio::spawn(async move {
        let ns = namespace.as_deref();
        let Some(r) = find(&client, ns, &shared, &listed).await else {
            return;
        };
        if !may_watch(&client, ns, &r).await {
            tracing::warn!(
                "no right to watch HorizontalPodAutoscalers: they are listed at every \
                 reconcile (grant watch as deploy/rbac.yaml does, then restart)"
            );
            shared.set(Source::List(r));
            listed.set_done();
            return;
        }
        run_watch(&watch_client, ns, r, &shared, &listed, &started, &tx).await;
    });
    let items = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (Ok(item), rx))
    });
    (watched, items, Aborting(task))
}

/// The served version, asked until the apiserver says; None when autoscaling is not
/// served at all. Reads may start (with none) while the right is refused.
async fn find(
    client: &Client,
    ns: Option<&str>,
    watched: &Watched,
    listed: &Listed,
) -> Option<ApiResource> {
    let mut wait = Duration::from_secs(1);
    let mut refused = false;
    loop {
        match served(client, ns).await {
            Found::Served(r) => return Some(r),
            Found::NotServed => {
                tracing::warn!("autoscaling/v2 and v2beta2 not served: autoscalers not copied");
                listed.set_done();
                return None;
            }
            Found::Forbidden(e) => {
                if !refused {
                    tracing::warn!(%e, "no right to list HorizontalPodAutoscalers: not copied until it is granted");
                    refused = true;
                }
                watched.set(Source::None);
                listed.set_done();
                tokio::time::sleep(ASK_AGAIN).await;
            }
            Found::Failed(e) => {
                tracing::warn!(error = %e, "cannot tell which autoscaling version is served; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Runs the watch: the store becomes the source at its first list; spec changes go out.
async fn run_watch(
    client: &Client,
    ns: Option<&str>,
    r: ApiResource,
    watched: &Watched,
    listed: &Listed,
    started: &std::sync::atomic::AtomicBool,
    tx: &tokio::sync::mpsc::UnboundedSender<DynamicObject>,
) {
    let writer = Writer::new(r.clone());
    let store = writer.as_reader();
    let stream = watcher::watcher(scoped(client, ns, &r), watcher::Config::default())
        .default_backoff()
        .modify(trim_autoscaler)
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(watch = "HorizontalPodAutoscalers", error = %e, "watch failed, retrying");
                continue;
            }
        };
        let changed = match &event {
            Event::InitDone => {
                watched.set(Source::Watch(store.clone(), r.clone()));
                listed.set_done();
                None
            }
            Event::Init => None,
            Event::Apply(h) | Event::InitApply(h) => {
                let key = (h.namespace().unwrap_or_default(), h.name_any());
                let hash = spec_hash(h);
                (seen.insert(key, hash) != Some(hash)).then(|| h.clone())
            }
            Event::Delete(h) => {
                seen.remove(&(h.namespace().unwrap_or_default(), h.name_any()));
                Some(h.clone())
            }
        };
        let Some(h) = changed else { continue };
        if started.load(std::sync::atomic::Ordering::Acquire) && tx.send(h).is_err() {
            return;
        }
    }
}

/// An autoscaler as a rollout reads it: its status (rewritten every few seconds by the
/// autoscaler controller) is never read.
fn trim_autoscaler(h: &mut DynamicObject) {
    trim(h);
    if let Some(data) = h.data.as_object_mut() {
        data.remove("status");
    }
}

/// What a rollout copies from an autoscaler: its spec and labels.
fn spec_hash(h: &DynamicObject) -> u64 {
    let mut hasher = DefaultHasher::new();
    h.data["spec"].to_string().hash(&mut hasher);
    h.labels().hash(&mut hasher);
    hasher.finish()
}

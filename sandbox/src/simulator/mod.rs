//! Plays the parts of kube-controller-manager and the kubelets for tests and the demo:
//! rolls Deployments out as the Deployment controller would, pod by pod, and serves
//! per-pod request and latency metrics that follow pod-template annotations. Prometheus
//! scrapes it. The model itself (readiness, rolling updates, lost requests, counters)
//! is in [`world`].
//!
//! Annotations on a pod template:
//! - `sim.guardrails.dev/error-rate`: share of requests answered 500 (default 0)
//! - `sim.guardrails.dev/latency-ms`: latency of every request (default 20)
//! - `sim.guardrails.dev/rps`: requests per second per ready pod (default 20)
//! - `sim.guardrails.dev/ready-after-ms`: readiness delay of a new pod (default: the
//!   simulator's, 2 s unless configured)
//! - `sim.guardrails.dev/never-ready: "true"`: pods never become ready (a bad image)
//!
//! Pods are named as the Deployment controller names them, `<deployment>-<hash>-<suffix>`,
//! with the hash taken from the pod template.

mod world;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use tokio::{net::TcpListener, task::JoinHandle};

pub use world::{Behaviour, DeploymentStatus, DeploymentView, World};

pub const ERROR_RATE: &str = "sim.guardrails.dev/error-rate";
pub const LATENCY_MS: &str = "sim.guardrails.dev/latency-ms";
pub const RPS: &str = "sim.guardrails.dev/rps";
pub const READY_AFTER_MS: &str = "sim.guardrails.dev/ready-after-ms";
pub const NEVER_READY: &str = "sim.guardrails.dev/never-ready";

/// Histogram bucket bounds, seconds.
pub const BUCKETS: [f64; 6] = [0.025, 0.05, 0.1, 0.3, 1.0, 2.5];

/// Readiness delay of new pods unless their template says otherwise. Every story runs
/// with at least this: real pods are never ready at once.
pub const DEFAULT_READY_AFTER: Duration = Duration::from_secs(2);

/// How often the simulated controllers look at the world.
const TICK: Duration = Duration::from_millis(100);

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Readiness delay of pods whose template has no `ready-after-ms` annotation.
    pub ready_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ready_after: DEFAULT_READY_AFTER,
        }
    }
}

type Shared = Arc<Mutex<World>>;

/// A running simulator. Stops when dropped.
pub struct Simulator {
    addr: String,
    world: Shared,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Watches Deployments in `namespace` (all when None) and serves /metrics, with the
    /// default readiness delay.
    pub async fn start(client: Client, namespace: Option<&str>) -> Result<Self> {
        Self::start_with(client, namespace, Config::default()).await
    }

    pub async fn start_with(
        client: Client,
        namespace: Option<&str>,
        config: Config,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let world: Shared = Default::default();
        let api: Api<Deployment> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let controller = tokio::spawn(run(api, client, world.clone(), config));
        let shared = world.clone();
        let serve = tokio::spawn(async move {
            crate::http::serve_text(listener, move || lock(&shared).render()).await
        });
        Ok(Self {
            addr,
            world,
            tasks: vec![controller, serve],
        })
    }

    /// host:port of /metrics.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Requests of `app` (the pods' `app` label) in `namespace` that found no ready pod.
    pub fn lost(&self, namespace: &str, app: &str) -> f64 {
        let mut w = lock(&self.world);
        w.advance(Instant::now());
        w.lost(namespace, app)
    }

    /// Restarts every pod of a Deployment (a crash): counters from 0, unready again.
    pub fn restart(&self, namespace: &str, deployment: &str) {
        lock(&self.world).restart(namespace, deployment, Instant::now());
    }

    /// The pods of a Deployment and whether each is ready.
    pub fn pods(&self, namespace: &str, deployment: &str) -> Vec<(String, bool)> {
        lock(&self.world).pods_of(namespace, deployment, Instant::now())
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(world: &Shared) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

/// Feeds Deployment events into the world, and writes back the status the Deployment
/// controller would every tick. The two run apart so that a slow apiserver delays
/// status writes, never the intake of new Deployments.
async fn run(api: Api<Deployment>, client: Client, world: Shared, config: Config) {
    let writer = tokio::spawn(write_statuses(client, world.clone()));
    let _abort = AbortOnDrop(writer);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let now = Instant::now();
        let mut w = lock(&world);
        match event {
            watcher::Event::Apply(d) | watcher::Event::InitApply(d) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(format!(
                        "{}/{}",
                        d.namespace().unwrap_or_default(),
                        d.name_any()
                    ));
                }
                w.apply(view(&d, &config), now);
            }
            watcher::Event::Delete(d) => {
                w.delete(&d.namespace().unwrap_or_default(), &d.name_any(), now);
            }
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitDone => {
                // Deployments deleted while the watch was down.
                let seen = listing.take().unwrap_or_default();
                for k in w.keys().into_iter().filter(|k| !seen.contains(k)) {
                    if let Some((ns, name)) = k.split_once('/') {
                        w.delete(ns, name, now);
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Status writes in flight at once, as kube-controller-manager's Deployment workers.
const STATUS_WRITERS: usize = 16;

/// Every tick, writes the statuses that changed since they were last written.
async fn write_statuses(client: Client, world: Shared) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: HashMap<String, DeploymentStatus> = HashMap::new();
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let changed: Vec<(String, DeploymentStatus)> = {
            let mut w = lock(&world);
            w.advance(now);
            let keys = w.keys();
            // A Deployment deleted and created again is written afresh.
            written.retain(|k, _| keys.contains(k));
            keys.into_iter()
                .filter_map(|k| {
                    let (ns, name) = k.split_once('/')?;
                    let s = w.status(ns, name, now)?;
                    (written.get(&k) != Some(&s)).then_some((k, s))
                })
                .collect()
        };
        let done: Vec<(String, DeploymentStatus)> = stream::iter(changed)
            .map(|(k, s)| {
                let client = client.clone();
                async move { write_status(&client, &k, &s).await.then_some((k, s)) }
            })
            .buffer_unordered(STATUS_WRITERS)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        written.extend(done);
    }
}

/// What the simulator needs of a Deployment.
fn view(d: &Deployment, config: &Config) -> DeploymentView {
    let spec = d.spec.clone().unwrap_or_default();
    let template = spec.template.clone();
    let hash = template_hash(&serde_json::to_string(&template).unwrap_or_default());
    let meta = template.metadata.unwrap_or_default();
    let ann = meta.annotations.unwrap_or_default();
    let labels = meta.labels.unwrap_or_default();
    let num = |k: &str, default: f64| ann.get(k).and_then(|v| v.parse().ok()).unwrap_or(default);
    let never = ann.get(NEVER_READY).is_some_and(|v| v == "true");
    let ready_after = Duration::from_secs_f64(
        num(READY_AFTER_MS, config.ready_after.as_secs_f64() * 1000.0) / 1000.0,
    );
    DeploymentView {
        namespace: d.namespace().unwrap_or_default(),
        name: d.name_any(),
        generation: d.metadata.generation.unwrap_or(0),
        replicas: spec.replicas.unwrap_or(1),
        hash,
        behaviour: Behaviour {
            app: labels.get("app").cloned().unwrap_or_else(|| d.name_any()),
            error_rate: num(ERROR_RATE, 0.0),
            latency: num(LATENCY_MS, 20.0) / 1000.0,
            rps: num(RPS, 20.0),
            ready_after: (!never).then_some(ready_after),
        },
        min_ready: Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64),
        progress_deadline: Duration::from_secs(
            spec.progress_deadline_seconds.unwrap_or(600).max(0) as u64,
        ),
    }
}

/// What kube-controller-manager would write. False when the write failed (retried on
/// the next tick).
async fn write_status(client: &Client, key: &str, s: &DeploymentStatus) -> bool {
    let Some((ns, name)) = key.split_once('/') else {
        return true;
    };
    let (ok, reason, message) = &s.progressing;
    let available = s.minimum_available;
    let patch = serde_json::json!({"status": {
        "observedGeneration": s.observed_generation,
        "replicas": s.replicas,
        "readyReplicas": s.ready,
        "updatedReplicas": s.updated,
        "availableReplicas": s.available,
        "unavailableReplicas": (s.replicas - s.available).max(0),
        "conditions": [
            {"type": "Available", "status": if available { "True" } else { "False" },
             "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": "simulated"},
            {"type": "Progressing", "status": if *ok { "True" } else { "False" },
             "reason": reason, "message": message},
        ],
    }});
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .is_ok()
}

/// Stable 10-character hash of a pod template (FNV-1a), like the ReplicaSet hash.
pub fn template_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| alphabet[((h >> (i * 6)) % alphabet.len() as u64) as usize] as char)
        .collect()
}

//! Plays the parts of kube-controller-manager and the kubelets for tests and the demo:
//! marks Deployments rolled out, and serves per-pod request and latency metrics whose
//! error rate and latency follow pod-template annotations. Prometheus scrapes it.
//!
//! Annotations on a pod template:
//! - `sim.guardrails.dev/error-rate`: share of requests answered 500 (default 0)
//! - `sim.guardrails.dev/latency-ms`: latency of every request (default 20)
//! - `sim.guardrails.dev/rps`: requests per second per pod (default 20)
//!
//! Pods are named as the Deployment controller names them, `<deployment>-<hash>-<suffix>`,
//! with the hash taken from the pod template.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use tokio::{net::TcpListener, task::JoinHandle};

pub const ERROR_RATE: &str = "sim.guardrails.dev/error-rate";
pub const LATENCY_MS: &str = "sim.guardrails.dev/latency-ms";
pub const RPS: &str = "sim.guardrails.dev/rps";

/// Histogram bucket bounds, seconds.
pub const BUCKETS: [f64; 6] = [0.025, 0.05, 0.1, 0.3, 1.0, 2.5];

#[derive(Debug, Clone, PartialEq)]
struct PodSpec {
    namespace: String,
    service: String,
    error_rate: f64,
    latency: f64,
    rps: f64,
}

#[derive(Debug, Clone)]
struct Pod {
    spec: PodSpec,
    /// Requests and errors counted up to `since`.
    requests: f64,
    errors: f64,
    since: Instant,
}

impl Pod {
    fn counts(&self) -> (f64, f64) {
        let elapsed = self.since.elapsed().as_secs_f64();
        let new = self.spec.rps * elapsed;
        (
            self.requests + new,
            self.errors + new * self.spec.error_rate,
        )
    }
}

type Pods = Arc<Mutex<BTreeMap<String, Pod>>>;

/// A running simulator. Stops when dropped.
pub struct Simulator {
    addr: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Watches Deployments in `namespace` (all when None) and serves /metrics.
    pub async fn start(client: Client, namespace: Option<&str>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let pods: Pods = Default::default();
        let api: Api<Deployment> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let watch = tokio::spawn(watch_deployments(api, client, pods.clone()));
        let serve = tokio::spawn(serve(listener, pods));
        Ok(Self {
            addr,
            tasks: vec![watch, serve],
        })
    }

    /// host:port of /metrics.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn watch_deployments(api: Api<Deployment>, client: Client, pods: Pods) {
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    // Pods per Deployment (namespace/name), to drop those of old templates.
    let mut owned: HashMap<String, Vec<String>> = HashMap::new();
    while let Some(event) = stream.next().await {
        let Ok(d) = event else { continue };
        let ns = d.namespace().unwrap_or_default();
        let name = d.name_any();
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let hash = template_hash(&serde_json::to_string(&template).unwrap_or_default());
        let meta = template.metadata.unwrap_or_default();
        let ann = meta.annotations.unwrap_or_default();
        let labels = meta.labels.unwrap_or_default();
        let num =
            |k: &str, default: f64| ann.get(k).and_then(|v| v.parse().ok()).unwrap_or(default);
        let spec = PodSpec {
            namespace: ns.clone(),
            service: labels.get("app").cloned().unwrap_or_else(|| name.clone()),
            error_rate: num(ERROR_RATE, 0.0),
            latency: num(LATENCY_MS, 20.0) / 1000.0,
            rps: num(RPS, 20.0),
        };
        let names: Vec<String> = (0..replicas)
            .map(|i| format!("{name}-{hash}-{}", suffix(i)))
            .collect();
        {
            let mut map = pods.lock().unwrap_or_else(|p| p.into_inner());
            let key = format!("{ns}/{name}");
            for old in owned.remove(&key).unwrap_or_default() {
                if !names.contains(&old) {
                    map.remove(&old);
                }
            }
            for pod in &names {
                let entry = map.entry(pod.clone()).or_insert_with(|| Pod {
                    spec: spec.clone(),
                    requests: 0.0,
                    errors: 0.0,
                    since: Instant::now(),
                });
                if entry.spec != spec {
                    let (r, e) = entry.counts();
                    *entry = Pod {
                        spec: spec.clone(),
                        requests: r,
                        errors: e,
                        since: Instant::now(),
                    };
                }
            }
            owned.insert(key, names);
        }
        mark_rolled_out(&client, &d, &ns, &name, replicas).await;
    }
}

/// What kube-controller-manager would write once every pod is up.
async fn mark_rolled_out(client: &Client, d: &Deployment, ns: &str, name: &str, replicas: i32) {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    let done = status.observed_generation == Some(generation)
        && status.replicas == Some(replicas)
        && status.ready_replicas.unwrap_or(0) == replicas
        && status.updated_replicas == Some(replicas);
    if done {
        return;
    }
    let patch = serde_json::json!({"status": {
        "observedGeneration": generation,
        "replicas": replicas,
        "readyReplicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
    }});
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let _ = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await;
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

fn suffix(i: i32) -> String {
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = (i as u64).wrapping_mul(2654435761).wrapping_add(7);
    (0..5)
        .map(|_| {
            let c = alphabet[(n % alphabet.len() as u64) as usize] as char;
            n /= alphabet.len() as u64;
            c
        })
        .collect()
}

fn render(pods: &Pods) -> String {
    let map = pods.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    out.push_str("# TYPE http_requests_total counter\n");
    for (name, pod) in map.iter() {
        let (requests, errors) = pod.counts();
        let l = format!(
            "namespace=\"{}\",service=\"{}\",pod=\"{name}\"",
            pod.spec.namespace, pod.spec.service
        );
        let _ = writeln!(
            out,
            "http_requests_total{{{l},code=\"200\"}} {}",
            requests - errors
        );
        let _ = writeln!(out, "http_requests_total{{{l},code=\"500\"}} {errors}");
    }
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for (name, pod) in map.iter() {
        let (requests, _) = pod.counts();
        let l = format!(
            "namespace=\"{}\",service=\"{}\",pod=\"{name}\"",
            pod.spec.namespace, pod.spec.service
        );
        for le in BUCKETS {
            let v = if pod.spec.latency <= le {
                requests
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {requests}"
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum{{{l}}} {}",
            requests * pod.spec.latency
        );
        let _ = writeln!(out, "http_request_duration_seconds_count{{{l}}} {requests}");
    }
    out
}

async fn serve(listener: TcpListener, pods: Pods) {
    crate::http::serve_text(listener, move || render(&pods)).await;
}

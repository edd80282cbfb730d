//! The simulated cluster, without IO: what kube-controller-manager's Deployment
//! controller and the kubelets would do with the Deployments the simulator watches, and
//! the request counters their pods expose. Time is an argument, so it is unit-tested.
//!
//! As in a real cluster:
//! - a new pod is ready only after its template's readiness delay, and some never are;
//! - a rolling update keeps old pods until new ones are ready (maxUnavailable 0);
//! - only ready pods receive requests; an app whose pods are all unready loses its
//!   requests, counted per app;
//! - a status-code series exists only after its first request, and counters start
//!   again from 0 when a pod restarts.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

/// What the simulator reads from a Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentView {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub replicas: i32,
    /// Pod-template hash, as the ReplicaSet hash.
    pub hash: String,
    pub behaviour: Behaviour,
    pub min_ready: Duration,
    pub progress_deadline: Duration,
}

/// How the pods of a template behave, from its annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// The `app` label: the Service (and the lost-request counter) the pods belong to.
    pub app: String,
    pub error_rate: f64,
    /// Seconds per request.
    pub latency: f64,
    /// Requests per second a ready pod serves.
    pub rps: f64,
    /// None: never ready.
    pub ready_after: Option<Duration>,
}

/// The status the Deployment controller would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub observed_generation: i64,
    pub replicas: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// The Available condition: at least the desired replicas are available.
    pub minimum_available: bool,
    /// (status, reason, message) of the Progressing condition.
    pub progressing: (bool, &'static str, String),
}

#[derive(Debug, Clone)]
struct Pod {
    namespace: String,
    hash: String,
    behaviour: Behaviour,
    started: Instant,
    /// Requests and errors served (fractional; exposed rounded down).
    requests: f64,
    errors: f64,
    /// Counted up to here.
    counted_to: Instant,
}

impl Pod {
    fn new(view: &DeploymentView, now: Instant) -> Self {
        Pod {
            namespace: view.namespace.clone(),
            hash: view.hash.clone(),
            behaviour: view.behaviour.clone(),
            started: now,
            requests: 0.0,
            errors: 0.0,
            counted_to: now,
        }
    }

    fn ready_at(&self) -> Option<Instant> {
        self.behaviour.ready_after.map(|d| self.started + d)
    }

    fn ready(&self, now: Instant) -> bool {
        self.ready_at().is_some_and(|t| t <= now)
    }

    fn available(&self, now: Instant, min_ready: Duration) -> bool {
        self.ready_at().is_some_and(|t| t + min_ready <= now)
    }

    /// Serves requests from `counted_to` to `now` while ready.
    fn advance(&mut self, now: Instant) {
        if let Some(ready) = self.ready_at() {
            let from = self.counted_to.max(ready);
            if now > from {
                let n = self.behaviour.rps * (now - from).as_secs_f64();
                self.requests += n;
                self.errors += n * self.behaviour.error_rate;
            }
        }
        self.counted_to = self.counted_to.max(now);
    }
}

#[derive(Debug, Clone)]
struct Rollout {
    view: DeploymentView,
    /// Last time a new pod became ready or the template changed.
    progressed: Instant,
}

/// Requests an app lost because none of its pods was ready.
#[derive(Debug, Clone, Default)]
struct App {
    /// An app starts losing requests only once it has served some.
    served: bool,
    lost: f64,
    /// Requests per second the app receives (the most any of its templates asks).
    rps: f64,
}

/// Pods by name.
type Pods = BTreeMap<String, Pod>;

/// Every simulated Deployment, pod and app. Pods are kept by Deployment, so that a pass
/// over the world costs in proportion to its pods, not their square.
#[derive(Debug, Default)]
pub struct World {
    deployments: BTreeMap<String, Rollout>,
    pods: BTreeMap<String, Pods>,
    apps: BTreeMap<(String, String), App>,
    clock: Option<Instant>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl World {
    /// A Deployment was created or changed.
    pub fn apply(&mut self, view: DeploymentView, now: Instant) {
        self.advance(now);
        let k = key(&view.namespace, &view.name);
        let changed = self
            .deployments
            .get(&k)
            .is_none_or(|r| r.view.hash != view.hash);
        let progressed = match self.deployments.get(&k) {
            Some(r) if !changed => r.progressed,
            _ => now,
        };
        let app = self
            .apps
            .entry((view.namespace.clone(), view.behaviour.app.clone()))
            .or_default();
        app.rps = app
            .rps
            .max(view.behaviour.rps * f64::from(view.replicas.max(1)));
        self.deployments
            .insert(k.clone(), Rollout { view, progressed });
        self.reconcile(&k, now);
    }

    /// A Deployment was deleted: its pods go with it.
    pub fn delete(&mut self, namespace: &str, name: &str, now: Instant) {
        self.advance(now);
        let k = key(namespace, name);
        self.deployments.remove(&k);
        self.pods.remove(&k);
    }

    /// Keys (namespace/name) of the Deployments known.
    pub fn keys(&self) -> BTreeSet<String> {
        self.deployments.keys().cloned().collect()
    }

    /// Restarts every pod of a Deployment: counters from 0, unready for the delay.
    pub fn restart(&mut self, namespace: &str, name: &str, now: Instant) {
        self.advance(now);
        for p in self
            .pods
            .entry(key(namespace, name))
            .or_default()
            .values_mut()
        {
            p.started = now;
            p.requests = 0.0;
            p.errors = 0.0;
            p.counted_to = now;
        }
    }

    /// Moves time to `now`: pods serve, apps without a ready pod lose requests, rolling
    /// updates move on as new pods become ready.
    pub fn advance(&mut self, now: Instant) {
        let from = self.clock.unwrap_or(now).min(now);
        // When each app's first pod became (or becomes) ready.
        let mut firsts: HashMap<(&str, &str), Instant> = HashMap::new();
        for p in self.pods.values().flat_map(|pods| pods.values()) {
            if let Some(t) = p.ready_at() {
                let first = firsts
                    .entry((p.namespace.as_str(), p.behaviour.app.as_str()))
                    .or_insert(t);
                *first = (*first).min(t);
            }
        }
        for ((ns, app), state) in self.apps.iter_mut() {
            // Ready pods only increase between two calls: the gap is [from, first ready).
            let first_ready = firsts.get(&(ns.as_str(), app.as_str())).copied();
            let ready_from = first_ready.map_or(now, |t| t.max(from).min(now));
            if state.served {
                state.lost += state.rps * (ready_from - from).as_secs_f64();
            }
            if first_ready.is_some_and(|t| t <= now) {
                state.served = true;
            }
        }
        for p in self.pods.values_mut().flat_map(|pods| pods.values_mut()) {
            p.advance(now);
        }
        self.clock = Some(now);
        let keys: Vec<String> = self.deployments.keys().cloned().collect();
        for k in keys {
            self.reconcile(&k, now);
        }
    }

    /// The Deployment controller's pass over one Deployment.
    fn reconcile(&mut self, k: &str, now: Instant) {
        let Some(r) = self.deployments.get(k) else {
            return;
        };
        let view = r.view.clone();
        let pods = self.pods.entry(k.to_string()).or_default();
        let new = scale_new(pods, &view, now);
        // maxUnavailable 0: old pods stay until as many new ones are ready.
        let ready_new = new.iter().filter(|n| pods[*n].ready(now)).count();
        let keep_old = (view.replicas.max(0) as usize).saturating_sub(ready_new);
        let mut old: Vec<String> = pods
            .iter()
            .filter(|(_, p)| p.hash != view.hash)
            .map(|(n, _)| n.clone())
            .collect();
        old.sort_by_key(|n| std::cmp::Reverse(pods[n].ready(now)));
        for gone in old.into_iter().skip(keep_old) {
            pods.remove(&gone);
        }
        let newest_ready = new
            .iter()
            .filter_map(|n| pods[n].ready_at())
            .filter(|t| *t <= now)
            .max();
        if let (Some(t), Some(r)) = (newest_ready, self.deployments.get_mut(k)) {
            r.progressed = r.progressed.max(t);
        }
    }

    /// The status a Deployment controller would report now.
    pub fn status(&self, namespace: &str, name: &str, now: Instant) -> Option<DeploymentStatus> {
        let r = self.deployments.get(&key(namespace, name))?;
        let view = &r.view;
        let pods: Vec<&Pod> = self
            .pods
            .get(&key(namespace, name))
            .map(|pods| pods.values().collect())
            .unwrap_or_default();
        let count = |f: &dyn Fn(&Pod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
        let updated = count(&|p| p.hash == view.hash);
        let ready = count(&|p| p.ready(now));
        let available = count(&|p| p.available(now, view.min_ready));
        let complete = updated == view.replicas
            && count(&|p| p.hash == view.hash && p.available(now, view.min_ready)) == view.replicas
            && pods.len() as i32 == view.replicas;
        let progressing = if complete {
            (
                true,
                "NewReplicaSetAvailable",
                format!(
                    "ReplicaSet \"{name}-{}\" has successfully progressed.",
                    view.hash
                ),
            )
        } else if now.duration_since(r.progressed) > view.progress_deadline {
            (
                false,
                "ProgressDeadlineExceeded",
                format!(
                    "ReplicaSet \"{name}-{}\" has timed out progressing.",
                    view.hash
                ),
            )
        } else {
            (
                true,
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{name}-{}\" is progressing.", view.hash),
            )
        };
        Some(DeploymentStatus {
            observed_generation: view.generation,
            replicas: pods.len() as i32,
            updated,
            ready,
            available,
            minimum_available: available >= view.replicas,
            progressing,
        })
    }

    /// Requests an app lost so far because none of its pods was ready.
    pub fn lost(&self, namespace: &str, app: &str) -> f64 {
        self.apps
            .get(&(namespace.to_string(), app.to_string()))
            .map_or(0.0, |a| a.lost)
    }

    /// Names of a Deployment's pods, with whether each is ready.
    pub fn pods_of(&self, namespace: &str, name: &str, now: Instant) -> Vec<(String, bool)> {
        self.pods
            .get(&key(namespace, name))
            .map(|pods| {
                pods.iter()
                    .map(|(n, p)| (n.clone(), p.ready(now)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A Deployment's pods of the current template, created or removed to the desired count
/// (the unready go first); their names.
fn scale_new(pods: &mut Pods, view: &DeploymentView, now: Instant) -> Vec<String> {
    let desired = view.replicas.max(0) as usize;
    let mut new: Vec<String> = pods
        .iter()
        .filter(|(_, p)| p.hash == view.hash)
        .map(|(n, _)| n.clone())
        .collect();
    new.sort_by_key(|n| pods[n].ready(now));
    while new.len() > desired {
        let gone = new.remove(0);
        pods.remove(&gone);
    }
    let mut index = 0;
    while new.len() < desired {
        let name = format!("{}-{}-{}", view.name, view.hash, suffix(index));
        index += 1;
        if pods.contains_key(&name) {
            continue;
        }
        pods.insert(name.clone(), Pod::new(view, now));
        new.push(name);
    }
    new
}

/// The 5-character pod suffix for the i-th pod of a ReplicaSet.
fn suffix(i: u64) -> String {
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = i.wrapping_mul(2654435761).wrapping_add(7);
    (0..5)
        .map(|_| {
            let c = alphabet[(n % alphabet.len() as u64) as usize] as char;
            n /= alphabet.len() as u64;
            c
        })
        .collect()
}

mod exposition;

#[cfg(test)]
mod tests;

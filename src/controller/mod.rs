//! kube-runtime controllers: observe -> decide (pure) -> act -> status.

pub mod clients;
pub mod events;
pub mod rollout;
pub mod slo_policy;

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Client, runtime::events::Reporter};

use crate::{prometheus::Sources, telemetry::Metrics};

/// Field manager of every write the operator makes.
pub use crate::FIELD_MANAGER;

/// What every reconcile needs.
#[derive(Clone)]
pub struct Context {
    /// Reads and writes of reconciles (timeouts; guarded by leadership when elected).
    pub client: Client,
    /// Watch streams.
    pub watch_client: Client,
    pub sources: Sources,
    pub metrics: Metrics,
    /// Events, sent off the reconcile's path.
    pub events: events::Outbox,
    pub evaluations: Evaluations,
    /// API resources found by discovery (the HTTPRoute version served).
    pub discovered: crate::traffic::Discovered,
    /// SloPolicies whose PrometheusRule this process has applied.
    pub rules_applied: slo_policy::rule::Applied,
    /// With leader election: whether this process leads (what it does outside the
    /// apiserver, such as a webhook call, checks it).
    pub leadership: Option<crate::leader::Leadership>,
}

impl Context {
    /// Whether this process may act: it leads, or runs without leader election.
    pub fn leads(&self) -> bool {
        self.leadership.as_ref().is_none_or(|l| l.valid())
    }
}

/// When this process last evaluated each SloPolicy (generation and time). Its status is
/// not rewritten when only timestamps change, so a rollout asks here how fresh a gate is.
#[derive(Clone, Default)]
pub struct Evaluations(Arc<std::sync::Mutex<std::collections::HashMap<String, Evaluated>>>);

/// The generation evaluated, and when.
pub type Evaluated = (Option<i64>, Time);

impl Evaluations {
    fn key(namespace: &str, name: &str) -> String {
        format!("{namespace}/{name}")
    }

    pub fn record(&self, namespace: &str, name: &str, generation: Option<i64>, at: Time) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(Self::key(namespace, name), (generation, at));
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Evaluated> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&Self::key(namespace, name)).cloned()
    }
}

impl Context {
    /// One client for calls and watches.
    pub fn new(client: Client, prometheus_url: Option<String>, metrics: Metrics) -> Arc<Self> {
        Self::with_clients(&clients::Clients::single(client), prometheus_url, metrics)
    }

    pub fn with_clients(
        clients: &clients::Clients,
        prometheus_url: Option<String>,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            client: clients.calls.clone(),
            watch_client: clients.watches.clone(),
            sources: Sources::new(prometheus_url, metrics.prometheus_queries.clone()),
            metrics: metrics.clone(),
            events: events::Outbox::new(
                clients.calls.clone(),
                Reporter {
                    controller: "guardrails".into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
                metrics,
            ),
            evaluations: Evaluations::default(),
            discovered: Default::default(),
            rules_applied: Default::default(),
            leadership: clients.leadership.clone(),
        })
    }
}

/// Runs both controllers, each in a task of its own (they share no thread), for one
/// namespace or all, until SIGTERM or SIGINT; if one ends alone, both stop rather than
/// run half an operator, and dropping this future stops both. Rollouts read SloPolicies
/// from the store the SloPolicy controller fills.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, concurrency: u16) {
    run_until(ctx, namespace, concurrency, Terminated::on_signal(), DRAIN).await
}

/// [`run`] until `terminated`. The reconciles under way may finish within `drain` of it
/// (a stalled Prometheus can hold one for minutes); whatever still runs then is stopped,
/// and the Events queued get [`EVENTS_GRACE`] to go out.
pub async fn run_until(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    terminated: Terminated,
    drain: Duration,
) {
    let (policies, writer) = kube::runtime::reflector::store();
    let listed = rollout::Listed::default();
    let slo = slo_policy::run_with(
        namespace.clone(),
        ctx.clone(),
        concurrency,
        writer,
        listed.clone(),
        terminated.clone(),
    );
    let mut slo = Aborting(tokio::spawn(slo));
    let mut rollouts = Aborting(tokio::spawn(rollout::run(
        namespace,
        ctx.clone(),
        concurrency,
        policies,
        listed,
        terminated.clone(),
    )));
    // Both end on the signal; if one ends alone, the other gets `drain` too. A panic in
    // either ends the process as it would have in one task.
    let both = async {
        let (ended, other) = tokio::select! {
            r = &mut slo.0 => (r, &mut rollouts.0),
            r = &mut rollouts.0 => (r, &mut slo.0),
        };
        if let Err(e) = ended
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
        let _ = tokio::time::timeout(drain, other).await;
    };
    let deadline = async {
        terminated.wait().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        () = both => {}
        () = deadline => tracing::warn!(?drain, "reconciles still running at the shutdown deadline: stopped"),
    }
    drop((slo, rollouts));
    ctx.events.flush(EVENTS_GRACE).await;
}

/// How long reconciles under way may run on after SIGTERM: with the Events' time and the
/// lease's release after it (`leader::RELEASE_LIMIT`), inside the chart's 30 s
/// termination grace.
pub const DRAIN: Duration = Duration::from_secs(20);
/// How long the Events still queued then may take to go out.
pub const EVENTS_GRACE: Duration = Duration::from_secs(5);

/// Whether the operator was asked to stop; clones see the same answer.
#[derive(Clone)]
pub struct Terminated(tokio::sync::watch::Receiver<bool>);

impl Terminated {
    /// Asked to stop by SIGTERM or SIGINT, listened for from this call on; a second one
    /// ends the process at once.
    pub fn on_signal() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut signals = StopSignals::listen();
        tokio::spawn(async move {
            signals.next().await;
            tx.send_replace(true);
            signals.next().await;
            tracing::warn!("second stop signal: exiting now");
            std::process::exit(130);
        });
        Terminated(rx)
    }

    /// Asked to stop when the returned sender says `true`.
    pub fn by_hand() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Terminated(rx))
    }

    /// Completes once asked to stop; never, if whoever could ask is gone.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            if rx.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// SIGTERM and SIGINT, caught (no longer ending the process) from [`StopSignals::listen`]
/// on.
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, signal = name, "cannot listen for a stop signal");
                None
            }
        };
        StopSignals {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The next SIGTERM or SIGINT; a signal that cannot be listened for never comes.
    async fn next(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = one(&mut self.term) => {}
            () = one(&mut self.int) => {}
        }
    }
}

/// A task aborted when its handle is dropped.
pub(crate) struct Aborting(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Errors a reconcile can end with. All are transient: invalid specs are not errors
/// but a status condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no namespace")]
    NoNamespace,
    #[error("object has no name or uid to own the objects it manages")]
    NoOwnerReference,
}

impl Error {
    /// Bounded name of the error kind, for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::NoNamespace => "no-namespace",
            Error::NoOwnerReference => "no-owner-reference",
        }
    }

    /// The object changed since it was read: decide again on the latest at once.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(e)) if e.code == 409)
    }

    /// When to try again after this error.
    pub fn requeue(&self) -> Duration {
        if self.is_conflict() {
            CONFLICT_REQUEUE
        } else {
            ERROR_REQUEUE
        }
    }
}

/// Requeue delay after a conflict: the next attempt reads the latest.
pub const CONFLICT_REQUEUE: Duration = Duration::from_millis(200);

/// Requeue delay after a transient error.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);

/// Writes an object's status by server-side apply with the operator's field manager,
/// on condition that the object is still at the resourceVersion the status was decided
/// on: a write decided on stale state (an old cache, a paused leader) fails with a
/// conflict and is decided again. Returns the object as written.
pub async fn write_status<K>(
    ctx: &Context,
    obj: &K,
    status: &impl serde::Serialize,
) -> Result<K, Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    use kube::{
        Api, ResourceExt,
        api::{Patch, PatchParams},
    };
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": obj.resource_version()},
        "status": status,
    });
    let written = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    ctx.metrics.wrote("status");
    Ok(written)
}

/// Adds (`on`) or removes the finalizer `name`, on condition that the object is still at
/// the resourceVersion it was read at. Returns the object as written.
pub async fn set_finalizer<K>(ctx: &Context, obj: &K, name: &str, on: bool) -> Result<K, Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    use kube::{
        Api, ResourceExt,
        api::{Patch, PatchParams},
    };
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let mut finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != name)
        .cloned()
        .collect();
    if on {
        finalizers.push(name.into());
    }
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": obj.resource_version(),
        "finalizers": finalizers,
    }});
    let written = Api::<K>::namespaced(ctx.client.clone(), &ns)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    ctx.metrics.wrote("finalizer");
    Ok(written)
}

#[cfg(test)]
mod error_tests {
    use super::*;

    fn conflict() -> Error {
        let status =
            kube::core::Status::failure("the object has been modified", "Conflict").with_code(409);
        Error::Kube(kube::Error::Api(status.boxed()))
    }

    #[test]
    fn a_conflict_is_retried_at_once() {
        assert_eq!(conflict().requeue(), CONFLICT_REQUEUE);
        assert_eq!(Error::NoNamespace.requeue(), ERROR_REQUEUE);
    }
}

/// Against a real apiserver (the sandbox's) and a Prometheus that never answers.
#[cfg(test)]
mod tests {
    use kube::{Api, api::PostParams};
    use tokio::time::Instant;

    use super::*;
    use crate::{api::SloPolicy, prometheus::QUERY_TIMEOUT};

    #[tokio::test]
    async fn a_stalled_prometheus_holds_a_stop_no_longer_than_the_drain() {
        let cp = guardrails_sandbox::ControlPlane::shared(&crate::api::crds()).unwrap();
        let client = cp.client().unwrap();
        let ns = cp.namespace(&client, "stop-deadline").await.unwrap();
        // Accepts every connection and answers none.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (accepted, mut asked) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = accepted.send(socket);
            }
        });
        let mut policy = crate::api::example_slo_policy();
        policy.metadata.namespace = None;
        Api::<SloPolicy>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
        let ctx = Context::new(client, Some(url), Default::default());
        let (stop, terminated) = Terminated::by_hand();
        let drain = Duration::from_secs(1);
        let running = tokio::spawn(run_until(ctx, Some(ns), 2, terminated, drain));
        let mut socket = tokio::time::timeout(Duration::from_secs(60), asked.recv())
            .await
            .expect("the policy's evaluation asked Prometheus")
            .unwrap();

        // The evaluation waits on Prometheus for QUERY_TIMEOUT at least.
        let stopped = Instant::now();
        stop.send_replace(true);
        let bound = QUERY_TIMEOUT - Duration::from_secs(1);
        tokio::time::timeout(bound, running)
            .await
            .expect("the stop waited on the stalled evaluation past the drain")
            .unwrap();
        assert!(stopped.elapsed() >= drain, "stopped before the drain");
        // Stopped, not left running: the evaluation's connection is closed.
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut rest));
        assert!(
            read.await.is_ok(),
            "the stalled evaluation still runs after the stop"
        );
    }
}

//! The GuardedRollout controller: observe (Deployments, SloPolicy, Prometheus) ->
//! decide (pure) -> act (server-side apply) -> status.

mod act;
mod autoscaler;
mod autoscaler_watch;
mod checks;
mod compact;
mod deletion;
mod first_pass;
mod metrics;
mod notifier;
mod observe;
mod stores;

pub use checks::pods_regex;
pub use compact::Compact;
pub use stores::{Listed, Lists, Stores, trim, trim_to_version};

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{instrument, warn};

use super::{Aborting, Context, Error};
use crate::{
    api::{GuardedRollout, GuardedRolloutStatus, LABEL_ROLLOUT, Phase, SloPolicy},
    rollout::{
        self, Blocker, Observations,
        status::{Problem, set_conditions, set_notifications_ready, set_traffic_routed},
    },
};

const CONTROLLER: &str = "guardedrollout";
/// How soon a reconcile that found the watch stores without their first list runs again.
const STORES_NOT_READY: Duration = Duration::from_millis(200);

/// Finalizer that gives the target its replicas back before the managed Deployments go.
pub const FINALIZER: &str = "guardrails.dev/finalizer";

/// What a rollout's reconcile works with: the operator's context and the watch stores.
pub struct Shared {
    ctx: Arc<Context>,
    stores: Stores,
    notifier: notifier::Notifier,
    first_passes: first_pass::FirstPasses,
}

impl std::ops::Deref for Shared {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

/// Runs the controller until the stream ends, for one namespace or all. SloPolicies are
/// read from `slo_policies`, a store the SloPolicy controller fills.
pub async fn run(
    namespace: Option<String>,
    ctx: Arc<Context>,
    concurrency: u16,
    slo_policies: Store<SloPolicy>,
    slo_policies_listed: Listed,
    terminated: super::Terminated,
) {
    let client = ctx.watch_client.clone();
    fn scoped<K>(client: &kube::Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let rollouts: Api<GuardedRollout> = scoped(&client, &namespace);
    let deployments: Api<Compact<Deployment>> = scoped(&client, &namespace);
    let metadata: Api<PartialObjectMeta<Deployment>> = scoped(&client, &namespace);
    let (rollout_store, rollout_writer) = reflector::store();
    let listed = Lists {
        slo_policies: slo_policies_listed,
        ..Default::default()
    };
    let (owned_store, owned_writer) = reflector::store();
    let (version_store, version_writer) = reflector::store();
    // A cold start's Events wait for every rollout's first status.
    let _events_held = ctx.events.hold_until(first_pass::first_statuses(
        rollout_store.clone(),
        listed.rollouts.clone(),
    ));
    let trigger = watcher::watcher(rollouts, watcher::Config::default())
        .default_backoff()
        .modify(trim)
        .reflect(rollout_writer)
        .inspect_ok(listed.rollouts.mark())
        .applied_objects();
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (owned, _owned_task) = detached(
        "managed Deployments",
        started.clone(),
        watcher::watcher(
            deployments,
            watcher::Config::default().labels(LABEL_ROLLOUT),
        )
        .default_backoff()
        .reflect(owned_writer)
        .inspect_ok(listed.owned.mark())
        .touched_objects(),
    );
    // Targets are not ours to label: watch Deployment metadata only (a template change
    // bumps the generation) and map a target to the rollouts that name it. (Every
    // Deployment: a target that carries our label is still a target.)
    let (targets, _targets_task) = detached(
        "Deployment metadata",
        started.clone(),
        watcher::watcher(metadata, watcher::Config::default())
            .default_backoff()
            .modify(stores::trim_to_version)
            .reflect(version_writer)
            .inspect_ok(listed.versions.mark())
            .touched_objects(),
    );
    let (autoscalers, autoscaler_changes, _autoscalers_task) = autoscaler_watch::watch(
        ctx.client.clone(),
        client.clone(),
        namespace.clone(),
        listed.autoscalers.clone(),
        started.clone(),
    );
    let (notifier, _notifier_task) = notifier::Notifier::start(ctx.clone(), slo_policies.clone());
    let shared = Arc::new(Shared {
        ctx,
        notifier,
        first_passes: Default::default(),
        stores: Stores::new(
            rollout_store.clone(),
            owned_store,
            version_store,
            slo_policies,
            autoscalers,
            listed.clone(),
        ),
    });
    // Reconciles start on complete Deployment and SloPolicy stores (their watches run
    // on their own, whatever the controller is doing).
    shared.stores.others_ready().await;
    started.store(true, std::sync::atomic::Ordering::Release);
    let store = rollout_store.clone();
    let scaled_store = rollout_store.clone();
    let released = shared.first_passes.released();
    Controller::for_stream(trigger, rollout_store)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        // A cold start's adoptions go on together once every rollout has its status.
        .reconcile_all_on(released)
        .owns_stream(owned)
        // (Every Deployment event scans every rollout: compared in place, nothing copied.)
        .watches_stream(targets, move |d| {
            let (ns, name) = (&d.metadata.namespace, d.metadata.name.as_deref());
            store
                .state()
                .iter()
                .filter(|gr| gr.metadata.namespace == *ns)
                .filter(|gr| Some(gr.spec.target_ref.name.as_str()) == name)
                .map(|gr| ObjectRef::from_obj(gr.as_ref()))
                .collect::<Vec<_>>()
        })
        // An autoscaler's spec changed or it went: the rollout of its Deployment (the
        // user's target, or our primary) copies it again or removes the copy.
        .watches_stream_with(
            autoscaler_changes,
            move |h| {
                let ns = &h.metadata.namespace;
                let scaled = autoscaler::scaled(&h).unwrap_or_default().to_string();
                scaled_store
                    .state()
                    .iter()
                    .filter(|gr| gr.metadata.namespace == *ns)
                    .filter(|gr| {
                        let target = &gr.spec.target_ref.name;
                        *target == scaled
                            || rollout::workloads::Role::Primary.name(target) == scaled
                    })
                    .map(|gr| ObjectRef::from_obj(gr.as_ref()))
                    .collect::<Vec<_>>()
            },
            autoscaler_watch::default_resource(),
        )
        .graceful_shutdown_on(terminated.wait())
        .run(reconcile, error_policy, shared)
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "guardedrollout reconcile failed");
            }
        })
        .await;
}

/// Runs a watch stream (and the reflector in it) in a task of its own, so that its store
/// fills at the pace of the apiserver rather than of the controller that consumes it;
/// the items reach the controller through a channel once it has `started` (before, the
/// first reconcile of every rollout covers them). The task ends with the guard.
fn detached<K: Send + 'static>(
    watch: &'static str,
    started: Arc<std::sync::atomic::AtomicBool>,
    stream: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> (
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Aborting,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = &item {
                warn!(watch, error = %e, "watch failed, retrying");
            }
            if !started.load(std::sync::atomic::Ordering::Acquire) {
                continue;
            }
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    let items = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (items, Aborting(task))
}

fn error_policy(_: Arc<GuardedRollout>, error: &Error, _: Arc<Shared>) -> Action {
    warn!(category = error.category(), %error, "transient error, retrying");
    Action::requeue(error.requeue())
}

#[instrument(skip_all, fields(namespace = gr.namespace(), name = gr.name_any()))]
pub async fn reconcile(gr: Arc<GuardedRollout>, ctx: Arc<Shared>) -> Result<Action, Error> {
    let ns = gr.namespace().ok_or(Error::NoNamespace)?;
    if !ctx.stores.ready() {
        return Ok(Action::requeue(STORES_NOT_READY));
    }
    let has_finalizer = gr.finalizers().iter().any(|f| f == FINALIZER);
    // Deletion in two phases: the target serves again before anything of ours goes.
    if gr.meta().deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        if let Some(wait) = deletion::hand_back(&gr, &ctx, &ns).await? {
            return Ok(wait);
        }
        ctx.stores.forget_rollout(&gr);
        let action = deletion::cleanup(gr.clone(), &ctx, &ns).await?;
        super::set_finalizer(&ctx, gr.as_ref(), FINALIZER, false).await?;
        return Ok(action);
    }
    apply(gr, &ctx, &ns).await
}

/// One reconcile: observe -> decide -> act -> report.
async fn apply(cached: Arc<GuardedRollout>, ctx: &Shared, ns: &str) -> Result<Action, Error> {
    let mut timer = ctx.metrics.reconcile_timer(CONTROLLER);
    // The store may not have our last status write yet: decide on the latest.
    let api: Api<GuardedRollout> = Api::namespaced(ctx.client.clone(), ns);
    let Some(gr) = ctx.stores.rollout(&cached, &api).await? else {
        return Ok(Action::await_change());
    };
    ctx.notifier.wake(&gr);
    let now = Time(Timestamp::now());
    let previous = gr.status.clone().unwrap_or_default();
    let world = observe::read(ctx, &ctx.stores, &gr, ns).await?;
    let obs = match observations(ctx, &gr, ns, &previous, &world, &now).await? {
        Ok(obs) => obs,
        Err(stopped) => {
            timer.ok();
            return Ok(stopped);
        }
    };
    let decision = decision(&gr, &previous, &obs, &now);
    let acted = carry_out(ctx, gr, ns, previous, &world, decision, &now).await?;
    timer.ok();
    Ok(acted
        .instead
        .clone()
        .unwrap_or_else(|| Action::requeue(requeue(&acted, &world))))
}

/// What decide() needs; Err(action) when a problem stops the reconcile before any
/// decision (reported once, with its condition and Event).
async fn observations(
    ctx: &Shared,
    gr: &GuardedRollout,
    ns: &str,
    previous: &GuardedRolloutStatus,
    world: &observe::World,
    now: &Time,
) -> Result<Result<Observations, Action>, Error> {
    let blocker = blocker(gr, world);
    // A target belongs to one rollout: a second one never touches it (its own spec
    // errors are reported first).
    if let Err(owned) = observe::check_ownership(gr, world) {
        let message = match &blocker {
            Some(Blocker::InvalidSpec(m)) => m.clone(),
            _ => owned,
        };
        report(ctx, gr, previous, Problem::InvalidSpec(&message), now).await?;
        return Ok(Err(Action::await_change()));
    }
    if let Some(b) = blocker.as_ref().filter(|_| previous.phase.is_none()) {
        // Nothing adopted yet: nothing to drain, say why and wait.
        let stall = rollout::Stall::Blocked(b.clone());
        report(ctx, gr, previous, stall.problem(), now).await?;
        return Ok(Err(match b {
            Blocker::InvalidSpec(_) => Action::await_change(),
            Blocker::RouteNotFound(_) => Action::requeue(Duration::from_secs(10)),
        }));
    }
    let canary = world.canary.as_ref().map(observe::workload);
    let mut obs = Observations {
        target: world.target.as_ref().and_then(observe::target),
        primary: world.primary.as_ref().map(observe::workload),
        canary: canary.clone(),
        gate: observe::gate(&world.slo, &ctx.evaluations, now),
        tick: None,
        evidence: None,
        manual: observe::manual(gr.annotations()),
        autoscaled: world.autoscalers.user.is_some(),
        blocker,
    };
    if obs.blocker.is_none() {
        read_checks(ctx, gr, ns, previous, world, &mut obs, now).await;
    }
    Ok(Ok(obs))
}

/// A tick when one is due; else the sequential checks' evidence when that is due.
async fn read_checks(
    ctx: &Context,
    gr: &GuardedRollout,
    ns: &str,
    previous: &GuardedRolloutStatus,
    world: &observe::World,
    obs: &mut Observations,
    now: &Time,
) {
    let canary = obs.canary.as_ref();
    let full = rollout::tick_due(&gr.spec, previous, canary, now);
    let evidence = !full
        && match world.evidence_every {
            Some(every) => rollout::evidence_due(previous, canary, now, every),
            None => false,
        };
    if !full && !evidence {
        return;
    }
    let reading = checks::Reading {
        slo: world.slo.found(),
        previous,
        at: Timestamp::from_second(now.0.as_second()).unwrap_or(now.0),
        only_sequential: evidence,
    };
    let results = Some(checks::tick(ctx, gr, ns, &reading).await);
    if full {
        obs.tick = results;
    } else {
        obs.evidence = results;
    }
}

/// The pure decision, with its conditions.
fn decision(
    gr: &GuardedRollout,
    previous: &GuardedRolloutStatus,
    obs: &Observations,
    now: &Time,
) -> rollout::Decision {
    let generation = gr.meta().generation;
    let mut decision = rollout::decide(&gr.spec, previous, obs, now);
    decision.status.observed_generation = generation;
    // The notifier's, as it wrote it.
    decision.status.notifications = previous.notifications.clone();
    let problem = decision.stall.as_ref().map(|s| s.problem());
    set_conditions(&mut decision.status, problem, generation, now);
    let notifying = gr.spec.notifications.is_some();
    set_notifications_ready(&mut decision.status, notifying, generation, now);
    decision
}

/// What was carried out: the rollout as last written and the decision.
struct Acted {
    gr: GuardedRollout,
    decision: rollout::Decision,
    route_failed: bool,
    /// The plan waits: what the reconcile returns instead of its usual requeue.
    instead: Option<Action>,
}

/// Status first: what was decided (e.g. the target's recorded size) survives a crash
/// before the workloads change, and acting again from it is idempotent. Then the manual
/// actions consumed, the workloads and the route; a route that refused its weights is
/// said in the TrafficRouted condition.
async fn carry_out(
    ctx: &Shared,
    mut gr: GuardedRollout,
    ns: &str,
    previous: GuardedRolloutStatus,
    world: &observe::World,
    mut decision: rollout::Decision,
    now: &Time,
) -> Result<Acted, Error> {
    if decision.status != previous {
        gr = write_status(ctx, &gr, &decision.status).await?;
        ctx.stores.wrote_rollout(&gr);
    }
    // The decision stands once its status landed: its Events and metrics go out now,
    // whatever fails next (the next reconcile starts from this status, so would not
    // announce it again).
    act::announce(ctx, &gr, &previous, &decision).await;
    metrics::record(ctx, &gr, ns, &previous, &decision.status);
    // Manual actions were read and decided on: gone before anything else can fail, so
    // none is applied twice or to a later revision.
    if let Some(consumed) = act::consume(ctx, &gr, ns, &decision.consumed).await? {
        ctx.stores.wrote_rollout(&consumed);
        gr.metadata.resource_version = consumed.metadata.resource_version;
    }
    // Nothing of ours exists before the finalizer does. Written after the first status
    // (and, on a cold start, after every rollout's first status) and acted on in the
    // next reconcile.
    if decision.plan.is_some() && !gr.finalizers().iter().any(|f| f == FINALIZER) {
        let ours = world.primary.is_some() || world.canary.is_some();
        let (gr, instead) = if !ours && ctx.first_passes.hold(&gr, &ctx.stores.rollouts.state()) {
            (gr, Action::requeue(first_pass::RECHECK))
        } else {
            let written = super::set_finalizer(ctx, &gr, FINALIZER, true).await?;
            ctx.stores.wrote_rollout(&written);
            // Its watch event brings the rollout back to act.
            (written, Action::await_change())
        };
        return Ok(Acted {
            gr,
            decision,
            route_failed: false,
            instead: Some(instead),
        });
    }
    let mut route_failed = false;
    if let Some(plan) = &decision.plan {
        let failure = act::apply_plan(ctx, &ctx.stores, &gr, ns, world, plan).await?;
        route_failed = failure.is_some();
        let mut routed = decision.status.clone();
        let generation = gr.meta().generation;
        set_traffic_routed(&mut routed, failure.as_deref(), generation, now);
        if routed != decision.status {
            gr = write_status(ctx, &gr, &routed).await?;
            ctx.stores.wrote_rollout(&gr);
            decision.status = routed;
        }
    }
    Ok(Acted {
        gr,
        decision,
        route_failed,
        instead: None,
    })
}

/// Ticks run while the canary serves; a refused route is retried soon; otherwise the
/// watches on the Deployments wake the rollout when something changes.
fn requeue(acted: &Acted, world: &observe::World) -> Duration {
    let status = &acted.decision.status;
    let mut requeue = acted.decision.requeue;
    let serving = status.canary_weight.unwrap_or(0) > 0
        && world
            .canary
            .as_ref()
            .is_some_and(|c| observe::workload(c).ready > 0);
    if serving && matches!(status.phase, Some(Phase::Progressing | Phase::Paused)) {
        requeue = requeue.min(acted.gr.spec.analysis.interval.as_duration());
        if let Some(every) = world.evidence_every {
            requeue = requeue.min(every);
        }
    }
    if acted.route_failed {
        requeue = requeue.min(super::ERROR_REQUEUE);
    }
    requeue.max(Duration::from_millis(500))
}

/// What stops canaries until a person acts: an invalid spec (the message names the
/// field) or a missing HTTPRoute.
fn blocker(gr: &GuardedRollout, world: &observe::World) -> Option<Blocker> {
    let invalid = gr
        .spec
        .validate()
        .map_err(|e| e.to_string())
        .and_then(|()| observe::check_references(gr, &world.slo));
    if let Err(message) = invalid {
        return Some(Blocker::InvalidSpec(message));
    }
    world.traffic.missing.clone().map(Blocker::RouteNotFound)
}

/// What the traffic router works with in this reconcile.
fn io<'a>(ctx: &'a Context, gr: &'a GuardedRollout, ns: &'a str) -> crate::traffic::Io<'a> {
    crate::traffic::Io {
        client: &ctx.client,
        metrics: &ctx.metrics,
        discovered: &ctx.discovered,
        rollout: gr,
        namespace: ns,
    }
}

/// Deletes `name`; already gone is fine.
pub(super) async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the rollout's status, all but `notifications`: the notifier alone writes that
/// (its mark may be newer than the status this write was decided on, and a field the
/// controller never applies is never taken back by it).
async fn write_status(
    ctx: &Shared,
    gr: &GuardedRollout,
    status: &GuardedRolloutStatus,
) -> Result<GuardedRollout, Error> {
    let status = GuardedRolloutStatus {
        notifications: None,
        ..status.clone()
    };
    super::write_status(ctx, gr, &status).await
}

/// A problem that stops the reconcile: conditions, an Event and a status write, once.
async fn report(
    ctx: &Shared,
    gr: &GuardedRollout,
    previous: &GuardedRolloutStatus,
    problem: Problem<'_>,
    now: &Time,
) -> Result<(), Error> {
    let generation = gr.meta().generation;
    let mut status = previous.clone();
    status.observed_generation = generation;
    set_conditions(&mut status, Some(problem), generation, now);
    if &status != previous {
        let message = problem.message().to_string();
        let event = problem.event();
        crate::controller::events::publish(ctx, gr, event, message).await;
        let written = write_status(ctx, gr, &status).await?;
        ctx.stores.wrote_rollout(&written);
    }
    Ok(())
}

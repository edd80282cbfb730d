//! The SloPolicy controller: every `interval`, read the indicators, write the budget,
//! burn rates, alerts and gate to status.

mod observe;
pub mod rule;

pub use observe::{observe, observe_recorded, threshold_problem};

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        predicates, reflector,
        watcher::{self, watcher},
    },
};
use tracing::{info, instrument, warn};

use super::{Context, Error, events};
use crate::{
    api::{Gate, SloPolicy, SloPolicyStatus},
    conditions::{self, ConditionType},
    reasons::{RuleCondition, SloCondition, SloEvent},
    slo,
    telemetry::{BurnRateLabels, GateLabels, ObjectiveLabels, Shared},
};

const CONTROLLER: &str = "slopolicy";

/// Runs the controller until the stream ends, for one namespace or all, filling
/// `writer`'s store (which rollouts read too).
pub async fn run(
    namespace: Option<String>,
    ctx: Arc<Context>,
    concurrency: u16,
    writer: reflector::store::Writer<SloPolicy>,
) {
    let terminated = super::Terminated::on_signal();
    run_with(
        namespace,
        ctx,
        concurrency,
        writer,
        Default::default(),
        terminated,
    )
    .await
}

/// [`run`], marking `listed` once the store has its first list.
pub async fn run_with(
    namespace: Option<String>,
    ctx: Arc<Context>,
    concurrency: u16,
    writer: reflector::store::Writer<SloPolicy>,
    listed: super::rollout::Listed,
    terminated: super::Terminated,
) {
    let api: Api<SloPolicy> = match &namespace {
        Some(ns) => Api::namespaced(ctx.watch_client.clone(), ns),
        None => Api::all(ctx.watch_client.clone()),
    };
    let reader = writer.as_reader();
    let on_delete = ctx.clone();
    // Only spec changes trigger a reconcile: our own status writes must not cause an
    // extra evaluation. Periodic evaluation comes from the requeue.
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(super::rollout::trim)
        .reflect(writer)
        .inspect_ok(listed.mark())
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(policy) = event {
                forget_metrics(&on_delete, policy);
            }
        })
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let config = kube::runtime::controller::Config::default().concurrency(concurrency);
    Controller::for_stream(stream, reader)
        .with_config(config)
        .graceful_shutdown_on(terminated.wait())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "slopolicy reconcile failed");
            }
        })
        .await;
}

fn error_policy(_: Arc<SloPolicy>, error: &Error, _: Arc<Context>) -> Action {
    warn!(category = error.category(), %error, "transient error, retrying");
    Action::requeue(error.requeue())
}

/// One evaluation of one SloPolicy: observe and decide (next_status), act (the status,
/// on condition of the resourceVersion read), report (Events once the status is written,
/// metrics).
#[instrument(skip_all, fields(namespace = policy.namespace(), name = policy.name_any()))]
pub async fn reconcile(policy: Arc<SloPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let namespace = policy.namespace().ok_or(Error::NoNamespace)?;
    // The rule's finalizer may fail (a conflict is decided again at once); the
    // evaluation never waits on it.
    let (policy, refused) = match rule::prepare(&ctx, policy.clone()).await {
        Ok(rule::Prepared::Deleted) => return Ok(Action::await_change()),
        Ok(rule::Prepared::Go(policy)) => (policy, None),
        Err(e) if e.is_conflict() || policy.meta().deletion_timestamp.is_some() => {
            return Err(e);
        }
        Err(e) => (policy, Some(e.to_string())),
    };
    let now = Timestamp::now();
    let time = Time(now);
    let previous = policy.status.clone().unwrap_or_default();
    let generation = policy.meta().generation;
    let (mut next, action) = next_status(&ctx, &policy, &previous, now).await;
    let outcome = match refused {
        Some(why) => rule::Outcome::Set(RuleCondition::Rejected, why),
        None => rule::sync(&ctx, &policy).await,
    };
    rule::report(&mut next, outcome, generation, &time);
    if slo::without_timestamps(&previous) != slo::without_timestamps(&next) {
        super::write_status(&ctx, policy.as_ref(), &next).await?;
    }
    // After the write: a conflict retries without announcing twice.
    announce(&ctx, &policy, &previous, &next).await;
    record_metrics(&ctx, &namespace, &policy.name_any(), &next);
    // The status (written or unchanged) is the gate as of now.
    ctx.evaluations
        .record(&namespace, &policy.name_any(), generation, time);
    timer.ok();
    Ok(action)
}

/// The status the policy's spec and Prometheus call for, and when to look again: an
/// invalid spec (or threshold) is said and waits for a change; otherwise every interval.
async fn next_status(
    ctx: &Context,
    policy: &SloPolicy,
    previous: &SloPolicyStatus,
    now: Timestamp,
) -> (SloPolicyStatus, Action) {
    let (time, generation, spec) = (Time(now), policy.meta().generation, &policy.spec);
    let checked = spec.validate().map_err(|e| e.to_string()).and_then(|()| {
        let indicators = slo::parse_all(&spec.objectives).map_err(|e| e.to_string())?;
        let url = spec.prometheus.as_ref().map(|p| p.url.as_str());
        let source = ctx.sources.get(url).map_err(|e| e.to_string())?;
        Ok((indicators, source))
    });
    let (indicators, source) = match checked {
        Ok(ready) => ready,
        Err(message) => {
            let next = slo::invalid(spec, generation, previous, &message, &time);
            return (next, Action::await_change());
        }
    };
    // Evaluate at a whole second so that all queries see the same data.
    let at = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let interval = spec.interval.as_duration().max(Duration::from_secs(1));
    let (namespace, name) = (policy.namespace().unwrap_or_default(), policy.name_any());
    let policy_name = (namespace.as_str(), name.as_str());
    let (observation, from, _) =
        observe_recorded(&source, spec, &indicators, policy_name, interval, at).await;
    let next = match threshold_problem(&source, spec, &observation, at).await {
        Some(m) => slo::invalid(spec, generation, previous, &m, &time),
        None => {
            let mut next = slo::evaluate(spec, generation, previous, &observation, &time);
            next.source = from.or(previous.source);
            next
        }
    };
    (next, Action::requeue(interval))
}

/// Events for gate transitions and for changes of the Ready condition's reason.
async fn announce(
    ctx: &Context,
    policy: &SloPolicy,
    previous: &SloPolicyStatus,
    next: &SloPolicyStatus,
) {
    // A first evaluation tells only of a problem: a new policy that is Open and
    // evaluated is what is expected (and a cold start of many policies would otherwise
    // write two Events for each).
    if let Some((from, to)) = slo::gate_transition(previous, next)
        && (from.is_some() || to != Gate::Open)
    {
        let from = from.map(|g| g.to_string()).unwrap_or_else(|| "none".into());
        let reason = next.gate_reason.clone().unwrap_or_default();
        info!(%from, to = ?to, %reason, "gate changed");
        let event = SloEvent::gate(to);
        let note = format!("{from} -> {to}: {reason}");
        events::publish(ctx, policy, event, note).await;
    }
    let ready = |s: &SloPolicyStatus| {
        conditions::get(&s.conditions, ConditionType::Ready)
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let (before, after) = (ready(previous), ready(next));
    if let Some((reason, message)) = &after
        && let Ok(condition) = reason.parse::<SloCondition>()
    {
        let reason_changed = match &before {
            Some(before) => &before.0 != reason,
            None => condition != SloCondition::Evaluated,
        };
        let invalid_changed =
            condition == SloCondition::InvalidSpec && before.as_ref() != after.as_ref();
        if reason_changed || invalid_changed {
            events::publish(ctx, policy, condition.event(), message.clone()).await;
        }
    }
}

/// Removes a deleted policy's series, so dashboards do not show a budget that no
/// longer exists.
fn forget_metrics(ctx: &Context, policy: &SloPolicy) {
    let (namespace, name) = (policy.namespace().unwrap_or_default(), policy.name_any());
    let m = &ctx.metrics;
    let status = policy.status.clone().unwrap_or_default();
    let series = Series::of(&namespace, &name);
    for o in &status.objectives {
        let objective = series.objective(&o.name);
        m.budget_remaining.remove(&objective);
        for window in o.burn_rates.keys() {
            m.burn_rate.remove(&series.burn_rate(&objective, window));
        }
    }
    for &gate in Gate::ALL {
        m.gate.remove(&series.gate(gate));
    }
}

fn record_metrics(ctx: &Context, namespace: &str, name: &str, status: &SloPolicyStatus) {
    let m = &ctx.metrics;
    let series = Series::of(namespace, name);
    for o in &status.objectives {
        let objective = series.objective(&o.name);
        if let Some(r) = o.error_budget_remaining {
            m.budget_remaining.get_or_create(&objective).set(r);
        }
        for (window, rate) in &o.burn_rates {
            let labels = series.burn_rate(&objective, window);
            m.burn_rate.get_or_create(&labels).set(*rate);
        }
    }
    for &gate in Gate::ALL {
        m.gate
            .get_or_create(&series.gate(gate))
            .set(i64::from(status.gate == Some(gate)));
    }
}

/// The label sets of one policy's series, sharing its namespace and name.
struct Series {
    namespace: Shared,
    name: Shared,
}

impl Series {
    fn of(namespace: &str, name: &str) -> Self {
        Series {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn objective(&self, objective: &str) -> ObjectiveLabels {
        ObjectiveLabels {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            objective: objective.into(),
        }
    }

    fn burn_rate(&self, objective: &ObjectiveLabels, window: &str) -> BurnRateLabels {
        BurnRateLabels {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            objective: objective.objective.clone(),
            window: window.to_string(),
        }
    }

    fn gate(&self, gate: Gate) -> GateLabels {
        GateLabels {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            gate: gate.as_str(),
        }
    }
}

//! Tells a rollout's webhook how its deliveries ended, apart from reconciles: a reconcile
//! only wakes the notifier, which runs one delivery task per rollout with work.
//!
//! A task reads the rollout afresh, reads its Secret, sends every pending history entry
//! oldest first and moves `status.notifications.deliveredUpTo` after each one (a write on
//! condition of the resourceVersion read). A failure is recorded in status (the
//! controller turns it into the NotificationsReady condition), published as an Event
//! and retried with backoff; the task ends when nothing is left to do.

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};
use serde_json::json;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tracing::{info, warn};

use super::super::{Aborting, Context};
use crate::{
    api::{
        GuardedRollout, GuardedRolloutStatus, HistoryEntry, NotificationFailure,
        NotificationStatus, Notifications, SloPolicy,
    },
    reasons::{NotifyCondition, RolloutEvent},
    rollout::notify::{self, Subject},
};

/// The first retry after a failure; doubled up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How long a receiver has to answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts in flight at once (each a Secret read and a few POSTs).
const SENDING: usize = 16;
/// The Secret's key that holds the webhook URL.
const URL_KEY: &str = "url";

/// A rollout with work, and its spec generation as the reconcile read it.
type Wake = (ObjectRef<GuardedRollout>, Option<i64>);

/// Wakes the notifier for a rollout; cheap, never waits.
#[derive(Clone)]
pub struct Notifier(mpsc::UnboundedSender<Wake>);

impl Notifier {
    /// Starts the notifier; it ends with the guard.
    pub fn start(ctx: Arc<Context>, policies: Store<SloPolicy>) -> (Self, Aborting) {
        crate::prometheus::install_crypto_provider();
        // No redirects: the URL is whatever the Secret says, and a message goes there only.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                warn!(error = %e, "notifier: the HTTP client's settings failed, using defaults");
                reqwest::Client::new()
            });
        let (tx, rx) = mpsc::unbounded_channel();
        let delivery = Arc::new(Delivery {
            ctx,
            policies,
            http,
            sending: tokio::sync::Semaphore::new(SENDING),
        });
        (Notifier(tx), Aborting(tokio::spawn(dispatch(delivery, rx))))
    }

    /// Asks for a delivery when the rollout, as read, has work for its webhook.
    pub fn wake(&self, gr: &GuardedRollout) {
        let status = gr.status.clone().unwrap_or_default();
        let generation = gr.meta().generation;
        if notify::wanted(&gr.spec, generation, &status) {
            let _ = self.0.send((ObjectRef::from_obj(gr), generation));
        }
    }
}

struct Delivery {
    ctx: Arc<Context>,
    policies: Store<SloPolicy>,
    http: reqwest::Client,
    /// Attempts in flight at once, over all rollouts.
    sending: tokio::sync::Semaphore,
}

/// A rollout's delivery task: woken again during it, and the latest generation woken
/// with (a new spec ends a backoff at once).
struct Running {
    again: bool,
    generation: watch::Sender<Option<i64>>,
}

/// One delivery task per rollout at a time; a wake during one runs it again after.
async fn dispatch(d: Arc<Delivery>, mut wakes: mpsc::UnboundedReceiver<Wake>) {
    let mut tasks = JoinSet::new();
    let mut ids: HashMap<tokio::task::Id, ObjectRef<GuardedRollout>> = HashMap::new();
    let mut running: HashMap<ObjectRef<GuardedRollout>, Running> = HashMap::new();
    let spawn = |tasks: &mut JoinSet<()>,
                 ids: &mut HashMap<_, _>,
                 r: ObjectRef<GuardedRollout>,
                 generation| {
        let (tx, rx) = watch::channel(generation);
        let id = tasks.spawn(deliver(d.clone(), r.clone(), rx)).id();
        ids.insert(id, r);
        Running {
            again: false,
            generation: tx,
        }
    };
    loop {
        tokio::select! {
            Some((r, generation)) = wakes.recv() => {
                if let Some(run) = running.get_mut(&r) {
                    run.again = true;
                    run.generation.send_replace(generation);
                    continue;
                }
                let run = spawn(&mut tasks, &mut ids, r.clone(), generation);
                running.insert(r, run);
            }
            Some(done) = tasks.join_next_with_id() => {
                let id = match &done {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                };
                let Some(r) = ids.remove(&id) else { continue };
                let Some(run) = running.remove(&r) else { continue };
                if run.again {
                    let generation = *run.generation.borrow();
                    let run = spawn(&mut tasks, &mut ids, r.clone(), generation);
                    running.insert(r, run);
                }
            }
            else => return,
        }
    }
}

/// Attempts until one finds nothing left to do, with backoff between them; a wake for
/// a spec generation other than the one attempted ends the wait.
async fn deliver(
    d: Arc<Delivery>,
    r: ObjectRef<GuardedRollout>,
    mut generation: watch::Receiver<Option<i64>>,
) {
    let mut backoff = FIRST_RETRY;
    loop {
        let attempted = *generation.borrow_and_update();
        if attempt(&d, &r).await {
            return;
        }
        let respec = generation.wait_for(|g| *g != attempted);
        tokio::select! {
            () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(LAST_RETRY),
            Ok(_) = respec => backoff = FIRST_RETRY,
        }
    }
}

/// Why an attempt stopped short.
enum Stop {
    /// Said in the rollout's status and an Event, then retried.
    Failed(NotifyCondition, String),
    /// The apiserver, reading or recording; retried.
    Api(kube::Error),
    /// This process no longer leads: the next leader sends from the mark.
    NotLeader,
}

impl From<kube::Error> for Stop {
    fn from(e: kube::Error) -> Self {
        Stop::Api(e)
    }
}

/// One pass over the rollout's pending entries. True when done.
async fn attempt(d: &Delivery, r: &ObjectRef<GuardedRollout>) -> bool {
    let Some(ns) = r.namespace.as_deref() else {
        return true;
    };
    let _sending = d.sending.acquire().await;
    let api: Api<GuardedRollout> = Api::namespaced(d.ctx.client.clone(), ns);
    let mut gr = match api.get_opt(&r.name).await {
        Ok(Some(gr)) => gr,
        Ok(None) => return true,
        Err(e) => {
            warn!(rollout = %r, error = %e, "notifier: reading the rollout failed, retrying");
            return false;
        }
    };
    match run(d, &api, &mut gr).await {
        Ok(()) | Err(Stop::NotLeader) => true,
        Err(Stop::Api(e)) => {
            warn!(rollout = %r, error = %e, "notifier: the apiserver failed, retrying");
            false
        }
        Err(Stop::Failed(reason, message)) => {
            warn!(rollout = %r, %reason, %message, "notification failed, retrying");
            d.ctx.metrics.notified(reason.as_str());
            report_failure(d, &api, &mut gr, reason, message).await;
            false
        }
    }
}

/// Starts or removes the mark, reads the Secret, sends what is pending and records the
/// spec generation as checked (the one read with the spec, not a later one).
async fn run(d: &Delivery, api: &Api<GuardedRollout>, gr: &mut GuardedRollout) -> Result<(), Stop> {
    let generation = gr.meta().generation;
    let Some(spec) = gr.spec.notifications.clone() else {
        // Turned off: the mark goes, so that turning them on again starts afresh.
        return Ok(write(d, api, gr, |_| None).await?);
    };
    write(d, api, gr, |s| {
        Some(
            s.notifications
                .clone()
                .unwrap_or_else(|| notify::baseline(s)),
        )
    })
    .await?;
    let status = gr.status.clone().unwrap_or_default();
    if !notify::wanted(&gr.spec, generation, &status) {
        return Ok(());
    }
    let ns = gr.namespace().unwrap_or_default();
    let url = url(d, &ns, &spec).await?;
    send_pending(d, api, gr, &spec, &url).await?;
    write(d, api, gr, |s| {
        let mut n = s.notifications.clone()?;
        n.checked_generation = generation;
        n.failure = None;
        Some(n)
    })
    .await?;
    Ok(())
}

/// Records a failure and publishes it as an Event, once per reason and message (the
/// retries that fail the same way are logged only).
async fn report_failure(
    d: &Delivery,
    api: &Api<GuardedRollout>,
    gr: &mut GuardedRollout,
    reason: NotifyCondition,
    message: String,
) {
    let recorded = gr
        .status
        .as_ref()
        .and_then(|s| s.notifications.as_ref())
        .and_then(|n| n.failure.as_ref());
    if recorded.is_some_and(|f| f.reason == reason && f.message == message) {
        return;
    }
    let note = format!("{reason}: {message}");
    super::super::events::publish(&d.ctx, gr, RolloutEvent::NotificationFailed, note).await;
    let since = Time(Timestamp::now());
    let failed = write(d, api, gr, |s| {
        let mut n = s.notifications.clone()?;
        n.failure = Some(NotificationFailure {
            reason,
            message: message.clone(),
            since: since.clone(),
        });
        Some(n)
    })
    .await;
    if let Err(e) = failed {
        warn!(rollout = %gr.name_any(), error = %e, "notifier: recording the failure failed");
    }
}

/// Sends each pending entry of a subscribed outcome and marks it handled.
async fn send_pending(
    d: &Delivery,
    api: &Api<GuardedRollout>,
    gr: &mut GuardedRollout,
    spec: &Notifications,
    url: &reqwest::Url,
) -> Result<(), Stop> {
    let status = gr.status.clone().unwrap_or_default();
    let entries: Vec<HistoryEntry> = notify::pending(&status).into_iter().cloned().collect();
    let (ns, name, uid) = (gr.namespace().unwrap_or_default(), gr.name_any(), gr.uid());
    let service = service(d, gr);
    let subject = Subject {
        namespace: &ns,
        name: &name,
        uid: uid.as_deref().unwrap_or_default(),
        service: &service,
    };
    for entry in &entries {
        if spec.outcomes.contains(&entry.outcome) {
            if !d.ctx.leads() {
                return Err(Stop::NotLeader);
            }
            post(d, url, spec, &subject, entry).await?;
            d.ctx.metrics.notified("Sent");
            info!(rollout = %name, outcome = %entry.outcome, revision = %entry.revision, "notified");
        }
        let key = notify::key(entry);
        // Taken by the receiver: whatever failed before is over.
        write(d, api, gr, |s| {
            let mut n = s.notifications.clone()?;
            n.delivered_up_to = Some(key.clone());
            n.failure = None;
            Some(n)
        })
        .await?;
    }
    Ok(())
}

/// The SloPolicy's service, else the target's name.
fn service(d: &Delivery, gr: &GuardedRollout) -> String {
    let policy = gr.spec.slo_policy_ref.as_ref().and_then(|p| {
        let ns = gr.namespace().unwrap_or_default();
        d.policies.get(&ObjectRef::new(&p.name).within(&ns))
    });
    match policy {
        Some(p) => p.spec.service.clone().unwrap_or_else(|| p.name_any()),
        None => gr.spec.target_ref.name.clone(),
    }
}

/// The webhook URL from the Secret.
async fn url(d: &Delivery, ns: &str, spec: &Notifications) -> Result<reqwest::Url, Stop> {
    let name = &spec.secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(d.ctx.client.clone(), ns);
    let secret = match secrets.get_opt(name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            let message = format!("Secret {ns}/{name} not found");
            return Err(Stop::Failed(NotifyCondition::SecretNotFound, message));
        }
        Err(kube::Error::Api(e)) if e.code == 403 => {
            let message = format!(
                "the operator may not read Secret {ns}/{name}: name it in the chart's notifications.secretNames"
            );
            return Err(Stop::Failed(NotifyCondition::SecretNotFound, message));
        }
        Err(e) => return Err(Stop::Api(e)),
    };
    let invalid = |why: &str| {
        let message = format!("Secret {ns}/{name}: {why}");
        Stop::Failed(NotifyCondition::SecretInvalid, message)
    };
    let raw = secret
        .data
        .as_ref()
        .and_then(|data| data.get(URL_KEY))
        .ok_or_else(|| invalid("has no key `url`"))?;
    let text = std::str::from_utf8(&raw.0).map_err(|_| invalid("`url` is not text"))?;
    let url = reqwest::Url::parse(text.trim()).map_err(|_| invalid("`url` is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("`url` is not http(s)"));
    }
    Ok(url)
}

/// POSTs one message; a 2xx answer is a delivery. Errors never include the URL, which
/// is a secret.
async fn post(
    d: &Delivery,
    url: &reqwest::Url,
    spec: &Notifications,
    subject: &Subject<'_>,
    entry: &HistoryEntry,
) -> Result<(), Stop> {
    let body = notify::message(spec, subject, entry);
    let sent = d
        .http
        .post(url.clone())
        .timeout(SEND_TIMEOUT)
        .header("Idempotency-Key", subject.idempotency_key(entry))
        .json(&body)
        .send()
        .await;
    let failed = |message: String| Stop::Failed(NotifyCondition::ReceiverFailed, message);
    match sent {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(failed(format!("the receiver answered {}", r.status()))),
        Err(e) => Err(failed(format!(
            "the receiver did not answer: {}",
            e.without_url()
        ))),
    }
}

/// Sets the rollout's `status.notifications` to what `change` makes of its status, on
/// condition of the resourceVersion read; on a conflict, reads the latest and changes
/// that. Nothing is written when nothing changes.
async fn write(
    d: &Delivery,
    api: &Api<GuardedRollout>,
    gr: &mut GuardedRollout,
    change: impl Fn(&GuardedRolloutStatus) -> Option<NotificationStatus>,
) -> Result<(), kube::Error> {
    for _ in 0..5 {
        let status = gr.status.clone().unwrap_or_default();
        let next = change(&status);
        if next == status.notifications {
            return Ok(());
        }
        let value = next.map(|n| {
            json!({
                "deliveredUpTo": n.delivered_up_to,
                "checkedGeneration": n.checked_generation,
                "failure": n.failure,
            })
        });
        let patch = json!({
            "metadata": {"resourceVersion": gr.resource_version()},
            "status": {"notifications": value},
        });
        let params = PatchParams::default();
        match api
            .patch_status(&gr.name_any(), &params, &Patch::Merge(patch))
            .await
        {
            Ok(written) => {
                *gr = written;
                d.ctx.metrics.wrote("status");
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => match api.get_opt(&gr.name_any()).await? {
                Some(latest) => *gr = latest,
                None => return Ok(()),
            },
            Err(e) => return Err(e),
        }
    }
    Err(kube::Error::Api(
        kube::core::Status::failure("the rollout kept changing", "Conflict")
            .with_code(409)
            .boxed(),
    ))
}

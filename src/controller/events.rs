//! Kubernetes Events with stable reasons.

use std::{
    hash::{Hash, Hasher},
    sync::{Arc, OnceLock},
    time::Duration,
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tokio::sync::{mpsc, oneshot, watch};

use super::Context;
use crate::reasons::{RolloutEvent, SloEvent};
use crate::telemetry::Metrics;

/// An Event reason of one of the vocabularies, which knows whether it is a Warning.
pub trait Reason: Copy {
    fn as_str(self) -> &'static str;
    fn is_warning(self) -> bool;
}

impl Reason for RolloutEvent {
    fn as_str(self) -> &'static str {
        RolloutEvent::as_str(self)
    }
    fn is_warning(self) -> bool {
        RolloutEvent::is_warning(self)
    }
}

impl Reason for SloEvent {
    fn as_str(self) -> &'static str {
        SloEvent::as_str(self)
    }
    fn is_warning(self) -> bool {
        SloEvent::is_warning(self)
    }
}

/// Publishes an Event on `obj`: queues it for the outbox, which sends it after the
/// reconcile has moved on; failures are logged, never fatal.
pub async fn publish<K>(ctx: &Context, obj: &K, reason: impl Reason, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let (warning, reason) = (reason.is_warning(), reason.as_str());
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(truncate(note, 1000)),
        action: reason.to_string(),
        secondary: None,
    };
    ctx.events.send(event, obj.object_ref(&())).await;
}

/// Sends Events from queues of its own, as client-go's broadcaster does, so a reconcile
/// never waits on an Event's round trip (a cold start posts one per rollout). Each object
/// has one queue, chosen by its uid, so its Events keep their order; a full queue makes
/// the publisher wait, so none is dropped. The queues start with the first Event; clones
/// share them. A cold start holds them back ([`Outbox::hold_until`]).
#[derive(Clone)]
pub struct Outbox {
    client: Client,
    reporter: Reporter,
    metrics: Metrics,
    queues: Arc<OnceLock<Vec<mpsc::Sender<Queued>>>>,
    /// Whether queued Events may go out.
    open: Arc<watch::Sender<bool>>,
}

/// Keeps the outbox closed until its condition is met; dropped, it opens the outbox.
#[must_use = "dropping the hold opens the outbox at once"]
pub struct Held {
    task: tokio::task::JoinHandle<()>,
    open: Arc<watch::Sender<bool>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.task.abort();
        self.open.send_replace(true);
    }
}

enum Queued {
    Event(Box<(Event, ObjectReference)>),
    /// Answered once every Event queued before it was sent.
    Flush(oneshot::Sender<()>),
}

/// Events in flight at once: few, so that status writes go first when the apiserver is
/// busy (a cold start queues one Event per rollout).
const QUEUES: usize = 4;
/// Events a queue holds before publishers wait: deep enough for the Events of a cold
/// start of 1,000 rollouts (an Event queued is about half a KiB).
const QUEUED: usize = 512;

impl Outbox {
    pub fn new(client: Client, reporter: Reporter, metrics: Metrics) -> Self {
        Self {
            client,
            reporter,
            metrics,
            queues: Default::default(),
            open: Arc::new(watch::channel(true).0),
        }
    }

    /// Holds every Event queued from now until `open` completes (or the returned guard
    /// goes, or a flush, or a publisher finds its queue full): a cold start's status
    /// writes go before its Events. One hold at a time: the end of any opens the outbox.
    pub fn hold_until(&self, open: impl Future<Output = ()> + Send + 'static) -> Held {
        self.open.send_replace(false);
        let gate = self.open.clone();
        let task = tokio::spawn(async move {
            open.await;
            gate.send_replace(true);
        });
        Held {
            task,
            open: self.open.clone(),
        }
    }

    async fn send(&self, event: Event, reference: ObjectReference) {
        let queue = self.queue(reference.uid.as_deref().unwrap_or_default());
        let queued = Queued::Event(Box::new((event, reference)));
        // A full queue opens a held outbox: reconciles must not wait on a hold that
        // waits on them. (The queue's task ends only with the outbox.)
        if let Err(mpsc::error::TrySendError::Full(queued)) = queue.try_send(queued) {
            self.open.send_replace(true);
            let _ = queue.send(queued).await;
        }
    }

    /// Waits (up to `limit`) until every Event queued so far was sent or failed; a held
    /// outbox opens.
    pub async fn flush(&self, limit: Duration) {
        self.open.send_replace(true);
        let Some(queues) = self.queues.get() else {
            return;
        };
        let flushed = futures::future::join_all(queues.iter().map(|q| async move {
            let (done, sent) = oneshot::channel();
            if q.send(Queued::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        }));
        if tokio::time::timeout(limit, flushed).await.is_err() {
            tracing::warn!(?limit, "events still queued at shutdown");
        }
    }

    fn queue(&self, uid: &str) -> &mpsc::Sender<Queued> {
        let queues = self.queues.get_or_init(|| {
            (0..QUEUES)
                .map(|_| {
                    let (tx, rx) = mpsc::channel(QUEUED);
                    let sender = Sender {
                        client: self.client.clone(),
                        reporter: self.reporter.clone(),
                        metrics: self.metrics.clone(),
                    };
                    tokio::spawn(sender.run(rx, self.open.subscribe()));
                    tx
                })
                .collect()
        });
        let mut hash = std::hash::DefaultHasher::new();
        uid.hash(&mut hash);
        &queues[hash.finish() as usize % QUEUES]
    }
}

/// One queue's task.
struct Sender {
    client: Client,
    reporter: Reporter,
    metrics: Metrics,
}

impl Sender {
    async fn run(self, mut queue: mpsc::Receiver<Queued>, mut open: watch::Receiver<bool>) {
        while let Some(queued) = queue.recv().await {
            let (event, reference) = match queued {
                Queued::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
                Queued::Event(e) => *e,
            };
            // The outbox outlives its queues' tasks.
            let _ = open.wait_for(|open| *open).await;
            // A recorder per Event: each one is its own Event, never a series of them.
            let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
            match recorder.publish(&event, &reference).await {
                Ok(()) => self.metrics.wrote("event"),
                Err(e) => {
                    tracing::warn!(error = %e, reason = %event.reason, "publishing event failed")
                }
            }
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Against a real apiserver (the sandbox's).
#[cfg(test)]
mod tests {
    use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event as Posted};
    use kube::{
        Api,
        api::{ListParams, PostParams},
    };

    use super::*;
    use crate::reasons::RolloutEvent;

    #[tokio::test]
    async fn an_objects_events_go_out_in_order_and_a_flush_waits_for_them() {
        let cp = guardrails_sandbox::ControlPlane::shared(&crate::api::crds()).unwrap();
        let client = cp.client().unwrap();
        let ns = cp.namespace(&client, "outbox").await.unwrap();
        let ctx = Context::new(client.clone(), None, Default::default());
        let mut subjects = Vec::new();
        for name in ["a", "b"] {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(name.into());
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            subjects.push(api.create(&PostParams::default(), &cm).await.unwrap());
        }
        let sent = 40;
        for i in 0..sent {
            let subject = &subjects[i % 2];
            publish(&ctx, subject, RolloutEvent::StepCompleted, format!("{i}")).await;
        }
        ctx.events.flush(Duration::from_secs(30)).await;

        let mut posted = Api::<Posted>::namespaced(client, &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        assert_eq!(posted.len(), sent, "every Event queued went out");
        posted.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        for subject in ["a", "b"] {
            let notes: Vec<usize> = posted
                .iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(subject))
                .map(|e| e.note.as_deref().unwrap().parse().unwrap())
                .collect();
            let mut ordered = notes.clone();
            ordered.sort();
            assert_eq!(notes, ordered, "{subject}'s Events in the order published");
        }
    }

    #[tokio::test]
    async fn a_held_outbox_sends_nothing_until_its_hold_ends_or_a_queue_fills() {
        let cp = guardrails_sandbox::ControlPlane::shared(&crate::api::crds()).unwrap();
        let client = cp.client().unwrap();
        let ns = cp.namespace(&client, "outbox-held").await.unwrap();
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("subject".into());
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let subject = api.create(&PostParams::default(), &cm).await.unwrap();
        let posted = || async {
            Api::<Posted>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len()
        };
        let ctx = Context::new(client.clone(), None, Default::default());
        let (release, released) = oneshot::channel::<()>();
        let _held = ctx.events.hold_until(async {
            let _ = released.await;
        });
        for i in 0..3 {
            publish(&ctx, &subject, RolloutEvent::Adopted, format!("{i}")).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(posted().await, 0, "a held outbox sent an Event");
        let arrive = |n: usize, why: &'static str| async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while posted().await < n {
                assert!(tokio::time::Instant::now() < deadline, "{why}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        // No flush here: a flush opens the outbox itself.
        release.send(()).unwrap();
        arrive(3, "the held Events did not go out after the hold").await;
        let held = ctx.events.hold_until(futures::future::pending());
        publish(&ctx, &subject, RolloutEvent::Adopted, "3".into()).await;
        drop(held);
        arrive(4, "dropping the hold did not open the outbox").await;
        let _held = ctx.events.hold_until(futures::future::pending());
        publish(&ctx, &subject, RolloutEvent::Adopted, "4".into()).await;
        ctx.events.flush(Duration::from_secs(10)).await;
        assert_eq!(posted().await, 5, "a flush sends what is held");

        // Held for good: more Events than one queue holds (its task holds one more)
        // do not make the publisher wait.
        let ctx = Context::new(client.clone(), None, Default::default());
        let _held = ctx.events.hold_until(futures::future::pending());
        let publishing = async {
            for i in 0..QUEUED + 2 {
                publish(&ctx, &subject, RolloutEvent::StepCompleted, format!("{i}")).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), publishing)
            .await
            .expect("a publisher waited on a hold that never ends");
    }
}

//! A cold start looks at every rollout before it adopts any. Adopting a rollout takes
//! several writes and as many reconciles, and the controller's queue runs due
//! reconciles in no particular order: without a rule, the last rollouts to get a status
//! would wait behind the adoption of the first ones. So, for a while after the
//! controller starts, a rollout that has its status but nothing of ours yet (no
//! finalizer, no managed Deployment) waits while other rollouts still have no status.
//!
//! The wait is bounded: a rollout whose status cannot be written (a rejected write, a
//! failing webhook) holds the others back for at most [`WINDOW`] after the first
//! reconcile. Rollouts already adopted (a canary in flight included) never wait, nor
//! does one whose managed Deployments exist although its finalizer was removed.
//!
//! A waiting rollout is not reconciled again every moment (a thousand of them would take
//! the cores the first statuses need): the first reconcile that finds the wait over
//! releases them all at once ([`FirstPasses::released`]), and each looks again after
//! [`RECHECK`] in case no reconcile does (the last first status may be one that
//! adopts nothing, an invalid spec say).
//!
//! Events wait too: a cold start announces every adoption, and those POSTs would take
//! the apiserver's time from the statuses still to write ([`first_statuses`]).

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kube::{ResourceExt, runtime::reflector::Store};
use tokio::{sync::watch, time::Instant};

use super::{FINALIZER, Listed};
use crate::api::GuardedRollout;

/// How long after the start adoptions may wait for other rollouts' first status.
pub const WINDOW: Duration = Duration::from_secs(30);
/// How soon a rollout whose adoption waits looks again if nothing released it.
pub const RECHECK: Duration = Duration::from_secs(5);
/// How often the hold on Events looks whether every rollout has its status.
const SETTLED_EVERY: Duration = Duration::from_millis(250);

/// Completes once every rollout in `rollouts` has a status (those being deleted
/// aside), looking from their first list on, and at most [`WINDOW`] after that list (or
/// after the start, if the list takes that long).
pub async fn first_statuses(rollouts: Store<GuardedRollout>, listed: Listed) {
    let _ = tokio::time::timeout(WINDOW, listed.done()).await;
    let settled = async {
        while rollouts.state().iter().any(|o| awaits_status(o)) {
            tokio::time::sleep(SETTLED_EVERY).await;
        }
    };
    let _ = tokio::time::timeout(WINDOW, settled).await;
}

fn awaits_status(o: &GuardedRollout) -> bool {
    o.status.is_none() && o.metadata.deletion_timestamp.is_none()
}

/// The window opens at the first question, i.e. at the first reconcile that has
/// something to adopt (after the watch stores' first lists, however long they took).
pub struct FirstPasses {
    started: OnceLock<Instant>,
    /// Whether a rollout waited.
    waited: AtomicBool,
    /// Whether a reconcile found the wait over after one did.
    over: watch::Sender<bool>,
}

impl Default for FirstPasses {
    fn default() -> Self {
        Self {
            started: OnceLock::new(),
            waited: AtomicBool::new(false),
            over: watch::channel(false).0,
        }
    }
}

impl FirstPasses {
    /// Whether adopting `gr` (nothing of ours exists yet) waits for the first status of
    /// the rollouts in `all`. The first answer "no" after a "yes" ends every wait.
    pub fn hold(&self, gr: &GuardedRollout, all: &[std::sync::Arc<GuardedRollout>]) -> bool {
        let started = self.started.get_or_init(Instant::now);
        let held = hold(started.elapsed(), gr, all.iter().map(|o| o.as_ref()));
        if held {
            self.waited.store(true, Ordering::Relaxed);
        } else if self.waited.load(Ordering::Relaxed) {
            self.over
                .send_if_modified(|over| !std::mem::replace(over, true));
        }
        held
    }

    /// Yields once, when the wait is over: the controller then reconciles every rollout.
    pub fn released(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let mut over = self.over.subscribe();
        futures::stream::once(async move {
            // The sender lives as long as the controller that polls this.
            let _ = over.wait_for(|over| *over).await;
        })
    }
}

fn hold<'a>(
    elapsed: Duration,
    gr: &GuardedRollout,
    mut all: impl Iterator<Item = &'a GuardedRollout>,
) -> bool {
    let adopting = !gr.finalizers().iter().any(|f| f == FINALIZER);
    // Not itself: the store may not have its own first status yet.
    let unseen = |o: &GuardedRollout| awaits_status(o) && o.uid() != gr.uid();
    elapsed < WINDOW && adopting && all.any(unseen)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn rollout(name: &str, status: bool, finalizer: bool) -> GuardedRollout {
        let mut gr: GuardedRollout = serde_json::from_value(json!({
            "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
            "metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {"targetRef": {"name": name}, "steps": [{"setWeight": 50}]}
        }))
        .unwrap();
        gr.status = status.then(Default::default);
        if finalizer {
            gr.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
        }
        gr
    }

    #[tokio::test]
    async fn the_first_answer_no_releases_every_waiting_rollout_once() {
        use futures::StreamExt;
        let passes = FirstPasses::default();
        let mut released = std::pin::pin!(passes.released());
        let (seen, unseen) = (rollout("a", true, false), rollout("b", false, false));
        let all_seen = [std::sync::Arc::new(seen.clone())];
        let quiet = Duration::from_millis(50);
        assert!(!passes.hold(&seen, &all_seen));
        let early = tokio::time::timeout(quiet, released.next()).await;
        assert!(
            early.is_err(),
            "nothing waited: nothing to release (a warm restart reconciles nothing more)"
        );
        let waiting = [
            std::sync::Arc::new(seen.clone()),
            std::sync::Arc::new(unseen),
        ];
        assert!(passes.hold(&seen, &waiting));
        let early = tokio::time::timeout(quiet, released.next()).await;
        assert!(early.is_err(), "released while a rollout has no status");
        assert!(!passes.hold(&seen, &all_seen));
        assert_eq!(released.next().await, Some(()));
        assert_eq!(released.next().await, None, "released once");
        // A stream taken after the release yields at once.
        let after = std::pin::pin!(passes.released());
        assert_eq!(after.collect::<Vec<()>>().await, vec![()]);
    }

    #[test]
    fn adoption_waits_only_for_rollouts_without_a_status_and_only_a_while() {
        let seen = rollout("a", true, false);
        let unseen = rollout("b", false, false);
        let mut leaving = rollout("c", false, true);
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let early = Duration::from_secs(2);

        assert!(hold(early, &seen, [&seen, &unseen].into_iter()));
        assert!(!hold(early, &seen, [&seen].into_iter()), "all seen: adopt");
        let mut lagging = seen.clone();
        lagging.status = None;
        assert!(
            !hold(early, &seen, [&lagging].into_iter()),
            "its own entry, behind its own status write, is not waited for"
        );
        assert!(
            !hold(early, &seen, [&seen, &leaving].into_iter()),
            "a rollout being deleted gets no first status to wait for"
        );
        assert!(
            !hold(WINDOW, &seen, [&seen, &unseen].into_iter()),
            "the wait is bounded"
        );
        let adopted = rollout("d", true, true);
        assert!(
            !hold(early, &adopted, [&adopted, &unseen].into_iter()),
            "a rollout already adopted never waits"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn events_wait_for_every_first_status_and_only_a_while() {
        use kube::runtime::{reflector, watcher::Event};
        let quiet = Duration::from_secs(1);
        let (store, mut writer) = reflector::store::<GuardedRollout>();
        let listed = Listed::default();
        writer.apply_watcher_event(&Event::Apply(rollout("a", true, false)));
        let mut settled = std::pin::pin!(first_statuses(store.clone(), listed.clone()));
        assert!(
            tokio::time::timeout(quiet, &mut settled).await.is_err(),
            "settled before the first list"
        );
        let mut unseen = rollout("b", false, false);
        writer.apply_watcher_event(&Event::Apply(unseen.clone()));
        listed.set_done();
        assert!(
            tokio::time::timeout(quiet, &mut settled).await.is_err(),
            "settled while a rollout has no status"
        );
        unseen.status = Some(Default::default());
        writer.apply_watcher_event(&Event::Apply(unseen));
        tokio::time::timeout(quiet, &mut settled)
            .await
            .expect("settled once every rollout has its status");

        let started = Instant::now();
        writer.apply_watcher_event(&Event::Apply(rollout("c", false, false)));
        first_statuses(store.clone(), listed).await;
        let held = started.elapsed();
        assert!(
            held >= WINDOW && held < WINDOW + quiet,
            "a status never written holds Events a while: {held:?}"
        );
        let started = Instant::now();
        first_statuses(store, Listed::default()).await;
        assert_eq!(
            started.elapsed(),
            WINDOW * 2,
            "a first list that never comes holds Events a while longer"
        );
    }
}

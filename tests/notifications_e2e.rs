//! Notifications end to end: a rollback told to a local webhook receiver exactly once,
//! through a receiver that fails and an operator killed before it could tell; a Secret
//! missing or not readable becomes a condition. The operator runs with only the rights
//! of deploy/rbac.yaml; real apiserver + etcd, Prometheus scraping the simulator.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::env::*;
use guardrails::{
    api::{GuardedRollout, Outcome, Phase},
    conditions::{self, ConditionType},
    rollout::notify,
};
use guardrails_sandbox::Receiver;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

/// The Secret name deploy/rbac.yaml lets the operator read.
const SECRET: &str = "guardrails-notifications";

fn notified_rollout(secret: &str) -> GuardedRollout {
    let mut gr = rollout(json!([]));
    gr.spec.notifications = Some(
        serde_json::from_value(json!({
            "secretRef": {"name": secret},
            "linkTemplate": "https://grafana.example/d/rollouts?var-ns={namespace}&var-gr={name}&var-rev={revision}",
        }))
        .unwrap(),
    );
    gr
}

async fn create_secret(env: &Env, name: &str, url: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"url": url},
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The NotificationsReady condition's (status, reason, message), if any.
fn notifications_ready(gr: &GuardedRollout) -> Option<(String, String, String)> {
    let s = gr.status.as_ref()?;
    conditions::get(&s.conditions, ConditionType::NotificationsReady)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// A new operator (documented rights, elected) for the story's namespace.
async fn restart_operator(env: &mut Env) {
    let cp = guardrails_sandbox::ControlPlane::shared(&guardrails::api::crds()).unwrap();
    let kc = kube::config::Kubeconfig::read_from(cp.restricted_kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    env.operator = start_operator(
        Operator::elected(config),
        &env.ns,
        env.prom.url(),
        &env.metrics,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_is_told_once_through_a_failing_receiver_and_a_killed_operator() {
    let mut env = env_with("notify-once", true).await;
    let receiver = Receiver::start().await.unwrap();
    receiver.answer(500);
    create_secret(&env, SECRET, &receiver.url()).await;
    env.create(&target("app:1", 0.0), &notified_rollout(SECRET))
        .await;
    env.ship("app:2", 0.3).await;
    let rolled = env.wait_phase("app", Phase::RolledBack, 90).await;
    let revision = status(&rolled).failed_revision.expect("failedRevision");
    // The receiver fails: retried with backoff, an Event, a condition; nothing marked.
    let failing = env
        .wait_for("app", 40, "NotificationsReady False/ReceiverFailed", |g| {
            notifications_ready(g).is_some_and(|c| c.0 == "False" && c.1 == "ReceiverFailed")
        })
        .await;
    guardrails_sandbox::wait::eventually("a second attempt", Duration::from_secs(20), || async {
        let n = receiver.received().len();
        guardrails_sandbox::wait::reached(n >= 2, n)
    })
    .await;
    let events = env.events("app").await;
    let failed = events
        .iter()
        .find(|e| e.0 == "NotificationFailed")
        .expect("NotificationFailed Event");
    assert!(failed.1.contains("500"), "{failed:?}");
    assert!(
        !failed.1.contains(&receiver.url()),
        "the URL is a secret and never shown: {failed:?}"
    );
    let entry = status(&failing).history[0].clone();
    assert_eq!(entry.outcome, Outcome::RolledBack);
    assert_ne!(
        status(&failing)
            .notifications
            .and_then(|n| n.delivered_up_to),
        Some(notify::key(&entry)),
        "not marked while the receiver fails"
    );
    // The operator dies with the rollback untold; the receiver recovers; a new operator
    // tells it once.
    env.operator.abort();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = receiver.received().len();
    receiver.answer(200);
    restart_operator(&mut env).await;
    let told = env
        .wait_for("app", 60, "the rollback marked as told", |g| {
            status(g).notifications.and_then(|n| n.delivered_up_to) == Some(notify::key(&entry))
        })
        .await;
    // Nothing more arrives once it is marked.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let received = receiver.received();
    let accepted: Vec<_> = received.iter().filter(|r| r.answered == 200).collect();
    assert_eq!(
        accepted.len(),
        1,
        "exactly one accepted message ({} refused before): {received:#?}",
        refused
    );
    let keys: BTreeSet<_> = received
        .iter()
        .map(|r| r.headers.get("idempotency-key").cloned())
        .collect();
    assert_eq!(keys.len(), 1, "every attempt has the same key: {keys:?}");
    assert_eq!(env.metrics.notifications("Sent"), 1);
    assert!(
        env.metrics.notifications("ReceiverFailed") >= 2,
        "every failed attempt counted"
    );
    let body = &accepted[0].body;
    assert_eq!(body["outcome"], "RolledBack");
    assert_eq!(body["revision"], revision.as_str());
    assert_eq!(body["service"], "app");
    assert_eq!(body["changeClass"], "feature");
    assert!(
        body["reason"].as_str().unwrap().contains("error-rate"),
        "{body}"
    );
    let detect = body["detectSeconds"].as_f64().expect("detectSeconds");
    let recover = body["recoverSeconds"].as_f64().expect("recoverSeconds");
    assert!(detect > 0.0 && recover >= 0.0, "{body}");
    assert_eq!(
        body["link"],
        format!(
            "https://grafana.example/d/rollouts?var-ns={}&var-gr=app&var-rev={revision}",
            env.ns
        )
    );
    assert_eq!(
        accepted[0].headers.get("idempotency-key"),
        body["idempotencyKey"].as_str().map(String::from).as_ref()
    );
    let ready = env
        .wait_for("app", 20, "NotificationsReady True", |g| {
            notifications_ready(g).is_some_and(|c| c.0 == "True")
        })
        .await;
    assert_eq!(notifications_ready(&ready).unwrap().1, "Configured");
    assert!(status(&told).notifications.unwrap().failure.is_none());
    assert_eq!(status(&ready).phase, Some(Phase::RolledBack));
    let failed_events = env.events("app").await;
    let failed_events = failed_events.iter().filter(|e| e.0 == "NotificationFailed");
    assert_eq!(
        failed_events.count(),
        1,
        "one Event for the same failure, however many retries"
    );
    // Turned off, the mark and the condition go; turned on again, nothing from before
    // is sent.
    let off = json!({"spec": {"notifications": null}});
    env.rollouts()
        .patch("app", &PatchParams::default(), &Patch::Merge(off))
        .await
        .unwrap();
    env.wait_for("app", 20, "notifications status gone", |g| {
        status(g).notifications.is_none() && notifications_ready(g).is_none()
    })
    .await;
    let on = json!({"spec": {"notifications": {"secretRef": {"name": SECRET}}}});
    env.rollouts()
        .patch("app", &PatchParams::default(), &Patch::Merge(on))
        .await
        .unwrap();
    let again = env
        .wait_for("app", 20, "NotificationsReady True again", |g| {
            notifications_ready(g).is_some_and(|c| c.0 == "True")
        })
        .await;
    assert_eq!(
        status(&again).notifications.unwrap().delivered_up_to,
        Some(notify::key(&entry)),
        "the mark starts at the newest entry"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), received.len(), "nothing resent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_the_operator_died_waiting_on_is_sent_again_with_its_key() {
    let mut env = env_with("notify-inflight", true).await;
    let receiver = Receiver::start().await.unwrap();
    receiver.hold(true);
    create_secret(&env, SECRET, &receiver.url()).await;
    let mut gr = notified_rollout(SECRET);
    gr.spec.notifications.as_mut().unwrap().format = guardrails::api::NotificationFormat::Slack;
    env.create(&target("app:1", 0.0), &gr).await;
    env.ship("app:2", 0.3).await;
    env.wait_phase("app", Phase::RolledBack, 90).await;
    // The message arrives; the operator dies before the answer.
    guardrails_sandbox::wait::eventually(
        "the message arrives",
        Duration::from_secs(40),
        || async {
            let n = receiver.received().len();
            guardrails_sandbox::wait::reached(n == 1, n)
        },
    )
    .await;
    env.operator.abort();
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.hold(false);
    let unmarked = env.rollouts().get("app").await.unwrap();
    let entry = status(&unmarked).history[0].clone();
    assert_ne!(
        status(&unmarked)
            .notifications
            .and_then(|n| n.delivered_up_to),
        Some(notify::key(&entry)),
        "the operator died before recording it"
    );
    restart_operator(&mut env).await;
    env.wait_for("app", 60, "the rollback marked as told", |g| {
        status(g).notifications.and_then(|n| n.delivered_up_to) == Some(notify::key(&entry))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 2, "sent again once: {received:#?}");
    assert_eq!(received[1].answered, 200);
    let keys: BTreeSet<_> = received
        .iter()
        .map(|r| r.headers.get("idempotency-key").cloned())
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "a receiver that keeps keys drops the second: {keys:?}"
    );
    let text = received[1].body["text"]
        .as_str()
        .expect("a Slack payload")
        .to_string();
    for part in [
        "*RolledBack*",
        "error-rate",
        "detected after",
        "recovered",
        "|details>",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_missing_or_out_of_reach_is_a_condition_not_a_crash() {
    let env = env_with("notify-secret", true).await;
    let receiver = Receiver::start().await.unwrap();
    env.create(&target("app:1", 0.0), &notified_rollout(SECRET))
        .await;
    let missing = env
        .wait_for("app", 30, "NotificationsReady False/SecretNotFound", |g| {
            notifications_ready(g).is_some_and(|c| c.0 == "False" && c.1 == "SecretNotFound")
        })
        .await;
    let message = notifications_ready(&missing).unwrap().2;
    assert!(message.contains("not found"), "{message}");
    assert_eq!(
        status(&missing).phase,
        Some(Phase::Idle),
        "delivery goes on"
    );
    let events = env.events("app").await;
    assert!(
        events.iter().any(|e| e.0 == "NotificationFailed"),
        "{events:?}"
    );
    // The Secret appears: read at the next retry.
    create_secret(&env, SECRET, &receiver.url()).await;
    env.wait_for("app", 40, "NotificationsReady True/Configured", |g| {
        notifications_ready(g).is_some_and(|c| c.0 == "True" && c.1 == "Configured")
    })
    .await;
    // A Secret the operator may not read (not named in its RBAC) says so.
    create_secret(&env, "elsewhere", &receiver.url()).await;
    let patch = json!({"spec": {"notifications": {"secretRef": {"name": "elsewhere"}}}});
    env.rollouts()
        .patch("app", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let forbidden = env
        .wait_for("app", 30, "NotificationsReady False for elsewhere", |g| {
            notifications_ready(g).is_some_and(|c| c.0 == "False" && c.2.contains("may not read"))
        })
        .await;
    assert_eq!(notifications_ready(&forbidden).unwrap().1, "SecretNotFound");
    // A Secret without a URL.
    let patch = json!({"stringData": {"url": "not a url"}});
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .patch(SECRET, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let patch = json!({"spec": {"notifications": {"secretRef": {"name": SECRET}}}});
    env.rollouts()
        .patch("app", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    env.wait_for("app", 40, "NotificationsReady False/SecretInvalid", |g| {
        notifications_ready(g).is_some_and(|c| c.0 == "False" && c.1 == "SecretInvalid")
    })
    .await;
    assert!(receiver.received().is_empty(), "nothing to tell was sent");
}

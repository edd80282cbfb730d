//! What a GuardedRollout's webhook is told, and when. No IO.
//!
//! The history is the source: every entry after `status.notifications.deliveredUpTo` is
//! sent, oldest first, once it is finished (a rollback once its canary is drained, with
//! its time to recover). The mark moves after each message, so a restarted operator
//! sends on from where the last one stopped; the `Idempotency-Key` of a message lets a
//! receiver drop the one resent when the operator died between sending and marking.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::api::{
    GuardedRolloutSpec, GuardedRolloutStatus, HistoryEntry, NotificationFormat, NotificationStatus,
    Notifications,
};

/// An entry's identity: `<outcome>/<revision>/<started>` (finishedAt is stamped later,
/// so it is not part of it; a blocked revision has only its finishedAt).
pub fn key(entry: &HistoryEntry) -> String {
    let at = entry
        .started_at
        .as_ref()
        .or(entry.finished_at.as_ref())
        .map_or(0, |t| t.0.as_second());
    format!("{}/{}/{at}", entry.outcome, entry.revision)
}

/// Where the mark starts when notifications are first asked for: at the newest finished
/// entry already there, so only what happens from then on is sent. (An entry still
/// draining may have no time in its key yet, which its finishedAt would change.)
pub fn baseline(status: &GuardedRolloutStatus) -> NotificationStatus {
    NotificationStatus {
        delivered_up_to: status
            .history
            .iter()
            .find(|e| e.finished_at.is_some())
            .map(key),
        ..Default::default()
    }
}

/// The entries to handle next, oldest first: those after the mark, up to the first one
/// not finished yet (the newest, while its canary drains).
pub fn pending(status: &GuardedRolloutStatus) -> Vec<&HistoryEntry> {
    let Some(n) = &status.notifications else {
        return Vec::new();
    };
    let history = &status.history;
    let newer = match &n.delivered_up_to {
        Some(mark) => history
            .iter()
            .position(|e| &key(e) == mark)
            .unwrap_or(history.len()),
        None => history.len(),
    };
    history[..newer]
        .iter()
        .enumerate()
        .rev()
        .take_while(|(i, e)| *i > 0 || e.finished_at.is_some())
        .map(|(_, e)| e)
        .collect()
}

/// Whether the notifier has work for this rollout: a mark to start or to remove (the
/// notifier alone writes `status.notifications`), entries to send, a spec whose Secret
/// was not read yet, or a failure to retry.
pub fn wanted(
    spec: &GuardedRolloutSpec,
    generation: Option<i64>,
    status: &GuardedRolloutStatus,
) -> bool {
    match (&spec.notifications, &status.notifications) {
        (None, None) => false,
        (None, Some(_)) | (Some(_), None) => true,
        (Some(_), Some(n)) => {
            n.checked_generation != generation || n.failure.is_some() || !pending(status).is_empty()
        }
    }
}

/// What a message is about.
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// The SloPolicy's service, else the target's name.
    pub service: &'a str,
}

impl Subject<'_> {
    /// The receiver's deduplication key of an entry.
    pub fn idempotency_key(&self, entry: &HistoryEntry) -> String {
        format!("{}/{}", self.uid, key(entry))
    }

    fn link(&self, template: &str, entry: &HistoryEntry) -> String {
        template
            .replace("{namespace}", self.namespace)
            .replace("{name}", self.name)
            .replace("{service}", self.service)
            .replace("{revision}", &entry.revision)
    }
}

fn time(t: &Option<Time>) -> Value {
    t.as_ref().map_or(Value::Null, |t| json!(t.0.to_string()))
}

/// The body of the message about `entry`.
pub fn message(spec: &Notifications, subject: &Subject, entry: &HistoryEntry) -> Value {
    let link = spec
        .link_template
        .as_deref()
        .map(|t| subject.link(t, entry));
    match spec.format {
        NotificationFormat::JSON => json!({
            "source": "guardrails",
            "kind": "GuardedRollout",
            "namespace": subject.namespace,
            "name": subject.name,
            "service": subject.service,
            "revision": entry.revision,
            "changeClass": entry.change_class,
            "outcome": entry.outcome,
            "reason": entry.reason,
            "startedAt": time(&entry.started_at),
            "detectedAt": time(&entry.detected_at),
            "finishedAt": time(&entry.finished_at),
            "detectSeconds": entry.detect_seconds(),
            "recoverSeconds": entry.recover_seconds(),
            "link": link,
            "idempotencyKey": subject.idempotency_key(entry),
        }),
        NotificationFormat::Slack => json!({"text": slack_text(subject, entry, link)}),
    }
}

fn slack_text(subject: &Subject, entry: &HistoryEntry, link: Option<String>) -> String {
    let mut text = format!(
        "*{}* {}: revision `{}` ({}) of GuardedRollout `{}/{}`",
        entry.outcome,
        subject.service,
        entry.revision,
        entry.change_class,
        subject.namespace,
        subject.name
    );
    if let Some(reason) = &entry.reason {
        text.push_str(&format!("\n{reason}"));
    }
    if let Some(s) = entry.detect_seconds() {
        text.push_str(&format!("\ndetected after {s:.0} s"));
    }
    if let Some(s) = entry.recover_seconds() {
        text.push_str(&format!(", recovered {s:.0} s later"));
    }
    if let Some(link) = link {
        text.push_str(&format!("\n<{link}|details>"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChangeClass, Outcome};
    use k8s_openapi::jiff::Timestamp;

    fn at(s: i64) -> Option<Time> {
        Some(Time(Timestamp::from_second(1_800_000_000 + s).unwrap()))
    }

    fn entry(outcome: Outcome, rev: &str, started: i64, finished: Option<i64>) -> HistoryEntry {
        HistoryEntry {
            revision: rev.into(),
            change_class: ChangeClass::Feature,
            outcome,
            started_at: at(started),
            detected_at: (outcome == Outcome::RolledBack)
                .then(|| at(started + 12))
                .flatten(),
            finished_at: finished.and_then(at),
            reason: Some("error-rate failed 3 times".into()),
        }
    }

    fn spec(notify: bool) -> GuardedRolloutSpec {
        let mut s: GuardedRolloutSpec = serde_json::from_value(json!({
            "targetRef": {"name": "app"}, "steps": [{"setWeight": 10}],
        }))
        .unwrap();
        if notify {
            s.notifications =
                Some(serde_json::from_value(json!({"secretRef": {"name": "hook"}})).unwrap());
        }
        s
    }

    fn status(history: Vec<HistoryEntry>, mark: Option<&HistoryEntry>) -> GuardedRolloutStatus {
        GuardedRolloutStatus {
            history,
            notifications: Some(NotificationStatus {
                delivered_up_to: mark.map(key),
                checked_generation: Some(1),
                failure: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_defaults_send_what_on_call_acts_on_as_json() {
        let n = spec(true).notifications.unwrap();
        assert_eq!(n.format, NotificationFormat::JSON);
        assert_eq!(
            n.outcomes,
            [Outcome::RolledBack, Outcome::Blocked, Outcome::Aborted]
        );
    }

    #[test]
    fn notifications_asked_for_start_after_the_history_already_there() {
        let old = entry(Outcome::Promoted, "a", 0, Some(60));
        let previous = GuardedRolloutStatus {
            history: vec![old.clone()],
            ..Default::default()
        };
        assert_eq!(baseline(&previous).delivered_up_to, Some(key(&old)));
        assert!(
            pending(&GuardedRolloutStatus {
                notifications: Some(baseline(&previous)),
                ..previous.clone()
            })
            .is_empty()
        );
        // A new rollout has no history: everything it will have is sent.
        let fresh = baseline(&GuardedRolloutStatus::default());
        assert_eq!(fresh.delivered_up_to, None);
        // An entry still draining, with no time yet: the mark starts before it, and it
        // is sent once finished (its key would change with its finishedAt).
        let mut draining = entry(Outcome::Aborted, "b", 0, None);
        draining.started_at = None;
        let mut status = GuardedRolloutStatus {
            history: vec![draining, old.clone()],
            ..Default::default()
        };
        assert_eq!(baseline(&status).delivered_up_to, Some(key(&old)));
        status.notifications = Some(baseline(&status));
        status.history[0].finished_at = at(30);
        assert_eq!(pending(&status).len(), 1);
        assert_eq!(pending(&status)[0].revision, "b");
    }

    #[test]
    fn entries_after_the_mark_go_oldest_first_once_finished() {
        let a = entry(Outcome::Promoted, "a", 0, Some(60));
        let b = entry(Outcome::Blocked, "b", 100, Some(100));
        let c = entry(Outcome::RolledBack, "c", 200, None);
        let history = vec![c.clone(), b.clone(), a.clone()];
        let s = status(history.clone(), Some(&a));
        // The rollback's canary still drains: it waits; the block goes.
        assert_eq!(pending(&s), [&b]);
        let mut drained = history.clone();
        drained[0].finished_at = at(230);
        let s = status(drained.clone(), Some(&a));
        assert_eq!(pending(&s).len(), 2);
        assert_eq!(pending(&s)[1].revision, "c");
        // Stamping finishedAt does not change an entry's key: the mark still holds.
        let s = status(drained.clone(), Some(&c));
        assert!(pending(&s).is_empty());
        // No mark: everything; a mark rotated out of the history: everything too.
        assert_eq!(pending(&status(drained.clone(), None)).len(), 3);
        let gone = entry(Outcome::Promoted, "z", -500, Some(-400));
        assert_eq!(pending(&status(drained, Some(&gone))).len(), 3);
    }

    #[test]
    fn an_unfinished_entry_behind_a_newer_one_is_not_held_back() {
        let a = entry(Outcome::Aborted, "a", 0, None);
        let b = entry(Outcome::Promoted, "b", 100, Some(160));
        let s = status(vec![b, a], None);
        assert_eq!(pending(&s).len(), 2);
    }

    #[test]
    fn the_notifier_is_wanted_for_work_only() {
        let (on, off) = (spec(true), spec(false));
        let a = entry(Outcome::Promoted, "a", 0, Some(60));
        let mut s = status(vec![a.clone()], Some(&a));
        assert!(!wanted(&on, Some(1), &s));
        assert!(wanted(&on, Some(2), &s), "a new spec: its Secret is read");
        assert!(wanted(&off, Some(1), &s), "turned off: the mark goes");
        s.notifications.as_mut().unwrap().delivered_up_to = None;
        assert!(wanted(&on, Some(1), &s), "an entry to send");
        let none = GuardedRolloutStatus::default();
        assert!(wanted(&on, Some(1), &none), "turned on: the mark starts");
        assert!(!wanted(&off, Some(1), &none));
    }

    #[test]
    fn a_rollback_message_carries_what_on_call_needs() {
        let mut n = spec(true).notifications.unwrap();
        n.link_template =
            Some("https://grafana/d/x?ns={namespace}&gr={name}&rev={revision}".into());
        let subject = Subject {
            namespace: "media",
            name: "share-link",
            uid: "u1",
            service: "share-link",
        };
        let e = entry(Outcome::RolledBack, "abc", 0, Some(15));
        let m = message(&n, &subject, &e);
        assert_eq!(m["outcome"], "RolledBack");
        assert_eq!(m["service"], "share-link");
        assert_eq!(m["changeClass"], "feature");
        assert_eq!(m["detectSeconds"], 12.0);
        assert_eq!(m["recoverSeconds"], 3.0);
        assert_eq!(m["reason"], "error-rate failed 3 times");
        assert_eq!(
            m["link"],
            "https://grafana/d/x?ns=media&gr=share-link&rev=abc"
        );
        assert_eq!(m["idempotencyKey"], format!("u1/{}", key(&e)));
        n.format = NotificationFormat::Slack;
        let text = message(&n, &subject, &e)["text"]
            .as_str()
            .unwrap()
            .to_string();
        for part in [
            "*RolledBack*",
            "`abc`",
            "detected after 12 s",
            "recovered 3 s later",
            "|details>",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }
}

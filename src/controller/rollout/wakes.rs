//! Which watch events of a rollout start a reconcile.

use crate::api::GuardedRollout;

/// What in a rollout wakes its reconcile: the spec (generation), annotations (manual
/// actions), finalizers, deletion and the notifier's part of the status. The
/// controller's own status writes do not: each decision asks for its own next wake-up,
/// and a write's echo would cost a reconcile that decides nothing new.
pub fn wakes(gr: &GuardedRollout) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = &gr.metadata;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    let deleted = meta.deletion_timestamp.as_ref().map(|t| t.0.as_second());
    deleted.hash(&mut hasher);
    let notifications = gr.status.as_ref().and_then(|s| s.notifications.as_ref());
    serde_json::to_string(&notifications)
        .unwrap_or_default()
        .hash(&mut hasher);
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GuardedRolloutStatus, NotificationStatus, Phase};
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
    use kube::ResourceExt;

    fn rollout() -> GuardedRollout {
        let mut gr: GuardedRollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "guardrails.dev/v1alpha1",
            "kind": "GuardedRollout",
            "metadata": {"name": "app", "namespace": "ns", "generation": 1},
            "spec": {"targetRef": {"name": "app"}, "steps": [{"setWeight": 10}]},
        }))
        .unwrap();
        gr.status = Some(GuardedRolloutStatus::default());
        gr
    }

    #[test]
    fn the_controllers_own_status_writes_do_not_wake_the_rollout() {
        let before = rollout();
        let mut written = before.clone();
        let status = written.status.as_mut().unwrap();
        status.phase = Some(Phase::Progressing);
        status.canary_weight = Some(10);
        written.metadata.resource_version = Some("2".into());
        assert_eq!(wakes(&before), wakes(&written));
    }

    type Change = fn(&mut GuardedRollout);

    #[test]
    fn spec_manual_actions_finalizers_deletion_and_notifications_wake_it() {
        let before = wakes(&rollout());
        let changes: [(&str, Change); 5] = [
            ("spec", |gr| gr.metadata.generation = Some(2)),
            ("annotation", |gr| {
                gr.annotations_mut()
                    .insert(crate::api::ANNOTATION_PROMOTE.into(), String::new());
            }),
            ("finalizer", |gr| gr.finalizers_mut().push("f".into())),
            ("deletion", |gr| {
                gr.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()))
            }),
            ("notifications", |gr| {
                gr.status.as_mut().unwrap().notifications = Some(NotificationStatus::default())
            }),
        ];
        for (what, change) in changes {
            let mut gr = rollout();
            change(&mut gr);
            assert_ne!(wakes(&gr), before, "{what}");
        }
    }
}

//! Handing the target back when a GuardedRollout is deleted (pure): the target gets
//! its replicas back first, and only once it is fully available do the route weights and
//! the managed Deployments go, so no moment is without a ready pod.

use super::Workload;
use crate::api::GuardedRolloutStatus;

/// What the target looks like during deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetNow {
    pub revision: String,
    pub workload: Workload,
}

/// The next step of the hand-back.
#[derive(Debug, Clone, PartialEq)]
pub enum HandBack {
    /// Scale the target to this size; warn first when it is not the stable revision.
    Scale {
        replicas: i32,
        warning: Option<String>,
    },
    /// The target is scaling up: look again later.
    Wait(String),
    /// The target serves: routes and managed Deployments may go.
    Done,
}

/// `primary_replicas`: the primary's current size (the autoscaler's choice, when one
/// sizes it), used when the status has no recorded target size or the target is
/// autoscaled.
pub fn hand_back(
    status: &GuardedRolloutStatus,
    target: &TargetNow,
    primary_replicas: Option<i32>,
    autoscaled: bool,
) -> HandBack {
    let recorded = status.target_replicas.filter(|_| !autoscaled);
    let Some(replicas) = recorded.or(primary_replicas).or(status.target_replicas) else {
        return HandBack::Done;
    };
    let w = &target.workload;
    if w.replicas != replicas {
        return HandBack::Scale {
            replicas,
            warning: not_stable(status, &target.revision),
        };
    }
    if w.available_at_size() {
        HandBack::Done
    } else {
        HandBack::Wait(format!(
            "waiting for the target to be available before removing the primary: {}/{replicas} ready, {} available",
            w.ready, w.available
        ))
    }
}

/// A warning when the target's template is not the revision the primary serves.
fn not_stable(status: &GuardedRolloutStatus, revision: &str) -> Option<String> {
    let stable = status.stable_revision.as_deref()?;
    if stable == revision {
        return None;
    }
    let what = if status.failed_revision.as_deref() == Some(revision) {
        ", the revision that was rolled back"
    } else if status.canary_revision.as_deref() == Some(revision) {
        ", the canary under analysis"
    } else {
        ""
    };
    Some(format!(
        "the target runs revision {revision}{what}, not the stable revision {stable}: \
         it now serves all traffic"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(revision: &str, replicas: i32, ready: i32) -> TargetNow {
        TargetNow {
            revision: revision.into(),
            workload: Workload {
                revision: None,
                replicas,
                pods: ready,
                ready,
                updated: ready,
                available: ready,
                current: true,
                ..Default::default()
            },
        }
    }

    fn status() -> GuardedRolloutStatus {
        GuardedRolloutStatus {
            target_replicas: Some(3),
            stable_revision: Some("r1".into()),
            failed_revision: Some("r2".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_target_scales_up_then_is_waited_for() {
        let s = status();
        assert_eq!(
            hand_back(&s, &target("r1", 0, 0), Some(4), false),
            HandBack::Scale {
                replicas: 3,
                warning: None
            }
        );
        assert!(matches!(
            hand_back(&s, &target("r1", 3, 1), Some(4), false),
            HandBack::Wait(m) if m.contains("1/3 ready")
        ));
        assert_eq!(
            hand_back(&s, &target("r1", 3, 3), Some(4), false),
            HandBack::Done
        );
    }

    #[test]
    fn a_target_on_another_revision_is_warned_about() {
        let HandBack::Scale {
            warning: Some(w), ..
        } = hand_back(&status(), &target("r2", 0, 0), Some(4), false)
        else {
            panic!("a warning")
        };
        assert!(
            w.contains("r2, the revision that was rolled back") && w.contains("r1"),
            "{w}"
        );
    }

    #[test]
    fn an_autoscaled_target_gets_the_primarys_current_size() {
        assert_eq!(
            hand_back(&status(), &target("r1", 0, 0), Some(7), true),
            HandBack::Scale {
                replicas: 7,
                warning: None
            }
        );
    }
}

//! kstatus conditions of a GuardedRollout, from its phase or a problem.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{GuardedRolloutStatus, Phase},
    conditions::{self, ConditionType},
    reasons::{NotifyCondition, RolloutCondition, RolloutEvent},
};

/// What stops a GuardedRollout from being reconciled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Problem<'a> {
    /// The message names the field.
    InvalidSpec(&'a str),
    TargetNotFound(&'a str),
    /// The HTTPRoute of Gateway API routing does not exist.
    RouteNotFound(&'a str),
    /// The primary is gone and the stable template is known nowhere.
    PrimaryTemplateUnknown(&'a str),
}

impl Problem<'_> {
    /// The condition reason.
    pub fn reason(&self) -> RolloutCondition {
        match self {
            Problem::InvalidSpec(_) => RolloutCondition::InvalidSpec,
            Problem::TargetNotFound(_) => RolloutCondition::TargetNotFound,
            Problem::RouteNotFound(_) => RolloutCondition::RouteNotFound,
            Problem::PrimaryTemplateUnknown(_) => RolloutCondition::PrimaryTemplateUnknown,
        }
    }

    /// The Event published when the problem appears.
    pub fn event(&self) -> RolloutEvent {
        match self {
            Problem::InvalidSpec(_) => RolloutEvent::InvalidSpec,
            Problem::TargetNotFound(_) => RolloutEvent::TargetNotFound,
            Problem::RouteNotFound(_) => RolloutEvent::RouteNotFound,
            Problem::PrimaryTemplateUnknown(_) => RolloutEvent::PrimaryTemplateUnknown,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Problem::InvalidSpec(m)
            | Problem::TargetNotFound(m)
            | Problem::RouteNotFound(m)
            | Problem::PrimaryTemplateUnknown(m) => m,
        }
    }
}

/// Ready, Reconciling and Stalled: Ready while the primary serves a promoted or adopted
/// revision; Reconciling while work is under way (including waiting on the gate);
/// Stalled when a person must act (invalid spec, missing target, a rollback).
pub fn set_conditions(
    s: &mut GuardedRolloutStatus,
    problem: Option<Problem<'_>>,
    generation: Option<i64>,
    now: &Time,
) {
    let phase = s.phase.unwrap_or(Phase::Initializing);
    let phase_name = phase.as_str().to_string();
    let message = s.message.clone().unwrap_or_default();
    let (ready, reconciling, stalled, reason, message) = match problem {
        Some(p) => (
            false,
            false,
            true,
            p.reason().to_string(),
            p.message().to_string(),
        ),
        None => match phase {
            Phase::Idle | Phase::Succeeded => (true, false, false, phase_name, message),
            Phase::RolledBack => (false, false, true, phase_name, message),
            _ => (false, true, false, phase_name, message),
        },
    };
    let c = &mut s.conditions;
    conditions::set(
        c,
        ConditionType::Ready,
        ready,
        &reason,
        &message,
        generation,
        now,
    );
    conditions::set(
        c,
        ConditionType::Reconciling,
        reconciling,
        &reason,
        &message,
        generation,
        now,
    );
    conditions::set(
        c,
        ConditionType::Stalled,
        stalled,
        &reason,
        &message,
        generation,
        now,
    );
    set_target_conflict(s, generation, now);
}

/// TargetConflict: True while another writer keeps scaling the target up (seen within
/// CONFLICT_MEMORY), naming it; absent when there never was one.
fn set_target_conflict(s: &mut GuardedRolloutStatus, generation: Option<i64>, now: &Time) {
    let Some(t) = &s.target_scaled_up else {
        return;
    };
    let recent = super::elapsed(&t.last_seen, now) < super::CONFLICT_MEMORY;
    let (reason, message) = if recent {
        (
            RolloutCondition::TargetScaledUp,
            format!(
                "{} keeps scaling the target up (last to {} replicas); the operator scales it \
                 to 0 again: make it ignore the target's spec.replicas",
                t.manager, t.replicas
            ),
        )
    } else {
        (
            RolloutCondition::NoConflict,
            format!("{} has not scaled the target up lately", t.manager),
        )
    };
    let c = &mut s.conditions;
    conditions::set(
        c,
        ConditionType::TargetConflict,
        recent,
        reason.as_str(),
        &message,
        generation,
        now,
    );
}

/// TrafficRouted: False while the router refuses the weights decided (`failure` says
/// why), True again once they are written; absent while writes always worked.
pub fn set_traffic_routed(
    s: &mut GuardedRolloutStatus,
    failure: Option<&str>,
    generation: Option<i64>,
    now: &Time,
) {
    let c = &mut s.conditions;
    let t = ConditionType::TrafficRouted;
    match failure {
        Some(why) => conditions::set(
            c,
            t,
            false,
            RolloutCondition::RouteNotUpdated.as_str(),
            why,
            generation,
            now,
        ),
        None if conditions::get(c, t).is_some_and(|c| c.status != "True") => {
            let message = "the route carries the weights decided";
            conditions::set(
                c,
                t,
                true,
                RolloutCondition::RouteUpdated.as_str(),
                message,
                generation,
                now,
            );
        }
        None => {}
    }
}

/// NotificationsReady, from what the notifier recorded: absent without
/// spec.notifications (`notifying`) or before their Secret was first read; False with
/// the last failure (retried); True once the Secret gives a URL and nothing failed since.
pub fn set_notifications_ready(
    s: &mut GuardedRolloutStatus,
    notifying: bool,
    generation: Option<i64>,
    now: &Time,
) {
    let t = ConditionType::NotificationsReady;
    let n = s.notifications.clone().filter(|_| notifying);
    let Some(n) = n.filter(|n| n.checked_generation.is_some() || n.failure.is_some()) else {
        s.conditions.retain(|c| c.type_ != t.as_str());
        return;
    };
    let c = &mut s.conditions;
    match &n.failure {
        Some(f) => {
            let message = format!("{} (retried with backoff)", f.message);
            conditions::set(c, t, false, f.reason.as_str(), &message, generation, now)
        }
        None => {
            let message = "the webhook's Secret gives a URL; nothing failed since";
            let reason = NotifyCondition::Configured.as_str();
            conditions::set(c, t, true, reason, message, generation, now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn status(phase: Phase) -> GuardedRolloutStatus {
        GuardedRolloutStatus {
            phase: Some(phase),
            ..Default::default()
        }
    }

    fn flags(s: &GuardedRolloutStatus) -> (String, String, String) {
        let get = |t| conditions::get(&s.conditions, t).unwrap().status.clone();
        (
            get(ConditionType::Ready),
            get(ConditionType::Reconciling),
            get(ConditionType::Stalled),
        )
    }

    #[test]
    fn phases_map_to_kstatus() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let t = |p| {
            let mut s = status(p);
            set_conditions(&mut s, None, Some(1), &now);
            flags(&s)
        };
        let f = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(t(Phase::Idle), f("True", "False", "False"));
        assert_eq!(t(Phase::Succeeded), f("True", "False", "False"));
        assert_eq!(t(Phase::Progressing), f("False", "True", "False"));
        assert_eq!(t(Phase::Blocked), f("False", "True", "False"));
        assert_eq!(t(Phase::RolledBack), f("False", "False", "True"));
        let mut s = status(Phase::Idle);
        set_conditions(
            &mut s,
            Some(Problem::InvalidSpec("spec.steps[0]: bad")),
            Some(2),
            &now,
        );
        assert_eq!(flags(&s), f("False", "False", "True"));
        let ready = conditions::get(&s.conditions, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.reason.as_str(), ready.observed_generation),
            (RolloutCondition::InvalidSpec.as_str(), Some(2))
        );
    }

    #[test]
    fn traffic_routed_appears_with_a_failure_and_recovers() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let mut s = status(Phase::Progressing);
        set_traffic_routed(&mut s, None, Some(1), &now);
        assert!(conditions::get(&s.conditions, ConditionType::TrafficRouted).is_none());
        set_traffic_routed(&mut s, Some("forbidden"), Some(1), &now);
        let c = conditions::get(&s.conditions, ConditionType::TrafficRouted).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", RolloutCondition::RouteNotUpdated.as_str())
        );
        assert_eq!(c.message, "forbidden");
        set_traffic_routed(&mut s, None, Some(1), &now);
        let c = conditions::get(&s.conditions, ConditionType::TrafficRouted).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", RolloutCondition::RouteUpdated.as_str())
        );
    }
}

//! Who holds a coordination.k8s.io Lease, and what a candidate should do about it.
//! Pure: the caller passes the lease it read and the time.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};

/// What a candidate does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No lease yet: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Released or expired: take it over.
    TakeOver,
    /// Someone else holds it for this long at most.
    Wait {
        holder: String,
        for_at_most: Duration,
    },
}

pub fn next(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Step {
    let Some(spec) = lease else {
        return Step::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Step::TakeOver;
    }
    if holder == me {
        return Step::Renew;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let elapsed = now.duration_since(renewed).unsigned_abs();
    if now < renewed || elapsed < duration {
        // A renewal "in the future" (clock skew) counts as fresh.
        Step::Wait {
            holder,
            for_at_most: duration.saturating_sub(elapsed),
        }
    } else {
        Step::TakeOver
    }
}

/// The spec to write for `step` (Create, Renew or TakeOver).
pub fn spec_for(
    step: &Step,
    previous: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> LeaseSpec {
    let prev = previous.cloned().unwrap_or_default();
    let now = MicroTime(now);
    let mut spec = LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration.as_secs() as i32),
        renew_time: Some(now.clone()),
        ..prev.clone()
    };
    match step {
        Step::Renew => {}
        Step::Create => {
            spec.acquire_time = Some(now);
            spec.lease_transitions = Some(0);
        }
        Step::TakeOver | Step::Wait { .. } => {
            spec.acquire_time = Some(now);
            spec.lease_transitions = Some(prev.lease_transitions.unwrap_or(0) + 1);
        }
    }
    spec
}

/// A released lease: no holder, so the next candidate takes it over at once.
pub fn released(previous: &LeaseSpec) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        ..previous.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn held_by(who: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(who.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(0))),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn a_candidate_creates_renews_waits_and_takes_over() {
        assert_eq!(next(None, "a", at(100)), Step::Create);
        assert_eq!(next(Some(&held_by("a", 90)), "a", at(100)), Step::Renew);
        assert_eq!(
            next(Some(&held_by("b", 90)), "a", at(100)),
            Step::Wait {
                holder: "b".into(),
                for_at_most: Duration::from_secs(5)
            }
        );
        assert_eq!(next(Some(&held_by("b", 85)), "a", at(100)), Step::TakeOver);
        assert_eq!(
            next(Some(&released(&held_by("b", 99))), "a", at(100)),
            Step::TakeOver
        );
        // Clock skew: a renewal ahead of our clock is fresh.
        assert!(matches!(
            next(Some(&held_by("b", 110)), "a", at(100)),
            Step::Wait { .. }
        ));
    }

    #[test]
    fn takeover_counts_a_transition_and_renewal_keeps_the_acquire_time() {
        let prev = held_by("b", 80);
        let s = spec_for(
            &Step::TakeOver,
            Some(&prev),
            "a",
            at(100),
            Duration::from_secs(15),
        );
        assert_eq!(s.holder_identity.as_deref(), Some("a"));
        assert_eq!(s.lease_transitions, Some(4));
        assert_eq!(s.acquire_time, Some(MicroTime(at(100))));
        let r = spec_for(
            &Step::Renew,
            Some(&s),
            "a",
            at(105),
            Duration::from_secs(15),
        );
        assert_eq!(r.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(r.renew_time, Some(MicroTime(at(105))));
        assert_eq!(r.lease_transitions, Some(4));
        let c = spec_for(&Step::Create, None, "a", at(1), Duration::from_secs(15));
        assert_eq!(
            (c.lease_transitions, c.lease_duration_seconds),
            (Some(0), Some(15))
        );
    }
}

//! The replica ratio: canary pods next to a full primary behind the user's own Service,
//! which selects both. The split is the pods' ratio; there is nothing else to write.

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;

use super::{Io, Observed, Split, TrafficRouter};

pub struct ReplicaRatio;

/// Canary replicas for weight `w` next to a full primary of `primary` replicas:
/// ceil(primary * w / (100 - w)); 100% means as many as the primary.
pub fn canary_replicas(primary: i32, weight: i32) -> i32 {
    match weight {
        w if w <= 0 || primary <= 0 => 0,
        w if w >= 100 => primary,
        w => {
            let (p, w) = (i64::from(primary), i64::from(w));
            ((p * w + (100 - w) - 1) / (100 - w)) as i32
        }
    }
}

#[async_trait]
impl TrafficRouter for ReplicaRatio {
    fn canary_replicas(&self, primary: i32, weight: i32) -> i32 {
        canary_replicas(primary, weight)
    }

    fn plan_weight(&self, _: Split) -> Option<i32> {
        None
    }

    async fn observe(&self, _: &Io<'_>) -> Result<Observed, kube::Error> {
        Ok(Observed::default())
    }

    async fn apply(
        &self,
        _: &Io<'_>,
        _: &Observed,
        _: &Deployment,
        _: i32,
    ) -> Result<(), kube::Error> {
        Ok(())
    }

    async fn restore(&self, _: &Io<'_>) -> Result<(), kube::Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ratio() {
        assert_eq!(canary_replicas(4, 0), 0);
        assert_eq!(canary_replicas(4, 10), 1); // ceil(0.44)
        assert_eq!(canary_replicas(4, 20), 1);
        assert_eq!(canary_replicas(4, 25), 2); // ceil(1.33)
        assert_eq!(canary_replicas(4, 50), 4);
        assert_eq!(canary_replicas(4, 75), 12);
        assert_eq!(canary_replicas(4, 100), 4);
        assert_eq!(canary_replicas(0, 50), 0);
        assert_eq!(
            ReplicaRatio.plan_weight(Split {
                adopted: true,
                active: true,
                weight: 50,
                ready: true,
                previous: 10,
                ready_for_previous: true
            }),
            None
        );
    }
}

//! How canary traffic is split. One [`TrafficRouter`] per way of splitting it: the
//! replica ratio through the user's own Service, or the backend weights of a Gateway API
//! HTTPRoute. Each plans its weight (pure) and applies and restores it (IO). A new router
//! is one new module and one arm in [`router`].

mod gateway_api;
mod replica_ratio;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ApiResource, DynamicObject};

pub use gateway_api::{
    ANNOTATION_ORIGINAL_BACKENDS, GatewayApi,
    rules::{backend_refs, current_backends, is_ours, restore_backends, with_backends},
    services::service,
};
pub use replica_ratio::ReplicaRatio;

use crate::{
    api::{GuardedRollout, GuardedRolloutSpec},
    telemetry::Metrics,
};

/// Where the canary stands, for planning the weight the router should send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// The primary has been adopted: the router may be touched.
    pub adopted: bool,
    /// The canary is under analysis or being promoted, so it may serve.
    pub active: bool,
    /// The current step's weight.
    pub weight: i32,
    /// The canary is ready at the size `weight` needs.
    pub ready: bool,
    /// The previous step's weight, and whether the canary has the pods for it.
    pub previous: i32,
    pub ready_for_previous: bool,
}

/// What a router read this reconcile, handed back to it when it applies the plan.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The routing object (an HTTPRoute, an Ingress, a VirtualService...), if any.
    pub object: Option<DynamicObject>,
    /// Why traffic cannot be routed at all (the object is missing): blocks canaries.
    pub missing: Option<String>,
}

/// What the IO side of a router works with.
pub struct Io<'a> {
    pub client: &'a kube::Client,
    pub metrics: &'a Metrics,
    pub discovered: &'a Discovered,
    pub rollout: &'a GuardedRollout,
    pub namespace: &'a str,
}

/// API resources found by discovery (e.g. which HTTPRoute version is served), kept for
/// the life of the process once found.
#[derive(Clone, Default)]
pub struct Discovered(Arc<Mutex<HashMap<&'static str, ApiResource>>>);

impl Discovered {
    pub fn get(&self, key: &'static str) -> Option<ApiResource> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    pub fn put(&self, key: &'static str, resource: ApiResource) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, resource);
    }
}

#[async_trait]
pub trait TrafficRouter: Send + Sync {
    /// Canary pods for `weight` percent of the traffic next to a primary of `primary`.
    fn canary_replicas(&self, primary: i32, weight: i32) -> i32;

    /// The weight to set for `split`; None when the split is only the pods' ratio.
    fn plan_weight(&self, split: Split) -> Option<i32>;

    /// Reads what routing needs.
    async fn observe(&self, io: &Io<'_>) -> Result<Observed, kube::Error>;

    /// Sends `canary_weight` percent to the canary (creating what that needs).
    async fn apply(
        &self,
        io: &Io<'_>,
        seen: &Observed,
        target: &Deployment,
        canary_weight: i32,
    ) -> Result<(), kube::Error>;

    /// On deletion: everything routing changed goes back to how its owner wrote it.
    async fn restore(&self, io: &Io<'_>) -> Result<(), kube::Error>;
}

/// The router a GuardedRollout's spec asks for.
pub fn router(spec: &GuardedRolloutSpec) -> Box<dyn TrafficRouter + '_> {
    match &spec.traffic_routing.gateway_api {
        Some(gw) => Box::new(GatewayApi::new(gw, &spec.target_ref.name)),
        None => Box::new(ReplicaRatio),
    }
}

//! Gateway API routing: `<target>-primary` / `<target>-canary` Services and the backend
//! weights of the rules of the user's HTTPRoute that send to the target (v1, or v1beta1
//! where v1 is not served).

pub mod rules;
pub mod services;

use async_trait::async_trait;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    discovery,
};
use serde_json::Value;

use super::{Io, Observed, Split, TrafficRouter};
use crate::{
    FIELD_MANAGER,
    api::{GatewayApiRouting, Role},
};

/// Annotation on the HTTPRoute holding its rules' backendRefs from before adoption,
/// restored when the GuardedRollout is deleted.
pub const ANNOTATION_ORIGINAL_BACKENDS: &str = "guardrails.dev/original-backend-refs";

const GROUP: &str = "gateway.networking.k8s.io";

pub struct GatewayApi<'a> {
    gw: &'a GatewayApiRouting,
    target: &'a str,
}

/// The HTTPRoute version to speak: v1, else v1beta1, among those serving httproutes.
pub fn preferred_version<'a>(serving: &[&'a str]) -> Option<&'a str> {
    ["v1", "v1beta1"]
        .into_iter()
        .find_map(|v| serving.iter().find(|s| **s == v).copied())
}

impl<'a> GatewayApi<'a> {
    pub fn new(gw: &'a GatewayApiRouting, target: &'a str) -> Self {
        GatewayApi { gw, target }
    }

    /// The user's Service that our rules send to.
    fn service(&self) -> &str {
        self.gw.service.as_deref().unwrap_or(self.target)
    }

    /// HTTPRoutes in the rollout's namespace, at the version the cluster serves; None
    /// when the Gateway API is not installed.
    async fn routes(&self, io: &Io<'_>) -> Result<Option<Api<DynamicObject>>, kube::Error> {
        let resource = match io.discovered.get("httproutes") {
            Some(r) => r,
            None => match discover(io.client).await? {
                Some(r) => {
                    io.discovered.put("httproutes", r.clone());
                    r
                }
                None => return Ok(None),
            },
        };
        Ok(Some(Api::namespaced_with(
            io.client.clone(),
            io.namespace,
            &resource,
        )))
    }

    /// `<target>-primary` and `<target>-canary`, with the ports of the user's Service.
    async fn ensure_services(&self, io: &Io<'_>, target: &Deployment) -> Result<(), kube::Error> {
        let owner = io.rollout.controller_owner_ref(&());
        let api: Api<Service> = Api::namespaced(io.client.clone(), io.namespace);
        let user = api.get_opt(self.service()).await?;
        let ports = services::ports(user.as_ref(), self.gw.port);
        let rollout = io.rollout.name_any();
        for role in [Role::Primary, Role::Canary] {
            let desired = services::service(role, target, &rollout, owner.clone(), ports.clone());
            let current = api.get_opt(&role.name(self.target)).await?;
            if current.is_some_and(|c| services::up_to_date(&c, &desired)) {
                continue;
            }
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(&desired.name_any(), &params, &Patch::Apply(&desired))
                .await?;
            io.metrics.wrote("service");
        }
        Ok(())
    }
}

/// Which HTTPRoute resource the cluster serves; None without the Gateway API.
async fn discover(client: &kube::Client) -> Result<Option<ApiResource>, kube::Error> {
    let group = match discovery::group(client, GROUP).await {
        Ok(g) => g,
        Err(kube::Error::Discovery(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let serving: Vec<&str> = group
        .versions()
        .filter(|v| {
            group
                .versioned_resources(v)
                .iter()
                .any(|(r, _)| r.plural == "httproutes")
        })
        .collect();
    Ok(preferred_version(&serving).and_then(|v| {
        group
            .versioned_resources(v)
            .into_iter()
            .find(|(r, _)| r.plural == "httproutes")
            .map(|(r, _)| r)
    }))
}

#[async_trait]
impl TrafficRouter for GatewayApi<'_> {
    /// The route sets the weight, so the canary only needs its share of the primary's
    /// capacity (at least one pod).
    fn canary_replicas(&self, primary: i32, weight: i32) -> i32 {
        if weight <= 0 || primary <= 0 {
            return 0;
        }
        let (p, w) = (i64::from(primary), i64::from(weight.min(100)));
        (((p * w + 99) / 100) as i32).max(1)
    }

    /// Left alone until the primary is adopted; 0 unless the canary may serve; the step's
    /// weight once the canary is ready for it, until then the previous step's (never
    /// backwards while the canary grows).
    fn plan_weight(&self, s: Split) -> Option<i32> {
        Some(match s {
            Split { adopted: false, .. } => return None,
            Split { active: false, .. } => 0,
            Split { weight, .. } if weight <= 0 => 0,
            Split {
                ready: true,
                weight,
                ..
            } => weight,
            Split {
                previous,
                ready_for_previous: true,
                ..
            } if previous > 0 => previous,
            _ => 0,
        })
    }

    async fn observe(&self, io: &Io<'_>) -> Result<Observed, kube::Error> {
        let object = match self.routes(io).await? {
            Some(api) => api.get_opt(&self.gw.http_route).await?,
            None => None,
        };
        let missing = object.is_none().then(|| {
            format!(
                "spec.trafficRouting.gatewayAPI.httpRoute: HTTPRoute {} not found in \
                 namespace {} (is the Gateway API installed?)",
                self.gw.http_route, io.namespace
            )
        });
        Ok(Observed { object, missing })
    }

    /// Services first (the route must not point at nothing), then the route's weights,
    /// written with the resourceVersion read: a concurrent edit fails and is retried.
    async fn apply(
        &self,
        io: &Io<'_>,
        seen: &Observed,
        target: &Deployment,
        canary_weight: i32,
    ) -> Result<(), kube::Error> {
        let (Some(route), Some(api)) = (&seen.object, self.routes(io).await?) else {
            return Ok(());
        };
        self.ensure_services(io, target).await?;
        let current = route.data["spec"]["rules"].clone();
        let refs = rules::backend_refs(self.target, self.gw.port, canary_weight);
        let desired = rules::with_backends(&current, &refs, self.service(), self.target);
        let recorded = route
            .annotations()
            .contains_key(ANNOTATION_ORIGINAL_BACKENDS);
        if desired == current && recorded {
            return Ok(());
        }
        let mut next = route.clone();
        if !recorded {
            let original = rules::current_backends(&current).to_string();
            next.annotations_mut()
                .insert(ANNOTATION_ORIGINAL_BACKENDS.into(), original);
        }
        next.data["spec"]["rules"] = desired;
        api.replace(&route.name_any(), &PostParams::default(), &next)
            .await?;
        io.metrics.wrote("httproute");
        Ok(())
    }

    /// The route's original backends come back, then our Services go.
    async fn restore(&self, io: &Io<'_>) -> Result<(), kube::Error> {
        if let Some(api) = self.routes(io).await?
            && let Some(route) = api.get_opt(&self.gw.http_route).await?
            && let Some(saved) = route.annotations().get(ANNOTATION_ORIGINAL_BACKENDS)
        {
            let saved: Value = serde_json::from_str(saved).unwrap_or_default();
            let mut next = route.clone();
            next.data["spec"]["rules"] = rules::restore_backends(
                &route.data["spec"]["rules"],
                &saved,
                self.service(),
                self.target,
            );
            next.annotations_mut().remove(ANNOTATION_ORIGINAL_BACKENDS);
            api.replace(&self.gw.http_route, &PostParams::default(), &next)
                .await?;
            io.metrics.wrote("httproute");
        }
        let services: Api<Service> = Api::namespaced(io.client.clone(), io.namespace);
        for role in [Role::Canary, Role::Primary] {
            match services
                .delete(&role.name(self.target), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> GatewayApiRouting {
        GatewayApiRouting {
            http_route: "r".into(),
            port: 8080,
            service: None,
        }
    }

    #[test]
    fn route_weighted_canaries_get_their_share_of_capacity() {
        let g = gw();
        let r = GatewayApi::new(&g, "web");
        assert_eq!(r.canary_replicas(4, 0), 0);
        assert_eq!(r.canary_replicas(4, 5), 1, "at least one pod");
        assert_eq!(r.canary_replicas(4, 25), 1);
        assert_eq!(r.canary_replicas(4, 50), 2);
        assert_eq!(r.canary_replicas(4, 100), 4);
        assert_eq!(r.canary_replicas(0, 50), 0);
    }

    #[test]
    fn weights_never_go_back_while_the_canary_grows() {
        let g = gw();
        let r = GatewayApi::new(&g, "web");
        let at = |weight, ready, previous, ready_for_previous| Split {
            adopted: true,
            active: true,
            weight,
            ready,
            previous,
            ready_for_previous,
        };
        assert_eq!(
            r.plan_weight(Split {
                adopted: false,
                ..at(5, true, 0, false)
            }),
            None
        );
        assert_eq!(
            r.plan_weight(at(5, false, 0, false)),
            Some(0),
            "first step, not ready"
        );
        assert_eq!(r.plan_weight(at(5, true, 0, false)), Some(5));
        assert_eq!(
            r.plan_weight(at(25, false, 5, true)),
            Some(5),
            "keeps the previous"
        );
        assert_eq!(r.plan_weight(at(25, true, 5, true)), Some(25));
        assert_eq!(
            r.plan_weight(at(50, false, 25, false)),
            Some(0),
            "no pods left for it"
        );
        assert_eq!(
            r.plan_weight(Split {
                active: false,
                ..at(50, true, 25, true)
            }),
            Some(0)
        );
        assert_eq!(r.plan_weight(at(0, true, 0, true)), Some(0));
    }

    #[test]
    fn v1_is_preferred_and_v1beta1_is_spoken_where_v1_is_not_served() {
        assert_eq!(preferred_version(&["v1beta1", "v1"]), Some("v1"));
        assert_eq!(preferred_version(&["v1beta1"]), Some("v1beta1"));
        assert_eq!(preferred_version(&["v1alpha2"]), None);
        assert_eq!(preferred_version(&[]), None);
    }
}

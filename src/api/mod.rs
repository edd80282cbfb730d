//! The custom resources, exactly as the API contract defines them. Doc comments on
//! fields are the `kubectl explain` text.

mod analysis;
mod duration;
// kube's printcolumn(...) attributes repeat keys by design.
#[allow(clippy::duplicated_attributes)]
mod guarded_rollout;
mod guarded_rollout_status;
mod notifications;
mod pod_template;
pub mod reference;
mod schema;
#[allow(clippy::duplicated_attributes)]
mod slo_policy;
pub mod validate;

pub use analysis::*;
pub use duration::{DURATION_PATTERN, DurationError, PromDuration};
pub use guarded_rollout::*;
pub use guarded_rollout_status::*;
pub use notifications::*;
pub use pod_template::PodTemplate;
pub use slo_policy::*;

use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the custom resources.
pub const GROUP: &str = "guardrails.dev";

/// Label on managed Deployments: `primary` or `canary`.
pub const LABEL_ROLE: &str = "guardrails.dev/role";
/// Label on managed Deployments: name of the GuardedRollout.
pub const LABEL_ROLLOUT: &str = "guardrails.dev/rollout";
/// Role of a managed Deployment (the value of LABEL_ROLE) and its Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Canary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Canary => "canary",
        }
    }

    /// `<target>-primary` or `<target>-canary`.
    pub fn name(self, target: &str) -> String {
        format!("{target}-{}", self.as_str())
    }
}

/// Pod-template annotation overriding spec.changeClass for one revision.
pub const ANNOTATION_CHANGE_CLASS: &str = "guardrails.dev/change-class";
/// Annotation: promote the canary now.
pub const ANNOTATION_PROMOTE: &str = "guardrails.dev/promote";
/// Annotation: roll the canary back now; the value is the reason.
pub const ANNOTATION_ABORT: &str = "guardrails.dev/abort";
/// Annotation: retry the failed revision.
pub const ANNOTATION_RETRY: &str = "guardrails.dev/retry";
/// Annotation: let the current revision through the budget gate; the value is the reason.
pub const ANNOTATION_OVERRIDE_GATE: &str = "guardrails.dev/override-gate";

/// Where to reach Prometheus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRef {
    /// Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090.
    #[schemars(length(min = 1), regex(pattern = r"^https?://"))]
    pub url: String,
}

/// Both CRDs, in the order they are written to `crds/`.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![SloPolicy::crd(), GuardedRollout::crd()]
}

/// Each CRD as (file name, YAML), as `make crds` writes them to `crds/`.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_yaml::to_string(crd).expect("a CRD serializes to YAML");
            (format!("{name}.yaml"), yaml)
        })
        .collect()
}

/// The CRDs as one multi-document YAML stream, as `guardrails crd` prints it.
pub fn crds_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

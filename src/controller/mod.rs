//! kube-runtime controllers: observe -> decide (pure) -> act -> status.

pub mod events;
pub mod rollout;
pub mod slo_policy;

use std::{sync::Arc, time::Duration};

use kube::{Client, runtime::events::Reporter};

use crate::{prometheus::Sources, telemetry::Metrics};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "guardrails";

/// What every reconcile needs.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub sources: Sources,
    pub metrics: Metrics,
    pub reporter: Reporter,
}

impl Context {
    pub fn new(client: Client, prometheus_url: Option<String>, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            client,
            sources: Sources::new(prometheus_url),
            metrics,
            reporter: Reporter {
                controller: "guardrails".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        })
    }
}

/// Errors a reconcile can end with. All are transient: invalid specs are not errors
/// but a status condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no namespace")]
    NoNamespace,
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Bounded name of the error kind, for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::NoNamespace => "no-namespace",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// Requeue delay after a transient error.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);

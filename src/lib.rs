//! Guardrails: reliability policy in charge of progressive delivery.
#![forbid(unsafe_code)]

pub mod analysis;
pub mod api;
pub mod conditions;
pub mod controller;
pub mod leader;
pub mod prometheus;
pub mod promql;
pub mod reasons;
pub mod rollout;
pub mod slo;
pub mod telemetry;
pub mod traffic;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "guardrails";

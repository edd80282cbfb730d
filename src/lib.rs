//! Guardrails: reliability policy in charge of progressive delivery.
#![forbid(unsafe_code)]

pub mod api;
pub mod promql;

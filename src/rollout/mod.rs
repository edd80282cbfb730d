//! The GuardedRollout state machine: decide(spec, status, observations, now). No IO.

mod decide;
pub mod gate;
mod model;
pub mod steps;

pub use decide::{HISTORY_LIMIT, decide};
pub use model::*;

#[cfg(test)]
mod tests;

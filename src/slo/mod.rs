//! Pure SLO logic: SLI, error budget, burn rates, alert tiers and the budget gate.
//! No IO; the controller feeds it readings and a clock.

mod evaluate;
pub mod gate;
pub mod math;
mod queries;
pub mod recorded;
pub mod rules;

pub use evaluate::{
    COVERAGE, FailedReading, LOW_COVERAGE, Observation, Readings, evaluate, gate_transition,
    invalid, windows, without_timestamps,
};
pub use queries::{Indicators, not_a_bucket, parse_all};

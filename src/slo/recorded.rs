//! Reading SloPolicies from the series their recording rules keep (`guardrails rules`):
//! one query per recorded series returns every policy's value, selected here by labels.
//! No IO.

use std::collections::HashMap;

use super::{COVERAGE, Readings, rules, windows};
use crate::api::{Objective, SloPolicySpec};

/// The label of a recorded series naming the objective's spec it was computed from
/// (target and indicator): series of an outdated rule are not read.
pub const SPEC_LABEL: &str = "slo_spec";

/// Which series of a recorded family belong to one objective.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub namespace: String,
    pub policy: String,
    pub objective: String,
    pub spec: String,
}

impl SeriesKey {
    /// The key of a series from its labels; None when one is missing.
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| labels.get(k).cloned();
        Some(SeriesKey {
            namespace: get("slo_namespace")?,
            policy: get("slo")?,
            objective: get("objective")?,
            spec: get(SPEC_LABEL)?,
        })
    }

    pub fn of(namespace: &str, policy: &str, objective: &Objective) -> Self {
        SeriesKey {
            namespace: namespace.into(),
            policy: policy.into(),
            objective: objective.name.clone(),
            spec: fingerprint(objective),
        }
    }
}

/// The values of one recorded family, by series.
pub type Family = HashMap<SeriesKey, f64>;

/// A stable short digest (FNV-1a, 64 bits, hex) of what an objective's recorded values
/// depend on: its target and indicator.
pub fn fingerprint(objective: &Objective) -> String {
    let text = format!(
        "{}|{}",
        objective.target,
        serde_json::to_string(&objective.indicator).unwrap_or_default()
    );
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Name of the recorded share (0-1) of `window` that has data.
pub fn coverage_record(window: &str) -> String {
    format!("guardrails_slo:coverage:{window}")
}

/// Every recorded family an evaluation of `spec` reads: (key in [`Readings`], name).
pub fn families(spec: &SloPolicySpec) -> Vec<(String, String)> {
    windows(spec)
        .into_iter()
        .map(|w| {
            let record = rules::burn_rate_record(&w);
            (w, record)
        })
        .chain([(COVERAGE.to_string(), coverage_record(spec.window.as_str()))])
        .collect()
}

/// The readings of every objective from the recorded families (by name), or None when
/// an objective has no recorded series (its rules are not loaded, or are outdated, or
/// its service has no data at all): then the policy is read with its own queries.
///
/// An objective's rules are taken as loaded when its coverage series exists (it does
/// whenever the indicator has any data in the window); a window without a series, or
/// with NaN (no events), is no data. Burn rates are turned back into error ratios.
pub fn readings(
    spec: &SloPolicySpec,
    namespace: &str,
    policy: &str,
    recorded: &HashMap<String, std::sync::Arc<Family>>,
) -> Option<Vec<Readings>> {
    let families = families(spec);
    let value = |name: &str, key: &SeriesKey| recorded.get(name)?.get(key).copied();
    spec.objectives
        .iter()
        .map(|o| {
            let key = SeriesKey::of(namespace, policy, o);
            let mut r = Readings::new();
            for (reading, name) in &families {
                let v = value(name, &key);
                if reading == COVERAGE {
                    v?;
                    r.insert(reading.clone(), v.filter(|c| !c.is_nan()));
                } else {
                    let ratio = v
                        .filter(|b| !b.is_nan())
                        .map(|b| b * (1.0 - o.target / 100.0));
                    r.insert(reading.clone(), ratio);
                }
            }
            Some(r)
        })
        .collect()
}

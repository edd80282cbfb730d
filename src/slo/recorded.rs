//! Reading SloPolicies from the series their recording rules keep (`guardrails rules`):
//! one query per recorded series returns every policy's value, selected here by labels;
//! what is not recorded (yet) is left to the policy's own queries.
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

/// What the recorded families hold of one objective.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// The readings found (NaN, no events in the window, is no data).
    pub readings: Readings,
    /// What the objective's own queries must read: the windows whose series is missing
    /// (its rules are not loaded, are outdated or have not evaluated yet, or its service
    /// has no data), and then coverage too.
    pub missing: Vec<String>,
}

/// Whether every objective was read from the recorded families alone.
pub fn complete(objectives: &[Recorded]) -> bool {
    objectives.iter().all(|o| o.missing.is_empty())
}

/// Every objective as the recorded families (by name) hold it, in spec order.
///
/// The coverage series may be missing when every window is recorded (it needs hours of
/// data): then there is no coverage. When a window is missing, so is the group that
/// records coverage with it, most likely: coverage is read with the window. Burn rates
/// are turned back into error ratios.
pub fn readings(
    spec: &SloPolicySpec,
    namespace: &str,
    policy: &str,
    recorded: &HashMap<String, std::sync::Arc<Family>>,
) -> Vec<Recorded> {
    let families = families(spec);
    let value = |name: &str, key: &SeriesKey| recorded.get(name)?.get(key).copied();
    spec.objectives
        .iter()
        .map(|o| {
            let key = SeriesKey::of(namespace, policy, o);
            let budget = 1.0 - o.target / 100.0;
            let mut out = Recorded::default();
            for (reading, name) in &families {
                let is_coverage = reading == COVERAGE;
                match value(name, &key) {
                    Some(v) => {
                        let v = Some(v).filter(|x| !x.is_nan());
                        let v = if is_coverage {
                            v
                        } else {
                            v.map(|b| b * budget)
                        };
                        out.readings.insert(reading.clone(), v);
                    }
                    None if is_coverage && out.missing.is_empty() => {
                        out.readings.insert(reading.clone(), None);
                    }
                    None => out.missing.push(reading.clone()),
                }
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::SloPolicy;

    fn spec() -> SloPolicySpec {
        let p: SloPolicy = serde_yaml::from_str(
            r#"
apiVersion: guardrails.dev/v1alpha1
kind: SloPolicy
metadata: {name: web, namespace: shop}
spec:
  objectives:
    - name: availability
      target: 99.9
      indicator: {ratio: {errors: 'http_requests_total{code="500"}', total: http_requests_total}}
"#,
        )
        .unwrap();
        p.spec
    }

    #[test]
    fn a_new_service_is_read_without_coverage_and_missing_windows_are_read_raw() {
        let spec = spec();
        let key = SeriesKey::of("shop", "web", &spec.objectives[0]);
        let burn = |w: &str| if w == "1h" { f64::NAN } else { 2.0 };
        // Minutes of data: no coverage series yet (its subquery steps are hours apart).
        let mut recorded: HashMap<String, Arc<Family>> = windows(&spec)
            .iter()
            .map(|w| {
                let family: Family = [(key.clone(), burn(w))].into();
                (rules::burn_rate_record(w), Arc::new(family))
            })
            .collect();
        let read = readings(&spec, "shop", "web", &recorded);
        assert!(complete(&read), "{read:?}");
        let ratio = read[0].readings["5m"].unwrap();
        assert!((ratio - 0.002).abs() < 1e-12, "{ratio}");
        assert_eq!(read[0].readings["1h"], None, "NaN is no data");
        assert_eq!(read[0].readings[COVERAGE], None);
        // A window whose series is missing (a rule not evaluated yet) is read raw, with
        // coverage; the others are read from their series.
        let all = recorded.clone();
        recorded.remove(&rules::burn_rate_record("28d"));
        let read = readings(&spec, "shop", "web", &recorded);
        assert!(!complete(&read));
        assert_eq!(read[0].missing, ["28d", COVERAGE]);
        assert_eq!(read[0].readings["5m"], Some(ratio));
        assert!(!read[0].readings.contains_key("28d"));
        let recorded = all;
        // Another policy, and this one's spec after a change of target: nothing of
        // theirs is recorded.
        let mut every: Vec<String> = windows(&spec);
        every.push(COVERAGE.into());
        let other = readings(&spec, "shop", "other", &recorded);
        assert_eq!(other[0].missing, every);
        assert!(other[0].readings.is_empty());
        let mut changed = spec.clone();
        changed.objectives[0].target = 99.5;
        assert_eq!(
            readings(&changed, "shop", "web", &recorded)[0].missing,
            every
        );
    }
}

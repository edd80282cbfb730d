//! Reading an SloPolicy's indicators from a metric source.

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;

use crate::{
    api::SloPolicySpec,
    prometheus::MetricSource,
    slo::{COVERAGE, FailedReading, Indicators, Observation, Readings, windows},
};

/// Reads the error ratio of every objective over every window the policy needs, and how
/// much of the compliance window has data, all at time `at`: one query each, sent as
/// the source sees fit (Prometheus: one request for all). Returns the observation and
/// the number of requests sent.
pub async fn observe<S: MetricSource>(
    source: &S,
    spec: &SloPolicySpec,
    indicators: &[Indicators],
    at: Timestamp,
) -> (Observation, u64) {
    let windows = windows(spec);
    let (keys, queries): (Vec<(usize, &str)>, Vec<String>) = indicators
        .iter()
        .enumerate()
        .flat_map(|(i, ind)| {
            windows
                .iter()
                .map(move |w| ((i, w.as_str()), ind.error_ratio_query(w)))
                .chain([((i, COVERAGE), ind.coverage_query(&spec.window))])
        })
        .unzip();
    let (results, sent) = source.scalars(&queries, at).await;
    let mut readings = vec![Readings::new(); indicators.len()];
    let mut failed = Vec::new();
    for ((i, window), result) in keys.iter().zip(results) {
        match result {
            Ok(value) => {
                readings[*i].insert(window.to_string(), value);
            }
            Err(e) => failed.push(FailedReading {
                objective: *i,
                window: window.to_string(),
                error: e.to_string(),
            }),
        }
    }
    // One slow window keeps the others; only when nothing answered is the whole
    // evaluation unavailable.
    let observation = match failed.len() {
        0 => Observation::Read(readings),
        n if n == queries.len() => Observation::Unavailable(failed[0].error.clone()),
        _ => Observation::Partial(readings, failed),
    };
    (observation, sent)
}

/// The readings of every objective from the recorded series, when the policy's rules
/// are recorded (see `slo::recorded::readings`); each family is read at most once per
/// `max_age` for all policies. Returns the readings (Ok(None): read the raw metrics;
/// Err: Prometheus did not answer, and every policy's raw queries would not help it)
/// and the number of queries sent.
pub async fn observe_recorded(
    source: &crate::prometheus::PrometheusSource,
    spec: &SloPolicySpec,
    namespace: &str,
    policy: &str,
    max_age: std::time::Duration,
) -> (Result<Option<Vec<crate::slo::Readings>>, String>, u64) {
    let families = crate::slo::recorded::families(spec);
    let read = join_all(
        families
            .iter()
            .map(|(_, name)| source.family(name, max_age)),
    )
    .await;
    let mut sent = 0;
    let mut recorded = std::collections::HashMap::new();
    for ((_, name), result) in families.iter().zip(read) {
        match result {
            Ok((family, queried)) => {
                sent += u64::from(queried);
                recorded.insert(name.clone(), family);
            }
            Err(e) => return (Err(e.to_string()), sent),
        }
    }
    let readings = crate::slo::recorded::readings(spec, namespace, policy, &recorded);
    (Ok(readings), sent)
}

/// A latency objective whose window has no data although its histogram has buckets:
/// the threshold is none of them. The message names the field and the nearest buckets.
pub async fn threshold_problem(
    source: &crate::prometheus::PrometheusSource,
    spec: &SloPolicySpec,
    observation: &Observation,
    at: Timestamp,
) -> Option<String> {
    let (Observation::Read(readings) | Observation::Partial(readings, _)) = observation else {
        return None;
    };
    for (i, o) in spec.objectives.iter().enumerate() {
        let Some(l) = &o.indicator.latency else {
            continue;
        };
        let read = readings.get(i).and_then(|r| r.get(spec.window.as_str()));
        if read.copied().flatten().is_some() {
            continue;
        }
        let query = format!("count by (le) ({})", l.histogram);
        let Ok(buckets) = source.label_values(&query, "le", at).await else {
            continue;
        };
        if let Some(why) = crate::slo::not_a_bucket(&l.threshold, &buckets) {
            return Some(format!(
                "spec.objectives[{i}].indicator.latency.threshold: {why}"
            ));
        }
    }
    None
}

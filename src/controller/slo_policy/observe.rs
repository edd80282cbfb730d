//! Reading an SloPolicy's indicators from a metric source.

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;

use std::{collections::HashMap, sync::Arc};

use crate::{
    api::{IndicatorSource, SloPolicySpec},
    prometheus::MetricSource,
    slo::{COVERAGE, FailedReading, Indicators, Observation, Readings, recorded, windows},
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
    let every: Vec<String> = windows(spec)
        .into_iter()
        .chain([COVERAGE.to_string()])
        .collect();
    let wanted: Vec<(usize, &str)> = (0..indicators.len())
        .flat_map(|i| every.iter().map(move |w| (i, w.as_str())))
        .collect();
    let readings = vec![Readings::new(); indicators.len()];
    observe_into(source, spec, indicators, &wanted, readings, at).await
}

/// Reads `wanted` (objective index, window or [`COVERAGE`]) with the objectives' own
/// queries at `at`, into the `readings` already known. Returns the observation and the
/// number of requests sent.
async fn observe_into<S: MetricSource>(
    source: &S,
    spec: &SloPolicySpec,
    indicators: &[Indicators],
    wanted: &[(usize, &str)],
    mut readings: Vec<Readings>,
    at: Timestamp,
) -> (Observation, u64) {
    let queries: Vec<String> = wanted
        .iter()
        .map(|&(i, w)| match w {
            COVERAGE => indicators[i].coverage_query(&spec.window),
            w => indicators[i].error_ratio_query(w),
        })
        .collect();
    let (results, sent) = source.scalars(&queries, at).await;
    let mut failed = Vec::new();
    for (&(i, window), result) in wanted.iter().zip(results) {
        match result {
            Ok(value) => {
                readings[i].insert(window.to_string(), value);
            }
            Err(e) => failed.push(FailedReading {
                objective: i,
                window: window.to_string(),
                error: e.to_string(),
            }),
        }
    }
    // One slow window keeps the others; only when nothing was read is the whole
    // evaluation unavailable.
    let observation = match failed.len() {
        0 => Observation::Read(readings),
        _ if readings.iter().all(|r| r.is_empty()) => {
            Observation::Unavailable(failed[0].error.clone())
        }
        _ => Observation::Partial(readings, failed),
    };
    (observation, sent)
}

/// Reads the policy from the recorded series of its rules (see `slo::recorded`), each
/// family at most once per `max_age` for all policies, and with its own queries at `at`
/// whatever they do not hold (yet). Returns the observation, where it came from (None
/// when Prometheus answered none of the policy's own queries, or did not answer the
/// recorded ones: every policy's own queries would not help it then) and the number of
/// requests sent.
pub async fn observe_recorded(
    source: &crate::prometheus::PrometheusSource,
    spec: &SloPolicySpec,
    indicators: &[Indicators],
    (namespace, policy): (&str, &str),
    max_age: std::time::Duration,
    at: Timestamp,
) -> (Observation, Option<IndicatorSource>, u64) {
    let (recorded, mut sent) = read_families(source, spec, max_age).await;
    let recorded = match recorded {
        Ok(recorded) => recorded::readings(spec, namespace, policy, &recorded),
        Err(why) => return (Observation::Unavailable(why), None, sent),
    };
    if recorded::complete(&recorded) {
        let readings = recorded.into_iter().map(|o| o.readings).collect();
        return (
            Observation::Read(readings),
            Some(IndicatorSource::Recorded),
            sent,
        );
    }
    let wanted: Vec<(usize, &str)> = recorded
        .iter()
        .enumerate()
        .flat_map(|(i, o)| o.missing.iter().map(move |w| (i, w.as_str())))
        .collect();
    let readings = recorded.iter().map(|o| o.readings.clone()).collect();
    let (observation, raw) = observe_into(source, spec, indicators, &wanted, readings, at).await;
    sent += raw;
    // Raw once any of its own queries answered; otherwise the source said before stands.
    let answered = match &observation {
        Observation::Read(_) => true,
        Observation::Partial(_, failed) => failed.len() < wanted.len(),
        Observation::Unavailable(_) => false,
    };
    let from = answered.then_some(IndicatorSource::Raw);
    (observation, from, sent)
}

/// Every recorded family the policy reads, by name, and the number of queries sent.
async fn read_families(
    source: &crate::prometheus::PrometheusSource,
    spec: &SloPolicySpec,
    max_age: std::time::Duration,
) -> (Result<HashMap<String, Arc<recorded::Family>>, String>, u64) {
    let families = recorded::families(spec);
    let read = join_all(
        families
            .iter()
            .map(|(_, name)| source.family(name, max_age)),
    )
    .await;
    let mut sent = 0;
    let mut out = HashMap::new();
    for ((_, name), result) in families.iter().zip(read) {
        match result {
            Ok((family, queried)) => {
                sent += u64::from(queried);
                out.insert(name.clone(), family);
            }
            Err(e) => return (Err(e.to_string()), sent),
        }
    }
    (Ok(out), sent)
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

//! Reading an SloPolicy's indicators from a metric source.

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;

use crate::{
    api::SloPolicySpec,
    prometheus::MetricSource,
    slo::{COVERAGE, FailedReading, Indicators, Observation, Readings, windows},
};

/// Queries the error ratio of every objective over every window the policy needs, all
/// at time `at`, concurrently: one query per objective and window, and one for how much
/// of the compliance window has data. Returns the
/// observation and the number of queries sent.
pub async fn observe<S: MetricSource>(
    source: &S,
    spec: &SloPolicySpec,
    indicators: &[Indicators],
    at: Timestamp,
) -> (Observation, u64) {
    let windows = windows(spec);
    let queries: Vec<(usize, &str, String)> = indicators
        .iter()
        .enumerate()
        .flat_map(|(i, ind)| {
            windows
                .iter()
                .map(move |w| (i, w.as_str(), ind.error_ratio_query(w)))
                .chain([(i, COVERAGE, ind.coverage_query(&spec.window))])
        })
        .collect();
    let results = join_all(queries.iter().map(|(_, _, q)| source.scalar(q, at))).await;
    let sent = queries.len() as u64;
    let mut readings = vec![Readings::new(); indicators.len()];
    let mut failed = Vec::new();
    for ((i, window, _), result) in queries.iter().zip(results) {
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

//! One analysis tick: every check against Prometheus, concurrently, one query per
//! check (two for compare).

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;

use super::super::Context;
use crate::{
    analysis::{
        self, Input, Sample,
        sequential_check::{Readings, SequentialInput},
    },
    api::{Check, CheckKind, CheckStatus, GuardedRollout, GuardedRolloutStatus, SloPolicy},
    prometheus::{DEFAULT_SCRAPE_INTERVAL, MetricSource, PrometheusSource, SourceError},
    promql::{self, Vars},
    rollout::workloads::Role,
    slo::Indicators,
};

/// Regex of the pod names of a managed Deployment (`<deployment>-<hash>-<suffix>`).
/// Deployment names are DNS subdomains: `.` is their only regex metacharacter.
pub fn pods_regex(target: &str, role: Role) -> String {
    format!(
        "{}-[a-z0-9]+-[a-z0-9]+",
        role.name(target).replace('.', r"\.")
    )
}

fn vars(gr: &GuardedRollout, ns: &str) -> Vars {
    let target = &gr.spec.target_ref.name;
    Vars::from([
        ("namespace", ns.to_string()),
        ("target", target.clone()),
        ("interval", gr.spec.analysis.interval.to_string()),
        ("canary_pods", pods_regex(target, Role::Canary)),
        ("primary_pods", pods_regex(target, Role::Primary)),
    ])
}

async fn sample(
    source: &Result<PrometheusSource, SourceError>,
    query: Result<String, String>,
    at: Timestamp,
) -> Sample {
    let query = match query {
        Ok(q) => q,
        Err(e) => return Sample::Error(e),
    };
    match source {
        Err(e) => Sample::Error(e.to_string()),
        Ok(s) => match s.scalar(&query, at).await {
            Ok(Some(v)) => Sample::Value(v),
            Ok(None) => Sample::NoData,
            Err(e @ SourceError::NotSingle(_)) => Sample::Invalid(e.to_string()),
            Err(e) => Sample::Error(e.to_string()),
        },
    }
}

fn render(template: &str, vars: &Vars) -> Result<String, String> {
    let q = promql::render(template, vars).map_err(|e| e.to_string())?;
    promql::parse_query(&q).map_err(|e| e.to_string())?;
    Ok(q)
}

/// What one reading of the checks covers.
pub struct Reading<'a> {
    pub slo: Option<&'a SloPolicy>,
    /// The status decided on: the sequential checks' evidence so far, the canary's start.
    pub previous: &'a GuardedRolloutStatus,
    pub at: Timestamp,
    /// Only the sequential checks (their evidence, between ticks).
    pub only_sequential: bool,
}

/// How often the sequential checks read evidence: the shortest `every`, a check without
/// one reading at the scrape interval of the SloPolicy's Prometheus. None without
/// sequential checks.
pub async fn evidence_every(
    ctx: &Context,
    gr: &GuardedRollout,
    slo: Option<&SloPolicy>,
) -> Option<Duration> {
    let mut shortest: Option<Duration> = None;
    for check in &gr.spec.analysis.checks {
        let Ok(CheckKind::Sequential(s)) = check.kind() else {
            continue;
        };
        let every = match &s.every {
            Some(every) => every.as_duration(),
            None => match slo_source(ctx, slo) {
                Ok(source) => source.scrape_interval().await,
                Err(_) => DEFAULT_SCRAPE_INTERVAL,
            },
        };
        shortest = Some(shortest.map_or(every, |d| d.min(every)));
    }
    shortest
}

fn slo_source(ctx: &Context, slo: Option<&SloPolicy>) -> Result<PrometheusSource, SourceError> {
    ctx.sources.get(
        slo.and_then(|p| p.spec.prometheus.as_ref())
            .map(|p| p.url.as_str()),
    )
}

/// Runs the checks of the rollout once (or its sequential checks alone).
pub async fn tick(
    ctx: &Context,
    gr: &GuardedRollout,
    ns: &str,
    reading: &Reading<'_>,
) -> Vec<CheckStatus> {
    let (slo, at) = (reading.slo, reading.at);
    let analysis_source = ctx
        .sources
        .get(gr.spec.analysis.prometheus.as_ref().map(|p| p.url.as_str()));
    let slo_source = slo_source(ctx, slo);
    let vars = vars(gr, ns);
    let canary = pods_regex(&gr.spec.target_ref.name, Role::Canary);
    let run = |check: &Check| {
        let (analysis_source, slo_source, vars, canary) =
            (&analysis_source, &slo_source, &vars, &canary);
        let check = check.clone();
        async move {
            let input = match check.kind() {
                Ok(CheckKind::Query { query, .. }) => {
                    Input::Single(sample(analysis_source, render(query, vars), at).await)
                }
                Ok(CheckKind::Compare(c)) => {
                    let mut v = vars.clone();
                    v.insert("pods", canary.clone());
                    let canary_q = render(&c.query, &v);
                    v.insert("pods", pods_regex(&gr.spec.target_ref.name, Role::Primary));
                    let primary_q = render(&c.query, &v);
                    let (a, b) = tokio::join!(
                        sample(analysis_source, canary_q, at),
                        sample(analysis_source, primary_q, at)
                    );
                    Input::Pair(a, b)
                }
                Ok(CheckKind::SloBurnRate(b)) => {
                    let window = b.window.as_str();
                    Input::Single(
                        burn_rate(slo_source, slo, &b.objective, window, canary, at).await,
                    )
                }
                Ok(CheckKind::Sequential(s)) => {
                    let target = &gr.spec.target_ref.name;
                    evidence(slo_source, reading, &check.name, &s.objective, target).await
                }
                Err(e) => Input::Single(Sample::Invalid(e.to_string())),
            };
            analysis::evaluate(&check, &input)
        }
    };
    let due =
        gr.spec.analysis.checks.iter().filter(|c| {
            !reading.only_sequential || matches!(c.kind(), Ok(CheckKind::Sequential(_)))
        });
    join_all(due.map(run)).await
}

/// The objective's indicator scoped to the pods `pods` matches, with its target (percent).
fn scoped_indicator(
    slo: Option<&SloPolicy>,
    objective: &str,
    pods: &str,
) -> Result<(Indicators, f64), String> {
    let policy = slo.ok_or("SloPolicy not found")?;
    let o = policy
        .spec
        .objectives
        .iter()
        .find(|o| o.name == objective)
        .ok_or_else(|| format!("no objective {objective}"))?;
    let indicators = Indicators::parse(&o.indicator).map_err(|e| e.to_string())?;
    let scoped = indicators
        .scoped(&policy.spec.pod_label, pods)
        .map_err(|e| e.to_string())?;
    Ok((scoped, o.target))
}

/// A sequential check's reading: requests and errors of canary and primary since the
/// canary started, with the evidence so far.
async fn evidence(
    source: &Result<PrometheusSource, SourceError>,
    reading: &Reading<'_>,
    name: &str,
    objective: &str,
    target: &str,
) -> Input {
    let previous = reading
        .previous
        .analysis
        .iter()
        .flat_map(|a| &a.checks)
        .find(|c| c.name == name)
        .and_then(|c| c.evidence.clone());
    let since = reading
        .previous
        .analysis
        .as_ref()
        .and_then(|a| a.evidence_since.as_ref());
    let Some(since) = since else {
        return Input::Sequential(Box::new(SequentialInput {
            readings: None,
            allowed_ratio: 0.0,
            previous,
        }));
    };
    let seconds = (reading.at - since.0).get_seconds().max(1);
    let window = format!("{seconds}s");
    let counts = |role: Role| {
        scoped_indicator(reading.slo, objective, &pods_regex(target, role))
            .map(|(i, target)| (i.count_queries(&window), 1.0 - target / 100.0))
    };
    let (canary, primary) = (counts(Role::Canary), counts(Role::Primary));
    let allowed_ratio = canary.as_ref().map_or(0.0, |(_, a)| *a);
    let query = |side: &Result<((String, String), f64), String>, errors: bool| {
        side.clone()
            .map(|((requests, errs), _)| if errors { errs } else { requests })
    };
    let at = reading.at;
    let (canary_requests, canary_errors, primary_requests, primary_errors) = tokio::join!(
        sample(source, query(&canary, false), at),
        sample(source, query(&canary, true), at),
        sample(source, query(&primary, false), at),
        sample(source, query(&primary, true), at),
    );
    Input::Sequential(Box::new(SequentialInput {
        readings: Some(Readings {
            canary_requests,
            canary_errors,
            primary_requests,
            primary_errors,
        }),
        allowed_ratio,
        previous,
    }))
}

/// The canary's burn rate of one SloPolicy objective over `window`.
async fn burn_rate(
    source: &Result<PrometheusSource, SourceError>,
    slo: Option<&SloPolicy>,
    objective: &str,
    window: &str,
    canary: &str,
    at: Timestamp,
) -> Sample {
    let scoped = scoped_indicator(slo, objective, canary);
    let target = scoped.as_ref().map_or(0.0, |(_, target)| *target);
    let query = scoped.map(|(i, _)| i.error_ratio_query(window));
    match sample(source, query, at).await {
        Sample::Value(ratio) => Sample::Value(crate::slo::math::burn_rate(ratio, target)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_regex_matches_deployment_pods_only() {
        let re =
            regex::Regex::new(&format!("^{}$", pods_regex("share-link", Role::Canary))).unwrap();
        assert!(re.is_match("share-link-canary-7b6f4d21-x2k9p"));
        assert!(!re.is_match("share-link-primary-7b6f4d21-x2k9p"));
        assert!(!re.is_match("share-link-canary-x"));
        let dotted = pods_regex("a.b", Role::Primary);
        assert_eq!(dotted, r"a\.b-primary-[a-z0-9]+-[a-z0-9]+");
        assert_eq!(
            pods_regex("share-link", Role::Canary),
            "share-link-canary-[a-z0-9]+-[a-z0-9]+"
        );
    }
}

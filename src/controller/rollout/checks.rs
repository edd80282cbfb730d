//! One analysis tick: every check against Prometheus, concurrently, one query per
//! check (two for compare).

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;

use super::super::Context;
use crate::{
    analysis::{self, Input, Sample},
    api::{Check, CheckKind, CheckStatus, GuardedRollout, SloPolicy},
    prometheus::{MetricSource, PrometheusSource, SourceError},
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

/// Runs every check of the rollout once.
pub async fn tick(
    ctx: &Context,
    gr: &GuardedRollout,
    slo: Option<&SloPolicy>,
    ns: &str,
    at: Timestamp,
) -> Vec<CheckStatus> {
    let analysis_source = ctx
        .sources
        .get(gr.spec.analysis.prometheus.as_ref().map(|p| p.url.as_str()));
    let slo_source = ctx.sources.get(
        slo.and_then(|p| p.spec.prometheus.as_ref())
            .map(|p| p.url.as_str()),
    );
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
                Err(e) => Input::Single(Sample::Invalid(e.to_string())),
            };
            analysis::evaluate(&check, &input)
        }
    };
    join_all(gr.spec.analysis.checks.iter().map(run)).await
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
    let Some(policy) = slo else {
        return Sample::Error("SloPolicy not found".into());
    };
    let Some(o) = policy.spec.objectives.iter().find(|o| o.name == objective) else {
        return Sample::Error(format!("no objective {objective}"));
    };
    let query = Indicators::parse(&o.indicator)
        .map_err(|e| e.to_string())
        .and_then(|i| {
            i.scoped(&policy.spec.pod_label, canary)
                .map_err(|e| e.to_string())
        })
        .map(|i| i.error_ratio_query(window));
    match sample(source, query, at).await {
        Sample::Value(ratio) => Sample::Value(crate::slo::math::burn_rate(ratio, o.target)),
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

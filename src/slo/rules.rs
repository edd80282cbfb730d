//! Prometheus recording and alerting rules for a SloPolicy, computing exactly what the
//! controller computes, so that Alertmanager pages on what the gate sees.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Indicators, windows};
use crate::api::{BurnRateTier, Objective, SloPolicy, SloPolicySpec};

/// Name of the recorded burn rate over `window`, e.g. `guardrails_slo:burn_rate:5m`.
pub fn burn_rate_record(window: &str) -> String {
    format!("guardrails_slo:burn_rate:{window}")
}

/// Name of the recorded error budget remaining (percent) over the compliance window.
pub const BUDGET_REMAINING_RECORD: &str = "guardrails_slo:error_budget_remaining:percent";

/// Label on a generated PrometheusRule naming its SloPolicy.
pub const LABEL_SLO_POLICY: &str = "guardrails.dev/slo-policy";

/// Name of a policy's PrometheusRule.
pub fn prometheus_rule_name(policy: &str) -> String {
    format!("{policy}-slo")
}

/// The rules of [`rules`] as a prometheus-operator PrometheusRule
/// (`monitoring.coreos.com/v1`) named `<policy>-slo` in the policy's namespace, with
/// the labels of `spec.alerting.prometheusRule` and the operator's own.
pub fn prometheus_rule(policy: &SloPolicy) -> Result<serde_json::Value, String> {
    let file = rules(policy)?;
    let name = policy.metadata.name.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = policy
        .spec
        .alerting
        .prometheus_rule
        .as_ref()
        .map(|r| r.labels.clone())
        .unwrap_or_default();
    labels.insert("app.kubernetes.io/managed-by".into(), "guardrails".into());
    labels.insert(LABEL_SLO_POLICY.into(), name.clone());
    let mut metadata = serde_json::json!({
        "name": prometheus_rule_name(&name),
        "labels": labels,
    });
    if let Some(ns) = &policy.metadata.namespace {
        metadata["namespace"] = ns.clone().into();
    }
    Ok(serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": file,
    }))
}

#[derive(Debug, Serialize)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Serialize)]
pub struct RuleGroup {
    pub name: String,
    pub interval: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Serialize)]
pub struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    pub expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

type Labels = BTreeMap<String, String>;

impl Rule {
    fn record(record: String, expr: String, labels: &Labels) -> Self {
        Rule {
            record: Some(record),
            alert: None,
            expr,
            for_: None,
            labels: labels.clone(),
            annotations: Default::default(),
        }
    }
}

/// The rules for one SloPolicy: per objective, a burn-rate record for every window the
/// controller uses, the budget remaining, and one alert per burn-rate tier.
pub fn rules(policy: &SloPolicy) -> Result<RuleFile, String> {
    policy.spec.validate().map_err(|e| e.to_string())?;
    let spec = &policy.spec;
    let namespace = policy
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = policy.metadata.name.clone().unwrap_or_default();
    let service = spec.service.clone().unwrap_or_else(|| name.clone());
    let indicators = super::parse_all(&spec.objectives).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (objective, ind) in spec.objectives.iter().zip(&indicators) {
        let fingerprint = super::recorded::fingerprint(objective);
        let labels: Labels = [
            ("slo_namespace", namespace.as_str()),
            ("slo", name.as_str()),
            ("service", service.as_str()),
            ("objective", objective.name.as_str()),
            (super::recorded::SPEC_LABEL, fingerprint.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (mut short, long) = records(spec, objective, ind, &labels);
        short.extend(
            spec.alerting
                .burn_rate_tiers
                .iter()
                .map(|tier| alert(spec, objective, tier, &service, &labels)),
        );
        let group = format!("guardrails-{namespace}-{name}-{}", objective.name);
        out.push(RuleGroup {
            name: group.clone(),
            interval: short_interval(spec.interval.as_duration()),
            rules: short,
        });
        out.push(RuleGroup {
            name: format!("{group}-long"),
            interval: long_interval(spec.interval.as_duration()),
            rules: long,
        });
    }
    Ok(RuleFile { groups: out })
}

/// Windows from a day up change little between two evaluations.
const LONG_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// No group evaluates less often than this: a recorded sample older than Prometheus'
/// five-minute lookback reads as no series at all.
const MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(120);

/// The policy's interval, at most [`MAX_INTERVAL`].
fn short_interval(interval: std::time::Duration) -> String {
    crate::api::PromDuration::from_duration(interval.min(MAX_INTERVAL)).to_string()
}

/// Five times less often than the policy, at most every [`MAX_INTERVAL`] and never more
/// often than the short windows.
fn long_interval(interval: std::time::Duration) -> String {
    let short = interval.min(MAX_INTERVAL);
    let every = (interval * 5).min(MAX_INTERVAL).max(short);
    crate::api::PromDuration::from_duration(every).to_string()
}

fn is_long(window: &str) -> bool {
    window
        .parse::<crate::api::PromDuration>()
        .is_ok_and(|d| d.as_duration() >= LONG_WINDOW)
}

/// A PromQL label matcher selecting exactly these labels.
fn matcher(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The burn rate of every window the controller reads, the share of the compliance
/// window with data and the budget remaining: (short windows, long ones).
fn records(
    spec: &SloPolicySpec,
    objective: &Objective,
    ind: &Indicators,
    labels: &Labels,
) -> (Vec<Rule>, Vec<Rule>) {
    // The same float arithmetic as the controller's burn_rate().
    let budget = format!("(1 - {} / 100)", objective.target);
    let (mut short, mut rules) = (Vec::new(), Vec::new());
    for w in windows(spec) {
        let expr = format!("({}) / {budget}", Indicators::error_ratio_query(ind, &w));
        let rule = Rule::record(burn_rate_record(&w), expr, labels);
        if is_long(&w) {
            rules.push(rule);
        } else {
            short.push(rule);
        }
    }
    rules.push(Rule::record(
        super::recorded::coverage_record(spec.window.as_str()),
        ind.coverage_query(&spec.window),
        labels,
    ));
    let remaining = format!(
        "100 - 100 * {}{{{}}}",
        burn_rate_record(spec.window.as_str()),
        matcher(labels)
    );
    rules.push(Rule::record(
        BUDGET_REMAINING_RECORD.into(),
        remaining,
        labels,
    ));
    (short, rules)
}

/// The multi-window alert of one burn-rate tier.
fn alert(
    spec: &SloPolicySpec,
    objective: &Objective,
    tier: &BurnRateTier,
    service: &str,
    labels: &Labels,
) -> Rule {
    let (long, short) = (tier.long_window.as_str(), tier.short_window.as_str());
    let mut alert_labels = labels.clone();
    alert_labels.insert("severity".into(), tier.severity.to_string());
    alert_labels.insert("long_window".into(), long.into());
    alert_labels.insert("short_window".into(), short.into());
    let summary = format!("{service} {} is burning its error budget", objective.name);
    let description = format!(
        "Burn rate over {long} and {short} is at least {} (target {}% over {}): the budget would be gone in {}.",
        tier.burn_rate,
        objective.target,
        spec.window,
        exhaustion(spec.window.as_duration(), tier.burn_rate)
    );
    let m = matcher(labels);
    Rule {
        record: None,
        alert: Some("GuardrailsSloBurnRate".into()),
        expr: format!(
            "{}{{{m}}} >= {br} and {}{{{m}}} >= {br}",
            burn_rate_record(long),
            burn_rate_record(short),
            br = tier.burn_rate
        ),
        for_: None,
        labels: alert_labels,
        annotations: [
            ("summary".into(), summary),
            ("description".into(), description),
        ]
        .into(),
    }
}

fn exhaustion(window: std::time::Duration, burn_rate: f64) -> String {
    let hours = window.as_secs_f64() / 3600.0 / burn_rate;
    if hours >= 48.0 {
        format!("{:.0} days", hours / 24.0)
    } else {
        format!("{hours:.0} hours")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SloPolicy {
        crate::api::example_slo_policy()
    }

    #[test]
    fn records_every_window_and_alerts_every_tier() {
        let file = rules(&policy()).unwrap();
        assert_eq!(file.groups.len(), 2);
        let (g, long) = (&file.groups[0], &file.groups[1]);
        assert_eq!((g.interval.as_str(), long.interval.as_str()), ("1m", "2m"));
        let names = |g: &RuleGroup| -> Vec<String> {
            g.rules.iter().filter_map(|r| r.record.clone()).collect()
        };
        let (records, long_records) = (names(g), names(long));
        for w in ["1h", "5m", "6h", "30m"] {
            assert!(records.contains(&burn_rate_record(w)), "{w}");
        }
        for w in ["28d", "3d"] {
            assert!(long_records.contains(&burn_rate_record(w)), "{w}");
        }
        assert!(long_records.contains(&BUDGET_REMAINING_RECORD.to_string()));
        assert!(long_records.contains(&super::super::recorded::coverage_record("28d")));
        let every = |r: &Rule| r.labels.get(super::super::recorded::SPEC_LABEL).cloned();
        let fingerprint = Some(super::super::recorded::fingerprint(
            &policy().spec.objectives[0],
        ));
        assert!(
            g.rules
                .iter()
                .chain(&long.rules)
                .all(|r| every(r) == fingerprint)
        );
        let alerts: Vec<&Rule> = g.rules.iter().filter(|r| r.alert.is_some()).collect();
        assert_eq!(alerts.len(), 3);
        assert_eq!(alerts[0].labels["severity"], "page");
        assert!(
            alerts[0].expr.contains("guardrails_slo:burn_rate:1h{"),
            "{}",
            alerts[0].expr
        );
        assert!(alerts[0].expr.contains(">= 14.4 and"), "{}", alerts[0].expr);
        assert!(
            alerts[0].annotations["description"].contains("47 hours"),
            "{:?}",
            alerts[0].annotations
        );
    }

    #[test]
    fn burn_rate_divides_by_the_budget() {
        let file = rules(&policy()).unwrap();
        let r = &file.groups[1].rules[0];
        assert_eq!(r.record.as_deref(), Some("guardrails_slo:burn_rate:28d"));
        assert!(r.expr.ends_with(") / (1 - 99.9 / 100)"), "{}", r.expr);
        assert!(crate::promql::parse_query(&r.expr).is_ok());
    }

    #[test]
    fn long_windows_evaluate_less_often_and_every_group_inside_the_lookback() {
        let every = |s: u64| long_interval(std::time::Duration::from_secs(s));
        assert_eq!(every(1), "5s");
        assert_eq!(every(30), "2m");
        assert_eq!(every(60), "2m");
        assert_eq!(every(300), "2m", "inside Prometheus' lookback");
        assert_eq!(short_interval(std::time::Duration::from_secs(600)), "2m");
    }

    #[test]
    fn invalid_policy_is_an_error() {
        let mut p = policy();
        p.spec.objectives[0].target = 100.0;
        assert!(rules(&p).unwrap_err().contains("spec.objectives[0].target"));
    }
}

//! `budget`: SloPolicies with their budgets and burn rates.

use std::collections::BTreeMap;

use guardrails::api::{Severity, SloPolicy};
use kube::ResourceExt;
use serde::Serialize;

use super::{api_name, bar, header, number, percent, table};

/// One SloPolicy in `budget`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetView {
    pub namespace: String,
    pub name: String,
    pub gate: Option<String>,
    pub gate_reason: Option<String>,
    pub budget_left: Option<f64>,
    pub firing: Vec<Severity>,
    pub objectives: Vec<ObjectiveView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveView {
    pub name: String,
    pub target: f64,
    pub sli: Option<f64>,
    pub budget_consumed: Option<f64>,
    pub budget_left: Option<f64>,
    pub burn_rates: BTreeMap<String, f64>,
    pub firing: Vec<Severity>,
    /// Share of the SLO window that has data, percent.
    pub coverage: Option<f64>,
}

pub fn budget_view(p: &SloPolicy) -> BudgetView {
    let s = p.status.clone().unwrap_or_default();
    let objectives: Vec<ObjectiveView> = p
        .spec
        .objectives
        .iter()
        .map(|o| {
            let st = s.objectives.iter().find(|x| x.name == o.name);
            ObjectiveView {
                name: o.name.clone(),
                target: o.target,
                sli: st.and_then(|x| x.sli),
                budget_consumed: st.and_then(|x| x.error_budget_consumed),
                budget_left: st.and_then(|x| x.error_budget_remaining),
                burn_rates: st.map(|x| x.burn_rates.clone()).unwrap_or_default(),
                firing: st.map(|x| x.firing_alerts.clone()).unwrap_or_default(),
                coverage: st.and_then(|x| x.coverage),
            }
        })
        .collect();
    let mut firing: Vec<Severity> = objectives.iter().flat_map(|o| o.firing.clone()).collect();
    firing.sort();
    firing.dedup();
    BudgetView {
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
        gate: s.gate.map(|g| api_name(&g)),
        gate_reason: s.gate_reason,
        budget_left: s.error_budget_remaining,
        firing,
        objectives,
    }
}

fn firing_text(f: &[Severity]) -> String {
    if f.is_empty() {
        "-".into()
    } else {
        f.iter().map(api_name).collect::<Vec<_>>().join(",")
    }
}

pub fn budget_text(views: &[BudgetView], with_namespace: bool) -> String {
    if views.is_empty() {
        return "No SloPolicies found.\n".into();
    }
    let columns = ["NAME", "GATE", "BUDGET LEFT", "", "FIRING", "DETAIL"];
    let mut rows = vec![header(&columns, with_namespace)];
    let namespaced = |namespace: &str, mut line: Vec<String>| {
        if with_namespace {
            line.insert(0, namespace.to_string());
        }
        line
    };
    for v in views {
        rows.push(namespaced(&v.namespace, policy_line(v)));
        for o in &v.objectives {
            rows.push(namespaced("", objective_line(o)));
        }
    }
    table(&rows)
}

fn policy_line(v: &BudgetView) -> Vec<String> {
    vec![
        v.name.clone(),
        v.gate.clone().unwrap_or("-".into()),
        bar(v.budget_left, 20),
        percent(v.budget_left),
        firing_text(&v.firing),
        v.gate_reason.clone().unwrap_or_default(),
    ]
}

/// An objective under its policy: its budget, SLI and burn rates by window length.
fn objective_line(o: &ObjectiveView) -> Vec<String> {
    let mut by_window: Vec<(&String, &f64)> = o.burn_rates.iter().collect();
    by_window.sort_by_key(|(w, _)| {
        w.parse::<guardrails::api::PromDuration>()
            .map(|d| d.as_duration())
            .unwrap_or_default()
    });
    let burns: Vec<String> = by_window
        .into_iter()
        .map(|(w, r)| format!("{w} {}", number(Some(*r))))
        .collect();
    let burns = if burns.is_empty() {
        "-".into()
    } else {
        burns.join(", ")
    };
    // A budget over a window that is mostly empty magnifies every error.
    let coverage = o
        .coverage
        .filter(|c| *c < 99.5)
        .map(|c| format!("; data for {c}% of the window"))
        .unwrap_or_default();
    let sli = o.sli.map_or("no data".into(), |s| format!("{s:.4}%"));
    vec![
        format!("  {} ({}%)", o.name, o.target),
        String::new(),
        bar(o.budget_left, 20),
        percent(o.budget_left),
        firing_text(&o.firing),
        format!("SLI {sli}; burn {burns}{coverage}"),
    ]
}

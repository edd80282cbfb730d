//! What the commands show, built from the resources without IO, then rendered as text
//! or serialized as JSON. One struct per view, so both formats say the same.

use std::collections::BTreeMap;

use guardrails::api::{
    CheckStatus, GuardedRollout, HistoryEntry, Phase, Severity, SloPolicy, Step, StepKind,
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;
use serde::Serialize;

/// The API spelling of an enum value (`Open`, `feature`, `page`).
pub fn api_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// Seconds from `a` to `b`.
pub fn seconds_between(a: &Time, b: &Time) -> f64 {
    (b.0.as_millisecond() - a.0.as_millisecond()) as f64 / 1000.0
}

/// "45s", "4m10s", "2h3m", "3d4h".
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// A budget bar for the percent left, e.g. `[###############.....]`.
pub fn bar(remaining: Option<f64>, width: usize) -> String {
    let filled = remaining.map_or(0, |r| {
        ((r.clamp(0.0, 100.0) / 100.0) * width as f64).round() as usize
    });
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}%"))
}

/// One line of `get`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRow {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub weight: i32,
    /// 1-based step while a canary runs.
    pub step: Option<i32>,
    pub steps: usize,
    pub gate: Option<String>,
    pub change_class: Option<String>,
    pub slo_policy: Option<String>,
    pub budget_left: Option<f64>,
    pub message: String,
}

/// Phases in which a canary is under way (the step number means something).
fn canary_running(phase: Option<Phase>) -> bool {
    matches!(
        phase,
        Some(Phase::Progressing | Phase::Paused | Phase::Promoting)
    )
}

/// The SloPolicy a rollout refers to, looked up among `slos` (same namespace).
fn slo_of<'a>(gr: &GuardedRollout, slos: &'a [SloPolicy]) -> Option<&'a SloPolicy> {
    let name = &gr.spec.slo_policy_ref.as_ref()?.name;
    slos.iter()
        .find(|s| &s.name_any() == name && s.namespace() == gr.namespace())
}

pub fn rollout_row(gr: &GuardedRollout, slos: &[SloPolicy]) -> RolloutRow {
    let s = gr.status.clone().unwrap_or_default();
    let slo = slo_of(gr, slos);
    RolloutRow {
        namespace: gr.namespace().unwrap_or_default(),
        name: gr.name_any(),
        phase: s.phase.map_or("Pending".into(), |p| api_name(&p)),
        weight: s.canary_weight.unwrap_or(0),
        step: canary_running(s.phase).then(|| s.current_step.unwrap_or(0) + 1),
        steps: gr.spec.steps.len(),
        gate: s
            .gate
            .as_ref()
            .map(|g| api_name(&g.state))
            .or_else(|| slo.and_then(|p| p.status.as_ref()?.gate.map(|g| api_name(&g)))),
        change_class: s.gate.as_ref().map(|g| api_name(&g.change_class)),
        slo_policy: gr.spec.slo_policy_ref.as_ref().map(|r| r.name.clone()),
        budget_left: slo.and_then(|p| p.status.as_ref()?.error_budget_remaining),
        message: s.message.unwrap_or_default(),
    }
}

/// Aligned columns; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |v| v.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, v) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(v);
            } else {
                line.push_str(&format!("{v:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn rollouts_text(rows: &[RolloutRow], with_namespace: bool) -> String {
    if rows.is_empty() {
        return "No GuardedRollouts found.\n".into();
    }
    let mut out = vec![];
    let mut header = vec![
        "NAME",
        "PHASE",
        "WEIGHT",
        "STEP",
        "GATE",
        "BUDGET LEFT",
        "MESSAGE",
    ];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    out.push(header.into_iter().map(String::from).collect());
    for r in rows {
        let gate = match (&r.gate, &r.change_class) {
            (Some(g), Some(c)) => format!("{g} ({c})"),
            (Some(g), None) => g.clone(),
            _ => "-".into(),
        };
        let mut line = vec![
            r.name.clone(),
            r.phase.clone(),
            format!("{}%", r.weight),
            r.step.map_or("-".into(), |s| format!("{s}/{}", r.steps)),
            gate,
            percent(r.budget_left),
            r.message.clone(),
        ];
        if with_namespace {
            line.insert(0, r.namespace.clone());
        }
        out.push(line);
    }
    table(&out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StepState {
    Done,
    Current,
    Pending,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub number: usize,
    pub description: String,
    pub state: StepState,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryView {
    #[serde(flatten)]
    pub entry: HistoryEntry,
    /// Canary start to first failing tick.
    pub detect_seconds: Option<f64>,
    /// First failing tick to canary drained.
    pub recover_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// Everything `status NAME` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    #[serde(flatten)]
    pub row: RolloutRow,
    pub target: String,
    pub paused: bool,
    pub replicas: Option<i32>,
    pub stable_revision: Option<String>,
    pub canary_revision: Option<String>,
    pub failed_revision: Option<String>,
    pub gate_override: Option<String>,
    pub gate_allowed: Option<bool>,
    pub steps_detail: Vec<StepView>,
    pub last_tick_seconds_ago: Option<f64>,
    pub consecutive_failures: i32,
    pub checks: Vec<CheckStatus>,
    pub history: Vec<HistoryView>,
    pub conditions: Vec<ConditionView>,
}

fn describe_step(step: &Step) -> String {
    match step.kind() {
        Ok(StepKind::SetWeight(w)) => format!("setWeight {w}"),
        Ok(StepKind::Pause(Some(d))) => format!("pause {d}"),
        Ok(StepKind::Pause(None)) => "pause until promoted".into(),
        Err(e) => format!("invalid: {e}"),
    }
}

pub fn history_view(entry: &HistoryEntry) -> HistoryView {
    HistoryView {
        detect_seconds: entry.detect_seconds(),
        recover_seconds: entry.recover_seconds(),
        entry: entry.clone(),
    }
}

pub fn status_view(gr: &GuardedRollout, slos: &[SloPolicy], now: Timestamp) -> StatusView {
    let s = gr.status.clone().unwrap_or_default();
    let current = s.current_step.unwrap_or(0).max(0) as usize;
    let all_done = matches!(s.phase, Some(Phase::Succeeded | Phase::Promoting));
    let running = canary_running(s.phase);
    let steps_detail = gr
        .spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| StepView {
            number: i + 1,
            description: describe_step(step),
            state: if all_done || (running && i < current) {
                StepState::Done
            } else if running && i == current {
                StepState::Current
            } else {
                StepState::Pending
            },
        })
        .collect();
    let analysis = s.analysis.clone().unwrap_or_default();
    StatusView {
        row: rollout_row(gr, slos),
        target: gr.spec.target_ref.name.clone(),
        paused: gr.spec.paused,
        replicas: s.replicas,
        stable_revision: s.stable_revision.clone(),
        canary_revision: s.canary_revision.clone(),
        failed_revision: s.failed_revision.clone(),
        gate_override: s.gate.as_ref().and_then(|g| g.r#override.clone()),
        gate_allowed: s.gate.as_ref().map(|g| g.allowed),
        steps_detail,
        last_tick_seconds_ago: analysis
            .last_tick_time
            .as_ref()
            .map(|t| seconds_between(t, &Time(now))),
        consecutive_failures: analysis.consecutive_failures,
        checks: analysis.checks,
        history: s.history.iter().map(history_view).collect(),
        conditions: s
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect(),
    }
}

fn number(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v != 0.0 && v.abs() < 0.001 => format!("{v:.2e}"),
        Some(v) => format!("{:.4}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string(),
    }
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

pub fn status_text(v: &StatusView) -> String {
    let r = &v.row;
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{k:<11}{val}\n"));
    line("Name:", format!("{}/{}", r.namespace, r.name));
    let paused = if v.paused { " (spec.paused)" } else { "" };
    line("Phase:", format!("{}{paused}  {}", r.phase, r.message));
    line(
        "Target:",
        format!(
            "Deployment {t}: primary {t}-primary ({} replicas), canary {t}-canary at {}%",
            v.replicas.map_or("-".into(), |n| n.to_string()),
            r.weight,
            t = v.target,
        ),
    );
    line(
        "Revisions:",
        format!(
            "stable {}  canary {}  failed {}",
            or_dash(&v.stable_revision),
            or_dash(&v.canary_revision),
            or_dash(&v.failed_revision)
        ),
    );
    let mut gate = match (&r.gate, &r.change_class, v.gate_allowed) {
        (Some(g), Some(c), Some(a)) => {
            format!("{g}, {c}: {}", if a { "allowed" } else { "not allowed" })
        }
        (Some(g), _, _) => g.clone(),
        _ => "-".into(),
    };
    if let Some(o) = &v.gate_override {
        gate.push_str(&format!(" (overridden: {o})"));
    }
    if let Some(p) = &r.slo_policy {
        gate.push_str(&format!(
            "; SloPolicy {p}: {} budget left",
            percent(r.budget_left)
        ));
    }
    line("Gate:", gate);
    out.push_str("Steps:\n");
    for s in &v.steps_detail {
        let mark = match s.state {
            StepState::Done => "[x]",
            StepState::Current => "[>]",
            StepState::Pending => "[ ]",
        };
        out.push_str(&format!("  {mark} {:>2}  {}\n", s.number, s.description));
    }
    if !v.checks.is_empty() {
        out.push_str(&format!(
            "Checks (last tick {} ago, {} failed in a row):\n",
            v.last_tick_seconds_ago.map_or("-".into(), human_duration),
            v.consecutive_failures
        ));
        let mut rows = vec![
            ["CHECK", "VALUE", "MIN", "MAX", "RESULT", "DETAIL"]
                .map(String::from)
                .to_vec(),
        ];
        for c in &v.checks {
            rows.push(vec![
                c.name.clone(),
                number(c.value),
                number(c.min),
                number(c.max),
                api_name(&c.result),
                c.message.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&indent(&table(&rows)));
    }
    if !v.history.is_empty() {
        out.push_str("History (newest first):\n");
        let mut rows = vec![
            [
                "REVISION", "CLASS", "OUTCOME", "STARTED", "DETECT", "RECOVER", "REASON",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for h in &v.history {
            let e = &h.entry;
            rows.push(vec![
                e.revision.clone(),
                api_name(&e.change_class),
                api_name(&e.outcome),
                e.started_at.as_ref().map_or("-".into(), |t| {
                    t.0.strftime("%Y-%m-%d %H:%M:%S").to_string()
                }),
                h.detect_seconds.map_or("-".into(), human_duration),
                h.recover_seconds.map_or("-".into(), human_duration),
                e.reason.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&indent(&table(&rows)));
    }
    if !v.conditions.is_empty() {
        out.push_str("Conditions:\n");
        let mut rows = vec![
            ["TYPE", "STATUS", "REASON", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        for c in &v.conditions {
            rows.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]);
        }
        out.push_str(&indent(&table(&rows)));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// One line of `watch`: what changed is visible by comparing consecutive lines.
pub fn watch_line(v: &StatusView) -> String {
    let r = &v.row;
    let step = r
        .step
        .map_or(String::new(), |s| format!(" step {s}/{}", r.steps));
    let checks: Vec<String> = v
        .checks
        .iter()
        .map(|c| format!("{}={} {}", c.name, number(c.value), api_name(&c.result)))
        .collect();
    let mut line = format!("{}{step} weight {}%", r.phase, r.weight);
    if !checks.is_empty() {
        line.push_str(&format!(" [{}]", checks.join(", ")));
    }
    if !r.message.is_empty() {
        line.push_str(&format!(": {}", r.message));
    }
    line
}

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
    let mut rows = vec![];
    let mut header = vec!["NAME", "GATE", "BUDGET LEFT", "", "FIRING", "DETAIL"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.into_iter().map(String::from).collect::<Vec<_>>());
    for v in views {
        let mut line = vec![
            v.name.clone(),
            v.gate.clone().unwrap_or("-".into()),
            bar(v.budget_left, 20),
            percent(v.budget_left),
            firing_text(&v.firing),
            v.gate_reason.clone().unwrap_or_default(),
        ];
        if with_namespace {
            line.insert(0, v.namespace.clone());
        }
        rows.push(line);
        for o in &v.objectives {
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
            let mut line = vec![
                format!("  {} ({}%)", o.name, o.target),
                String::new(),
                bar(o.budget_left, 20),
                percent(o.budget_left),
                firing_text(&o.firing),
                format!(
                    "SLI {}; burn {}{}",
                    o.sli.map_or("no data".into(), |s| format!("{s:.4}%")),
                    if burns.is_empty() {
                        "-".into()
                    } else {
                        burns.join(", ")
                    },
                    // A budget over a window that is mostly empty magnifies every error.
                    o.coverage
                        .filter(|c| *c < 99.5)
                        .map(|c| format!("; data for {c}% of the window"))
                        .unwrap_or_default()
                ),
            ];
            if with_namespace {
                line.insert(0, String::new());
            }
            rows.push(line);
        }
    }
    table(&rows)
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;

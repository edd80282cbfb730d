//! `status NAME` and `watch NAME`: one GuardedRollout in full.

use guardrails::api::{
    CheckStatus, GuardedRollout, HistoryEntry, Phase, SloPolicy, Step, StepKind,
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde::Serialize;

use super::{
    RolloutRow, api_name, header, human_duration, indent, number, or_dash, percent,
    rollout::canary_running, rollout::rollout_row, seconds_between, table,
};

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
    line("Gate:", gate_text(v));
    out.push_str("Steps:\n");
    for s in &v.steps_detail {
        let mark = match s.state {
            StepState::Done => "[x]",
            StepState::Current => "[>]",
            StepState::Pending => "[ ]",
        };
        out.push_str(&format!("  {mark} {:>2}  {}\n", s.number, s.description));
    }
    let checks_title = format!(
        "Checks (last tick {} ago, {} failed in a row):",
        v.last_tick_seconds_ago.map_or("-".into(), human_duration),
        v.consecutive_failures
    );
    out.push_str(&section(
        &checks_title,
        CHECK_COLUMNS,
        v.checks.iter().map(check_row),
    ));
    out.push_str(&section(
        "History (newest first):",
        HISTORY_COLUMNS,
        v.history.iter().map(history_row),
    ));
    let conditions = v.conditions.iter().map(|c| {
        let c = c.clone();
        vec![c.type_, c.status, c.reason, c.message]
    });
    out.push_str(&section("Conditions:", CONDITION_COLUMNS, conditions));
    out
}

const CHECK_COLUMNS: &[&str] = &["CHECK", "VALUE", "MIN", "MAX", "RESULT", "DETAIL"];
const HISTORY_COLUMNS: &[&str] = &[
    "REVISION", "CLASS", "OUTCOME", "STARTED", "DETECT", "RECOVER", "REASON",
];
const CONDITION_COLUMNS: &[&str] = &["TYPE", "STATUS", "REASON", "MESSAGE"];

/// A titled, indented table; nothing when there are no rows.
fn section(title: &str, columns: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut all = vec![header(columns, false)];
    all.extend(rows);
    if all.len() == 1 {
        return String::new();
    }
    format!("{title}\n{}", indent(&table(&all)))
}

fn gate_text(v: &StatusView) -> String {
    let r = &v.row;
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
    gate
}

/// A sequential check shows its statistic against the primary between its two bounds
/// (Pass at or below MIN, -ln(2/alpha); Fail at or above MAX, ln(1/alpha)); its DETAIL
/// gives the counts.
fn check_row(c: &CheckStatus) -> Vec<String> {
    let hundredths = |v: f64| Some((v * 100.0).round() / 100.0);
    let (value, min, max) = match &c.evidence {
        Some(e) => (
            hundredths(e.vs_primary),
            hundredths(-(e.bound + std::f64::consts::LN_2)),
            hundredths(e.bound),
        ),
        None => (c.value, c.min, c.max),
    };
    vec![
        c.name.clone(),
        number(value),
        number(min),
        number(max),
        api_name(&c.result),
        c.message.clone().unwrap_or_default(),
    ]
}

fn history_row(h: &HistoryView) -> Vec<String> {
    let e = &h.entry;
    vec![
        e.revision.clone(),
        api_name(&e.change_class),
        api_name(&e.outcome),
        e.started_at.as_ref().map_or("-".into(), |t| {
            t.0.strftime("%Y-%m-%d %H:%M:%S").to_string()
        }),
        h.detect_seconds.map_or("-".into(), human_duration),
        h.recover_seconds.map_or("-".into(), human_duration),
        e.reason.clone().unwrap_or_default(),
    ]
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

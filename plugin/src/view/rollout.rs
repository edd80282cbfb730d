//! `get`: one row per GuardedRollout.

use guardrails::api::{GuardedRollout, Phase, SloPolicy};
use kube::ResourceExt;
use serde::Serialize;

use super::{api_name, header, percent, table};

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
pub(super) fn canary_running(phase: Option<Phase>) -> bool {
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

pub fn rollouts_text(rows: &[RolloutRow], with_namespace: bool) -> String {
    if rows.is_empty() {
        return "No GuardedRollouts found.\n".into();
    }
    let columns = [
        "NAME",
        "PHASE",
        "WEIGHT",
        "STEP",
        "GATE",
        "BUDGET LEFT",
        "MESSAGE",
    ];
    let mut out = vec![header(&columns, with_namespace)];
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

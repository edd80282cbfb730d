//! What the commands show, built from the resources without IO, then rendered as text
//! or serialized as JSON. One struct per view, so both formats say the same.

mod budget;
mod rollout;
mod status;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

pub use budget::{budget_text, budget_view};
pub use rollout::{RolloutRow, rollout_row, rollouts_text};
pub use status::{status_text, status_view, watch_line};

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

pub(crate) fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}%"))
}

/// A table header, with a NAMESPACE column first when rows span namespaces.
pub(crate) fn header(columns: &[&str], with_namespace: bool) -> Vec<String> {
    let namespace = with_namespace.then_some("NAMESPACE");
    namespace
        .into_iter()
        .chain(columns.iter().copied())
        .map(String::from)
        .collect()
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

pub(crate) fn number(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v != 0.0 && v.abs() < 0.001 => format!("{v:.2e}"),
        Some(v) => format!("{:.4}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string(),
    }
}

pub(crate) fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

pub(crate) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests;

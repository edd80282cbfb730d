//! What the demo showed: one row per story, printed as a table and saved as JSON for
//! scripts and the demo's own test.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoryResult {
    pub service: String,
    pub story: String,
    /// What the story expects (an Outcome or phase name, e.g. "RolledBack").
    pub expected: String,
    /// What happened.
    pub outcome: String,
    /// Seconds from the change to its end (promotion, rollback or block).
    pub seconds: Option<f64>,
    /// Canary start to first failing tick (rollbacks).
    pub detect_seconds: Option<f64>,
    /// First failing tick to canary drained (rollbacks).
    pub recover_seconds: Option<f64>,
    /// Error budget left of the service's SloPolicy at the end, percent.
    pub budget_left: Option<f64>,
    pub detail: String,
}

impl StoryResult {
    pub fn ok(&self) -> bool {
        self.outcome == self.expected
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub stories: Vec<StoryResult>,
    pub kubeconfig: String,
    pub prometheus: String,
    pub ok: bool,
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.1}s"))
}

pub fn table(stories: &[StoryResult]) -> String {
    let mut rows = vec![
        [
            "SERVICE",
            "STORY",
            "OUTCOME",
            "AS EXPECTED",
            "TOOK",
            "DETECT",
            "RECOVER",
            "BUDGET LEFT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in stories {
        rows.push(vec![
            s.service.clone(),
            s.story.clone(),
            s.outcome.clone(),
            if s.ok() {
                "yes".into()
            } else {
                format!("no (wanted {})", s.expected)
            },
            secs(s.seconds),
            secs(s.detect_seconds),
            secs(s.recover_seconds),
            s.budget_left.map_or("-".into(), |b| format!("{b:.1}%")),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect();
            format!("  {}\n", cells.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_unexpected_outcomes() {
        let row = StoryResult {
            service: "asset-pipeline".into(),
            story: "bad canary".into(),
            expected: "RolledBack".into(),
            outcome: "Promoted".into(),
            seconds: Some(20.04),
            detect_seconds: None,
            recover_seconds: None,
            budget_left: Some(79.95),
            detail: String::new(),
        };
        let t = table(&[row]);
        assert!(t.contains("no (wanted RolledBack)"), "{t}");
        assert!(t.contains("20.0s") && t.contains("80.0%"), "{t}");
        assert_eq!(t.lines().count(), 2);
    }
}

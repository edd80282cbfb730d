//! Four weeks of request history for the portal's services, backfilled into Prometheus
//! before it starts, so the error budgets mean something from the first evaluation:
//! share-link and asset-pipeline have spent a little of theirs, notification had an
//! incident four days ago that spent all of its budget and more.

use std::fmt::Write as _;

/// Request history of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub service: &'static str,
    /// Availability objective of the service's SloPolicy, percent.
    pub target: f64,
    pub rps: f64,
    /// Share of requests failing outside incidents.
    pub baseline_errors: f64,
    /// (starts this many seconds before the end, lasts seconds, share failing)
    pub incident: Option<(i64, i64, f64)>,
}

pub const DAYS: i64 = 27;
const STEP: i64 = 300;

pub fn portal() -> Vec<Profile> {
    vec![
        Profile {
            service: "share-link",
            target: 99.9,
            rps: 40.0,
            baseline_errors: 0.0002,
            incident: None,
        },
        Profile {
            service: "asset-pipeline",
            target: 99.5,
            rps: 10.0,
            baseline_errors: 0.001,
            incident: None,
        },
        Profile {
            service: "notification",
            target: 99.9,
            rps: 10.0,
            baseline_errors: 0.0001,
            // 10% of notifications failed for 8 hours, four days ago.
            incident: Some((4 * 86400 + 8 * 3600, 8 * 3600, 0.1)),
        },
    ]
}

impl Profile {
    fn error_share(&self, ago: i64) -> f64 {
        match self.incident {
            Some((start, len, share)) if ago <= start && ago > start - len => share,
            _ => self.baseline_errors,
        }
    }

    /// Share of failed requests over the whole history (what the SLI will see, before
    /// live traffic adds to it).
    pub fn error_ratio(&self) -> f64 {
        let (mut total, mut errors) = (0.0, 0.0);
        for ago in (0..DAYS * 86400).step_by(STEP as usize) {
            total += self.rps * STEP as f64;
            errors += self.rps * STEP as f64 * self.error_share(ago);
        }
        errors / total
    }
}

/// OpenMetrics text for `profiles`, one sample every 5 minutes, ending at `end` (unix
/// seconds). Pods are named `<service>-history` so no canary or primary regex matches.
pub fn openmetrics(profiles: &[Profile], namespace: &str, end: i64) -> String {
    let mut out = String::from("# TYPE http_requests counter\n");
    for p in profiles {
        let labels = |code: &str| {
            format!(
                "namespace=\"{namespace}\",service=\"{s}\",pod=\"{s}-history\",code=\"{code}\"",
                s = p.service
            )
        };
        let (ok, failed) = (labels("200"), labels("500"));
        let (mut good, mut bad) = (0.0, 0.0);
        let mut t = end - DAYS * 86400;
        while t <= end {
            let _ = writeln!(out, "http_requests_total{{{ok}}} {good} {t}");
            let _ = writeln!(out, "http_requests_total{{{failed}}} {bad} {t}");
            let n = p.rps * STEP as f64;
            let share = p.error_share(end - t);
            good += n * (1.0 - share);
            bad += n * share;
            t += STEP;
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Percent of the budget a target (e.g. 99.9) leaves that `error_ratio` consumes.
pub fn consumed(error_ratio: f64, target: f64) -> f64 {
    error_ratio / (1.0 - target / 100.0) * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_value(text: &str, series: &str) -> f64 {
        text.lines()
            .rfind(|l| l.starts_with(series))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    #[test]
    fn notification_overspent_its_budget_and_the_others_did_not() {
        let p = portal();
        assert!((consumed(p[0].error_ratio(), p[0].target) - 20.0).abs() < 0.5);
        assert!((consumed(p[1].error_ratio(), p[1].target) - 20.0).abs() < 0.5);
        let n = consumed(p[2].error_ratio(), p[2].target);
        assert!(n > 100.0 && n < 200.0, "{n}");
    }

    #[test]
    fn counters_add_up_to_the_profile() {
        let p = &portal()[2];
        let text = openmetrics(std::slice::from_ref(p), "portal", 1_800_000_000);
        assert!(text.ends_with("# EOF\n"));
        let good = last_value(
            &text,
            "http_requests_total{namespace=\"portal\",service=\"notification\",pod=\"notification-history\",code=\"200\"}",
        );
        let bad = last_value(
            &text,
            "http_requests_total{namespace=\"portal\",service=\"notification\",pod=\"notification-history\",code=\"500\"}",
        );
        let ratio = bad / (good + bad);
        assert!(
            (ratio - p.error_ratio()).abs() / p.error_ratio() < 0.01,
            "{ratio}"
        );
        // The incident is older than the 3-day window of the slowest alert tier.
        let (start, len, _) = p.incident.unwrap();
        assert!(start - len > 3 * 86400);
    }
}

//! A `sequential` check on one reading: the four totals Prometheus gave, added to the
//! evidence kept in status, judged (module `evidence`: the rule), and said for people.

use super::{
    Sample,
    evidence::{Evidence, Totals},
    sequential::{Counts, Decision, Statistic},
};
use crate::api::{CheckResult, CheckStatus, EvidenceStatus, RequestCounts, SequentialCheck};

/// Totals since the canary started, as Prometheus gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct Readings {
    pub canary_requests: Sample,
    pub canary_errors: Sample,
    pub primary_requests: Sample,
    pub primary_errors: Sample,
}

/// What a sequential check needs on one reading.
#[derive(Debug, Clone, PartialEq)]
pub struct SequentialInput {
    /// None while pods of an earlier revision still run in the canary: nothing to count.
    pub readings: Option<Readings>,
    /// The objective's allowed error ratio (1 - target / 100).
    pub allowed_ratio: f64,
    /// The evidence as of the last reading, from status.
    pub previous: Option<EvidenceStatus>,
}

/// Reads, judges and describes. A reading that failed keeps the evidence as it was.
pub fn evaluate(status: &mut CheckStatus, check: &SequentialCheck, input: &SequentialInput) {
    status.evidence = input.previous.clone();
    let Some(readings) = &input.readings else {
        status.result = CheckResult::Inconclusive;
        status.message = Some("pods of an earlier revision still run in the canary".into());
        return;
    };
    let totals = match totals(readings) {
        Ok(totals) => totals,
        Err((result, why)) => {
            status.result = result;
            status.message = Some(why);
            return;
        }
    };
    let s = check.settings();
    let mut evidence = input.previous.as_ref().map(restore).unwrap_or_default();
    evidence.read(&s, totals, input.allowed_ratio);
    let mut decision = evidence.judge(&s);
    let passed = input
        .previous
        .as_ref()
        .is_some_and(|p| p.decision == CheckResult::Pass);
    if passed && decision == Decision::Inconclusive {
        decision = Decision::Pass;
    }
    let result = match decision {
        Decision::Fail => CheckResult::Fail,
        Decision::Pass => CheckResult::Pass,
        Decision::Inconclusive => CheckResult::Inconclusive,
    };
    let bound = (1.0 / s.alpha).ln();
    status.result = result;
    status.message = Some(describe(check, &evidence, input, result, bound));
    status.evidence = Some(EvidenceStatus {
        canary: to_status(evidence.seen.canary),
        primary: to_status(evidence.seen.primary),
        vs_primary: round(evidence.vs_primary.log_ratio),
        vs_objective: round(evidence.vs_objective.log_ratio),
        bound: round(bound),
        decision: result,
    });
}

/// The totals, or why there are none: an error or invalid answer on any side; no
/// requests series for the canary (no evidence yet: Inconclusive, as too little traffic
/// is). A missing error series is 0 errors
/// (it exists only after the first error); a missing primary is no primary traffic.
fn totals(r: &Readings) -> Result<Totals, (CheckResult, String)> {
    let all = [
        &r.canary_requests,
        &r.canary_errors,
        &r.primary_requests,
        &r.primary_errors,
    ];
    let worst = all
        .iter()
        .filter_map(|s| super::unusable(s))
        .min_by_key(|(r, _)| *r != CheckResult::Invalid);
    if let Some((result, why)) = worst {
        return Err((result, why.to_string()));
    }
    let value = |s: &Sample| match s {
        Sample::Value(v) if v.is_finite() => v.max(0.0),
        _ => 0.0,
    };
    if !matches!(r.canary_requests, Sample::Value(_)) {
        return Err((
            CheckResult::Inconclusive,
            "no requests from the canary yet".into(),
        ));
    }
    let counts = |requests: &Sample, errors: &Sample| Counts {
        requests: value(requests),
        errors: value(errors),
    };
    Ok(Totals {
        canary: counts(&r.canary_requests, &r.canary_errors),
        primary: counts(&r.primary_requests, &r.primary_errors),
    })
}

/// The evidence kept in status, as the statistic works with it.
fn restore(e: &EvidenceStatus) -> Evidence {
    let counts = |c: RequestCounts| Counts {
        requests: c.requests as f64,
        errors: c.errors as f64,
    };
    let (canary, primary) = (counts(e.canary), counts(e.primary));
    Evidence {
        seen: Totals { canary, primary },
        vs_primary: Statistic {
            log_ratio: e.vs_primary,
            canary,
            primary,
        },
        vs_objective: Statistic {
            log_ratio: e.vs_objective,
            canary,
            primary: Counts::default(),
        },
    }
}

fn to_status(c: Counts) -> RequestCounts {
    RequestCounts {
        requests: c.requests as i64,
        errors: c.errors as i64,
    }
}

/// Six decimals: enough for the statistic, and a status that does not churn on noise.
fn round(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// e.g. "canary 37 errors in 410 requests vs primary 4 in 3,690: ratio >= 2 with alpha
/// 0.01"; for a check still open, the statistic against its bounds.
fn describe(
    check: &SequentialCheck,
    e: &Evidence,
    input: &SequentialInput,
    result: CheckResult,
    bound: f64,
) -> String {
    let (c, p) = (e.seen.canary, e.seen.primary);
    let canary = format!(
        "canary {} errors in {} requests",
        thousands(c.errors),
        thousands(c.requests)
    );
    let against_primary = e.primary_served();
    let compared = if against_primary {
        format!(
            "{canary} vs primary {} in {}",
            thousands(p.errors),
            thousands(p.requests)
        )
    } else {
        format!(
            "{canary} vs an allowed ratio of {}%",
            crate::slo::math::round_sig(input.allowed_ratio * 100.0, 4)
        )
    };
    let (what, statistic) = if against_primary {
        ("ratio", e.vs_primary.log_ratio)
    } else {
        ("ratio to the allowed", e.vs_objective.log_ratio)
    };
    match result {
        CheckResult::Fail => format!(
            "{compared}: {what} >= {} with alpha {}",
            check.detect, check.alpha
        ),
        CheckResult::Pass => format!(
            "{compared}: no worse than tolerated ({}) with alpha {}",
            check.tolerate, check.alpha
        ),
        _ => format!(
            "{compared}: statistic {statistic:.2} (Fail at {bound:.2}, Pass at {:.2})",
            -(bound + std::f64::consts::LN_2)
        ),
    }
}

/// 3690 -> "3,690".
fn thousands(v: f64) -> String {
    let digits = format!("{}", v.round() as i64);
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) && ch.is_ascii_digit() {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Check;

    fn check() -> Check {
        Check {
            name: "errors-vs-primary".into(),
            sequential: Some(SequentialCheck::of("availability")),
            ..Default::default()
        }
    }

    fn reading(canary: (f64, Option<f64>), primary: (f64, f64)) -> Readings {
        Readings {
            canary_requests: Sample::Value(canary.0),
            canary_errors: canary.1.map_or(Sample::NoData, Sample::Value),
            primary_requests: Sample::Value(primary.0),
            primary_errors: Sample::Value(primary.1),
        }
    }

    /// One reading on top of `previous` (as status holds it).
    fn read(previous: Option<&CheckStatus>, readings: Readings) -> CheckStatus {
        let input = crate::analysis::Input::Sequential(Box::new(SequentialInput {
            readings: Some(readings),
            allowed_ratio: 0.001,
            previous: previous.and_then(|p| p.evidence.clone()),
        }));
        crate::analysis::evaluate(&check(), &input)
    }

    #[test]
    fn a_failing_canary_is_described_with_its_counts_and_the_settings() {
        let s = read(None, reading((410.0, Some(37.0)), (3690.0, 4.0)));
        assert_eq!(s.result, CheckResult::Fail);
        assert_eq!(
            crate::analysis::describe_failure(&s),
            "errors-vs-primary: canary 37 errors in 410 requests vs primary 4 in 3,690: \
             ratio >= 2 with alpha 0.01"
        );
        let e = s.evidence.unwrap();
        assert_eq!(e.decision, CheckResult::Fail);
        assert!(e.vs_primary >= e.bound, "{e:?}");
    }

    #[test]
    fn evidence_kept_in_status_adds_up_as_if_read_in_one_go() {
        let mut status = None;
        for t in 1..=30 {
            let n = f64::from(t) * 10.0;
            let next = read(
                status.as_ref(),
                reading((n, Some(n / 100.0)), (9.0 * n, 0.0)),
            );
            status = Some(next);
        }
        let kept = status.unwrap().evidence.unwrap();
        let mut direct = Evidence::default();
        for t in 1..=30 {
            let n = f64::from(t) * 10.0;
            let totals = Totals {
                canary: Counts {
                    requests: n,
                    errors: n / 100.0,
                },
                primary: Counts {
                    requests: 9.0 * n,
                    errors: 0.0,
                },
            };
            direct.read(&check().sequential.unwrap().settings(), totals, 0.001);
        }
        assert_eq!(
            kept.canary,
            RequestCounts {
                requests: 300,
                errors: 3
            }
        );
        assert!((kept.vs_primary - direct.vs_primary.log_ratio).abs() < 1e-5);
        assert!((kept.vs_objective - direct.vs_objective.log_ratio).abs() < 1e-5);
    }

    #[test]
    fn no_error_series_is_no_errors_and_no_request_series_is_no_evidence() {
        let s = read(None, reading((100.0, None), (900.0, 0.0)));
        assert_eq!(s.result, CheckResult::Inconclusive);
        assert_eq!(s.evidence.as_ref().unwrap().canary.errors, 0);
        let mut none = reading((0.0, None), (900.0, 0.0));
        none.canary_requests = Sample::NoData;
        let after = read(Some(&s), none);
        assert_eq!(
            after.result,
            CheckResult::Inconclusive,
            "too little traffic, not a fault"
        );
        assert_eq!(after.evidence, s.evidence, "the evidence is kept");
    }

    #[test]
    fn a_failed_reading_keeps_the_evidence_and_says_why() {
        let s = read(None, reading((100.0, Some(0.0)), (900.0, 0.0)));
        let mut broken = reading((200.0, Some(0.0)), (1800.0, 0.0));
        broken.primary_errors = Sample::Error("Prometheus down".into());
        let after = read(Some(&s), broken);
        assert_eq!(after.result, CheckResult::Error);
        assert_eq!(after.message.as_deref(), Some("Prometheus down"));
        assert_eq!(after.evidence, s.evidence);
    }

    #[test]
    fn a_pass_holds_until_the_evidence_turns_to_fail() {
        // Spotless on both sides: passes on the objective's side (5,293 clean requests).
        let passed = read(None, reading((6000.0, Some(0.0)), (54000.0, 0.0)));
        assert_eq!(passed.result, CheckResult::Pass, "{:?}", passed.message);
        // One primary error ends "spotless": the judgement alone would be Inconclusive.
        let held = read(Some(&passed), reading((6100.0, Some(0.0)), (54900.0, 1.0)));
        assert_eq!(held.result, CheckResult::Pass);
        // The canary breaks: the comparison with the primary fails it.
        let failed = read(Some(&held), reading((6200.0, Some(100.0)), (55800.0, 1.0)));
        assert_eq!(failed.result, CheckResult::Fail);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(3690.0), "3,690");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(410.0), "410");
        assert_eq!(thousands(0.0), "0");
    }
}

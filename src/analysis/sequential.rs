//! A sequential likelihood-ratio test on error counts (Wald's SPRT), read as often as one
//! likes without inflating false alarms: by Ville's inequality, a canary whose error rate
//! is no worse than `tolerate` times the baseline is ever judged Fail with probability at
//! most `alpha`, however many times the statistic is read.
//!
//! Against the primary on the same traffic, given the errors k of one reading, the canary's
//! share of them is binomial with parameter r*n_c / (r*n_c + n_p) (n: requests per side, r:
//! canary/primary error-rate ratio), so the load's ups and downs and the primary's own error
//! rate cancel out. Without primary traffic (a new service's first canary) the baseline is
//! the SLO's allowed error ratio, and the canary's errors are binomial in its requests.
//!
//! Assumptions: requests fail independently. Retries and bursts make errors arrive in
//! clumps, which looks like evidence; a `tolerate` above 1 absorbs them.

/// Requests and errors of one side, added since the previous reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub requests: f64,
    pub errors: f64,
}

/// The test's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Worst-case chance of a Fail for a canary no worse than `tolerate`, and of a Pass for
    /// one as bad as `detect`.
    pub alpha: f64,
    /// Error-rate ratio (canary over baseline) that counts as no worse.
    pub tolerate: f64,
    /// Error-rate ratio that must be caught; above `tolerate`.
    pub detect: f64,
}

/// What the evidence says so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The canary is worse than tolerated: roll back.
    Fail,
    /// The canary is no worse than tolerated, against one as bad as `detect`.
    Pass,
    /// Too little evidence either way (never a pass).
    Inconclusive,
}

/// The running statistic: the log of the likelihood ratio of `detect` over `tolerate`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Statistic {
    pub log_ratio: f64,
    pub canary: Counts,
    pub primary: Counts,
}

impl Statistic {
    /// Adds one reading compared with the primary on the same traffic.
    pub fn against_primary(&mut self, s: &Settings, canary: Counts, primary: Counts) {
        self.add_counts(canary, primary);
        let (nc, np) = (canary.requests, primary.requests);
        if nc <= 0.0 || np <= 0.0 {
            return; // one side without traffic: its errors say nothing about the ratio
        }
        let share = |r: f64| r * nc / (r * nc + np);
        let (p0, p1) = (share(s.tolerate), share(s.detect));
        self.log_ratio +=
            canary.errors * (p1 / p0).ln() + primary.errors * ((1.0 - p1) / (1.0 - p0)).ln();
    }

    /// Adds one reading compared with the SLO's allowed error ratio (no primary traffic).
    pub fn against_objective(&mut self, s: &Settings, canary: Counts, allowed_ratio: f64) {
        self.add_counts(canary, Counts::default());
        let (p0, p1) = (
            (s.tolerate * allowed_ratio).clamp(1e-12, 1.0 - 1e-12),
            (s.detect * allowed_ratio).clamp(1e-12, 1.0 - 1e-12),
        );
        let ok = (canary.requests - canary.errors).max(0.0);
        self.log_ratio += canary.errors * (p1 / p0).ln() + ok * ((1.0 - p1) / (1.0 - p0)).ln();
    }

    fn add_counts(&mut self, canary: Counts, primary: Counts) {
        self.canary.requests += canary.requests;
        self.canary.errors += canary.errors;
        self.primary.requests += primary.requests;
        self.primary.errors += primary.errors;
    }

    pub fn decision(&self, s: &Settings) -> Decision {
        let bound = (1.0 / s.alpha).ln();
        if self.log_ratio >= bound {
            Decision::Fail
        } else if self.log_ratio <= -bound {
            Decision::Pass
        } else {
            Decision::Inconclusive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::draws::{Rng, S, counts};

    /// One canary analysed every second for `seconds`: when it was first judged Fail, and
    /// its decision at the end.
    fn run(
        rng: &mut Rng,
        rps: (f64, f64),
        error_rate: (f64, f64),
        seconds: u32,
    ) -> (Option<u32>, Decision) {
        let mut stat = Statistic::default();
        for t in 1..=seconds {
            let (nc, np) = (rng.poisson(rps.0), rng.poisson(rps.1));
            let c = counts(nc, rng.errors(nc, error_rate.0));
            let p = counts(np, rng.errors(np, error_rate.1));
            stat.against_primary(&S, c, p);
            if stat.decision(&S) == Decision::Fail {
                return (Some(t), Decision::Fail);
            }
        }
        (None, stat.decision(&S))
    }

    struct Row {
        fails: usize,
        passes: usize,
        runs: usize,
        median_fail_s: Option<u32>,
        max_fail_s: Option<u32>,
    }

    /// `runs` canaries at 10% of 200 req/s (or `rps`), primary at 0.1% errors.
    fn simulate(seed: u64, runs: usize, rps: (f64, f64), canary_errors: f64) -> Row {
        let mut rng = Rng::new(seed);
        let mut times = Vec::new();
        let mut passes = 0;
        for _ in 0..runs {
            match run(&mut rng, rps, (canary_errors, 0.001), 600) {
                (Some(t), _) => times.push(t),
                (None, Decision::Pass) => passes += 1,
                _ => {}
            }
        }
        times.sort();
        Row {
            fails: times.len(),
            passes,
            runs,
            median_fail_s: times.get(times.len() / 2).copied(),
            max_fail_s: times.last().copied(),
        }
    }

    /// 10-minute analyses read every second (alpha 0.01, tolerate 1, detect 2): the
    /// false-rollback rate of an equal canary stays under alpha; broken canaries are
    /// caught in seconds; a trickle of traffic stays Inconclusive.
    #[test]
    fn simulated_canaries_are_judged_as_the_guarantee_says() {
        let busy = (20.0, 180.0);
        let trickle = (3.0 / 60.0, 27.0 / 60.0);
        let rows = [
            ("equal (0.1%)", simulate(1, 2000, busy, 0.001)),
            ("100% errors", simulate(2, 500, busy, 1.0)),
            ("10x (1%)", simulate(3, 500, busy, 0.01)),
            ("2x (0.2%)", simulate(4, 500, busy, 0.002)),
            ("equal, 3 req/min", simulate(5, 500, trickle, 0.001)),
        ];
        println!("canary | runs | Fail | Pass | Inconclusive | median s to Fail | max s");
        for (name, r) in &rows {
            println!(
                "{name} | {} | {} | {} | {} | {:?} | {:?}",
                r.runs,
                r.fails,
                r.passes,
                r.runs - r.fails - r.passes,
                r.median_fail_s,
                r.max_fail_s
            );
        }
        let [equal, broken, tenfold, twofold, trickle] = rows.map(|r| r.1);
        assert!(
            (equal.fails as f64) / (equal.runs as f64) <= S.alpha,
            "false rollbacks {}/{}",
            equal.fails,
            equal.runs
        );
        assert_eq!(broken.fails, broken.runs, "every broken canary caught");
        assert!(broken.max_fail_s <= Some(2), "{:?}", broken.max_fail_s);
        assert_eq!(tenfold.fails, tenfold.runs, "every 10x canary caught");
        assert!(twofold.fails > twofold.runs / 10, "2x caught at times");
        assert_eq!(trickle.fails, 0, "no rollback on a trickle");
        assert!(trickle.runs - trickle.fails - trickle.passes >= trickle.runs * 99 / 100);
    }

    #[test]
    fn a_dozen_requests_prove_nothing() {
        for errors in [0.0, 1.0] {
            let mut stat = Statistic::default();
            stat.against_primary(&S, counts(12.0, errors), counts(108.0, 0.0));
            assert_eq!(stat.decision(&S), Decision::Inconclusive, "{errors} errors");
        }
    }

    #[test]
    fn a_canary_failing_every_request_fails_after_about_eight_errors() {
        let mut stat = Statistic::default();
        let mut errors = 0.0;
        while stat.decision(&S) != Decision::Fail {
            stat.against_primary(&S, counts(1.0, 1.0), counts(9.0, 0.0));
            errors += 1.0;
        }
        assert_eq!(errors, 8.0, "ln(100) / ln(20 / 11) = 7.7");
        assert_eq!(stat.canary, counts(8.0, 8.0));
    }

    #[test]
    fn without_traffic_on_one_side_nothing_is_learnt() {
        let mut stat = Statistic::default();
        stat.against_primary(&S, counts(0.0, 0.0), counts(100.0, 5.0));
        stat.against_primary(&S, counts(10.0, 10.0), counts(0.0, 0.0));
        assert_eq!(stat.log_ratio, 0.0);
        assert_eq!(stat.canary.errors, 10.0, "the counts are kept");
    }

    #[test]
    fn against_the_objective_a_clean_canary_passes_and_a_bad_one_fails() {
        let allowed = 0.001; // a 99.9% objective
        let mut clean = Statistic::default();
        let mut bad = Statistic::default();
        for _ in 0..600 {
            clean.against_objective(&S, counts(10.0, 0.0), allowed);
            bad.against_objective(&S, counts(10.0, 1.0), allowed);
        }
        assert_eq!(clean.decision(&S), Decision::Pass);
        assert_eq!(bad.decision(&S), Decision::Fail);
    }
}

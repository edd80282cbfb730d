//! The evidence a `sequential` check gathers over a canary's life: the totals Prometheus
//! reports (increase since the canary started, for canary and primary) read as often as
//! wanted, each reading adding only what is new, and the verdict of both statistics.
//!
//! Rule: while a primary serves, only the comparison with the primary can fail a canary
//! (so a canary no worse than a primary that is itself burning its budget, a fix say, is
//! never rolled back for it), at `alpha`, and it passes on that comparison at `alpha / 2`
//! (a canary as bad as `detect` times the primary passes with probability at most
//! `alpha / 2`). Zero errors on both sides say nothing about the ratio: as long as neither
//! side has seen an error, the comparison with the SLO's allowed error ratio may also pass
//! it at `alpha / 2` (a canary as bad as `detect` times the allowed ratio passes with
//! probability at most `alpha / 2`; one much better than that but worse than a spotless
//! primary may pass: both are well within the objective). With no primary serving (a new
//! service's first canary, or a primary that has not served a request since the canary
//! started), the comparison with the objective decides both ways at `alpha`.

use super::sequential::{Counts, Decision, Settings, Statistic};

/// Requests and errors of canary and primary since the canary started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub canary: Counts,
    pub primary: Counts,
}

/// What the readings so far add up to; kept between readings (and restarts).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evidence {
    /// The totals as of the last reading (never going down).
    pub seen: Totals,
    pub vs_primary: Statistic,
    pub vs_objective: Statistic,
}

/// Rounded, and what is new since `seen`, with the totals now seen (a total that went
/// down, Prometheus' extrapolation wobbling, adds nothing and is not counted twice later;
/// errors beyond the new requests wait for requests to count with).
fn new_since(seen: Counts, now: Counts) -> (Counts, Counts) {
    let requests = (now.requests.round() - seen.requests).max(0.0);
    let errors = (now.errors.round() - seen.errors).clamp(0.0, requests);
    let added = Counts { requests, errors };
    let seen = Counts {
        requests: seen.requests + requests,
        errors: seen.errors + errors,
    };
    (added, seen)
}

impl Evidence {
    /// Adds one reading of the totals; `allowed_ratio` is the SLO's error budget ratio
    /// (1 - target / 100).
    pub fn read(&mut self, s: &Settings, totals: Totals, allowed_ratio: f64) {
        let (canary, seen_canary) = new_since(self.seen.canary, totals.canary);
        let (primary, seen_primary) = new_since(self.seen.primary, totals.primary);
        self.seen = Totals {
            canary: seen_canary,
            primary: seen_primary,
        };
        self.vs_primary.against_primary(s, canary, primary);
        self.vs_objective
            .against_objective(s, canary, allowed_ratio);
    }

    /// Whether the primary has served requests since the canary started: from then on
    /// its traffic is the baseline (its readiness flapping later changes nothing).
    pub fn primary_served(&self) -> bool {
        self.seen.primary.requests > 0.0
    }

    /// The verdict so far (module docs: the rule).
    pub fn judge(&self, s: &Settings) -> Decision {
        if !self.primary_served() {
            return self.vs_objective.decision(s);
        }
        if self.vs_primary.decision(s) == Decision::Fail {
            return Decision::Fail;
        }
        let half = Settings {
            alpha: s.alpha / 2.0,
            ..*s
        };
        let spotless = self.seen.canary.errors == 0.0 && self.seen.primary.errors == 0.0;
        let shown = |stat: &Statistic| stat.decision(&half) == Decision::Pass;
        if shown(&self.vs_primary) || (spotless && shown(&self.vs_objective)) {
            Decision::Pass
        } else {
            Decision::Inconclusive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::draws::{S, counts};

    /// Readings every second of a canary at 20 req/s and a primary at 180 req/s with these
    /// error rates (expected counts, no noise); the second of the first decision.
    fn first_decision(canary_errors: f64, primary_errors: f64, allowed: f64) -> (u32, Decision) {
        let mut e = Evidence::default();
        for t in 1..=3600u32 {
            let t_f = f64::from(t);
            let totals = Totals {
                canary: counts(20.0 * t_f, 20.0 * t_f * canary_errors),
                primary: counts(180.0 * t_f, 180.0 * t_f * primary_errors),
            };
            e.read(&S, totals, allowed);
            let d = e.judge(&S);
            if d != Decision::Inconclusive {
                return (t, d);
            }
        }
        (3600, Decision::Inconclusive)
    }

    /// Shares of (Fail, Pass) over `runs` 10-minute analyses read every second: canary at
    /// 20 req/s, primary at 180 req/s and 0.1% errors, a 99.9% objective.
    fn simulate(seed: u64, runs: u32, canary_errors: f64) -> (f64, f64) {
        let mut rng = crate::analysis::draws::Rng::new(seed);
        let (mut fails, mut passes) = (0, 0);
        for _ in 0..runs {
            let (mut e, mut totals) = (Evidence::default(), Totals::default());
            let mut decided = Decision::Inconclusive;
            for _ in 0..600 {
                let (nc, np) = (rng.poisson(20.0), rng.poisson(180.0));
                totals.canary.requests += nc;
                totals.canary.errors += rng.errors(nc, canary_errors);
                totals.primary.requests += np;
                totals.primary.errors += rng.errors(np, 0.001);
                e.read(&S, totals, 0.001);
                decided = e.judge(&S);
                if decided != Decision::Inconclusive {
                    break;
                }
            }
            match decided {
                Decision::Fail => fails += 1,
                Decision::Pass => passes += 1,
                Decision::Inconclusive => {}
            }
        }
        let share = |n: u32| f64::from(n) / f64::from(runs);
        (share(fails), share(passes))
    }

    /// The guarantees of the rule, with both statistics read every second.
    #[test]
    fn simulated_canaries_keep_both_error_rates_under_alpha() {
        let (false_fails, _) = simulate(11, 1000, 0.001);
        assert!(
            false_fails <= S.alpha,
            "equal canary failed in {false_fails}"
        );
        let (_, missed) = simulate(12, 500, 0.002);
        assert!(
            missed <= S.alpha,
            "a canary as bad as `detect` passed in {missed}"
        );
        let (caught, _) = simulate(13, 200, 0.01);
        println!(
            "equal canary Fail {false_fails}; 2x canary Pass {missed}; 10x canary Fail {caught}"
        );
        assert_eq!(caught, 1.0, "every 10x canary caught");
    }

    #[test]
    fn without_any_errors_a_clean_canary_passes_on_the_objectives_side() {
        let (t, d) = first_decision(0.0, 0.0, 0.01);
        assert_eq!(d, Decision::Pass);
        // ln(200) / -ln(0.98 / 0.99) = 522 clean requests, 20 per second.
        assert!((26..=27).contains(&t), "{t} s");
    }

    #[test]
    fn a_canary_failing_everything_fails_within_a_second_or_two() {
        let (t, d) = first_decision(1.0, 0.001, 0.001);
        assert_eq!((d, t <= 2), (Decision::Fail, true), "{t} s");
    }

    #[test]
    fn a_canary_as_bad_as_a_burning_primary_is_not_failed_for_the_budget() {
        // Both at 5% errors under a 99.9% objective: the objective alone would fail it.
        let (_, d) = first_decision(0.05, 0.05, 0.001);
        assert_ne!(d, Decision::Fail);
    }

    #[test]
    fn a_fix_is_not_failed_for_the_budget_when_the_primary_stops_serving() {
        // The primary burns at 5% errors, the fix runs at 0.3% under a 99.9% objective:
        // far above the allowed ratio, far better than the primary.
        let mut e = Evidence::default();
        let mut totals = Totals::default();
        for t in 1..=600 {
            totals.canary = counts(20.0 * f64::from(t), 0.06 * f64::from(t));
            if t <= 300 {
                totals.primary = counts(180.0 * f64::from(t), 9.0 * f64::from(t));
            } // then the primary crash-loops: no more requests
            e.read(&S, totals, 0.001);
            assert_ne!(e.judge(&S), Decision::Fail, "second {t}");
        }
        assert!(
            e.vs_objective.decision(&S) == Decision::Fail,
            "the objective alone would"
        );
    }

    #[test]
    fn a_first_canary_without_primary_traffic_is_judged_against_the_objective() {
        let mut bad = Evidence::default();
        let mut clean = Evidence::default();
        for t in 1..=60 {
            let n = 20.0 * f64::from(t);
            bad.read(
                &S,
                Totals {
                    canary: counts(n, n / 2.0),
                    ..Default::default()
                },
                0.001,
            );
            clean.read(
                &S,
                Totals {
                    canary: counts(n, 0.0),
                    ..Default::default()
                },
                0.01,
            );
        }
        assert_eq!(
            (bad.judge(&S), clean.judge(&S)),
            (Decision::Fail, Decision::Pass)
        );
    }

    #[test]
    fn a_canary_worse_than_a_spotless_primary_is_not_passed_on_the_objectives_side() {
        // Primary at 0.01% errors, canary 5x worse, a 99.9% objective: both within it.
        let (_, d) = first_decision(0.0005, 0.0001, 0.001);
        assert_eq!(d, Decision::Fail, "the comparison with the primary decides");
    }

    #[test]
    fn errors_read_before_their_requests_are_counted_later_not_dropped() {
        let mut e = Evidence::default();
        let canary = |requests, errors| Totals {
            canary: counts(requests, errors),
            primary: counts(1000.0, 0.0),
        };
        e.read(&S, canary(10.0, 0.0), 0.01);
        e.read(&S, canary(10.0, 5.0), 0.01);
        e.read(&S, canary(20.0, 5.0), 0.01);
        assert_eq!(e.seen.canary, counts(20.0, 5.0));
        assert_eq!(e.vs_objective.canary, counts(20.0, 5.0));
    }

    #[test]
    fn totals_that_wobble_down_are_not_counted_twice() {
        let mut e = Evidence::default();
        e.read(
            &S,
            Totals {
                canary: counts(100.4, 3.0),
                primary: counts(900.0, 1.0),
            },
            0.01,
        );
        e.read(
            &S,
            Totals {
                canary: counts(98.0, 2.0),
                primary: counts(899.0, 1.0),
            },
            0.01,
        );
        e.read(
            &S,
            Totals {
                canary: counts(101.0, 3.0),
                primary: counts(900.0, 1.0),
            },
            0.01,
        );
        assert_eq!(e.seen.canary, counts(101.0, 3.0));
        assert_eq!(
            e.vs_primary.canary,
            counts(101.0, 3.0),
            "each request counted once"
        );
        assert_eq!(e.vs_primary.primary, counts(900.0, 1.0));
    }
}

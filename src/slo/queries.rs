//! The PromQL the operator runs for an objective: the error ratio over a window.
//!
//! Every query returns one number or nothing. Nothing (no series) or NaN (0/0) is
//! "no data": no traffic in the window.

use promql_parser::parser::VectorSelector;

use crate::{
    api::{Indicator, Objective},
    promql,
};

/// An objective's selectors, parsed once and ready for queries.
#[derive(Debug, Clone)]
pub enum Indicators {
    /// Counters of failed and of all events.
    Ratio {
        errors: VectorSelector,
        total: VectorSelector,
    },
    /// Histogram buckets at the threshold (good) and at +Inf (all).
    Latency {
        good: VectorSelector,
        total: VectorSelector,
    },
}

/// Why an objective's indicator cannot be queried: the field (relative to the
/// objective) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndicatorError {
    #[error("indicator.{field}: {error}")]
    Field {
        field: &'static str,
        error: promql::PromqlError,
    },
    #[error("indicator: exactly one of ratio or latency must be set")]
    NotExactlyOne,
    /// Of objective `index` of a SloPolicy.
    #[error("spec.objectives[{index}].{error}")]
    Objective {
        index: usize,
        error: Box<IndicatorError>,
    },
}

fn at(field: &'static str) -> impl Fn(promql::PromqlError) -> IndicatorError {
    move |error| IndicatorError::Field { field, error }
}

impl Indicators {
    /// Parses the objective's selectors. Errors name the field (relative to the
    /// objective) and are the same ones `validate()` reports.
    pub fn parse(indicator: &Indicator) -> Result<Self, IndicatorError> {
        match (&indicator.ratio, &indicator.latency) {
            (Some(r), None) => Ok(Self::Ratio {
                errors: promql::parse_selector(&r.errors).map_err(at("ratio.errors"))?,
                total: promql::parse_selector(&r.total).map_err(at("ratio.total"))?,
            }),
            (None, Some(l)) => {
                let h = promql::parse_selector(&l.histogram).map_err(at("latency.histogram"))?;
                // Numerically: `le="0.30"` or `3e-1` is the same bucket as 0.3.
                let le = promql::number_regex(&l.threshold).map_err(at("latency.threshold"))?;
                Ok(Self::Latency {
                    good: promql::with_label_regex(&h, "le", &le)
                        .map_err(at("latency.threshold"))?,
                    total: promql::with_label(&h, "le", "+Inf"),
                })
            }
            _ => Err(IndicatorError::NotExactlyOne),
        }
    }

    /// The same indicators restricted to series whose `label` matches `regex` (e.g. the
    /// canary's pods).
    pub fn scoped(&self, label: &str, regex: &str) -> Result<Self, promql::PromqlError> {
        let s = |sel: &VectorSelector| promql::with_label_regex(sel, label, regex);
        Ok(match self {
            Self::Ratio { errors, total } => Self::Ratio {
                errors: s(errors)?,
                total: s(total)?,
            },
            Self::Latency { good, total } => Self::Latency {
                good: s(good)?,
                total: s(total)?,
            },
        })
    }

    /// Share (0-1) of `window` for which the indicator has data: from its oldest sample
    /// in the window (found to within 1/500 of the window, whatever the scrape interval:
    /// each subquery step looks back one step) to now. A budget
    /// computed from minutes of a 28-day window magnifies every error; this says how
    /// much of the window the data covers.
    pub fn coverage_query(&self, window: &crate::api::PromDuration) -> String {
        let (Self::Ratio { total, .. } | Self::Latency { total, .. }) = self;
        let seconds = window.as_duration().as_secs().max(1);
        let step = (seconds / 500).max(15);
        format!(
            "clamp_max((time() - min(min_over_time(timestamp(last_over_time({total}[{step}s]))[{window}:{step}s]))) / {seconds}, 1)"
        )
    }

    /// Error ratio (0-1) over `window`, as one query.
    ///
    /// Ratio: a missing error series counts as 0 errors; a missing or flat total is no
    /// data. Latency: bad = all - good; a missing threshold bucket is no data, not 100%
    /// bad, so a mistyped threshold cannot freeze a service.
    pub fn error_ratio_query(&self, window: &str) -> String {
        let inc = |sel: &VectorSelector| format!("sum(increase({sel}[{window}]))");
        match self {
            Self::Ratio { errors, total } => {
                format!("({} or vector(0)) / {}", inc(errors), inc(total))
            }
            Self::Latency { good, total } => {
                let all = inc(total);
                format!("({all} - {}) / {all}", inc(good))
            }
        }
    }
}

impl Indicators {
    /// Events and bad events over `window`, as two queries (for counting, not ratios).
    /// A missing error series, or threshold bucket, gives nothing: the caller decides
    /// what that means.
    pub fn count_queries(&self, window: &str) -> (String, String) {
        let inc = |sel: &VectorSelector| format!("sum(increase({sel}[{window}]))");
        match self {
            Self::Ratio { errors, total } => (inc(total), inc(errors)),
            Self::Latency { good, total } => {
                (inc(total), format!("{} - {}", inc(total), inc(good)))
            }
        }
    }
}

/// Why a latency threshold matches none of the histogram's buckets, naming the nearest
/// below and above; None when it is one of them (compared as numbers) or there are no
/// buckets to compare with.
pub fn not_a_bucket(threshold: &str, buckets: &[String]) -> Option<String> {
    let t: f64 = threshold.trim().parse().ok()?;
    let mut les: Vec<f64> = buckets.iter().filter_map(|b| b.parse().ok()).collect();
    if les.is_empty() || les.contains(&t) {
        return None;
    }
    les.sort_by(f64::total_cmp);
    let below = les.iter().rev().find(|b| **b < t);
    let above = les.iter().find(|b| **b > t);
    let name = |b: Option<&f64>| b.map_or("none".to_string(), |b| b.to_string());
    Some(format!(
        "{threshold} is not a bucket of the histogram (nearest: {} below, {} above)",
        name(below),
        name(above)
    ))
}

/// Parses every objective's indicators, naming the objective on error.
pub fn parse_all(objectives: &[Objective]) -> Result<Vec<Indicators>, IndicatorError> {
    objectives
        .iter()
        .enumerate()
        .map(|(index, o)| {
            Indicators::parse(&o.indicator).map_err(|e| IndicatorError::Objective {
                index,
                error: Box::new(e),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LatencyIndicator, RatioIndicator};

    fn ratio() -> Indicator {
        Indicator {
            ratio: Some(RatioIndicator {
                errors: r#"http_requests_total{service="s",code=~"5.."}"#.into(),
                total: r#"http_requests_total{service="s"}"#.into(),
            }),
            latency: None,
        }
    }

    #[test]
    fn ratio_query_treats_missing_errors_as_zero() {
        let q = Indicators::parse(&ratio()).unwrap().error_ratio_query("5m");
        assert_eq!(
            q,
            r#"(sum(increase(http_requests_total{code=~"5..",service="s"}[5m])) or vector(0)) / sum(increase(http_requests_total{service="s"}[5m]))"#
        );
        assert!(promql::parse_query(&q).is_ok());
    }

    #[test]
    fn latency_query_uses_threshold_and_inf_buckets() {
        let ind = Indicator {
            ratio: None,
            latency: Some(LatencyIndicator {
                histogram: r#"lat_bucket{service="s"}"#.into(),
                threshold: "0.3".into(),
            }),
        };
        let q = Indicators::parse(&ind).unwrap().error_ratio_query("1h");
        assert!(
            q.contains(r#"lat_bucket{le="+Inf",service="s"}[1h]"#),
            "{q}"
        );
        assert!(
            q.contains(r#"lat_bucket{le=~"0*[.]30*|3([.]0*)?[eE]-0*1",service="s"}[1h]"#),
            "the threshold bucket, matched as a number: {q}"
        );
        assert!(promql::parse_query(&q).is_ok());
    }

    #[test]
    fn scoping_adds_the_pod_matcher_everywhere() {
        let q = Indicators::parse(&ratio())
            .unwrap()
            .scoped("pod", "s-canary-[a-z0-9]+-[a-z0-9]+")
            .unwrap()
            .error_ratio_query("5m");
        assert_eq!(
            q.matches(r#"pod=~"s-canary-[a-z0-9]+-[a-z0-9]+""#).count(),
            2,
            "{q}"
        );
    }

    #[test]
    fn a_threshold_between_buckets_names_the_nearest() {
        let les: Vec<String> = ["0.1", "0.30", "1", "+Inf"].map(String::from).into();
        assert_eq!(not_a_bucket("0.3", &les), None, "0.30 is 0.3");
        assert_eq!(not_a_bucket("3e-1", &les), None);
        let why = not_a_bucket("0.25", &les).unwrap();
        assert!(why.contains("nearest: 0.1 below, 0.3 above"), "{why}");
        assert_eq!(not_a_bucket("0.25", &[]), None, "nothing to compare with");
    }

    #[test]
    fn parse_errors_name_the_objective_field() {
        let mut o = Objective {
            name: "a".into(),
            target: 99.0,
            indicator: ratio(),
        };
        o.indicator.ratio.as_mut().unwrap().total = "rate(x[5m])".into();
        let err = parse_all(&[o]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.objectives[0].indicator.ratio.total:"),
            "{err}"
        );
        let IndicatorError::Objective { index: 0, error } = err else {
            panic!("{err:?}");
        };
        assert!(matches!(
            *error,
            IndicatorError::Field {
                field: "ratio.total",
                error: promql::PromqlError::NotASelector(_)
            }
        ));
    }
}

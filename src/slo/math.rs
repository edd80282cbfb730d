//! SLO arithmetic. Percentages are 0-100; error ratios are 0-1.

use crate::api::{BurnRateTier, Severity};

/// SLI over a window, percent, from the error ratio over that window.
pub fn sli(error_ratio: f64) -> f64 {
    100.0 * (1.0 - error_ratio)
}

/// Percent of the error budget consumed: `(100 - SLI) / (100 - target) * 100`.
/// May exceed 100.
pub fn budget_consumed(sli: f64, target: f64) -> f64 {
    (100.0 - sli) / (100.0 - target) * 100.0
}

/// Burn rate: how many times faster than sustainable the budget is spent.
/// `error ratio / (1 - target/100)`.
pub fn burn_rate(error_ratio: f64, target: f64) -> f64 {
    error_ratio / (1.0 - target / 100.0)
}

/// Severities of the tiers that fire: those whose burn rate over both windows is at
/// least the tier's threshold. A window without data does not fire. `rate_of` gives
/// the burn rate over a window (by its text, e.g. "5m").
pub fn firing(tiers: &[BurnRateTier], rate_of: impl Fn(&str) -> Option<f64>) -> Vec<Severity> {
    let mut out: Vec<Severity> = tiers
        .iter()
        .filter(|t| {
            let over = |w: &str| rate_of(w).is_some_and(|r| r >= t.burn_rate);
            over(t.long_window.as_str()) && over(t.short_window.as_str())
        })
        .map(|t| t.severity)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Rounds to `digits` significant digits, so status does not churn on float noise.
pub fn round_sig(value: f64, digits: i32) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let magnitude = value.abs().log10().floor() as i32;
    let factor = 10f64.powi(digits - 1 - magnitude);
    (value * factor).round() / factor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::default_tiers;

    #[test]
    fn budget_follows_the_contract() {
        // 99.9 target, 99.9876 SLI: 12.4% consumed.
        assert!((budget_consumed(99.9876, 99.9) - 12.4).abs() < 1e-9);
        assert!((budget_consumed(sli(0.0012), 99.9) - 120.0).abs() < 1e-9);
        assert_eq!(budget_consumed(100.0, 99.0), 0.0);
    }

    #[test]
    fn burn_rate_is_error_ratio_over_budget() {
        assert!((burn_rate(0.0144, 99.9) - 14.4).abs() < 1e-9);
        assert!((burn_rate(0.001, 99.9) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn tier_fires_only_when_both_windows_burn() {
        let tiers = default_tiers();
        let rates = |pairs: &'static [(&'static str, f64)]| {
            move |w: &str| pairs.iter().find(|(k, _)| *k == w).map(|(_, v)| *v)
        };
        assert_eq!(
            firing(&tiers, rates(&[("1h", 15.0), ("5m", 20.0)])),
            vec![Severity::Page]
        );
        assert!(firing(&tiers, rates(&[("1h", 15.0), ("5m", 2.0)])).is_empty());
        assert!(
            firing(&tiers, rates(&[("1h", 15.0)])).is_empty(),
            "no data never fires"
        );
        assert_eq!(
            firing(
                &tiers,
                rates(&[("1h", 15.0), ("5m", 15.0), ("3d", 1.0), ("6h", 1.5)])
            ),
            vec![Severity::Page, Severity::Ticket]
        );
        // Exactly at the threshold fires.
        assert_eq!(
            firing(&tiers, rates(&[("3d", 1.0), ("6h", 1.0)])),
            vec![Severity::Ticket]
        );
    }

    #[test]
    fn rounding_keeps_significant_digits() {
        assert_eq!(round_sig(12.345678, 4), 12.35);
        assert_eq!(round_sig(0.000123456, 3), 0.000123);
        assert_eq!(round_sig(-20.04, 3), -20.0);
        assert_eq!(round_sig(0.0, 3), 0.0);
    }
}

//! Prometheus-style durations (`30s`, `5m`, `1h30m`, `28d`) as they appear in the API.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The regular expression the CRD schema enforces for durations. Units are the ones
/// Prometheus accepts: `ms`, `s`, `m`, `h`, `d`, `w`, `y`, largest first.
pub const DURATION_PATTERN: &str =
    r"^([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$";

/// A duration in Prometheus syntax. It keeps the text it was written with, so that it
/// round-trips unchanged through the API and can be put into PromQL range selectors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PromDuration {
    text: String,
    value: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration: {why} (use Prometheus syntax such as 30s, 5m, 1h, 28d)")]
pub struct DurationError {
    text: String,
    why: &'static str,
}

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

impl PromDuration {
    /// The duration as written, e.g. `5m`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn as_duration(&self) -> Duration {
        self.value
    }

    /// Builds the shortest Prometheus text for a whole number of milliseconds.
    pub fn from_duration(d: Duration) -> Self {
        let mut left = d.as_millis() as u64;
        let mut text = String::new();
        for (unit, ms) in UNITS {
            if left >= ms {
                text.push_str(&format!("{}{unit}", left / ms));
                left %= ms;
            }
        }
        if text.is_empty() {
            text.push_str("0s");
        }
        Self {
            text,
            value: Duration::from_millis(d.as_millis() as u64),
        }
    }
}

impl FromStr for PromDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| DurationError {
            text: text.to_string(),
            why,
        };
        if text.is_empty() {
            return Err(err("empty"));
        }
        let mut rest = text;
        let mut total: u64 = 0;
        // Index into UNITS of the last unit seen: units must come largest first, once each.
        let mut last_unit: Option<usize> = None;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            // `ms` must be tried before `m`.
            let (idx, (unit, ms)) = UNITS
                .iter()
                .enumerate()
                .filter(|(_, (u, _))| rest.starts_with(u))
                .max_by_key(|(_, (u, _))| u.len())
                .ok_or_else(|| err("unknown or missing unit"))?;
            if last_unit.is_some_and(|last| idx <= last) {
                return Err(err("units must go from largest to smallest, each once"));
            }
            last_unit = Some(idx);
            rest = &rest[unit.len()..];
            total = number
                .checked_mul(*ms)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("too large"))?;
        }
        Ok(Self {
            text: text.to_string(),
            value: Duration::from_millis(total),
        })
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for PromDuration {
    fn schema_name() -> Cow<'static, str> {
        "PromDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "pattern": DURATION_PATTERN,
        })
    }
}

/// `"30s".parse()` for defaults and tests, where the text is a literal known to be valid.
#[macro_export]
macro_rules! dur {
    ($text:literal) => {
        <$crate::api::PromDuration as ::std::str::FromStr>::from_str($text)
            .expect(concat!("valid duration literal ", $text))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        text.parse::<PromDuration>()
            .unwrap()
            .as_duration()
            .as_secs()
    }

    #[test]
    fn parses_prometheus_units() {
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("5m"), 300);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("28d"), 28 * 86400);
        assert_eq!(secs("1w"), 7 * 86400);
        assert_eq!(
            "1500ms".parse::<PromDuration>().unwrap().as_duration(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in [
            "",
            "5",
            "5 minutes",
            "m",
            "1.5h",
            "30m1h",
            "5s5s",
            "-5m",
            "5M",
        ] {
            assert!(
                bad.parse::<PromDuration>().is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn pattern_agrees_with_parser() {
        let re = regex_lite::Regex::new(DURATION_PATTERN).unwrap();
        for text in ["30s", "5m", "1h30m", "28d", "1500ms", "1y2w3d4h5m6s7ms"] {
            assert!(re.is_match(text), "{text}");
            assert!(text.parse::<PromDuration>().is_ok(), "{text}");
        }
        for text in ["5 minutes", "30m1h", "5M"] {
            assert!(!re.is_match(text), "{text}");
            assert!(text.parse::<PromDuration>().is_err(), "{text}");
        }
    }

    #[test]
    fn round_trips_text_and_formats_durations() {
        let d: PromDuration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        assert_eq!(
            PromDuration::from_duration(Duration::from_secs(5400)).as_str(),
            "1h30m"
        );
        assert_eq!(
            PromDuration::from_duration(Duration::from_secs(86400)).as_str(),
            "1d"
        );
    }
}

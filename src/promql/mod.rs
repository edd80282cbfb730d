//! PromQL handling: selector and query parsing, query templates. No IO.

mod template;

pub use template::{TemplateError, Vars, render, template_variables};

use promql_parser::{
    label::{MatchOp, Matcher},
    parser::{Expr, VectorSelector, parse},
};

/// Why a selector, query, regex or number is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromqlError {
    #[error("{0:?} is a query, not a vector selector such as metric{{label=\"value\"}}")]
    NotASelector(String),
    #[error("offset and @ modifiers are not allowed")]
    Modifiers,
    #[error("{text:?} does not parse: {why}")]
    SelectorSyntax { text: String, why: String },
    #[error("does not parse: {0}")]
    QuerySyntax(String),
    #[error("{regex:?} is not a regular expression: {why}")]
    Regex { regex: String, why: String },
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("{0:?} must be a finite number >= 0")]
    OutOfRange(String),
}

/// Parses an indicator selector. It must be a plain vector selector
/// (`metric{label="value"}`), without offset or `@`, because the operator builds the
/// range queries around it.
pub fn parse_selector(text: &str) -> Result<VectorSelector, PromqlError> {
    match parse(text.trim()) {
        Ok(Expr::VectorSelector(sel)) if sel.offset.is_none() && sel.at.is_none() => Ok(sel),
        Ok(Expr::VectorSelector(_)) => Err(PromqlError::Modifiers),
        Ok(_) => Err(PromqlError::NotASelector(text.into())),
        Err(e) => Err(PromqlError::SelectorSyntax {
            text: text.into(),
            why: first_line(&e).into(),
        }),
    }
}

/// Parses a complete query.
pub fn parse_query(text: &str) -> Result<Expr, PromqlError> {
    parse(text).map_err(|e| PromqlError::QuerySyntax(first_line(&e).into()))
}

/// The selector with one more equality matcher (added to every `or` group).
pub fn with_label(sel: &VectorSelector, name: &str, value: &str) -> VectorSelector {
    with_matcher(sel, Matcher::new(MatchOp::Equal, name, value))
}

/// The selector with one more regex matcher, e.g. `pod=~"app-canary-.*"`.
pub fn with_label_regex(
    sel: &VectorSelector,
    name: &str,
    regex: &str,
) -> Result<VectorSelector, PromqlError> {
    let re = regex::Regex::new(&format!("^(?:{regex})$")).map_err(|e| PromqlError::Regex {
        regex: regex.into(),
        why: e.to_string(),
    })?;
    Ok(with_matcher(
        sel,
        Matcher::new(MatchOp::Re(re), name, regex),
    ))
}

/// A regex matching every way a client library may write the number `value` as a
/// label (a histogram's `le`): `0.3`, `0.30`, `.3`, `3e-1`, `3.0E-01`... so a threshold
/// is compared as a number, not as text. Character classes, not backslashes, keep it
/// valid inside a PromQL string.
pub fn number_regex(value: &str) -> Result<String, PromqlError> {
    let v: f64 = value
        .trim()
        .parse()
        .map_err(|_| PromqlError::NotANumber(value.into()))?;
    if !v.is_finite() || v < 0.0 {
        return Err(PromqlError::OutOfRange(value.into()));
    }
    let text = format!("{v}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (int, frac) = (int.trim_start_matches('0'), frac.trim_end_matches('0'));
    let decimal = if frac.is_empty() {
        format!("0*{int}([.]0*)?")
    } else {
        format!("0*{int}[.]{frac}0*")
    };
    if v == 0.0 {
        return Ok(format!("{decimal}|0([.]0*)?[eE][+-]?0+"));
    }
    // Scientific: the significant digits d.ddd and the exponent.
    let digits: String = format!("{int}{frac}");
    let lead = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0');
    let exponent = int.len() as i64 - lead as i64 - 1;
    let (first, rest) = significant.split_at(1);
    let mantissa = if rest.is_empty() {
        format!("{first}([.]0*)?")
    } else {
        format!("{first}[.]{rest}0*")
    };
    let exp = if exponent < 0 {
        format!("-0*{}", -exponent)
    } else if exponent == 0 {
        "[+-]?0+".to_string()
    } else {
        format!("[+]?0*{exponent}")
    };
    Ok(format!("{decimal}|{mantissa}[eE]{exp}"))
}

fn with_matcher(sel: &VectorSelector, m: Matcher) -> VectorSelector {
    let mut out = sel.clone();
    if out.matchers.or_matchers.is_empty() {
        out.matchers.matchers.push(m);
    } else {
        for group in &mut out.matchers.or_matchers {
            group.push(m.clone());
        }
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_however_they_are_written() {
        let matches = |value: &str, text: &str| {
            let re = regex::Regex::new(&format!("^(?:{})$", number_regex(value).unwrap())).unwrap();
            re.is_match(text)
        };
        for text in ["0.3", "0.30", ".3", "3e-1", "3.0E-01", "3e-01"] {
            assert!(matches("0.3", text), "0.3 vs {text}");
            assert!(matches("0.30", text), "0.30 vs {text}");
            assert!(matches("3e-1", text), "3e-1 vs {text}");
        }
        for text in ["0.03", "0.31", "13", "3", "30"] {
            assert!(!matches("0.3", text), "0.3 vs {text}");
        }
        for text in ["1", "1.0", "1e0", "1e+00", "1.0E+00"] {
            assert!(matches("1", text), "1 vs {text}");
        }
        assert!(!matches("1", "10") && !matches("1", "0.1"));
        assert!(matches("2.5", "2.50") && matches("2.5", "2.5e+00"));
        assert!(matches("0.025", "0.025") && matches("0.025", "2.5e-02"));
        assert!(!matches("0.025", "0.25"));
        assert!(matches("10", "10") && matches("10", "1e+01") && !matches("10", "1"));
        assert!(number_regex("fast").is_err());
    }

    #[test]
    fn accepts_vector_selectors() {
        let sel =
            parse_selector(r#"http_requests_total{service="share-link",code=~"5.."}"#).unwrap();
        assert_eq!(sel.name.as_deref(), Some("http_requests_total"));
        assert!(parse_selector(r#"{__name__="up"}"#).is_ok());
    }

    #[test]
    fn adds_matchers_that_print_back_as_promql() {
        let sel =
            parse_selector(r#"http_requests_total{service="share-link",code=~"5.."}"#).unwrap();
        let scoped =
            with_label_regex(&sel, "pod", "share-link-canary-[a-z0-9]+-[a-z0-9]+").unwrap();
        let text = scoped.to_string();
        assert!(
            text.contains(r#"pod=~"share-link-canary-[a-z0-9]+-[a-z0-9]+""#),
            "{text}"
        );
        // What we print parses back to the same selector.
        assert_eq!(parse_selector(&text).unwrap().to_string(), text);
        let inf = with_label(&sel, "le", "+Inf").to_string();
        assert!(inf.contains(r#"le="+Inf""#), "{inf}");
    }

    #[test]
    fn rejects_queries_ranges_and_garbage() {
        for bad in [
            "rate(http_requests_total[5m])",
            "http_requests_total[5m]",
            "http_requests_total offset 5m",
            "sum(up)",
            "up{",
            "",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad:?}");
        }
    }
}

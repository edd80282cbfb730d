//! PromQL handling: selector and query parsing, query templates. No IO.

mod template;

pub use template::{TemplateError, Vars, render, template_variables};

use promql_parser::{
    label::{MatchOp, Matcher},
    parser::{Expr, VectorSelector, parse},
};

/// Parses an indicator selector. It must be a plain vector selector
/// (`metric{label="value"}`), without offset or `@`, because the operator builds the
/// range queries around it.
pub fn parse_selector(text: &str) -> Result<VectorSelector, String> {
    match parse(text.trim()) {
        Ok(Expr::VectorSelector(sel)) if sel.offset.is_none() && sel.at.is_none() => Ok(sel),
        Ok(Expr::VectorSelector(_)) => Err("offset and @ modifiers are not allowed".into()),
        Ok(_) => Err(format!(
            "{text:?} is a query, not a vector selector such as metric{{label=\"value\"}}"
        )),
        Err(e) => Err(format!("{text:?} does not parse: {}", first_line(&e))),
    }
}

/// Parses a complete query.
pub fn parse_query(text: &str) -> Result<Expr, String> {
    parse(text).map_err(|e| format!("does not parse: {}", first_line(&e)))
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
) -> Result<VectorSelector, String> {
    let re = regex::Regex::new(&format!("^(?:{regex})$")).map_err(|e| e.to_string())?;
    Ok(with_matcher(
        sel,
        Matcher::new(MatchOp::Re(re), name, regex),
    ))
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

//! PromQL handling: selector and query parsing, query templates. No IO.

mod template;

pub use template::{TemplateError, Vars, render, template_variables};

use promql_parser::parser::{Expr, VectorSelector, parse};

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

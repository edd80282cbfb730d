//! Query templates: `{{namespace}}`, `{{target}}`, `{{interval}}`, `{{canary_pods}}`,
//! `{{primary_pods}}` and, in compare checks, `{{pods}}`.
//!
//! Values are substituted escaped for a PromQL double-quoted string, which is where
//! they belong (`namespace="{{namespace}}"`, `pod=~"{{canary_pods}}"`), so no value can
//! end the string and change the query.

use std::collections::BTreeMap;

/// Variable values for one rendering.
pub type Vars = BTreeMap<&'static str, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template variable {{{{{0}}}}}")]
    Unknown(String),
    #[error("unclosed {{{{ in template")]
    Unclosed,
}

/// Names of the variables a template uses, in order of appearance.
pub fn template_variables(template: &str) -> Result<Vec<&str>, TemplateError> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        names.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    Ok(names)
}

/// Replaces every `{{name}}` with its escaped value.
pub fn render(template: &str, vars: &Vars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let name = after[..end].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| TemplateError::Unknown(name.to_string()))?;
        out.push_str(&escape_string_literal(value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Escapes a value for the inside of a PromQL double-quoted string.
fn escape_string_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from([
            ("namespace", "portal".to_string()),
            ("interval", "30s".to_string()),
        ])
    }

    #[test]
    fn substitutes_variables() {
        let q = render(r#"up{namespace="{{namespace}}"}[{{ interval }}]"#, &vars()).unwrap();
        assert_eq!(q, r#"up{namespace="portal"}[30s]"#);
    }

    #[test]
    fn escapes_values_so_they_cannot_break_out_of_strings() {
        let v = Vars::from([("namespace", r#"a"} or vector(1) or up{x="\"#.to_string())]);
        let q = render(r#"up{namespace="{{namespace}}"}"#, &v).unwrap();
        assert_eq!(q, r#"up{namespace="a\"} or vector(1) or up{x=\"\\"}"#);
        // Still one selector: the injected text stayed inside the label value.
        assert!(matches!(
            promql_parser::parser::parse(&q),
            Ok(promql_parser::parser::Expr::VectorSelector(_))
        ));
    }

    #[test]
    fn reports_unknown_and_unclosed_variables() {
        assert_eq!(
            render("{{nope}}", &vars()),
            Err(TemplateError::Unknown("nope".into()))
        );
        assert_eq!(
            render("up{{namespace", &vars()),
            Err(TemplateError::Unclosed)
        );
        assert_eq!(
            template_variables("{{a}} x {{ b }}").unwrap(),
            vec!["a", "b"]
        );
    }
}

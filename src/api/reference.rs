//! The field reference (docs/reference.md), generated from the CRDs so it cannot drift
//! from the types: every field with its type, default, constraints and doc comment.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// Markdown for `crds`.
pub fn markdown(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "# API reference\n\n\
         Generated from the Rust types (`make docs`, which runs `guardrails crd --markdown`); \
         a test fails when this file and the types differ. Durations use Prometheus syntax \
         (`30s`, `5m`, `1h`, `28d`), percentages are numbers (`99.9`), weights are integers 0-100.\n",
    );
    for crd in crds {
        for version in &crd.spec.versions {
            version_section(&mut out, crd, version);
        }
    }
    out
}

/// One version of one resource: its names, description, columns, spec and status.
fn version_section(
    out: &mut String,
    crd: &CustomResourceDefinition,
    version: &CustomResourceDefinitionVersion,
) {
    let names = &crd.spec.names;
    let _ = write!(
        out,
        "\n## {} ({}/{})\n\n",
        names.kind, crd.spec.group, version.name
    );
    let short = names.short_names.clone().unwrap_or_default();
    let short = if short.is_empty() {
        String::new()
    } else {
        format!(", short names {}", code_list(&short))
    };
    let _ = writeln!(
        out,
        "{} scope, plural `{}`{short}.\n",
        crd.spec.scope, names.plural
    );
    let Some(root) = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return;
    };
    if let Some(d) = &root.description {
        let _ = writeln!(out, "{}\n", one_line(d));
    }
    if let Some(cols) = &version.additional_printer_columns {
        let cols: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
        let _ = writeln!(out, "`kubectl get` columns: {}.\n", cols.join(", "));
    }
    for part in ["spec", "status"] {
        if let Some(schema) = root.properties.as_ref().and_then(|p| p.get(part)) {
            fields_table(out, part, schema);
        }
    }
}

/// The field table of `spec` or `status`, then its cross-field rules.
fn fields_table(out: &mut String, part: &str, schema: &JSONSchemaProps) {
    let mut rows = Vec::new();
    let mut rules = Vec::new();
    walk(part, schema, false, &mut rows, &mut rules);
    let _ = write!(
        out,
        "### {part}\n\n| Field | Type | Default | Description |\n|---|---|---|---|\n"
    );
    for r in rows.iter().skip(1) {
        out.push_str(r);
    }
    if !rules.is_empty() {
        let _ = writeln!(
            out,
            "\nCross-field rules (CEL on the apiserver, and the operator's own validation):\n"
        );
        for r in rules {
            let _ = writeln!(out, "- {r}");
        }
    }
    out.push('\n');
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `string`, `[]object`, `map[string]number`, with constraints.
fn type_text(s: &JSONSchemaProps) -> String {
    let base = match s.type_.as_deref() {
        Some("array") => {
            let inner = match &s.items {
                Some(JSONSchemaPropsOrArray::Schema(i)) => type_name(i),
                _ => "?".into(),
            };
            format!("[]{inner}")
        }
        Some("object") => match &s.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(v)) => format!("map[string]{}", type_name(v)),
            _ => "object".into(),
        },
        _ if s.pattern.as_deref() == Some(super::DURATION_PATTERN) => "duration".into(),
        _ => type_name(s),
    };
    let mut c = Vec::new();
    if let Some(e) = &s.enum_ {
        c.push(format!(
            "one of {}",
            e.iter()
                .map(|v| json_text(&v.0))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let bound = |v: f64, exclusive: Option<bool>, incl: &str, excl: &str| {
        format!("{} {v}", if exclusive == Some(true) { excl } else { incl })
    };
    if let Some(m) = s.minimum {
        c.push(bound(m, s.exclusive_minimum, ">=", ">"));
    }
    if let Some(m) = s.maximum {
        c.push(bound(m, s.exclusive_maximum, "<=", "<"));
    }
    if let (Some(a), b) = (s.min_items, s.max_items) {
        c.push(match b {
            Some(b) => format!("{a}..{b} items"),
            None => format!(">= {a} items"),
        });
    }
    if let Some(p) = s.pattern.as_ref().filter(|p| *p != super::DURATION_PATTERN) {
        c.push(format!("pattern `{p}`"));
    }
    if let Some(keys) = &s.x_kubernetes_list_map_keys {
        c.push(format!("unique by {}", keys.join(", ")));
    }
    if c.is_empty() {
        format!("`{base}`")
    } else {
        format!("`{base}` ({})", c.join("; ").replace('|', "\\|"))
    }
}

fn type_name(s: &JSONSchemaProps) -> String {
    s.type_.clone().unwrap_or_else(|| {
        if s.x_kubernetes_int_or_string == Some(true) {
            "int-or-string".into()
        } else {
            "any".into()
        }
    })
}

fn walk(
    path: &str,
    s: &JSONSchemaProps,
    required: bool,
    rows: &mut Vec<String>,
    rules: &mut Vec<String>,
) {
    let default = s
        .default
        .as_ref()
        .map(|d| format!("`{}`", json_text(&d.0).replace('|', "\\|")))
        .unwrap_or_default();
    let req = if required { " **required**" } else { "" };
    rows.push(format!(
        "| `{path}` | {}{req} | {default} | {} |\n",
        type_text(s),
        s.description.as_deref().map(one_line).unwrap_or_default()
    ));
    for rule in s.x_kubernetes_validations.iter().flatten() {
        let msg = rule.message.clone().unwrap_or_else(|| rule.rule.clone());
        rules.push(format!("`{path}`: {msg}"));
    }
    let children = match (&s.properties, &s.items) {
        (Some(p), _) => Some((path.to_string(), p, s.required.clone().unwrap_or_default())),
        (None, Some(JSONSchemaPropsOrArray::Schema(item))) => item.properties.as_ref().map(|p| {
            (
                format!("{path}[]"),
                p,
                item.required.clone().unwrap_or_default(),
            )
        }),
        _ => None,
    };
    if let (None, Some(JSONSchemaPropsOrArray::Schema(item))) = (&s.properties, &s.items) {
        for rule in item.x_kubernetes_validations.iter().flatten() {
            let msg = rule.message.clone().unwrap_or_else(|| rule.rule.clone());
            rules.push(format!("`{path}[]`: {msg}"));
        }
    }
    if let Some((prefix, props, req)) = children {
        for (name, child) in props {
            walk(
                &format!("{prefix}.{name}"),
                child,
                req.contains(name),
                rows,
                rules,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_spec_field_of_the_contract_is_listed() {
        let md = super::markdown(&super::super::crds());
        for field in [
            "`spec.objectives[].indicator.ratio.errors`",
            "`spec.budgetPolicy.freezeAt`",
            "`spec.alerting.burnRateTiers[].shortWindow`",
            "`spec.analysis.checks[].sloBurnRate.objective`",
            "`spec.steps[].pause.duration`",
            "`status.history[].detectedAt`",
            "`status.objectives[].burnRates`",
        ] {
            assert!(md.contains(field), "{field}");
        }
        assert!(md.contains("freezeAt must be >= restrictAt") || md.contains("restrictAt"));
        assert!(md.contains("## GuardedRollout (guardrails.dev/v1alpha1)"));
    }
}

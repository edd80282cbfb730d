//! Hand-written schema fragments for what schemars cannot express in the
//! OpenAPI v3 dialect Kubernetes validates with (exclusive bounds, list types).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// A percentage strictly between 0 and 100 (an SLO target).
pub fn open_percent(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": true,
        "maximum": 100,
        "exclusiveMaximum": true,
    })
}

/// A percentage of error budget: above 0, up to 1000 (thresholds past 100% are allowed).
pub fn budget_percent(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": true,
        "maximum": 1000,
    })
}

/// A strictly positive number.
pub fn positive_number(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": true,
    })
}

/// Marks a list of named items as a map keyed by `name`: the apiserver then rejects
/// duplicate names and server-side apply merges items by name.
pub fn named_list<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<T>>();
    let obj = schema.ensure_object();
    obj.insert("x-kubernetes-list-type".into(), "map".into());
    obj.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["name"]),
    );
    schema
}

/// Inserts CEL rules (`x-kubernetes-validations`) into a schema; used through
/// `#[schemars(transform = ...)]`. The operator enforces the same rules in `validate()`,
/// for clusters whose apiserver predates CEL.
pub fn add_rules<R: AsRef<str>, M: AsRef<str>>(schema: &mut Schema, rules: &[(R, M)]) {
    let list = schema
        .ensure_object()
        .entry("x-kubernetes-validations")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if let serde_json::Value::Array(list) = list {
        list.extend(rules.iter().map(|(rule, message)| {
            serde_json::json!({"rule": rule.as_ref(), "message": message.as_ref()})
        }));
    }
}

/// The CEL rule that exactly one of `fields` is set, first among a schema's rules.
pub fn exactly_one(schema: &mut Schema, fields: &[&str]) {
    let has: Vec<String> = fields.iter().map(|f| format!("has(self.{f})")).collect();
    let rule = match has.as_slice() {
        [a, b] => format!("{a} != {b}"),
        _ => format!("[{}].filter(x, x).size() == 1", has.join(", ")),
    };
    let (last, rest) = fields.split_last().expect("a one-of has fields");
    let message = format!("exactly one of {} or {last} must be set", rest.join(", "));
    add_rules(schema, &[(rule, message)]);
}

/// An embedded Kubernetes object kept as it is (a pod template): any fields, written
/// and owned as one value (server-side apply would otherwise track each of its fields
/// in managedFields, on every status write).
pub fn embedded_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "x-kubernetes-map-type": "atomic",
    })
}

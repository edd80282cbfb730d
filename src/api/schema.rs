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
pub fn add_rules(schema: &mut Schema, rules: &[(&str, &str)]) {
    let list: Vec<serde_json::Value> = rules
        .iter()
        .map(|(rule, message)| serde_json::json!({"rule": rule, "message": message}))
        .collect();
    schema
        .ensure_object()
        .insert("x-kubernetes-validations".into(), list.into());
}

/// An embedded Kubernetes object kept as it is (a pod template): any fields.
pub fn embedded_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

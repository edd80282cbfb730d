//! crds/ is generated from the Rust types and fit for kube-apiserver 1.20 and newer.

mod common;

use common::repo_path;
use guardrails::api::{GuardedRollout, SloPolicy, crd_files};

/// crds/ and the Helm chart's copy hold exactly what the types generate.
#[test]
fn committed_crds_match_the_types() {
    for dir in ["crds", "charts/guardrails/crds"] {
        let files = crd_files();
        let mut committed: Vec<String> = std::fs::read_dir(repo_path(dir))
            .unwrap_or_else(|e| panic!("{dir}/: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        committed.sort();
        let mut generated: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        generated.sort();
        assert_eq!(
            committed, generated,
            "{dir}/ has other files than the types generate: run `make crds`"
        );
        for (name, yaml) in files {
            let on_disk = std::fs::read_to_string(repo_path(dir).join(&name)).unwrap();
            assert!(
                on_disk == yaml,
                "{dir}/{name} differs from the types: run `make crds`"
            );
        }
    }
}

fn walk(value: &serde_json::Value, path: &str, visit: &mut dyn FnMut(&str, &serde_json::Value)) {
    visit(path, value);
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| walk(v, &format!("{path}.{k}"), visit)),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| walk(v, &format!("{path}[{i}]"), visit)),
        _ => {}
    }
}

#[test]
fn no_enum_contains_null() {
    // kube-apiserver 1.20 rejects such a CRD with a misleading message.
    for (name, yaml) in crd_files() {
        let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        walk(&value, &name, &mut |path, v| {
            if let Some(values) = v.get("enum").and_then(|e| e.as_array()) {
                assert!(
                    !values.iter().any(|x| x.is_null()),
                    "null in enum at {path}"
                );
            }
        });
    }
}

#[test]
fn cross_field_rules_are_in_the_crds_as_cel() {
    let rules = |yaml: &str| -> Vec<String> {
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        let mut found = Vec::new();
        walk(&value, "", &mut |_, v| {
            if let Some(list) = v.get("x-kubernetes-validations").and_then(|l| l.as_array()) {
                found.extend(list.iter().map(|r| r["rule"].as_str().unwrap().to_string()));
            }
        });
        found
    };
    let files = crd_files();
    let all: Vec<String> = files.iter().flat_map(|(_, y)| rules(y)).collect();
    for needle in [
        "self.freezeAt >= self.restrictAt",
        "has(self.setWeight) != has(self.pause)",
        "has(self.ratio) != has(self.latency)",
        "self.min <= self.max",
        "filter(x, x).size() == 1",
    ] {
        assert!(
            all.iter().any(|r| r.contains(needle)),
            "no CEL rule with {needle:?}"
        );
    }
}

#[test]
fn names_and_printer_columns_follow_the_contract() {
    use kube::CustomResourceExt;
    let slo = SloPolicy::crd();
    assert_eq!(slo.spec.names.short_names, Some(vec!["slo".to_string()]));
    let cols: Vec<String> = slo.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(cols, ["Gate", "Budget left", "Age"]);
    assert!(
        slo.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some()
    );

    let gr = GuardedRollout::crd();
    assert_eq!(
        gr.spec.names.short_names,
        Some(vec!["gr".to_string(), "grollout".to_string()])
    );
    let cols: Vec<String> = gr.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(cols, ["Phase", "Weight", "Step", "Gate", "Age"]);
    assert!(
        gr.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some()
    );
}

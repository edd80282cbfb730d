//! The documentation says what the code does: the field reference is generated from the
//! types, troubleshooting covers every reason the operator can report, and links resolve.

mod common;

use common::repo_path;
use guardrails::{
    api::{Phase, reference},
    reasons::{
        ConditionType, NotifyCondition, RolloutCondition, RolloutEvent, RuleCondition,
        SloCondition, SloEvent,
    },
};

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn reference_matches_the_types() {
    let generated = reference::markdown(&guardrails::api::crds());
    assert!(
        read("docs/reference.md") == generated,
        "docs/reference.md differs from the types: run `make crds`"
    );
}

#[test]
fn troubleshooting_covers_every_condition_and_event_reason() {
    let text = read("docs/troubleshooting.md");
    let headings: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| {
            h.split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_matches('`')
        })
        .collect();
    // Every vocabulary a person can meet in status, Events or `kubectl get`.
    let names = |all: Vec<&'static str>| all.into_iter().map(String::from);
    let mut wanted: Vec<String> = Vec::new();
    wanted.extend(names(Phase::ALL.iter().map(|v| v.as_str()).collect()));
    wanted.extend(names(
        RolloutEvent::ALL.iter().map(|v| v.as_str()).collect(),
    ));
    wanted.extend(names(
        RolloutCondition::ALL.iter().map(|v| v.as_str()).collect(),
    ));
    wanted.extend(names(SloEvent::ALL.iter().map(|v| v.as_str()).collect()));
    wanted.extend(names(
        SloCondition::ALL.iter().map(|v| v.as_str()).collect(),
    ));
    wanted.extend(names(
        RuleCondition::ALL.iter().map(|v| v.as_str()).collect(),
    ));
    wanted.extend(names(
        ConditionType::ALL.iter().map(|v| v.as_str()).collect(),
    ));
    wanted.extend(names(
        NotifyCondition::ALL.iter().map(|v| v.as_str()).collect(),
    ));
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !headings.contains(&w.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "no `### <reason>` section for {missing:?}"
    );
}

#[test]
fn readme_starts_with_the_two_commands() {
    let readme = read("README.md");
    let head: Vec<&str> = readme.lines().take(8).collect();
    let head = head.join("\n");
    assert!(head.contains("make demo"), "{head}");
    assert!(head.contains("make test"), "{head}");
    let makefile = read("Makefile");
    for target in ["demo:", "demo-down:", "test:"] {
        assert!(
            makefile.contains(&format!("\n{target}")),
            "Makefile target {target}"
        );
    }
}

#[test]
fn every_example_is_explained_and_links_resolve() {
    let examples = read("docs/examples.md");
    for file in common::example_files() {
        let rel = file
            .strip_prefix(repo_path(""))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            examples.contains(&rel),
            "docs/examples.md does not mention {rel}"
        );
    }
    let link = regex_lite::Regex::new(r"\]\(([^)#:]+)(#[^)]*)?\)").unwrap();
    let code = regex_lite::Regex::new(r"`[^`]*`").unwrap();
    let mut docs = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(repo_path("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        docs.push(format!("docs/{name}"));
    }
    for doc in &docs {
        let base = repo_path(doc).parent().unwrap().to_path_buf();
        let text = code.replace_all(&read(doc), "").into_owned();
        for cap in link.captures_iter(&text) {
            let target = &cap[1];
            assert!(
                base.join(target).exists(),
                "{doc} links to {target}, which does not exist"
            );
        }
    }
}

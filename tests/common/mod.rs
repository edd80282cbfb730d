//! Shared setup of the integration tests: one control plane per test binary with the
//! CRDs installed, a namespace per test.
#![allow(dead_code)]

pub mod env;
pub mod share_link;

use guardrails_sandbox::ControlPlane;
use kube::Client;

/// The shared control plane, a fresh client and a new namespace named after `test`.
/// Panics with the reason (e.g. "run `make test-env`") when the servers cannot start.
pub async fn cluster(test: &str) -> (&'static ControlPlane, Client, String) {
    ControlPlane::for_test(&guardrails::api::crds(), test).await
}

/// Path of a file in the repository.
pub fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every YAML file under examples/, sorted.
pub fn example_files() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![repo_path("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples/ readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Polls `api.get(name)` until the object exists and `ok` holds; panics after `secs`
/// with the last object seen.
pub async fn wait_for<K>(
    api: &kube::Api<K>,
    name: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let timeout = std::time::Duration::from_secs(secs);
    let reached = guardrails_sandbox::wait::eventually(what, timeout, || async {
        // Not there (yet) counts as not reached.
        match api.get_opt(name).await.expect("get") {
            Some(obj) if ok(&obj) => Ok(obj),
            other => Err(other),
        }
    })
    .await;
    capture(&reached, what);
    reached
}

/// With GUARDRAILS_CAPTURE_DIR set, every object a story waited for is written there as
/// JSON (`<name>-<what>.json`): the fixtures of tests/argocd_health.rs come from it.
fn capture<K: kube::Resource + serde::Serialize>(obj: &K, what: &str) {
    let Ok(dir) = std::env::var("GUARDRAILS_CAPTURE_DIR") else {
        return;
    };
    let slug: String = what
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = obj.meta().name.clone().unwrap_or_default();
    let path = std::path::Path::new(&dir).join(format!("{name}-{slug}.json"));
    let text = serde_json::to_string_pretty(obj).expect("objects serialize");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// (reason, note) of every Event about the object `name` in `ns`.
pub async fn events_about(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    use k8s_openapi::api::events::v1::Event;
    let events = kube::Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list events");
    events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

//! Shared setup of the integration tests: one control plane per test binary with the
//! CRDs installed, a namespace per test.
#![allow(dead_code)]

pub mod env;

use guardrails_sandbox::ControlPlane;
use kube::Client;

/// The shared control plane, a fresh client and a new namespace named after `test`.
/// Panics with the reason (e.g. "run `make test-env`") when the servers cannot start.
pub async fn cluster(test: &str) -> (&'static ControlPlane, Client, String) {
    let cp = ControlPlane::shared(&guardrails::api::crds())
        .unwrap_or_else(|e| panic!("control plane: {e:#}"));
    let client = cp.client().expect("client");
    let ns = cp.namespace(&client, test).await.expect("namespace");
    (cp, client, ns)
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

/// Polls `api.get(name)` every 250 ms until the object exists and `ok` holds; panics
/// after `secs` with the last object seen.
pub async fn wait_for<K>(
    api: &kube::Api<K>,
    name: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let mut last = None;
    for _ in 0..secs * 4 {
        // Not there (yet) counts as not reached.
        let obj = api.get_opt(name).await.expect("get");
        if let Some(obj) = obj.as_ref().filter(|o| ok(o)) {
            return obj.clone();
        }
        last = obj;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("{what}: not reached in {secs}s; last seen: {last:#?}");
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

//! Where the operator's memory goes. N services (a Deployment, a SloPolicy with two
//! objectives and a GuardedRollout each) are adopted by the operator binary, as in the
//! scale bench; then the objects, as the apiserver serves them, fill fresh watch stores
//! in this process, with the trims the operator applies, under a counting allocator.
//! Prints each cache's heap per service beside the operator's own anonymous memory per
//! service, and the metric series it exports. `GUARDRAILS_MEMORY=N` (default 300),
//! `GUARDRAILS_BIN` the operator binary (default target/release/guardrails). Asserts
//! nothing about size.

mod services;

use services::{KillOnDrop, deployment, policy, rollout};
use std::{
    alloc::{GlobalAlloc, Layout, System},
    process::{Command, Stdio},
    sync::atomic::{AtomicIsize, Ordering},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use guardrails::api::{GuardedRollout, Phase, SloPolicy};
use guardrails_sandbox::{
    ControlPlane, Prometheus, PrometheusConfig, Simulator, free_port, http as sandbox_http,
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace};
use kube::{
    Api, Client, Resource,
    api::{ListParams, PartialObjectMeta, PostParams},
    runtime::{reflector, watcher},
};

/// Bytes allocated and not freed, by anything in this process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter
// is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static HEAP: Counting = Counting;

const NS: &str = "memory";

async fn create_all<K>(api: &Api<K>, objects: Vec<K>) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let results: Vec<_> = stream::iter(objects)
        .map(|o| async move { api.create(&PostParams::default(), &o).await })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Heap that holding `objects` in a watch store costs, after `trim`: the objects' own
/// copies (as a watch decodes them) and the store's index.
fn store_cost<K>(objects: &[K], trim: impl Fn(&mut K)) -> isize
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let before = LIVE.load(Ordering::SeqCst);
    let (store, mut writer) = reflector::store::<K>();
    for o in objects {
        let mut o = o.clone();
        trim(&mut o);
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    let cost = LIVE.load(Ordering::SeqCst) - before;
    drop((store, writer));
    cost
}

/// Heap per metric series, for a rollout's phase series (three labels).
fn series_cost(n: usize) -> f64 {
    use guardrails::telemetry::{Metrics, PhaseLabels, Shared};
    let metrics = Metrics::default();
    let before = LIVE.load(Ordering::SeqCst);
    for i in 0..n {
        // One copy of the namespace and name for all of a rollout's series, as the
        // operator records them.
        let (namespace, name): (Shared, Shared) = (NS.into(), format!("svc-{i:04}").into());
        for &phase in Phase::ALL {
            let labels = PhaseLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                phase: phase.as_str(),
            };
            metrics.rollout_phase.get_or_create(&labels).set(0);
        }
    }
    let cost = LIVE.load(Ordering::SeqCst) - before;
    drop(metrics);
    cost as f64 / (n * Phase::ALL.len()) as f64
}

/// The operator's anonymous resident memory, from /proc.
fn anonymous_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .ok_or_else(|| anyhow::anyhow!("no RssAnon"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0))
}

/// Waits until every GuardedRollout is Idle.
async fn adopted(client: &Client, n: usize, limit: Duration) -> anyhow::Result<()> {
    let api: Api<GuardedRollout> = Api::namespaced(client.clone(), NS);
    let start = Instant::now();
    loop {
        let idle = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|g| g.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle))
            .count();
        if idle == n {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "{idle} of {n} rollouts adopted after {limit:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn kib(bytes: isize, n: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0 / n as f64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("GUARDRAILS_MEMORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let binary = std::env::var("GUARDRAILS_BIN")
        .unwrap_or_else(|_| format!("{}/target/release/guardrails", env!("CARGO_MANIFEST_DIR")));
    let cp = ControlPlane::start().await?;
    let client = cp.client()?;
    cp.install_crds(&client, &guardrails::api::crds()).await?;
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(NS.into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let sim = Simulator::start(client.clone(), None).await?;
    let prom = Prometheus::start(PrometheusConfig {
        scrape_interval: Some("5s".into()),
        targets: vec![("sim".into(), sim.addr().to_string())],
        ..Default::default()
    })
    .await?;
    let names: Vec<String> = (0..n).map(|i| format!("svc-{i:04}")).collect();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let policies: Api<SloPolicy> = Api::namespaced(client.clone(), NS);
    let rollouts: Api<GuardedRollout> = Api::namespaced(client.clone(), NS);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new(&binary)
        .args(["run", "--prometheus-url", &prom.url()])
        .arg(format!("--metrics-addr={metrics}"))
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let operator = KillOnDrop(child);
    // The operator with nothing to do, then the services arrive.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let empty = anonymous_kib(operator.0.id())? as isize * 1024;
    create_all(&deployments, names.iter().map(|n| deployment(n)).collect()).await?;
    create_all(&policies, names.iter().map(|n| policy(NS, n)).collect()).await?;
    create_all(&rollouts, names.iter().map(|n| rollout(n)).collect()).await?;
    adopted(&client, n, Duration::from_secs(300)).await?;
    // Every policy evaluated a few times, every status written; then quiet.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let anon = anonymous_kib(operator.0.id())? as isize * 1024;
    let series = match sandbox_http::get(&metrics, "/metrics").await {
        Some((200, text)) => text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
        _ => 0,
    };

    // The objects as the watches deliver them.
    let all_deployments = deployments.list(&ListParams::default()).await?.items;
    let versions: Vec<PartialObjectMeta<Deployment>> = deployments
        .list_metadata(&ListParams::default())
        .await?
        .items;
    let managed: Vec<Deployment> = all_deployments
        .iter()
        .filter(|d| {
            d.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(guardrails::api::LABEL_ROLLOUT))
        })
        .cloned()
        .collect();
    let targets: Vec<Deployment> = all_deployments
        .iter()
        .filter(|d| !managed.iter().any(|m| m.metadata.name == d.metadata.name))
        .cloned()
        .collect();
    let all_rollouts = rollouts.list(&ListParams::default()).await?.items;
    let all_policies = policies.list(&ListParams::default()).await?.items;
    use guardrails::controller::rollout::{Compact, trim};
    // Deployments are cached as JSON: the cost is the JSON's, after the trims.
    let compact = |ds: &[Deployment], trim: &dyn Fn(&mut Deployment)| -> Vec<Compact<Deployment>> {
        ds.iter()
            .map(|d| {
                let mut d = d.clone();
                trim(&mut d);
                Compact::new(&d)
            })
            .collect()
    };
    let (managed, targets) = (
        compact(&managed, &trim::<Deployment>),
        compact(&targets, &|d: &mut Deployment| {
            trim(d);
            d.status = None;
        }),
    );
    let rows = [
        (
            "GuardedRollouts (trimmed)",
            all_rollouts.len(),
            store_cost(&all_rollouts, trim::<GuardedRollout>),
        ),
        (
            "SloPolicies (trimmed)",
            all_policies.len(),
            store_cost(&all_policies, trim::<SloPolicy>),
        ),
        (
            "managed Deployments (trimmed, as JSON)",
            managed.len(),
            store_cost(&managed, |_| ()),
        ),
        (
            "targets, read in full (status dropped, as JSON)",
            targets.len(),
            store_cost(&targets, |_| ()),
        ),
        (
            "Deployment metadata (name, uid, generation, version)",
            versions.len(),
            store_cost(&versions, guardrails::controller::rollout::trim_to_version),
        ),
    ];
    println!("memory: {n} services adopted by one operator, then a quiet minute");
    println!("| what | objects | heap per service |");
    println!("|---|---|---|");
    let mut caches = 0;
    for (what, count, cost) in rows {
        caches += cost;
        println!("| {what} | {count} | {} |", kib(cost, n));
    }
    println!("| all watch caches | | {} |", kib(caches, n));
    println!(
        "| operator anonymous memory (RssAnon) beyond an idle operator's {:.1} MiB | | {} |",
        empty as f64 / 1048576.0,
        kib(anon - empty, n)
    );
    let per_series = series_cost(n);
    println!(
        "| metric series exported | {series} | {:.1} series, {} |",
        series as f64 / n as f64,
        kib((per_series * series as f64) as isize, n)
    );
    drop(operator);
    drop((sim, prom, cp));
    Ok(())
}

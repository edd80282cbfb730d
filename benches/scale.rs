//! One operator for many services: N services in 10 namespaces (a Deployment, a
//! SloPolicy with two objectives and a GuardedRollout each), the operator binary
//! cluster-wide against the sandbox apiserver, the simulator playing the kubelets and
//! serving metrics, and Prometheus scraping it with the rules `guardrails rules` prints
//! loaded. Measures the cold start, a minute of idle and a wave of 100 canaries, for
//! 100 and 1,000 services (`GUARDRAILS_SCALE=100,1000`). Run with `make bench`.
//!
//! The operator starts once the rules have recorded every service, as when it restarts
//! over services that have been running; `GUARDRAILS_SCALE_START=fresh` starts it right
//! after the services are created instead, so that every policy reads its long windows
//! with its own queries.

mod services;

use services::{KillOnDrop, deployment, policy, rollout};
use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use guardrails::{
    api::{GuardedRollout, IndicatorSource, Phase, SloPolicy},
    prometheus::PrometheusSource,
    slo::{COVERAGE, recorded, rules},
};
use guardrails_sandbox::{
    ControlPlane, Prometheus, PrometheusConfig, Simulator, free_port, http as sandbox_http,
};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Namespace},
    apimachinery::pkg::apis::meta::v1::Condition,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

const NAMESPACES: usize = 10;
const WAVE: usize = 100;
const IDLE: Duration = Duration::from_secs(60);
/// How long a server's metrics may take: Prometheus' grow with its rule groups.
const METRICS_READ: Duration = Duration::from_secs(10);

fn names(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("scale-{}", i % NAMESPACES), format!("svc-{i:04}")))
        .collect()
}

/// Creates every item, 16 at a time.
async fn create_all<K, F>(
    client: &Client,
    items: &[(String, String)],
    make: F,
) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    F: Fn(&str, &str) -> K,
{
    let results: Vec<_> = stream::iter(items)
        .map(|(ns, name)| {
            let api: Api<K> = Api::namespaced(client.clone(), ns);
            let obj = make(ns, name);
            async move { api.create(&PostParams::default(), &obj).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

fn sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GETs and LISTs of the objects the operator reads, as the apiserver counted them.
async fn api_reads(client: &Client) -> anyhow::Result<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let resources = [
        "deployments",
        "guardedrollouts",
        "slopolicies",
        "horizontalpodautoscalers",
    ];
    let mut total = 0.0;
    for r in resources {
        for verb in ["GET", "LIST"] {
            let (v, res) = (format!("verb=\"{verb}\""), format!("resource=\"{r}\""));
            total += sum(&text, "apiserver_request_total", &[&v, &res]);
        }
    }
    Ok(total)
}

/// The apiserver's time by request kind ("VERB resource[/subresource]"): (requests,
/// seconds spent answering them), from its request-duration histogram.
fn request_time(text: &str) -> HashMap<String, (f64, f64)> {
    let mut out: HashMap<String, (f64, f64)> = HashMap::new();
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_string())
    };
    for line in text.lines() {
        let (count, family) = if line.starts_with("apiserver_request_duration_seconds_sum{") {
            (false, true)
        } else if line.starts_with("apiserver_request_duration_seconds_count{") {
            (true, true)
        } else {
            (false, false)
        };
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let (Some(verb), Some(resource), Some(value), true) =
            (label(line, "verb"), label(line, "resource"), value, family)
        else {
            continue;
        };
        if verb == "WATCH" {
            continue;
        }
        let sub = label(line, "subresource").filter(|s| !s.is_empty());
        let kind = match sub {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        let entry = out.entry(kind).or_default();
        if count {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    out
}

async fn apiserver_metrics(client: &Client) -> anyhow::Result<String> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    Ok(client.request_text(req).await?)
}

/// Prometheus' own metrics, for what it spent its time on.
async fn prometheus_metrics(prom: &Prometheus) -> String {
    sandbox_http::get_within(&prom.addr(), "/metrics", METRICS_READ)
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// "queries N (S s), rule evaluations M (T s)" between two of Prometheus' metric texts:
/// the instant queries answered (the operator's) and the rules evaluated, with the time
/// each took in all.
fn prometheus_load(before: &str, after: &str) -> String {
    if before.is_empty() || after.is_empty() {
        return "its metrics not read".into();
    }
    let delta =
        |family: &str, labels: &[&str]| sum(after, family, labels) - sum(before, family, labels);
    let query = ["handler=\"/api/v1/query\""];
    format!(
        "queries {:.0} ({:.1} s), rule evaluations {:.0} ({:.1} s)",
        delta("prometheus_http_request_duration_seconds_count", &query),
        delta("prometheus_http_request_duration_seconds_sum", &query),
        delta("prometheus_rule_evaluation_duration_seconds_count", &[]),
        delta("prometheus_rule_evaluation_duration_seconds_sum", &[]),
    )
}

/// "N CPU-s; kind count (seconds), ..." of the apiserver between two metric texts: its
/// CPU and the request kinds it spent most time answering.
fn apiserver_load(cpu_seconds: f64, before: &str, after: &str) -> String {
    let (before, after) = (request_time(before), request_time(after));
    let mut kinds: Vec<(String, f64, f64)> = after
        .into_iter()
        .map(|(kind, (n, secs))| {
            let (n0, s0) = before.get(&kind).copied().unwrap_or_default();
            (kind, n - n0, secs - s0)
        })
        .filter(|(_, n, _)| *n > 0.0)
        .collect();
    kinds.sort_by(|a, b| b.2.total_cmp(&a.2));
    let top: Vec<String> = kinds
        .iter()
        .take(6)
        .map(|(kind, n, secs)| format!("{kind} {n:.0} ({secs:.1} s)"))
        .collect();
    format!("{cpu_seconds:.1} CPU-s; {}", top.join(", "))
}

/// The servers' CPU and request counts at one moment: [apiserver, etcd, Prometheus,
/// operator, the bench's own process (the simulator and the watches that time objects)].
struct Moment {
    /// CPU ticks before and after the metrics were read (the reads cost CPU too, and
    /// count in no window).
    ticks: Vec<u64>,
    ticks_after_read: Vec<u64>,
    apiserver: anyhow::Result<String>,
    prometheus: String,
}

impl Moment {
    async fn take(pids: &[u32; 5], client: &Client, prom: &Prometheus) -> Self {
        let ticks = || pids.iter().map(|p| cpu_ticks(*p)).collect::<Vec<u64>>();
        let before = ticks();
        let apiserver = apiserver_metrics(client).await;
        let prometheus = prometheus_metrics(prom).await;
        Self {
            ticks: before,
            ticks_after_read: ticks(),
            apiserver,
            prometheus,
        }
    }

    /// Who had the two cores since `before`: each server's CPU-s and what the apiserver
    /// and Prometheus spent it on.
    fn load_since(&self, before: &Self) -> anyhow::Result<String> {
        let secs = |i: usize| (self.ticks[i] - before.ticks_after_read[i]) as f64 / 100.0;
        let (Ok(was), Ok(is)) = (&before.apiserver, &self.apiserver) else {
            anyhow::bail!("the apiserver's metrics were not read");
        };
        Ok(format!(
            "apiserver {}; etcd {:.1}, Prometheus {:.1} CPU-s ({}), operator {:.1}, bench and simulator {:.1} CPU-s",
            apiserver_load(secs(0), was, is),
            secs(1),
            secs(2),
            prometheus_load(&before.prometheus, &self.prometheus),
            secs(3),
            secs(4)
        ))
    }
}

/// Every object's status, without its timestamps (which change with no write of their
/// own), by namespace/name.
async fn statuses<K>(client: &Client) -> anyhow::Result<HashMap<String, serde_json::Value>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let list = Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .map(|o| {
            let v = serde_json::to_value(o).unwrap_or_default();
            let mut status = v["status"].clone();
            strip_times(&mut status);
            let meta = o.meta();
            let key = format!("{:?}/{:?}", meta.namespace, meta.name);
            (key, status)
        })
        .collect())
}

fn strip_times(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !k.ends_with("Time") && !k.ends_with("Timestamp"));
            map.values_mut().for_each(strip_times);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}

/// How many statuses of `kind` changed between two reads, with the first change found
/// (the fields that differ, before -> after).
fn changed(
    kind: &str,
    before: &HashMap<String, serde_json::Value>,
    after: &HashMap<String, serde_json::Value>,
) -> String {
    let changed: Vec<&String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    let Some(first) = changed.first() else {
        return format!("{kind}: none");
    };
    let mut diffs = Vec::new();
    diff("status", &before[*first], &after[*first], &mut diffs);
    format!(
        "{kind}: {} of {}, e.g. {first}: {}",
        changed.len(),
        after.len(),
        diffs.join(", ")
    )
}

fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = serde_json::Value::Null;
                let (va, vb) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                diff(&format!("{path}.{k}"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path} {a} -> {b}")),
        _ => {}
    }
}

/// The operator's figures at one moment.
struct Sample {
    /// When the operator's metrics and CPU were read: the idle rates are per the time
    /// between two samples, which is longer than the pause between them.
    taken: Instant,
    cpu_ticks: u64,
    rss_kib: u64,
    /// Of the RSS: heap and other anonymous memory, and mapped files (the binary).
    anon_kib: u64,
    file_kib: u64,
    peak_kib: u64,
    reconciles: HashMap<&'static str, f64>,
    writes: f64,
    /// The operator's metrics text.
    text: String,
    operator_queries: f64,
    prometheus_queries: f64,
    api_reads: f64,
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(11) + n(12)
}

async fn sample(
    pid: u32,
    metrics: &str,
    prom: &Prometheus,
    client: &Client,
) -> anyhow::Result<Sample> {
    let (taken, cpu_ticks) = (Instant::now(), cpu_ticks(pid));
    let text = sandbox_http::get_within(metrics, "/metrics", METRICS_READ)
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    let (_, prom_text) = sandbox_http::get_within(&prom.addr(), "/metrics", METRICS_READ)
        .await
        .ok_or_else(|| anyhow::anyhow!("Prometheus /metrics"))?;
    let reconciles = ["guardedrollout", "slopolicy"]
        .into_iter()
        .map(|c| {
            (
                c,
                sum(
                    &text,
                    "guardrails_reconcile_total",
                    &[&format!("controller=\"{c}\"")],
                ),
            )
        })
        .collect();
    Ok(Sample {
        taken,
        cpu_ticks,
        rss_kib: proc_status(pid, "VmRSS:"),
        anon_kib: proc_status(pid, "RssAnon:"),
        file_kib: proc_status(pid, "RssFile:"),
        peak_kib: proc_status(pid, "VmHWM:"),
        reconciles,
        writes: sum(&text, "guardrails_api_writes_total", &[]),
        text: text.clone(),
        operator_queries: sum(&text, "guardrails_prometheus_queries_total", &[]),
        prometheus_queries: sum(
            &prom_text,
            "prometheus_http_requests_total",
            &["handler=\"/api/v1/query\""],
        ),
        api_reads: api_reads(client).await?,
    })
}

/// The kinds the bench watches.
trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + 'static
{
}

impl<K> Watched for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + 'static
{
}

/// A watch of every `K`: the objects of its first list, and the events after it.
struct Watch<K> {
    listed: Vec<K>,
    events: futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>,
}

/// Starts a watch of every `K` and waits for its first list: started before the
/// operator, the bench's lists are not in the window it measures.
async fn listed<K: Watched>(client: &Client) -> anyhow::Result<Watch<K>> {
    let api: Api<K> = Api::all(client.clone());
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed = Vec::new();
    let first_list = async {
        loop {
            match events.next().await {
                Some(Ok(watcher::Event::InitDone)) => return Ok(()),
                // A list started again (after an error) starts from nothing.
                Some(Ok(watcher::Event::Init)) => listed.clear(),
                Some(Ok(watcher::Event::InitApply(o))) => listed.push(o),
                Some(_) => {}
                None => anyhow::bail!("the watch ended before its first list"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), first_list)
        .await
        .map_err(|_| anyhow::anyhow!("no first list within 120 s"))??;
    Ok(Watch { listed, events })
}

/// [`first_times_in`] on a watch started now.
async fn first_times<K: Watched, F: Fn(&K) -> bool>(
    client: &Client,
    start: Instant,
    count: usize,
    limit: Duration,
    done: F,
) -> anyhow::Result<Vec<f64>> {
    first_times_in(listed(client).await?, start, count, limit, done).await
}

/// Seconds from `start` until `done` holds for every object, from a watch (a poll of
/// a thousand objects every few seconds would load the apiserver the operator is
/// measured on); each object's first time is kept. Fails after `limit`.
async fn first_times_in<K: Watched, F: Fn(&K) -> bool>(
    watch: Watch<K>,
    start: Instant,
    count: usize,
    limit: Duration,
    done: F,
) -> anyhow::Result<Vec<f64>> {
    let key = |o: &K| format!("{:?}/{:?}", o.meta().namespace, o.meta().name);
    let mut seen: HashMap<String, f64> = HashMap::new();
    // The latest of each object still waited for, to say why on failure.
    let mut waiting: HashMap<String, K> = HashMap::new();
    let listed = stream::iter(watch.listed.into_iter().map(Ok));
    let mut events = std::pin::pin!(listed.chain(watch.events.applied_objects()));
    let deadline = tokio::time::Instant::from_std(start + limit);
    while seen.len() < count {
        let Ok(next) = tokio::time::timeout_at(deadline, events.next()).await else {
            let example = waiting.iter().next().map(|(k, o)| {
                let v = serde_json::to_value(o).unwrap_or_default();
                format!("{k}: {}", v["status"])
            });
            anyhow::bail!(
                "{} of {count} after {limit:?}; one waiting: {}",
                seen.len(),
                example.unwrap_or_default()
            );
        };
        // A watch error is retried (with backoff) by the watcher itself.
        let Ok(o) = next.ok_or_else(|| anyhow::anyhow!("the watch ended"))? else {
            continue;
        };
        let k = key(&o);
        if seen.contains_key(&k) {
            continue;
        }
        if done(&o) {
            waiting.remove(&k);
            seen.insert(k, start.elapsed().as_secs_f64());
        } else {
            waiting.insert(k, o);
        }
    }
    let mut times: Vec<f64> = seen.into_values().collect();
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Seconds from `start` to each time, sorted; a missing time counts as never (infinite).
fn since(start: Timestamp, times: impl Iterator<Item = Option<Timestamp>>) -> Vec<f64> {
    let mut secs: Vec<f64> = times
        .map(|t| {
            t.map_or(f64::INFINITY, |t| {
                (t.as_millisecond() - start.as_millisecond()) as f64 / 1000.0
            })
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs
}

/// " (kind: count, ...)" of the operator's writes between two samples, when any.
fn writes_by_kind(before: &str, after: &str) -> String {
    let kinds = [
        "status",
        "event",
        "deployment",
        "annotations",
        "autoscaler",
        "httproute",
        "service",
    ];
    let parts: Vec<String> = kinds
        .iter()
        .filter_map(|k| {
            let label = format!("kind=\"{k}\"");
            let n = sum(after, "guardrails_api_writes_total", &[&label])
                - sum(before, "guardrails_api_writes_total", &[&label]);
            (n > 0.0).then(|| format!("{k} {n:.0}"))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn pct(times: &[f64], p: f64) -> f64 {
    times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1]
}

/// Whether the operator starts right after the services are created
/// (`GUARDRAILS_SCALE_START=fresh`), before Prometheus' rules have recorded them, rather
/// than over services that have been serving and recorded for a while.
fn fresh_start() -> bool {
    std::env::var("GUARDRAILS_SCALE_START").is_ok_and(|s| s == "fresh")
}

/// Waits until Prometheus' rules have recorded every window and the coverage of every
/// service's policy, as they have when an operator (re)starts over services that have
/// been running for a while; returns the seconds waited. Fails after `limit`.
async fn recorded_everywhere(
    url: &str,
    items: &[(String, String)],
    limit: Duration,
) -> anyhow::Result<f64> {
    let source = PrometheusSource::new(url)?;
    let start = Instant::now();
    loop {
        let mut families = HashMap::new();
        for (_, name) in recorded::families(&policy("", "").spec) {
            let (family, _) = source.family(&name, Duration::ZERO).await?;
            families.insert(name, family);
        }
        let waiting = items
            .iter()
            .filter(|(ns, name)| {
                // Coverage too: its first appearance changes every status once.
                let read = recorded::readings(&policy(ns, name).spec, ns, name, &families);
                !recorded::complete(&read)
                    || read.iter().any(|o| !o.readings.contains_key(COVERAGE))
            })
            .count();
        if waiting == 0 {
            return Ok(start.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "{waiting} of {} policies still lack recorded series after {limit:?}",
            items.len()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// One run with `n` services: the table's column.
async fn run(n: usize, binary: &str) -> anyhow::Result<Vec<(String, String)>> {
    let setup = Instant::now();
    let cp = ControlPlane::start().await?;
    let client = cp.client()?;
    cp.install_crds(&client, &guardrails::api::crds()).await?;
    let items = names(n);
    let dir = tempfile::tempdir()?;
    let mut groups = Vec::new();
    for (ns, name) in &items {
        groups.extend(
            rules::rules(&policy(ns, name))
                .map_err(anyhow::Error::msg)?
                .groups,
        );
    }
    let rule_file = dir.path().join("slo.rules.yaml");
    std::fs::write(
        &rule_file,
        serde_yaml::to_string(&rules::RuleFile { groups })?,
    )?;
    let sim = Simulator::start(client.clone(), None).await?;
    let prom = Prometheus::start(PrometheusConfig {
        scrape_interval: Some("5s".into()),
        targets: vec![("sim".into(), sim.addr().to_string())],
        extra_config: Some(format!("rule_files:\n  - {}\n", rule_file.display())),
        ..Default::default()
    })
    .await?;
    for i in 0..NAMESPACES {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(format!("scale-{i}"));
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
    }
    create_all(&client, &items, |_, name| deployment(name)).await?;
    create_all(&client, &items, policy).await?;
    create_all(&client, &items, |_, name| rollout(name)).await?;
    let created = setup.elapsed().as_secs_f64();
    let available =
        |d: &Deployment| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1);
    let sim_start = Instant::now();
    let sim_ready = first_times(&client, sim_start, n, Duration::from_secs(600), available).await?;
    let sim_secs = sim_ready.last().copied().unwrap_or(0.0);
    println!(
        "  {n} services: objects created in {created:.0}s; the simulator made every Deployment available in {sim_secs:.1}s"
    );
    if fresh_start() {
        println!("  {n} services: the operator starts with the services (rules not yet evaluated)");
    } else {
        let waited = recorded_everywhere(&prom.url(), &items, Duration::from_secs(300)).await?;
        println!(
            "  {n} services: Prometheus recorded every policy's windows and coverage {waited:.0}s later; the operator starts"
        );
    }

    let port = free_port()?;
    let metrics = format!("127.0.0.1:{port}");
    let apiserver_pid = cp.pids()[1];
    let (for_first, for_evaluated, for_idle) = (
        listed::<GuardedRollout>(&client).await?,
        listed::<SloPolicy>(&client).await?,
        listed::<GuardedRollout>(&client).await?,
    );
    let (cold_cpu, cold_text) = (cpu_ticks(apiserver_pid), apiserver_metrics(&client).await?);
    // GUARDRAILS_SCALE_LOG=DIR keeps the operator's info log of each run there.
    let (log, level) = match std::env::var("GUARDRAILS_SCALE_LOG") {
        Ok(dir) => {
            let file = std::fs::File::create(format!("{dir}/operator-{n}.log"))?;
            (Stdio::from(file), "info")
        }
        Err(_) => (Stdio::null(), "warn"),
    };
    let child = Command::new(binary)
        .args(["run", "--prometheus-url", &prom.url()])
        .arg(format!("--metrics-addr={metrics}"))
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", level)
        .stdout(log)
        .spawn()?;
    let operator = KillOnDrop(child);
    let pid = operator.0.id();
    let start = Instant::now();
    let started = Timestamp::now();
    let limit = Duration::from_secs(150);
    let reconciled = |g: &GuardedRollout| {
        g.status
            .as_ref()
            .is_some_and(|s| s.observed_generation.is_some())
    };
    // How many first evaluations read recorded series alone.
    let first_recorded = std::sync::atomic::AtomicUsize::new(0);
    let evaluated = |p: &SloPolicy| {
        let status = p.status.as_ref();
        let done = status.is_some_and(|s| s.last_evaluation_time.is_some());
        if done && status.and_then(|s| s.source) == Some(IndicatorSource::Recorded) {
            first_recorded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        done
    };
    let idle = |g: &GuardedRollout| g.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle);
    // Watched side by side: each object's first time is when a watch event showed it.
    // The bench's own process runs the simulator and the watches that time each object.
    let pids = [
        apiserver_pid,
        cp.pids()[0],
        prom.pid().unwrap_or(0),
        pid,
        std::process::id(),
    ];
    let cold = Moment::take(&pids, &client, &prom).await;
    // Who had the two cores until every rollout had its first status.
    let first_window = async {
        let times = first_times_in(for_first, start, n, limit, reconciled).await;
        let load = Moment::take(&pids, &client, &prom).await.load_since(&cold);
        (times, load)
    };
    let ((first, first_load), evaluations, adopted) = tokio::join!(
        first_window,
        first_times_in(for_evaluated, start, n, limit, evaluated),
        first_times_in(for_idle, start, n, limit, idle),
    );
    let cold_start = apiserver_load(
        (cpu_ticks(apiserver_pid) - cold_cpu) as f64 / 100.0,
        &cold_text,
        &apiserver_metrics(&client).await?,
    );
    let first = first.map_err(|e| e.context("GuardedRollouts reconciled"))?;
    let first_load = first_load?;
    let evaluations = evaluations.map_err(|e| e.context("SloPolicies evaluated"))?;
    let adopted = match adopted {
        Ok(t) => t,
        Err(e) => {
            let grs = Api::<GuardedRollout>::all(client.clone())
                .list(&ListParams::default())
                .await?;
            if let Some(g) = grs.items.iter().find(|g| !idle(g)) {
                let ns = g.metadata.namespace.clone().unwrap_or_default();
                let name = g.metadata.name.clone().unwrap_or_default();
                let primary = Api::<Deployment>::namespaced(client.clone(), &ns)
                    .get_opt(&format!("{name}-primary"))
                    .await?;
                let status = primary
                    .as_ref()
                    .map(|p| (p.metadata.generation, p.status.clone()));
                let pods = sim.pods(&ns, &format!("{name}-primary"));
                if primary.is_some() && pods.is_empty() {
                    return Err(e.context(format!(
                        "the simulator is the bottleneck: {ns}/{name}-primary exists but has no simulated pod yet"
                    )));
                }
                println!("{ns}/{name}: primary {status:?}; simulated pods {pods:?}");
            }
            return Err(e.context("GuardedRollouts adopted"));
        }
    };
    // The same moments from the objects' own condition times (1 s resolution), which do
    // not depend on how soon a watch event reaches the bench.
    let rollouts = Api::<GuardedRollout>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let policies = Api::<SloPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let own = |conditions: Option<&Vec<Condition>>, ready_only: bool| {
        conditions?
            .iter()
            .filter(|c| !ready_only || (c.type_ == "Ready" && c.status == "True"))
            .map(|c| c.last_transition_time.0)
            .min()
    };
    let first_own = since(
        started,
        rollouts
            .iter()
            .map(|g| own(g.status.as_ref().map(|s| &s.conditions), false)),
    );
    let adopted_own = since(
        started,
        rollouts
            .iter()
            .map(|g| own(g.status.as_ref().map(|s| &s.conditions), true)),
    );
    let evaluated_own = since(
        started,
        policies
            .iter()
            .map(|p| own(p.status.as_ref().map(|s| &s.conditions), true)),
    );
    // Every policy's recording groups have evaluated (within two policy intervals), and
    // the next evaluation read them.
    let recorded =
        |p: &SloPolicy| p.status.as_ref().and_then(|s| s.source) == Some(IndicatorSource::Recorded);
    let policies = Api::<SloPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let says_source = policies
        .items
        .iter()
        .any(|p| p.status.as_ref().is_some_and(|s| s.source.is_some()));
    let recorded = if says_source {
        first_times(&client, start, n, Duration::from_secs(240), recorded)
            .await
            .map_or_else(
                |e| format!("not all: {e}"),
                |t| {
                    let first = first_recorded.load(std::sync::atomic::Ordering::Relaxed);
                    match first {
                        f if f == n => format!("all {n}, from the first evaluation"),
                        f => format!(
                            "{f} at the first evaluation; all within {:.0} s",
                            pct(&t, 1.0)
                        ),
                    }
                },
            )
    } else {
        "never (no status.source: reads no recorded series)".to_string()
    };
    // Adoption's last writes settle.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let policies_before = statuses::<SloPolicy>(&client).await?;
    let rollouts_before = statuses::<GuardedRollout>(&client).await?;
    let before = sample(pid, &metrics, &prom, &client).await?;
    tokio::time::sleep(IDLE).await;
    let after = sample(pid, &metrics, &prom, &client).await?;
    let idle_changes = [
        changed(
            "SloPolicies",
            &policies_before,
            &statuses::<SloPolicy>(&client).await?,
        ),
        changed(
            "GuardedRollouts",
            &rollouts_before,
            &statuses::<GuardedRollout>(&client).await?,
        ),
    ]
    .join("; ");
    let idle_secs = (after.taken - before.taken).as_secs_f64();
    let per_minute = |a: f64, b: f64| (b - a) * 60.0 / idle_secs;
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let idle_cpu =
        (after.cpu_ticks - before.cpu_ticks) as f64 / ticks_per_second / idle_secs * 100.0;

    // The wave: 100 targets change at once.
    let wave: Vec<&(String, String)> = items.iter().step_by((n / WAVE).max(1)).take(WAVE).collect();
    // Listed before the wave, so that the bench's own list of every rollout is not timed.
    let for_wave = listed::<GuardedRollout>(&client).await?;
    let before_wave = Moment::take(&pids, &client, &prom).await;
    let wave_start = Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}});
    let shipped: Vec<_> = stream::iter(&wave)
        .map(|(ns, name)| {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let patch = patch.clone();
            async move {
                api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let sent = wave_start.elapsed().as_secs_f64();
    for s in shipped {
        s?;
    }
    let waved: std::collections::HashSet<String> = wave
        .iter()
        .map(|(ns, name)| format!("{ns}/{name}"))
        .collect();
    let in_wave = |g: &GuardedRollout| {
        let ns = g.metadata.namespace.as_deref().unwrap_or_default();
        let name = g.metadata.name.as_deref().unwrap_or_default();
        waved.contains(&format!("{ns}/{name}"))
            && g.status.as_ref().and_then(|s| s.phase) == Some(Phase::Progressing)
    };
    let waved_times = first_times_in(
        for_wave,
        wave_start,
        wave.len(),
        Duration::from_secs(300),
        in_wave,
    )
    .await
    .map_err(|e| e.context("canaries Progressing"))?;
    let progressing = pct(&waved_times, 1.0);
    let wave_load = Moment::take(&pids, &client, &prom)
        .await
        .load_since(&before_wave)?;
    let end = sample(pid, &metrics, &prom, &client).await?;
    drop(operator);

    let mib = |k: u64| k as f64 / 1024.0;
    let reconcile = |c| per_minute(before.reconciles[c], after.reconciles[c]);
    let bottleneck = if pct(&adopted, 1.0) <= sim_secs * 1.2 {
        " (bound by the simulator's pods)"
    } else {
        ""
    };
    Ok(vec![
        (
            "operator RSS after idle (peak)".into(),
            format!(
                "{:.1} MiB ({:.1}); anonymous {:.1}, files {:.1}",
                mib(after.rss_kib),
                mib(end.peak_kib),
                mib(after.anon_kib),
                mib(after.file_kib)
            ),
        ),
        (
            "SloPolicies all evaluated after start (p50/p99)".into(),
            format!(
                "{:.1} s / {:.1} s; own times {:.0} s / {:.0} s",
                pct(&evaluations, 0.5),
                pct(&evaluations, 0.99),
                pct(&evaluated_own, 0.5),
                pct(&evaluated_own, 0.99)
            ),
        ),
        (
            "SloPolicies reading recorded series after start".into(),
            recorded,
        ),
        (
            "GuardedRollouts first reconciled after start (first/p50/p99/all)".into(),
            format!(
                "{:.1} s / {:.1} s / {:.1} s / {:.1} s; own times {:.0} s / {:.0} s",
                first.first().copied().unwrap_or(f64::INFINITY),
                pct(&first, 0.5),
                pct(&first, 0.99),
                pct(&first, 1.0),
                pct(&first_own, 0.99),
                pct(&first_own, 1.0)
            ),
        ),
        (
            "GuardedRollouts all adopted (Idle) after start".into(),
            format!(
                "{:.1} s{bottleneck}; own times {:.0} s",
                pct(&adopted, 1.0),
                pct(&adopted_own, 1.0)
            ),
        ),
        (
            "until every first status: CPU of each server; the apiserver's slowest request kinds"
                .into(),
            first_load,
        ),
        (
            "apiserver until all adopted (CPU; slowest request kinds)".into(),
            cold_start,
        ),
        (
            "API writes per minute, idle".into(),
            format!(
                "{:.0}{}",
                per_minute(before.writes, after.writes),
                writes_by_kind(&before.text, &after.text)
            ),
        ),
        ("statuses changed over the idle minute".into(), idle_changes),
        (
            "API reads (GET+LIST) per minute, idle".into(),
            format!("{:.0}", per_minute(before.api_reads, after.api_reads)),
        ),
        (
            "reconciles per minute, idle (rollouts / policies)".into(),
            format!(
                "{:.0} / {:.0}",
                reconcile("guardedrollout"),
                reconcile("slopolicy")
            ),
        ),
        (
            "Prometheus queries per minute, idle (operator count / Prometheus count)".into(),
            format!(
                "{:.0} / {:.0}",
                per_minute(before.operator_queries, after.operator_queries),
                per_minute(before.prometheus_queries, after.prometheus_queries)
            ),
        ),
        (
            "operator CPU, idle".into(),
            format!("{idle_cpu:.1}% of one core"),
        ),
        (
            format!("{WAVE} canaries started at once: all Progressing"),
            format!(
                "{progressing:.1} s (p50 {:.1} s; the bench's patches took {sent:.1} s)",
                pct(&waved_times, 0.5)
            ),
        ),
        (
            "during the wave: CPU of each server; the apiserver's slowest request kinds".into(),
            wave_load,
        ),
    ])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary =
        std::env::var("GUARDRAILS_BIN").unwrap_or_else(|_| "target/release/guardrails".into());
    anyhow::ensure!(
        std::path::Path::new(&binary).is_file(),
        "{binary} not found: build it first (make bench does)"
    );
    let sizes: Vec<usize> = std::env::var("GUARDRAILS_SCALE")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    println!(
        "scale: one operator, services in {NAMESPACES} namespaces (Deployment + SloPolicy + GuardedRollout each)"
    );
    let mut columns = Vec::new();
    let mut measured = Vec::new();
    for &n in &sizes {
        match run(n, &binary).await {
            Ok(column) => {
                columns.push(column);
                measured.push(n);
            }
            Err(e) => println!("  {n} services: not measured: {e:#}"),
        }
    }
    anyhow::ensure!(!columns.is_empty(), "no size measured");
    let sizes = measured;
    let header: Vec<String> = sizes.iter().map(|n| format!("{n} services")).collect();
    println!("| figure | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(sizes.len()));
    for (i, (figure, _)) in columns[0].iter().enumerate() {
        let cells: Vec<&str> = columns.iter().map(|c| c[i].1.as_str()).collect();
        println!("| {figure} | {} |", cells.join(" | "));
    }
    Ok(())
}

//! SLO math against a real Prometheus holding 28 days of backfilled history whose
//! answers are known in closed form, and the generated rules evaluated by Prometheus
//! itself.

use std::{
    collections::BTreeMap, fmt::Write as _, process::Command, sync::OnceLock, time::Duration,
};

use guardrails::{
    api::{Gate, IndicatorSource, Severity, SloPolicy},
    controller::slo_policy::{observe, observe_recorded, threshold_problem},
    prometheus::{MetricSource, PrometheusSource, Sources},
    slo::recorded::SeriesKey,
    slo::{self, rules},
};
use guardrails_sandbox::{Prometheus, PrometheusConfig};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

const RPS: f64 = 10.0;
const DAY: i64 = 1440; // minutes
const WINDOW: i64 = 28 * DAY;

/// Error ratio of the requests in the minute ending `m` minutes before the evaluation
/// time; None means no traffic.
type Profile = fn(m: i64) -> Option<f64>;

struct Scenario {
    name: &'static str,
    profile: Profile,
    latency: bool,
    /// Closed-form mean error ratio over the last `w` minutes.
    mean: fn(w: i64) -> Option<f64>,
    gate: Gate,
    firing: &'static [Severity],
}

/// Mean of a ratio that is `hi` over the last `recent` minutes and `lo` before.
fn mix(w: i64, recent: i64, hi: f64, lo: f64) -> f64 {
    let r = w.min(recent) as f64;
    (r * hi + (w as f64 - r) * lo) / w as f64
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "healthy",
            profile: |_| Some(0.0001),
            latency: false,
            mean: |_| Some(0.0001),
            gate: Gate::Open,
            firing: &[],
        },
        Scenario {
            name: "restricted",
            profile: |_| Some(0.0006),
            latency: false,
            mean: |_| Some(0.0006),
            gate: Gate::Restricted,
            firing: &[],
        },
        Scenario {
            name: "frozen",
            profile: |_| Some(0.0012),
            latency: false,
            mean: |_| Some(0.0012),
            gate: Gate::Frozen,
            firing: &[Severity::Ticket],
        },
        Scenario {
            name: "fast-burn",
            profile: |m| Some(if m < 60 { 0.02 } else { 0.0001 }),
            latency: false,
            mean: |w| Some(mix(w, 60, 0.02, 0.0001)),
            gate: Gate::Open,
            firing: &[Severity::Page],
        },
        Scenario {
            name: "slow-burn",
            profile: |m| Some(if m < 3 * DAY { 0.0015 } else { 0.0001 }),
            latency: false,
            mean: |w| Some(mix(w, 3 * DAY, 0.0015, 0.0001)),
            gate: Gate::Open,
            firing: &[Severity::Ticket],
        },
        Scenario {
            name: "idle",
            profile: |_| None,
            latency: false,
            mean: |_| None,
            gate: Gate::Open,
            firing: &[],
        },
        Scenario {
            name: "latency",
            profile: |_| Some(0.003),
            latency: true,
            mean: |_| Some(0.003),
            gate: Gate::Open,
            firing: &[],
        },
    ]
}

fn policy(s: &Scenario) -> SloPolicy {
    let indicator = if s.latency {
        format!(
            r#"{{latency: {{histogram: 'http_request_duration_seconds_bucket{{service="{}"}}', threshold: "0.3"}}}}"#,
            s.name
        )
    } else {
        format!(
            r#"{{ratio: {{errors: 'http_requests_total{{service="{0}",code="500"}}', total: 'http_requests_total{{service="{0}"}}'}}}}"#,
            s.name
        )
    };
    let target = if s.latency { 99.0 } else { 99.9 };
    serde_yaml::from_str(&format!(
        r#"
apiVersion: guardrails.dev/v1alpha1
kind: SloPolicy
metadata: {{name: {name}, namespace: portal}}
spec:
  interval: 10s
  objectives:
    - name: {objective}
      target: {target}
      indicator: {indicator}
"#,
        name = s.name,
        objective = if s.latency { "latency" } else { "availability" },
    ))
    .unwrap()
}

/// Fifty SloPolicies over the scenarios whose error ratio never changes (so every
/// window reads the same whenever it is evaluated), as a fleet sharing one Prometheus.
fn fleet() -> Vec<SloPolicy> {
    let steady: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| ["healthy", "restricted", "frozen", "latency"].contains(&s.name))
        .collect();
    (0..50)
        .map(|i| {
            let mut p = policy(&steady[i % steady.len()]);
            p.metadata.name = Some(format!("fleet-{i:02}"));
            p
        })
        .collect()
}

/// A policy of the fleet whose long windows' rules have not evaluated yet (their group
/// is not loaded): only its short windows are recorded.
fn short_only() -> SloPolicy {
    let mut p = fleet().swap_remove(0);
    p.metadata.name = Some("short-only".into());
    p
}

/// The rules of [`short_only`]: its long windows' group is left out, and its short
/// windows record twice their burn rate, so that what is read from them is told apart
/// from what the policy's own queries read.
fn short_only_rules(file: &mut rules::RuleFile) {
    file.groups.retain(|g| !g.name.ends_with("-long"));
    for rule in file.groups.iter_mut().flat_map(|g| &mut g.rules) {
        if rule.record.is_some() {
            rule.expr = format!("2 * ({})", rule.expr);
        }
    }
}

/// Sample times: one a minute over the last 7 hours (the short windows), one every
/// 30 minutes before that, back to 28 days and an hour. Every window boundary at `end`
/// falls on a sample, and the profiles change only on 30-minute boundaries.
fn sample_times(end: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = end - (WINDOW + 60) * 60;
    while t <= end {
        out.push(t);
        t += if end - t <= 7 * 3600 { 60 } else { 1800 };
    }
    out
}

/// OpenMetrics for every scenario, ending at `end` (unix seconds).
fn history(end: i64) -> String {
    let times = sample_times(end);
    let mut out = String::with_capacity(8 << 20);
    let scenarios = scenarios();
    // `share(m)`: fraction of the requests counted by the series in the interval that
    // ends `m` minutes before `end`.
    let series = |out: &mut String, name: &str, labels: String, share: &dyn Fn(i64) -> f64| {
        let mut value = 0.0;
        let mut prev = None;
        for &t in &times {
            if let Some(p) = prev {
                value += RPS * (t - p) as f64 * share((end - t) / 60);
            }
            prev = Some(t);
            let _ = writeln!(out, "{name}{{{labels}}} {value} {t}");
        }
    };
    out.push_str("# TYPE http_requests counter\n");
    for s in scenarios.iter().filter(|s| !s.latency) {
        let p = s.profile;
        series(
            &mut out,
            "http_requests_total",
            format!("service=\"{}\",code=\"200\"", s.name),
            &|m| p(m).map_or(0.0, |r| 1.0 - r),
        );
        series(
            &mut out,
            "http_requests_total",
            format!("service=\"{}\",code=\"500\"", s.name),
            &|m| p(m).unwrap_or(0.0),
        );
    }
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for s in scenarios.iter().filter(|s| s.latency) {
        let p = s.profile;
        for (le, share) in [("0.1", 0.5), ("0.3", -1.0), ("1", 0.9995), ("+Inf", 1.0)] {
            series(
                &mut out,
                "http_request_duration_seconds_bucket",
                format!("service=\"{}\",le=\"{le}\"", s.name),
                &|m| {
                    if share < 0.0 {
                        1.0 - p(m).unwrap_or(0.0)
                    } else {
                        share
                    }
                },
            );
        }
        series(
            &mut out,
            "http_request_duration_seconds_count",
            format!("service=\"{}\"", s.name),
            &|_| 1.0,
        );
        series(
            &mut out,
            "http_request_duration_seconds_sum",
            format!("service=\"{}\"", s.name),
            &|_| 0.1,
        );
    }
    out.push_str("# EOF\n");
    out
}

fn close(actual: f64, expected: f64, what: &str) {
    let rel = ((actual - expected) / expected).abs();
    assert!(
        rel <= 0.005,
        "{what}: got {actual}, expected {expected} (off by {:.3}%)",
        rel * 100.0
    );
}

fn minutes(window: &str) -> i64 {
    (window
        .parse::<guardrails::api::PromDuration>()
        .unwrap()
        .as_duration()
        .as_secs()
        / 60) as i64
}

async fn evaluate(
    source: &PrometheusSource,
    policy: &SloPolicy,
    at: Timestamp,
) -> guardrails::api::SloPolicyStatus {
    let indicators = slo::parse_all(&policy.spec.objectives).unwrap();
    let (observation, sent) = observe(source, &policy.spec, &indicators, at).await;
    assert_eq!(
        sent, 1,
        "one request for every objective and window, and coverage"
    );
    assert!(
        matches!(observation, slo::Observation::Read(_)),
        "{observation:?}"
    );
    slo::evaluate(
        &policy.spec,
        Some(1),
        &Default::default(),
        &observation,
        &Time(at),
    )
}

/// One Prometheus for the tests of this file: the backfilled history and the
/// generated rules of every scenario (evaluated every 2s instead of the policy's
/// interval, to keep the test short).
struct Shared {
    prom: Prometheus,
    end: i64,
    rule_files: Vec<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let end = evaluation_end();
            let dir = tempfile::tempdir().unwrap();
            let mut rule_files = Vec::new();
            for p in scenarios()
                .iter()
                .map(policy)
                .chain(fleet())
                .chain([short_only()])
            {
                let mut file = rules::rules(&p).unwrap();
                if p.metadata.name == short_only().metadata.name {
                    short_only_rules(&mut file);
                }
                for g in &mut file.groups {
                    g.interval = "2s".into();
                }
                let path = dir.path().join(format!(
                    "{}.rules.yaml",
                    p.metadata.name.as_deref().unwrap()
                ));
                std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
                rule_files.push(path);
            }
            let extra = format!(
                "rule_files:\n{}",
                rule_files
                    .iter()
                    .map(|f| format!("  - {}\n", f.display()))
                    .collect::<String>()
            );
            let prom = rt
                .block_on(Prometheus::start(PrometheusConfig {
                    backfill: Some(history(end)),
                    extra_config: Some(extra),
                    ..Default::default()
                }))
                .expect("Prometheus with backfilled history");
            Shared {
                prom,
                end,
                rule_files,
                _dir: dir,
            }
        })
        .join()
        .expect("starting the shared Prometheus")
    })
}

/// A minute boundary two minutes ago: the last sample of the history.
fn evaluation_end() -> i64 {
    let now = Timestamp::now().as_second();
    now - now % 60 - 120
}

#[tokio::test(flavor = "multi_thread")]
async fn budgets_burn_rates_and_gates_match_closed_forms() {
    let shared = shared();
    let source = PrometheusSource::new(&shared.prom.url()).unwrap();
    let at = Timestamp::from_second(shared.end).unwrap();
    for s in scenarios() {
        let policy = policy(&s);
        let status = evaluate(&source, &policy, at).await;
        let o = &status.objectives[0];
        let target = policy.spec.objectives[0].target;
        let ctx = |what: &str| format!("{}: {what}", s.name);
        match (s.mean)(WINDOW) {
            Some(ratio) => {
                close(o.sli.unwrap(), 100.0 * (1.0 - ratio), &ctx("sli"));
                let consumed = ratio / (1.0 - target / 100.0) * 100.0;
                close(
                    o.error_budget_consumed.unwrap(),
                    consumed,
                    &ctx("budget consumed"),
                );
                close(
                    o.error_budget_remaining.unwrap(),
                    100.0 - consumed,
                    &ctx("budget remaining"),
                );
                let coverage = o.coverage.unwrap_or_default();
                assert!(
                    coverage >= 99.0,
                    "{}: {coverage}",
                    ctx("28 days of data cover the window")
                );
            }
            None => {
                assert_eq!(o.sli, None, "{}", ctx("no traffic means no SLI"));
                assert!(
                    o.burn_rates.is_empty(),
                    "{}",
                    ctx("no burn rates without traffic")
                );
            }
        }
        for (window, rate) in &o.burn_rates {
            let expected = (s.mean)(minutes(window)).unwrap() / (1.0 - target / 100.0);
            close(*rate, expected, &ctx(&format!("burn rate {window}")));
        }
        if (s.mean)(WINDOW).is_some() {
            assert_eq!(
                o.burn_rates.len(),
                5,
                "{}",
                ctx("a burn rate for every tier window")
            );
        }
        assert_eq!(
            status.gate,
            Some(s.gate),
            "{}: {:?}",
            ctx("gate"),
            status.gate_reason
        );
        assert_eq!(o.firing_alerts, s.firing, "{}", ctx("firing tiers"));
    }
}

#[test]
fn every_example_as_a_prometheus_rule_passes_promtool() {
    let promtool = shared().prom.promtool().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let policies: Vec<_> = std::fs::read_dir(examples)
        .unwrap()
        .map(|e| e.unwrap().path().join("slopolicy.yaml"))
        .filter(|f| f.exists())
        .collect();
    assert!(!policies.is_empty());
    for file in &policies {
        let out = Command::new(env!("CARGO_BIN_EXE_guardrails"))
            .args(["rules", "--format", "prometheusrule", "-f"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let object: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
        assert_eq!(object["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(object["kind"], "PrometheusRule");
        let name = object["metadata"]["labels"]["guardrails.dev/slo-policy"].clone();
        assert_eq!(
            object["metadata"]["name"],
            format!("{}-slo", name.as_str().unwrap())
        );
        // Its groups are a rule file Prometheus accepts, the same as the plain format's.
        let groups = dir.path().join("groups.yaml");
        std::fs::write(&groups, serde_yaml::to_string(&object["spec"]).unwrap()).unwrap();
        let check = Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&groups)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let plain = Command::new(env!("CARGO_BIN_EXE_guardrails"))
            .args(["rules", "-f"])
            .arg(file)
            .output()
            .unwrap();
        let plain: serde_yaml::Value = serde_yaml::from_slice(&plain.stdout).unwrap();
        assert_eq!(object["spec"], plain, "{}", file.display());
    }
}

/// `guardrails rules -n NS` labels the rules of a policy file without a namespace for NS,
/// as `kubectl apply -n NS` places the policy (the operator reads its series by that
/// label); without it they are for `default`, and stderr says so; a file naming another
/// namespace is refused.
#[test]
fn rules_are_for_the_namespace_the_policy_is_applied_in() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/share-link/slopolicy.yaml");
    let rules = |args: &[&str], file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_guardrails"))
            .arg("rules")
            .args(args)
            .arg("-f")
            .arg(file)
            .output()
            .unwrap()
    };
    let namespaces = |out: &std::process::Output| {
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut found: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("slo_namespace: "))
            .map(str::to_string)
            .collect();
        found.sort();
        found.dedup();
        found
    };
    let placed = rules(&["-n", "portal"], &example);
    assert!(placed.status.success(), "{placed:?}");
    assert_eq!(namespaces(&placed), ["portal"]);
    assert!(placed.stderr.is_empty(), "{placed:?}");

    let unplaced = rules(&[], &example);
    assert!(unplaced.status.success(), "{unplaced:?}");
    assert_eq!(namespaces(&unplaced), ["default"]);
    assert!(
        String::from_utf8_lossy(&unplaced.stderr).contains("names no namespace"),
        "{unplaced:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("slopolicy.yaml");
    let text = std::fs::read_to_string(&example).unwrap();
    let text = text.replacen("metadata:\n", "metadata:\n  namespace: other\n", 1);
    assert!(text.contains("namespace: other"), "{text}");
    std::fs::write(&elsewhere, text).unwrap();
    let refused = rules(&["-n", "portal"], &elsewhere);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("names namespace other, not portal"),
        "{refused:?}"
    );
    assert_eq!(namespaces(&rules(&[], &elsewhere)), ["other"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_rules_pass_promtool_and_agree_with_the_controller() {
    let shared = shared();
    let policies: Vec<SloPolicy> = scenarios().iter().map(policy).collect();
    let check = Command::new(shared.prom.promtool())
        .arg("check")
        .arg("rules")
        .args(&shared.rule_files)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check rules: {}",
        String::from_utf8_lossy(&check.stdout)
    );

    let source = PrometheusSource::new(&shared.prom.url()).unwrap();
    let checked: Vec<&SloPolicy> = policies
        .iter()
        .filter(|p| p.metadata.name.as_deref() != Some("idle"))
        .collect();
    let selector = |p: &SloPolicy| {
        format!(
            "{{slo=\"{}\",objective=\"{}\"}}",
            p.metadata.name.as_deref().unwrap(),
            p.spec.objectives[0].name
        )
    };
    let stamp_of = |p: &SloPolicy| {
        format!(
            "timestamp({}{})",
            rules::burn_rate_record("1h"),
            selector(p)
        )
    };
    // Each group has evaluated at least once...
    let mut first = BTreeMap::new();
    for _ in 0..100 {
        for p in &checked {
            if let Some(t) = source.scalar(&stamp_of(p), Timestamp::now()).await.unwrap() {
                first.entry(p.metadata.name.clone().unwrap()).or_insert(t);
            }
        }
        if first.len() == checked.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        first.len(),
        checked.len(),
        "rules never evaluated: {first:?}"
    );
    // ...and twice more (every 2s), so that the evaluation before the latest is complete
    // (alerts included) and is not the group's first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for p in checked {
        let name = p.metadata.name.as_deref().unwrap();
        let sel = selector(p);
        let latest = source
            .scalar(&stamp_of(p), Timestamp::now())
            .await
            .unwrap()
            .unwrap();
        let before_latest =
            Timestamp::from_millisecond((latest * 1000.0).round() as i64 - 1).unwrap();
        let stamp = source
            .scalar(&stamp_of(p), before_latest)
            .await
            .unwrap()
            .unwrap();
        assert!(stamp > first[name], "{name}: no complete later evaluation");
        let at = Timestamp::from_millisecond((stamp * 1000.0).round() as i64).unwrap();
        let status = evaluate(&source, p, at).await;
        let o = &status.objectives[0];
        let mut from_rules = BTreeMap::new();
        for window in o.burn_rates.keys() {
            let record = format!("{}{sel}", rules::burn_rate_record(window));
            from_rules.insert(
                window.clone(),
                source.scalar(&record, at).await.unwrap().unwrap(),
            );
        }
        for (window, rate) in &o.burn_rates {
            close(
                *rate,
                from_rules[window],
                &format!("{name}: rule vs controller burn rate {window}"),
            );
        }
        let remaining = source
            .scalar(&format!("{}{sel}", rules::BUDGET_REMAINING_RECORD), at)
            .await
            .unwrap()
            .unwrap();
        close(
            o.error_budget_remaining.unwrap(),
            remaining,
            &format!("{name}: budget remaining"),
        );
        // The alerts Prometheus fires are the tiers the controller sees firing. ALERTS
        // is read as of now (the burn rates are steady and far from the thresholds).
        for severity in [Severity::Page, Severity::Ticket] {
            let sev = format!("{severity:?}").to_lowercase();
            let q =
                format!("count(ALERTS{{alertstate=\"firing\",slo=\"{name}\",severity=\"{sev}\"}})");
            let firing = source.scalar(&q, Timestamp::now()).await.unwrap().is_some();
            assert_eq!(
                firing,
                o.firing_alerts.contains(&severity),
                "{name}: {sev} alert in Prometheus vs controller at {at}; burn rates {:?}",
                o.burn_rates
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_thresholds_are_buckets_compared_as_numbers() {
    let shared = shared();
    // The operator's sources: every request also counts in its metric.
    let metrics = guardrails::telemetry::Metrics::default();
    let sources = Sources::new(Some(shared.prom.url()), metrics.prometheus_queries.clone());
    let source = sources.get(None).unwrap();
    let at = Timestamp::from_second(shared.end).unwrap();
    let s = scenarios().into_iter().find(|s| s.latency).unwrap();
    let mut p = policy(&s);
    let set = |p: &mut SloPolicy, t: &str| {
        p.spec.objectives[0]
            .indicator
            .latency
            .as_mut()
            .unwrap()
            .threshold = t.into();
    };
    let base = evaluate(&source, &p, at).await;
    assert!(base.objectives[0].sli.is_some());
    for same in ["0.30", "3e-1"] {
        set(&mut p, same);
        let status = evaluate(&source, &p, at).await;
        assert_eq!(
            status.objectives[0].sli, base.objectives[0].sli,
            "{same} is the 0.3 bucket"
        );
    }
    set(&mut p, "0.25");
    let indicators = slo::parse_all(&p.spec.objectives).unwrap();
    let (observation, _) = observe(&source, &p.spec, &indicators, at).await;
    let why = threshold_problem(&source, &p.spec, &observation, at)
        .await
        .expect("0.25 is no bucket");
    assert!(
        why.starts_with("spec.objectives[0].indicator.latency.threshold: 0.25 is not a bucket")
            && why.contains("nearest: 0.1 below, 0.3 above"),
        "{why}"
    );
    // A single query, as a rollout's analysis sends it.
    source.scalar("vector(1)", at).await.unwrap();
    // The policies' joined requests, the threshold check and the single query: all in
    // guardrails_prometheus_queries_total.
    assert_eq!(source.queries_sent(), 3 + 1 + 1 + 1);
    assert_eq!(metrics.prometheus_queries.get(), source.queries_sent());
}

/// One query per recorded family serves fifty SloPolicies, and reads what each
/// policy's own queries read (within 0.5%). A policy without recorded series (no rules
/// loaded, or rules of an earlier spec) is not served from them.
#[tokio::test(flavor = "multi_thread")]
async fn one_recorded_query_per_series_serves_fifty_policies_as_the_raw_queries_would() {
    let shared = shared();
    let fleet = fleet();
    let recorded = |source: PrometheusSource, p: SloPolicy| async move {
        let name = p.metadata.name.clone().unwrap();
        let max_age = Duration::from_secs(600);
        let indicators = slo::parse_all(&p.spec.objectives).unwrap();
        let at = Timestamp::now();
        let policy = ("portal", name.as_str());
        observe_recorded(&source, &p.spec, &indicators, policy, max_age, at).await
    };
    // Every group has evaluated once.
    guardrails_sandbox::wait::eventually("every policy recorded", Duration::from_secs(60), || {
        let (url, fleet) = (shared.prom.url(), fleet.clone());
        async move {
            let source = PrometheusSource::new(&url).unwrap();
            let mut missing = Vec::new();
            let half = short_only();
            let key = SeriesKey::of("portal", "short-only", &half.spec.objectives[0]);
            // (Its windows under an hour run out of backfilled samples minutes after
            // the history ends: recorded or not, they read no data by then.)
            for w in slo::windows(&half.spec)
                .iter()
                .filter(|w| (60..24 * 60).contains(&minutes(w)))
            {
                let record = rules::burn_rate_record(w);
                let family = source.family(&record, Duration::ZERO).await;
                if !family.is_ok_and(|(f, _)| f.contains_key(&key)) {
                    missing.push(format!("short-only {w}"));
                }
            }
            for p in fleet {
                let name = p.metadata.name.clone().unwrap();
                if recorded(source.clone(), p).await.1 != Some(IndicatorSource::Recorded) {
                    missing.push(name);
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing)
            }
        }
    })
    .await;

    let source = PrometheusSource::new(&shared.prom.url()).unwrap();
    let families = slo::recorded::families(&fleet[0].spec).len() as u64;
    let mut sent = 0;
    let mut read = Vec::new();
    for p in &fleet {
        let (observation, from, queries) = recorded(source.clone(), p.clone()).await;
        sent += queries;
        assert_eq!(from, Some(IndicatorSource::Recorded));
        read.push(readings(observation));
    }
    assert_eq!(
        sent, families,
        "one query per recorded family for all 50 policies"
    );
    assert_eq!(source.queries_sent(), families);

    let now = Timestamp::now();
    // A service without traffic is recorded too: no data in every window.
    let mut idle = scenarios()
        .into_iter()
        .find(|s| s.name == "idle")
        .map(|s| policy(&s))
        .unwrap();
    let (quiet, from, _) = recorded(source.clone(), idle.clone()).await;
    assert_eq!(
        from,
        Some(IndicatorSource::Recorded),
        "the idle policy's series are recorded"
    );
    let quiet = readings(quiet);
    let only_coverage = quiet[0]
        .iter()
        .all(|(k, v)| k == slo::COVERAGE || v.is_none());
    assert!(only_coverage, "{quiet:?}");
    let policies = fleet.iter().chain([&idle]);
    for (p, recorded) in policies.zip(read.into_iter().chain([quiet])) {
        let name = p.metadata.name.as_deref().unwrap();
        let indicators = slo::parse_all(&p.spec.objectives).unwrap();
        let (raw, _) = observe(&source, &p.spec, &indicators, now).await;
        let raw = readings(raw);
        assert_eq!(raw.len(), recorded.len());
        for (raw, recorded) in raw.iter().zip(&recorded) {
            assert_eq!(
                raw.keys().collect::<Vec<_>>(),
                recorded.keys().collect::<Vec<_>>()
            );
            for (window, value) in raw {
                let what = format!("{name} {window}: recorded vs raw");
                match (recorded[window], value) {
                    (Some(from_rules), Some(value)) => close(from_rules, *value, &what),
                    (from_rules, value) => assert_eq!(from_rules, *value, "{what}"),
                }
            }
        }
    }

    // A policy whose long windows are not recorded yet: one request of its own reads
    // them (and coverage); its short windows come from the families already read.
    let half = short_only();
    let (observation, from, sent) = recorded(source.clone(), half.clone()).await;
    assert_eq!((from, sent), (Some(IndicatorSource::Raw), 1));
    let half_read = readings(observation);
    let indicators = slo::parse_all(&half.spec.objectives).unwrap();
    let raw = readings(observe(&source, &half.spec, &indicators, now).await.0);
    assert_eq!(
        raw[0].keys().collect::<Vec<_>>(),
        half_read[0].keys().collect::<Vec<_>>()
    );
    // Windows under an hour are left out: the history's last samples may leave them
    // between the rules' evaluation and this read.
    let hour_or_more = |w: &&String| w.as_str() == slo::COVERAGE || minutes(w) >= 60;
    for (window, value) in raw[0].iter().filter(|(w, _)| hour_or_more(w)) {
        let recorded = window != slo::COVERAGE && minutes(window) < 24 * 60;
        let (expected, what) = match recorded {
            true => (
                value.map(|v| 2.0 * v),
                "twice the raw value, as its rule records",
            ),
            false => (*value, "its own query"),
        };
        let what = format!("short-only {window}: {what}");
        match (half_read[0][window], expected) {
            (Some(read), Some(expected)) if expected != 0.0 => close(read, expected, &what),
            (read, expected) => assert_eq!(read, expected, "{what}"),
        }
    }
    assert!(
        raw[0]["1h"].is_some_and(|v| v > 0.0),
        "the doubling shows: {raw:?}"
    );

    // No rules loaded for it: read raw, in one request.
    idle.metadata.name = Some("unrecorded".into());
    let (_, from, sent) = recorded(source.clone(), idle).await;
    assert_eq!(
        (from, sent),
        (Some(IndicatorSource::Raw), 1),
        "a policy without rules is read raw"
    );
    // A spec the rules were not generated from: its recorded series are not read.
    let mut changed = fleet[0].clone();
    changed.spec.objectives[0].target = 99.5;
    let (_, from, _) = recorded(source.clone(), changed).await;
    assert_eq!(
        from,
        Some(IndicatorSource::Raw),
        "rules of an earlier target are not read"
    );
}

/// The readings of an evaluation that read everything.
fn readings(observation: slo::Observation) -> Vec<slo::Readings> {
    match observation {
        slo::Observation::Read(r) => r,
        other => panic!("expected every reading: {other:?}"),
    }
}

/// A Prometheus that refuses any query loading more than 2,000 samples holds the same
/// history: the policy's heaviest query (coverage, a subquery over 28 days) is refused,
/// the short windows are not. The policy's one request for all is refused as a whole;
/// its windows are then read one by one, and only the heavy ones are lost. For a while
/// after, the policy's windows go one by one at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_prometheus_refuses_does_not_lose_the_others() {
    let shared = shared();
    let end = shared.end;
    let strict = Prometheus::start(PrometheusConfig {
        backfill: Some(history(end)),
        flags: vec!["--query.max-samples=2000".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let at = Timestamp::from_second(end).unwrap();
    let healthy = scenarios()
        .into_iter()
        .find(|s| s.name == "healthy")
        .unwrap();
    let policy = policy(&healthy);
    let indicators = slo::parse_all(&policy.spec.objectives).unwrap();
    let source = PrometheusSource::new(&strict.url()).unwrap();
    let (observation, sent) = observe(&source, &policy.spec, &indicators, at).await;
    assert_eq!(
        sent,
        1 + 7,
        "the refused request, then one per window and coverage"
    );
    let slo::Observation::Partial(readings, failed) = observation else {
        panic!("expected some windows read and some refused: {observation:?}");
    };
    let lost: Vec<&str> = failed.iter().map(|f| f.window.as_str()).collect();
    assert!(lost.contains(&slo::COVERAGE), "{failed:?}");
    assert!(
        failed.iter().all(|f| f.error.contains("too many samples")),
        "{failed:?}"
    );
    // What was read equals what the unrestricted Prometheus reads.
    let full = PrometheusSource::new(&shared.prom.url()).unwrap();
    let (all, _) = observe(&full, &policy.spec, &indicators, at).await;
    let slo::Observation::Read(all) = all else {
        panic!("{all:?}");
    };
    for window in ["5m", "1h"] {
        assert!(!lost.contains(&window), "{window} lost: {failed:?}");
        assert!(readings[0][window].is_some(), "{window} has data");
    }
    for (window, value) in &readings[0] {
        assert_eq!(*value, all[0][window], "{window}");
    }
    // The next evaluation does not ask for the refused request again.
    let (again, sent) = observe(&source, &policy.spec, &indicators, at).await;
    assert_eq!(sent, 7, "one per window and coverage");
    assert!(matches!(again, slo::Observation::Partial(..)), "{again:?}");
}

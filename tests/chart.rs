//! The Helm chart, with the real Helm engine (helm-python-sdk, installed by
//! `make test-env`): it lints clean, refuses unsafe values, grants exactly the rights of
//! deploy/rbac.yaml, its manifests are accepted by the apiserver, and the operator binary
//! runs with the arguments and environment the chart gives it.

mod common;

use std::{process::Command, time::Duration};

use common::{cluster, repo_path};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde::Deserialize;
use serde_json::{Value, json};

fn python() -> std::path::PathBuf {
    let py = guardrails_sandbox::cache_dir().join("helm-venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run `make test-env` (installs the Helm engine)",
        py.display()
    );
    py
}

/// Runs scripts/helm.py; Ok(stdout JSON) or Err(stderr).
fn helm(args: &[&str], values: &Value) -> Result<Value, String> {
    let chart = repo_path("charts/guardrails");
    let out = Command::new(python())
        .arg(repo_path("scripts/helm.py"))
        .arg(args[0])
        .arg(&chart)
        .arg(values.to_string())
        .args(&args[1..])
        .output()
        .expect("running scripts/helm.py");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("JSON from helm.py"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every object the chart renders (templates only; CRDs come from crds/).
fn render(values: &Value, namespace: &str) -> Result<Vec<Value>, String> {
    let files = helm(&["render", "guardrails", namespace], values)?;
    let mut docs = Vec::new();
    for (path, text) in files.as_object().unwrap() {
        if !path.ends_with(".yaml") {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(text.as_str().unwrap()) {
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    Ok(docs)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind}"))
}

fn defaults() -> Value {
    json!({"prometheusUrl": "http://prometheus.monitoring:9090"})
}

#[test]
fn lints_clean_and_refuses_unsafe_values() {
    let report = helm(&["lint"], &defaults()).unwrap();
    assert_eq!(report["errors"], json!([]), "{report}");
    let serious: Vec<&Value> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(0) >= 2)
        .collect();
    assert!(serious.is_empty(), "lint warnings: {serious:?}");

    let err = render(&json!({}), "ops").unwrap_err();
    assert!(err.contains("set prometheusUrl"), "{err}");
    let two_leaders =
        json!({"prometheusUrl": "http://p:9090", "leaderElection": {"enabled": false}});
    let err = render(&two_leaders, "ops").unwrap_err();
    assert!(err.contains("needs leaderElection.enabled"), "{err}");
    let single = json!({"prometheusUrl": "http://p:9090", "replicas": 1, "leaderElection": {"enabled": false}});
    let docs = render(&single, "ops").unwrap();
    let d = of_kind(&docs, "Deployment");
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    assert!(
        !docs.iter().any(|d| d["kind"] == "Role"),
        "no lease rights without election"
    );
}

/// The operator's metrics with one sample in every family (empty families are not
/// exported at all).
fn every_family() -> String {
    use guardrails::telemetry::*;
    let m = Metrics::default();
    let (ns, name): (Shared, Shared) = ("ns".into(), "app".into());
    let objective = ObjectiveLabels {
        namespace: ns.clone(),
        name: name.clone(),
        objective: "availability".into(),
    };
    m.budget_remaining.get_or_create(&objective).set(50.0);
    let window = BurnRateLabels {
        namespace: ns.clone(),
        name: name.clone(),
        objective: "availability".into(),
        window: "5m".into(),
    };
    m.burn_rate.get_or_create(&window).set(1.0);
    let gate = GateLabels {
        namespace: ns.clone(),
        name: name.clone(),
        gate: "Open",
    };
    m.gate.get_or_create(&gate).set(1);
    let reconcile = ReconcileLabels {
        controller: "rollout".into(),
        result: "ok".into(),
    };
    m.reconciles.get_or_create(&reconcile).inc();
    let controller = ControllerLabels {
        controller: "rollout".into(),
    };
    m.reconcile_seconds.get_or_create(&controller).observe(0.1);
    m.prometheus_queries.inc();
    m.wrote("status");
    m.notified("Sent");
    let phase = PhaseLabels {
        namespace: ns.clone(),
        name: name.clone(),
        phase: "Idle",
    };
    m.rollout_phase.get_or_create(&phase).set(1);
    let outcome = OutcomeLabels {
        namespace: ns.clone(),
        name: name.clone(),
        outcome: "Promoted",
    };
    m.rollout_outcomes.get_or_create(&outcome).inc();
    let rollout = RolloutLabels {
        namespace: ns,
        name,
    };
    m.canary_weight.get_or_create(&rollout).set(10);
    m.detect_seconds.get_or_create(&rollout).observe(10.0);
    m.recover_seconds.get_or_create(&rollout).observe(10.0);
    m.render()
}

/// Off by default; when enabled a ConfigMap for Grafana's sidecar whose every query parses
/// and names only metrics the operator exports.
#[test]
fn the_dashboard_reads_only_what_the_operator_exports() {
    let docs = render(&defaults(), "ops").unwrap();
    assert!(
        !docs.iter().any(|d| d["kind"] == "ConfigMap"),
        "off by default"
    );
    let mut values = defaults();
    values["grafanaDashboard"] = json!({"enabled": true});
    let docs = render(&values, "ops").unwrap();
    let cm = of_kind(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let text = cm["data"]["guardrails.json"]
        .as_str()
        .expect("the dashboard");
    let dashboard: Value = serde_json::from_str(text).expect("dashboard JSON");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 12, "{exprs:?}");
    let exported = every_family();
    let metric = regex_lite::Regex::new(r"guardrails_[a-z_]+").unwrap();
    for expr in exprs {
        // Grafana's variables, as Grafana fills them in.
        let concrete = expr
            .replace("$namespace", ".*")
            .replace("$__rate_interval", "5m")
            .replace("$__range", "6h");
        promql_parser::parser::parse(&concrete).unwrap_or_else(|e| panic!("{expr}: {e}"));
        for m in metric.find_iter(expr) {
            let family = m
                .as_str()
                .trim_end_matches("_bucket")
                .trim_end_matches("_total");
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "{expr}: {family} is not exported"
            );
        }
    }
}

#[test]
fn grants_exactly_the_documented_rights() {
    let docs = render(&defaults(), "ops").unwrap();
    let text = std::fs::read_to_string(repo_path("deploy/rbac.yaml")).unwrap();
    let documented: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    for kind in ["ClusterRole", "Role"] {
        assert_eq!(
            of_kind(&docs, kind)["rules"],
            of_kind(&documented, kind)["rules"],
            "{kind} rules of the chart and deploy/rbac.yaml"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_are_accepted_and_the_operator_runs_with_them() {
    let (cp, client, ns) = cluster("chart").await;
    let values = json!({"prometheusUrl": "http://127.0.0.1:1", "watchNamespace": ns});
    let docs = render(&values, &ns).unwrap();

    // kubectl validates against the apiserver's OpenAPI (unknown fields fail), then
    // creates every object.
    let yaml: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    let mut kubectl = tokio::process::Command::new("kubectl")
        .args(["create", "--validate=true", "-f", "-", "--kubeconfig"])
        .arg(cp.kubeconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    use tokio::io::AsyncWriteExt;
    kubectl
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .await
        .unwrap();
    let out = kubectl.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "kubectl create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = String::from_utf8_lossy(&out.stdout);
    for what in [
        "serviceaccount/",
        "clusterrole.rbac.authorization.k8s.io/",
        "role.rbac.authorization.k8s.io/",
        "deployment.apps/",
        "service/",
    ] {
        assert!(created.contains(what), "{what} in {created}");
    }

    // The binary accepts the chart's arguments and environment: it starts, serves
    // /readyz and takes the chart's Lease in the release namespace.
    let chart = ChartContainer::of(&docs);
    let port = guardrails_sandbox::free_port().unwrap();
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_guardrails"))
        .args(chart.args(port))
        .env("KUBECONFIG", cp.kubeconfig())
        .env("POD_NAME", "guardrails-abc12")
        .env("POD_NAMESPACE", &ns)
        .env("RUST_LOG", &chart.rust_log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let holder = chart
        .lease_taken(&client, &ns, || {
            operator.try_wait().unwrap().map(|s| s.to_string())
        })
        .await;
    assert!(holder.starts_with("guardrails-abc12-"), "{holder}");
    let ready = guardrails_sandbox::http::get(&format!("127.0.0.1:{port}"), "/readyz").await;
    assert_eq!(ready.map(|r| r.0), Some(200));
    operator.kill().await.unwrap();
}

/// The operator container of the chart's Deployment.
struct ChartContainer {
    args: Vec<String>,
    rust_log: String,
    lease: String,
}

impl ChartContainer {
    fn of(docs: &[Value]) -> Self {
        let container = &of_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let lease = args
            .iter()
            .find_map(|a| a.strip_prefix("--leader-election-lease="))
            .expect("the chart names the Lease")
            .to_string();
        let rust_log = container["env"][0]["value"].as_str().unwrap_or("info");
        ChartContainer {
            args,
            rust_log: rust_log.to_string(),
            lease,
        }
    }

    /// The chart's arguments, with the metrics served on a loopback port.
    fn args(&self, port: u16) -> Vec<String> {
        self.args
            .iter()
            .map(|a| {
                if a.starts_with("--metrics-addr=") {
                    format!("--metrics-addr=127.0.0.1:{port}")
                } else {
                    a.clone()
                }
            })
            .collect()
    }

    /// The holder of the chart's Lease once taken; panics if `exited` says the operator
    /// ended first.
    async fn lease_taken(
        &self,
        client: &kube::Client,
        ns: &str,
        mut exited: impl FnMut() -> Option<String>,
    ) -> String {
        let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
        let took = "the operator took the chart's Lease";
        guardrails_sandbox::wait::eventually(took, Duration::from_secs(30), || {
            if let Some(status) = exited() {
                panic!("the operator exited with the chart's arguments: {status}");
            }
            async {
                let lease = leases.get_opt(&self.lease).await.unwrap();
                lease
                    .clone()
                    .and_then(|l| l.spec?.holder_identity)
                    .ok_or(lease)
            }
        })
        .await
    }
}

/// The image `scripts/image.sh` built (of the release build with `make image`, of the
/// tests' build with `make test`), run by podman as the chart would run it: as uid 65532 on
/// a read-only root, with the chart's arguments, it takes the Lease and answers /readyz.
#[tokio::test(flavor = "multi_thread")]
async fn the_image_runs_with_the_charts_arguments() {
    let archive = std::env::var("GUARDRAILS_IMAGE_ARCHIVE").map_or_else(
        |_| {
            repo_path(&format!(
                "target/image/guardrails-{}.oci.tar",
                env!("CARGO_PKG_VERSION")
            ))
        },
        std::path::PathBuf::from,
    );
    assert!(
        archive.is_file(),
        "{} missing: run `make image` (make test does)",
        archive.display()
    );
    let (cp, client, ns) = cluster("image").await;
    let values = json!({"prometheusUrl": "http://127.0.0.1:1", "watchNamespace": ns});
    let docs = render(&values, &ns).unwrap();
    let chart = ChartContainer::of(&docs);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::copy(cp.kubeconfig(), &kubeconfig).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();

    let port = guardrails_sandbox::free_port().unwrap();
    let container = Podman::run(
        &format!("guardrails-{ns}"),
        &[
            "--read-only".into(),
            "--network=host".into(),
            "--cap-drop=all".into(),
            "--security-opt=no-new-privileges".into(),
            format!(
                "--volume={}:/etc/guardrails/kubeconfig:ro",
                kubeconfig.display()
            ),
            "--env=KUBECONFIG=/etc/guardrails/kubeconfig".into(),
            "--env=POD_NAME=guardrails-img01".into(),
            format!("--env=POD_NAMESPACE={ns}"),
            format!("--env=RUST_LOG={}", chart.rust_log),
            format!("oci-archive:{}", archive.display()),
        ],
        &chart.args(port),
    );
    let holder = chart.lease_taken(&client, &ns, || container.exited()).await;
    assert!(holder.starts_with("guardrails-img01-"), "{holder}");
    let ready = guardrails_sandbox::http::get(&format!("127.0.0.1:{port}"), "/readyz").await;
    assert_eq!(ready.map(|r| r.0), Some(200));
    assert_eq!(container.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    let pid = container.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65532"; 4],
        "{uid}"
    );
}

/// A detached podman container (runc: crun fails on this kernel), removed when dropped.
struct Podman {
    name: String,
}

impl Podman {
    fn command() -> Command {
        let mut c = Command::new("podman");
        c.args(["--storage-driver=vfs", "--runtime=runc"]);
        c
    }

    fn run(name: &str, options: &[String], args: &[String]) -> Self {
        let out = Self::command()
            .args(["run", "--detach", "--replace", "--name", name])
            // Explicit limits: the defaults cannot be raised in this sandbox.
            .args(["--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096"])
            .args(options)
            .args(args)
            .output()
            .expect("podman (make test-env installs it)");
        assert!(
            out.status.success(),
            "podman run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Podman { name: name.into() }
    }

    fn inspect(&self, format: &str) -> String {
        let out = Self::command()
            .args(["inspect", "--format", format, &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The container's exit and its log, once it has exited.
    fn exited(&self) -> Option<String> {
        if self.inspect("{{.State.Running}}") == "true" {
            return None;
        }
        let logs = Self::command().args(["logs", &self.name]).output().unwrap();
        Some(format!(
            "{}: {}{}",
            self.inspect("{{.State.Status}} {{.State.ExitCode}}"),
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        ))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = Self::command().args(["rm", "--force", &self.name]).output();
    }
}

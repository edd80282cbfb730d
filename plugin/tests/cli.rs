//! `kubectl guardrails` against a real kube-apiserver. Statuses are written by the tests,
//! so each command's output can be checked against known values; actions run with
//! `--wait 0s` except in the story where the operator's controller answers them.

use std::{
    path::Path,
    process::{Output, Stdio},
    time::Duration,
};

use guardrails::api::{GuardedRollout, SloPolicy};
use guardrails_sandbox::{ControlPlane, RESTRICTED_USER};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-guardrails");

struct Env {
    cp: &'static ControlPlane,
    client: Client,
    ns: String,
}

async fn env(name: &str) -> Env {
    let (cp, client, ns) = ControlPlane::for_test(&guardrails::api::crds(), name).await;
    Env { cp, client, ns }
}

impl Env {
    fn rollouts(&self) -> Api<GuardedRollout> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Runs the plugin as the admin user in this namespace.
    async fn run(&self, args: &[&str]) -> Output {
        self.run_as(self.cp.kubeconfig(), args).await
    }

    async fn run_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        // No operator reads the annotations here, unless a test asks to wait for it.
        let wait: &[&str] = if args.contains(&"--wait") {
            &[]
        } else {
            &["--wait", "0s"]
        };
        tokio::process::Command::new(BIN)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-n", &self.ns])
            .args(wait)
            .args(args)
            .output()
            .await
            .expect("running kubectl-guardrails")
    }

    async fn rollout(&self, name: &str, status: Value) {
        let gr: GuardedRollout = serde_json::from_value(json!({
            "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
            "metadata": {"name": name},
            "spec": {
                "targetRef": {"name": name}, "sloPolicyRef": {"name": "share-link"},
                "steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}],
                "analysis": {"checks": [{"name": "error-rate", "query": "vector(0)", "max": 0.01}]}
            }
        }))
        .unwrap();
        self.rollouts()
            .create(&PostParams::default(), &gr)
            .await
            .unwrap();
        self.set_status(name, status).await;
    }

    async fn set_status(&self, name: &str, status: Value) {
        self.rollouts()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap();
    }

    async fn policy(&self, remaining: f64, firing: &[&str]) {
        let api: Api<SloPolicy> = Api::namespaced(self.client.clone(), &self.ns);
        let p: SloPolicy = serde_json::from_value(json!({
            "apiVersion": "guardrails.dev/v1alpha1", "kind": "SloPolicy",
            "metadata": {"name": "share-link"},
            "spec": {"objectives": [{"name": "availability", "target": 99.9, "indicator": {"ratio": {
                "errors": "http_requests_total{code=\"500\"}", "total": "http_requests_total"}}}]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &p).await.unwrap();
        let status = json!({"status": {
            "gate": if remaining <= 0.0 { "Frozen" } else { "Open" },
            "gateReason": "availability consumed some of its budget",
            "errorBudgetRemaining": remaining,
            "objectives": [{"name": "availability", "sli": 99.95, "errorBudgetConsumed": 100.0 - remaining,
                "errorBudgetRemaining": remaining, "burnRates": {"5m": 2.5}, "firingAlerts": firing}]
        }});
        api.patch_status("share-link", &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }

    async fn annotations(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        self.rollouts()
            .get(name)
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
    }

    /// Lets the restricted user read (not change) GuardedRollouts in this namespace.
    async fn grant_read(&self) {
        let role: Role = serde_json::from_value(json!({
            "metadata": {"name": "read-rollouts"},
            "rules": [{"apiGroups": ["guardrails.dev"], "resources": ["guardedrollouts", "slopolicies"],
                       "verbs": ["get", "list", "watch"]}]
        }))
        .unwrap();
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "read-rollouts"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-rollouts"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": RESTRICTED_USER}]
        }))
        .unwrap();
        Api::<Role>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        Api::<RoleBinding>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}: {}", o.status, stderr(o));
    stdout(o)
}

/// A failure is exactly one line on stderr, starting with "error: ", and exit 1.
#[track_caller]
fn one_line_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(o));
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(stdout(o).is_empty(), "nothing on stdout: {}", stdout(o));
    err
}

fn progressing() -> Value {
    json!({
        "phase": "Progressing", "currentStep": 1, "canaryWeight": 10,
        "message": "step 2/3: weight 10, 2 passing ticks", "replicas": 4,
        "stableRevision": "aaaa1111", "canaryRevision": "bbbb2222",
        "gate": {"state": "Open", "changeClass": "feature", "allowed": true},
        "analysis": {"consecutiveFailures": 0, "passingTicks": 2, "lastTickTime": "2026-11-27T10:00:00Z",
            "checks": [{"name": "error-rate", "value": 0.0042, "max": 0.01, "result": "Pass"}]},
        "history": [{"revision": "cccc3333", "changeClass": "feature", "outcome": "RolledBack",
            "startedAt": "2026-11-27T09:00:00Z", "detectedAt": "2026-11-27T09:00:14Z",
            "finishedAt": "2026-11-27T09:00:23Z", "reason": "error-rate 0.2 > 0.01 for 2 ticks"}]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn get_lists_rollouts_with_phase_weight_gate_and_budget() {
    let e = env("plugin-get").await;
    e.policy(62.5, &[]).await;
    e.rollout("share-link", progressing()).await;
    e.rollout("thumbs", json!({"phase": "Idle"})).await;

    let text = ok(&e.run(&["get"]).await);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("BUDGET LEFT"),
        "{text}"
    );
    for want in [
        "share-link",
        "Progressing",
        "10%",
        "2/3",
        "Open (feature)",
        "62.5%",
    ] {
        assert!(lines[1].contains(want), "{want} in {text}");
    }
    assert!(
        lines[2].contains("thumbs") && lines[2].contains("Idle"),
        "{text}"
    );

    let json: Value = serde_json::from_str(&ok(&e.run(&["get", "-o", "json"]).await)).unwrap();
    assert_eq!(json[0]["name"], "share-link");
    assert_eq!(json[0]["weight"], 10);
    assert_eq!(json[0]["step"], 2);
    assert_eq!(json[0]["budgetLeft"], 62.5);
    assert_eq!(json[1]["phase"], "Idle");

    let all = ok(&e.run(&["get", "-A"]).await);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(all.contains(&e.ns), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_steps_checks_and_history_with_detect_and_recover() {
    let e = env("plugin-status").await;
    e.policy(62.5, &[]).await;
    e.rollout("share-link", progressing()).await;

    let text = ok(&e.run(&["status", "share-link"]).await);
    for want in [
        "Progressing",
        "[x]  1  setWeight 10",
        "[>]  2  pause 1m",
        "[ ]  3  setWeight 50",
        "error-rate  0.0042",
        "Pass",
        "cccc3333",
        "RolledBack",
        "14s",
        "9s",
        "stable aaaa1111  canary bbbb2222",
        "SloPolicy share-link: 62.5% budget left",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    let json: Value =
        serde_json::from_str(&ok(&e.run(&["status", "share-link", "-o", "json"]).await)).unwrap();
    assert_eq!(json["history"][0]["detectSeconds"], 14.0);
    assert_eq!(json["history"][0]["recoverSeconds"], 9.0);
    assert_eq!(json["checks"][0]["value"], 0.0042);
    assert_eq!(json["stepsDetail"][1]["state"], "Current");
}

#[tokio::test(flavor = "multi_thread")]
async fn budget_shows_bars_and_firing_tiers() {
    let e = env("plugin-budget").await;
    e.policy(-20.0, &["page"]).await;
    let text = ok(&e.run(&["budget"]).await);
    let first = text.lines().nth(1).unwrap_or_default();
    assert!(
        first.starts_with("share-link ") && first.contains(" Frozen "),
        "{text}"
    );
    assert!(
        text.contains("[....................]  -20.0%  page"),
        "{text}"
    );
    assert!(text.contains("SLI 99.9500%; burn 5m 2.5"), "{text}");
    let json: Value =
        serde_json::from_str(&ok(&e.run(&["budget", "share-link", "-o", "json"]).await)).unwrap();
    assert_eq!(json[0]["gate"], "Frozen");
    assert_eq!(json[0]["firing"], json!(["page"]));
    assert_eq!(json[0]["objectives"][0]["budgetLeft"], -20.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_set_the_contract_annotations_and_spec_paused() {
    let e = env("plugin-actions").await;
    e.rollout("share-link", progressing()).await;

    let out = ok(&e.run(&["promote", "share-link"]).await);
    assert!(out.contains("promotion requested"), "{out}");
    assert_eq!(
        e.annotations("share-link").await["guardrails.dev/promote"],
        ""
    );

    ok(&e
        .run(&["abort", "share-link", "--reason", "bad build 42"])
        .await);
    assert_eq!(
        e.annotations("share-link").await["guardrails.dev/abort"],
        "bad build 42"
    );

    ok(&e.run(&["retry", "share-link"]).await);
    assert!(
        e.annotations("share-link")
            .await
            .contains_key("guardrails.dev/retry")
    );

    let out = ok(&e
        .run(&[
            "override-gate",
            "share-link",
            "--reason",
            "incident 7",
            "-o",
            "json",
        ])
        .await);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["action"], "override-gate");
    assert_eq!(
        e.annotations("share-link").await["guardrails.dev/override-gate"],
        "incident 7"
    );

    ok(&e.run(&["pause", "share-link"]).await);
    assert!(e.rollouts().get("share-link").await.unwrap().spec.paused);
    ok(&e.run(&["resume", "share-link"]).await);
    assert!(!e.rollouts().get("share-link").await.unwrap().spec.paused);

    // A reason is required and must say something.
    let o = e.run(&["override-gate", "share-link"]).await;
    assert!(!o.status.success());
    let err = one_line_error(
        &e.run(&["override-gate", "share-link", "--reason", " "])
            .await,
    );
    assert!(err.contains("--reason"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_names_give_one_line_and_a_non_zero_exit() {
    let e = env("plugin-names").await;
    let commands: &[&[&str]] = &[
        &["status", "nope"],
        &["watch", "nope"],
        &["promote", "nope"],
        &["abort", "nope"],
        &["retry", "nope"],
        &["pause", "nope"],
        &["resume", "nope"],
        &["override-gate", "nope", "--reason", "x"],
    ];
    for args in commands {
        let err = one_line_error(&e.run(args).await);
        assert_eq!(
            err.trim(),
            format!(
                "error: GuardedRollout \"nope\" not found in namespace \"{}\"",
                e.ns
            ),
            "{args:?}"
        );
    }
    let err = one_line_error(&e.run(&["budget", "nope"]).await);
    assert!(err.contains("SloPolicy \"nope\" not found"), "{err}");
    // An empty namespace is not an error.
    assert!(ok(&e.run(&["get"]).await).contains("No GuardedRollouts found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_permissions_give_one_line_and_a_non_zero_exit() {
    let e = env("plugin-rbac").await;
    e.rollout("share-link", progressing()).await;
    let restricted = e.cp.restricted_kubeconfig();

    let every_command: &[&[&str]] = &[
        &["get"],
        &["status", "share-link"],
        &["watch", "share-link"],
        &["budget"],
        &["budget", "share-link"],
        &["promote", "share-link"],
        &["abort", "share-link"],
        &["retry", "share-link"],
        &["pause", "share-link"],
        &["resume", "share-link"],
        &["override-gate", "share-link", "--reason", "x"],
    ];
    for args in every_command {
        let err = one_line_error(&e.run_as(&restricted, args).await);
        assert!(
            err.contains("forbidden") && err.contains(RESTRICTED_USER),
            "{args:?}: {err}"
        );
    }

    // Read-only: reading works, acting does not, and nothing changed.
    e.grant_read().await;
    let mut text = String::new();
    for _ in 0..20 {
        // RBAC takes a moment to see a new binding.
        let o = e.run_as(&restricted, &["status", "share-link"]).await;
        if o.status.success() {
            text = stdout(&o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(text.contains("Progressing"), "read access: {text}");
    for args in &every_command[5..] {
        let err = one_line_error(&e.run_as(&restricted, args).await);
        assert!(
            err.contains("forbidden") && err.contains("patch"),
            "{args:?}: {err}"
        );
    }
    let gr = e.rollouts().get("share-link").await.unwrap();
    assert!(
        gr.metadata.annotations.unwrap_or_default().is_empty(),
        "nothing changed"
    );
    assert!(!gr.spec.paused);
}

async fn spawn_watch(e: &Env, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .arg("--kubeconfig")
        .arg(e.cp.kubeconfig())
        .args(["-n", &e.ns, "watch"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_follows_until_succeeded_or_rolled_back() {
    let e = env("plugin-watch").await;
    e.rollout("good", progressing()).await;
    e.rollout("bad", progressing()).await;

    let good = spawn_watch(&e, &["good"]).await;
    let bad = spawn_watch(&e, &["bad"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut next = progressing();
    next["currentStep"] = json!(2);
    next["canaryWeight"] = json!(50);
    e.set_status("good", next).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    e.set_status(
        "good",
        json!({"phase": "Succeeded", "canaryWeight": 0, "message": "promoted bbbb2222",
               "stableRevision": "bbbb2222", "canaryRevision": null}),
    )
    .await;
    e.set_status(
        "bad",
        json!({"phase": "RolledBack", "canaryWeight": 0, "message": "error-rate 0.2 > 0.01",
               "failedRevision": "bbbb2222", "canaryRevision": null}),
    )
    .await;

    let good = tokio::time::timeout(Duration::from_secs(20), good.wait_with_output())
        .await
        .expect("watch ends")
        .unwrap();
    let text = ok(&good);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("Progressing step 2/3 weight 10%"),
        "{text}"
    );
    assert!(
        lines[1].contains("Progressing step 3/3 weight 50%"),
        "{text}"
    );
    assert!(lines[2].contains("Succeeded weight 0%"), "{text}");

    let bad = tokio::time::timeout(Duration::from_secs(20), bad.wait_with_output())
        .await
        .expect("watch ends")
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("RolledBack"), "{}", stdout(&bad));
    assert!(
        stderr(&bad).contains("rolled back: error-rate 0.2 > 0.01"),
        "{}",
        stderr(&bad)
    );

    // Nothing happens: the timeout ends the watch with exit 2.
    e.rollout("slow", progressing()).await;
    let o = e.run(&["watch", "slow", "--timeout", "2s"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not finished after 2s"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_report_what_the_operator_did_with_them() {
    use guardrails::{
        controller::{self, Context},
        telemetry::Metrics,
    };
    let e = env("plugin-answers").await;
    // The operator's controllers, in this process, for this namespace.
    let ctx = Context::new(e.client.clone(), None, Metrics::default());
    let operator = tokio::spawn(controller::run(ctx, Some(e.ns.clone()), 2));
    // Its target does not exist: nothing is in flight, so a promote is dropped.
    e.rollout("orphan", json!({})).await;
    let o = e.run(&["promote", "orphan", "--wait", "20s"]).await;
    operator.abort();
    let text = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "dropped: exit 1; {text} {}",
        stderr(&o)
    );
    assert!(
        text.contains(
            "the operator dropped it: guardrails.dev/promote dropped: no canary in flight"
        ),
        "{text}"
    );
    assert!(
        !e.annotations("orphan")
            .await
            .contains_key("guardrails.dev/promote")
    );
    // Nobody reads it: said so, exit 2.
    let o = e.run(&["retry", "orphan", "--wait", "1s"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("did not answer within 1s"),
        "{}",
        stdout(&o)
    );
}

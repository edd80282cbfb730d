//! Leader election against a real apiserver: one leader at a time, takeover after a
//! crash, immediate handover on a clean stop, and a leader that sees its lease taken
//! stops working.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::cluster;
use guardrails::leader::{Election, Lost};
use k8s_openapi::{api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::oneshot;

const LEASE: &str = "guardrails";
const DURATION: Duration = Duration::from_secs(3);

/// Marks a candidate as working while its work future is alive.
struct Working(Arc<AtomicBool>);

impl Drop for Working {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

struct Candidate {
    working: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), Lost>>,
}

fn candidate(api: &Api<Lease>, id: &str) -> Candidate {
    let election = Election::new(api.clone(), LEASE, id, DURATION);
    let working = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = oneshot::channel::<()>();
    let flag = working.clone();
    let task = tokio::spawn(async move {
        election
            .run(async move {
                flag.store(true, Ordering::SeqCst);
                let _guard = Working(flag);
                let _ = stopped.await;
            })
            .await
    });
    Candidate {
        working,
        stop: Some(stop),
        task,
    }
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get(LEASE).await.ok()?.spec?.holder_identity
}

async fn until(secs: u64, what: &str, mut ok: impl AsyncFnMut() -> bool) {
    for _ in 0..secs * 10 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {secs}s");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_with_takeover_handover_and_loss() {
    let (_cp, client, ns) = cluster("leader").await;
    let api: Api<Lease> = Api::namespaced(client, &ns);
    let a = candidate(&api, "a");
    let b = candidate(&api, "b");

    until(10, "a leader", async || {
        a.working.load(Ordering::SeqCst) || b.working.load(Ordering::SeqCst)
    })
    .await;
    // Several lease durations: never both, always the holder.
    for _ in 0..40 {
        let (wa, wb) = (
            a.working.load(Ordering::SeqCst),
            b.working.load(Ordering::SeqCst),
        );
        assert!(wa != wb, "exactly one works: a={wa} b={wb}");
        let expect = if wa { "a" } else { "b" };
        assert_eq!(holder(&api).await.as_deref(), Some(expect));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Make `a` the leader for the rest of the story, whichever won.
    let (mut leader, standby, standby_id) = if a.working.load(Ordering::SeqCst) {
        (a, b, "b")
    } else {
        (b, a, "a")
    };

    // Crash: the leader's task is gone without releasing; the standby takes over once
    // the lease expires.
    leader.task.abort();
    until(20, "takeover after the lease expired", async || {
        standby.working.load(Ordering::SeqCst)
    })
    .await;
    assert!(!leader.working.load(Ordering::SeqCst));
    assert_eq!(holder(&api).await.as_deref(), Some(standby_id));
    let transitions = api
        .get(LEASE)
        .await
        .unwrap()
        .spec
        .unwrap()
        .lease_transitions;

    // Clean stop: the lease is released and a new candidate leads without waiting for
    // the lease to expire (its first attempt finds no holder).
    let mut c = candidate(&api, "c");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !c.working.load(Ordering::SeqCst),
        "c waits while the lease is held"
    );
    let mut standby = standby;
    standby.stop.take().unwrap().send(()).unwrap();
    assert!(standby.task.await.unwrap().is_ok(), "work ended normally");
    until(3, "handover after release", async || {
        c.working.load(Ordering::SeqCst)
    })
    .await;
    let spec = api.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("c"));
    assert!(spec.lease_transitions > transitions);

    // Someone else takes the lease: c stops working and reports it.
    let patch = json!({"spec": {"holderIdentity": "intruder",
        "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
    api.patch(LEASE, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(10), &mut c.task)
        .await
        .expect("c notices within a renew interval")
        .unwrap();
    assert!(
        matches!(lost, Err(Lost::TakenBy(_, ref h)) if h == "intruder"),
        "{lost:?}"
    );
    assert!(!c.working.load(Ordering::SeqCst));
    drop(leader.stop.take());
}

/// Reconciles counted by an operator process, from its /metrics.
async fn reconciles(port: u16) -> f64 {
    let Some((200, body)) =
        guardrails_sandbox::http::get(&format!("127.0.0.1:{port}"), "/metrics").await
    else {
        return -1.0;
    };
    body.lines()
        .filter(|l| l.starts_with("guardrails_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_operator_processes_one_reconciles_the_other_takes_over() {
    use guardrails::api::GuardedRollout;
    use kube::api::PostParams;
    let (cp, client, ns) = cluster("leader-bin").await;
    let target: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
    }))
    .unwrap();
    Api::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &target)
        .await
        .unwrap();
    let gr: GuardedRollout = serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": "app"},
        "spec": {"targetRef": {"name": "app"}, "steps": [{"setWeight": 50}]}
    }))
    .unwrap();
    let rollouts: Api<GuardedRollout> = Api::namespaced(client.clone(), &ns);
    rollouts.create(&PostParams::default(), &gr).await.unwrap();

    let start = |port: u16| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_guardrails"))
            .args(["run", "--namespace", &ns, "--leader-election"])
            .args([
                "--leader-election-namespace",
                &ns,
                "--leader-election-duration",
                "3s",
            ])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg("--prometheus-url=http://127.0.0.1:1")
            .env("KUBECONFIG", cp.kubeconfig())
            .env("HOSTNAME", "op")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let ports = [
        guardrails_sandbox::free_port().unwrap(),
        guardrails_sandbox::free_port().unwrap(),
    ];
    let mut procs = [start(ports[0]), start(ports[1])];
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    until(20, "a rollout reconciled", async || {
        rollouts
            .get("app")
            .await
            .is_ok_and(|g| g.status.is_some_and(|s| s.phase.is_some()))
    })
    .await;
    let first = holder(&leases).await.expect("a lease holder");
    let leader = procs
        .iter()
        .position(|p| first == format!("op-{}", p.id().unwrap()))
        .expect("the holder is one of the two processes");
    let standby = 1 - leader;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(reconciles(ports[leader]).await > 0.0);
    assert_eq!(
        reconciles(ports[standby]).await,
        0.0,
        "the standby reconciles nothing"
    );

    procs[leader].kill().await.unwrap();
    until(20, "the standby reconciles", async || {
        reconciles(ports[standby]).await > 0.0
    })
    .await;
    let standby_id = format!("op-{}", procs[standby].id().unwrap());
    assert_eq!(holder(&leases).await, Some(standby_id));
}

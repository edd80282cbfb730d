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

    // A stop while waiting for the lease ends a standby cleanly (the signal is listened
    // for from the start, not from leadership on).
    let port = guardrails_sandbox::free_port().unwrap();
    let mut third = start(port);
    until(20, "the third process serves its metrics", async || {
        reconciles(port).await >= 0.0
    })
    .await;
    let exit = stopped(&mut third, 10).await;
    assert!(exit.success(), "a standby stopped: {exit:?}");
    assert_eq!(
        reconciles(ports[leader]).await,
        -1.0,
        "the first leader is gone"
    );
    // The leader drains and gives its lease up on the way out.
    let exit = stopped(&mut procs[standby], 30).await;
    assert!(exit.success(), "the leader stopped: {exit:?}");
    assert_eq!(holder(&leases).await, None, "the lease was released");
}

/// Sends SIGTERM, as the kubelet does to stop a pod, and waits `within` seconds at most
/// for the process to exit.
async fn stopped(p: &mut tokio::process::Child, within: u64) -> std::process::ExitStatus {
    let pid = p.id().expect("still running") as libc::pid_t;
    // SAFETY: kill only sends a signal to the process we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let wait = tokio::time::timeout(Duration::from_secs(within), p.wait());
    wait.await.expect("exits after SIGTERM").unwrap()
}

/// A TCP proxy to the apiserver that forwards until frozen, then holds every connection
/// open without passing a byte on: a hung apiserver, a black-holed network.
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, f.clone()), pipe(sr, cw, f));
                });
            }
        });
        Proxy { port, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Frozen: what was read is held, forever.
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn config_map(name: &str) -> k8s_openapi::api::core::v1::ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_apiserver_makes_the_leader_step_down_before_its_lease_can_expire() {
    use guardrails::controller::clients::Clients;
    use kube::api::PostParams;
    let (cp, client, ns) = cluster("leader-hung").await;
    let upstream = cp.url().trim_start_matches("https://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let mut config = cp.config().clone();
    config.cluster_url = format!("https://127.0.0.1:{}", proxy.port).parse().unwrap();
    // No client timeouts here: the election bounds its renewals by itself.
    let leases: Api<Lease> = Api::namespaced(kube::Client::try_from(config.clone()).unwrap(), &ns);
    let duration = Duration::from_secs(6);
    let election = Election::new(leases, LEASE, "hung", duration);
    let leadership = election.leadership();
    let guarded = Clients::new(config, Some(&leadership)).unwrap().calls;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(guarded, &ns);
    let task = tokio::spawn(async move { election.run(std::future::pending::<()>()).await });
    let direct: Api<Lease> = Api::namespaced(client.clone(), &ns);
    until(10, "leading", async || {
        holder(&direct).await.as_deref() == Some("hung") && leadership.valid()
    })
    .await;
    config_maps
        .create(&PostParams::default(), &config_map("while-leading"))
        .await
        .expect("a leader writes");

    proxy.freeze();
    // A standby may take over one lease duration after the last renewal, which was sent
    // before the freeze: the leader must have stepped down by then.
    let ended = tokio::time::timeout(duration, task)
        .await
        .expect("still leading a lease duration after the apiserver hung")
        .unwrap();
    assert!(matches!(ended, Err(Lost::NotRenewed(..))), "{ended:?}");
    assert!(!leadership.valid());
    let refused = config_maps
        .create(&PostParams::default(), &config_map("after"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not the leader"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_leader_writes_nothing_after_it_resumes() {
    use guardrails::api::GuardedRollout;
    use guardrails_sandbox::OPERATOR_USERS;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::PostParams;
    let (cp, client, ns) = cluster("leader-stop").await;
    // Rollouts whose targets change every 200 ms: the leader is always mid-reconcile.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns);
    let rollouts: Api<GuardedRollout> = Api::namespaced(client.clone(), &ns);
    const APPS: usize = 6;
    let create = async |name: String| {
        let target = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &target)
            .await
            .unwrap();
        let gr: GuardedRollout = serde_json::from_value(json!({
            "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
            "metadata": {"name": name},
            "spec": {"targetRef": {"name": name}, "steps": [{"setWeight": 50}, {"pause": {}}]}
        }))
        .unwrap();
        rollouts.create(&PostParams::default(), &gr).await.unwrap();
    };
    for i in 0..APPS {
        create(format!("app-{i}")).await;
    }
    let churn = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let patch = json!({"spec": {"template": {"metadata": {"annotations": {"n": n.to_string()}}}}});
                let name = format!("app-{}", n % APPS);
                let _ = deployments
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
                tokio::time::sleep(Duration::from_millis(200 / APPS as u64)).await;
            }
        })
    };
    let start = |user: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_guardrails"))
            .args(["run", "--namespace", &ns, "--leader-election"])
            .args(["--leader-election-namespace", &ns])
            .args(["--leader-election-duration", "3s"])
            .arg("--metrics-addr=127.0.0.1:0")
            .arg("--prometheus-url=http://127.0.0.1:1")
            .env("KUBECONFIG", cp.operator_kubeconfig(user))
            .env("HOSTNAME", user)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut procs = [start(OPERATOR_USERS[0]), start(OPERATOR_USERS[1])];
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let writes_by = |user: &str, after: Timestamp| {
        cp.audited_writes()
            .unwrap()
            .into_iter()
            .filter(|w| w.user.username == user && w.at() > after)
            .filter(|w| w.object_ref.as_ref().is_none_or(|r| r.resource != "leases"))
            .collect::<Vec<_>>()
    };
    let began = Timestamp::now();
    let mut leader = None;
    until(30, "a leader writing", async || {
        leader = holder(&leases)
            .await
            .and_then(|h| OPERATOR_USERS.iter().position(|u| h.starts_with(u)));
        leader.is_some_and(|l| !writes_by(OPERATOR_USERS[l], began).is_empty())
    })
    .await;
    let leader = leader.unwrap();
    let (user, standby) = (OPERATOR_USERS[leader], OPERATOR_USERS[1 - leader]);

    guardrails_sandbox::pause(procs[leader].id().unwrap(), true).unwrap();
    // Work only a new leader can do: a rollout created while the leader is stopped.
    create("app-late".to_string()).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let resumed = Timestamp::now();
    guardrails_sandbox::pause(procs[leader].id().unwrap(), false).unwrap();
    // It finds its leadership gone and exits, to come back as a candidate.
    let exited = tokio::time::timeout(Duration::from_secs(15), procs[leader].wait()).await;
    assert!(exited.is_ok(), "the resumed leader still runs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    churn.abort();

    let late: Vec<String> = writes_by(user, resumed)
        .iter()
        .map(|w| w.describe())
        .collect();
    assert!(
        late.is_empty(),
        "the paused leader wrote after it resumed: {late:#?}"
    );
    assert!(
        !writes_by(standby, began).is_empty(),
        "the standby took over and wrote"
    );
}

/// Without `--leader-election-namespace` or `$POD_NAMESPACE` the Lease lives in the
/// client's namespace (the kubeconfig context's here, the ServiceAccount's in a pod),
/// where the documented RBAC grants Lease rights, not in `default`.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_lease_namespace_the_lease_lives_in_the_clients_namespace() {
    let (cp, client, ns) = cluster("leader-ns").await;
    let text = std::fs::read_to_string(cp.kubeconfig()).unwrap();
    assert_eq!(
        text.matches("    namespace: default\n").count(),
        1,
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let context_ns = format!("    namespace: {ns}\n");
    std::fs::write(
        &kubeconfig,
        text.replace("    namespace: default\n", &context_ns),
    )
    .unwrap();
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_guardrails"))
        .args(["run", "--namespace", &ns, "--leader-election"])
        .arg("--metrics-addr=127.0.0.1:0")
        .arg("--prometheus-url=http://127.0.0.1:1")
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("POD_NAMESPACE")
        .env_remove("GUARDRAILS_LEADER_ELECTION_NAMESPACE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    until(20, "the Lease in the context's namespace", async || {
        holder(&leases).await.is_some()
    })
    .await;
    let in_default: Api<Lease> = Api::namespaced(client, "default");
    assert!(holder(&in_default).await.is_none());
    operator.kill().await.unwrap();
}

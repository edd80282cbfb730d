//! The soak: 20 GuardedRollouts delivered one revision after another (good and bad, replica
//! ratio and Gateway API, some paused by a person) by two operator replicas with leader
//! election, while a chaos loop kills the leader, stops it, takes Prometheus away and
//! restarts the apiserver. Invariants are checked all along and from the audit log.
//!
//! `make test` runs a short soak (about two minutes); `make soak` the long one (100 kills).
//! Knobs: GUARDRAILS_SOAK_KILLS (default 5), GUARDRAILS_SOAK_SECONDS (least chaos time,
//! default 60), GUARDRAILS_SOAK_SERVICES (default 20), GUARDRAILS_SOAK_SEED.

mod audit;
mod chaos;
mod cluster;
mod fleet;
mod ledger;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use guardrails::api::GuardedRollout;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};

use cluster::Cluster;
use fleet::Service;
use ledger::{Ledger, Rng};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_stay_right_through_kills_pauses_and_outages() {
    let seed = knob(
        "GUARDRAILS_SOAK_SEED",
        k8s_openapi::jiff::Timestamp::now().as_second() as u64,
    );
    eprintln!("soak seed {seed} (GUARDRAILS_SOAK_SEED replays it)");
    let mut rng = Rng::new(seed);
    let ledger = Ledger::new();
    let mut crds = guardrails::api::crds();
    crds.push(guardrails_sandbox::gateway::httproute_crd(&["v1"]));
    let mut cluster = Cluster::start(&crds).await.expect("servers start");
    let mut services = fleet::services(knob("GUARDRAILS_SOAK_SERVICES", 20) as usize);
    fleet::create(&cluster.client, &cluster.ns, &services)
        .await
        .expect("services created");
    all_settled(
        &cluster.client,
        &cluster.ns,
        Duration::from_secs(120),
        "adoption",
    )
    .await;

    let shipping = Arc::new(AtomicBool::new(true));
    let apps: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let view = View {
        client: cluster.client.clone(),
        sim: cluster.sim.clone(),
        ns: cluster.ns.clone(),
        apps: apps.clone(),
    };
    let people = tokio::spawn(deliver(
        cluster.client.clone(),
        cluster.ns.clone(),
        std::mem::take(&mut services),
        ledger.clone(),
        Rng::new(rng.next()),
        shipping.clone(),
    ));
    let watch = tokio::spawn(watch(view, ledger.clone()));
    let min = Duration::from_secs(knob("GUARDRAILS_SOAK_SECONDS", 60));
    let kills = knob("GUARDRAILS_SOAK_KILLS", 5) as u32;
    chaos::run(&mut cluster, &ledger, &mut rng, kills, min)
        .await
        .unwrap_or_else(|e| panic!("chaos: {e:#}\n{}", cluster.logs()));

    // Calm: no new revisions; every delivery under way must end as it deserves.
    shipping.store(false, Ordering::SeqCst);
    match tokio::time::timeout(Duration::from_secs(180), people).await {
        Ok(services) => final_state(&cluster, &services.expect("the people task"), &ledger).await,
        // Still reported with everything else below.
        Err(_) => ledger.violation("deliveries under way did not end within 180 s".into()),
    }
    watch.abort();
    for app in apps {
        let lost = cluster.sim.lost(&cluster.ns, &app);
        if lost > 0.0 {
            ledger.violation(format!("{app}: {lost} requests found no ready pod in all"));
        }
    }
    let mut writes = cluster.audit().expect("audit log");
    writes.sort_by_key(|w| w.at());
    for v in audit::one_writer_at_a_time(&writes) {
        ledger.violation(v);
    }
    let (replayed, broken) = audit::steps_in_order(&writes, fleet::STEPS);
    for v in broken {
        ledger.violation(v);
    }
    let report = ledger.report();
    eprintln!("{report}  status writes replayed {replayed}\n  seed {seed}");
    assert!(
        replayed > 100,
        "only {replayed} status writes in the audit log"
    );
    assert!(ledger.count("operator SIGKILL + restart") >= kills);
    let violations = ledger.violations();
    assert!(
        violations.is_empty(),
        "{report}\n{violations:#?}\n{}",
        cluster.logs()
    );
}

/// The people around the services, every second until nothing is under way and shipping
/// has stopped.
async fn deliver(
    client: Client,
    ns: String,
    mut services: Vec<Service>,
    ledger: Ledger,
    mut rng: Rng,
    shipping: Arc<AtomicBool>,
) -> Vec<Service> {
    loop {
        let open = shipping.load(Ordering::SeqCst);
        // An apiserver restart fails a pass; the next one goes on.
        let _ = fleet::pass(&client, &ns, &mut services, &ledger, &mut rng, open).await;
        if !open && services.iter().all(|s| s.shipped.is_none()) {
            return services;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What the watcher looks at.
struct View {
    client: Client,
    sim: Arc<guardrails_sandbox::Simulator>,
    ns: String,
    apps: Vec<String>,
}

/// Every second: requests that found no ready pod (there must be none), and primaries
/// running a bad revision (there must be none).
async fn watch(view: View, ledger: Ledger) {
    let mut lost_before = std::collections::HashMap::new();
    let mut bad_seen = std::collections::HashSet::new();
    let deployments: Api<Deployment> = Api::namespaced(view.client.clone(), &view.ns);
    loop {
        for app in &view.apps {
            let lost = view.sim.lost(&view.ns, app);
            if lost > lost_before.insert(app.clone(), lost).unwrap_or(0.0) {
                ledger.violation(format!("{app}: {lost} requests found no ready pod"));
            }
        }
        // An apiserver restart fails a look; the next one goes on.
        for d in deployments
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let name = d.metadata.name.clone().unwrap_or_default();
            let image = image_of(&d).0;
            if name.ends_with("-primary") && ledger.is_bad(&image) && bad_seen.insert(image.clone())
            {
                ledger.violation(format!("{name} runs the bad revision {image}"));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// (image, replicas) of a Deployment.
fn image_of(d: &Deployment) -> (String, i32) {
    let spec = d.spec.as_ref();
    let pod = spec.and_then(|s| s.template.spec.as_ref());
    let image = pod.and_then(|p| p.containers.first()?.image.clone());
    (
        image.unwrap_or_default(),
        spec.and_then(|s| s.replicas).unwrap_or(0),
    )
}

/// Waits until no rollout has a canary under way.
async fn all_settled(client: &Client, ns: &str, within: Duration, what: &str) {
    let rollouts: Api<GuardedRollout> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    loop {
        let list = rollouts
            .list(&Default::default())
            .await
            .expect("list rollouts");
        if !list.items.is_empty() && list.items.iter().all(fleet::settled) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{what}: not settled within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every primary runs the last revision promoted, and no canary is left serving.
async fn final_state(cluster: &Cluster, services: &[Service], ledger: &Ledger) {
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.ns);
    for s in services {
        let primary = deployments
            .get(&format!("{}-primary", s.name))
            .await
            .expect("primary");
        let canary = deployments
            .get(&format!("{}-canary", s.name))
            .await
            .expect("canary");
        let (running, _) = image_of(&primary);
        if running != s.stable {
            ledger.violation(format!(
                "{}: primary runs {running}, last promoted {}",
                s.name, s.stable
            ));
        }
        if image_of(&canary).1 != 0 {
            ledger.violation(format!(
                "{}: canary left at {:?}",
                s.name,
                image_of(&canary)
            ));
        }
    }
}

//! The long-lived driver: owns every server, plays the stories, prints the summary,
//! then waits for `down` (SIGTERM) and stops everything.

use std::process::ExitCode;

use anyhow::Result;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cluster::{Cluster, NAMESPACE, SERVICES},
    launch::{FAILED, READY},
    state::StateDir,
    stories::Stories,
    summary::{self, Summary},
    timeline::Timeline,
};

pub fn run(state: StateDir) -> Result<ExitCode> {
    std::fs::write(state.pid_file(), std::process::id().to_string())?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // A closed terminal must not end the demo.
        let mut hup = signal(SignalKind::hangup())?;
        let tl = Timeline::new();
        let played = tokio::select! {
            r = play(&state, &tl) => r,
            _ = term.recv() => return Ok(ExitCode::SUCCESS),
            _ = int.recv() => return Ok(ExitCode::SUCCESS),
        };
        let _cluster = match played {
            Ok(c) => c,
            Err(e) => {
                println!("{FAILED}: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {}
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn play(state: &StateDir, tl: &Timeline) -> Result<Cluster> {
    let cluster = Cluster::start(state, tl).await?;
    let stories = Stories::new(cluster.client.clone(), *tl);
    for (service, ..) in SERVICES {
        stories.adopted(service).await?;
    }
    let (a, b, c) = tokio::join!(
        stories.healthy_canary(),
        stories.bad_canary(),
        stories.frozen_budget()
    );
    let results: Vec<_> = a.into_iter().chain(b).chain(c).collect();
    let ok = results.iter().all(|r| r.ok());
    let summary = Summary {
        ok,
        stories: results,
        kubeconfig: state.kubeconfig().display().to_string(),
        prometheus: cluster.prometheus_url.clone(),
    };
    println!();
    println!("Summary");
    print!("{}", summary::table(&summary.stories));
    println!();
    let kc = state.kubeconfig();
    println!("The cluster stays up. Look around:");
    println!("  export KUBECONFIG={}", kc.display());
    println!("  kubectl get slo,gr,deploy -n {NAMESPACE}");
    println!("  export PATH=\"$PWD/target/debug:$PATH\"   # kubectl-guardrails");
    println!("  kubectl guardrails get");
    println!("  kubectl guardrails status asset-pipeline");
    println!("  kubectl guardrails budget");
    println!("  Prometheus: {}", cluster.prometheus_url);
    println!("  operator log: {}", state.operator_log().display());
    println!("Stop and remove everything: make demo-down");
    std::fs::write(state.summary(), serde_json::to_string_pretty(&summary)?)?;
    println!(
        "{READY}{}",
        if ok {
            ""
        } else {
            " (some stories did not end as expected)"
        }
    );
    Ok(cluster)
}

//! The chaos loop: at random moments, kill the leader, stop it, take Prometheus away or
//! restart the apiserver, until enough kills are done and the time is up.

use std::time::{Duration, Instant};

use anyhow::Result;
use guardrails_sandbox::pause;

use super::{
    cluster::{Cluster, LEASE},
    fleet::PROVIDER_TIMEOUT,
    ledger::{Ledger, Rng},
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    /// SIGKILL the leader (the standby when no one leads), restart it a moment later.
    Kill,
    /// SIGSTOP the leader for twice the lease duration, then SIGCONT.
    PauseLeader,
    /// Prometheus away for less than providerErrors.timeout.
    ShortOutage,
    /// Prometheus away for longer than providerErrors.timeout.
    LongOutage,
    /// kube-apiserver killed and started again.
    RestartApiserver,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Kill => "operator SIGKILL + restart",
            Action::PauseLeader => "leader SIGSTOP for 2x lease",
            Action::ShortOutage => "Prometheus away < timeout",
            Action::LongOutage => "Prometheus away > timeout",
            Action::RestartApiserver => "apiserver restart",
        }
    }

    /// Every kind once first (so even a short soak sees each), then at random, kills
    /// the most often.
    fn pick(n: usize, rng: &mut Rng) -> Self {
        const FIRST: [Action; 5] = [
            Action::Kill,
            Action::ShortOutage,
            Action::PauseLeader,
            Action::RestartApiserver,
            Action::LongOutage,
        ];
        if let Some(a) = FIRST.get(n) {
            return *a;
        }
        match rng.unit() {
            x if x < 0.6 => Action::Kill,
            x if x < 0.72 => Action::PauseLeader,
            x if x < 0.84 => Action::ShortOutage,
            x if x < 0.9 => Action::LongOutage,
            _ => Action::RestartApiserver,
        }
    }
}

/// Runs until at least `kills` kills are done and `min` has passed.
pub async fn run(
    cluster: &mut Cluster,
    ledger: &Ledger,
    rng: &mut Rng,
    kills: u32,
    min: Duration,
) -> Result<()> {
    let start = Instant::now();
    let mut n = 0;
    while ledger.count(Action::Kill.name()) < kills || start.elapsed() < min {
        tokio::time::sleep(rng.secs(2.0, 6.0)).await;
        revive(cluster, ledger)?;
        let action = Action::pick(n, rng);
        n += 1;
        act(cluster, ledger, rng, action).await?;
        ledger.chaos(action.name());
    }
    revive(cluster, ledger)
}

/// Replicas that exited (a lost lease) come back, as their ReplicaSet would bring them.
pub fn revive(cluster: &mut Cluster, ledger: &Ledger) -> Result<()> {
    for _ in 0..cluster.revive()? {
        ledger.chaos("replica exited + restarted");
    }
    Ok(())
}

async fn act(cluster: &mut Cluster, ledger: &Ledger, rng: &mut Rng, action: Action) -> Result<()> {
    match action {
        Action::Kill => {
            let victim = cluster.leader().await.unwrap_or(0);
            cluster.kill(victim);
            tokio::time::sleep(rng.secs(0.0, 2.0)).await;
            cluster.start_replica(victim)?;
        }
        Action::PauseLeader => {
            let Some(pid) = cluster.leader().await.and_then(|i| cluster.pid(i)) else {
                return Ok(());
            };
            pause(pid, true)?;
            tokio::time::sleep(2 * LEASE).await;
            pause(pid, false)?;
        }
        Action::ShortOutage | Action::LongOutage => {
            let away = if action == Action::LongOutage {
                ledger.long_outage_began();
                PROVIDER_TIMEOUT + Duration::from_secs(5)
            } else {
                PROVIDER_TIMEOUT / 3
            };
            cluster.prom.stop();
            tokio::time::sleep(away).await;
            cluster.prom.restart().await?;
            if action == Action::LongOutage {
                ledger.long_outage_ended();
            }
        }
        Action::RestartApiserver => cluster.cp.restart_apiserver().await?,
    }
    Ok(())
}

//! The servers of the soak: kube-apiserver + etcd (restartable), the realistic simulator,
//! Prometheus (stoppable) and two operator processes with leader election, each with its
//! own identity so the audit log names the replica behind every write.

use std::{process::Command, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use guardrails_sandbox::{
    ControlPlane, OPERATOR_USERS, Prometheus, PrometheusConfig, Server, free_port,
    simulator::Simulator,
};
use k8s_openapi::{
    api::coordination::v1::Lease,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, Client};

/// The lease duration the replicas run with; a paused leader is stopped for twice this.
pub const LEASE: Duration = Duration::from_secs(3);

pub struct Cluster {
    pub cp: ControlPlane,
    pub client: Client,
    pub ns: String,
    pub sim: Arc<Simulator>,
    pub prom: Prometheus,
    pub operators: Vec<Replica>,
}

/// One operator replica: a process that a Deployment would restart when it dies.
pub struct Replica {
    pub user: &'static str,
    server: Option<Server>,
}

impl Cluster {
    pub async fn start(crds: &[CustomResourceDefinition]) -> Result<Self> {
        let cp = ControlPlane::start().await?;
        let client = cp.client()?;
        cp.install_crds(&client, crds).await?;
        let ns = cp.namespace(&client, "soak").await?;
        let sim = Arc::new(Simulator::start(client.clone(), Some(&ns)).await?);
        let prom = Prometheus::start(PrometheusConfig {
            targets: vec![("sim".into(), sim.addr().to_string())],
            ..Default::default()
        })
        .await?;
        let operators = OPERATOR_USERS
            .iter()
            .map(|&user| Replica { user, server: None })
            .collect();
        let mut cluster = Self {
            cp,
            client,
            ns,
            sim,
            prom,
            operators,
        };
        for i in 0..cluster.operators.len() {
            cluster.start_replica(i)?;
        }
        Ok(cluster)
    }

    /// Starts replica `i` (again), as its own user.
    pub fn start_replica(&mut self, i: usize) -> Result<()> {
        let user = self.operators[i].user;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_guardrails"));
        cmd.args(["run", "--namespace", &self.ns, "--leader-election"])
            .args(["--leader-election-namespace", &self.ns])
            .arg(format!("--leader-election-duration={}s", LEASE.as_secs()))
            .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()?))
            .arg(format!("--prometheus-url={}", self.prom.url()))
            .env("KUBECONFIG", self.cp.operator_kubeconfig(user))
            .env("HOSTNAME", user)
            .env("RUST_LOG", "info");
        let log = self.cp.dir().join(format!("{user}.log"));
        self.operators[i].server = Some(Server::start(user, cmd, &log)?);
        Ok(())
    }

    /// SIGKILLs replica `i`; `start_replica` brings it back.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.operators[i].server.take() {
            s.kill();
        }
    }

    /// Restarts every replica that exited on its own (it lost its lease, say), as the
    /// Deployment's ReplicaSet would; how many.
    pub fn revive(&mut self) -> Result<u32> {
        let mut revived = 0;
        for i in 0..self.operators.len() {
            let dead = match self.operators[i].server.as_mut() {
                None => true,
                Some(s) => s.ensure_running().is_err(),
            };
            if dead {
                self.start_replica(i)?;
                revived += 1;
            }
        }
        Ok(revived)
    }

    /// The replica holding the Lease now, if any.
    pub async fn leader(&self) -> Option<usize> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.ns);
        let holder = leases.get("guardrails").await.ok()?.spec?.holder_identity?;
        self.operators.iter().position(|r| {
            r.server
                .as_ref()
                .is_some_and(|s| holder == format!("{}-{}", r.user, s.pid()))
        })
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.operators[i].server.as_ref().map(Server::pid)
    }

    /// The last lines of every replica's log, for a failure message.
    pub fn logs(&self) -> String {
        self.operators
            .iter()
            .filter_map(|r| r.server.as_ref())
            .map(|s| format!("--- {}\n{}", s.log_path().display(), s.log_tail(15)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn audit(&self) -> Result<Vec<guardrails_sandbox::audit::Write>> {
        self.cp.audited_writes().context("reading the audit log")
    }
}

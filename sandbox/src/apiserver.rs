//! etcd + kube-apiserver on loopback: a control plane without nodes.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{Binaries, Server, free_port, process::wait_until, workdir::new_workdir};

/// A running etcd + kube-apiserver pair, with a kubeconfig for an admin user.
pub struct ControlPlane {
    apiserver: Server,
    etcd: Server,
    bin: Binaries,
    kubeconfig: PathBuf,
    config: Config,
    url: String,
    ports: Vec<u16>,
    // Last field: removed after the servers are killed.
    dir: tempfile::TempDir,
}

const TOKEN: &str = "guardrails-sandbox-admin-token";
const USER_TOKEN: &str = "guardrails-sandbox-user-token";
/// A user the control plane knows but grants nothing: tests give it rights with RBAC.
pub const RESTRICTED_USER: &str = "sandbox-user";
/// Users with every right (system:masters), one per operator replica, so the audit log
/// attributes each write to the replica that made it.
pub const OPERATOR_USERS: [&str; 2] = ["operator-a", "operator-b"];

/// Waits (up to 60 s) until the apiserver's /readyz says ok.
async fn wait_ready(apiserver: &mut Server, config: &Config) -> Result<()> {
    let client = Client::try_from(config.clone())?;
    wait_until(apiserver, Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            client
                .request_text(req)
                .await
                .is_ok_and(|body| body.trim() == "ok")
        }
    })
    .await
}

/// etcd on loopback, without fsync (test data), once it reports healthy.
async fn start_etcd(bin: &Binaries, d: &Path, port: u16, peer_port: u16) -> Result<Server> {
    let url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = Command::new(&bin.etcd);
    etcd.args(["--name", "sandbox"])
        .arg(format!("--data-dir={}", d.join("etcd").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=sandbox={peer_url}"))
        .arg("--unsafe-no-fsync=true")
        .arg("--log-level=warn");
    let mut etcd = Server::start("etcd", etcd, &d.join("etcd.log"))?;
    let addr = format!("127.0.0.1:{port}");
    wait_until(&mut etcd, Duration::from_secs(20), || async {
        matches!(crate::http::get(&addr, "/health").await, Some((200, _)))
    })
    .await?;
    Ok(etcd)
}

/// The token file (admin, the restricted user, one token per operator replica), the
/// audit policy and the service-account key.
fn write_credentials(d: &Path) -> Result<()> {
    let mut tokens = format!(
        "{TOKEN},admin,admin,system:masters\n{USER_TOKEN},{RESTRICTED_USER},{RESTRICTED_USER}\n"
    );
    for user in OPERATOR_USERS {
        tokens.push_str(&format!(
            "{},{user},{user},system:masters\n",
            token_of(user)
        ));
    }
    std::fs::write(d.join("tokens.csv"), tokens)?;
    std::fs::write(d.join("audit-policy.yaml"), crate::audit::POLICY)?;
    let status = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(d.join("sa.key"))
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .context("running openssl to make the service-account key")?;
    if !status.success() {
        bail!("openssl genrsa failed: {status}");
    }
    Ok(())
}

fn apiserver_command(bin: &Binaries, d: &Path, etcd_url: &str, port: u16) -> Command {
    let file = |name: &str| d.join(name).display().to_string();
    let mut api = Command::new(&bin.kube_apiserver);
    api.arg(format!("--etcd-servers={etcd_url}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", file("certs")))
        .arg(format!("--token-auth-file={}", file("tokens.csv")))
        .arg("--authorization-mode=RBAC")
        .arg(format!("--audit-policy-file={}", file("audit-policy.yaml")))
        .arg(format!("--audit-log-path={}", file("audit.log")))
        // One file for a whole soak: tests replay it from the start.
        .arg("--audit-log-maxsize=4096")
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(format!("--service-account-key-file={}", file("sa.key")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            file("sa.key")
        ))
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--allow-privileged=true")
        .arg("--v=1");
    api
}

/// A kubeconfig per identity; the admin's path.
fn write_kubeconfigs(d: &Path, url: &str) -> Result<PathBuf> {
    let kubeconfig = d.join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_yaml(url, "admin", TOKEN))?;
    std::fs::write(
        d.join("kubeconfig-restricted"),
        kubeconfig_yaml(url, RESTRICTED_USER, USER_TOKEN),
    )?;
    for user in OPERATOR_USERS {
        std::fs::write(
            d.join(format!("kubeconfig-{user}")),
            kubeconfig_yaml(url, user, &token_of(user)),
        )?;
    }
    Ok(kubeconfig)
}

fn token_of(user: &str) -> String {
    format!("guardrails-sandbox-{user}-token")
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver on free loopback ports; returns once the apiserver
    /// reports ready.
    pub async fn start() -> Result<Self> {
        let bin = Binaries::locate()?;
        let dir = new_workdir("apiserver")?;
        let d = dir.path();
        let (etcd_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = start_etcd(&bin, d, etcd_port, peer_port).await?;
        write_credentials(d)?;
        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        let mut apiserver = Server::start(
            "kube-apiserver",
            apiserver_command(&bin, d, &etcd_url, port),
            &d.join("apiserver.log"),
        )?;
        let kubeconfig = write_kubeconfigs(d, &url)?;
        let config = config_from(&kubeconfig).await?;
        wait_ready(&mut apiserver, &config).await?;
        Ok(Self {
            apiserver,
            etcd,
            bin,
            kubeconfig,
            config,
            url,
            ports: vec![etcd_port, peer_port, port],
            dir,
        })
    }

    /// One control plane for the whole process (a test binary), started on first use with
    /// `crds` installed. Its servers stop when the process exits.
    pub fn shared(crds: &[CustomResourceDefinition]) -> Result<&'static ControlPlane> {
        static SHARED: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let crds = crds.to_vec();
                // Started on a thread of its own: callers may be inside a runtime.
                std::thread::spawn(move || -> Result<ControlPlane> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async {
                        let cp = Self::start().await?;
                        cp.install_crds(&cp.client()?, &crds).await?;
                        Ok(cp)
                    })
                })
                .join()
                .map_err(|_| "control plane start panicked".to_string())
                .and_then(|r| r.map_err(|e| format!("{e:#}")))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The shared control plane with `crds`, a new client and a new namespace named after
    /// `test`. Panics with the reason (e.g. "run `make test-env`") when the servers cannot
    /// start.
    pub async fn for_test(
        crds: &[CustomResourceDefinition],
        test: &str,
    ) -> (&'static ControlPlane, Client, String) {
        let cp = Self::shared(crds).unwrap_or_else(|e| panic!("control plane: {e:#}"));
        let client = cp.client().expect("client");
        let ns = cp.namespace(&client, test).await.expect("namespace");
        (cp, client, ns)
    }

    /// A new client. Clients are bound to the runtime they are made in, so each test
    /// makes its own.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config.clone())?)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Path of a kubeconfig for the admin user (for kubectl and the operator binary).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Path of a kubeconfig for [`RESTRICTED_USER`], who has no rights until RBAC
    /// grants some.
    pub fn restricted_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig-restricted")
    }

    /// Path of a kubeconfig for one of [`OPERATOR_USERS`].
    pub fn operator_kubeconfig(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("kubeconfig-{user}"))
    }

    /// The writes the apiserver received so far (its audit log), attributed to users.
    pub fn audited_writes(&self) -> Result<Vec<crate::audit::Write>> {
        crate::audit::writes(&self.dir.path().join("audit.log"))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process ids of etcd and kube-apiserver.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.etcd.pid(), self.apiserver.pid()]
    }

    /// Loopback ports the servers listen on (etcd client and peer, kube-apiserver).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Kills kube-apiserver (SIGKILL) and starts it again on the same port, certificates
    /// and etcd, as a control-plane upgrade or crash would; returns once it is ready.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.kill();
        let (etcd_port, port) = (self.ports[0], self.ports[2]);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let d = self.dir.path();
        self.apiserver = Server::start(
            "kube-apiserver",
            apiserver_command(&self.bin, d, &etcd_url, port),
            &d.join("apiserver.log"),
        )?;
        wait_ready(&mut self.apiserver, &self.config).await
    }

    /// Fails if either server has died.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.etcd.ensure_running()?;
        self.apiserver.ensure_running()
    }

    /// Creates a namespace named `<prefix>-<n>`, unique in this control plane.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> Result<String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// Installs (or replaces) CRDs and waits until they are served.
    ///
    /// Create/replace rather than server-side apply: kube-apiserver 1.20 refuses to apply
    /// fields it does not know (`x-kubernetes-validations`) but drops them on create.
    pub async fn install_crds(
        &self,
        client: &Client,
        crds: &[CustomResourceDefinition],
    ) -> Result<()> {
        let api = Api::<CustomResourceDefinition>::all(client.clone());
        for crd in crds {
            let name = crd.metadata.name.clone().context("CRD without a name")?;
            match api.get_opt(&name).await? {
                None => {
                    api.create(&PostParams::default(), crd).await?;
                }
                Some(existing) => {
                    let mut crd = crd.clone();
                    crd.metadata.resource_version = existing.metadata.resource_version;
                    api.replace(&name, &PostParams::default(), &crd).await?;
                }
            }
            let established = kube::runtime::wait::conditions::is_crd_established();
            tokio::time::timeout(
                Duration::from_secs(30),
                kube::runtime::wait::await_condition(api.clone(), &name, established),
            )
            .await
            .with_context(|| format!("CRD {name} not established after 30s"))??;
        }
        Ok(())
    }
}

async fn config_from(path: &Path) -> Result<Config> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

fn kubeconfig_yaml(url: &str, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: {url}
    insecure-skip-tls-verify: true
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: sandbox
  context:
    cluster: sandbox
    user: {user}
    namespace: default
current-context: sandbox
"
    )
}

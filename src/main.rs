//! The `guardrails` command.
#![deny(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, sync::atomic::Ordering};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use guardrails::{
    api::SloPolicy,
    controller::{
        self, Context,
        clients::{self, Clients},
    },
    leader::Election,
    slo::rules,
    telemetry::{self, Health, LogFormat, Metrics},
};
use kube::Api;

/// Guardrails: SLO error budgets in charge of canary delivery.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (KUBECONFIG,
    /// else in-cluster).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd {
        /// Write one file per CRD into this folder instead of printing.
        #[arg(long, conflicts_with = "markdown")]
        out_dir: Option<PathBuf>,
        /// Print the field reference (Markdown) instead of YAML.
        #[arg(long)]
        markdown: bool,
    },
    /// Print Prometheus recording and alerting rules for a SloPolicy.
    Rules {
        /// YAML file with one SloPolicy.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Namespace of a policy whose file names none, as `kubectl apply -n` places it:
        /// the rules select the policy's series by it (without either: "default").
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// `rules`: a Prometheus rule file; `prometheusrule`: the same groups in a
        /// prometheus-operator PrometheusRule.
        #[arg(long, value_enum, default_value_t = RulesFormat::Rules)]
        format: RulesFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RulesFormat {
    Rules,
    Prometheusrule,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Prometheus used when a resource names none.
    #[arg(long, env = "GUARDRAILS_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "GUARDRAILS_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "GUARDRAILS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(
        long,
        env = "GUARDRAILS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Reconciles run at once, per controller. Most of a reconcile's time is spent
    /// waiting on the apiserver, so a wave of canaries starts sooner with more at once.
    #[arg(long, env = "GUARDRAILS_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Reconcile only while holding a Lease, so several replicas can run.
    #[arg(long, env = "GUARDRAILS_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the client's namespace: the
    /// ServiceAccount's in a pod, the kubeconfig context's outside one).
    #[arg(long, env = "GUARDRAILS_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        env = "GUARDRAILS_LEADER_ELECTION_LEASE",
        default_value = "guardrails"
    )]
    leader_election_lease: String,
    /// Lease duration: how long a crashed leader blocks the others.
    #[arg(
        long,
        env = "GUARDRAILS_LEADER_ELECTION_DURATION",
        default_value = "15s"
    )]
    leader_election_duration: guardrails::api::PromDuration,
}

impl RunArgs {
    /// The election, when enabled. The identity is the pod name (or host name) and pid.
    fn election(&self, client: &kube::Client) -> Option<Election> {
        if !self.leader_election {
            return None;
        }
        let ns = self
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "guardrails".into());
        let identity = format!("{host}-{}", std::process::id());
        Some(Election::new(
            Api::namespaced(client.clone(), &ns),
            &self.leader_election_lease,
            &identity,
            self.leader_election_duration.as_duration(),
        ))
    }
}

fn main() -> anyhow::Result<()> {
    tune_malloc();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(command())
}

/// glibc's malloc, set for a long-running process that holds many small objects and
/// reads large responses now and then: one arena (per-thread arenas each kept pages that
/// held a few live objects) and a fixed 128 KiB mmap threshold (above it, a buffer goes
/// back to the system when freed; glibc otherwise raises the threshold after the first
/// large frees, and the large buffers of the first lists stay as holes in the heap).
/// Together they keep about 8 MiB less resident with 1,000 services. The environment's
/// MALLOC_ARENA_MAX and MALLOC_MMAP_THRESHOLD_ win. Called before any other thread.
#[allow(unsafe_code)]
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (env, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 128 * 1024),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only sets a parameter of the allocator; it has no
            // precondition on memory, and no other thread allocates yet.
            unsafe { libc::mallopt(param, value) };
        }
    }
}

async fn command() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Crd { markdown: true, .. } => {
            print!(
                "{}",
                guardrails::api::reference::markdown(&guardrails::api::crds())
            );
            Ok(())
        }
        Command::Crd { out_dir: None, .. } => {
            print!("{}", guardrails::api::crds_yaml());
            Ok(())
        }
        Command::Crd {
            out_dir: Some(dir), ..
        } => {
            std::fs::create_dir_all(&dir)?;
            for (name, yaml) in guardrails::api::crd_files() {
                std::fs::write(dir.join(name), yaml)?;
            }
            Ok(())
        }
        Command::Rules {
            file,
            namespace,
            format,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let mut policy: SloPolicy = serde_yaml::from_str(&text)
                .with_context(|| format!("{} is not a SloPolicy", file.display()))?;
            place(&mut policy, namespace, &file)?;
            let out = match format {
                RulesFormat::Rules => rules::rules(&policy).map(|r| serde_yaml::to_string(&r)),
                RulesFormat::Prometheusrule => {
                    rules::prometheus_rule(&policy).map(|r| serde_yaml::to_string(&r))
                }
            }
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            print!("{}", out?);
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_format);
    // Listened for from the start: a stop that comes as the lease is won still drains
    // the controllers and releases the lease, and one that comes before ends the
    // process cleanly.
    let terminated = controller::Terminated::on_signal();
    let config = kube::Config::infer()
        .await
        .context("reading the cluster configuration")?;
    let metrics = Metrics::default();
    let health = Health {
        metrics: metrics.clone(),
        ready: Default::default(),
    };
    let server = tokio::spawn(telemetry::serve(args.metrics_addr, health.clone()));
    // The election's Lease calls are never guarded; with an election, every other write
    // is refused once the renew deadline has passed.
    let election_client = clients::election_client(&config).context("connecting to the cluster")?;
    let election = args.election(&election_client);
    let leadership = election.as_ref().map(Election::leadership);
    let clients = Clients::new(config, leadership.as_ref()).context("connecting to the cluster")?;
    let ctx = Context::with_clients(&clients, args.prometheus_url.clone(), metrics);
    // Ready means up and connected; a standby replica is ready too, so rolling updates of
    // the operator's own Deployment do not wait for leadership.
    health.ready.store(true, Ordering::Relaxed);
    let namespace = args.namespace.clone();
    tracing::info!(
        namespace = namespace.as_deref().unwrap_or("*"),
        "guardrails running"
    );
    let stop = terminated.wait();
    let controllers = controller::run_until(
        ctx,
        namespace,
        args.concurrency,
        terminated,
        controller::DRAIN,
    );
    let work = async move {
        match election {
            None => {
                controllers.await;
                Ok(())
            }
            Some(e) => {
                tracing::info!(identity = e.identity(), "leader election on");
                match e.run_unless_stopped(controllers, stop).await {
                    Ok(Some(())) => Ok(()),
                    Ok(None) => {
                        tracing::info!("stopped while waiting for the lease");
                        Ok(())
                    }
                    Err(lost) => Err(anyhow::Error::from(lost)),
                }
            }
        }
    };
    tokio::select! {
        r = work => r.context("leadership lost: exiting so a standby can lead")?,
        r = server => r?.context("metrics server")?,
    }
    Ok(())
}

/// Puts a policy read from `file` into `namespace` (`-n`), as kubectl would: a file that
/// names another namespace is an error, and a policy in neither is in "default", which
/// is said on stderr since its rules would then select no other namespace's series.
fn place(
    policy: &mut SloPolicy,
    namespace: Option<String>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    match (policy.metadata.namespace.as_deref(), namespace) {
        (Some(own), Some(given)) if own != given => {
            anyhow::bail!("{} names namespace {own}, not {given}", file.display())
        }
        (None, Some(given)) => policy.metadata.namespace = Some(given),
        (None, None) => eprintln!(
            "{} names no namespace: the rules select the series of namespace default (give -n NAMESPACE)",
            file.display()
        ),
        _ => {}
    }
    Ok(())
}

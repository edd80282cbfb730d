//! Command line of `kubectl guardrails`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use guardrails::api::PromDuration;

/// Guardrails rollouts and error budgets from kubectl.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl guardrails",
    bin_name = "kubectl guardrails",
    version,
    about
)]
pub struct Cli {
    /// Namespace (default: the kubeconfig context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// List across all namespaces (get, budget).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "text")]
    pub output: Output,
    /// promote, abort, retry, override-gate: wait this long for the operator to say what
    /// it did with the action (exit 0 done, 1 dropped, 2 not read in time); 0s: do not
    /// wait.
    #[arg(long, global = true, default_value = "15s")]
    pub wait: PromDuration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List GuardedRollouts with phase, weight, step, gate and budget left.
    Get,
    /// Show one GuardedRollout: steps, checks with their values, history with time to
    /// detect and time to recover, conditions.
    Status { name: String },
    /// Follow one GuardedRollout, a line per change, until it is Succeeded (exit 0) or
    /// RolledBack or Stalled (exit 1).
    Watch {
        name: String,
        /// Give up after this long (exit 2), e.g. 10m.
        #[arg(long)]
        timeout: Option<PromDuration>,
    },
    /// Promote the canary now, skipping the remaining steps.
    Promote { name: String },
    /// Roll the canary back now.
    Abort {
        name: String,
        /// Recorded in the history and the Event.
        #[arg(long, default_value = "aborted with kubectl guardrails")]
        reason: String,
    },
    /// Retry the revision that was rolled back.
    Retry { name: String },
    /// Hold the steps (spec.paused=true); analysis and rollback go on.
    Pause { name: String },
    /// Continue the steps (spec.paused=false).
    Resume { name: String },
    /// Let the current revision through a Restricted or Frozen budget gate.
    OverrideGate {
        name: String,
        /// Why; recorded in status and as an Event.
        #[arg(long)]
        reason: String,
    },
    /// List SloPolicies with their gate, budget left, burn rates and firing tiers.
    Budget { name: Option<String> },
}

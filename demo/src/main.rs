//! `guardrails-demo`: `make demo` and `make demo-down`.
#![forbid(unsafe_code)]

mod cluster;
mod history;
mod launch;
mod serve;
mod state;
mod stories;
mod summary;
mod timeline;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use state::StateDir;

/// Guardrails on a local control plane: Prometheus, simulated services, the operator
/// and three canary stories.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the demo in the background, show its timeline until the stories end, and
    /// leave the cluster running.
    Up {
        /// Where the kubeconfig, logs and summary go (default $TMPDIR/guardrails-demo).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Stop everything `up` started and delete its state folder.
    Down {
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// The driver itself (started by `up`): servers, operator, stories, then wait for
    /// SIGTERM.
    Serve {
        #[arg(long)]
        state_dir: PathBuf,
    },
}

fn state(dir: Option<PathBuf>) -> StateDir {
    StateDir::new(dir.unwrap_or_else(StateDir::default_path))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Up { state_dir } => launch::up(&state(state_dir)).map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Cmd::Down { state_dir } => launch::down(&state(state_dir)).map(|()| ExitCode::SUCCESS),
        Cmd::Serve { state_dir } => serve::run(StateDir::new(state_dir)),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

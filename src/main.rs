//! The `guardrails` command.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// Guardrails: SLO error budgets in charge of canary delivery.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", guardrails::api::crds_yaml()),
    }
}

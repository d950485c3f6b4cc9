//! `kvip`: the virtual-IP daemon and its command line.

use clap::{Parser, Subcommand};

/// kvip announces Kubernetes virtual IPs from exactly one healthy node.
#[derive(Parser)]
#[command(name = "kvip", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (kube-vip manifests call it with `args: ["manager"]`).
    Manager,
    /// Print the version and build.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Manager => anyhow::bail!("manager: not implemented yet"),
        Command::Version => {
            println!("kvip {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

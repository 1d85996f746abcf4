//! `deckhand`: the node agent and the operator's command line.
//!
//! - `deckhand agent` runs the reconcile loop (under systemd, `Type=notify`).
//! - `deckhand role set|get` writes and reads role keys.
//! - `deckhand status` shows every node at a glance (`--json` for scripts).

mod agent;
mod cli;
mod config;
mod failpoint;
mod identity;
mod images;
mod local;
mod logging;
mod nodes;
mod planes;
mod preseed;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a configuration error (EX_CONFIG from sysexits.h);
/// `deckhand.service` has `RestartPreventExitStatus=78`, so systemd does not
/// restart an agent that cannot start until its config is fixed.
pub const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "deckhand",
    version,
    about = "Per-node agent that turns etcd role keys into etcd members and proxies, plane units and preseeded images, safely",
    long_about = "deckhand runs on every node of a cluster. Operators write each node's role into etcd \
(`deckhand role set NODE --etcd member|proxy --planes control,router`); the agent on that node turns \
the local etcd into a voting member or a grpc-proxy without ever costing the cluster its quorum, runs \
the systemd units of its planes (`deckhand plane set`: global units on every node of a plane, singleton \
units on exactly one, chosen by an etcd election and fenced by the node's lease), keeps their Docker \
images present (`deckhand preseed` does it once), and reports back (`deckhand status`).\n\nThe role, \
status, plane and config keys live under the key prefix (default /deckhand): see docs/keyspace.md."
)]
struct Cli {
    /// Agent config file; its directory's config.d/*.toml drop-ins are applied after it.
    #[arg(long, global = true, default_value = config::DEFAULT_CONFIG, env = "DECKHAND_CONFIG")]
    config: PathBuf,
    /// etcd client URLs for the CLI (comma-separated). Default: http://127.0.0.1:2379,
    /// then the config's endpoints; the first that answers is used.
    #[arg(long, global = true, value_delimiter = ',', env = "DECKHAND_ENDPOINTS")]
    endpoints: Vec<String>,
    /// Key prefix for the CLI. Default: the config's, else /deckhand.
    #[arg(long, global = true, env = "DECKHAND_PREFIX")]
    prefix: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent (normally started by deckhand.service).
    Agent,
    /// Read or write a node's role key.
    #[command(subcommand)]
    Role(cli::RoleCommand),
    /// Read or write a plane's config: its units and images.
    #[command(subcommand)]
    Plane(cli::PlaneCommand),
    /// Show every node: desired and applied role, etcd mode, leader, health, convergence.
    Status(cli::StatusArgs),
    // about and long help: on PreseedArgs.
    Preseed(preseed::PreseedArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(matches!(cli.command, Command::Agent));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deckhand: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Agent => {
            let settings = match config::load(&cli.config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("deckhand: {e:#}");
                    tracing::error!("configuration error: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match runtime.block_on(agent::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("deckhand agent: {e:#}");
                    tracing::error!("agent failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Role(cmd) => {
            cli::finish(runtime.block_on(cli::role(&cli.config, cli.endpoints, cli.prefix, cmd)))
        }
        Command::Plane(cmd) => {
            cli::finish(runtime.block_on(cli::plane(&cli.config, cli.endpoints, cli.prefix, cmd)))
        }
        Command::Status(args) => {
            cli::finish(runtime.block_on(cli::status(&cli.config, cli.endpoints, cli.prefix, args)))
        }
        Command::Preseed(args) => {
            runtime.block_on(preseed::run(&cli.config, cli.endpoints, cli.prefix, args))
        }
    }
}

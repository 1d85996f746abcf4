//! `deckhand`: parse the command line, set up logging and the runtime,
//! dispatch to the library, exit with the command's status
//! (`deckhand::exit`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::FromArgMatches as _;
use deckhand::cli::{
    Cli, Command, cluster, doctor, generate, member, node, pki, plane, role, status, tls as tls_cli,
};
use deckhand::exit::{self, Failure};
use deckhand::{agent, config, connect, logging, member_check, preseed, tls, tls_enable};

fn main() -> ExitCode {
    // The clap definition with each command's exit statuses in its --help.
    let cli =
        Cli::from_arg_matches(&generate::command().get_matches()).unwrap_or_else(|e| e.exit());
    logging::init(matches!(cli.command, Command::Agent));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deckhand: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let Cli {
        config: config_path,
        endpoints,
        cacert,
        cert,
        key,
        prefix,
        command,
    } = cli;
    let endpoints = connect::endpoints_or_env(endpoints, |k| std::env::var(k).ok());
    let tls_files = tls::CliFiles { cacert, cert, key }.or_env(|k| std::env::var(k).ok());
    // Errors print as `deckhand preseed: ...` / `deckhand agent: ...`.
    let label = match command {
        Command::Agent => "deckhand agent",
        Command::Preseed(_) => "deckhand preseed",
        Command::CheckMember(_) => "deckhand check-member",
        Command::Pki(_) => "deckhand pki",
        _ => "deckhand",
    };
    let target = || {
        connect::target(
            &config_path,
            endpoints.clone(),
            prefix.clone(),
            tls_files.clone(),
        )
    };
    let result: Result<(), Failure> = runtime.block_on(async {
        match command {
            Command::Agent => {
                let settings = config::load_for_agent(&config_path).map_err(|e| {
                    tracing::error!("configuration error: {e:#}");
                    Failure::config(e)
                })?;
                // `deckhand tls enable`: the stage this node applied, from
                // its state dir, for a config without `[tls]` of its own.
                let config_tls = settings.tls.is_some();
                let stage = if config_tls {
                    tls_enable::Stage::Https
                } else {
                    tls_enable::read_stage(std::path::Path::new(deckhand::paths::STATE_DIR))
                };
                let settings = tls_enable::apply(settings, stage);
                if deckhand::enroll::join::needed(&settings) {
                    deckhand::enroll::join::join(&settings).await.map_err(|e| {
                        tracing::error!("join failed: {e:#}");
                        Failure::failed(e)
                    })?;
                }
                let node_tls = settings
                    .tls
                    .as_ref()
                    .map(tls::load_node)
                    .transpose()
                    .map_err(|e| {
                        tracing::error!("configuration error: {e:#}");
                        Failure::config(e)
                    })?;
                let mut identity = deckhand::identity::detect(&settings)
                    .context("detecting this node's identity")
                    .map_err(|e| {
                        tracing::error!("agent failed: {e:#}");
                        Failure::failed(e)
                    })?;
                identity.tls = tls_enable::urls_are_https(config_tls, stage);
                if let Some(t) = &node_tls {
                    tls::check_node_identity(&t.node, &identity.name, identity.address).map_err(
                        |e| {
                            tracing::error!("configuration error: {e:#}");
                            Failure::config(e)
                        },
                    )?;
                }
                agent::run(settings, identity, node_tls, stage, config_tls)
                    .await
                    .map_err(|e| {
                        tracing::error!("agent failed: {e:#}");
                        Failure::failed(e)
                    })
            }
            Command::Pki(cmd) if cmd.is_online() => pki::online(target()?, cmd).await,
            Command::Pki(cmd) => pki::pki(cmd),
            Command::Tls(cmd) => tls_cli::tls(target()?, cmd).await,
            Command::Role(cmd) => role::role(target()?, cmd).await,
            Command::Plane(cmd) => plane::plane(target()?, cmd).await,
            Command::Member(cmd) => member::member(target()?, cmd).await,
            Command::Node(cmd) => node::node(target()?, cmd).await,
            Command::Cluster(cmd) => cluster::cluster(target()?, cmd).await,
            Command::Status(args) => Ok(status::status(target()?, args).await?),
            Command::Doctor(args) => doctor::doctor(target()?, args).await,
            Command::Preseed(args) => {
                preseed::run(&config_path, endpoints.clone(), prefix.clone(), args).await
            }
            Command::CheckMember(args) => member_check::run(&config_path, args).await,
            Command::Backup(cmd) => deckhand::cli::backup::backup(cmd, target).await,
            Command::Restore(args) => deckhand::cli::restore::restore(&config_path, args).await,
            Command::Completion(args) => generate::completion(&args),
            Command::Man(args) => generate::man(&args),
        }
    });
    exit::finish(label, result)
}

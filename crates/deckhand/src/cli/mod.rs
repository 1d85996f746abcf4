//! The command line: the `deckhand` parser and the operator commands
//! `role`, `plane`, `cluster`, `status`, `doctor`, `member`, `node`, `tls` and `pki` (`deckhand agent` is [`crate::agent`],
//! `deckhand preseed` is [`crate::preseed`]).

/// `print!` to stdout that ends the process quietly when the reader has
/// gone (`deckhand doctor | head -1`): Rust ignores SIGPIPE, so `print!`
/// would panic there ("failed printing to stdout: Broken pipe"). Exits 141,
/// the status a shell shows for a tool killed by SIGPIPE.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline, for `println!`.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod backup;
pub mod cluster;
pub mod doctor;
pub mod doctor_backup;
pub mod doctor_metrics;
pub mod generate;
pub mod member;
pub mod node;
pub mod pki;
pub mod plane;
pub mod restore;
pub mod role;
pub mod session;
pub mod status;
pub mod status_watch;
pub mod table;
pub mod tls;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::paths;

/// `deckhand`: its global options and subcommands.
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
status, plane and config keys live under the key prefix (default /deckhand): see docs/keyspace.md.\n\n\
Exit status: 0 success; 1 the command failed (etcd did not answer, a node did not converge in time); \
2 bad arguments (`deckhand doctor` also exits 2 for warnings only, printing its findings); 78 the agent config cannot be used (fix it, or give both --endpoints and --prefix)."
)]
pub struct Cli {
    /// Agent config file; its directory's config.d/*.toml drop-ins are applied after it.
    #[arg(long, global = true, default_value = paths::CONFIG_FILE, env = "DECKHAND_CONFIG")]
    pub config: PathBuf,
    /// etcd client URLs for the CLI (comma-separated), else DECKHAND_ENDPOINTS,
    /// else ETCDCTL_ENDPOINTS. Default: http://127.0.0.1:2379, then the
    /// config's endpoints; the first that answers is used. https:// URLs
    /// need --cacert, --cert and --key (or the agent config's [tls] files).
    #[arg(long, global = true, value_delimiter = ',', env = "DECKHAND_ENDPOINTS")]
    pub endpoints: Vec<String>,
    /// CA certificate (PEM) that signed the members' certificates, for
    /// https:// endpoints. Else ETCDCTL_CACERT, else the config's tls.ca_file.
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for https:// endpoints, e.g. an operator's
    /// (`deckhand pki issue --operator`). Else ETCDCTL_CERT, else the
    /// config's tls.cert_file.
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Key (PEM) of --cert. Else ETCDCTL_KEY, else the config's tls.key_file.
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Key prefix for the CLI. Default: the config's, else /deckhand.
    #[arg(long, global = true, env = "DECKHAND_PREFIX")]
    pub prefix: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `deckhand`'s subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the node agent (normally started by deckhand.service).
    Agent,
    /// Read or write a node's role key.
    #[command(subcommand)]
    Role(role::RoleCommand),
    /// Read or write a plane's config: its units and images.
    #[command(subcommand)]
    Plane(plane::PlaneCommand),
    /// Remove an etcd member (voter or learner) safely, under the membership lock.
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Forget a node that is gone for good: delete its keys.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Read or change the cluster config (`cluster get`, `cluster set KEY=VALUE...`).
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Turn TLS on for a running plaintext cluster (`tls enable`), node by node, keeping quorum.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Make the cluster CA and the certificates of static installs (offline; no etcd).
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Show every node: desired and applied role, etcd mode, leader, health, convergence, version.
    Status(status::StatusArgs),
    // about and long help: on PreseedArgs.
    Preseed(crate::preseed::PreseedArgs),
    // about and long help: on DoctorArgs.
    Doctor(doctor::DoctorArgs),
    /// The member unit's start check: exec etcd only if the data dir's
    /// member is the member the cluster knows (run by
    /// deckhand-etcd-member.service, not by hand).
    #[command(hide = true)]
    CheckMember(crate::member_check::CheckMemberArgs),
    /// Snapshots of etcd: take one now, list them, verify a file (docs/backup.md).
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    // about and long help: on RestoreArgs.
    Restore(restore::RestoreArgs),
    /// Print a shell completion script (bash, zsh, fish) on stdout.
    Completion(generate::CompletionArgs),
    /// Write a man page per command (deckhand.1, deckhand-role.1, ...) into a directory.
    Man(generate::ManArgs),
}

/// What [`out!`] and [`outln!`] do: write to stdout; a closed pipe ends
/// the process with status 141, any other error is ignored as `print!`
/// would not be.
#[doc(hidden)]
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(141);
    }
}

//! `deckhand pki init|issue|show`: the cluster CA and the certificates of
//! static installs, made offline on the operator's machine (no etcd).

use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::{ArgGroup, Subcommand};
use deckhand_pki::{
    CA_CERT_FILE, CA_DAYS, CA_DEFAULT_NAME, CA_KEY_FILE, CERT_MODE, Ca, CertInfo, Error, KEY_MODE,
    LEAF_DAYS, NODE_CERT_FILE, NODE_KEY_FILE, NODE_PKI_DIR, OPERATOR_CERT_FILE, OPERATOR_KEY_FILE,
    PROXY_CERT_FILE, PROXY_KEY_FILE, check_node_name, check_operator_name, utc_rfc3339,
    write_new_file,
};
use serde::Serialize;

use crate::exit::Failure;

/// `deckhand pki ...`
#[derive(Subcommand)]
pub enum PkiCommand {
    /// Make the cluster CA in DIR: DIR/ca.crt and DIR/ca.key.
    ///
    /// Makes DIR (mode 0700) if missing and writes a new certificate
    /// authority into it: ca.key (ECDSA P-256 private key, mode 0600) and
    /// ca.crt (its self-signed certificate, mode 0644; CA:TRUE, path length
    /// 0: it signs node, proxy and operator certificates only). Keep DIR on
    /// the operator's machine, offline and backed up: whoever holds ca.key
    /// can mint certificates etcd trusts. ca.crt is public; every node and
    /// client gets a copy.
    ///
    /// ECDSA P-256 with SHA-256, because etcd (Go's crypto/tls), rustls/ring
    /// (the agent, the CLI) and OpenSSL all support it and its keys and
    /// signatures are small and fast. Lifetime 10 years by default (as
    /// kubeadm's etcd CA). etcd never reloads its trusted CA file, so
    /// replacing the CA later needs a bundle of old and new CA and a rolling
    /// restart (not automated yet; see docs/pki.md).
    ///
    /// Refused, with nothing written, when DIR/ca.key or DIR/ca.crt exists.
    ///
    /// Example: deckhand pki init ./pki
    ///
    /// Exit status: 0 made; 1 refused (a CA exists) or a file error.
    #[command(verbatim_doc_comment)]
    Init {
        /// The CA directory.
        dir: PathBuf,
        /// Lifetime of the CA certificate, days.
        #[arg(long, default_value_t = CA_DAYS)]
        days: u32,
        /// The CA's common name.
        #[arg(long, default_value = CA_DEFAULT_NAME)]
        name: String,
    },
    /// Issue a node's or an operator's certificates from the CA in DIR.
    ///
    /// --node NAME --address ADDR writes DIR/nodes/NAME/:
    ///   ca.crt     the CA certificate: etcd's --trusted-ca-file and
    ///              --peer-trusted-ca-file, the agent's and the proxy's CA
    ///   node.crt   the node certificate, server and client (an etcd member
    ///   node.key   presents its server certificate as a client to its
    ///              peers): etcd's --cert-file/--key-file and
    ///              --peer-cert-file/--peer-key-file, and the agent's client
    ///              identity. CN node:NAME: the node's etcd user name once
    ///              auth is on. SANs: ADDR, 127.0.0.1, ::1, localhost, NAME
    ///              (etcd checks a peer's certificate against its address).
    ///   proxy.crt  the client certificate of the node's etcd grpc-proxy
    ///   proxy.key  towards the members (grpc-proxy --cert/--key). Its CN is
    ///              empty: etcd's grpc-proxy refuses to start with a CN.
    /// These are exactly the files a node installs into /etc/deckhand/pki/
    /// (the agent config's defaults): owner root, group etcd, certificates
    /// 0644, keys 0640 (the member unit runs as user etcd and reads
    /// node.key). NAME is the node's hostname (or the agent config's name);
    /// ADDR the address it advertises to its peers.
    ///
    /// --operator NAME writes DIR/operators/NAME/{ca.crt,operator.crt,
    /// operator.key}: a client certificate whose CN is NAME verbatim, the
    /// etcd user it acts as once auth is on (root for full rights). Use it
    /// with etcdctl --cacert ca.crt --cert operator.crt --key operator.key.
    ///
    /// Keys are ECDSA P-256, made fresh each time, written mode 0600.
    /// Certificates last 365 days by default (as kubeadm's). Agents renew
    /// their own through etcd once a third of the lifetime is left, when a
    /// node holding the CA key runs the signer (docs/pki.md); otherwise
    /// reissue with --renew before they expire (`deckhand pki show` prints
    /// the days left) and install the new files; etcd reloads leaf
    /// certificates on new connections.
    ///
    /// Existing files are not overwritten: the command is refused unless
    /// --renew, which moves each existing file aside to FILE.old-<UTC time>
    /// (never deleted) and writes new ones. Refused, with nothing written:
    /// an address that is not an IP address, a NAME that is not a hostname
    /// (node) or user name (operator), no CA in DIR, both or neither of
    /// --node and --operator.
    ///
    /// Examples:
    ///   deckhand pki issue --node node1 --address 10.0.0.11 ./pki
    ///   deckhand pki issue --operator root ./pki
    ///
    /// Exit status: 0 issued; 1 refused (files exist) or a file error;
    /// 2 bad arguments or no CA in DIR.
    #[command(verbatim_doc_comment)]
    #[command(group(ArgGroup::new("kind").required(true).args(["node", "operator"])))]
    Issue {
        /// The CA directory (from `deckhand pki init`).
        dir: PathBuf,
        /// Issue a node's certificates (node and proxy) for this node name.
        #[arg(long, value_name = "NAME", requires = "address")]
        node: Option<String>,
        /// The node's address (an IP address): its certificates' IP SAN.
        #[arg(long, value_name = "ADDR", conflicts_with = "operator")]
        address: Option<IpAddr>,
        /// Issue an operator's client certificate with this CN (etcd user).
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
        /// Lifetime of the certificates, days (never past the CA's end).
        #[arg(long, default_value_t = LEAF_DAYS)]
        days: u32,
        /// Replace existing files, moving them aside to FILE.old-<UTC time>.
        #[arg(long)]
        renew: bool,
    },
    /// Print what certificate files say: CN, SANs, validity, days left, CA or leaf, fingerprint.
    ///
    /// For each FILE (PEM; the first certificate in it): the subject's and
    /// the issuer's CN ("(empty)" for a proxy certificate), CA or leaf and
    /// its uses (server, client), IP and DNS SANs, validity in UTC with the
    /// days left (negative once expired), serial and SHA-256 fingerprint.
    /// --json prints a JSON array of objects with the same fields.
    ///
    /// Example: deckhand pki show /etc/deckhand/pki/*.crt
    ///
    /// Exit status: 0 all shown; 1 a file cannot be read or holds no certificate.
    #[command(verbatim_doc_comment)]
    Show {
        /// Certificate files (PEM).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the open certificate requests (join and renewal) and their state.
    ///
    /// One row per pki/requests/<node-id> in etcd: the node's name, id,
    /// kind (join or renew), claimed address, when it asked (its own clock)
    /// and the state: "open" (the signer has not decided yet), "awaiting
    /// approval" (pki.auto_sign is off), "approved", "refused: <reason>"
    /// (the signer's exact words; it decides again on each pass), or
    /// "issued" (the node has not installed it yet). --json prints the same
    /// as a JSON array. Talks to etcd like every other command.
    ///
    /// Example: deckhand pki pending
    ///
    /// Exit status: 0 listed (also when none); 1 etcd failed.
    #[command(verbatim_doc_comment)]
    Pending {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a node's open certificate request (with pki.auto_sign off).
    ///
    /// Writes pki/approvals/<node-id> naming the request's CSR (its SHA-256):
    /// the elected signer then signs it on its next pass, if it passes the
    /// rest of the policy (the challenge to its address, an address and a
    /// name no other node has). A later request of that node (another key)
    /// needs its own approval. Check the request first: `deckhand pki
    /// pending` shows its name, address and kind.
    ///
    /// Example: deckhand pki approve node6
    ///
    /// Exit status: 0 approved; 1 etcd failed; 2 no open request for NODE.
    #[command(verbatim_doc_comment)]
    Approve {
        /// Node id or the name the request asks for.
        node: String,
    },
}

impl PkiCommand {
    /// Whether the command talks to etcd (`pending`, `approve`).
    pub fn is_online(&self) -> bool {
        matches!(
            self,
            PkiCommand::Pending { .. } | PkiCommand::Approve { .. }
        )
    }
}

/// One open request as `deckhand pki pending` shows it.
#[derive(Debug, Serialize)]
pub struct Pending {
    /// The node id.
    pub id: String,
    /// The name asked for.
    pub name: String,
    /// join or renew.
    pub kind: String,
    /// The claimed address.
    pub address: String,
    /// When the node wrote it (its clock), Unix seconds.
    pub created_unix: u64,
    /// open, awaiting approval, approved, refused: ..., issued.
    pub state: String,
}

/// The open requests and their states.
pub fn pending_of(pki: &std::collections::BTreeMap<String, crate::store::PkiKeys>) -> Vec<Pending> {
    let mut out = Vec::new();
    for (id, k) in pki {
        let Some(req) = &k.request else { continue };
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                out.push(Pending {
                    id: id.clone(),
                    name: String::new(),
                    kind: String::new(),
                    address: String::new(),
                    created_unix: 0,
                    state: format!("invalid: {e}"),
                });
                continue;
            }
        };
        let sha = deckhand_pki::sha256_hex(req.csr_pem.as_bytes());
        let state = if matches!(&k.issued, Some(Ok(i)) if i.csr_sha256 == sha) {
            "issued".to_string()
        } else if let Some(Ok(r)) = k
            .refused
            .as_ref()
            .filter(|r| matches!(r, Ok(r) if r.csr_sha256 == sha))
        {
            if r.reason.starts_with("awaiting approval") {
                if matches!(&k.approval, Some(Ok(a)) if a.csr_sha256 == sha) {
                    "approved".to_string()
                } else {
                    "awaiting approval".to_string()
                }
            } else {
                format!("refused: {}", r.reason)
            }
        } else if matches!(&k.approval, Some(Ok(a)) if a.csr_sha256 == sha) {
            "approved".to_string()
        } else {
            "open".to_string()
        };
        out.push(Pending {
            id: id.clone(),
            name: req.name.clone(),
            kind: req.kind.to_string(),
            address: req.address.clone(),
            created_unix: req.created_unix,
            state,
        });
    }
    out
}

/// Writes the approval of `node`'s open request (`node`: its id or the
/// name it asks for), `by` naming who approved. Returns the node id.
///
/// # Errors
/// No such open request (usage), or etcd failed.
pub async fn approve(store: &crate::store::Store, node: &str, by: &str) -> Result<String, Failure> {
    let pki = store.pki().await.map_err(Failure::failed)?;
    let found: Vec<(&String, &deckhand_model::pki::CertRequest)> = pki
        .iter()
        .filter_map(|(id, k)| match &k.request {
            Some(Ok(r)) if id == node || r.name == node => Some((id, r)),
            _ => None,
        })
        .collect();
    let (id, req) = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(Failure::usage(anyhow!(
                "no open certificate request for {node:?} (see `deckhand pki pending`)"
            )));
        }
        _ => {
            return Err(Failure::usage(anyhow!(
                "several open requests ask for the name {node:?}: approve one by node id (see `deckhand pki pending`)"
            )));
        }
    };
    let approval = deckhand_model::pki::CertApproval {
        csr_sha256: deckhand_pki::sha256_hex(req.csr_pem.as_bytes()),
        by: by.to_owned(),
    };
    store
        .put_cert_approval(id, &approval)
        .await
        .map_err(Failure::failed)?;
    Ok(id.clone())
}

/// Runs `deckhand pki pending` and `deckhand pki approve` (through etcd).
///
/// # Errors
/// As [`approve`]; etcd not answering.
pub async fn online(target: crate::connect::Target, cmd: PkiCommand) -> Result<(), Failure> {
    let session = super::session::Session::connect(target).await?;
    match cmd {
        PkiCommand::Pending { json } => {
            let pki = session.store.pki().await.map_err(Failure::failed)?;
            let rows = pending_of(&pki);
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(Failure::failed)?
                );
            } else if rows.is_empty() {
                outln!("no open certificate requests");
            } else {
                let table: Vec<[String; 6]> = rows
                    .iter()
                    .map(|r| {
                        [
                            r.name.clone(),
                            r.id.clone(),
                            r.kind.clone(),
                            r.address.clone(),
                            utc_rfc3339(r.created_unix),
                            r.state.clone(),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    super::table::columns(
                        &["NODE", "ID", "KIND", "ADDRESS", "ASKED", "STATE"],
                        &table
                    )
                );
            }
            Ok(())
        }
        PkiCommand::Approve { node } => {
            let by = format!(
                "deckhand pki approve (user {} on {})",
                std::env::var("USER").unwrap_or_else(|_| "?".into()),
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim()
            );
            let id = approve(&session.store, &node, &by).await?;
            outln!(
                "approved the certificate request of {node} ({id}); the signer signs it on its next pass if it passes the policy (see `deckhand pki pending`)"
            );
            Ok(())
        }
        other => pki(other),
    }
}

/// Runs a `deckhand pki` command (no etcd involved).
///
/// # Errors
/// [`crate::exit::USAGE`] for bad arguments and a DIR without a CA;
/// [`crate::exit::FAILED`] for a refusal (files exist) or a file error.
pub fn pki(cmd: PkiCommand) -> Result<(), Failure> {
    match cmd {
        PkiCommand::Init { dir, days, name } => init(&dir, days, &name),
        PkiCommand::Issue {
            dir,
            node,
            address,
            operator,
            days,
            renew,
        } => match (node, address, operator) {
            (Some(node), Some(address), None) => issue_node(&dir, &node, address, days, renew),
            (None, None, Some(op)) => issue_operator(&dir, &op, days, renew),
            _ => Err(Failure::usage(anyhow!(
                "give either --node NAME --address ADDR or --operator NAME"
            ))),
        },
        PkiCommand::Show { files, json } => show(&files, json),
        PkiCommand::Pending { .. } | PkiCommand::Approve { .. } => Err(Failure::usage(anyhow!(
            "this pki command talks to etcd (pki::online)"
        ))),
    }
}

/// Maps a library error to a failure: bad input is a usage error, the rest
/// a failure.
fn failure(e: Error) -> Failure {
    match e {
        Error::InvalidName { .. } | Error::InvalidAddress { .. } | Error::InvalidDays { .. } => {
            Failure::usage(e)
        }
        _ => Failure::failed(e),
    }
}

fn init(dir: &Path, days: u32, name: &str) -> Result<(), Failure> {
    for f in [CA_KEY_FILE, CA_CERT_FILE] {
        let p = dir.join(f);
        if p.symlink_metadata().is_ok() {
            return Err(Failure::failed(anyhow!(
                "{} exists already: DIR holds a CA; nothing was written (a new CA would invalidate every certificate it issued; use another DIR)",
                p.display()
            )));
        }
    }
    let ca = Ca::create(name, days).map_err(failure)?;
    make_private_dir(dir)?;
    ca.write(dir).map_err(failure)?;
    let info = ca.info();
    outln!(
        "made CA {:?} in {}: {CA_CERT_FILE} (certificate, give it to every node and client), {CA_KEY_FILE} (private key, mode 0600: keep it offline and backed up); valid until {}, sha256 {}",
        name,
        dir.display(),
        info.not_after_utc(),
        info.sha256_fingerprint
    );
    Ok(())
}

/// Makes `dir` and its missing parents, mode 0700; an existing one is left as is.
fn make_private_dir(dir: &Path) -> Result<(), Failure> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot make {}", dir.display()))
        .map_err(Failure::failed)
}

fn load_ca(dir: &Path) -> Result<Ca, Failure> {
    Ca::load(dir).map_err(|e| match e {
        Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Failure::usage(anyhow!(
                "no CA in {}: {e} (make one with `deckhand pki init {}`)",
                dir.display(),
                dir.display()
            ))
        }
        e => Failure::failed(e),
    })
}

/// Writes `files` (name, contents, mode) into `dir`: refused if any exists
/// unless `renew`, which first moves the existing ones aside.
fn write_set(dir: &Path, files: &[(&str, &str, u32)], renew: bool) -> Result<(), Failure> {
    let existing: Vec<PathBuf> = files
        .iter()
        .map(|(n, _, _)| dir.join(n))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    if !existing.is_empty() && !renew {
        return Err(Failure::failed(anyhow!(
            "{} exist(s) already; nothing was written (give --renew to move the old files aside and issue new ones)",
            existing
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    make_private_dir(dir)?;
    let stamp = old_stamp();
    for p in &existing {
        let aside = PathBuf::from(format!("{}.old-{stamp}", p.display()));
        if aside.symlink_metadata().is_ok() {
            return Err(Failure::failed(anyhow!(
                "{} exists already; try again in a second",
                aside.display()
            )));
        }
        std::fs::rename(p, &aside)
            .with_context(|| format!("cannot move {} aside to {}", p.display(), aside.display()))
            .map_err(Failure::failed)?;
        outln!("moved {} aside to {}", p.display(), aside.display());
    }
    for (name, contents, mode) in files {
        write_new_file(&dir.join(name), contents.as_bytes(), *mode).map_err(failure)?;
    }
    Ok(())
}

/// The UTC time for names of files moved aside, `20261202T101516Z`.
fn old_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_rfc3339(now).replace(['-', ':'], "")
}

fn issue_node(
    dir: &Path,
    name: &str,
    address: IpAddr,
    days: u32,
    renew: bool,
) -> Result<(), Failure> {
    check_node_name(name).map_err(failure)?;
    let ca = load_ca(dir)?;
    let node = ca.issue_node(name, address, days).map_err(failure)?;
    let proxy = ca.issue_proxy(name, address, days).map_err(failure)?;
    let out = dir.join("nodes").join(name);
    write_set(
        &out,
        &[
            (CA_CERT_FILE, ca.cert_pem(), CERT_MODE),
            (NODE_CERT_FILE, &node.cert_pem, CERT_MODE),
            (NODE_KEY_FILE, &node.key_pem, KEY_MODE),
            (PROXY_CERT_FILE, &proxy.cert_pem, CERT_MODE),
            (PROXY_KEY_FILE, &proxy.key_pem, KEY_MODE),
        ],
        renew,
    )?;
    let info = CertInfo::from_pem(&node.cert_pem).map_err(failure)?;
    warn_if_cut(&info, days);
    outln!(
        "issued node {name} ({address}) in {}: {CA_CERT_FILE}, {NODE_CERT_FILE}/{NODE_KEY_FILE} (CN node:{name}), {PROXY_CERT_FILE}/{PROXY_KEY_FILE} (empty CN); valid until {}\n\
install them on the node into {NODE_PKI_DIR}/ (owner root, group etcd; keys mode 0640, certificates 0644)",
        out.display(),
        info.not_after_utc()
    );
    Ok(())
}

fn issue_operator(dir: &Path, name: &str, days: u32, renew: bool) -> Result<(), Failure> {
    check_operator_name(name).map_err(failure)?;
    let ca = load_ca(dir)?;
    let op = ca.issue_operator(name, days).map_err(failure)?;
    let out = dir.join("operators").join(name);
    write_set(
        &out,
        &[
            (CA_CERT_FILE, ca.cert_pem(), CERT_MODE),
            (OPERATOR_CERT_FILE, &op.cert_pem, CERT_MODE),
            (OPERATOR_KEY_FILE, &op.key_pem, KEY_MODE),
        ],
        renew,
    )?;
    let info = CertInfo::from_pem(&op.cert_pem).map_err(failure)?;
    warn_if_cut(&info, days);
    outln!(
        "issued operator {name:?} in {}: {CA_CERT_FILE}, {OPERATOR_CERT_FILE}/{OPERATOR_KEY_FILE} (CN {name}); valid until {}\n\
use: etcdctl --cacert {d}/{CA_CERT_FILE} --cert {d}/{OPERATOR_CERT_FILE} --key {d}/{OPERATOR_KEY_FILE} ...",
        out.display(),
        info.not_after_utc(),
        d = out.display()
    );
    Ok(())
}

/// Says so on stderr when a leaf ends more than a day before the `days`
/// asked for: leaves never outlive the CA, which cuts them at its own end.
fn warn_if_cut(info: &CertInfo, days: u32) {
    let asked = info
        .not_before_unix
        .saturating_add(deckhand_pki::BACKDATE_SECONDS as u64)
        .saturating_add(u64::from(days) * 86_400);
    if info.not_after_unix + 86_400 < asked {
        eprintln!(
            "deckhand pki: warning: valid until {} only, not {days} days: a certificate never outlives the CA (see `deckhand pki show DIR/ca.crt`)",
            info.not_after_utc()
        );
    }
}

/// One certificate in `deckhand pki show --json`.
#[derive(Serialize)]
struct ShowJson {
    file: String,
    common_name: Option<String>,
    issuer_common_name: Option<String>,
    is_ca: bool,
    server_auth: bool,
    client_auth: bool,
    ip_sans: Vec<IpAddr>,
    dns_sans: Vec<String>,
    not_before: String,
    not_after: String,
    not_before_unix: u64,
    not_after_unix: u64,
    /// Whole days until notAfter, rounded down; negative once expired.
    days_left: i64,
    serial: String,
    sha256_fingerprint: String,
    /// The mode of the file, octal (`"0600"`).
    mode: String,
}

fn show(files: &[PathBuf], json: bool) -> Result<(), Failure> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut shown = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match CertInfo::from_file(f) {
            Ok(info) => {
                let mode = std::fs::metadata(f)
                    .map(|m| format!("{:04o}", m.permissions().mode() & 0o7777))
                    .unwrap_or_default();
                shown.push(ShowJson {
                    file: f.display().to_string(),
                    days_left: info.seconds_left(now).div_euclid(86_400),
                    not_before: info.not_before_utc(),
                    not_after: info.not_after_utc(),
                    common_name: info.common_name,
                    issuer_common_name: info.issuer_common_name,
                    is_ca: info.is_ca,
                    server_auth: info.server_auth,
                    client_auth: info.client_auth,
                    ip_sans: info.ip_sans,
                    dns_sans: info.dns_sans,
                    not_before_unix: info.not_before_unix,
                    not_after_unix: info.not_after_unix,
                    serial: info.serial_hex,
                    sha256_fingerprint: info.sha256_fingerprint,
                    mode,
                });
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&shown).map_err(Failure::failed)?
        );
    } else {
        for s in &shown {
            print_one(s);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(anyhow!("{}", errors.join("; "))))
    }
}

fn print_one(s: &ShowJson) {
    let cn = |c: &Option<String>| match c {
        Some(c) => c.clone(),
        None => "(empty)".into(),
    };
    let kind = if s.is_ca {
        "CA".to_string()
    } else {
        let uses: Vec<&str> = [(s.server_auth, "server"), (s.client_auth, "client")]
            .into_iter()
            .filter_map(|(on, w)| on.then_some(w))
            .collect();
        format!(
            "leaf ({})",
            if uses.is_empty() {
                "no TLS use".into()
            } else {
                uses.join(", ")
            }
        )
    };
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let left = if s.days_left < 0 {
        format!("EXPIRED {} days ago", -s.days_left)
    } else {
        format!("{} days left", s.days_left)
    };
    outln!("{}", s.file);
    outln!("  subject CN  {}", cn(&s.common_name));
    outln!("  issuer CN   {}", cn(&s.issuer_common_name));
    outln!("  kind        {kind}");
    outln!(
        "  IP SANs     {}",
        list(s.ip_sans.iter().map(|i| i.to_string()).collect())
    );
    outln!("  DNS SANs    {}", list(s.dns_sans.clone()));
    outln!("  valid       {} to {} ({left})", s.not_before, s.not_after);
    outln!("  serial      {}", s.serial);
    outln!("  sha256      {}", s.sha256_fingerprint);
    outln!("  file mode   {}", s.mode);
}

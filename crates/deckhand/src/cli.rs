//! Operator commands: `role set|get`, `plane set|get` and `status`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use deckhand_etcd::Cluster;
use deckhand_model::{
    EtcdRole, ImageRef, ImagesStatus, Keyspace, Plane, PlaneConfig, PlaneStatus, PlaneUnit, Role,
    UnitMode,
};
use etcd_client::Client;
use serde::Serialize;

use crate::config;
use crate::nodes::{NodeKeys, read_nodes};

const TIMEOUT: Duration = Duration::from_secs(5);

/// `deckhand role ...`
#[derive(Subcommand)]
pub enum RoleCommand {
    /// Set a node's role: its etcd role and its planes.
    ///
    /// Example: deckhand role set node4 --etcd member --wait
    Set {
        /// Node id (/etc/machine-id) or hostname.
        node: String,
        /// member: run a voting etcd member; proxy: run an etcd grpc-proxy.
        #[arg(long, value_parser = ["member", "proxy"])]
        etcd: String,
        /// Comma-separated planes: control, data, router. The node runs the
        /// units of these planes (see `deckhand plane`) and stops those of
        /// planes it loses. Empty: no plane.
        #[arg(long, value_delimiter = ',')]
        planes: Vec<String>,
        /// Wait until the node reports it converged to this role (or is blocked).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
    },
    /// Print a node's role key.
    Get {
        /// Node id (/etc/machine-id) or hostname.
        node: String,
    },
}

/// `deckhand plane ...`
#[derive(Subcommand)]
pub enum PlaneCommand {
    /// Set a plane's config: its units (global or singleton) and images.
    ///
    /// The value is validated before anything is written: unit names by
    /// systemd's rules (no paths, no shell characters, not deckhand's own
    /// units), image references by Docker's grammar. Every node of the plane
    /// then preseeds the images and runs the units: a global unit on every
    /// node of the plane, a singleton on exactly one (the leader of an etcd
    /// election among the plane's nodes).
    ///
    /// Examples:
    ///   deckhand plane set router --unit router.service=global --image registry.example/router:1.4
    ///   deckhand plane set control --unit scheduler.service=singleton --image registry.example/sched:2
    ///   deckhand plane set data --file data.json     (JSON: {"units":[{"name":..,"mode":..}],"images":[..]}; - for stdin)
    #[command(verbatim_doc_comment)]
    Set {
        /// control, data or router.
        plane: String,
        /// A unit and its mode, NAME=global or NAME=singleton; repeat for
        /// more units.
        #[arg(long = "unit", value_name = "NAME=MODE")]
        units: Vec<String>,
        /// A Docker image reference the plane's units need (tag or digest);
        /// repeat for more images.
        #[arg(long = "image", value_name = "REFERENCE")]
        images: Vec<String>,
        /// Read the whole config as JSON from this file (- for stdin)
        /// instead of --unit/--image.
        #[arg(long, conflicts_with_all = ["units", "images"])]
        file: Option<std::path::PathBuf>,
    },
    /// Print a plane's config (every plane's when none is named).
    Get {
        /// control, data or router.
        plane: Option<String>,
    },
    /// Delete a plane's config: every node stops the plane's units.
    Delete {
        /// control, data or router.
        plane: String,
    },
}

/// `deckhand status` arguments.
#[derive(Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Maps a command result to an exit code, printing the error.
pub fn finish(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deckhand: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Ctx {
    client: Client,
    ks: Keyspace,
    config_endpoints: Vec<String>,
    cli_endpoints: Vec<String>,
    /// The endpoints tried in order when connecting.
    endpoints: Vec<String>,
}

async fn connect(cfg: &Path, endpoints: Vec<String>, prefix: Option<String>) -> Result<Ctx> {
    let settings = config::load(cfg).ok();
    let config_endpoints = settings
        .as_ref()
        .map(|s| s.endpoints.clone())
        .unwrap_or_default();
    let cli_endpoints = endpoints.clone();
    let mut eps = endpoints;
    if eps.is_empty() {
        eps.push(crate::local::LOCALHOST_CLIENT_URL.to_string());
        eps.extend(config_endpoints.iter().cloned());
    }
    let prefix = prefix
        .or_else(|| settings.as_ref().map(|s| s.key_prefix.clone()))
        .unwrap_or_else(|| Keyspace::DEFAULT_PREFIX.to_string());
    // One endpoint at a time: etcd-client balances requests over all the
    // endpoints it is given, dead ones included, so a single down member
    // would fail some requests. Take the first that answers.
    let client = first_answering(&eps, Duration::from_secs(2)).await?;
    Ok(Ctx {
        client,
        ks: Keyspace::new(&prefix),
        config_endpoints,
        cli_endpoints,
        endpoints: eps,
    })
}

/// Connects to the first of `eps` that answers a status request within
/// `timeout` (one endpoint at a time: etcd-client would balance requests
/// over dead endpoints too).
///
/// # Errors
/// No endpoint answered: each endpoint's reason, in few words.
pub(crate) async fn first_answering(eps: &[String], timeout: Duration) -> Result<Client> {
    let mut errors = Vec::new();
    for ep in eps {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(TIMEOUT);
        match Client::connect([ep.as_str()], Some(opts)).await {
            Ok(mut c) => match tokio::time::timeout(timeout, c.status()).await {
                Ok(Ok(_)) => return Ok(c),
                Ok(Err(e)) => errors.push(format!("{ep}: {}", root_cause(&e))),
                Err(_) => errors.push(format!("{ep}: no answer within {} s", timeout.as_secs())),
            },
            Err(e) => errors.push(format!("{ep}: {}", root_cause(&e))),
        }
    }
    bail!("no etcd endpoint answered:\n  {}", errors.join("\n  "))
}

/// An etcd client error in few words: for a refused connection "tcp
/// connect error: Connection refused (os error 111)", not the debug form of
/// the gRPC status around it.
fn root_cause(e: &etcd_client::Error) -> String {
    fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
        let mut last = e;
        while let Some(inner) = last.source() {
            last = inner;
        }
        last.to_string()
    }
    match e {
        etcd_client::Error::GRpcStatus(status) => match std::error::Error::source(status) {
            Some(inner) => format!("{}: {}", status.message(), innermost(inner)),
            None => status.message().to_string(),
        },
        other => innermost(other),
    }
}

fn resolve(nodes: &BTreeMap<String, NodeKeys>, node: &str) -> Result<String> {
    if nodes.contains_key(node) {
        return Ok(node.to_string());
    }
    let by_name: Vec<&String> = nodes
        .iter()
        .filter(|(_, k)| {
            k.name.as_deref() == Some(node) || k.status.as_ref().is_some_and(|s| s.name == node)
        })
        .map(|(id, _)| id)
        .collect();
    // A host reprovisioned under its old name leaves a dead namesake:
    // prefer the one live node of that name.
    let alive: Vec<&String> = by_name
        .iter()
        .copied()
        .filter(|id| nodes.get(*id).is_some_and(|k| k.status.is_some()))
        .collect();
    if by_name.len() > 1 && alive.len() == 1 {
        return Ok(alive[0].clone());
    }
    match by_name.as_slice() {
        [id] => Ok((*id).clone()),
        [] if node.len() == 32 && node.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(node.to_string())
        }
        [] => {
            bail!("no node named {node:?}: not a known node id or hostname (see `deckhand status`)")
        }
        _ => bail!(
            "{} nodes are named {node:?}; use the node id instead",
            by_name.len()
        ),
    }
}

/// Builds a plane config from `--unit`/`--image` or a JSON file, validated.
fn plane_config(
    plane: Plane,
    units: &[String],
    images: &[String],
    file: Option<&Path>,
) -> Result<PlaneConfig> {
    if let Some(path) = file {
        let text = if path == Path::new("-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading the plane config from stdin")?;
            s
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the plane config from {}", path.display()))?
        };
        return Ok(PlaneConfig::parse(plane, text.as_bytes())?);
    }
    if units.is_empty() && images.is_empty() {
        bail!(
            "nothing to set for plane {plane}: give --unit NAME=MODE and --image REFERENCE (or --file); \
             an empty config would stop the plane's units on every node (to do that on purpose: \
             deckhand plane delete {plane})"
        );
    }
    let mut cfg = PlaneConfig::default();
    for u in units {
        let Some((name, mode)) = u.rsplit_once('=') else {
            bail!("--unit {u:?} is not NAME=MODE (e.g. router.service=global)");
        };
        let mode = match mode {
            "global" => UnitMode::Global,
            "singleton" => UnitMode::Singleton,
            other => bail!("--unit {u:?}: unknown mode {other:?} (global or singleton)"),
        };
        cfg.units.push(PlaneUnit {
            name: name.to_string(),
            mode,
        });
    }
    for i in images {
        cfg.images.push(ImageRef::parse(i)?);
    }
    // The same checks as a value read from etcd.
    let json = serde_json::to_vec(&cfg)?;
    Ok(PlaneConfig::parse(plane, &json)?)
}

/// `deckhand plane set|get|delete`.
pub async fn plane(
    cfg: &Path,
    endpoints: Vec<String>,
    prefix: Option<String>,
    cmd: PlaneCommand,
) -> Result<()> {
    // Validate before connecting: bad input changes nothing.
    let set = match &cmd {
        PlaneCommand::Set {
            plane,
            units,
            images,
            file,
        } => {
            let p: Plane = plane.parse()?;
            Some((p, plane_config(p, units, images, file.as_deref())?))
        }
        _ => None,
    };
    let mut ctx = connect(cfg, endpoints, prefix).await?;
    match cmd {
        PlaneCommand::Set { .. } => {
            let (plane, config) = set.expect("validated above");
            let json = serde_json::to_string(&config)?;
            let resp = ctx
                .client
                .put(ctx.ks.plane(plane), json.clone(), None)
                .await
                .context("writing the plane config")?;
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            println!("plane {plane} set at revision {rev}: {json}");
        }
        PlaneCommand::Get { plane } => {
            let planes: Vec<Plane> = match plane {
                Some(p) => vec![p.parse()?],
                None => Plane::ALL.to_vec(),
            };
            let one = planes.len() == 1;
            for p in planes {
                let got = ctx
                    .client
                    .get(ctx.ks.plane(p), None)
                    .await
                    .context("reading the plane config")?;
                match got.kvs().first() {
                    Some(kv) => {
                        let v = kv.value();
                        if one {
                            println!("{}", String::from_utf8_lossy(v));
                        } else {
                            println!("{p}: {}", String::from_utf8_lossy(v));
                        }
                        if let Err(e) = PlaneConfig::parse(p, v) {
                            eprintln!(
                                "deckhand: warning: this value is rejected by every node (revision {}): {e}",
                                kv.mod_revision()
                            );
                        }
                    }
                    None if one => bail!("plane {p} has no config ({})", ctx.ks.plane(p)),
                    None => println!("{p}: (no config)"),
                }
            }
        }
        PlaneCommand::Delete { plane } => {
            let p: Plane = plane.parse()?;
            let resp = ctx
                .client
                .delete(ctx.ks.plane(p), None)
                .await
                .context("deleting the plane config")?;
            if resp.deleted() == 0 {
                println!("plane {p} had no config");
            } else {
                println!("plane {p} config deleted: its nodes stop its units");
            }
        }
    }
    Ok(())
}

/// `deckhand role set|get`.
pub async fn role(
    cfg: &Path,
    endpoints: Vec<String>,
    prefix: Option<String>,
    cmd: RoleCommand,
) -> Result<()> {
    let mut ctx = connect(cfg, endpoints, prefix).await?;
    let nodes = read_nodes(&mut ctx.client, &ctx.ks).await?;
    match cmd {
        RoleCommand::Get { node } => {
            let id = resolve(&nodes, &node)?;
            match nodes.get(&id).and_then(|k| k.role.as_ref()) {
                Some((v, rev)) => {
                    println!("{}", String::from_utf8_lossy(v));
                    if let Err(e) = Role::parse(v) {
                        eprintln!(
                            "deckhand: warning: this role value is invalid (revision {rev}): {e}"
                        );
                    }
                }
                None => bail!("node {node} ({id}) has no role key"),
            }
            Ok(())
        }
        RoleCommand::Set {
            node,
            etcd,
            planes,
            wait,
            timeout,
        } => {
            let id = resolve(&nodes, &node)?;
            let mut role = Role::new(etcd.parse::<EtcdRole>()?);
            let mut seen = BTreeSet::new();
            for p in planes.iter().filter(|p| !p.is_empty()) {
                let plane: Plane = p.parse()?;
                if !seen.insert(plane) {
                    bail!("plane {p:?} is listed twice");
                }
                role.planes.insert(plane);
            }
            let resp = ctx
                .client
                .put(ctx.ks.role(&id), role.to_json(), None)
                .await
                .context("writing the role key")?;
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            println!("{node} ({id}): role set to {role} at revision {rev}");
            if wait {
                wait_converged(&mut ctx, &id, rev, Duration::from_secs(timeout)).await?;
            }
            Ok(())
        }
    }
}

async fn wait_converged(ctx: &mut Ctx, id: &str, rev: i64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut last_step = String::new();
    let mut last_error: Option<String> = None;
    loop {
        // The local etcd restarts when this very node (or, for a proxy, the
        // voter set) changes: ride over read errors and reconnect.
        let nodes = match read_nodes(&mut ctx.client, &ctx.ks).await {
            Ok(n) => n,
            Err(e) => {
                if start.elapsed() > timeout {
                    return Err(e.context(format!(
                        "node {id} did not report convergence within {} s",
                        timeout.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(c) = first_answering(&ctx.endpoints, Duration::from_secs(2)).await {
                    ctx.client = c;
                }
                continue;
            }
        };
        if let Some(s) = nodes.get(id).and_then(|k| k.status.as_ref())
            && s.desired_revision >= rev
        {
            if let Some(b) = &s.blocked {
                bail!(
                    "{} cannot apply this role now: {b}.\nThe role key keeps asking for it: the node applies it by itself once it is safe. To cancel, set the role back (deckhand role set {} --etcd ...).",
                    s.name,
                    s.name
                );
            }
            if s.converged {
                println!(
                    "{}: converged in {:.1} s",
                    s.name,
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            let step = s.step.clone().unwrap_or_default();
            if step != last_step {
                println!("{}: {step}", s.name);
                last_step = step;
            }
            if s.error != last_error {
                if let Some(e) = &s.error {
                    println!("{}: error: {e}", s.name);
                }
                last_error.clone_from(&s.error);
            }
        }
        if start.elapsed() > timeout {
            let why = match (&last_error, last_step.is_empty()) {
                (Some(e), _) => format!(" (its error: {e})"),
                (None, false) => format!(" (its step: {last_step})"),
                (None, true) => String::new(),
            };
            bail!(
                "node {id} did not converge within {} s{why}; see `deckhand status`",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Serialize)]
struct StatusJson {
    nodes: Vec<NodeJson>,
    voters: usize,
    learners: usize,
    leader: Option<String>,
    members: Vec<MemberJson>,
}

#[derive(Serialize)]
struct NodeJson {
    id: String,
    name: String,
    address: Option<String>,
    alive: bool,
    desired: Option<Role>,
    desired_revision: i64,
    applied: Option<Role>,
    converged: bool,
    etcd: deckhand_model::EtcdStatus,
    step: Option<String>,
    blocked: Option<String>,
    error: Option<String>,
    failure_domain: Option<String>,
    replacer: Option<String>,
    events: Vec<String>,
    planes: Vec<PlaneStatus>,
    images: ImagesStatus,
}

#[derive(Serialize)]
struct MemberJson {
    id: String,
    name: String,
    learner: bool,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
}

/// `deckhand status`.
pub async fn status(
    cfg: &Path,
    endpoints: Vec<String>,
    prefix: Option<String>,
    args: StatusArgs,
) -> Result<()> {
    let mut ctx = connect(cfg, endpoints, prefix).await?;
    let nodes = read_nodes(&mut ctx.client, &ctx.ks).await?;
    // The member list must come from a real member, never a grpc-proxy:
    // the nodes that report a member, then the configured endpoints.
    // ask the nodes that report a member, then the configured endpoints,
    // then the endpoints given on the command line.
    let reported: Vec<String> = nodes
        .values()
        .filter_map(|k| k.status.as_ref())
        .filter(|s| s.etcd.mode == deckhand_model::EtcdMode::Member)
        .map(|s| format!("http://{}:2379", s.address))
        .collect();
    let mut members = Vec::new();
    let mut leader = None;
    let mut listed = None;
    for eps in [
        reported,
        ctx.config_endpoints.clone(),
        ctx.cli_endpoints.clone(),
    ] {
        if eps.is_empty() {
            continue;
        }
        // A short timeout per endpoint: right after a member died its node
        // still reports it for up to a lease TTL.
        if let Ok(c) = Cluster::connect(&eps, Duration::from_secs(1)).await
            && let Ok(list) = c.member_list().await
        {
            listed = Some(list);
            break;
        }
    }
    if let Some(list) = listed {
        for m in list.iter().filter(|m| !m.is_learner) {
            for ep in &m.client_urls {
                if let Ok(st) = Cluster::endpoint_status(ep, Duration::from_secs(2)).await
                    && st.leader != 0
                {
                    leader = list
                        .iter()
                        .find(|x| x.id == st.leader)
                        .map(|x| x.name.clone());
                    break;
                }
            }
            if leader.is_some() {
                break;
            }
        }
        members = list;
    }
    let out = StatusJson {
        voters: members.iter().filter(|m| !m.is_learner).count(),
        learners: members.iter().filter(|m| m.is_learner).count(),
        leader,
        members: members
            .iter()
            .map(|m| MemberJson {
                id: format!("{:x}", m.id),
                name: m.name.clone(),
                learner: m.is_learner,
                peer_urls: m.peer_urls.clone(),
                client_urls: m.client_urls.clone(),
            })
            .collect(),
        nodes: nodes
            .iter()
            .map(|(id, k)| {
                let role_desired = k.role.as_ref().and_then(|(v, _)| Role::parse(v).ok());
                match &k.status {
                    Some(s) => NodeJson {
                        id: id.clone(),
                        name: s.name.clone(),
                        address: Some(s.address.clone()),
                        alive: true,
                        desired: s.desired.clone(),
                        desired_revision: s.desired_revision,
                        applied: s.applied.clone(),
                        converged: s.converged,
                        etcd: s.etcd.clone(),
                        step: s.step.clone(),
                        blocked: s.blocked.clone(),
                        error: s.error.clone(),
                        failure_domain: s.failure_domain.clone(),
                        replacer: s.replacer.clone(),
                        events: s.events.clone(),
                        planes: s.planes.clone(),
                        images: s.images.clone(),
                    },
                    None => NodeJson {
                        id: id.clone(),
                        name: k.name.clone().unwrap_or_default(),
                        address: None,
                        alive: false,
                        desired: role_desired,
                        desired_revision: k.role.as_ref().map(|(_, r)| *r).unwrap_or(0),
                        applied: None,
                        converged: false,
                        etcd: deckhand_model::EtcdStatus {
                            mode: deckhand_model::EtcdMode::None,
                            member_id: None,
                            leader: false,
                        },
                        step: None,
                        blocked: None,
                        error: Some(
                            "no status: the node's lease expired (agent or node down)".into(),
                        ),
                        failure_domain: None,
                        replacer: None,
                        events: Vec::new(),
                        planes: Vec::new(),
                        images: ImagesStatus::default(),
                    },
                }
            })
            .collect(),
    };
    let mut out = out;
    // Each node reports its own leader flag, which lags a leader change by
    // up to one of its iterations; the member list read just now is fresher.
    if let Some(leader) = &out.leader {
        for n in &mut out.nodes {
            n.etcd.leader = n.alive && n.name == *leader;
        }
    }
    out.nodes
        .sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&out);
    }
    Ok(())
}

fn print_table(s: &StatusJson) {
    println!(
        "voters: {}   learners: {}   leader: {}",
        s.voters,
        s.learners,
        s.leader.as_deref().unwrap_or("(none)")
    );
    let rows: Vec<[String; 10]> = s
        .nodes
        .iter()
        .map(|n| {
            let role = |r: &Option<Role>| {
                r.as_ref()
                    .map(Role::to_string)
                    .unwrap_or_else(|| "-".into())
            };
            let note = n
                .blocked
                .as_ref()
                .map(|b| format!("blocked: {b}"))
                .or_else(|| n.error.clone())
                .or_else(|| n.step.clone())
                .unwrap_or_default();
            [
                n.name.clone(),
                n.address.clone().unwrap_or_else(|| "-".into()),
                role(&n.desired),
                role(&n.applied),
                n.etcd.mode.to_string(),
                if n.etcd.leader {
                    "*".into()
                } else {
                    String::new()
                },
                if n.alive {
                    "alive".into()
                } else {
                    "DEAD".into()
                },
                if n.converged {
                    "yes".into()
                } else {
                    "no".into()
                },
                images_cell(&n.images),
                note,
            ]
        })
        .collect();
    let header = [
        "NODE",
        "ADDRESS",
        "DESIRED",
        "APPLIED",
        "ETCD",
        "LEADER",
        "HEALTH",
        "CONVERGED",
        "IMAGES",
        "NOTE",
    ];
    print_columns(&header, &rows);
    print_units(s);
}

/// Prints `rows` under `header` in aligned columns; the last column is not
/// padded.
fn print_columns<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(N - 1) {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < N {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                out.push_str(c);
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// `present/wanted`, with pulls and failures.
fn images_cell(i: &ImagesStatus) -> String {
    if i.wanted == 0 {
        return "-".into();
    }
    let mut cell = format!("{}/{}", i.present, i.wanted);
    if !i.pulling.is_empty() {
        cell.push_str(&format!(" ({} pulling)", i.pulling.len()));
    }
    if !i.failed.is_empty() {
        cell.push_str(&format!(" ({} FAILED)", i.failed.len()));
    }
    cell
}

/// One line per plane unit: where it runs and, for a singleton, who holds it.
fn print_units(s: &StatusJson) {
    // (plane, unit) → (mode, nodes running it, nodes not running it, holder)
    type Row = (UnitMode, Vec<String>, Vec<String>, Option<String>);
    let mut units: BTreeMap<(Plane, String), Row> = BTreeMap::new();
    for n in s.nodes.iter().filter(|n| n.alive) {
        for p in &n.planes {
            for u in &p.units {
                let row = units
                    .entry((p.plane, u.name.clone()))
                    .or_insert_with(|| (u.mode, Vec::new(), Vec::new(), None));
                if u.state == "active" {
                    row.1.push(n.name.clone());
                } else if u.mode == UnitMode::Global {
                    row.2.push(format!("{}:{}", n.name, u.state));
                }
                if row.3.is_none() {
                    row.3.clone_from(&u.holder);
                }
            }
        }
    }
    if units.is_empty() {
        return;
    }
    println!();
    let rows: Vec<[String; 5]> = units
        .into_iter()
        .map(|((plane, name), (mode, on, off, holder))| {
            let mut running = if on.is_empty() {
                "(nowhere)".to_string()
            } else {
                on.join(",")
            };
            if !off.is_empty() {
                running.push_str(&format!("   not running: {}", off.join(",")));
            }
            [
                plane.to_string(),
                name,
                mode.to_string(),
                holder.unwrap_or_else(|| "-".into()),
                running,
            ]
        })
        .collect();
    let header = ["PLANE", "UNIT", "MODE", "HOLDER", "RUNNING ON"];
    print_columns(&header, &rows);
}

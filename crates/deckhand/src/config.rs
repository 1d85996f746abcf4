//! The agent's configuration: `/etc/deckhand/config.toml` plus drop-ins in
//! `/etc/deckhand/config.d/*.toml`, applied in file-name order, each key of a
//! later file overriding the same key of an earlier one.
//!
//! Three layers, as in zincati: [`Fragment`] (every field optional, one per
//! file), merged, then validated into [`Settings`] with the defaults filled in.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::paths;

/// Default initial cluster token.
pub const DEFAULT_TOKEN: &str = "deckhand";

/// One config file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fragment {
    /// Key prefix in etcd.
    pub key_prefix: Option<String>,
    /// `[node]`.
    #[serde(default)]
    pub node: NodeFragment,
    /// `[etcd]`.
    #[serde(default)]
    pub etcd: EtcdFragment,
    /// `[docker]`.
    #[serde(default)]
    pub docker: DockerFragment,
    /// `[checks]`.
    #[serde(default)]
    pub checks: ChecksFragment,
    /// `[tls]`: present in any file turns TLS on, unless `enabled = false`.
    pub tls: Option<TlsFragment>,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsFragment,
    /// `[restore]`.
    #[serde(default)]
    pub restore: RestoreFragment,
}

/// `[restore]` of a config file (`docs/backup.md`, "Restore").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreFragment {
    /// `expect = true`: this host was (re)provisioned to be restored by
    /// `deckhand restore`; its agent never bootstraps a new cluster of its
    /// own (it runs a proxy towards the configured endpoints and waits).
    /// Default false.
    pub expect: Option<bool>,
}

/// `[metrics]` of a config file: the agent's Prometheus endpoint
/// (`docs/metrics.md`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFragment {
    /// `address:port` to serve `/metrics` on, or `"off"`; default
    /// `0.0.0.0:7479` ([`deckhand_model::METRICS_PORT`]).
    pub listen: Option<String>,
}

/// `[tls]` of a config file: mutual TLS on every etcd connection between
/// hosts (peers, clients on node addresses, the proxy to the members, the
/// agent and the CLI to the members). `localhost:2379` stays plaintext on
/// loopback. See `docs/tls.md`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFragment {
    /// On when the `[tls]` table is present; a drop-in can set `false`.
    pub enabled: Option<bool>,
    /// The cluster CA's certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// This node's certificate (PEM): etcd's server and peer certificate,
    /// and the agent's client certificate.
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// The grpc-proxy's client certificate towards the members (empty CN).
    pub proxy_cert_file: Option<PathBuf>,
    /// The key of `proxy_cert_file` (PEM).
    pub proxy_key_file: Option<PathBuf>,
    /// The join credential's certificate (PEM): with it, a node whose
    /// `cert_file`/`key_file` are absent asks for its certificates through
    /// etcd at start-up (`docs/pki.md`).
    pub join_cert_file: Option<PathBuf>,
    /// The key of `join_cert_file` (PEM).
    pub join_key_file: Option<PathBuf>,
    /// The CA's key: an agent that has it (the file exists) stands for the
    /// signer's election and signs requests.
    pub ca_key_file: Option<PathBuf>,
}

/// `[checks]` of a config file: how often the agent checks its node and
/// the free-space floors of its disk checks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksFragment {
    /// Seconds between two rounds of node checks.
    pub interval_seconds: Option<u64>,
    /// Free bytes on Docker's root dir below which `disk-docker` warns.
    pub docker_warn_free_bytes: Option<u64>,
    /// Free bytes on Docker's root dir below which `disk-docker` fails.
    pub docker_fail_free_bytes: Option<u64>,
    /// Free bytes on the etcd data dir's file system below which
    /// `disk-etcd` warns.
    pub etcd_warn_free_bytes: Option<u64>,
    /// Free bytes on the etcd data dir's file system below which
    /// `disk-etcd` fails.
    pub etcd_fail_free_bytes: Option<u64>,
}

/// `[node]` of a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFragment {
    /// The node name; default the hostname.
    pub name: Option<String>,
    /// The address peers and clients reach this node on.
    pub advertise_address: Option<IpAddr>,
    /// The node's failure domain (rack, zone): automatic member replacement
    /// spreads voters across failure domains.
    pub failure_domain: Option<String>,
}

/// `[etcd]` of a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdFragment {
    /// Client URLs of real members.
    pub endpoints: Option<Vec<String>>,
    /// `name=peer-url,...` of the members that bootstrap the cluster.
    pub initial_cluster: Option<String>,
    /// The initial cluster token.
    pub initial_cluster_token: Option<String>,
    /// The member data dir.
    pub data_dir: Option<PathBuf>,
}

/// `[docker]` of a config file: the local Docker daemon and how images
/// are pulled (preseed; `deckhand preseed` reads it too).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerFragment {
    /// The daemon's unix socket.
    pub socket: Option<PathBuf>,
    /// A Docker client `config.json` with registry credentials (`auths`).
    pub config: Option<PathBuf>,
    /// Free bytes Docker's root dir must have before a pull.
    pub min_free_bytes: Option<u64>,
    /// Seconds without pull progress before an attempt is abandoned.
    pub pull_no_progress_seconds: Option<u64>,
    /// Seconds one image may take over all its attempts.
    pub pull_deadline_seconds: Option<u64>,
    /// Attempts per image.
    pub pull_attempts: Option<u32>,
}

impl Fragment {
    fn merge(&mut self, other: Fragment) {
        fn over<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        over(&mut self.key_prefix, other.key_prefix);
        over(&mut self.node.name, other.node.name);
        over(
            &mut self.node.advertise_address,
            other.node.advertise_address,
        );
        over(&mut self.node.failure_domain, other.node.failure_domain);
        over(&mut self.etcd.endpoints, other.etcd.endpoints);
        over(&mut self.etcd.initial_cluster, other.etcd.initial_cluster);
        over(
            &mut self.etcd.initial_cluster_token,
            other.etcd.initial_cluster_token,
        );
        over(&mut self.etcd.data_dir, other.etcd.data_dir);
        over(&mut self.docker.socket, other.docker.socket);
        over(&mut self.docker.config, other.docker.config);
        over(&mut self.docker.min_free_bytes, other.docker.min_free_bytes);
        over(
            &mut self.docker.pull_no_progress_seconds,
            other.docker.pull_no_progress_seconds,
        );
        over(
            &mut self.docker.pull_deadline_seconds,
            other.docker.pull_deadline_seconds,
        );
        over(&mut self.docker.pull_attempts, other.docker.pull_attempts);
        let (c, o) = (&mut self.checks, other.checks);
        over(&mut c.interval_seconds, o.interval_seconds);
        over(&mut c.docker_warn_free_bytes, o.docker_warn_free_bytes);
        over(&mut c.docker_fail_free_bytes, o.docker_fail_free_bytes);
        over(&mut c.etcd_warn_free_bytes, o.etcd_warn_free_bytes);
        over(&mut c.etcd_fail_free_bytes, o.etcd_fail_free_bytes);
        if let Some(o) = other.tls {
            let t = self.tls.get_or_insert_with(TlsFragment::default);
            over(&mut t.enabled, o.enabled);
            over(&mut t.ca_file, o.ca_file);
            over(&mut t.cert_file, o.cert_file);
            over(&mut t.key_file, o.key_file);
            over(&mut t.proxy_cert_file, o.proxy_cert_file);
            over(&mut t.proxy_key_file, o.proxy_key_file);
            over(&mut t.join_cert_file, o.join_cert_file);
            over(&mut t.join_key_file, o.join_key_file);
            over(&mut t.ca_key_file, o.ca_key_file);
        }
        over(&mut self.metrics.listen, other.metrics.listen);
        over(&mut self.restore.expect, other.restore.expect);
    }
}

/// Default `tls.ca_key_file`.
pub const DEFAULT_CA_KEY_FILE: &str = "/etc/deckhand/pki/ca.key";
/// Default `tls.ca_file`.
pub const DEFAULT_CA_FILE: &str = "/etc/deckhand/pki/ca.crt";
/// Default `tls.cert_file`.
pub const DEFAULT_CERT_FILE: &str = "/etc/deckhand/pki/node.crt";
/// Default `tls.key_file`.
pub const DEFAULT_KEY_FILE: &str = "/etc/deckhand/pki/node.key";
/// Default `tls.proxy_cert_file`.
pub const DEFAULT_PROXY_CERT_FILE: &str = "/etc/deckhand/pki/proxy.crt";
/// Default `tls.proxy_key_file`.
pub const DEFAULT_PROXY_KEY_FILE: &str = "/etc/deckhand/pki/proxy.key";

/// `[tls]` with its defaults filled in, when TLS is on. Only the paths:
/// the files are read and checked by [`crate::tls::load_node`] (the agent
/// at start-up), not by every CLI command that reads the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The CA certificate; default [`DEFAULT_CA_FILE`].
    pub ca_file: PathBuf,
    /// The node certificate; default [`DEFAULT_CERT_FILE`].
    pub cert_file: PathBuf,
    /// Its key; default [`DEFAULT_KEY_FILE`]. The member unit runs as user
    /// `etcd`: the key must be readable by group `etcd` (root:etcd 0640).
    pub key_file: PathBuf,
    /// The proxy's client certificate (empty CN); default
    /// [`DEFAULT_PROXY_CERT_FILE`].
    pub proxy_cert_file: PathBuf,
    /// Its key; default [`DEFAULT_PROXY_KEY_FILE`] (root:etcd 0640).
    pub proxy_key_file: PathBuf,
    /// The join credential (certificate, key): both or neither.
    pub join: Option<(PathBuf, PathBuf)>,
    /// The CA key; default [`DEFAULT_CA_KEY_FILE`]. Present on the nodes
    /// that may sign.
    pub ca_key_file: PathBuf,
}

/// Fills the defaults of `[tls]`; `None` when TLS is off (no `[tls]`
/// table, or `enabled = false`).
///
/// # Errors
/// A relative path; the message names the key.
pub fn tls_settings(f: Option<TlsFragment>) -> Result<Option<TlsSettings>> {
    let Some(f) = f else { return Ok(None) };
    if f.enabled == Some(false) {
        return Ok(None);
    }
    let s = TlsSettings {
        ca_file: f.ca_file.unwrap_or_else(|| DEFAULT_CA_FILE.into()),
        cert_file: f.cert_file.unwrap_or_else(|| DEFAULT_CERT_FILE.into()),
        key_file: f.key_file.unwrap_or_else(|| DEFAULT_KEY_FILE.into()),
        proxy_cert_file: f
            .proxy_cert_file
            .unwrap_or_else(|| DEFAULT_PROXY_CERT_FILE.into()),
        proxy_key_file: f
            .proxy_key_file
            .unwrap_or_else(|| DEFAULT_PROXY_KEY_FILE.into()),
        join: match (f.join_cert_file, f.join_key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                bail!("tls.join_cert_file and tls.join_key_file go together: give both or neither")
            }
        },
        ca_key_file: f.ca_key_file.unwrap_or_else(|| DEFAULT_CA_KEY_FILE.into()),
    };
    for (key, path) in [
        ("ca_file", &s.ca_file),
        ("cert_file", &s.cert_file),
        ("key_file", &s.key_file),
        ("proxy_cert_file", &s.proxy_cert_file),
        ("proxy_key_file", &s.proxy_key_file),
        ("ca_key_file", &s.ca_key_file),
    ]
    .into_iter()
    .chain(
        s.join
            .iter()
            .flat_map(|(c, k)| [("join_cert_file", c), ("join_key_file", k)]),
    ) {
        if !path.is_absolute() {
            bail!("tls.{key} {path:?} must be an absolute path");
        }
    }
    Ok(Some(s))
}

/// Validated settings with defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Key prefix, default `/deckhand`.
    pub key_prefix: String,
    /// Node name override; `None` means the hostname.
    pub name: Option<String>,
    /// Advertise address override; `None` means detect.
    pub advertise_address: Option<IpAddr>,
    /// The failure domain label, if any.
    pub failure_domain: Option<String>,
    /// Client URLs of real members (never a proxy).
    pub endpoints: Vec<String>,
    /// `(name, peer URL)` of the initial members.
    pub initial_cluster: Vec<(String, String)>,
    /// The raw `initial_cluster` value.
    pub initial_cluster_raw: String,
    /// The initial cluster token.
    pub initial_cluster_token: String,
    /// The member data dir.
    pub data_dir: PathBuf,
    /// `[docker]`: the local Docker daemon and image pulls.
    pub docker: DockerSettings,
    /// `[checks]`: the node checks' cadence and disk floors.
    pub checks: ChecksSettings,
    /// `[tls]`, when TLS is on: then every URL above is `https://`.
    pub tls: Option<TlsSettings>,
    /// `[metrics] listen`: where the agent serves `/metrics`; `None` when
    /// `"off"`. Default `0.0.0.0:7479`.
    pub metrics: Option<std::net::SocketAddr>,
    /// `[restore] expect`: never bootstrap a new cluster (the node waits
    /// for `deckhand restore`).
    pub expect_restore: bool,
}

impl Settings {
    /// The scheme of every etcd URL between hosts: `https` with TLS, else
    /// `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// `[checks]` with its defaults filled in. A floor of 0 turns that level
/// off; the fail floor is at most the warn floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksSettings {
    /// Seconds between two rounds of node checks; default 10, allowed
    /// 2..=600.
    pub interval_seconds: u64,
    /// `disk-docker` warns below this many free bytes on Docker's root dir
    /// (`DockerRootDir`); default 4294967296 (4 GiB).
    pub docker_warn_free_bytes: u64,
    /// `disk-docker` fails below this; default 1073741824 (1 GiB, the
    /// default `docker.min_free_bytes` below which pulls are refused).
    pub docker_fail_free_bytes: u64,
    /// `disk-etcd` warns below this many free bytes on the file system of
    /// the etcd data dir; default 4294967296 (4 GiB, twice etcd's default
    /// `--quota-backend-bytes` of 2 GiB).
    pub etcd_warn_free_bytes: u64,
    /// `disk-etcd` fails below this; default 1073741824 (1 GiB). etcd
    /// stops when a WAL or snapshot write fails for want of space.
    pub etcd_fail_free_bytes: u64,
}

impl Default for ChecksSettings {
    fn default() -> Self {
        ChecksSettings {
            interval_seconds: 10,
            docker_warn_free_bytes: 4 << 30,
            docker_fail_free_bytes: 1 << 30,
            etcd_warn_free_bytes: 4 << 30,
            etcd_fail_free_bytes: 1 << 30,
        }
    }
}

/// Fills the defaults of `[checks]` and validates it.
///
/// # Errors
/// An interval out of range, or a fail floor above its warn floor; the
/// message names the keys.
pub fn checks_settings(f: ChecksFragment) -> Result<ChecksSettings> {
    let d = ChecksSettings::default();
    let s = ChecksSettings {
        interval_seconds: f.interval_seconds.unwrap_or(d.interval_seconds),
        docker_warn_free_bytes: f.docker_warn_free_bytes.unwrap_or(d.docker_warn_free_bytes),
        docker_fail_free_bytes: f.docker_fail_free_bytes.unwrap_or(d.docker_fail_free_bytes),
        etcd_warn_free_bytes: f.etcd_warn_free_bytes.unwrap_or(d.etcd_warn_free_bytes),
        etcd_fail_free_bytes: f.etcd_fail_free_bytes.unwrap_or(d.etcd_fail_free_bytes),
    };
    if !(2..=600).contains(&s.interval_seconds) {
        bail!(
            "checks.interval_seconds is {}, outside the allowed 2..=600",
            s.interval_seconds
        );
    }
    for (disk, warn, fail) in [
        ("docker", s.docker_warn_free_bytes, s.docker_fail_free_bytes),
        ("etcd", s.etcd_warn_free_bytes, s.etcd_fail_free_bytes),
    ] {
        if warn != 0 && fail > warn {
            bail!(
                "checks.{disk}_fail_free_bytes ({fail}) is above checks.{disk}_warn_free_bytes ({warn}): the fail floor must be at most the warn floor"
            );
        }
    }
    Ok(s)
}

/// `[docker]` with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// The Docker daemon's unix socket; default `/var/run/docker.sock`.
    pub socket: PathBuf,
    /// A Docker client `config.json` with registry credentials; default
    /// none (anonymous pulls). A missing file is an error when a pull uses
    /// it, naming the path.
    pub config: Option<PathBuf>,
    /// Free bytes Docker's root dir (`DockerRootDir`) must have before a
    /// pull; default 1073741824 (1 GiB); 0 turns the check off.
    pub min_free_bytes: u64,
    /// Seconds without pull progress before an attempt is abandoned;
    /// default 60, allowed 5..=3600.
    pub pull_no_progress_seconds: u64,
    /// Seconds one image may take over all its attempts; default 1800,
    /// allowed 10..=86400.
    pub pull_deadline_seconds: u64,
    /// Attempts per image; default 3, allowed 1..=10.
    pub pull_attempts: u32,
}

// The defaults are deckhand_images::PullOptions's (a test in
// `crate::images` checks it; `crate::images::pull_options` turns these
// settings into PullOptions).
impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            socket: paths::DOCKER_SOCKET.into(),
            config: None,
            min_free_bytes: 1 << 30,
            pull_no_progress_seconds: 60,
            pull_deadline_seconds: 1800,
            pull_attempts: 3,
        }
    }
}

/// Fills the defaults of `[docker]` and validates it.
///
/// # Errors
/// A relative path, or a number out of its range; the message names the key.
pub fn docker_settings(f: DockerFragment) -> Result<DockerSettings> {
    let d = DockerSettings::default();
    let s = DockerSettings {
        socket: f.socket.unwrap_or(d.socket),
        config: f.config,
        min_free_bytes: f.min_free_bytes.unwrap_or(d.min_free_bytes),
        pull_no_progress_seconds: f
            .pull_no_progress_seconds
            .unwrap_or(d.pull_no_progress_seconds),
        pull_deadline_seconds: f.pull_deadline_seconds.unwrap_or(d.pull_deadline_seconds),
        pull_attempts: f.pull_attempts.unwrap_or(d.pull_attempts),
    };
    if !s.socket.is_absolute() {
        bail!(
            "docker.socket {:?} must be an absolute path, e.g. \"/var/run/docker.sock\"",
            s.socket
        );
    }
    if let Some(c) = &s.config
        && !c.is_absolute()
    {
        bail!("docker.config {c:?} must be an absolute path, e.g. \"/root/.docker/config.json\"");
    }
    let range = |key: &str, v: u64, lo: u64, hi: u64| -> Result<()> {
        if !(lo..=hi).contains(&v) {
            bail!("docker.{key} is {v}, outside the allowed {lo}..={hi}");
        }
        Ok(())
    };
    range(
        "pull_no_progress_seconds",
        s.pull_no_progress_seconds,
        5,
        3600,
    )?;
    range("pull_deadline_seconds", s.pull_deadline_seconds, 10, 86400)?;
    range("pull_attempts", u64::from(s.pull_attempts), 1, 10)?;
    Ok(s)
}

/// Reads `main` and the `*.toml` files of `<dir of main>/config.d/` in name
/// order.
///
/// # Errors
/// A file that cannot be read or parsed, an unknown key, or a missing or
/// invalid value; the message names the file and the key.
pub fn load(main: &Path) -> Result<Settings> {
    let mut merged = read_fragment(main)?;
    let dropins = main.parent().unwrap_or(Path::new("/")).join("config.d");
    if dropins.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dropins)
            .with_context(|| format!("reading {}", dropins.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            merged.merge(read_fragment(&f)?);
        }
    }
    validate(merged).with_context(|| {
        format!(
            "invalid configuration in {} (and its config.d)",
            main.display()
        )
    })
}

/// [`load`], or `None` when `main` does not exist (the CLI and `deckhand
/// preseed` work without a config: defaults apply).
///
/// # Errors
/// As [`load`], for a file that exists.
pub fn load_optional(main: &Path) -> Result<Option<Settings>> {
    match std::fs::metadata(main) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => load(main).map(Some),
    }
}

fn read_fragment(path: &Path) -> Result<Fragment> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_fragment(&text).with_context(|| format!("in config file {}", path.display()))
}

/// Parses one config file's text.
///
/// # Errors
/// TOML syntax errors and unknown keys.
pub fn parse_fragment(text: &str) -> Result<Fragment> {
    Ok(toml::from_str(text)?)
}

/// Fills defaults and validates a merged fragment.
///
/// # Errors
/// Missing `etcd.endpoints`, a URL that is not `http://host:port`
/// (`https://host:port` with `[tls]`), or a malformed `etcd.initial_cluster`.
pub fn validate(f: Fragment) -> Result<Settings> {
    let tls = tls_settings(f.tls)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoints = f.etcd.endpoints.unwrap_or_default();
    if endpoints.is_empty() {
        bail!(
            "etcd.endpoints is missing or empty: list the client URLs of the cluster's members, e.g. [\"{scheme}://10.0.0.1:2379\"]"
        );
    }
    for e in &endpoints {
        check_url(e, tls.is_some()).with_context(|| format!("etcd.endpoints entry {e:?}"))?;
    }
    let raw = f.etcd.initial_cluster.unwrap_or_default();
    let initial_cluster = parse_initial_cluster(&raw, tls.is_some())?;
    let key_prefix = f.key_prefix.unwrap_or_else(|| "/deckhand".into());
    if !key_prefix.starts_with('/') {
        bail!("key_prefix {key_prefix:?} must start with '/'");
    }
    if let Some(name) = &f.node.name {
        check_name(name)?;
    }
    let docker = docker_settings(f.docker)?;
    let checks = checks_settings(f.checks)?;
    let metrics = metrics_listen(f.metrics.listen.as_deref())?;
    Ok(Settings {
        key_prefix,
        name: f.node.name,
        advertise_address: f.node.advertise_address,
        failure_domain: f.node.failure_domain,
        endpoints,
        initial_cluster,
        initial_cluster_raw: raw,
        initial_cluster_token: f
            .etcd
            .initial_cluster_token
            .unwrap_or_else(|| DEFAULT_TOKEN.into()),
        data_dir: f.etcd.data_dir.unwrap_or_else(|| paths::DATA_DIR.into()),
        docker,
        checks,
        tls,
        metrics,
        expect_restore: f.restore.expect.unwrap_or(false),
    })
}

/// `[metrics] listen`: `None` (absent) gives `0.0.0.0:7479`, `"off"` turns
/// the endpoint off.
///
/// # Errors
/// A value that is neither `"off"` nor `address:port` (IPv6 in brackets).
pub fn metrics_listen(v: Option<&str>) -> Result<Option<std::net::SocketAddr>> {
    match v {
        None => Ok(Some(std::net::SocketAddr::from((
            [0, 0, 0, 0],
            deckhand_model::METRICS_PORT,
        )))),
        Some("off") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "metrics.listen {s:?} is not address:port (e.g. \"0.0.0.0:{}\", \"[::]:{}\") nor \"off\"",
                deckhand_model::METRICS_PORT,
                deckhand_model::METRICS_PORT
            )
        }),
    }
}

/// Parses `name=url,name=url`; empty input gives an empty list. The URLs
/// are `https://` when `tls`, else `http://`.
///
/// # Errors
/// An entry without `=`, an empty name, or a bad URL.
pub fn parse_initial_cluster(raw: &str, tls: bool) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            bail!("etcd.initial_cluster entry {part:?} is not name=peer-url");
        };
        check_name(name).context("etcd.initial_cluster")?;
        check_url(url, tls).with_context(|| format!("etcd.initial_cluster entry {part:?}"))?;
        out.push((name.to_string(), url.to_string()));
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        bail!("node name {name:?} must be 1-63 characters of letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// Checks `http://host:port`, or `https://host:port` when `tls`.
fn check_url(url: &str, tls: bool) -> Result<()> {
    let (scheme, other) = if tls {
        ("https://", "http://")
    } else {
        ("http://", "https://")
    };
    let Some(rest) = url.strip_prefix(scheme) else {
        if url.starts_with(other) && tls {
            bail!(
                "URL {url:?} must start with https:// ([tls] is on: every etcd connection between hosts is TLS)"
            );
        }
        if url.starts_with(other) {
            bail!(
                "URL {url:?} is https:// but TLS is off: add a [tls] section (docs/tls.md), or use http://"
            );
        }
        bail!("URL {url:?} must start with {scheme}");
    };
    let Some((host, port)) = rest.trim_end_matches('/').rsplit_once(':') else {
        bail!("URL {url:?} has no port");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!("URL {url:?} must be {scheme}host:port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_dropins_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(
            &main,
            "[etcd]\nendpoints=[\"http://10.0.0.1:2379\"]\ninitial_cluster=\"a=http://10.0.0.1:2380\"\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        std::fs::write(dir.path().join("config.d/20-b.toml"), "key_prefix=\"/b\"\n").unwrap();
        std::fs::write(
            dir.path().join("config.d/10-a.toml"),
            "key_prefix=\"/a\"\n[node]\nname=\"n1\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("config.d/ignored.txt"), "garbage").unwrap();
        let s = load(&main).unwrap();
        assert_eq!(s.key_prefix, "/b");
        assert_eq!(s.name.as_deref(), Some("n1"));
        assert_eq!(
            s.initial_cluster,
            vec![("a".to_string(), "http://10.0.0.1:2380".to_string())]
        );
        assert_eq!(s.data_dir, PathBuf::from(paths::DATA_DIR));
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |t: &str| format!("{:#}", parse_fragment(t).and_then(validate).unwrap_err());
        assert!(err("").contains("etcd.endpoints is missing"));
        assert!(err("[etcd]\nendpoints=[\"10.0.0.1:2379\"]").contains("must start with http://"));
        assert!(
            err("[etcd]\nendpoints=[\"http://a:1\"]\ninitial_cluster=\"x\"")
                .contains("not name=peer-url")
        );
        assert!(err("bogus=1").contains("unknown field"));
        assert!(err("[node]\nadvertise_address=\"nope\"").contains("invalid"));
        let ep = "[etcd]\nendpoints=[\"http://a:1\"]\n[docker]\n";
        assert!(err(&format!("{ep}socket=\"docker.sock\"")).contains("docker.socket"));
        assert!(err(&format!("{ep}config=\"cfg.json\"")).contains("docker.config"));
        assert!(
            err(&format!("{ep}pull_attempts=0"))
                .contains("docker.pull_attempts is 0, outside the allowed 1..=10")
        );
        assert!(err(&format!("{ep}pull_no_progress_seconds=1")).contains("pull_no_progress"));
        assert!(err(&format!("{ep}pull_deadline_seconds=999999")).contains("pull_deadline"));
        assert!(err(&format!("{ep}min_free_bytes=-1")).contains("min_free_bytes"));
        assert!(err(&format!("{ep}pulls=1")).contains("unknown field"));
        let ck = "[etcd]\nendpoints=[\"http://a:1\"]\n[checks]\n";
        assert!(
            err(&format!("{ck}interval_seconds=1"))
                .contains("checks.interval_seconds is 1, outside the allowed 2..=600")
        );
        assert!(
            err(&format!(
                "{ck}etcd_warn_free_bytes=10\netcd_fail_free_bytes=11"
            ))
            .contains("checks.etcd_fail_free_bytes (11) is above checks.etcd_warn_free_bytes (10)")
        );
        assert!(err(&format!("{ck}docker_fail_free_bytes=8589934592")).contains("docker_fail"));
        assert!(err(&format!("{ck}disk=1")).contains("unknown field"));
    }

    #[test]
    fn tls_decides_the_scheme_of_every_url() {
        let err = |t: &str| format!("{:#}", parse_fragment(t).and_then(validate).unwrap_err());
        // https:// without [tls]: refused, naming the URL and what to add.
        let e = err("[etcd]\nendpoints=[\"https://10.0.0.1:2379\"]");
        assert!(
            e.contains("\"https://10.0.0.1:2379\"") && e.contains("add a [tls] section"),
            "{e}"
        );
        // http:// with [tls]: refused, naming the URL.
        let e = err("[tls]\n[etcd]\nendpoints=[\"http://10.0.0.1:2379\"]");
        assert!(
            e.contains("\"http://10.0.0.1:2379\"") && e.contains("must start with https://"),
            "{e}"
        );
        let e = err(
            "[tls]\n[etcd]\nendpoints=[\"https://10.0.0.1:2379\"]\ninitial_cluster=\"a=http://10.0.0.1:2380\"",
        );
        assert!(e.contains("a=http://10.0.0.1:2380"), "{e}");
        let e = err("[tls]\nca_file=\"ca.crt\"\n[etcd]\nendpoints=[\"https://a:1\"]");
        assert!(e.contains("tls.ca_file"), "{e}");
        assert!(err("[tls]\ncafile=\"/x\"").contains("unknown field"));
        // [tls] on: the defaults, https everywhere.
        let s = parse_fragment(
            "[tls]\n[etcd]\nendpoints=[\"https://10.0.0.1:2379\"]\ninitial_cluster=\"a=https://10.0.0.1:2380\"",
        )
        .and_then(validate)
        .unwrap();
        let t = s.tls.as_ref().unwrap();
        assert_eq!(t.ca_file, PathBuf::from("/etc/deckhand/pki/ca.crt"));
        assert_eq!(t.cert_file, PathBuf::from("/etc/deckhand/pki/node.crt"));
        assert_eq!(t.key_file, PathBuf::from("/etc/deckhand/pki/node.key"));
        assert_eq!(
            t.proxy_cert_file,
            PathBuf::from("/etc/deckhand/pki/proxy.crt")
        );
        assert_eq!(
            t.proxy_key_file,
            PathBuf::from("/etc/deckhand/pki/proxy.key")
        );
        assert_eq!(s.scheme(), "https");
        // No [tls]: off, http.
        let s = parse_fragment("[etcd]\nendpoints=[\"http://10.0.0.1:2379\"]")
            .and_then(validate)
            .unwrap();
        assert!(s.tls.is_none());
        assert_eq!(s.scheme(), "http");
    }

    #[test]
    fn a_dropin_can_turn_tls_off_or_move_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(
            &main,
            "[tls]\nenabled=true\ncert_file=\"/pki/a.crt\"\n[etcd]\nendpoints=[\"https://10.0.0.1:2379\"]\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        std::fs::write(
            dir.path().join("config.d/50-tls.toml"),
            "[tls]\nkey_file=\"/pki/a.key\"\n",
        )
        .unwrap();
        let s = load(&main).unwrap();
        let t = s.tls.unwrap();
        assert_eq!(
            (t.cert_file, t.key_file),
            ("/pki/a.crt".into(), "/pki/a.key".into())
        );
        // Off in a drop-in: the https:// endpoint of the main file is now
        // an error that names it.
        std::fs::write(
            dir.path().join("config.d/60-off.toml"),
            "[tls]\nenabled=false\n",
        )
        .unwrap();
        let e = format!("{:#}", load(&main).unwrap_err());
        assert!(
            e.contains("https://10.0.0.1:2379") && e.contains("TLS is off"),
            "{e}"
        );
    }

    #[test]
    fn checks_defaults_and_dropins() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, "[etcd]\nendpoints=[\"http://10.0.0.1:2379\"]\n").unwrap();
        let s = load(&main).unwrap();
        assert_eq!(s.checks, ChecksSettings::default());
        assert_eq!(s.checks.interval_seconds, 10);
        assert_eq!(s.checks.etcd_fail_free_bytes, 1073741824);
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        std::fs::write(
            dir.path().join("config.d/50-checks.toml"),
            "[checks]\ninterval_seconds=30\ndocker_warn_free_bytes=0\netcd_fail_free_bytes=0\n",
        )
        .unwrap();
        let s = load(&main).unwrap();
        assert_eq!(
            s.checks,
            ChecksSettings {
                interval_seconds: 30,
                docker_warn_free_bytes: 0,
                etcd_fail_free_bytes: 0,
                ..ChecksSettings::default()
            }
        );
    }

    #[test]
    fn docker_defaults_and_dropins() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, "[etcd]\nendpoints=[\"http://10.0.0.1:2379\"]\n").unwrap();
        let s = load(&main).unwrap();
        assert_eq!(s.docker, DockerSettings::default());
        assert_eq!(s.docker.socket, PathBuf::from("/var/run/docker.sock"));
        assert_eq!(s.docker.config, None);
        assert_eq!(
            (
                s.docker.min_free_bytes,
                s.docker.pull_no_progress_seconds,
                s.docker.pull_deadline_seconds,
                s.docker.pull_attempts
            ),
            (1073741824, 60, 1800, 3)
        );
        std::fs::write(
            &main,
            "[etcd]\nendpoints=[\"http://10.0.0.1:2379\"]\n[docker]\nsocket=\"/run/docker.sock\"\n\
             config=\"/etc/deckhand/docker.json\"\nmin_free_bytes=5\npull_attempts=2\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        // Every key of a drop-in overrides, the others stay.
        std::fs::write(
            dir.path().join("config.d/50-docker.toml"),
            "[docker]\npull_no_progress_seconds=30\npull_deadline_seconds=600\npull_attempts=5\n",
        )
        .unwrap();
        let s = load(&main).unwrap();
        assert_eq!(
            s.docker,
            DockerSettings {
                socket: "/run/docker.sock".into(),
                config: Some("/etc/deckhand/docker.json".into()),
                min_free_bytes: 5,
                pull_no_progress_seconds: 30,
                pull_deadline_seconds: 600,
                pull_attempts: 5,
            }
        );
    }
}

/// Where the .deb puts its example config (packaging/deb/build): named by
/// the agent's error when `/etc/deckhand/config.toml` is missing.
pub const EXAMPLE_CONFIG: &str = "/usr/share/doc/deckhand/examples/config.toml";

/// [`load`] for the agent, which has no defaults to fall back on: a missing
/// `main` is an error that says what to write (an installed package ships
/// an example, no config), before any file is read.
///
/// # Errors
/// `main` missing (the message names it and [`EXAMPLE_CONFIG`]), or as
/// [`load`].
pub fn load_for_agent(main: &Path) -> Result<Settings> {
    if let Err(e) = std::fs::metadata(main)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        bail!(
            "{} does not exist: the agent needs this node's configuration (the etcd \
             endpoints and initial cluster, TLS files); copy the example {EXAMPLE_CONFIG} \
             (installed by the .deb) there, edit it, then start the agent",
            main.display()
        );
    }
    load(main)
}

#[cfg(test)]
mod load_for_agent_tests {
    use super::*;

    #[test]
    fn a_missing_config_names_the_file_and_the_example() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        let e = format!("{:#}", load_for_agent(&main).unwrap_err());
        assert!(e.contains(&main.display().to_string()), "{e}");
        assert!(e.contains(EXAMPLE_CONFIG), "{e}");
        std::fs::write(&main, "[etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\n").unwrap();
        assert!(load_for_agent(&main).is_ok());
    }
}

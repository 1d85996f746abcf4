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

/// Default main config file.
pub const DEFAULT_CONFIG: &str = "/etc/deckhand/config.toml";
/// Default etcd member data dir.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/deckhand-etcd/member";
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
        over(&mut self.etcd.endpoints, other.etcd.endpoints);
        over(&mut self.etcd.initial_cluster, other.etcd.initial_cluster);
        over(
            &mut self.etcd.initial_cluster_token,
            other.etcd.initial_cluster_token,
        );
        over(&mut self.etcd.data_dir, other.etcd.data_dir);
    }
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
/// Missing `etcd.endpoints`, a URL that is not `http://host:port`, or a
/// malformed `etcd.initial_cluster`.
pub fn validate(f: Fragment) -> Result<Settings> {
    let endpoints = f.etcd.endpoints.unwrap_or_default();
    if endpoints.is_empty() {
        bail!(
            "etcd.endpoints is missing or empty: list the client URLs of the cluster's members, e.g. [\"http://10.0.0.1:2379\"]"
        );
    }
    for e in &endpoints {
        check_url(e).with_context(|| format!("etcd.endpoints entry {e:?}"))?;
    }
    let raw = f.etcd.initial_cluster.unwrap_or_default();
    let initial_cluster = parse_initial_cluster(&raw)?;
    let key_prefix = f.key_prefix.unwrap_or_else(|| "/deckhand".into());
    if !key_prefix.starts_with('/') {
        bail!("key_prefix {key_prefix:?} must start with '/'");
    }
    if let Some(name) = &f.node.name {
        check_name(name)?;
    }
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
        data_dir: f.etcd.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
    })
}

/// Parses `name=url,name=url`; empty input gives an empty list.
///
/// # Errors
/// An entry without `=`, an empty name, or a bad URL.
pub fn parse_initial_cluster(raw: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            bail!("etcd.initial_cluster entry {part:?} is not name=peer-url");
        };
        check_name(name).context("etcd.initial_cluster")?;
        check_url(url).with_context(|| format!("etcd.initial_cluster entry {part:?}"))?;
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

/// Checks `http://host:port` (https is not supported yet: no TLS provider is built in).
fn check_url(url: &str) -> Result<()> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("URL {url:?} must start with http:// (TLS is not supported yet)");
    };
    let Some((host, port)) = rest.trim_end_matches('/').rsplit_once(':') else {
        bail!("URL {url:?} has no port");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!("URL {url:?} must be http://host:port");
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
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
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
    }
}

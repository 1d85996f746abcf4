//! This node's TLS files and the CLI's: reading and checking them (parses,
//! issued by the CA, key matches, the proxy's CN empty), the client
//! material for [`deckhand_etcd::Tls`], the `tls-certificate` check, and
//! the CLI's `--cacert/--cert/--key` with etcdctl's `ETCDCTL_*` variables.
//! The files' paths are [`crate::config::TlsSettings`]; what is encrypted
//! and what stays on loopback: `docs/tls.md`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use deckhand_etcd::Tls;
use deckhand_model::{CertificateStatus, Check, CheckState};
use deckhand_pki::CertInfo;

use crate::config::TlsSettings;

/// A certificate is reported as expiring soon (check `warn`, doctor warns)
/// when fewer than this many days are left.
pub const WARN_DAYS: i64 = 30;

/// One certificate file as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its subject's CN; empty when it has none.
    pub common_name: String,
    /// Start of validity, seconds since the epoch.
    pub not_before_unix: u64,
    /// End of validity, seconds since the epoch.
    pub not_after_unix: u64,
    /// IP address SANs, in the certificate's order.
    pub ip_sans: Vec<std::net::IpAddr>,
    /// DNS name SANs, in the certificate's order.
    pub dns_sans: Vec<String>,
}

impl CertFile {
    /// What the node's status carries.
    pub fn status(&self) -> CertificateStatus {
        CertificateStatus {
            not_after_unix: self.not_after_unix,
            common_name: self.common_name.clone(),
        }
    }
}

/// The node's TLS material, checked: the agent's client identity (the
/// node certificate) and what the checks report on.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// CA + node certificate + key, for the agent's connections to members.
    pub client: Tls,
    /// The node certificate (`tls.cert_file`).
    pub node: CertFile,
    /// The proxy's client certificate (`tls.proxy_cert_file`).
    pub proxy: CertFile,
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the {what} {} (it must exist and be readable by this user; keys are root:etcd 0640)",
            path.display()
        )
    })
}

/// Reads and checks a certificate file: PEM that parses.
///
/// # Errors
/// Unreadable, or not a certificate; the message names the file.
pub fn read_cert(path: &Path) -> Result<CertFile> {
    let pem = read(path, "certificate")?;
    cert_file(path, &pem)
}

fn cert_file(path: &Path, pem: &str) -> Result<CertFile> {
    let info = CertInfo::from_pem(pem)
        .with_context(|| format!("{} is not a valid PEM certificate", path.display()))?;
    Ok(CertFile {
        path: path.to_path_buf(),
        common_name: info.common_name.unwrap_or_default(),
        not_before_unix: info.not_before_unix,
        not_after_unix: info.not_after_unix,
        ip_sans: info.ip_sans,
        dns_sans: info.dns_sans,
    })
}

/// Checks that the node certificate is this node's: its CN is
/// `node:<name>` (the convention of `deckhand pki issue --node`, and the
/// etcd user name once auth is on) and its IP SANs hold `address`, the
/// address the member advertises. Go's TLS client, which every etcd peer
/// and client is, checks the dialled IP against the server certificate's IP
/// SANs, so a certificate without it fails every peer handshake with
/// "certificate is valid for ..., not ADDR"; this says so at start-up
/// instead.
///
/// # Errors
/// Another CN, or no SAN for `address`; the message names the file, what
/// it holds and what to issue.
pub fn check_node_identity(node: &CertFile, name: &str, address: std::net::IpAddr) -> Result<()> {
    let want = deckhand_pki::node_common_name(name);
    if node.common_name != want {
        bail!(
            "tls.cert_file {} has CN {:?}, but this node is {name:?} (CN {want:?}): install this node's certificate (`deckhand pki issue --node {name} --address {address} DIR`)",
            node.path.display(),
            node.common_name
        );
    }
    if !node.ip_sans.contains(&address) {
        let sans: Vec<String> = node.ip_sans.iter().map(ToString::to_string).collect();
        bail!(
            "tls.cert_file {} is valid for the addresses [{}], not for this node's address {address}: peers would refuse its TLS handshakes; issue it again with `--address {address}`",
            node.path.display(),
            sans.join(", ")
        );
    }
    Ok(())
}

/// Reads a CA, a certificate and its key, and checks that the certificate
/// parses, was issued by that CA, and matches the key. Validity dates are
/// not checked here (see [`certificate_check`] and [`require_valid`]).
///
/// # Errors
/// Each failure names the file.
pub fn load_pair(ca: &Path, cert: &Path, key: &Path) -> Result<(Tls, CertFile)> {
    let ca_pem = read(ca, "CA certificate")?;
    CertInfo::from_pem(&ca_pem)
        .with_context(|| format!("{} is not a valid PEM certificate", ca.display()))?;
    let cert_pem = read(cert, "certificate")?;
    let file = cert_file(cert, &cert_pem)?;
    deckhand_pki::verify_issued_by(&ca_pem, &cert_pem).with_context(|| {
        format!(
            "{} was not issued by the CA in {}",
            cert.display(),
            ca.display()
        )
    })?;
    let key_pem = read(key, "private key")?;
    match deckhand_pki::key_matches(&cert_pem, &key_pem) {
        Ok(true) => {}
        Ok(false) => bail!(
            "the key {} does not match the certificate {}",
            key.display(),
            cert.display()
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e))
                .with_context(|| format!("{} is not a valid PEM private key", key.display()));
        }
    }
    Ok((Tls::from_pem(ca_pem, cert_pem, key_pem), file))
}

/// Reads and checks the node's files ([`load_pair`] for the node and the
/// proxy pair); the proxy certificate must have an empty CN (etcd's
/// grpc-proxy refuses to start otherwise). Run by the agent at start-up:
/// an error is a configuration error (exit 78). An expired certificate
/// is not: the agent starts, and its `tls-certificate` check fails.
///
/// # Errors
/// Each failure names the file and the config key.
pub fn load_node(s: &TlsSettings) -> Result<NodeTls> {
    let (client, node) = load_pair(&s.ca_file, &s.cert_file, &s.key_file)
        .context("tls.ca_file, tls.cert_file, tls.key_file")?;
    let (_, proxy) = load_pair(&s.ca_file, &s.proxy_cert_file, &s.proxy_key_file)
        .context("tls.proxy_cert_file, tls.proxy_key_file")?;
    if !proxy.common_name.is_empty() {
        bail!(
            "tls.proxy_cert_file {} has CN {:?}: the grpc-proxy's client certificate must have an empty CN (issue it with `deckhand pki issue --node`, which writes proxy.crt)",
            proxy.path.display(),
            proxy.common_name
        );
    }
    Ok(NodeTls {
        client,
        node,
        proxy,
    })
}

/// Fails for a certificate outside its validity at `now_unix`, saying when
/// and what to do. For the CLI's own certificate: the agent reports
/// instead ([`certificate_check`]).
///
/// # Errors
/// Expired, or not valid yet.
pub fn require_valid(c: &CertFile, now_unix: u64) -> Result<()> {
    if now_unix > c.not_after_unix {
        bail!(
            "the certificate {} expired at {}: issue a new one (`deckhand pki issue --renew ...`) and replace the file",
            c.path.display(),
            utc(c.not_after_unix)
        );
    }
    if now_unix < c.not_before_unix {
        bail!(
            "the certificate {} is not valid before {} (is this host's clock right?)",
            c.path.display(),
            utc(c.not_before_unix)
        );
    }
    Ok(())
}

/// The `tls-certificate` check from the certificates read this round
/// (`(config key, file or why it could not be read)`), at `now_unix`:
/// fail when one cannot be read, has expired or is not valid yet; warn
/// when one has fewer than [`WARN_DAYS`] left; else pass. The detail names
/// dates, never a count that drifts by the day.
pub fn certificate_check(certs: &[(&str, Result<CertFile, String>)], now_unix: u64) -> Check {
    let mut fails = Vec::new();
    let mut warns = Vec::new();
    let mut fine = Vec::new();
    for (key, c) in certs {
        match c {
            Err(e) => fails.push(format!("tls.{key}: {e}")),
            Ok(c) if now_unix > c.not_after_unix => fails.push(format!(
                "{} expired at {}",
                c.path.display(),
                utc(c.not_after_unix)
            )),
            Ok(c) if now_unix < c.not_before_unix => fails.push(format!(
                "{} is not valid before {} (check the clock)",
                c.path.display(),
                utc(c.not_before_unix)
            )),
            Ok(c) if (c.not_after_unix - now_unix) < WARN_DAYS as u64 * 86_400 => {
                warns.push(format!(
                    "{} expires at {}, in less than {WARN_DAYS} days",
                    c.path.display(),
                    utc(c.not_after_unix)
                ))
            }
            Ok(c) => fine.push(format!(
                "{} valid until {}",
                c.path.display(),
                utc(c.not_after_unix)
            )),
        }
    }
    const RENEW: &str = "issue new certificates with `deckhand pki issue --renew --node NAME --address ADDR DIR` on the host that holds the CA, replace node.crt/node.key and proxy.crt/proxy.key in /etc/deckhand/pki (keys root:etcd 0640), then restart deckhand-etcd-member (or deckhand-etcd-proxy) and deckhand";
    let (state, detail) = if !fails.is_empty() {
        (
            CheckState::Fail,
            format!(
                "{}: this node's etcd connections between hosts are refused; {RENEW}",
                fails.join("; ")
            ),
        )
    } else if !warns.is_empty() {
        (CheckState::Warn, format!("{}: {RENEW}", warns.join("; ")))
    } else {
        (CheckState::Pass, fine.join("; "))
    };
    Check {
        name: "tls-certificate".into(),
        state,
        detail,
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time.
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The CLI's TLS files: `--cacert/--cert/--key`, else `ETCDCTL_CACERT`,
/// `ETCDCTL_CERT`, `ETCDCTL_KEY` (etcdctl's names), each on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliFiles {
    /// The CA certificate.
    pub cacert: Option<PathBuf>,
    /// The client certificate.
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
}

impl CliFiles {
    /// Fills what the command line left out from `env` (a lookup of
    /// `ETCDCTL_CACERT`, `ETCDCTL_CERT`, `ETCDCTL_KEY`; empty values count
    /// as unset).
    pub fn or_env(self, env: impl Fn(&str) -> Option<String>) -> CliFiles {
        let get = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        CliFiles {
            cacert: self.cacert.or_else(|| get("ETCDCTL_CACERT")),
            cert: self.cert.or_else(|| get("ETCDCTL_CERT")),
            key: self.key.or_else(|| get("ETCDCTL_KEY")),
        }
    }

    /// Whether any of the three is set.
    pub fn any(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The client material, checked ([`load_pair`], [`require_valid`]):
    /// missing ones are taken from `config` (the agent config's `[tls]`),
    /// else it is an error saying which option to give.
    ///
    /// # Errors
    /// A missing option, or a file that fails its checks.
    pub fn load(&self, config: Option<&TlsSettings>, now_unix: u64) -> Result<Tls> {
        let pick = |given: &Option<PathBuf>, from: Option<&PathBuf>, opt: &str, env: &str| {
            given.clone().or_else(|| from.cloned()).with_context(|| {
                format!("an https:// endpoint needs {opt} FILE (or {env}), or a [tls] section in the agent config")
            })
        };
        let ca = pick(
            &self.cacert,
            config.map(|c| &c.ca_file),
            "--cacert",
            "ETCDCTL_CACERT",
        )?;
        let cert = pick(
            &self.cert,
            config.map(|c| &c.cert_file),
            "--cert",
            "ETCDCTL_CERT",
        )?;
        let key = pick(
            &self.key,
            config.map(|c| &c.key_file),
            "--key",
            "ETCDCTL_KEY",
        )?;
        let (tls, file) = load_pair(&ca, &cert, &key)?;
        require_valid(&file, now_unix)?;
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: u64, not_after: u64) -> CertFile {
        CertFile {
            path: "/etc/deckhand/pki/node.crt".into(),
            common_name: "node:n1".into(),
            not_before_unix: not_before,
            not_after_unix: not_after,
            ip_sans: vec!["10.0.0.1".parse().unwrap()],
            dns_sans: vec!["n1".into()],
        }
    }

    #[test]
    fn the_node_certificate_must_name_this_node_and_its_address() {
        let c = cert(0, 1);
        let addr: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        check_node_identity(&c, "n1", addr).unwrap();
        let other = check_node_identity(&c, "n2", addr).unwrap_err().to_string();
        assert!(
            other.contains("has CN \"node:n1\", but this node is \"n2\""),
            "{other}"
        );
        assert!(
            other.contains("pki issue --node n2 --address 10.0.0.1"),
            "{other}"
        );
        let moved = check_node_identity(&c, "n1", "10.0.0.9".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            moved.contains("[10.0.0.1], not for this node's address 10.0.0.9"),
            "{moved}"
        );
    }

    #[test]
    fn the_certificate_check_passes_warns_and_fails() {
        let day = 86_400;
        let now = 1000 * day;
        let at = |c: Result<CertFile, String>| certificate_check(&[("cert_file", c)], now);
        let pass = at(Ok(cert(now - day, now + 31 * day)));
        assert_eq!(pass.state, CheckState::Pass, "{pass:?}");
        assert!(pass.detail.contains("valid until"), "{pass:?}");
        let warn = at(Ok(cert(now - day, now + 29 * day)));
        assert_eq!(warn.state, CheckState::Warn, "{warn:?}");
        assert!(
            warn.detail.contains("deckhand pki issue --renew"),
            "{warn:?}"
        );
        let expired = at(Ok(cert(now - 2 * day, now - 1)));
        assert_eq!(expired.state, CheckState::Fail, "{expired:?}");
        assert!(
            expired.detail.contains("expired at") && expired.detail.contains("--renew"),
            "{expired:?}"
        );
        let early = at(Ok(cert(now + 10, now + 90 * day)));
        assert_eq!(early.state, CheckState::Fail, "{early:?}");
        let gone = at(Err("cannot read".into()));
        assert_eq!(gone.state, CheckState::Fail);
        assert!(
            gone.detail.contains("tls.cert_file: cannot read"),
            "{gone:?}"
        );
        // The worst of several wins; the detail does not drift by the day.
        let both = certificate_check(
            &[
                ("cert_file", Ok(cert(0, now + 90 * day))),
                ("proxy_cert_file", Ok(cert(0, now + 10 * day))),
            ],
            now,
        );
        assert_eq!(both.state, CheckState::Warn);
        let later = certificate_check(
            &[
                ("cert_file", Ok(cert(0, now + 90 * day))),
                ("proxy_cert_file", Ok(cert(0, now + 10 * day))),
            ],
            now + 3600,
        );
        assert_eq!(both, later);
    }

    /// A CA and the node's files in `dir` as `deckhand pki issue` lays
    /// them out, and the [tls] settings naming them.
    fn node_dir(dir: &Path) -> (deckhand_pki::Ca, TlsSettings) {
        let ca = deckhand_pki::Ca::create("test-ca", 30).unwrap();
        let addr = "10.0.0.1".parse().unwrap();
        let node = ca.issue_node("n1", addr, 30).unwrap();
        let proxy = ca.issue_proxy("n1", addr, 30).unwrap();
        for (name, text) in [
            ("ca.crt", ca.cert_pem()),
            ("node.crt", &node.cert_pem),
            ("node.key", &node.key_pem),
            ("proxy.crt", &proxy.cert_pem),
            ("proxy.key", &proxy.key_pem),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let s = TlsSettings {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("node.crt"),
            key_file: dir.join("node.key"),
            proxy_cert_file: dir.join("proxy.crt"),
            proxy_key_file: dir.join("proxy.key"),
        };
        (ca, s)
    }

    #[test]
    fn node_files_are_checked_and_each_refusal_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, s) = node_dir(dir.path());
        let t = load_node(&s).unwrap();
        assert_eq!(t.node.common_name, "node:n1");
        assert_eq!(t.proxy.common_name, "");
        assert!(t.node.not_after_unix > t.node.not_before_unix);
        let err = |s: &TlsSettings| format!("{:#}", load_node(s).unwrap_err());

        // A missing file.
        let mut bad = s.clone();
        bad.cert_file = dir.path().join("absent.crt");
        let e = err(&bad);
        assert!(e.contains("absent.crt") && e.contains("cannot read"), "{e}");
        // Not a certificate.
        std::fs::write(dir.path().join("junk.crt"), "not a pem").unwrap();
        bad.cert_file = dir.path().join("junk.crt");
        let e = err(&bad);
        assert!(
            e.contains("junk.crt") && e.contains("not a valid PEM certificate"),
            "{e}"
        );
        // The key of another certificate.
        let mut bad = s.clone();
        bad.key_file = s.proxy_key_file.clone();
        let e = err(&bad);
        assert!(
            e.contains("does not match the certificate") && e.contains("node.crt"),
            "{e}"
        );
        // A certificate from another CA.
        let other = deckhand_pki::Ca::create("other-ca", 30).unwrap();
        let foreign = other
            .issue_node("n1", "10.0.0.1".parse().unwrap(), 30)
            .unwrap();
        std::fs::write(dir.path().join("foreign.crt"), &foreign.cert_pem).unwrap();
        std::fs::write(dir.path().join("foreign.key"), &foreign.key_pem).unwrap();
        let mut bad = s.clone();
        bad.cert_file = dir.path().join("foreign.crt");
        bad.key_file = dir.path().join("foreign.key");
        let e = err(&bad);
        assert!(
            e.contains("foreign.crt") && e.contains("not issued by the CA"),
            "{e}"
        );
        // A proxy certificate with a CN (the node certificate in its place).
        let mut bad = s.clone();
        bad.proxy_cert_file = s.cert_file.clone();
        bad.proxy_key_file = s.key_file.clone();
        let e = err(&bad);
        assert!(
            e.contains("tls.proxy_cert_file") && e.contains("empty CN"),
            "{e}"
        );
        // The CLI's own pair: an expired certificate is an error there.
        let files = CliFiles {
            cacert: Some(s.ca_file.clone()),
            cert: Some(s.cert_file.clone()),
            key: Some(s.key_file.clone()),
        };
        assert!(
            files
                .load(None, super::super::agent::observe::unix_now())
                .is_ok()
        );
        let e = format!(
            "{:#}",
            files.load(None, t.node.not_after_unix + 1).unwrap_err()
        );
        assert!(e.contains("expired at") && e.contains("--renew"), "{e}");
        // Missing options come from the config's [tls].
        let only_ca = CliFiles {
            cacert: Some(s.ca_file.clone()),
            ..CliFiles::default()
        };
        assert!(only_ca.load(Some(&s), t.node.not_before_unix + 1).is_ok());
        drop(ca);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_169_600 + 3661), "2026-12-02 01:01:01 UTC");
    }

    #[test]
    fn cli_files_come_from_options_then_etcdctl_env_then_config() {
        let env = |k: &str| match k {
            "ETCDCTL_CACERT" => Some("/env/ca.crt".to_string()),
            "ETCDCTL_CERT" => Some(String::new()),
            _ => None,
        };
        let f = CliFiles {
            key: Some("/opt/k".into()),
            ..CliFiles::default()
        }
        .or_env(env);
        assert_eq!(f.cacert.as_deref(), Some(Path::new("/env/ca.crt")));
        assert_eq!(f.cert, None, "an empty variable counts as unset");
        assert_eq!(f.key.as_deref(), Some(Path::new("/opt/k")));
        let e = format!("{:#}", f.load(None, 0).unwrap_err());
        assert!(e.contains("--cert FILE (or ETCDCTL_CERT)"), "{e}");
    }
}

//! Checking the certificates the signer issued and installing them: the
//! node's key and its certificate, the proxy's key and its certificate,
//! where `[tls]` names them. The old files are moved aside (hard links
//! `FILE.old-<UTC time>`, never deleted), each new file replaces its name
//! atomically (written in full under a temporary name, fsynced, renamed
//! over), with the mode and group of the file it replaces (the pki
//! directory's group on a join: `root:etcd`, keys 0640, certificates 0644).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use deckhand_model::pki::CertIssued;
use deckhand_pki::CertInfo;

use crate::config::TlsSettings;

/// Mode of an installed key: the member and proxy (user etcd) read it
/// through the group.
pub const KEY_MODE: u32 = 0o640;
/// Mode of an installed certificate.
pub const CERT_MODE: u32 = 0o644;

/// The new files' contents: two keys made on this node and the
/// certificates issued for them.
#[derive(Clone)]
pub struct NewFiles {
    /// The node certificate (PEM).
    pub cert_pem: String,
    /// Its key (PEM), made on this node.
    pub key_pem: String,
    /// The proxy certificate (PEM).
    pub proxy_cert_pem: String,
    /// Its key (PEM), made on this node.
    pub proxy_key_pem: String,
}

impl std::fmt::Debug for NewFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewFiles")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("proxy_cert_pem", &self.proxy_cert_pem)
            .field("proxy_key_pem", &"<redacted>")
            .finish()
    }
}

/// Checks what the signer wrote against this node's own trust anchor
/// (`local_ca_pem`, the CA file from the install, never the CA in the
/// answer) and keys: the CA in the answer is that CA; the node certificate
/// was issued by it, matches `key_pem`, has CN `node:<name>`, both uses,
/// `address` among its SANs and is valid now; the proxy certificate was
/// issued by it, matches `proxy_key_pem`, has no CN and `address` as SAN.
///
/// # Errors
/// Each says what is wrong.
pub fn verify(
    issued: &CertIssued,
    local_ca_pem: &str,
    name: &str,
    address: std::net::IpAddr,
    key_pem: &str,
    proxy_key_pem: &str,
    now_unix: u64,
) -> Result<NewFiles> {
    ensure!(
        issued.ca_pem.trim() == local_ca_pem.trim(),
        "the CA certificate in the answer is not this node's CA (tls.ca_file): refused"
    );
    deckhand_pki::verify_issued_by(local_ca_pem, &issued.cert_pem)
        .context("the node certificate")?;
    ensure!(
        deckhand_pki::key_matches(&issued.cert_pem, key_pem)?,
        "the node certificate is not for this node's new key"
    );
    let info = CertInfo::from_pem(&issued.cert_pem)?;
    let cn = deckhand_pki::node_common_name(name);
    ensure!(
        info.common_name.as_deref() == Some(cn.as_str()),
        "the node certificate's CN is {:?}, not {cn:?}",
        info.common_name
    );
    ensure!(
        info.ip_sans.contains(&address),
        "the node certificate's SANs {:?} lack this node's address {address}",
        info.ip_sans
    );
    ensure!(
        info.server_auth && info.client_auth,
        "the node certificate is not for both server and client use"
    );
    ensure!(
        info.is_valid_at(now_unix),
        "the node certificate is not valid now (from {} to {})",
        info.not_before_utc(),
        info.not_after_utc()
    );
    deckhand_pki::verify_issued_by(local_ca_pem, &issued.proxy_cert_pem)
        .context("the proxy certificate")?;
    ensure!(
        deckhand_pki::key_matches(&issued.proxy_cert_pem, proxy_key_pem)?,
        "the proxy certificate is not for this node's new proxy key"
    );
    let p = CertInfo::from_pem(&issued.proxy_cert_pem)?;
    ensure!(
        p.common_name.is_none(),
        "the proxy certificate has CN {:?}: etcd's grpc-proxy refuses it",
        p.common_name
    );
    ensure!(
        p.ip_sans == vec![address],
        "the proxy certificate's SANs are {:?}, not [{address}]",
        p.ip_sans
    );
    Ok(NewFiles {
        cert_pem: issued.cert_pem.clone(),
        key_pem: key_pem.to_owned(),
        proxy_cert_pem: issued.proxy_cert_pem.clone(),
        proxy_key_pem: proxy_key_pem.to_owned(),
    })
}

/// One file installed: where, and where its old version was moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The file.
    pub path: PathBuf,
    /// Its previous version, kept; `None` when there was none (a join).
    pub old: Option<PathBuf>,
}

fn stamp(now_unix: u64) -> String {
    deckhand_pki::utc_rfc3339(now_unix).replace(['-', ':'], "")
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `contents` to a new temporary file beside `path` with `mode` and
/// group `gid`, fsynced; returns its name.
fn stage(path: &Path, contents: &[u8], mode: u32, gid: u32) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy();
    let nonce = deckhand_pki::random_nonce()?;
    let tmp = dir_of(path).join(format!(
        ".{name}.new-{}-{:02x}{:02x}{:02x}{:02x}",
        std::process::id(),
        nonce[0],
        nonce[1],
        nonce[2],
        nonce[3]
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        if f.metadata()?.gid() != gid {
            std::os::unix::fs::fchown(&f, None, Some(gid)).with_context(|| {
                format!(
                    "cannot give {} the group {gid} (the agent needs CAP_CHOWN)",
                    tmp.display()
                )
            })?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Keeps the old `path` as `path.old-<stamp>` (a hard link) and renames
/// `tmp` over `path`; returns the name the old file is kept under.
fn replace(path: &Path, tmp: &Path, stamp: &str) -> Result<Option<PathBuf>> {
    let old = if path.symlink_metadata().is_ok() {
        let aside = PathBuf::from(format!("{}.old-{stamp}", path.display()));
        if aside.symlink_metadata().is_ok() {
            bail!("{} exists already", aside.display());
        }
        std::fs::hard_link(path, &aside)
            .with_context(|| format!("cannot keep {} as {}", path.display(), aside.display()))?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(tmp, path)
        .with_context(|| format!("cannot move the new {} in place", path.display()))?;
    Ok(old)
}

/// Installs `files` where `s` names them, at `now_unix` (the stamp of the
/// names the old files are kept under). All four are staged first (nothing
/// changes if one cannot be written); then each key and its certificate,
/// one after the other: the old file is hard-linked to `FILE.old-<UTC
/// time>` and the new one renamed over its name, so the name always holds
/// a whole file, old or new. Between a key's rename and its certificate's,
/// a TLS handshake that reads both (etcd re-reads them on each new
/// connection) can see a mismatched pair and fail; that window is two
/// renames long.
///
/// # Errors
/// A file that cannot be staged, linked aside or renamed (the staged files
/// are removed; files already replaced stay replaced, their old versions
/// kept).
pub fn install(s: &TlsSettings, files: &NewFiles, now_unix: u64) -> Result<Vec<Installed>> {
    let plan = [
        (&s.key_file, &files.key_pem, KEY_MODE),
        (&s.cert_file, &files.cert_pem, CERT_MODE),
        (&s.proxy_key_file, &files.proxy_key_pem, KEY_MODE),
        (&s.proxy_cert_file, &files.proxy_cert_pem, CERT_MODE),
    ];
    let mut staged = Vec::new();
    for (path, contents, mode) in plan {
        let gid = match std::fs::metadata(path) {
            Ok(m) => m.gid(),
            Err(_) => std::fs::metadata(dir_of(path))
                .with_context(|| format!("cannot read the directory of {}", path.display()))?
                .gid(),
        };
        match stage(path, contents.as_bytes(), mode, gid) {
            Ok(tmp) => staged.push((path.clone(), tmp)),
            Err(e) => {
                for (_, t) in &staged {
                    let _ = std::fs::remove_file(t);
                }
                return Err(e);
            }
        }
    }
    let st = stamp(now_unix);
    let mut done = Vec::new();
    let mut result = Ok(());
    for (path, tmp) in &staged {
        if result.is_err() {
            let _ = std::fs::remove_file(tmp);
            continue;
        }
        result = replace(path, tmp, &st).map(|old| {
            done.push(Installed {
                path: path.clone(),
                old,
            })
        });
        if result.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
    }
    for d in staged.iter().map(|(p, _)| dir_of(p)) {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
    result.map(|()| done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> TlsSettings {
        TlsSettings {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("node.crt"),
            key_file: dir.join("node.key"),
            proxy_cert_file: dir.join("proxy.crt"),
            proxy_key_file: dir.join("proxy.key"),
            ..TlsSettings::default()
        }
    }

    /// A CA, a request for n4 at 10.0.0.4 and its answer.
    fn answer(ca: &deckhand_pki::Ca) -> (CertIssued, String, String) {
        let addr = "10.0.0.4".parse().unwrap();
        let (key, csr) = deckhand_pki::generate_csr("n4", addr).unwrap();
        let (pkey, pcsr) = deckhand_pki::generate_proxy_csr(addr).unwrap();
        let issued = CertIssued {
            csr_sha256: deckhand_pki::sha256_hex(csr.as_bytes()),
            cert_pem: ca.sign_node_csr(&csr, "n4", addr, 30).unwrap(),
            proxy_cert_pem: ca.sign_proxy_csr(&pcsr, "n4", addr, 30).unwrap(),
            ca_pem: ca.cert_pem().to_owned(),
            signer: "n1".into(),
        };
        (issued, key, pkey)
    }

    fn now() -> u64 {
        crate::agent::observe::unix_now()
    }

    #[test]
    fn an_answer_is_checked_against_the_local_ca_and_the_new_keys() {
        let ca = deckhand_pki::Ca::create("ca", 30).unwrap();
        let addr = "10.0.0.4".parse().unwrap();
        let (issued, key, pkey) = answer(&ca);
        verify(&issued, ca.cert_pem(), "n4", addr, &key, &pkey, now()).unwrap();
        let e = |i: &CertIssued, name: &str, key: &str| {
            format!(
                "{:#}",
                verify(i, ca.cert_pem(), name, addr, key, &pkey, now()).unwrap_err()
            )
        };
        // Another name, another key, an answer with another CA.
        assert!(e(&issued, "n5", &key).contains("not \"node:n5\""));
        assert!(e(&issued, "n4", &pkey).contains("not for this node's new key"));
        let rogue = deckhand_pki::Ca::create("rogue", 30).unwrap();
        let (mut r, rkey, _) = answer(&rogue);
        assert!(e(&r, "n4", &rkey).contains("not this node's CA"));
        // ... even when the answer names the local CA.
        r.ca_pem = ca.cert_pem().to_owned();
        assert!(e(&r, "n4", &rkey).contains("not issued by this CA"));
        // Another address.
        let other = "10.0.0.5".parse().unwrap();
        let m = format!(
            "{:#}",
            verify(&issued, ca.cert_pem(), "n4", other, &key, &pkey, now()).unwrap_err()
        );
        assert!(m.contains("lack this node's address 10.0.0.5"), "{m}");
        // Proxy certificate swapped with the node's.
        let mut swapped = issued.clone();
        swapped.proxy_cert_pem = issued.cert_pem.clone();
        assert!(e(&swapped, "n4", &key).contains("new proxy key"));
    }

    #[test]
    fn installing_keeps_the_old_files_and_their_mode_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let ca = deckhand_pki::Ca::create("ca", 30).unwrap();
        let (issued, key, pkey) = answer(&ca);
        let files = verify(
            &issued,
            ca.cert_pem(),
            "n4",
            "10.0.0.4".parse().unwrap(),
            &key,
            &pkey,
            now(),
        )
        .unwrap();
        // A join: no files yet.
        let done = install(&s, &files, 1_796_169_600).unwrap();
        assert_eq!(done.len(), 4);
        assert!(done.iter().all(|d| d.old.is_none()));
        assert_eq!(std::fs::read_to_string(&s.key_file).unwrap(), key);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&s.key_file), 0o640);
        assert_eq!(mode(&s.cert_file), 0o644);
        // A renewal: the old files are kept, with their content.
        std::fs::set_permissions(&s.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (issued2, key2, pkey2) = answer(&ca);
        let files2 = verify(
            &issued2,
            ca.cert_pem(),
            "n4",
            "10.0.0.4".parse().unwrap(),
            &key2,
            &pkey2,
            now(),
        )
        .unwrap();
        let done = install(&s, &files2, 1_796_169_601).unwrap();
        let aside = dir.path().join("node.key.old-20261202T000001Z");
        assert_eq!(done[0].old.as_deref(), Some(aside.as_path()));
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), key);
        assert_eq!(std::fs::read_to_string(&s.key_file).unwrap(), key2);
        assert_eq!(
            std::fs::read_to_string(&s.proxy_cert_file).unwrap(),
            issued2.proxy_cert_pem
        );
        assert_eq!(mode(&s.key_file), 0o640, "an installed key is 0640");
        // No temporary file is left; nothing was deleted.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 8, "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        // The same second again: the aside name is taken, nothing changes
        // but what was done before the refusal, and staged files are gone.
        let e = install(&s, &files, 1_796_169_601).unwrap_err();
        assert!(format!("{e:#}").contains("exists already"), "{e:#}");
        assert_eq!(std::fs::read_to_string(&s.key_file).unwrap(), key2);
        let dots = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(dots, 0);
    }
}

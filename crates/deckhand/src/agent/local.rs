//! The node's local etcd side: the member and proxy units, their
//! environment files, the member data dir and the bootstrap marker (their
//! paths: [`crate::paths`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use deckhand_plan::identity::RecordedIdentity;
use deckhand_plan::{LocalView, MemberEnvView};
use deckhand_systemd::{Systemd, parse_env_file, render_env_file, write_atomic};

use crate::config::Settings;
use crate::connect::LOCALHOST_CLIENT_URL;
use crate::identity::Identity;
use crate::{failpoint, member_check, paths};

/// The member unit (`units/deckhand-etcd-member.service`).
pub const MEMBER_UNIT: &str = "deckhand-etcd-member.service";
/// The proxy unit (`units/deckhand-etcd-proxy.service`).
pub const PROXY_UNIT: &str = "deckhand-etcd-proxy.service";
/// How long a unit start, stop or restart job may take.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(20);

/// Paths and identity for local actions.
#[derive(Debug, Clone)]
pub struct Local {
    /// The systemd manager.
    pub systemd: Systemd,
    /// Who we are.
    pub identity: Identity,
    /// The agent settings.
    pub settings: Settings,
    /// [`paths::STATE_DIR`], overridable for tests.
    pub state_dir: PathBuf,
}

impl Local {
    fn member_env_path(&self) -> PathBuf {
        self.state_dir.join(paths::MEMBER_ENV)
    }
    fn proxy_env_path(&self) -> PathBuf {
        self.state_dir.join(paths::PROXY_ENV)
    }
    fn marker_path(&self) -> PathBuf {
        self.state_dir.join(paths::BOOTSTRAPPED)
    }

    /// Observes units and files.
    ///
    /// # Errors
    /// D-Bus failures reading the unit states.
    pub async fn observe(&self) -> Result<LocalView> {
        let member = self.systemd.unit_state(MEMBER_UNIT).await?;
        let proxy = self.systemd.unit_state(PROXY_UNIT).await?;
        let member_env = std::fs::read_to_string(self.member_env_path())
            .ok()
            .map(|t| parse_env_file(&t))
            .map(|vars| MemberEnvView {
                member_id: vars
                    .get("DECKHAND_MEMBER_ID")
                    .and_then(|v| u64::from_str_radix(v, 16).ok()),
                serves_localhost: vars
                    .get("ETCD_LISTEN_CLIENT_URLS")
                    .is_some_and(|v| v.split(',').any(|u| u == LOCALHOST_CLIENT_URL)),
            });
        let mut proxy_endpoints: Vec<String> = std::fs::read_to_string(self.proxy_env_path())
            .ok()
            .map(|t| parse_env_file(&t))
            .and_then(|vars| vars.get("PROXY_ENDPOINTS").cloned())
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        proxy_endpoints.sort();
        Ok(LocalView {
            member_unit_active: member.is_active(),
            proxy_unit_active: proxy.is_active(),
            member_env,
            proxy_endpoints,
            data_dir_exists: self.settings.data_dir.exists(),
            // `[restore] expect`: the node counts as bootstrapped, so it
            // never bootstraps a new cluster; `deckhand restore` writes the
            // marker itself.
            bootstrapped: self.marker_path().exists() || self.settings.expect_restore,
        })
    }

    fn member_env(
        &self,
        initial_cluster: &str,
        state: &str,
        localhost: bool,
        id: Option<u64>,
        cluster_id: Option<u64>,
    ) -> Result<String> {
        member_env(
            &self.identity,
            &self.settings,
            initial_cluster,
            state,
            localhost,
            id,
            cluster_id,
        )
    }

    fn mark_bootstrapped(&self) -> Result<()> {
        write_atomic(&self.marker_path(), b"1\n", 0o644)
            .with_context(|| format!("writing {}", self.marker_path().display()))?;
        Ok(())
    }

    /// First boot of an initial member: environment with state `new` and the
    /// localhost listener, then start. Stops a proxy first (it holds
    /// `127.0.0.1:2379`).
    pub async fn bootstrap_member(&self) -> Result<()> {
        let env = self.member_env(&self.settings.initial_cluster_raw, "new", true, None, None)?;
        write_atomic(&self.member_env_path(), env.as_bytes(), 0o644)?;
        self.mark_bootstrapped()?;
        self.systemd.stop(PROXY_UNIT, JOB_TIMEOUT).await?;
        self.start_member().await
    }

    /// Starts the member unit from its environment.
    pub async fn start_member(&self) -> Result<()> {
        self.systemd.reset_failed(MEMBER_UNIT).await?;
        Ok(self.systemd.start(MEMBER_UNIT, JOB_TIMEOUT).await?)
    }

    /// Writes the learner's environment (state `existing`, node address
    /// only) and starts it; moves an old data dir aside first when asked.
    pub async fn start_learner(
        &self,
        id: u64,
        initial_cluster: &str,
        move_aside: bool,
    ) -> Result<()> {
        if move_aside {
            self.move_data_dir_aside()?;
        }
        let env = self.member_env(initial_cluster, "existing", false, Some(id), None)?;
        write_atomic(&self.member_env_path(), env.as_bytes(), 0o644)?;
        self.mark_bootstrapped()?;
        self.start_member().await
    }

    /// Hands `127.0.0.1:2379` from the proxy to the promoted member: adds the
    /// localhost listener to the member environment, stops the proxy and
    /// restarts the member. Clients see `localhost:2379` refuse connections
    /// for the length of one member restart (etcd 3.4 has no SO_REUSEPORT
    /// option, so two processes cannot share the port).
    pub async fn serve_localhost_from_member(&self) -> Result<()> {
        let path = self.member_env_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let vars: BTreeMap<String, String> = parse_env_file(&text);
        let initial = vars
            .get("ETCD_INITIAL_CLUSTER")
            .cloned()
            .unwrap_or_default();
        let state = vars
            .get("ETCD_INITIAL_CLUSTER_STATE")
            .cloned()
            .unwrap_or_else(|| "existing".into());
        let recorded = member_check::recorded_identity(&vars);
        let env = self.member_env(
            &initial,
            &state,
            true,
            recorded.member_id,
            recorded.cluster_id,
        )?;
        write_atomic(&path, env.as_bytes(), 0o644)?;
        failpoint::hit("mid-serve-localhost");
        self.systemd.stop(PROXY_UNIT, JOB_TIMEOUT).await?;
        self.systemd.restart(MEMBER_UNIT, JOB_TIMEOUT).await?;
        Ok(())
    }

    /// Writes the proxy environment and starts the proxy (restarts it when
    /// `restart`, so that a running proxy picks the new endpoints up).
    pub async fn start_proxy(&self, endpoints: &[String], restart: bool) -> Result<()> {
        let env = proxy_env(&self.settings, endpoints)?;
        write_atomic(&self.proxy_env_path(), env.as_bytes(), 0o644)?;
        self.systemd.reset_failed(PROXY_UNIT).await?;
        if restart {
            self.systemd.restart(PROXY_UNIT, JOB_TIMEOUT).await?;
        } else {
            self.systemd.start(PROXY_UNIT, JOB_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Stops the member unit.
    pub async fn stop_member(&self) -> Result<()> {
        Ok(self.systemd.stop(MEMBER_UNIT, JOB_TIMEOUT).await?)
    }

    /// The identity recorded in the member environment
    /// (`DECKHAND_MEMBER_ID`, `DECKHAND_CLUSTER_ID`); empty without one.
    pub fn recorded_identity(&self) -> RecordedIdentity {
        std::fs::read_to_string(self.member_env_path())
            .map(|t| member_check::recorded_identity(&parse_env_file(&t)))
            .unwrap_or_default()
    }

    /// Records the confirmed member's identity in its environment (the
    /// other variables unchanged): what the member unit's start check
    /// compares the data dir with when no other voter answers. Read by etcd
    /// at its next start only.
    pub fn record_identity(&self, member_id: u64, cluster_id: u64) -> Result<()> {
        let path = self.member_env_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut vars: BTreeMap<String, String> = parse_env_file(&text);
        vars.insert("DECKHAND_MEMBER_ID".into(), format!("{member_id:x}"));
        vars.insert("DECKHAND_CLUSTER_ID".into(), format!("{cluster_id:x}"));
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let env = render_env_file(&pairs)?;
        write_atomic(&path, env.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The reason the member unit's start check last refused the data dir
    /// ([`member_check::refusal_path`]), if it did and no check passed since.
    pub fn start_refused(&self) -> Option<String> {
        std::fs::read_to_string(member_check::refusal_path(&self.settings.data_dir))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    /// Moves the start check's refusal aside with the data dir it was
    /// about (`<refusal>.removed-<unix seconds>`): the reason stays on disk
    /// beside the data dir.
    fn move_refusal_aside(&self, stamp: u64) -> Result<()> {
        let path = member_check::refusal_path(&self.settings.data_dir);
        if path.exists() {
            let aside = aside_name(&path, stamp);
            std::fs::rename(&path, &aside)
                .with_context(|| format!("moving {} aside", path.display()))?;
        }
        Ok(())
    }

    /// Renames the data dir to `<data_dir>.removed-<unix seconds>` (never
    /// deletes it), the member environment and the start check's refusal
    /// beside it. Returns the new
    /// data dir name, if there was one.
    pub fn move_data_dir_aside(&self) -> Result<Option<PathBuf>> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut moved = None;
        let dir = &self.settings.data_dir;
        if dir.exists() {
            let aside = aside_name(dir, stamp);
            std::fs::rename(dir, &aside).with_context(|| {
                format!("moving {} aside to {}", dir.display(), aside.display())
            })?;
            tracing::warn!(
                "moved the member data dir {} aside to {}",
                dir.display(),
                aside.display()
            );
            moved = Some(aside);
        }
        let env = self.member_env_path();
        if env.exists() {
            let aside = aside_name(&env, stamp);
            std::fs::rename(&env, &aside)
                .with_context(|| format!("moving {} aside", env.display()))?;
        }
        self.move_refusal_aside(stamp)?;
        Ok(moved)
    }
}

/// The member unit's environment file (etcd reads `ETCD_<FLAG>` variables
/// as its flags, <https://etcd.io/docs/v3.4/op-guide/configuration/>):
/// the node's peer and client URLs (`https://` with TLS), plaintext
/// `http://127.0.0.1:2379` beside them when `localhost`, and with TLS the
/// server and peer certificate files with client-certificate auth on
/// both sides. etcd serves only TLS on an `https://` listen URL, so every
/// listener but loopback refuses plaintext. `id`/`cluster_id`: the member
/// identity recorded for the start check.
///
/// # Errors
/// A value that cannot be written to an env file (a newline in a path).
pub fn member_env(
    identity: &Identity,
    settings: &Settings,
    initial_cluster: &str,
    state: &str,
    localhost: bool,
    id: Option<u64>,
    cluster_id: Option<u64>,
) -> Result<String> {
    let ip_client = identity.client_url();
    let listen_client = if localhost {
        format!("{ip_client},{LOCALHOST_CLIENT_URL}")
    } else {
        ip_client.clone()
    };
    let data_dir = settings.data_dir.to_string_lossy().to_string();
    let peer = identity.peer_url();
    let id_hex = id.map(|i| format!("{i:x}")).unwrap_or_default();
    let cluster_hex = cluster_id.map(|i| format!("{i:x}")).unwrap_or_default();
    let mut vars: Vec<(&str, &str)> = vec![
        ("ETCD_NAME", &identity.name),
        ("ETCD_DATA_DIR", &data_dir),
        ("ETCD_LISTEN_PEER_URLS", &peer),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", &peer),
        ("ETCD_LISTEN_CLIENT_URLS", &listen_client),
        ("ETCD_ADVERTISE_CLIENT_URLS", &ip_client),
        ("ETCD_INITIAL_CLUSTER", initial_cluster),
        ("ETCD_INITIAL_CLUSTER_STATE", state),
        (
            "ETCD_INITIAL_CLUSTER_TOKEN",
            &settings.initial_cluster_token,
        ),
        // A member coming back from a partition asks before it campaigns,
        // instead of forcing an election on the healthy majority.
        ("ETCD_PRE_VOTE", "true"),
    ];
    let files = settings.tls.as_ref().map(|t| {
        (
            t.ca_file.to_string_lossy().to_string(),
            t.cert_file.to_string_lossy().to_string(),
            t.key_file.to_string_lossy().to_string(),
        )
    });
    if let Some((ca, cert, key)) = &files {
        // Clients on the node address: TLS, with a certificate from the CA.
        vars.push(("ETCD_TRUSTED_CA_FILE", ca));
        vars.push(("ETCD_CERT_FILE", cert));
        vars.push(("ETCD_KEY_FILE", key));
        vars.push(("ETCD_CLIENT_CERT_AUTH", "true"));
        // Peers: the same node certificate (server and client EKU).
        vars.push(("ETCD_PEER_TRUSTED_CA_FILE", ca));
        vars.push(("ETCD_PEER_CERT_FILE", cert));
        vars.push(("ETCD_PEER_KEY_FILE", key));
        vars.push(("ETCD_PEER_CLIENT_CERT_AUTH", "true"));
    }
    if id.is_some() {
        vars.push(("DECKHAND_MEMBER_ID", &id_hex));
    }
    if cluster_id.is_some() {
        vars.push(("DECKHAND_CLUSTER_ID", &cluster_hex));
    }
    Ok(render_env_file(&vars)?)
}

/// The proxy unit's environment file: `PROXY_ENDPOINTS` (the voters'
/// client URLs, comma-separated) and `PROXY_TLS_ARGS`, the grpc-proxy's
/// client identity towards the members with TLS on (`--cacert=CA
/// --cert=PROXY_CERT --key=PROXY_KEY`, the proxy certificate with its
/// empty CN, <https://etcd.io/docs/v3.4/op-guide/grpc_proxy/>), empty
/// without. The proxy itself listens on plaintext `127.0.0.1:2379` only.
///
/// # Errors
/// A value that cannot be written to an env file, or a path with a space
/// (the unit splits `PROXY_TLS_ARGS` on whitespace).
pub fn proxy_env(settings: &Settings, endpoints: &[String]) -> Result<String> {
    // etcd's grpc-proxy speaks the scheme of its FIRST endpoint to all of
    // them (seen while `deckhand tls enable` runs, when some members serve
    // http:// and some https://): the larger group first, https:// on a tie.
    let mut endpoints = endpoints.to_vec();
    let https = endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    if settings.tls.is_some() && 2 * https >= endpoints.len() {
        endpoints.sort_by_key(|e| !e.starts_with("https://"));
    }
    let joined = endpoints.join(",");
    let args = match &settings.tls {
        Some(t) => {
            let paths = [&t.ca_file, &t.proxy_cert_file, &t.proxy_key_file];
            if let Some(p) = paths
                .iter()
                .find(|p| p.to_string_lossy().contains(char::is_whitespace))
            {
                anyhow::bail!(
                    "the TLS file path {p:?} holds whitespace; the proxy unit cannot pass it"
                );
            }
            format!(
                "--cacert={} --cert={} --key={}",
                t.ca_file.display(),
                t.proxy_cert_file.display(),
                t.proxy_key_file.display()
            )
        }
        None => String::new(),
    };
    Ok(render_env_file(&[
        ("PROXY_ENDPOINTS", &joined),
        ("PROXY_TLS_ARGS", &args),
    ])?)
}

fn aside_name(path: &Path, stamp: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".removed-{stamp}"));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_fragment, validate};

    fn settings(text: &str) -> Settings {
        parse_fragment(text).and_then(validate).unwrap()
    }

    fn identity(tls: bool) -> Identity {
        Identity {
            id: "a".repeat(32),
            name: "n1".into(),
            address: "10.0.0.1".parse().unwrap(),
            tls,
        }
    }

    const PLAIN: &str = "[etcd]\nendpoints=[\"http://10.0.0.2:2379\"]\n";
    const TLS: &str = "[tls]\n[etcd]\nendpoints=[\"https://10.0.0.2:2379\"]\n";

    #[test]
    fn member_env_with_tls_serves_https_on_the_node_and_plaintext_on_loopback() {
        let s = settings(TLS);
        let text = member_env(
            &identity(true),
            &s,
            "n1=https://10.0.0.1:2380",
            "new",
            true,
            None,
            None,
        )
        .unwrap();
        let v = parse_env_file(&text);
        assert_eq!(v["ETCD_LISTEN_PEER_URLS"], "https://10.0.0.1:2380");
        assert_eq!(
            v["ETCD_INITIAL_ADVERTISE_PEER_URLS"],
            "https://10.0.0.1:2380"
        );
        assert_eq!(
            v["ETCD_LISTEN_CLIENT_URLS"],
            "https://10.0.0.1:2379,http://127.0.0.1:2379"
        );
        assert_eq!(v["ETCD_ADVERTISE_CLIENT_URLS"], "https://10.0.0.1:2379");
        for (k, want) in [
            ("ETCD_TRUSTED_CA_FILE", "/etc/deckhand/pki/ca.crt"),
            ("ETCD_CERT_FILE", "/etc/deckhand/pki/node.crt"),
            ("ETCD_KEY_FILE", "/etc/deckhand/pki/node.key"),
            ("ETCD_CLIENT_CERT_AUTH", "true"),
            ("ETCD_PEER_TRUSTED_CA_FILE", "/etc/deckhand/pki/ca.crt"),
            ("ETCD_PEER_CERT_FILE", "/etc/deckhand/pki/node.crt"),
            ("ETCD_PEER_KEY_FILE", "/etc/deckhand/pki/node.key"),
            ("ETCD_PEER_CLIENT_CERT_AUTH", "true"),
        ] {
            assert_eq!(v.get(k).map(String::as_str), Some(want), "{k} in {text}");
        }
        // The learner (no localhost listener) and the localhost check.
        let learner = member_env(
            &identity(true),
            &s,
            "x",
            "existing",
            false,
            Some(0xab),
            None,
        )
        .unwrap();
        let v = parse_env_file(&learner);
        assert_eq!(v["ETCD_LISTEN_CLIENT_URLS"], "https://10.0.0.1:2379");
        assert_eq!(v["DECKHAND_MEMBER_ID"], "ab");
        assert_eq!(v["ETCD_CLIENT_CERT_AUTH"], "true");
    }

    #[test]
    fn member_env_at_tls_stage_certs_listens_plaintext_with_the_files() {
        // `deckhand tls enable`'s first stage: the files at the default
        // paths, the node's URLs still http:// (identity.tls false).
        let s = crate::tls_enable::apply(settings(PLAIN), crate::tls_enable::Stage::Certs);
        let text = member_env(&identity(false), &s, "x", "existing", true, None, None).unwrap();
        let v = parse_env_file(&text);
        assert_eq!(v["ETCD_LISTEN_PEER_URLS"], "http://10.0.0.1:2380");
        assert_eq!(
            v["ETCD_LISTEN_CLIENT_URLS"],
            "http://10.0.0.1:2379,http://127.0.0.1:2379"
        );
        assert_eq!(v["ETCD_PEER_CERT_FILE"], "/etc/deckhand/pki/node.crt");
        assert_eq!(v["ETCD_CERT_FILE"], "/etc/deckhand/pki/node.crt");
        // Stage https: the same files, https:// on the node address only.
        let s = crate::tls_enable::apply(settings(PLAIN), crate::tls_enable::Stage::Https);
        let text = member_env(&identity(true), &s, "x", "existing", true, None, None).unwrap();
        let v = parse_env_file(&text);
        assert_eq!(v["ETCD_LISTEN_PEER_URLS"], "https://10.0.0.1:2380");
        assert_eq!(
            v["ETCD_LISTEN_CLIENT_URLS"],
            "https://10.0.0.1:2379,http://127.0.0.1:2379"
        );
        assert_eq!(v["ETCD_ADVERTISE_CLIENT_URLS"], "https://10.0.0.1:2379");
    }

    #[test]
    fn member_env_without_tls_has_no_tls_variables() {
        let text = member_env(
            &identity(false),
            &settings(PLAIN),
            "x",
            "new",
            true,
            None,
            None,
        )
        .unwrap();
        let v = parse_env_file(&text);
        assert_eq!(
            v["ETCD_LISTEN_CLIENT_URLS"],
            "http://10.0.0.1:2379,http://127.0.0.1:2379"
        );
        assert_eq!(v["ETCD_LISTEN_PEER_URLS"], "http://10.0.0.1:2380");
        assert!(
            v.keys()
                .all(|k| !k.contains("CERT") && !k.contains("CA_FILE")),
            "{text}"
        );
    }

    #[test]
    fn proxy_env_passes_the_proxy_certificate_with_tls_only() {
        let eps = [
            "https://10.0.0.2:2379".to_string(),
            "https://10.0.0.3:2379".to_string(),
        ];
        let v = parse_env_file(&proxy_env(&settings(TLS), &eps).unwrap());
        assert_eq!(
            v["PROXY_ENDPOINTS"],
            "https://10.0.0.2:2379,https://10.0.0.3:2379"
        );
        assert_eq!(
            v["PROXY_TLS_ARGS"],
            "--cacert=/etc/deckhand/pki/ca.crt --cert=/etc/deckhand/pki/proxy.crt --key=/etc/deckhand/pki/proxy.key"
        );
        let v =
            parse_env_file(&proxy_env(&settings(PLAIN), &["http://10.0.0.2:2379".into()]).unwrap());
        assert_eq!(v["PROXY_ENDPOINTS"], "http://10.0.0.2:2379");
        assert_eq!(v["PROXY_TLS_ARGS"], "");
        // A path with a space cannot be split right by the unit: refused.
        let spaced = settings(
            "[tls]\nproxy_key_file=\"/etc/deck hand/proxy.key\"\n[etcd]\nendpoints=[\"https://10.0.0.2:2379\"]\n",
        );
        let e = format!("{:#}", proxy_env(&spaced, &eps).unwrap_err());
        assert!(e.contains("whitespace"), "{e}");
    }
}

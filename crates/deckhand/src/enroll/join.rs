//! The join at start-up: `deckhand agent` on a node with `[tls]` on whose
//! node certificate and key are both absent, and a join credential
//! configured (`tls.join_cert_file`, `tls.join_key_file`), asks for its
//! certificates before anything else: through the members'
//! `https://ADDR:2379` (`etcd.endpoints`) with the join credential, since
//! nothing serves `localhost:2379` on it yet. It waits until they are
//! issued and installed (telling systemd its state and extending the start
//! timeout meanwhile), then the agent starts as usual with its new files.
//!
//! The join credential is a client certificate of the cluster CA. Without
//! etcd auth (not built yet) etcd grants it everything any certificate
//! gets: it is NOT limited to asking, whatever its name says.

use std::time::Duration;

use anyhow::{Context, Result};
use deckhand_model::pki::RequestKind;
use deckhand_systemd::notify;

use super::requester::{Ask, ask_and_install};
use crate::config::Settings;
use crate::store::Store;

/// Whether the agent must join first: TLS on, both node files absent, a
/// join credential configured.
pub fn needed(settings: &Settings) -> bool {
    settings.tls.as_ref().is_some_and(|t| {
        t.join.is_some()
            && t.cert_file.symlink_metadata().is_err()
            && t.key_file.symlink_metadata().is_err()
    })
}

/// Joins (see the module doc); returns once the files are installed.
///
/// # Errors
/// The join credential cannot be used, the identity cannot be detected,
/// or installing failed. Waiting for the signer is no error: it waits.
pub async fn join(settings: &Settings) -> Result<()> {
    let identity = crate::identity::detect(settings).context("detecting this node's identity")?;
    let listen = Ask::listen_on(identity.address);
    join_as(settings, &identity, listen).await
}

/// [`join`] as `identity`, answering the challenge on `listen`.
///
/// # Errors
/// As [`join`].
pub async fn join_as(
    settings: &Settings,
    identity: &crate::identity::Identity,
    listen: std::net::SocketAddr,
) -> Result<()> {
    let Some(t) = &settings.tls else {
        return Ok(());
    };
    let Some((jc, jk)) = &t.join else {
        return Ok(());
    };
    let (tls, file) = crate::tls::load_pair(&t.ca_file, jc, jk)
        .context("tls.ca_file, tls.join_cert_file, tls.join_key_file")?;
    crate::tls::require_valid(&file, crate::agent::observe::unix_now())?;
    tracing::info!(
        "no node certificate yet ({} and {} absent): asking for one through etcd with the join credential {}",
        t.cert_file.display(),
        t.key_file.display(),
        jc.display()
    );
    // systemd: the start-up goes on as long as the join does.
    let keepalive = tokio::spawn(async {
        loop {
            let _ = notify::extend_timeout(Duration::from_secs(60));
            let _ = notify::watchdog();
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
    let client = loop {
        match crate::connect::first_answering(
            &settings.endpoints,
            Duration::from_secs(3),
            Some(&tls),
        )
        .await
        {
            Ok(c) => break c,
            Err(e) => {
                let s = format!("joining: no member answers yet: {e:#}");
                tracing::warn!("{s}");
                let _ = notify::status(&s);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let store = Store::new(
        client,
        deckhand_model::Keyspace::new(&settings.key_prefix),
        crate::agent::context::REQUEST_TIMEOUT,
    );
    let ask = Ask {
        node_id: identity.id.clone(),
        name: identity.name.clone(),
        address: identity.address,
        kind: RequestKind::Join,
        current: None,
        listen,
    };
    let result = ask_and_install(&store, t, &ask, |s| {
        let _ = notify::status(&format!("joining: {s}"));
    })
    .await;
    keepalive.abort();
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_join_is_needed_only_with_tls_a_credential_and_no_node_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let cfg = |extra: &str| {
            let toml = format!(
                "[etcd]\nendpoints = [\"https://10.0.0.1:2379\"]\n[tls]\ncert_file = \"{d}/node.crt\"\nkey_file = \"{d}/node.key\"\n{extra}"
            );
            crate::config::validate(crate::config::parse_fragment(&toml).unwrap()).unwrap()
        };
        let join = format!("join_cert_file = \"{d}/join.crt\"\njoin_key_file = \"{d}/join.key\"\n");
        assert!(super::needed(&cfg(&join)));
        assert!(!super::needed(&cfg("")), "no join credential");
        let half = format!("join_cert_file = \"{d}/join.crt\"\n");
        let toml = format!("[etcd]\nendpoints = [\"https://10.0.0.1:2379\"]\n[tls]\n{half}");
        let e = crate::config::validate(crate::config::parse_fragment(&toml).unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("go together"), "{e:#}");
        // One node file present: no join (the start-up check names what is missing).
        std::fs::write(dir.path().join("node.key"), "k").unwrap();
        assert!(!super::needed(&cfg(&join)));
    }
}

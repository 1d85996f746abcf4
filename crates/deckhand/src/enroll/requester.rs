//! The requester: makes the node's keys on the node (they never leave it),
//! writes `pki/requests/<node-id>`, answers the signer's challenge on
//! `ADDR:2381` while the request is open, waits for `pki/issued/<node-id>`,
//! checks the answer against the node's own CA file and keys
//! ([`super::install::verify`]) and installs the files
//! ([`super::install::install`]). Used for a join (at start-up, through
//! the join credential) and for a renewal (by the running agent, through
//! `localhost:2379`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use deckhand_model::pki::{CHALLENGE_PORT, CertRequest, RequestKind};

use super::challenge::{Keys, Responder};
use super::install::{self, Installed};
use crate::config::TlsSettings;
use crate::store::Store;

/// What to ask for.
#[derive(Clone)]
pub struct Ask {
    /// This node's id (`pki/requests/<id>`).
    pub node_id: String,
    /// Its name (CN `node:<name>`).
    pub name: String,
    /// Its address (a SAN; where the challenge comes).
    pub address: IpAddr,
    /// Join or renew.
    pub kind: RequestKind,
    /// For a renewal: the current node certificate and key (PEM).
    pub current: Option<(String, String)>,
    /// Where to listen for the challenge: `ADDR:2381`, or a test's port.
    pub listen: SocketAddr,
}

impl Ask {
    /// The listening address for `address`: `ADDR:2381`.
    pub fn listen_on(address: IpAddr) -> SocketAddr {
        SocketAddr::new(address, CHALLENGE_PORT)
    }
}

/// How often the requester looks for the answer.
pub const POLL: Duration = Duration::from_secs(1);

/// Asks and waits until the certificates are issued and installed, calling
/// `report` with each new state in words ("waiting for the signer",
/// "refused: ..."). A refusal does not end the wait: the signer decides
/// again on each pass (an approval, a live node that went away), and the
/// request stays open until answered. Once installed, the request and its
/// answers are deleted.
///
/// # Errors
/// The keys cannot be made, the challenge port cannot be bound, the local
/// CA file cannot be read, or the installation failed; an answer that does
/// not pass [`install::verify`] is reported and waited past (a later answer
/// may), not an error.
pub async fn ask_and_install(
    store: &Store,
    tls: &TlsSettings,
    ask: &Ask,
    mut report: impl FnMut(&str),
) -> Result<Vec<Installed>> {
    let local_ca = std::fs::read_to_string(&tls.ca_file)
        .with_context(|| format!("cannot read tls.ca_file {}", tls.ca_file.display()))?;
    let (key_pem, csr_pem) = deckhand_pki::generate_csr(&ask.name, ask.address)?;
    let (proxy_key_pem, proxy_csr_pem) = deckhand_pki::generate_proxy_csr(ask.address)?;
    let sha = deckhand_pki::sha256_hex(csr_pem.as_bytes());
    let _responder = Responder::start(
        ask.listen,
        ask.node_id.clone(),
        ask.address.to_string(),
        Keys {
            node_key_pem: key_pem.clone(),
            proxy_key_pem: proxy_key_pem.clone(),
            current_key_pem: ask.current.as_ref().map(|(_, k)| k.clone()),
        },
    )
    .await?;
    let request = CertRequest {
        name: ask.name.clone(),
        address: ask.address.to_string(),
        csr_pem,
        proxy_csr_pem,
        kind: ask.kind,
        current_cert_pem: ask.current.as_ref().map(|(c, _)| c.clone()),
        created_unix: crate::agent::observe::unix_now(),
    };
    let mut written = false;
    let mut last = String::new();
    let mut say = |s: String, last: &mut String| {
        if *last != s {
            tracing::info!("certificate request ({}): {s}", ask.kind);
            report(&s);
            *last = s;
        }
    };
    loop {
        if !written {
            match store.put_cert_request(&ask.node_id, &request).await {
                Ok(()) => {
                    written = true;
                    say(
                        format!(
                            "asked for a certificate (pki/requests/{}, CSR sha256 {}); waiting for the signer",
                            ask.node_id,
                            &sha[..16]
                        ),
                        &mut last,
                    );
                }
                Err(e) => say(format!("cannot write the request yet: {e:#}"), &mut last),
            }
        } else {
            match store.pki_of(&ask.node_id).await {
                Err(e) => say(format!("cannot read the answer: {e:#}"), &mut last),
                Ok(keys) => {
                    if keys.request.is_none() {
                        // Deleted by someone: ask again.
                        written = false;
                        continue;
                    }
                    if let Some(Ok(issued)) = keys
                        .issued
                        .filter(|i| i.as_ref().map(|i| i.csr_sha256 == sha).unwrap_or(false))
                    {
                        let now = crate::agent::observe::unix_now();
                        match install::verify(
                            &issued,
                            &local_ca,
                            &ask.name,
                            ask.address,
                            &key_pem,
                            &proxy_key_pem,
                            now,
                        ) {
                            Ok(files) => {
                                let done = install::install(tls, &files, now)?;
                                say(
                                    format!("certificates issued by {} installed", issued.signer),
                                    &mut last,
                                );
                                if let Err(e) = store.delete_cert_request(&ask.node_id).await {
                                    tracing::warn!("could not delete the answered request: {e:#}");
                                }
                                return Ok(done);
                            }
                            Err(e) => say(
                                format!("the answer of {} is refused: {e:#}", issued.signer),
                                &mut last,
                            ),
                        }
                    } else if let Some(Ok(r)) = keys
                        .refused
                        .filter(|r| r.as_ref().map(|r| r.csr_sha256 == sha).unwrap_or(false))
                    {
                        let s = if r.reason.starts_with("awaiting approval") {
                            format!("{} (signer {})", r.reason, r.signer)
                        } else {
                            format!("refused by {}: {}", r.signer, r.reason)
                        };
                        say(s, &mut last);
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

//! Renewal of this node's certificates by its own agent: once the node
//! certificate has less than a third of its lifetime left (a 1-year
//! certificate: about 4 months), the agent asks through etcd
//! (`localhost:2379`) with `kind: renew`, proving that it holds the current
//! certificate's key, and installs the new node and proxy certificates
//! ([`crate::enroll::requester`]). etcd re-reads its certificate files on
//! each new connection (server and client side, `pkg/transport/listener.go`
//! in 3.4: `GetCertificate` and `GetClientCertificate` call
//! `tlsutil.NewCert` each time), so neither the member nor the grpc-proxy
//! is restarted; the agent rebuilds its own client of the members with the
//! new files.

use std::time::Duration;

use deckhand_model::pki::RequestKind;
use tokio::sync::watch;

use crate::config::TlsSettings;
use crate::enroll::requester::{Ask, ask_and_install};
use crate::identity::Identity;
use crate::store::Store;

/// How often the certificate's age is looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(60);
/// The first look, after the agent started.
pub const FIRST_LOOK: Duration = Duration::from_secs(10);
/// After a renewal, no other starts for this long (a certificate that is
/// due again at once, from a signer that issues short lifetimes, does not
/// turn into a loop).
pub const PAUSE_AFTER_RENEWAL: Duration = Duration::from_secs(600);

/// Whether a certificate valid from `not_before` to `not_after` (Unix
/// seconds) is due for renewal at `now`: less than a third of its lifetime
/// left (expired ones included: the signer refuses those, and says so).
pub fn due(not_before: u64, not_after: u64, now: u64) -> bool {
    let lifetime = not_after.saturating_sub(not_before);
    let left = not_after.saturating_sub(now);
    left < lifetime / 3
}

/// What the renewal task tells the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewalState {
    /// The state of a renewal under way, in words; `None` when none is.
    pub note: Option<String>,
    /// How many renewals this process installed: the agent reloads its
    /// client material when it changes.
    pub installed: u64,
}

/// Starts the renewal task.
pub fn spawn(store: Store, tls: TlsSettings, identity: Identity) -> watch::Receiver<RenewalState> {
    let (tx, rx) = watch::channel(RenewalState::default());
    tokio::spawn(async move {
        let mut pause = FIRST_LOOK;
        loop {
            tokio::time::sleep(pause).await;
            pause = LOOK_EVERY;
            let now = super::observe::unix_now();
            let Ok(cert) = crate::tls::read_cert(&tls.cert_file) else {
                continue;
            };
            if !due(cert.not_before_unix, cert.not_after_unix, now) {
                continue;
            }
            let (Ok(cert_pem), Ok(key_pem)) = (
                std::fs::read_to_string(&tls.cert_file),
                std::fs::read_to_string(&tls.key_file),
            ) else {
                continue;
            };
            let ask = Ask {
                node_id: identity.id.clone(),
                name: identity.name.clone(),
                address: identity.address,
                kind: RequestKind::Renew,
                current: Some((cert_pem, key_pem)),
                listen: Ask::listen_on(identity.address),
            };
            let tx2 = tx.clone();
            let report = move |s: &str| {
                tx2.send_modify(|st| st.note = Some(format!("renewal: {s}")));
            };
            match ask_and_install(&store, &tls, &ask, report).await {
                Ok(_) => {
                    tracing::info!("renewed this node's certificates");
                    super::metrics::certificate_renewal(true);
                    tx.send_modify(|st| {
                        st.note = None;
                        st.installed += 1;
                    });
                    tokio::time::sleep(PAUSE_AFTER_RENEWAL).await;
                }
                Err(e) => {
                    tracing::error!("renewal failed: {e:#}");
                    super::metrics::certificate_renewal(false);
                    tx.send_modify(|st| st.note = Some(format!("renewal failed: {e:#}")));
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_third_of_the_lifetime_left_is_due() {
        let day = 86_400;
        let (nb, na) = (0, 365 * day);
        assert!(!super::due(nb, na, 200 * day));
        assert!(!super::due(nb, na, 243 * day), "122 days left of 365");
        assert!(super::due(nb, na, 244 * day), "121 days left");
        assert!(super::due(nb, na, 400 * day), "expired");
    }
}

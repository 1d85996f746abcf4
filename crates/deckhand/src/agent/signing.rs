//! The signer's seat: on a node that holds the CA key (`tls.ca_key_file`
//! exists), the agent stands for the election `elections/pki-signer` on its
//! node lease; the leader runs [`crate::enroll::signer::Signer::pass`]
//! every [`PASS_EVERY`] with the member list and `pki.auto_sign` the
//! agent's loop last observed. A node whose CA key goes away withdraws.

use std::time::Duration;

use deckhand_etcd::Member;
use tokio::sync::watch;

use crate::config::TlsSettings;
use crate::enroll::signer::Signer;
use crate::store::Store;

/// How often the leader looks at the requests.
pub const PASS_EVERY: Duration = Duration::from_secs(2);

/// What the agent's loop hands the signer.
#[derive(Debug, Clone, Default)]
pub struct SignerInputs {
    /// The node lease (0 while none).
    pub lease: i64,
    /// The member list last observed; `None` before the first (no signing
    /// without it: the address rule needs it).
    pub members: Option<Vec<Member>>,
    /// `pki.auto_sign` of the cluster config.
    pub auto_sign: bool,
}

/// Starts the signer's task; the agent sends it [`SignerInputs`] each pass.
pub fn spawn(store: Store, tls: TlsSettings, name: String) -> watch::Sender<SignerInputs> {
    let (tx, mut rx) = watch::channel(SignerInputs::default());
    tokio::spawn(async move {
        let election = store.keyspace().pki_signer_election();
        let mut signer: Option<Signer> = None;
        let mut standing: Option<i64> = None;
        loop {
            tokio::time::sleep(PASS_EVERY).await;
            let inputs = rx.borrow_and_update().clone();
            let mut client = store.client();
            if !tls.ca_key_file.exists() {
                if let Some(lease) = standing.take() {
                    tracing::info!(
                        "the CA key {} is gone: leaving the signer's election",
                        tls.ca_key_file.display()
                    );
                    let _ = deckhand_etcd::election::resign(&mut client, &election, lease).await;
                }
                signer = None;
                continue;
            }
            if inputs.lease == 0 {
                continue;
            }
            let view = match deckhand_etcd::election::campaign(
                &mut client,
                &election,
                inputs.lease,
                &name,
            )
            .await
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("signer election: {e}");
                    continue;
                }
            };
            standing = Some(inputs.lease);
            if !view.leads(inputs.lease) {
                continue;
            }
            let Some(members) = &inputs.members else {
                continue;
            };
            if signer.is_none() {
                match Signer::load(&tls.ca_file, &tls.ca_key_file, &name) {
                    Ok(s) => {
                        tracing::info!("signing certificate requests (elected in {election})");
                        signer = Some(s);
                    }
                    Err(e) => {
                        tracing::error!("cannot sign: {e:#}");
                        continue;
                    }
                }
            }
            if let Some(s) = signer.as_mut()
                && let Err(e) = s.pass(&store, members, inputs.auto_sign).await
            {
                tracing::warn!("signer pass: {e:#}");
            }
        }
    });
    tx
}

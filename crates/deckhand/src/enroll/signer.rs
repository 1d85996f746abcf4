//! The signer: the agent elected (`elections/pki-signer`) among the nodes
//! that hold the CA key. Each pass reads every open request, decides with
//! [`deckhand_plan::pki::decide`] (the policy, pure and tested there),
//! sends the challenge when the policy asks for it, and writes the
//! certificates (`pki/issued/<id>`) or the reason it did not
//! (`pki/refused/<id>`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deckhand_etcd::Member;
use deckhand_model::pki::{CertIssued, CertRefusal, CertRequest, RequestKind};
use deckhand_pki::{Ca, CertInfo};
use deckhand_plan::pki::{Decision, LiveNode, MemberPeer, RequestFacts, SignFacts, decide};

use super::challenge::{self, Expect};
use crate::store::{PkiKeys, Store};

/// How long a failed challenge stands before it is sent again (a
/// requester whose listener was not up yet).
pub const RETRY_FAILED_CHALLENGE: Duration = Duration::from_secs(15);

/// The signer's state between passes: the CA, and each request's
/// challenge outcome by CSR hash.
pub struct Signer {
    ca: Ca,
    ca_pem: String,
    /// This node's name (written into answers).
    pub name: String,
    /// Lifetime of the certificates it signs, days.
    pub days: u32,
    challenges: HashMap<String, (Result<(), String>, Instant)>,
    /// Where to send a challenge for an address: `ADDR:2381`, or a test's
    /// port on loopback.
    pub dial: std::sync::Arc<dyn Fn(IpAddr) -> SocketAddr + Send + Sync>,
}

/// `ADDR:2381`.
pub fn dial_challenge_port(a: IpAddr) -> SocketAddr {
    SocketAddr::new(a, deckhand_model::pki::CHALLENGE_PORT)
}

/// What one pass did, in words, one line per request it acted on.
pub type Notes = Vec<String>;

fn current_cert_check(ca_pem: &str, req: &CertRequest, now: u64) -> Option<Result<(), String>> {
    let cur = req.current_cert_pem.as_deref()?;
    let check = || -> Result<(), String> {
        deckhand_pki::verify_issued_by(ca_pem, cur).map_err(|e| e.to_string())?;
        let info = CertInfo::from_pem(cur).map_err(|e| e.to_string())?;
        let cn = deckhand_pki::node_common_name(&req.name);
        if info.common_name.as_deref() != Some(cn.as_str()) {
            return Err(format!("its CN is {:?}, not {cn:?}", info.common_name));
        }
        let addr: IpAddr = req
            .address
            .parse()
            .map_err(|_| "a bad address".to_string())?;
        if !info.ip_sans.contains(&addr) {
            return Err(format!("its SANs {:?} lack {addr}", info.ip_sans));
        }
        if !info.is_valid_at(now) {
            return Err(format!(
                "it is not valid now (until {}): renew by hand (`deckhand pki issue --renew`)",
                info.not_after_utc()
            ));
        }
        Ok(())
    };
    Some(check())
}

impl Signer {
    /// A signer with the CA of `ca_file` and `ca_key_file`.
    ///
    /// # Errors
    /// Either file cannot be read, or they are not a CA and its key.
    pub fn load(
        ca_file: &std::path::Path,
        ca_key_file: &std::path::Path,
        name: &str,
    ) -> Result<Signer> {
        let ca_pem = std::fs::read_to_string(ca_file)
            .with_context(|| format!("cannot read {}", ca_file.display()))?;
        let key = std::fs::read_to_string(ca_key_file)
            .with_context(|| format!("cannot read {}", ca_key_file.display()))?;
        let ca = Ca::from_pem(&ca_pem, &key)
            .with_context(|| format!("{} and {}", ca_file.display(), ca_key_file.display()))?;
        Ok(Signer {
            ca,
            ca_pem,
            name: name.to_owned(),
            days: deckhand_pki::LEAF_DAYS,
            challenges: HashMap::new(),
            dial: std::sync::Arc::new(dial_challenge_port),
        })
    }

    /// One pass over the requests: `members` is the member list (for the
    /// address rule), `auto_sign` the cluster config's `pki.auto_sign`.
    ///
    /// # Errors
    /// Reading the keys failed; a failure on one request is written as its
    /// refusal or noted, and the pass goes on.
    pub async fn pass(
        &mut self,
        store: &Store,
        members: &[Member],
        auto_sign: bool,
    ) -> Result<Notes> {
        let pki = store.pki().await?;
        let nodes = store.nodes().await?;
        let statuses: Vec<_> = nodes.values().filter_map(|n| n.status.clone()).collect();
        let live: Vec<LiveNode<'_>> = statuses
            .iter()
            .map(|s| LiveNode {
                id: &s.id,
                name: &s.name,
                address: &s.address,
            })
            .collect();
        let hosts: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                m.peer_urls
                    .iter()
                    .filter_map(|u| host_of(u))
                    .collect::<Vec<_>>()
            })
            .collect();
        let peers: Vec<MemberPeer<'_>> = members
            .iter()
            .zip(&hosts)
            .map(|(m, h)| MemberPeer {
                name: &m.name,
                peer_hosts: h.iter().map(String::as_str).collect(),
            })
            .collect();
        let now = crate::agent::observe::unix_now();
        self.challenges
            .retain(|_, (r, at)| r.is_ok() || at.elapsed() < RETRY_FAILED_CHALLENGE);
        let mut notes = Vec::new();
        for (id, keys) in &pki {
            if let Some(n) = self
                .one(store, id, keys, &live, &peers, auto_sign, now)
                .await
            {
                notes.push(n);
            }
        }
        Ok(notes)
    }

    #[allow(clippy::too_many_arguments)]
    async fn one(
        &mut self,
        store: &Store,
        id: &str,
        keys: &PkiKeys,
        live: &[LiveNode<'_>],
        peers: &[MemberPeer<'_>],
        auto_sign: bool,
        now: u64,
    ) -> Option<String> {
        let req = match keys.request.as_ref()? {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("the request does not parse: {e}");
                return self.refuse(store, id, keys, "", reason).await;
            }
        };
        let sha = deckhand_pki::sha256_hex(req.csr_pem.as_bytes());
        if matches!(&keys.issued, Some(Ok(i)) if i.csr_sha256 == sha) {
            return None;
        }
        let approved = matches!(&keys.approval, Some(Ok(a)) if a.csr_sha256 == sha);
        let current_cert = match req.kind {
            RequestKind::Renew => current_cert_check(&self.ca_pem, req, now),
            RequestKind::Join => None,
        };
        let mut facts = SignFacts {
            request: RequestFacts {
                node_id: id,
                name: &req.name,
                address: &req.address,
                kind: req.kind,
            },
            live_nodes: live,
            members: peers,
            auto_sign,
            approved,
            current_cert,
            challenge: self.challenges.get(&sha).map(|(r, _)| r.clone()),
        };
        let mut decision = decide(&facts);
        if decision == Decision::Challenge {
            let outcome = self.challenge(id, req).await;
            self.challenges
                .insert(sha.clone(), (outcome.clone(), Instant::now()));
            facts.challenge = Some(outcome);
            decision = decide(&facts);
        }
        match decision {
            Decision::Sign => match self.sign(req) {
                Ok((cert_pem, proxy_cert_pem)) => {
                    let issued = CertIssued {
                        csr_sha256: sha,
                        cert_pem,
                        proxy_cert_pem,
                        ca_pem: self.ca_pem.clone(),
                        signer: self.name.clone(),
                    };
                    match store.put_cert_issued(id, &issued).await {
                        Ok(()) => {
                            let n = format!(
                                "signed the {} request of {} ({id}) at {}",
                                req.kind, req.name, req.address
                            );
                            tracing::info!("{n}");
                            Some(n)
                        }
                        Err(e) => Some(format!("could not write the certificates of {id}: {e:#}")),
                    }
                }
                Err(e) => self.refuse(store, id, keys, &sha, format!("{e:#}")).await,
            },
            Decision::Refuse(reason) | Decision::AwaitApproval(reason) => {
                self.refuse(store, id, keys, &sha, reason).await
            }
            Decision::Challenge => None,
        }
    }

    fn sign(&self, req: &CertRequest) -> Result<(String, String)> {
        let addr: IpAddr = req.address.parse().context("the address")?;
        let cert = self
            .ca
            .sign_node_csr(&req.csr_pem, &req.name, addr, self.days)?;
        let proxy = self
            .ca
            .sign_proxy_csr(&req.proxy_csr_pem, &req.name, addr, self.days)?;
        Ok((cert, proxy))
    }

    async fn challenge(&self, id: &str, req: &CertRequest) -> Result<(), String> {
        let addr: IpAddr = req
            .address
            .parse()
            .map_err(|_| "a bad address".to_string())?;
        let mut public_keys = vec![
            deckhand_pki::csr_public_key(&req.csr_pem).map_err(|e| e.to_string())?,
            deckhand_pki::csr_public_key(&req.proxy_csr_pem).map_err(|e| e.to_string())?,
        ];
        if let Some(c) = &req.current_cert_pem {
            public_keys.push(deckhand_pki::cert_public_key(c).map_err(|e| e.to_string())?);
        }
        let expect = Expect {
            node_id: id.to_owned(),
            address: req.address.clone(),
            public_keys,
        };
        challenge::ask((self.dial)(addr), &expect)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// Writes the refusal unless the same one is there already.
    async fn refuse(
        &self,
        store: &Store,
        id: &str,
        keys: &PkiKeys,
        sha: &str,
        reason: String,
    ) -> Option<String> {
        if matches!(&keys.refused, Some(Ok(r)) if r.csr_sha256 == sha && r.reason == reason) {
            return None;
        }
        let r = CertRefusal {
            csr_sha256: sha.to_owned(),
            reason: reason.clone(),
            signer: self.name.clone(),
        };
        let n = format!("did not sign the request of {id}: {reason}");
        tracing::warn!("{n}");
        if let Err(e) = store.put_cert_refusal(id, &r).await {
            tracing::warn!("could not write the refusal of {id}: {e:#}");
        }
        Some(n)
    }
}

/// The host of a URL `scheme://host:port`, without `[...]`.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let hostport = rest.split('/').next()?;
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    };
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_of_peer_urls() {
        assert_eq!(
            super::host_of("https://10.0.0.1:2380").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            super::host_of("http://[fd00::1]:2380").as_deref(),
            Some("fd00::1")
        );
        assert_eq!(super::host_of("nonsense"), None);
    }
}

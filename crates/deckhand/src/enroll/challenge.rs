//! The challenge: how the signer learns that a request's claimed address
//! really is the requester's (a request in etcd carries no source address).
//!
//! While its request is open, the requester listens on `ADDR:2381`
//! ([`deckhand_model::pki::CHALLENGE_PORT`]). The signer connects to the
//! address the request claims and sends one line,
//! `deckhand-pki-challenge v1 <node-id> <nonce>` (the nonce 32 random bytes
//! in hex); the requester answers one line, `ok <sig> <sig> [<sig>]` (hex):
//! the signatures of [`message`] by the node CSR's key, the proxy CSR's key
//! and, for a renewal, the current certificate's key. The signer checks
//! each against the public key in the CSR (or the certificate). A
//! requester asked about another node id answers `error ...`. Every read
//! and write has a timeout ([`TIMEOUT`]); lines are at most
//! [`MAX_LINE`] bytes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The bound on connecting, and on each line read or written.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// The longest line either side accepts.
pub const MAX_LINE: usize = 1024;
const HELLO: &str = "deckhand-pki-challenge v1";

/// What is signed: domain-separated, naming the node id and the address
/// the request claims, then the nonce.
pub fn message(node_id: &str, address: &str, nonce: &str) -> Vec<u8> {
    format!("deckhand pki challenge v1\n{node_id}\n{address}\n{nonce}").into_bytes()
}

/// The keys the requester proves it holds.
#[derive(Clone)]
pub struct Keys {
    /// The node CSR's key (PEM).
    pub node_key_pem: String,
    /// The proxy CSR's key (PEM).
    pub proxy_key_pem: String,
    /// For a renewal, the current certificate's key (PEM).
    pub current_key_pem: Option<String>,
}

/// The requester's side: answers challenges on a listener until dropped.
pub struct Responder {
    task: tokio::task::JoinHandle<()>,
    /// The address it listens on.
    pub local_addr: SocketAddr,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Responder {
    /// Listens on `bind` and answers challenges for `node_id` at
    /// `address` with `keys`.
    ///
    /// # Errors
    /// The address cannot be bound (in use, not this host's).
    pub async fn start(
        bind: SocketAddr,
        node_id: String,
        address: String,
        keys: Keys,
    ) -> Result<Responder> {
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind} for the signer's challenge"))?;
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let (id, addr, k) = (node_id.clone(), address.clone(), keys.clone());
                tokio::spawn(async move {
                    match answer(stream, &id, &addr, &k).await {
                        Ok(()) => tracing::info!("answered the signer's challenge from {peer}"),
                        Err(e) => tracing::warn!("challenge from {peer}: {e:#}"),
                    }
                });
            }
        });
        Ok(Responder { task, local_addr })
    }
}

async fn read_line(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Result<String> {
    let mut buf = Vec::new();
    let mut limited = AsyncReadExt::take(r, MAX_LINE as u64 + 1);
    tokio::time::timeout(TIMEOUT, limited.read_until(b'\n', &mut buf))
        .await
        .map_err(|_| anyhow!("no line within {} s", TIMEOUT.as_secs()))??;
    if buf.len() > MAX_LINE {
        bail!("a line longer than {MAX_LINE} bytes");
    }
    if buf.last() != Some(&b'\n') {
        bail!("the connection closed before a whole line");
    }
    buf.pop();
    String::from_utf8(buf).context("a line that is not UTF-8")
}

async fn write_line(w: &mut tokio::net::tcp::OwnedWriteHalf, line: &str) -> Result<()> {
    tokio::time::timeout(TIMEOUT, w.write_all(format!("{line}\n").as_bytes()))
        .await
        .map_err(|_| anyhow!("could not send within {} s", TIMEOUT.as_secs()))??;
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn answer(stream: TcpStream, node_id: &str, address: &str, keys: &Keys) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let line = read_line(&mut r).await?;
    let mut parts = line.split(' ');
    let (a, b, id, nonce) = (parts.next(), parts.next(), parts.next(), parts.next());
    if a.zip(b).map(|(a, b)| format!("{a} {b}")).as_deref() != Some(HELLO) || parts.next().is_some()
    {
        write_line(&mut w, "error not a deckhand pki challenge").await?;
        bail!("not a challenge: {line:?}");
    }
    let (Some(id), Some(nonce)) = (id, nonce) else {
        bail!("a challenge without node id or nonce");
    };
    if id != node_id {
        write_line(&mut w, &format!("error this is node {node_id}, not {id}")).await?;
        bail!("a challenge for node {id}, not this node");
    }
    if nonce.len() != 64 || unhex(nonce).is_none() {
        write_line(&mut w, "error the nonce is not 32 bytes of hex").await?;
        bail!("a bad nonce");
    }
    let msg = message(node_id, address, nonce);
    let mut sigs = vec![
        deckhand_pki::sign_message(&keys.node_key_pem, &msg)?,
        deckhand_pki::sign_message(&keys.proxy_key_pem, &msg)?,
    ];
    if let Some(k) = &keys.current_key_pem {
        sigs.push(deckhand_pki::sign_message(k, &msg)?);
    }
    let line = std::iter::once("ok".to_string())
        .chain(sigs.iter().map(|s| hex(s)))
        .collect::<Vec<_>>()
        .join(" ");
    write_line(&mut w, &line).await
}

/// The public keys the answer must be signed with, in order: the node
/// CSR's, the proxy CSR's, and for a renewal the current certificate's.
pub struct Expect {
    /// Node id of the request.
    pub node_id: String,
    /// The address the request claims (as written in it).
    pub address: String,
    /// The public keys (uncompressed points).
    pub public_keys: Vec<Vec<u8>>,
}

/// The signer's side: connects to `target`, sends a fresh nonce, and
/// checks the answer's signatures against `expect`.
///
/// # Errors
/// In words: no connection, a timeout, an `error` answer, a signature that
/// does not verify.
pub async fn ask(target: SocketAddr, expect: &Expect) -> Result<()> {
    let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| anyhow!("no connection within {} s", TIMEOUT.as_secs()))?
        .map_err(|e| anyhow!("cannot connect: {e}"))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let nonce = hex(&deckhand_pki::random_nonce()?);
    write_line(&mut w, &format!("{HELLO} {} {nonce}", expect.node_id)).await?;
    let line = read_line(&mut r).await?;
    if let Some(e) = line.strip_prefix("error ") {
        bail!("the requester answered: {e}");
    }
    let mut parts = line.split(' ');
    if parts.next() != Some("ok") {
        bail!("not an answer to the challenge");
    }
    let sigs: Vec<&str> = parts.collect();
    if sigs.len() != expect.public_keys.len() {
        bail!(
            "{} signatures in the answer, {} expected",
            sigs.len(),
            expect.public_keys.len()
        );
    }
    let msg = message(&expect.node_id, &expect.address, &nonce);
    let names = [
        "the node request's key",
        "the proxy request's key",
        "the current certificate's key",
    ];
    for (i, (sig, key)) in sigs.iter().zip(&expect.public_keys).enumerate() {
        let sig = unhex(sig).ok_or_else(|| anyhow!("a signature that is not hex"))?;
        if !deckhand_pki::verify_message(key, &msg, &sig) {
            bail!(
                "the answer is not signed with {}",
                names.get(i).copied().unwrap_or("the expected key")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_and_expect(id: &str, renew: bool) -> (Keys, Expect) {
        let addr = "10.0.0.4".parse().unwrap();
        let (nk, ncsr) = deckhand_pki::generate_csr("n4", addr).unwrap();
        let (pk, pcsr) = deckhand_pki::generate_proxy_csr(addr).unwrap();
        let mut public_keys = vec![
            deckhand_pki::csr_public_key(&ncsr).unwrap(),
            deckhand_pki::csr_public_key(&pcsr).unwrap(),
        ];
        let mut current = None;
        if renew {
            let ca = deckhand_pki::Ca::create("ca", 30).unwrap();
            let old = ca.issue_node("n4", addr, 30).unwrap();
            public_keys.push(deckhand_pki::cert_public_key(&old.cert_pem).unwrap());
            current = Some(old.key_pem);
        }
        (
            Keys {
                node_key_pem: nk,
                proxy_key_pem: pk,
                current_key_pem: current,
            },
            Expect {
                node_id: id.into(),
                address: "10.0.0.4".into(),
                public_keys,
            },
        )
    }

    async fn responder(id: &str, keys: Keys) -> Responder {
        Responder::start(
            "127.0.0.1:0".parse().unwrap(),
            id.into(),
            "10.0.0.4".into(),
            keys,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn the_requester_proves_it_holds_the_keys_of_its_request() {
        let (keys, expect) = keys_and_expect("id4", false);
        let r = responder("id4", keys).await;
        ask(r.local_addr, &expect).await.unwrap();
        let (keys, expect) = keys_and_expect("id4", true);
        let r = responder("id4", keys).await;
        ask(r.local_addr, &expect).await.unwrap();
    }

    #[tokio::test]
    async fn another_key_another_node_or_no_listener_fails() {
        // The responder holds other keys than the request's (someone else
        // wrote a request claiming this node's address).
        let (keys, _) = keys_and_expect("id4", false);
        let (_, expect) = keys_and_expect("id4", false);
        let r = responder("id4", keys.clone()).await;
        let e = ask(r.local_addr, &expect).await.unwrap_err().to_string();
        assert!(e.contains("not signed with the node request's key"), "{e}");
        // A node asked about another node id refuses.
        let (keys, mut expect) = keys_and_expect("id4", false);
        expect.node_id = "id5".into();
        let r = responder("id4", keys).await;
        let e = ask(r.local_addr, &expect).await.unwrap_err().to_string();
        assert!(e.contains("this is node id4, not id5"), "{e}");
        // A renewal answered without the current certificate's key.
        let (keys, mut expect) = keys_and_expect("id4", false);
        expect.public_keys.push(expect.public_keys[0].clone());
        let r = responder("id4", keys).await;
        let e = ask(r.local_addr, &expect).await.unwrap_err().to_string();
        assert!(e.contains("2 signatures in the answer, 3 expected"), "{e}");
        // Nobody listens.
        let addr = r.local_addr;
        drop(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = ask(addr, &expect).await.unwrap_err().to_string();
        assert!(e.contains("cannot connect"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_listener_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (_, expect) = keys_and_expect("id4", false);
        let t = std::time::Instant::now();
        let e = ask(addr, &expect).await.unwrap_err().to_string();
        assert!(e.contains("no line within 3 s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(l);
    }
}

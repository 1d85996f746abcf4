//! The host-side writer: sequential keys `/faults/w/<n>` through the members'
//! client URLs (only members listen on the node address), one endpoint per
//! attempt with short timeouts, each node in turn. Every acknowledged key is
//! recorded with the time of its acknowledgement.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::{Client, ConnectOptions, GetOptions};

/// The client URLs the writer tries, in order (node1..node5), https on a
/// TLS cluster.
pub fn endpoints() -> Result<Vec<String>> {
    (1..=5)
        .map(|k| deckhand_integration::node_url(&format!("172.29.77.{}", 10 + k), 2379))
        .collect()
}

/// The key of write number `n`.
pub fn key(n: u64) -> String {
    format!("/faults/w/{n:07}")
}

/// The value of write number `n` in the run of `seed`.
pub fn value(seed: u64, n: u64) -> String {
    format!("seed{seed}-n{n}")
}

/// What the writer saw.
#[derive(Default)]
pub struct Log {
    /// Acknowledged writes: (n, acknowledged at).
    pub acks: Vec<(u64, Instant)>,
    /// Acknowledgements per endpoint index.
    pub per_endpoint: [u64; 5],
    /// Failed attempts.
    pub failed_attempts: u64,
    /// The last error of each endpoint.
    pub last_error: [Option<String>; 5],
}

/// Short timeouts; on a TLS cluster the operator certificate (node
/// addresses serve only mutual TLS).
fn opts() -> Result<ConnectOptions> {
    let o = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2))
        .with_require_leader(true);
    Ok(match deckhand_integration::cluster_mode()? {
        deckhand_integration::Mode::Tls => o.with_tls(deckhand_integration::operator_tls()?),
        deckhand_integration::Mode::Plaintext => o,
    })
}

/// Runs the writer until `stop` is set; returns when stopped.
pub fn run(seed: u64, stop: Arc<AtomicBool>, log: Arc<Mutex<Log>>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let eps = endpoints()?;
    let opts = opts()?;
    rt.block_on(async move {
        let mut clients: Vec<Option<Client>> = vec![None, None, None, None, None];
        let mut cur = 0usize;
        let mut n = 1u64;
        while !stop.load(Ordering::Relaxed) {
            let (k, v) = (key(n), value(seed, n));
            let mut acked = false;
            for i in 0..eps.len() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let idx = (cur + i) % eps.len();
                let res = async {
                    if clients[idx].is_none() {
                        clients[idx] =
                            Some(Client::connect([eps[idx].as_str()], Some(opts.clone())).await?);
                    }
                    let c = clients[idx].as_mut().expect("just set");
                    c.put(k.as_str(), v.as_str(), None).await?;
                    Ok::<(), etcd_client::Error>(())
                };
                match tokio::time::timeout(Duration::from_millis(2500), res).await {
                    Ok(Ok(())) => {
                        let mut l = log.lock().unwrap();
                        l.acks.push((n, Instant::now()));
                        l.per_endpoint[idx] += 1;
                        cur = idx;
                        acked = true;
                        break;
                    }
                    Ok(Err(e)) => {
                        clients[idx] = None;
                        let mut l = log.lock().unwrap();
                        l.failed_attempts += 1;
                        l.last_error[idx] = Some(e.to_string());
                    }
                    Err(_) => {
                        clients[idx] = None;
                        let mut l = log.lock().unwrap();
                        l.failed_attempts += 1;
                        l.last_error[idx] = Some("no answer within 2.5 s".into());
                    }
                }
            }
            if acked {
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok(())
}

/// Reads every `/faults/w/` key back (linearizable), from the first
/// endpoint that answers.
pub fn read_back() -> Result<BTreeMap<String, String>> {
    on_first_member(
        "the read-back",
        Duration::from_secs(30),
        |mut c| async move {
            let mut out = BTreeMap::new();
            let mut from = "/faults/w/".to_string();
            loop {
                let r = c
                    .get(
                        from.as_str(),
                        Some(GetOptions::new().with_range("/faults/w0").with_limit(2000)),
                    )
                    .await?;
                for kv in r.kvs() {
                    out.insert(
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        String::from_utf8_lossy(kv.value()).into_owned(),
                    );
                }
                if !r.more() {
                    break;
                }
                let last = r
                    .kvs()
                    .last()
                    .map(|kv| kv.key().to_vec())
                    .unwrap_or_default();
                from = format!("{}\0", String::from_utf8_lossy(&last));
            }
            Ok(out)
        },
    )
    .context("reading /faults/w/ back")
}

/// The mod revision of every role key, by node id (`/deckhand/nodes/<id>/role`).
pub fn role_revisions() -> Result<BTreeMap<String, i64>> {
    on_first_member(
        "the role keys",
        Duration::from_secs(5),
        |mut c| async move {
            let r = c
                .get("/deckhand/nodes/", Some(GetOptions::new().with_prefix()))
                .await?;
            let mut out = BTreeMap::new();
            for kv in r.kvs() {
                let k = String::from_utf8_lossy(kv.key()).into_owned();
                if let Some(id) = k
                    .strip_prefix("/deckhand/nodes/")
                    .and_then(|r| r.strip_suffix("/role"))
                {
                    out.insert(id.to_string(), kv.mod_revision());
                }
            }
            Ok(out)
        },
    )
    .context("reading the role keys' revisions")
}

/// Runs `read` against each node's client URL in turn (only members answer
/// from the host) and returns the first answer, within `timeout` each.
fn on_first_member<T, F, Fut>(what: &str, timeout: Duration, read: F) -> Result<T>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (eps, opts) = (endpoints()?, opts()?);
    rt.block_on(async {
        let mut errors = Vec::new();
        for ep in eps {
            let attempt = async {
                let c = Client::connect([ep.as_str()], Some(opts.clone())).await?;
                read(c).await
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => errors.push(format!("{ep}: {e}")),
                Err(_) => errors.push(format!("{ep}: timed out")),
            }
        }
        bail!("no member answered {what}: {}", errors.join("; "))
    })
}

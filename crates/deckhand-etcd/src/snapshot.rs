//! A member's snapshot, streamed to a writer: etcd's `Maintenance.Snapshot`
//! RPC (what `etcdctl snapshot save` calls,
//! <https://etcd.io/docs/v3.4/op-guide/recovery/#snapshotting-the-keyspace>).
//!
//! The stream carries the member's bbolt database in chunks, then one last
//! message of 32 bytes: the SHA-256 of the database (etcd 3.4's
//! `maintenanceServer.Snapshot`). Both are written as they come, so the
//! file is what `snapshot save` writes and `etcdctl snapshot restore`
//! checks (`(size % 512) == 32` means a hash is appended).
//!
//! No fixed deadline on the whole transfer: a large database on a slow link
//! takes as long as it takes. Instead each message must arrive within
//! `idle` of the one before (bounded by progress), and HTTP/2 keep-alive
//! notices a dead connection. The client carries no per-request timeout:
//! tonic sends that as `grpc-timeout`, and etcd would cut the stream there.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::tls::{self, Tls};

/// What one snapshot stream delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    /// Bytes written, the appended SHA-256 included.
    pub bytes: u64,
    /// The etcd version that made the snapshot, when the member says
    /// (3.5 and later fill it; 3.4 leaves it empty).
    pub version: String,
}

/// Streams the snapshot of the member at client URL `endpoint` into `out`
/// (flushed at the end; syncing the file is the caller's). `connect`
/// bounds connecting; `idle` bounds the wait for each message. An
/// `https://` endpoint needs `tls`.
///
/// Ask a voter: a 3.4 learner refuses (`etcdserver: rpc not supported for
/// learner`), and a grpc-proxy forwards to some member it picks.
///
/// Errors: [`Error::InvalidEndpoints`]; [`Error::Timeout`] (connect, or no
/// message within `idle`); [`Error::Request`] (the member refused, the
/// stream broke); [`Error::Protocol`] when the stream ended before a
/// message said no bytes remain, or `out` failed (the I/O error in words).
pub async fn stream_snapshot<W: AsyncWrite + Unpin>(
    endpoint: &str,
    tls: Option<&Tls>,
    connect: Duration,
    idle: Duration,
    out: &mut W,
) -> Result<Streamed> {
    const OP: &str = "snapshot";
    let endpoints = [endpoint.to_owned()];
    let invalid = |reason: String| Error::InvalidEndpoints {
        endpoints: endpoints.to_vec(),
        reason,
    };
    let opts = ConnectOptions::new()
        .with_connect_timeout(connect)
        .with_keep_alive(crate::cluster::KEEPALIVE_INTERVAL, connect)
        .with_keep_alive_while_idle(true);
    let opts = tls::apply(opts, &endpoints, tls).map_err(invalid)?;
    let mut client =
        match tokio::time::timeout(connect, Client::connect(endpoints.clone(), Some(opts))).await {
            Err(_) => {
                return Err(Error::Timeout {
                    op: OP,
                    timeout: connect,
                });
            }
            Ok(Err(e)) => return Err(invalid(e.to_string())),
            Ok(Ok(c)) => c,
        };
    let mut stream = match tokio::time::timeout(idle, client.snapshot()).await {
        Err(_) => {
            return Err(Error::Timeout {
                op: OP,
                timeout: idle,
            });
        }
        Ok(Err(source)) => return Err(Error::Request { op: OP, source }),
        Ok(Ok(s)) => s,
    };
    let mut bytes = 0u64;
    let mut version = String::new();
    // The last data message says 0 bytes remain, and so does the hash
    // message after it: the stream's end is the end.
    let mut remaining = u64::MAX;
    let io = |e: std::io::Error| Error::Protocol {
        op: OP,
        what: format!("writing the snapshot: {e}"),
    };
    loop {
        let msg = match tokio::time::timeout(idle, stream.message()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    op: OP,
                    timeout: idle,
                });
            }
            Ok(Err(source)) => return Err(Error::Request { op: OP, source }),
            Ok(Ok(m)) => m,
        };
        let Some(msg) = msg else {
            if remaining != 0 {
                return Err(Error::Protocol {
                    op: OP,
                    what: format!("the stream ended after {bytes} bytes with bytes still to come"),
                });
            }
            break;
        };
        out.write_all(msg.blob()).await.map_err(io)?;
        bytes += msg.blob().len() as u64;
        if version.is_empty() {
            version = msg.version().to_owned();
        }
        remaining = msg.remaining_bytes();
    }
    out.flush().await.map_err(io)?;
    Ok(Streamed { bytes, version })
}

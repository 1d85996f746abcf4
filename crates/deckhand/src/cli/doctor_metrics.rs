//! `doctor`'s clock and monitoring checks, both from each node's agent
//! metrics endpoint. The clock check: each node's wall clock, read from the
//! `deckhand_node_time_seconds` gauge of its agent's metrics endpoint
//! (`docs/metrics.md`), and the spread between the nodes.
//!
//! The CLI reads every node's endpoint once, at the same time, and places
//! each reading at the middle of its round trip on the CLI's own clock
//! (the uncertainty is half the round trip). The spread between nodes
//! (the largest offset minus the smallest) does not depend on the CLI's
//! clock, so `doctor` run from a laptop with a wrong clock judges the
//! cluster alone. The limits follow etcd: its peer prober warns "prober
//! found high clock drift" above 1 s between members
//! (`server/etcdserver/api/rafthttp/probing_status.go`), which also makes
//! lease expiry and certificate validity disagree between nodes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deckhand_model::CheckState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::doctor::Finding;
use crate::store::NodeKeys;

/// How long one node's endpoint may take to answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Spread above which the check fails: etcd's own warning threshold.
pub const FAIL_ABOVE_S: f64 = 1.0;

/// Spread above which the check warns.
pub const WARN_ABOVE_S: f64 = 0.25;

/// The largest `/metrics` body read (the agent's is a few KiB).
const MAX_BODY: u64 = 1 << 20;

/// One node's clock against the CLI's.
#[derive(Debug, Clone, PartialEq)]
pub struct Offset {
    /// The node's time minus the CLI's at the middle of the round trip,
    /// in seconds (positive: the node is ahead).
    pub offset_s: f64,
    /// Half the round trip, in seconds: how far off `offset_s` can be.
    pub uncertainty_s: f64,
}

/// A node's reading: its name and its offset, or why it was not measured.
pub type Reading = (String, Result<Offset, String>);

/// Where a node's metrics endpoint answers: the node's address with the
/// port of its `metrics_listen`, or that listen address itself when it is
/// bound to one IP. `Err` says why the node cannot be read.
pub fn endpoint(address: &str, metrics_listen: Option<&str>) -> Result<SocketAddr, String> {
    let listen: SocketAddr = match metrics_listen {
        None => {
            return Err("its agent reports no metrics endpoint (off, or an older agent)".into());
        }
        Some(l) => l
            .parse()
            .map_err(|_| format!("its metrics address {l:?} is not IP:PORT"))?,
    };
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    let ip: IpAddr = address
        .parse()
        .map_err(|_| format!("its address {address:?} is not an IP"))?;
    Ok(SocketAddr::new(ip, listen.port()))
}

/// Reads `deckhand_node_time_seconds` from one endpoint (plain HTTP/1.0
/// GET of `/metrics`, the connection closed by the server), within
/// [`READ_TIMEOUT`].
///
/// # Errors
/// The connection failed or timed out, the answer is not HTTP 200, or it
/// holds no `deckhand_node_time_seconds` sample (the words say which).
pub async fn read(addr: SocketAddr) -> Result<Offset, String> {
    let sent = SystemTime::now();
    let started = Instant::now();
    let body = tokio::time::timeout(READ_TIMEOUT, get_metrics(addr))
        .await
        .map_err(|_| format!("{addr} did not answer within {READ_TIMEOUT:?}"))??;
    let rtt = started.elapsed();
    let node = node_time(&body).ok_or_else(|| {
        format!("{addr}/metrics holds no deckhand_node_time_seconds (an older agent?)")
    })?;
    let sent_s = sent
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mid = sent_s + rtt.as_secs_f64() / 2.0;
    Ok(Offset {
        offset_s: node - mid,
        uncertainty_s: rtt.as_secs_f64() / 2.0,
    })
}

async fn get_metrics(addr: SocketAddr) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    s.take(MAX_BODY)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{addr}/metrics answered {status:?}"));
    }
    Ok(body.to_string())
}

/// The value of the `deckhand_node_time_seconds` sample in an exposition.
pub fn node_time(exposition: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix("deckhand_node_time_seconds "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Reads every node that has a status document, all at once.
pub async fn read_all(nodes: &BTreeMap<String, NodeKeys>) -> Vec<Reading> {
    let mut reads = tokio::task::JoinSet::new();
    for s in nodes.values().filter_map(|k| k.status.as_ref()) {
        let name = s.name.clone();
        let at = endpoint(&s.address, s.metrics_listen.as_deref());
        reads.spawn(async move {
            let r = match at {
                Ok(a) => read(a).await,
                Err(e) => Err(e),
            };
            (name, r)
        });
    }
    let mut out: Vec<Reading> = reads.join_all().await;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The finding from the readings: fail when the spread between nodes,
/// less the readings' uncertainty, is above [`FAIL_ABOVE_S`]; warn above
/// [`WARN_ABOVE_S`], or when a node could not be read, or when fewer than
/// two nodes were; pass otherwise.
pub fn judge(readings: &[Reading]) -> Finding {
    let fix = "keep NTP running on every node (chrony or systemd-timesyncd); timedatectl shows whether a node is synchronized";
    let measured: Vec<(&str, &Offset)> = readings
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|o| (n.as_str(), o)))
        .collect();
    let missing: Vec<String> = readings
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    if measured.len() < 2 {
        let why = if missing.is_empty() {
            "fewer than two nodes report their time".to_string()
        } else {
            format!("not measured: {}", missing.join("; "))
        };
        return Finding::new("clock", CheckState::Warn, why, fix);
    }
    let by = |f: fn(f64, f64) -> bool| {
        measured
            .iter()
            .copied()
            .reduce(|a, b| if f(b.1.offset_s, a.1.offset_s) { b } else { a })
            .expect("two or more")
    };
    let (ahead, a) = by(|x, y| x > y);
    let (behind, b) = by(|x, y| x < y);
    let spread = a.offset_s - b.offset_s;
    let slack = a.uncertainty_s + b.uncertainty_s;
    let words = format!(
        "{ahead} is {} ms ahead of {behind} (±{} ms) over {} nodes",
        (spread * 1000.0).round(),
        (slack * 1000.0).round().max(1.0),
        measured.len()
    );
    let (state, detail) = if spread - slack > FAIL_ABOVE_S {
        (
            CheckState::Fail,
            format!(
                "{words}: above etcd's 1 s (its peers log \"prober found high clock drift\"; leases and certificate validity disagree)"
            ),
        )
    } else if spread - slack > WARN_ABOVE_S {
        (
            CheckState::Warn,
            format!("{words}: above {} ms", WARN_ABOVE_S * 1000.0),
        )
    } else if !missing.is_empty() {
        (
            CheckState::Warn,
            format!("{words}; not measured: {}", missing.join("; ")),
        )
    } else {
        (CheckState::Pass, words)
    };
    let todo = if state == CheckState::Pass { "" } else { fix };
    Finding::new("clock", state, detail, todo)
}

/// The monitoring finding from the same readings: pass when every node's
/// agent serves `/metrics` and answered; warn "not configured" when none
/// does, and naming the nodes that do not otherwise. Whether a Prometheus
/// scrapes them is not visible from etcd: the finding says so.
pub fn monitoring(readings: &[Reading]) -> Finding {
    let fix = "scrape every node's /metrics with Prometheus and load packaging/prometheus/deckhand-rules.yml (docs/metrics.md)";
    let answered: Vec<&str> = readings
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| n.as_str())
        .collect();
    let missing: Vec<String> = readings
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    if answered.is_empty() {
        let why = if missing.is_empty() {
            "not configured: no node reports a metrics endpoint".to_string()
        } else {
            format!(
                "not configured: no metrics endpoint answered ({})",
                missing.join("; ")
            )
        };
        return Finding::new("monitoring", CheckState::Warn, why, fix);
    }
    if !missing.is_empty() {
        return Finding::new(
            "monitoring",
            CheckState::Warn,
            format!(
                "/metrics answers on {}; not on {}",
                answered.join(", "),
                missing.join("; ")
            ),
            fix,
        );
    }
    Finding::new(
        "monitoring",
        CheckState::Pass,
        format!(
            "/metrics answers on every node ({}); whether Prometheus scrapes them is not visible from here",
            answered.join(", ")
        ),
        "",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: &str, offset_s: f64) -> Reading {
        (
            n.into(),
            Ok(Offset {
                offset_s,
                uncertainty_s: 0.001,
            }),
        )
    }

    #[test]
    fn endpoint_of_a_node() {
        assert_eq!(
            endpoint("10.0.0.4", Some("0.0.0.0:7479")).unwrap(),
            "10.0.0.4:7479".parse().unwrap()
        );
        assert_eq!(
            endpoint("10.0.0.4", Some("10.1.0.4:9000")).unwrap(),
            "10.1.0.4:9000".parse().unwrap()
        );
        assert!(
            endpoint("10.0.0.4", None)
                .unwrap_err()
                .contains("no metrics")
        );
        assert!(
            endpoint("x", Some("[::]:7479"))
                .unwrap_err()
                .contains("not an IP")
        );
    }

    #[test]
    fn node_time_sample() {
        let text = "# TYPE deckhand_node_time_seconds gauge\n\
                    deckhand_node_time_seconds 1764874800.25\n\
                    deckhand_node_time_seconds_x 3\n";
        assert_eq!(node_time(text), Some(1_764_874_800.25));
        assert_eq!(node_time("deckhand_converged 1\n"), None);
    }

    #[test]
    fn spread_between_nodes_not_against_the_cli() {
        // The CLI's clock is 30 s off: every node agrees, so the check passes.
        let f = judge(&[at("a", 30.0), at("b", 30.01), at("c", 29.995)]);
        assert_eq!(f.level, CheckState::Pass, "{f:?}");
        assert!(f.saw.contains("b is 15 ms ahead of c"), "{f:?}");
        assert!(f.todo.is_empty(), "{f:?}");
        let f = judge(&[at("a", 0.0), at("b", 0.4)]);
        assert_eq!(f.level, CheckState::Warn, "{f:?}");
        let f = judge(&[at("a", 0.0), at("b", 1.5), at("c", 0.1)]);
        assert_eq!(f.level, CheckState::Fail, "{f:?}");
        assert!(f.saw.contains("b is 1500 ms ahead of a"), "{f:?}");
    }

    #[test]
    fn unmeasured_nodes_warn_and_are_named() {
        let f = judge(&[
            at("a", 0.0),
            at("b", 0.0),
            ("c".into(), Err("refused".into())),
        ]);
        assert_eq!(f.level, CheckState::Warn, "{f:?}");
        assert!(f.saw.contains("c: refused"), "{f:?}");
        let f = judge(&[at("a", 0.0)]);
        assert_eq!(f.level, CheckState::Warn, "{f:?}");
        let f = judge(&[]);
        assert_eq!(f.level, CheckState::Warn, "{f:?}");
    }

    #[test]
    fn monitoring_from_the_readings() {
        let f = monitoring(&[at("a", 0.0), at("b", 0.0)]);
        assert_eq!(f.level, CheckState::Pass, "{f:?}");
        assert!(f.saw.contains("every node (a, b)"), "{f:?}");
        let f = monitoring(&[at("a", 0.0), ("b".into(), Err("refused".into()))]);
        assert_eq!(f.level, CheckState::Warn, "{f:?}");
        assert!(f.saw.contains("not on b: refused"), "{f:?}");
        let f = monitoring(&[]);
        assert!(f.saw.starts_with("not configured"), "{f:?}");
    }

    /// A real endpoint: a socket answering like the agent's, read and
    /// placed on this clock (the node is this host: offset near zero).
    #[tokio::test]
    async fn reads_a_served_exposition() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await.unwrap();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let body = format!("deckhand_node_time_seconds {now}\n");
            let answer = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        let o = read(addr).await.unwrap();
        assert!(o.offset_s.abs() < 0.5 + o.uncertainty_s, "{o:?}");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        assert!(read(gone).await.unwrap_err().contains(&gone.to_string()));
    }
}

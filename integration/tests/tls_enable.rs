//! End-to-end `deckhand tls enable` (issue 10, "TLS on every hop"): a
//! fresh 5-node PLAINTEXT cluster (3 members, 2 proxies; every node has its
//! certificates installed in /etc/deckhand/pki but unused), keys written,
//! then `deckhand tls enable` on node1, while a client on node1's (a
//! member's) and node5's (a proxy's) `localhost:2379` keeps writing. Then:
//! every member's peer and client URLs are `https://`, plaintext HTTP and
//! gRPC to a member's address get no answer, TLS with a node certificate
//! does, `localhost:2379` still answers plaintext on a member and a proxy,
//! every node reports stage `https`, the keys written before are intact,
//! and a second run finds nothing to do.
//!
//! Boots its own cluster (the shared one is TLS) and takes it down at the
//! end: the nodes' harness labels still say plaintext.
//!
//! Needs Docker and root, and this host on the harness network
//! (172.29.77.0/24), which `integration/cluster` sets up.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;
use serde_json::Value;

const NODES: [&str; 5] = ["node1", "node2", "node3", "node4", "node5"];
const MEMBER_IPS: [&str; 3] = ["172.29.77.11", "172.29.77.12", "172.29.77.13"];
const KEYS: usize = 40;

/// Every 200 ms one write through `localhost:2379`, each attempt logged
/// (`A <unix ms> ok|fail`), retried every 0.5 s for up to 10 s as one
/// logical write (`L ok KEY` or `L fail KEY`). Stops on `/tmp/probe.stop`.
const PROBE: &str = r#"
n=$(hostname); i=0; : > /tmp/tls-enable-probe.log
while [ ! -e /tmp/probe.stop ]; do
  i=$((i+1)); k="/e2e/tls-enable/probe/$n/$i"; ok=0; t=0
  while [ $t -lt 20 ]; do
    if etcdctl --endpoints=127.0.0.1:2379 --dial-timeout=1s --command-timeout=2s put "$k" "$i" >/dev/null 2>&1; then
      echo "A $(date +%s%3N) ok" >> /tmp/tls-enable-probe.log; ok=1; break
    fi
    echo "A $(date +%s%3N) fail" >> /tmp/tls-enable-probe.log
    t=$((t+1)); sleep 0.5
  done
  if [ $ok = 1 ]; then echo "L ok $k" >> /tmp/tls-enable-probe.log; else echo "L fail $k" >> /tmp/tls-enable-probe.log; fi
  sleep 0.2
done
"#;

/// etcdctl on a node towards `ips` over TLS with the node's certificate.
fn etcdctl_tls(ips: &[&str]) -> String {
    let eps: Vec<String> = ips.iter().map(|i| format!("https://{i}:2379")).collect();
    format!(
        "etcdctl --endpoints={} {NODE_ETCDCTL_TLS} --command-timeout=10s",
        eps.join(",")
    )
}

/// The probe's figures on `n`; fails when a logical write failed or the
/// probe made no progress.
fn probe_figures(n: &str) -> Result<usize> {
    let p = ProbeLog::parse(&sh_ok(n, "cat /tmp/tls-enable-probe.log")?);
    p.report(n)?;
    let oks = p.acknowledged.len();
    Ok(oks)
}

#[test]
fn tls_enable_turns_a_running_plaintext_cluster_to_mutual_tls() -> Result<()> {
    let _c = ClusterGuard::fresh_mode(5, Mode::Plaintext)?;
    // Plaintext to begin with, and every node's certificates installed.
    let before = sh_ok(
        "node2",
        "etcdctl --endpoints=http://172.29.77.11:2379 member list -w json",
    )?;
    ensure!(
        before.contains("http://172.29.77.11:2380") && !before.contains("https://"),
        "not a plaintext cluster: {before}"
    );
    for n in NODES {
        sh_ok(
            n,
            "test -r /etc/deckhand/pki/node.crt && test -r /etc/deckhand/pki/node.key",
        )
        .with_context(|| format!("{n} has no certificates in /etc/deckhand/pki"))?;
    }
    let mut puts = String::new();
    for i in 0..KEYS {
        puts.push_str(&format!(
            "etcdctl --endpoints=127.0.0.1:2379 put /e2e/tls-enable/keys/k{i:03} v{i} >/dev/null && "
        ));
    }
    puts.push_str("true");
    sh_ok("node2", &puts)?;

    for n in ["node1", "node5"] {
        sh_ok(
            n,
            &format!(
                "rm -f /tmp/tls-enable-probe.log /tmp/probe.stop; nohup sh -c '{}' >/dev/null 2>&1 &",
                PROBE.replace('\'', "'\\''")
            ),
        )?;
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let t = Instant::now();
    let (ok, out, err) = sh("node1", "timeout 900 deckhand tls enable 2>&1")?;
    let took = t.elapsed().as_secs_f64();
    println!("deckhand tls enable ({took:.1} s):\n{out}{err}");
    if !ok {
        for n in NODES {
            let (_, j, _) = sh(
                n,
                "journalctl -u deckhand -u deckhand-etcd-member -u deckhand-etcd-proxy --no-pager -n 60 2>&1",
            )?;
            println!("--- {n}:\n{j}");
        }
    }
    ensure!(ok, "deckhand tls enable failed: {out} {err}");
    // A few seconds more of probing after the end.
    std::thread::sleep(std::time::Duration::from_secs(3));
    for n in ["node1", "node5"] {
        sh_ok(n, "touch /tmp/probe.stop")?;
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    let acked: Vec<(String, usize)> = ["node1", "node5"]
        .iter()
        .map(|n| Ok((n.to_string(), probe_figures(n)?)))
        .collect::<Result<_>>()?;

    // Every member's peer and client URLs are https://.
    let ml = sh_ok(
        "node2",
        &format!("{} member list -w json", etcdctl_tls(&MEMBER_IPS)),
    )?;
    let ml: Value = serde_json::from_str(&ml).context("member list JSON")?;
    let members = ml["members"].as_array().context("members")?;
    ensure!(members.len() == 3, "member list: {ml:#}");
    for m in members {
        for k in ["peerURLs", "clientURLs"] {
            let urls = m[k].as_array().with_context(|| format!("{k} in {m}"))?;
            ensure!(
                !urls.is_empty()
                    && urls
                        .iter()
                        .all(|u| u.as_str().is_some_and(|u| u.starts_with("https://"))),
                "{} {k}: {urls:?}",
                m["name"]
            );
        }
    }
    // Plaintext on the members' addresses gets no answer (HTTP and gRPC),
    // TLS with the node certificate does.
    for ip in MEMBER_IPS {
        for (port, path) in [(2379, "version"), (2380, "members")] {
            let (_, out, err) = host(&format!(
                "curl -sS -m 5 -o - -w 'HTTP %{{http_code}}' http://{ip}:{port}/{path}; echo \" exit $?\""
            ))?;
            println!(
                "plaintext http://{ip}:{port}/{path}: {} {}",
                out.trim(),
                err.trim()
            );
            ensure!(
                out.contains("HTTP 000") && !out.contains("exit 0") && !out.contains("etcd"),
                "http://{ip}:{port}/{path} answered in plaintext: {out} {err}"
            );
        }
        let (ok, out, err) = sh(
            "node2",
            &format!(
                "timeout 30 etcdctl --endpoints=http://{ip}:2379 --dial-timeout=3s --command-timeout=5s get /e2e/tls-enable/keys/k000"
            ),
        )?;
        ensure!(!ok, "plaintext gRPC to {ip}:2379 was served: {out} {err}");
        let health = sh_ok(
            "node4",
            &format!("{} endpoint health -w json", etcdctl_tls(&[ip])),
        )?;
        ensure!(
            health.contains("\"health\":true"),
            "{ip} over TLS: {health}"
        );
    }
    // localhost:2379 still plaintext, on members and proxies alike; the
    // keys written before are all there.
    for n in NODES {
        let got = sh_ok(
            n,
            "etcdctl --endpoints=127.0.0.1:2379 get --prefix /e2e/tls-enable/keys/ -w json",
        )?;
        let v: Value = serde_json::from_str(&got).context("get JSON")?;
        let count = v["count"].as_u64().unwrap_or(0) as usize;
        ensure!(count == KEYS, "{n}: {count} of {KEYS} keys");
    }
    // The probes' acknowledged writes are stored.
    for (n, oks) in &acked {
        let stored = sh_ok(
            "node2",
            &format!(
                "etcdctl --endpoints=127.0.0.1:2379 get --prefix /e2e/tls-enable/probe/{n}/ --keys-only | grep -c probe"
            ),
        )?;
        ensure!(
            stored.trim().parse::<usize>()? == *oks,
            "{n}: {oks} writes acknowledged, {} stored",
            stored.trim()
        );
    }
    // Every node reports stage https, and the CLI on a node reads the
    // member list over TLS without options.
    let st = wait_for("every node at TLS stage https", CONVERGE, || {
        let st = status("node3")?;
        Ok(NODES
            .iter()
            .all(|n| node(&st, n).is_some_and(|s| s["tls_stage"] == "https"))
            .then_some(st))
    })?;
    ensure!(
        st["members"].as_array().is_some_and(|m| m.len() == 3),
        "status members: {st:#}"
    );
    // Run again: nothing to do.
    let t = Instant::now();
    let (ok, out, err) = sh("node3", "timeout 300 deckhand tls enable 2>&1")?;
    println!(
        "second run ({:.1} s): {out}{err}",
        t.elapsed().as_secs_f64()
    );
    ensure!(ok && out.contains("TLS is on"), "second run: {out} {err}");
    ensure!(
        !out.contains("stage"),
        "the second run changed something: {out}"
    );
    let _ = cluster(&["down"]);
    Ok(())
}

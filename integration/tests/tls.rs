//! End-to-end TLS (issue 10), on the shared 5-node TLS cluster
//! (`ClusterGuard::shared_mode(Mode::Tls)`, whatever `DECKHAND_E2E_TLS`
//! says): what a member's node address refuses (a TLS client without a
//! certificate on 2379 and 2380, plaintext HTTP and gRPC) and serves (the
//! operator's certificate, from this host); `localhost:2379` in plaintext
//! on a member and on a proxy node; a proxy node listening on loopback only;
//! each node's certificate expiry in `deckhand status`; a member → proxy →
//! member round trip on TLS with a client on every node's `localhost:2379`
//! throughout.
//!
//! Refusals are checked for what refused them (a TLS alert after a TCP
//! connect, a closed connection, a refused connect), each beside the same
//! request with the right credentials succeeding, so that a test cannot
//! pass because nothing listens.
//!
//! Needs Docker and root, and this host on the harness network
//! (172.29.77.0/24), which `integration/cluster` sets up.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;
use serde_json::Value;

const NODES: [&str; 5] = ["node1", "node2", "node3", "node4", "node5"];
/// A member in the boot layout, and its address.
const MEMBER: (&str, &str) = ("node1", "172.29.77.11");
/// A proxy in the boot layout, and its address.
const PROXY: (&str, &str) = ("node5", "172.29.77.15");

fn ca() -> String {
    pki_dir().join("ca.crt").display().to_string()
}

/// `openssl s_client` to `addr` (ip:port) with `extra` flags, its stdin
/// held open for 2 s: with TLS 1.3 the client's side of the handshake ends
/// before the server has checked the client's certificate, so the server's
/// verdict (an alert, or nothing) arrives after it. (success, all output.)
fn s_client(addr: &str, extra: &str) -> Result<(bool, String)> {
    let (ok, out, err) = host(&format!(
        "sleep 2 | timeout 20 openssl s_client -connect {addr} -CAfile {} {extra} 2>&1",
        ca()
    ))?;
    Ok((ok, format!("{out}{err}")))
}

/// A TLS alert that refuses the client's (missing) certificate: Go's
/// `bad_certificate` (42; what etcd 3.4 sends) or TLS 1.3's
/// `certificate_required` (116).
fn refused_certificate(out: &str) -> bool {
    out.contains("alert bad certificate") || out.contains("alert certificate required")
}

/// (a) A member's node address: TLS without a client certificate is
/// refused on 2379 and 2380 (by the handshake: TCP connected, then an
/// alert), with TLS 1.3 and 1.2; plaintext HTTP and gRPC get no answer;
/// the operator's certificate (2379) and a node's (2380) get through; the
/// CLI from this host, with the operator's certificate, shows every node's
/// certificate expiry.
#[test]
fn member_address_serves_only_mutual_tls() -> Result<()> {
    let _c = ClusterGuard::shared_mode(Mode::Tls)?;
    let ip = MEMBER.1;
    let (op_ca, op_cert, op_key) = operator_files();
    let pki = pki_dir();
    let peer_cert = pki.join("nodes/node2/node.crt");
    let peer_key = pki.join("nodes/node2/node.key");
    for port in [2379, 2380] {
        let addr = format!("{ip}:{port}");
        for (tls, flag) in [("TLS 1.3", ""), ("TLS 1.2", "-tls1_2")] {
            let (ok, out) = s_client(&addr, flag)?;
            println!(
                "{addr}, {tls}, no client certificate: exit ok={ok}, {}",
                out.lines()
                    .filter(|l| l.contains("alert") || l.starts_with("CONNECTED"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
            ensure!(
                out.contains("CONNECTED"),
                "{addr} ({tls}): no TCP connection, so no TLS refusal to see:\n{out}"
            );
            ensure!(
                !ok && refused_certificate(&out),
                "{addr} ({tls}): a client without a certificate was not refused by the handshake:\n{out}"
            );
        }
        // The same handshake with a certificate of the cluster's CA passes.
        let (cert, key) = if port == 2379 {
            (&op_cert, &op_key)
        } else {
            (&peer_cert, &peer_key)
        };
        let (ok, out) = s_client(
            &addr,
            &format!("-cert {} -key {}", cert.display(), key.display()),
        )?;
        ensure!(
            ok && !out.contains("alert") && out.contains("Verify return code: 0 (ok)"),
            "{addr}: the handshake with {} failed:\n{out}",
            cert.display()
        );
    }

    // Plaintext: the HTTP API (etcd's /version on 2379, the peer API's
    // /members on 2380) and gRPC get no answer from the TLS listener.
    for (port, path) in [(2379, "version"), (2380, "members")] {
        let (ok, out, err) = host(&format!(
            "curl -sS -m 5 -o - -w 'HTTP %{{http_code}}' http://{ip}:{port}/{path}; echo \" exit $?\""
        ))?;
        println!(
            "plaintext http://{ip}:{port}/{path}: {}{}",
            out.trim(),
            err.trim()
        );
        ensure!(ok, "curl did not run: {err}");
        ensure!(
            out.contains("HTTP 000") && !out.contains("exit 0") && !out.contains("etcd"),
            "http://{ip}:{port}/{path} answered in plaintext: {out} {err}"
        );
        ensure!(
            err.contains("Empty reply from server") || err.contains("Connection reset"),
            "http://{ip}:{port}/{path}: expected the TLS listener to close the connection: {err}"
        );
    }
    let plain_grpc = format!(
        "timeout 30 etcdctl --endpoints=http://{ip}:2379 --dial-timeout=3s --command-timeout=5s get /e2e/x"
    );
    let (ok, out, err) = host(&plain_grpc)?;
    ensure!(
        !ok && (err.contains("deadline exceeded") || err.contains("connection closed")),
        "plaintext gRPC to {ip}:2379 was not refused: {out} {err}"
    );
    // https without a client certificate: refused too (gRPC over TLS).
    let (ok, out, err) = host(&format!(
        "timeout 30 etcdctl --endpoints=https://{ip}:2379 --cacert={} --dial-timeout=3s --command-timeout=5s get /e2e/x",
        op_ca.display()
    ))?;
    ensure!(
        !ok,
        "https to {ip}:2379 without a client certificate was served: {out} {err}"
    );

    // The operator's certificate over https: writes and reads.
    let op = format!(
        "etcdctl --endpoints=https://{ip}:2379 {} --command-timeout=10s",
        operator_etcdctl_tls()
    );
    let (ok, out, err) = host(&format!(
        "{op} put /e2e/tls/operator yes >/dev/null && {op} get --print-value-only /e2e/tls/operator"
    ))?;
    ensure!(
        ok && out.trim() == "yes",
        "the operator's certificate over https: {out} {err}"
    );

    // `deckhand status` from this host with the operator's certificate:
    // every node reports its node certificate's expiry and name.
    let cli = repo().join("integration/.cache/dist/deckhand");
    let cli_tls = format!(
        "--endpoints https://{ip}:2379 --cacert {} --cert {} --key {}",
        op_ca.display(),
        op_cert.display(),
        op_key.display()
    );
    let (ok, out, err) = host(&format!("{} status --json {cli_tls}", cli.display()))?;
    ensure!(ok, "deckhand status --json from the host: {out} {err}");
    let st: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    let now = unix_now();
    for n in NODES {
        let c = &node(&st, n).with_context(|| format!("{n} missing: {st:#}"))?["certificate"];
        let after = c["not_after_unix"]
            .as_u64()
            .with_context(|| format!("{n}: no certificate expiry in status: {c}"))?;
        ensure!(
            after > now + 86_400,
            "{n}: its certificate expires at {after}, now is {now}"
        );
        ensure!(
            c["common_name"] == format!("node:{n}"),
            "{n}: certificate CN {}",
            c["common_name"]
        );
        let days = node(&st, n).unwrap()["certificate_days_left"].as_i64();
        ensure!(
            days.is_some_and(|d| d >= 1),
            "{n}: certificate_days_left {days:?}"
        );
    }
    let (ok, table, err) = host(&format!("{} status {cli_tls}", cli.display()))?;
    ensure!(ok, "deckhand status from the host: {table} {err}");
    println!("{table}");
    let header = table
        .lines()
        .find(|l| l.starts_with("NODE "))
        .with_context(|| format!("no node table:\n{table}"))?;
    ensure!(
        header.contains("CERT"),
        "the node table has no certificate column: {header}"
    );
    // Every node's row shows its days left (`312d`).
    for n in NODES {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(n))
            .with_context(|| format!("no row for {n}:\n{table}"))?;
        ensure!(
            row.split_whitespace().any(|w| w
                .strip_suffix('d')
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))),
            "{n}'s row shows no certificate days left: {row}"
        );
    }
    Ok(())
}

/// (b) `localhost:2379` answers plaintext on a member node and on a proxy
/// node (etcdctl's default endpoint and the CLI's); the proxy listens on
/// loopback only (2379 on 127.0.0.1, no 2380), so from another node its
/// address refuses the connection (curl's exit 7: TCP connect failed)
/// while a member's address, with the same node certificate, answers.
#[test]
fn localhost_is_plaintext_and_a_proxy_listens_on_loopback_only() -> Result<()> {
    let _c = ClusterGuard::shared_mode(Mode::Tls)?;
    for (n, _) in [MEMBER, PROXY] {
        let out = sh_ok(
            n,
            &format!(
                "etcdctl --endpoints=http://127.0.0.1:2379 put /e2e/tls/local/{n} plain >/dev/null
                 etcdctl put /e2e/tls/local/{n}-default plain >/dev/null
                 etcdctl get --print-value-only /e2e/tls/local/{n}
                 deckhand status --json >/dev/null && echo cli-ok"
            ),
        )?;
        ensure!(
            out.lines().collect::<Vec<_>>() == ["plain", "cli-ok"],
            "{n}: plaintext through localhost:2379: {out}"
        );
    }
    // Listeners: a member on loopback and its address; the proxy on
    // loopback only.
    let listening = |n: &str, port: u16| -> Result<Vec<String>> {
        let out = sh_ok(n, &format!("ss -Hltn 'sport = :{port}'"))?;
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
            .collect();
        v.sort();
        Ok(v)
    };
    let m = listening(MEMBER.0, 2379)?;
    ensure!(
        m == ["127.0.0.1:2379".to_string(), format!("{}:2379", MEMBER.1)],
        "{}: 2379 listeners {m:?}",
        MEMBER.0
    );
    let p = listening(PROXY.0, 2379)?;
    ensure!(
        p == ["127.0.0.1:2379"],
        "{}: 2379 listeners {p:?} (only loopback wanted)",
        PROXY.0
    );
    let p = listening(PROXY.0, 2380)?;
    ensure!(p.is_empty(), "{}: 2380 listeners {p:?}", PROXY.0);

    // From another node, with its node certificate: the member's address
    // answers, the proxy's refuses the connection (curl exit 7).
    let curl = "curl -sS -m 5 --cacert /etc/deckhand/pki/ca.crt --cert /etc/deckhand/pki/node.crt --key /etc/deckhand/pki/node.key";
    let out = sh_ok(
        "node2",
        &format!("{curl} https://{}:2379/version", MEMBER.1),
    )?;
    ensure!(out.contains("etcdserver"), "member's /version: {out}");
    let (ok, out, err) = sh(
        "node2",
        &format!("{curl} https://{}:2379/version; echo \"exit $?\"", PROXY.1),
    )?;
    ensure!(
        ok && out.trim().ends_with("exit 7") && err.contains("Failed to connect"),
        "the proxy's address from node2: {out} {err}"
    );
    // And from this host, in plaintext too.
    let (_, out, err) = host(&format!(
        "curl -sS -m 5 http://{}:2379/version; echo \"exit $?\"",
        PROXY.1
    ))?;
    ensure!(
        out.trim().ends_with("exit 7") && err.contains("Failed to connect"),
        "the proxy's address from the host: {out} {err}"
    );
    Ok(())
}

/// The probe each node runs: every 200 ms one write through
/// `localhost:2379`, each attempt logged (`A <unix ms> ok|fail`), retried
/// every 0.5 s for up to 10 s as one logical write (`L ok KEY` or `L fail
/// KEY`). Stops on `/tmp/probe.stop`.
const PROBE: &str = r#"
n=$(hostname); i=0; : > /tmp/tls-probe.log
while [ ! -e /tmp/probe.stop ]; do
  i=$((i+1)); k="/e2e/tls/probe/$n/$i"; ok=0; t=0
  while [ $t -lt 20 ]; do
    if etcdctl --endpoints=127.0.0.1:2379 --dial-timeout=1s --command-timeout=2s put "$k" "$i" >/dev/null 2>&1; then
      echo "A $(date +%s%3N) ok" >> /tmp/tls-probe.log; ok=1; break
    fi
    echo "A $(date +%s%3N) fail" >> /tmp/tls-probe.log
    t=$((t+1)); sleep 0.5
  done
  if [ $ok = 1 ]; then echo "L ok $k" >> /tmp/tls-probe.log; else echo "L fail $k" >> /tmp/tls-probe.log; fi
  sleep 0.2
done
"#;

/// Runs `deckhand role set NODE --etcd ETCD` and waits until it converged;
/// returns the seconds it took.
fn change(node_name: &str, etcd: &str) -> Result<f64> {
    let t = Instant::now();
    let (ok, out, rev) = role_set("node1", node_name, etcd)?;
    ensure!(ok, "role set {node_name} {etcd}: {out}");
    let via = if node_name == "node2" {
        "node1"
    } else {
        "node2"
    };
    let st = wait_converged(via, node_name, rev)?;
    let n = node(&st, node_name).context("node missing")?;
    ensure!(n["etcd"]["mode"] == etcd, "{node_name}: {n:#}");
    let s = t.elapsed().as_secs_f64();
    println!("{node_name} -> {etcd} converged in {s:.1} s");
    Ok(s)
}

/// (c) On a TLS cluster: node4 proxy → member, then node3 (a bootstrap
/// member) member → proxy → member, each converging; a client on every
/// node's `localhost:2379` keeps writing throughout (no logical write
/// failed, every acknowledged write stored; the gaps are reported); node3
/// as a proxy listens on loopback only and as a member again serves its
/// address over TLS.
#[test]
fn member_proxy_member_on_tls_keeps_localhost_serving() -> Result<()> {
    let _c = ClusterGuard::shared_mode(Mode::Tls)?;
    for n in NODES {
        sh_ok(
            n,
            &format!(
                "rm -f /tmp/tls-probe.log /tmp/probe.stop; nohup sh -c '{}' >/dev/null 2>&1 &",
                PROBE.replace('\'', "'\\''")
            ),
        )?;
    }
    change("node4", "member")?;
    change("node3", "proxy")?;
    let l = sh_ok(
        "node3",
        "ss -Hltn 'sport = :2379 or sport = :2380' | awk '{print $4}'",
    )?;
    ensure!(
        l.split_whitespace().collect::<Vec<_>>() == ["127.0.0.1:2379"],
        "node3 as a proxy listens on {l:?}"
    );
    change("node3", "member")?;
    let out = sh_ok(
        "node2",
        &format!("{} endpoint health -w json", etcdctl_at(&["172.29.77.13"])?),
    )?;
    ensure!(
        out.contains("\"health\":true"),
        "node3's member over TLS: {out}"
    );

    for n in NODES {
        sh_ok(n, "touch /tmp/probe.stop")?;
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    for n in NODES {
        let p = ProbeLog::parse(&sh_ok(n, "cat /tmp/tls-probe.log")?);
        p.report(n)?;
        let oks = &p.acknowledged;
        let stored = sh_ok(
            "node2",
            &format!("etcdctl get --prefix /e2e/tls/probe/{n}/ --keys-only | grep -c probe"),
        )?;
        ensure!(
            stored.trim().parse::<usize>()? == oks.len(),
            "{n}: {} writes acknowledged, {} stored",
            oks.len(),
            stored.trim()
        );
    }
    Ok(())
}

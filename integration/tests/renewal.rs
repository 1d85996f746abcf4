//! End-to-end certificate renewal through etcd (issue 10), on the shared
//! 5-node TLS cluster: node1 gets the harness CA's key (so its agent stands
//! for `elections/pki-signer` and signs), node2 (a member) and node4 (a
//! proxy node) see their wall clock 300 days ahead (libfaketime in their
//! agents only), so their 1-year certificates have less than a third of
//! their lifetime left. Each agent renews its node and proxy certificates:
//! new files, old ones kept as `FILE.old-<UTC time>`, no etcd unit
//! restarted, a new TLS connection to node2's member shows the new
//! certificate, and the cluster keeps serving (every node alive and
//! converged, a write and a read through each renewed node's
//! `localhost:2379`).
//!
//! Needs Docker and root, and this host on the harness network.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;

/// 300 days, in seconds: the offset of the renewing agents' wall clock.
const AHEAD: u64 = 300 * 86_400;

fn faketime_drop_in(offset: u64) -> String {
    format!(
        "set -e
mkdir -p /run/deckhand
echo +{offset} > /run/deckhand/faketime
mkdir -p /run/systemd/system/deckhand.service.d
printf '%s\\n' '[Service]' \\
  'Environment=LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1' \\
  'Environment=FAKETIME_TIMESTAMP_FILE=/run/deckhand/faketime' \\
  'Environment=FAKETIME_NO_CACHE=1' \\
  'Environment=FAKETIME_DONT_FAKE_MONOTONIC=1' \\
  > /run/systemd/system/deckhand.service.d/faketime.conf
systemctl daemon-reload
systemctl restart deckhand.service
        "
    )
}

fn fingerprint(node: &str, file: &str) -> Result<String> {
    Ok(sh_ok(
        node,
        &format!("openssl x509 -in {file} -noout -fingerprint -sha256"),
    )?
    .trim()
    .to_string())
}

fn main_pid(node: &str, unit: &str) -> Result<String> {
    Ok(sh_ok(node, &format!("systemctl show -P MainPID {unit}"))?
        .trim()
        .to_string())
}

/// Every node alive and converged, no error.
fn all_converged() -> Result<()> {
    let st = status("node1")?;
    for k in 1..=SHARED_NODES {
        let name = format!("node{k}");
        let n = node(&st, &name).with_context(|| format!("{name} missing"))?;
        ensure!(
            n["alive"] == true && n["converged"] == true && n["error"].is_null(),
            "{name} is not alive and converged: {n}"
        );
    }
    Ok(())
}

/// What the nodes say about certificates, printed when the renewal does not
/// come.
fn diagnose() {
    for n in ["node1", "node2", "node4"] {
        let (_, out, err) = sh(
            n,
            "journalctl -u deckhand.service --no-pager -n 400 | grep -iE 'certif|renew|sign|challenge|pki|faketime|starting' | tail -n 40",
        )
        .unwrap_or_default();
        println!("--- {n}: agent journal ---\n{out}{err}");
    }
    let (_, out, _) = sh("node1", "etcdctl get --prefix /deckhand/pki/ /deckhand/elections/pki-signer --prefix --keys-only; etcdctl get --prefix /deckhand/pki/refused/").unwrap_or_default();
    println!("--- pki keys ---\n{out}");
    let (_, out, _) = sh(
        "node1",
        "deckhand status --json | grep -o '\"certificate\":{[^}]*}'",
    )
    .unwrap_or_default();
    println!("--- status certificates ---\n{out}");
}

/// Undoes the test's changes on the nodes, even when it fails.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = sh("node1", "rm -f /etc/deckhand/pki/ca.key");
        for n in ["node2", "node4"] {
            let _ = sh(
                n,
                "rm -f /run/systemd/system/deckhand.service.d/faketime.conf /run/deckhand/faketime; systemctl daemon-reload; systemctl restart deckhand.service",
            );
        }
    }
}

#[test]
fn agents_renew_their_certificates_through_etcd_and_the_cluster_keeps_working() -> Result<()> {
    let _c = ClusterGuard::shared_mode(Mode::Tls)?;
    let _cleanup = Cleanup;
    all_converged()?;
    let renewing = [
        ("node2", "deckhand-etcd-member.service"),
        ("node4", "deckhand-etcd-proxy.service"),
    ];
    let mut before = Vec::new();
    for (n, unit) in renewing {
        before.push((
            fingerprint(n, "/etc/deckhand/pki/node.crt")?,
            fingerprint(n, "/etc/deckhand/pki/proxy.crt")?,
            main_pid(n, unit)?,
        ));
    }
    let ca_key = std::fs::read_to_string(pki_dir().join("ca.key"))
        .context("the harness CA key (a TLS boot makes it)")?;
    sh_ok(
        "node1",
        &format!("umask 077; cat > /etc/deckhand/pki/ca.key <<'PEM'\n{ca_key}PEM"),
    )?;
    let t = std::time::Instant::now();
    for (n, _) in renewing {
        sh_ok(n, &faketime_drop_in(AHEAD))?;
    }
    for (i, (n, unit)) in renewing.iter().enumerate() {
        let (node_fp, proxy_fp, pid) = &before[i];
        wait_for(
            &format!("{n}'s renewed certificates"),
            Duration::from_secs(120),
            || {
                let now = fingerprint(n, "/etc/deckhand/pki/node.crt")?;
                let proxy = fingerprint(n, "/etc/deckhand/pki/proxy.crt")?;
                Ok((now != *node_fp && proxy != *proxy_fp).then_some(()))
            },
        )
        .inspect_err(|_| diagnose())?;
        println!(
            "{n}: renewed {:.1} s after the clock step",
            t.elapsed().as_secs_f64()
        );
        // The old files are kept; the new ones are the CA's, for the node.
        let kept = sh_ok(n, "ls /etc/deckhand/pki/")?;
        for f in ["node.crt", "node.key", "proxy.crt", "proxy.key"] {
            ensure!(
                kept.lines().any(|l| l.starts_with(&format!("{f}.old-"))),
                "{n}: no {f}.old-* kept: {kept}"
            );
        }
        sh_ok(
            n,
            "openssl verify -CAfile /etc/deckhand/pki/ca.crt /etc/deckhand/pki/node.crt /etc/deckhand/pki/proxy.crt",
        )?;
        let subject = sh_ok(
            n,
            "openssl x509 -in /etc/deckhand/pki/node.crt -noout -subject",
        )?;
        ensure!(subject.contains(&format!("node:{n}")), "{n}: {subject}");
        let modes = sh_ok(
            n,
            "stat -c '%n %U:%G %a' /etc/deckhand/pki/node.key /etc/deckhand/pki/proxy.key",
        )?;
        ensure!(
            modes.lines().all(|l| l.ends_with("root:etcd 640")),
            "{n}: key owner and mode: {modes}"
        );
        // No etcd restart.
        ensure!(main_pid(n, unit)? == *pid, "{n}: {unit} was restarted");
    }
    // The requests and their answers are gone.
    wait_for("no pki keys left", Duration::from_secs(20), || {
        let left = sh_ok("node1", "etcdctl get --prefix /deckhand/pki/ --keys-only")?;
        Ok(left.trim().is_empty().then_some(()))
    })?;
    // A new TLS connection to node2's member shows the renewed certificate
    // (etcd re-reads its files per handshake).
    let served = sh_ok(
        "node1",
        "openssl s_client -connect 172.29.77.12:2379 -CAfile /etc/deckhand/pki/ca.crt -cert /etc/deckhand/pki/node.crt -key /etc/deckhand/pki/node.key </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
    )?;
    let now2 = fingerprint("node2", "/etc/deckhand/pki/node.crt")?;
    ensure!(
        served.trim() == now2,
        "node2:2379 serves {served:?}, the file is {now2:?}"
    );
    // The cluster keeps working: the member with its new certificate, the
    // proxy node with its new proxy certificate, every agent.
    for n in ["node2", "node4"] {
        sh_ok(
            n,
            &format!("etcdctl put /e2e/renewal/{n} ok && etcdctl get /e2e/renewal/{n}"),
        )?;
    }
    sh_ok(
        "node1",
        &format!(
            "etcdctl {NODE_ETCDCTL_TLS} --endpoints=https://172.29.77.11:2379,https://172.29.77.12:2379,https://172.29.77.13:2379 endpoint health"
        ),
    )?;
    wait_for("every node converged", Duration::from_secs(60), || {
        Ok(all_converged().ok())
    })?;
    sh_ok("node1", "etcdctl del --prefix /e2e/renewal/")?;
    Ok(())
}

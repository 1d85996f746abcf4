//! Ignition and Butane (issue 12): `packaging/ignition/deckhand.bu` and the
//! Ignition config it describes, `packaging/ignition/deckhand.ign` (spec
//! 3.3.0), applied for real by Debian's ignition 2.14 to an extra node,
//! node7, that has no etcd of its own (`integration/cluster add node7
//! --ignition packaging/ignition/deckhand.ign`: the fetch and files stages
//! run on the node's root before its systemd starts, as in Flatcar's
//! initramfs; Ignition fetches `/opt/bin/deckhand` and `/opt/bin/etcd` from
//! the harness's dist server, the URLs in the committed file).
//!
//! Checked: the two files are what `packaging/ignition/generate` writes and
//! agree as data (the Butane file parsed and translated is the JSON);
//! `ignition-validate` accepts the JSON; on node7 the binaries are under
//! /opt/bin, the distribution has no etcd, the agent and the preseed are
//! enabled by Ignition, the agent joins the shared cluster as a proxy and
//! `localhost:2379` serves a key written through node1. node7 is removed at
//! the end, pass or fail.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;

const NODE: &str = "node7";

#[test]
fn butane_and_ignition_agree_and_validate() -> Result<()> {
    let (ok, out, err) = host(&format!(
        "cd {} && packaging/ignition/generate --check && ignition-validate packaging/ignition/deckhand.ign",
        repo().display()
    ))?;
    ensure!(ok, "packaging/ignition: {out}{err}");
    Ok(())
}

#[test]
fn ignition_node_joins_and_serves_localhost() -> Result<()> {
    let _ = cluster_raw(&["remove", NODE]);
    let guard = ClusterGuard::shared()?;
    let result = run(&guard);
    if result.is_err() {
        let log = sh(
            NODE,
            "tail -n 30 /var/log/ignition.log; journalctl -u 'deckhand*' --no-pager -n 40",
        )
        .map(|(_, o, e)| format!("{o}{e}"))
        .unwrap_or_default();
        println!("{NODE}'s Ignition log and deckhand journal:\n{log}");
    }
    if let Err(e) = cluster(&["remove", NODE]) {
        println!("removing {NODE} failed: {e:#}");
    }
    result
}

fn run(_guard: &ClusterGuard) -> Result<()> {
    let ign = repo().join("packaging/ignition/deckhand.ign");
    cluster(&["add", NODE, "--ignition", &ign.to_string_lossy()])?;
    let out = sh_ok(
        NODE,
        "set -e
         test -x /opt/bin/deckhand
         test -x /opt/bin/etcd
         if [ -e /usr/bin/etcd ]; then echo 'the image has an etcd of its own'; exit 1; fi
         getent passwd etcd | cut -d: -f1
         systemctl is-enabled deckhand.service deckhand-preseed.service deckhand-pki-install.service
         systemctl show -P ExecStart deckhand-etcd-proxy.service | grep -o '/opt/bin/etcd' | head -n 1",
    )
    .context("node7's Ignition install")?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines == ["etcd", "enabled", "enabled", "enabled", "/opt/bin/etcd"],
        "node7 after Ignition: {lines:?}"
    );
    // The binary Ignition fetched is the one the harness staged.
    let (ok, _, err) = host(&format!(
        "docker exec {NODE} cat /opt/bin/deckhand | cmp - {}",
        repo().join("integration/.cache/dist/deckhand").display()
    ))?;
    ensure!(ok, "/opt/bin/deckhand is not the staged binary: {err}");
    let st = wait_converged("node1", NODE, 0)?;
    let me = node(&st, NODE).context("node7 in status")?;
    ensure!(
        me["etcd"]["mode"] == "proxy" && me["error"].is_null(),
        "node7 joined as {}: {me}",
        me["etcd"]["mode"]
    );
    let v = format!("ignition-{}", unix_now());
    sh_ok(
        "node1",
        &format!("etcdctl put /e2e/ignition {v} >/dev/null"),
    )?;
    wait_for("node7's localhost:2379", Duration::from_secs(60), || {
        let got = sh_ok(
            NODE,
            "etcdctl --endpoints localhost:2379 --command-timeout=3s get --print-value-only /e2e/ignition",
        )?;
        Ok((got.trim() == v).then_some(()))
    })?;
    println!("node7 (installed by Ignition) joined as a proxy and serves localhost:2379");
    Ok(())
}

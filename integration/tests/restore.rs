//! End-to-end test of `deckhand restore` (issue 11) on the shared 5-node
//! cluster: 1,000 keys and two planes (a global router unit on the proxy
//! nodes, a singleton control unit on the member nodes); `deckhand backup
//! now`; then every member node loses its etcd data (agent, member and
//! proxy stopped, the data dir moved away, the member environment and the
//! `bootstrapped` marker removed: an empty disk for etcd, with
//! `[restore] expect = true` in a drop-in as a reprovisioned host would
//! get it) and its agent, started again, must not bootstrap a cluster of
//! its own. A damaged snapshot and another cluster's are refused with
//! nothing changed; `deckhand restore` on each member node brings the keys
//! back, every node converges (the proxy nodes' agents follow the new
//! cluster ID), the planes run again, and a second run says it is done.
//! Prints the time from the first restore command to a converged cluster.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use deckhand_integration::*;

const BACKUPS: &str = "/var/lib/deckhand/backups";
const DATA: &str = "/var/lib/deckhand-etcd/member";
const MEMBERS: [&str; 3] = ["node1", "node2", "node3"];
const PROXIES: [&str; 2] = ["node4", "node5"];
const KEYS: usize = 1000;
const ROUTER: &str = "demo-router.service";
const CONTROL: &str = "demo-control.service";

/// Removes what the test left; when `broken` (the cluster was taken apart
/// and not seen converged again), takes the harness down so that the next
/// test boots a fresh cluster rather than reuse a broken one.
struct Cleanup {
    broken: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for k in 1..=SHARED_NODES {
            let n = format!("node{k}");
            let _ = sh(
                &n,
                &format!(
                    "rm -rf {BACKUPS} /root/restore; rm -f /etc/deckhand/config.d/50-test.toml"
                ),
            );
        }
        if self.broken {
            eprintln!("[restore] the cluster did not come back: taking the harness down");
            let _ = cluster(&["down"]);
        }
    }
}

fn active(node: &str, unit: &str) -> bool {
    sh(node, &format!("systemctl is-active {unit}"))
        .map(|(ok, out, _)| ok && out.trim() == "active")
        .unwrap_or(false)
}

fn running(nodes: &[&str], unit: &str) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| active(n, unit))
        .map(|n| n.to_string())
        .collect()
}

fn machine_id(node: &str) -> Result<String> {
    Ok(sh_ok(node, "cat /etc/machine-id")?.trim().to_owned())
}

/// Waits for the planes: the router on both proxy nodes, the control
/// singleton on exactly one member node.
fn wait_planes(what: &str) -> Result<String> {
    wait_for(what, CONVERGE, || {
        let routers = running(&PROXIES, ROUTER);
        let controls = running(&MEMBERS, CONTROL);
        ensure!(
            routers.len() == 2 && controls.len() == 1,
            "router on {routers:?}, control on {controls:?}"
        );
        Ok(Some(controls[0].clone()))
    })
}

fn key_count(node: &str) -> Result<usize> {
    // etcdctl 3.4 has no --count-only.
    let out = sh_ok(
        node,
        "etcdctl --command-timeout=5s get --prefix /e2e/restore/ --keys-only > /tmp/restore-keys && grep -c '^/e2e/restore/k' /tmp/restore-keys; rm -f /tmp/restore-keys",
    )?;
    out.trim().parse().with_context(|| out.clone())
}

#[test]
fn a_cluster_that_lost_every_member_comes_back_from_a_snapshot() -> Result<()> {
    let _guard = ClusterGuard::shared()?;
    let mut cleanup = Cleanup { broken: false };
    // Planes, a short lease (the old cluster's leases, restored with the
    // snapshot, expire sooner) and the keys.
    let ids: Vec<String> = (1..=SHARED_NODES)
        .map(|k| machine_id(&format!("node{k}")))
        .collect::<Result<_>>()?;
    sh_ok(
        "node1",
        &format!(
            "etcdctl put /deckhand/config/cluster '{{\"lease_ttl_seconds\":10}}' >/dev/null
             deckhand plane set router --unit {ROUTER}=global --image 172.29.77.2:5000/deckhand/router:1
             deckhand plane set control --unit {CONTROL}=singleton --image 172.29.77.2:5000/deckhand/control:1"
        ),
    )?;
    for (k, id) in ids.iter().enumerate() {
        let (etcd, planes) = if k < 3 {
            ("member", "control")
        } else {
            ("proxy", "router")
        };
        sh_ok(
            "node1",
            &format!("deckhand role set {id} --etcd {etcd} --planes {planes}"),
        )?;
    }
    let holder = wait_planes("the planes to run before the backup")?;
    eprintln!("[restore] planes run; control singleton on {holder}");
    sh_ok(
        "node1",
        &format!(
            "for i in $(seq 1 {KEYS}); do echo \"put /e2e/restore/k$i value-$i\"; done > /tmp/keys
             i=0; while [ $i -lt {KEYS} ]; do
               {{ echo; sed -n \"$((i+1)),$((i+100))p\" /tmp/keys; echo; echo; }} | etcdctl --command-timeout=10s txn >/dev/null
               i=$((i+100))
             done; rm -f /tmp/keys"
        ),
    )?;
    ensure!(key_count("node4")? == KEYS, "{KEYS} keys written");

    // The backup, copied to every member node (their disks are lost below).
    let (code, out, err) = sh_rc("node5", "deckhand backup now --timeout 120")?;
    ensure!(code == 0, "backup now: {code} {out} {err}");
    eprintln!("[restore] {}", out.trim());
    let described = out
        .lines()
        .find_map(|l| {
            l.split_once(": ")
                .filter(|_| l.contains("written and verified"))
        })
        .map(|(_, d)| d.to_owned())
        .context("the snapshot in backup now's answer")?;
    let (path, rest) = described.split_once(" on ").context("PATH on NODE")?;
    let taker = rest.split(':').next().context("the taker")?.to_owned();
    let cid = path
        .rsplit('/')
        .nth(1)
        .context("the cluster id folder")?
        .to_owned();
    let file = path.rsplit('/').next().unwrap().to_owned();
    let host = tempdir()?;
    for f in [file.clone(), format!("{file}.json")] {
        docker(&[
            "cp",
            &format!("{taker}:{BACKUPS}/{cid}/{f}"),
            &format!("{host}/{f}"),
        ])?;
    }
    let snap = format!("/root/restore/{cid}/{file}");
    for n in MEMBERS {
        sh_ok(n, &format!("mkdir -p /root/restore/{cid}"))?;
        for f in [file.clone(), format!("{file}.json")] {
            docker(&[
                "cp",
                &format!("{host}/{f}"),
                &format!("{n}:/root/restore/{cid}/{f}"),
            ])?;
        }
    }

    // Every member node loses its etcd data; its agent comes back with
    // `[restore] expect` and must not bootstrap a new cluster.
    cleanup.broken = true;
    let since = unix_now();
    for n in MEMBERS {
        sh_ok(
            n,
            &format!(
                "systemctl stop deckhand.service deckhand-etcd-member.service deckhand-etcd-proxy.service
                 mv {DATA} {DATA}.lost-$(date +%s)
                 rm -f /var/lib/deckhand/etcd-member.env /var/lib/deckhand/bootstrapped /var/lib/deckhand/restored.json
                 mkdir -p /etc/deckhand/config.d && printf '[restore]\\nexpect = true\\n' > /etc/deckhand/config.d/50-test.toml"
            ),
        )?;
    }
    for n in MEMBERS {
        sh_ok(n, "systemctl start deckhand.service")?;
    }
    for n in MEMBERS {
        // Instead of bootstrapping, the agent runs a proxy and waits.
        wait_for(&format!("{n}'s agent to start a proxy"), CONVERGE, || {
            Ok(active(n, "deckhand-etcd-proxy.service").then_some(()))
        })?;
        let (has_dir, _, _) = sh(n, &format!("test -e {DATA}"))?;
        ensure!(!has_dir, "{n} made a data dir: it bootstrapped");
        ensure!(
            !active(n, "deckhand-etcd-member.service"),
            "{n} started a member"
        );
        let log = journal_since(n, since)?;
        ensure!(
            !log.contains("bootstrapping a new cluster"),
            "{n} bootstrapped:\n{log}"
        );
    }

    // Bad input: refused, nothing stopped, nothing moved.
    let (code, _, err) = sh_rc(
        "node1",
        &format!(
            "cp {snap} /root/restore/{cid}/flipped.db && cp {snap}.json /root/restore/{cid}/flipped.db.json && printf '\\377' | dd of=/root/restore/{cid}/flipped.db bs=1 seek=9000 conv=notrunc 2>/dev/null && deckhand restore /root/restore/{cid}/flipped.db"
        ),
    )?;
    ensure!(
        code == 65 && err.contains("SHA-256 does not match"),
        "flipped: {code} {err}"
    );
    let other = "0123456789abcdef0123456789abcdef";
    let (code, _, err) = sh_rc(
        "node1",
        &format!(
            "mkdir -p /root/restore/{other} && cp {snap} {snap}.json /root/restore/{other}/ && deckhand restore /root/restore/{other}/{file}"
        ),
    )?;
    ensure!(
        code == 65 && err.contains("names deckhand cluster"),
        "another cluster's: {code} {err}"
    );
    let (code, _, err) = sh_rc("node1", "deckhand restore s3://bucket/key.db")?;
    ensure!(
        code == 2 && err.contains("give --s3-settings FILE"),
        "s3: {code} {err}"
    );
    ensure!(
        active("node1", "deckhand.service") && active("node1", "deckhand-etcd-proxy.service"),
        "a refusal stopped something"
    );
    let (has_dir, _, _) = sh("node1", &format!("test -e {DATA}"))?;
    ensure!(!has_dir, "a refusal made a data dir");

    // The restore, on each member node.
    let t = Instant::now();
    for n in MEMBERS {
        let (code, out, err) = sh_rc(n, &format!("deckhand restore {snap}"))?;
        ensure!(code == 0, "restore on {n}: {code}\n{out}\n{err}");
        eprintln!("[restore] {n}:\n{}", out.trim());
    }
    let restored_in = t.elapsed();
    let back = wait_for("the keys to be back", CONVERGE, || {
        Ok((key_count("node4").ok() == Some(KEYS)).then_some(()))
    });
    if let Err(e) = back {
        for n in MEMBERS {
            eprintln!(
                "[restore] {n}: {}",
                journal_since(n, since).unwrap_or_default()
            );
        }
        bail!("{e:#}");
    }
    let keys_in = t.elapsed();
    // node5's proxy may be restarting at this moment (its agent restarts it
    // when it sees the new cluster ID): read until it answers.
    wait_for("k777 through node5's localhost:2379", CONVERGE, || {
        let (code, value, _) = sh_rc("node5", "etcdctl get --print-value-only /e2e/restore/k777")?;
        Ok((code == 0 && value.trim() == "value-777").then_some(()))
    })?;
    let revs: Vec<(String, i64)> = Vec::new();
    wait_boot_layout(SHARED_NODES, &revs)?;
    let converged_in = t.elapsed();
    let holder = wait_planes("the planes to run again")?;
    let planes_in = t.elapsed();
    eprintln!(
        "[figure] restore of {KEYS} keys on 3 members: commands {:.1} s, keys readable {:.1} s, every node converged {:.1} s, planes running {:.1} s (control on {holder}) after the first restore command",
        restored_in.as_secs_f64(),
        keys_in.as_secs_f64(),
        converged_in.as_secs_f64(),
        planes_in.as_secs_f64()
    );
    cleanup.broken = false;
    // The proxy nodes' agents noticed the new cluster.
    for n in PROXIES {
        let log = journal_since(n, since)?;
        ensure!(
            log.contains("etcd cluster changed from"),
            "{n} did not notice the new cluster:\n{log}"
        );
    }
    // A second run: already done, nothing moved, the member not restarted.
    let state = |n: &str| {
        sh_ok(
            n,
            &format!(
                "ls -d {DATA}*; systemctl show -P InvocationID deckhand-etcd-member.service; cat /var/lib/deckhand/restored.json"
            ),
        )
    };
    let before = state("node2")?;
    let (code, out, err) = sh_rc("node2", &format!("deckhand restore {snap}"))?;
    ensure!(
        code == 0 && out.contains("already restored"),
        "rerun: {code} {out} {err}"
    );
    let after = state("node2")?;
    ensure!(
        before == after,
        "a rerun changed something:\n{before}\n---\n{after}"
    );
    Ok(())
}

fn docker(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("docker").args(args).output()?;
    ensure!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn tempdir() -> Result<String> {
    let d = std::env::temp_dir().join(format!("deckhand-restore-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d.display().to_string())
}

//! End-to-end identity tests (issue 9, "a node never serves the wrong
//! cluster"): a voter whose data dir is replaced by another cluster's, and
//! a voter removed behind deckhand's back with `etcdctl member remove`. A
//! client on the node reads and writes through `localhost:2379` throughout
//! and must never reach the other cluster; the node rejoins as its role
//! says and the cluster ends with its three voters. Both run on the shared
//! 5-node cluster (`ClusterGuard::shared`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;
use serde_json::Value;

/// The local client: every ~50 ms a serializable read of `/e2e/identity/`
/// (served by whatever answers `localhost:2379`, with no leader needed) and
/// a write of `/e2e/identity/w`, through `localhost:2379`. One line per
/// round: `<ms> <read result or "fail"> | <write "ok" or "fail">`. Stops on
/// `/tmp/probe.stop` (as the fixture's reset expects of every probe).
const PROBE: &str = r#"
rm -f /tmp/identity-probe.log
i=0
while [ ! -e /tmp/probe.stop ]; do
  i=$((i+1)); t=$(date +%s%3N)
  if r=$(etcdctl --endpoints=127.0.0.1:2379 --dial-timeout=1s --command-timeout=1s get --prefix /e2e/identity/ --consistency=s 2>/dev/null); then r=$(echo "$r" | tr '\n' ' '); else r=fail; fi
  if etcdctl --endpoints=127.0.0.1:2379 --dial-timeout=1s --command-timeout=1s put /e2e/identity/w "$i" >/dev/null 2>&1; then w=ok; else w=fail; fi
  echo "$t $r | $w" >> /tmp/identity-probe.log
  sleep 0.05
done
"#;

/// A standalone etcd ("another cluster") on loopback ports of its own.
const FOREIGN_FLAGS: &str = "--name foreign \
 --listen-client-urls http://127.0.0.1:22379 --advertise-client-urls http://127.0.0.1:22379 \
 --listen-peer-urls http://127.0.0.1:22380 --initial-advertise-peer-urls http://127.0.0.1:22380 \
 --initial-cluster foreign=http://127.0.0.1:22380";

/// Starts a standalone etcd on `dir` in `node`, waits until it answers
/// (healthy, or after 30 tries just `endpoint status`, which needs no quorum:
/// a data dir of a member of the real cluster has no quorum alone),
/// runs `then` (etcdctl commands against it) and stops it; returns their
/// output.
fn with_foreign_etcd(node: &str, dir: &str, then: &str) -> Result<String> {
    sh_ok(
        node,
        &format!(
            r#"set -e
nohup etcd --data-dir {dir} {FOREIGN_FLAGS} >/tmp/foreign-etcd.log 2>&1 &
pid=$!
for i in $(seq 1 100); do e="etcdctl --endpoints=127.0.0.1:22379 --dial-timeout=1s"; $e endpoint health >/dev/null 2>&1 && break; [ $i -gt 30 ] && $e endpoint status >/dev/null 2>&1 && break; sleep 0.1; done
out=$(export ETCDCTL_ENDPOINTS=http://127.0.0.1:22379; {then})
kill $pid; wait $pid 2>/dev/null || true
echo "$out""#
        ),
    )
}

fn start_probe(node: &str) -> Result<()> {
    sh_ok(
        node,
        &format!(
            "rm -f /tmp/probe.stop; nohup sh -c '{}' >/dev/null 2>&1 &",
            PROBE.replace('\'', "'\\''")
        ),
    )?;
    Ok(())
}

/// Stops the probe and returns its log lines.
fn stop_probe(node: &str) -> Result<Vec<String>> {
    sh_ok(node, "touch /tmp/probe.stop; sleep 1.5")?;
    Ok(sh_ok(node, "cat /tmp/identity-probe.log")?
        .lines()
        .map(String::from)
        .collect())
}

/// The events in `name`'s status, as seen from `via`.
fn events(via: &str, name: &str) -> Result<Vec<String>> {
    let st = status(via)?;
    Ok(node(&st, name)
        .and_then(|n| n["events"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.as_str().map(String::from))
        .collect())
}

/// Waits until the cluster has three started voters named node1..node3,
/// no learner, and `name` is converged as a member with another member id
/// than `old_id` (hex), as seen from node1; returns `name`'s member id.
fn wait_rejoined(name: &str, old_id: &str) -> Result<String> {
    wait_for(&format!("{name} to rejoin"), CONVERGE, || {
        let m = members("node1")?;
        let all = m["members"].as_array().cloned().unwrap_or_default();
        let mut voters: Vec<String> = all
            .iter()
            .filter(|x| {
                x["isLearner"] != true && x["clientURLs"].as_array().is_some_and(|u| !u.is_empty())
            })
            .filter_map(|x| x["name"].as_str().map(String::from))
            .collect();
        voters.sort();
        ensure!(
            all.len() == 3 && voters == ["node1", "node2", "node3"],
            "members: {} entries, started voters {voters:?}",
            all.len()
        );
        let st = status("node1")?;
        let n = node(&st, name).context("node missing from status")?;
        let id = n["etcd"]["member_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ok = n["alive"] == true
            && n["converged"] == true
            && n["etcd"]["mode"] == "member"
            && !id.is_empty()
            && id != old_id;
        ensure!(ok, "{name}: {n}");
        Ok(Some(id))
    })
}

/// Fails unless `node` runs this checkout's member unit (with the start
/// check): a cluster booted from another checkout mounts that checkout's
/// units, and the fixture's reuse check does not tell them apart.
fn ensure_start_check(node: &str) -> Result<()> {
    let unit = sh_ok(node, "systemctl cat deckhand-etcd-member.service")?;
    ensure!(
        unit.contains("deckhand check-member"),
        "{node}'s member unit has no start check: the harness runs another checkout's units (integration/cluster down, then rerun)"
    );
    Ok(())
}

/// `name`'s member id (hex) in node1's member list.
fn member_id(name: &str) -> Result<String> {
    let m = members("node1")?;
    let id = m["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["name"] == name)
        .and_then(|x| x["ID"].as_u64())
        .with_context(|| format!("{name} not in the member list: {m}"))?;
    Ok(format!("{id:x}"))
}

fn print_figures(what: &str, reported: Duration, rejoined: Duration) {
    println!(
        "[figures] {what}: fault to the agent's report {:.1} s, fault to rejoined {:.1} s",
        reported.as_secs_f64(),
        rejoined.as_secs_f64()
    );
}

/// Case 1: node3's member data dir is swapped for another cluster's and
/// its etcd is killed, so systemd restarts it on the foreign data. The
/// start check refuses it (etcd never binds), the agent moves it aside,
/// the proxy serves localhost:2379 and node3 rejoins as a new member. A
/// client on node3 reads and writes through localhost:2379 throughout and
/// never sees or writes the other cluster's data.
#[test]
fn a_data_dir_from_another_cluster_never_serves_localhost() -> Result<()> {
    let _c = ClusterGuard::shared()?;
    ensure_start_check("node3")?;
    let old_id = member_id("node3")?;
    sh_ok("node1", "etcdctl put /e2e/identity/real here >/dev/null")?;
    // Another cluster's data dir, with a key only it has.
    let foreign = "/var/lib/deckhand-etcd/e2e-foreign";
    sh_ok("node3", &format!("rm -rf {foreign} /tmp/foreign-copy"))?;
    let out = with_foreign_etcd(
        "node3",
        foreign,
        "etcdctl put /e2e/identity/foreign-only yes && etcdctl endpoint status -w json",
    )?;
    ensure!(out.contains("OK"), "foreign etcd: {out}");
    sh_ok("node3", &format!("chown -R etcd:etcd {foreign}"))?;

    start_probe("node3")?;
    std::thread::sleep(Duration::from_secs(2));
    // The fault: swap the data dirs under the running member and kill it;
    // systemd restarts it (Restart=on-failure) on the foreign data.
    let t0 = Instant::now();
    sh_ok(
        "node3",
        &format!(
            "set -e; cd /var/lib/deckhand-etcd; mv member e2e-original-{old_id}; mv {foreign} member; \
             systemctl kill -s KILL deckhand-etcd-member.service"
        ),
    )?;
    let reported = wait_for("node3's quarantine event", CONVERGE, || {
        Ok(events("node1", "node3")?
            .iter()
            .any(|e| e.contains("quarantined the local member") && e.contains("belongs to cluster"))
            .then(Instant::now))
    })?;
    let new_id = wait_rejoined("node3", &old_id)?;
    let rejoined = Instant::now();
    print_figures("foreign data dir", reported - t0, rejoined - t0);
    // A few more rounds on the rejoined member.
    std::thread::sleep(Duration::from_secs(3));
    let log = stop_probe("node3")?;

    // The client never saw the other cluster, and kept working around it.
    let foreign_reads: Vec<&String> = log.iter().filter(|l| l.contains("foreign-only")).collect();
    ensure!(
        foreign_reads.is_empty(),
        "localhost:2379 served the other cluster's data: {foreign_reads:?}"
    );
    let ok_reads = log
        .iter()
        .filter(|l| l.contains("/e2e/identity/real"))
        .count();
    let fails = log.iter().filter(|l| l.contains(" fail")).count();
    println!(
        "[figures] node3's local client: {} rounds, {ok_reads} reads of the real cluster, {fails} rounds with a refused read or write",
        log.len()
    );
    let tail = &log[log.len().saturating_sub(10)..];
    ensure!(
        ok_reads > 10
            && tail
                .iter()
                .any(|l| l.contains("/e2e/identity/real") && l.ends_with("| ok")),
        "the local client did not read and write the real cluster again: last lines {tail:?}"
    );
    // The unit refused the foreign data dir with its own status.
    let journal = sh_ok(
        "node3",
        &format!(
            "journalctl -u deckhand-etcd-member --no-pager -o cat --since @{}",
            unix_now() - 600
        ),
    )?;
    ensure!(
        journal.contains("not starting etcd") && journal.contains("belongs to cluster"),
        "the start check did not refuse the data dir: {journal}"
    );
    // The foreign data dir was moved aside, not deleted: it still holds
    // its key, and none of the client's writes.
    let aside = sh_ok(
        "node3",
        "cd /var/lib/deckhand-etcd && for d in member.removed-*; do [ -d \"$d/member/wal\" ] && echo $d; done",
    )?;
    let mut found = false;
    for d in aside.lines().filter(|l| !l.is_empty()) {
        let copy = "/tmp/foreign-copy";
        sh_ok(
            "node3",
            &format!("rm -rf {copy} && cp -a /var/lib/deckhand-etcd/{d} {copy}"),
        )?;
        let keys = with_foreign_etcd(
            "node3",
            copy,
            // Serializable: a data dir moved aside by an earlier test may
            // hold a member of the real cluster, which alone has no quorum
            // for a linearizable read.
            "etcdctl get --prefix /e2e/identity/ --keys-only --consistency=s",
        )?;
        if keys.contains("foreign-only") {
            ensure!(
                !keys.contains("/e2e/identity/w"),
                "a write through localhost:2379 reached the other cluster: {keys}"
            );
            found = true;
        }
    }
    ensure!(
        found,
        "no data dir moved aside holds the other cluster's data: {aside}"
    );
    ensure!(
        sh(
            "node3",
            &format!("test -d /var/lib/deckhand-etcd/e2e-original-{old_id}/member/wal")
        )?
        .0,
        "the original data dir is gone"
    );
    println!("node3 rejoined as member {new_id} (was {old_id})");
    Ok(())
}

/// Case 2: node2's member is removed with `etcdctl member remove` behind
/// deckhand's back. The node stops it, moves its data dir aside, rejoins
/// as a new member, and its status says why.
#[test]
fn a_member_removed_behind_deckhands_back_rejoins() -> Result<()> {
    let _c = ClusterGuard::shared()?;
    ensure_start_check("node2")?;
    let old_id = member_id("node2")?;
    let t0 = Instant::now();
    sh_ok("node1", &format!("etcdctl member remove {old_id}"))?;
    let reported = wait_for("node2's quarantine event", CONVERGE, || {
        Ok(events("node1", "node2")?
            .iter()
            .any(|e| e.contains("quarantined the local member") && e.contains("removed"))
            .then(Instant::now))
    })?;
    let new_id = wait_rejoined("node2", &old_id)?;
    let rejoined = Instant::now();
    print_figures(
        "member removed behind deckhand's back",
        reported - t0,
        rejoined - t0,
    );
    let ev: Vec<String> = events("node1", "node2")?;
    ensure!(
        ev.iter().any(|e| e.contains(&old_id)),
        "the event names the removed member {old_id}: {ev:?}"
    );
    let st: Value = status("node1")?;
    ensure!(st["voters"] == 3, "{st:#}");
    println!("node2 rejoined as member {new_id} (was {old_id})");
    Ok(())
}

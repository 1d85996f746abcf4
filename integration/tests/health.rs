//! End-to-end tests of what the agents see and `deckhand status` says
//! (issue 9, "See and say"): a node's Docker daemon stopped, a voter added
//! by hand and never started, and a full etcd (`NOSPACE`). Each runs on the
//! shared 5-node cluster and prints `[figure]` lines: the time from each
//! fault to its report.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;
use serde_json::Value;

/// The check named `name` in node `node`'s entry of a status report.
fn check<'a>(st: &'a Value, node_name: &str, name: &str) -> Option<&'a Value> {
    node(st, node_name)?["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// The CHECKS cell of `node_name`'s row in the `deckhand status` table.
fn checks_cell(table: &str, node_name: &str) -> Option<String> {
    let header = table.lines().find(|l| l.starts_with("NODE "))?;
    let col = header.find("CHECKS")?;
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node_name))?;
    row.get(col..)?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// Starts Docker again on the node when dropped (a failed test must not
/// leave it stopped).
struct DockerBack(&'static str);

impl Drop for DockerBack {
    fn drop(&mut self) {
        let _ = sh(self.0, "systemctl start docker.socket docker.service");
    }
}

/// (a) The Docker daemon of a node stopped: its `docker` check fails in its
/// status and in `deckhand status`; started again: it passes.
#[test]
fn docker_daemon_stopped_fails_its_check_and_recovers() -> Result<()> {
    let _c = ClusterGuard::shared()?;
    let n = "node4";
    // The node checks, then `tls-certificate` on a TLS cluster.
    let want: &[&str] = match Mode::from_env() {
        Mode::Tls => &[
            "local-etcd",
            "docker",
            "disk-docker",
            "disk-etcd",
            "tls-certificate",
        ],
        Mode::Plaintext => &["local-etcd", "docker", "disk-docker", "disk-etcd"],
    };
    wait_for(
        "every node to report its node checks, docker passing",
        Duration::from_secs(60),
        || {
            let st = status("node1")?;
            let nodes = st["nodes"].as_array().cloned().unwrap_or_default();
            let ok = nodes.len() == SHARED_NODES
                && nodes.iter().all(|x| {
                    let names: Vec<&str> = x["checks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["name"].as_str())
                        .collect();
                    names == want
                });
            Ok((ok && check(&st, n, "docker").is_some_and(|c| c["state"] == "pass")).then_some(()))
        },
    )?;
    let _back = DockerBack(n);
    let t = Instant::now();
    sh_ok(n, "systemctl stop docker.socket docker.service")?;
    let st = wait_for(
        &format!("{n}'s docker check to fail"),
        Duration::from_secs(60),
        || {
            let st = status("node1")?;
            Ok(check(&st, n, "docker")
                .is_some_and(|c| c["state"] == "fail")
                .then_some(st))
        },
    )?;
    println!(
        "[figure] Docker stopped on {n} -> its docker check fails in status: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let docker = check(&st, n, "docker").context("docker check")?;
    ensure!(
        docker["detail"]
            .as_str()
            .is_some_and(|d| d.contains("does not answer")),
        "{docker}"
    );
    // Docker's root dir is remembered from before: the disk check still runs.
    let disk = check(&st, n, "disk-docker").context("disk-docker check")?;
    ensure!(disk["state"] != "fail", "disk-docker: {disk}");
    // The other nodes' Docker is fine.
    ensure!(
        check(&st, "node5", "docker").is_some_and(|c| c["state"] == "pass"),
        "{st:#}"
    );
    let table = sh_ok("node1", "deckhand status")?;
    ensure!(
        checks_cell(&table, n).as_deref() == Some("docker"),
        "CHECKS of {n}: {:?}\n{table}",
        checks_cell(&table, n)
    );
    ensure!(
        checks_cell(&table, "node5").as_deref() == Some("ok"),
        "{table}"
    );
    let t = Instant::now();
    sh_ok(n, "systemctl start docker.socket docker.service")?;
    wait_for(
        &format!("{n}'s docker check to pass again"),
        Duration::from_secs(60),
        || {
            let st = status("node1")?;
            Ok(check(&st, n, "docker")
                .is_some_and(|c| c["state"] == "pass")
                .then_some(()))
        },
    )?;
    println!(
        "[figure] Docker started on {n} -> its docker check passes in status: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let table = sh_ok("node1", "deckhand status")?;
    ensure!(checks_cell(&table, n).as_deref() == Some("ok"), "{table}");
    Ok(())
}

/// Removes a member by hex id when dropped.
struct RemoveMember(String);

impl Drop for RemoveMember {
    fn drop(&mut self) {
        let _ = sh(
            "node1",
            &format!("etcdctl --command-timeout=10s member remove {}", self.0),
        );
    }
}

/// (b) A voter added with `etcdctl member add` at a peer URL nothing
/// serves: reported as not started, with the fault tolerance in words, by
/// `deckhand status` at once and by the leader's agent within seconds;
/// gone from both once removed.
#[test]
fn unstarted_voter_is_reported_with_fault_tolerance() -> Result<()> {
    let _c = ClusterGuard::shared()?;
    let ghost = "http://172.29.77.99:2380";
    let st = status("node1")?;
    ensure!(
        st["cluster"]["fault_tolerance"]["words"]
            == "quorum 2 of 3, 3 up: survives one more failure",
        "{:#}",
        st["cluster"]
    );
    let t = Instant::now();
    let out = sh_ok(
        "node1",
        &format!("etcdctl --command-timeout=10s member add ghost --peer-urls={ghost} -w json"),
    )?;
    let added: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    let id = added["member"]["ID"].as_u64().context("member ID")?;
    let hex = format!("{id:x}");
    let remove = RemoveMember(hex.clone());
    let problem = |st: &Value| -> Option<Value> {
        st["cluster"]["voter_problems"]
            .as_array()?
            .iter()
            .find(|p| p["member_id"] == hex.as_str())
            .cloned()
    };
    let st = wait_for(
        "deckhand status to report the voter as not started",
        Duration::from_secs(30),
        || {
            let st = status("node1")?;
            Ok(problem(&st).is_some().then_some(st))
        },
    )?;
    println!(
        "[figure] voter added, never started -> `deckhand status` reports it: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let p = problem(&st).context("problem")?;
    ensure!(
        p["trouble"] == "not-started" && p["peer_url"] == ghost,
        "{p}"
    );
    ensure!(
        st["cluster"]["fault_tolerance"]["words"]
            == "quorum 3 of 4, 3 up: one more failure loses quorum",
        "{:#}",
        st["cluster"]
    );
    // The leader's agent reports it in its own status (`since`).
    let mut last = Value::Null;
    let st = wait_for(
        "the leader's agent to report the voter in its status",
        Duration::from_secs(60),
        || {
            let st = status("node1")?;
            last = st.clone();
            let reported = st["nodes"].as_array().into_iter().flatten().any(|n| {
                n["etcd"]["leader"] == true
                    && n["voter_problems"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|p| p["member_id"] == hex.as_str()))
            });
            Ok((reported && problem(&st).is_some_and(|p| p["since"].is_u64())).then_some(st))
        },
    )
    .with_context(|| format!("last status: {last:#}"))?;
    println!(
        "[figure] voter added, never started -> the leader's agent reports it in status: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let reporters = st["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["voter_problems"]
                .as_array()
                .is_some_and(|v| !v.is_empty())
        })
        .count();
    ensure!(reporters == 1, "{reporters} agents report voter problems");
    let table = sh_ok("node1", "deckhand status")?;
    ensure!(
        table.contains("fault tolerance: quorum 3 of 4, 3 up: one more failure loses quorum"),
        "{table}"
    );
    ensure!(
        table.contains(&format!("voter {hex} {ghost}: not started, for ")),
        "{table}"
    );
    // Removed: gone from the report and from the leader's status.
    drop(remove);
    wait_for(
        "the voter problem to clear",
        Duration::from_secs(60),
        || {
            let st = status("node1")?;
            let any = st["nodes"].as_array().into_iter().flatten().any(|n| {
                n["voter_problems"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty())
            });
            Ok((!any
                && problem(&st).is_none()
                && st["cluster"]["fault_tolerance"]["words"]
                    == "quorum 2 of 3, 3 up: survives one more failure")
                .then_some(()))
        },
    )?;
    Ok(())
}

const MEMBERS: [&str; 3] = ["node1", "node2", "node3"];
/// The members' addresses (their client URLs: [`etcdctl_at`]).
const MEMBER_IPS: [&str; 3] = ["172.29.77.11", "172.29.77.12", "172.29.77.13"];
/// The drop-in giving the member a small backend quota (`reset` removes it).
const QUOTA_DROPIN: &str = "/run/systemd/system/deckhand-etcd-member.service.d/60-e2e-quota.conf";

/// Restarts one member and waits until it answers with a leader.
fn restart_member(node: &str) -> Result<()> {
    let ip = cluster(&["ip", node])?.trim().to_string();
    sh_ok(
        node,
        "systemctl daemon-reload && systemctl restart deckhand-etcd-member.service",
    )?;
    wait_for(
        &format!("{node}'s member to answer after its restart"),
        Duration::from_secs(60),
        || {
            Ok(sh(
                node,
                &format!(
                    "{} --command-timeout=3s endpoint health",
                    etcdctl_at(&[&ip])?
                ),
            )?
            .0
            .then_some(()))
        },
    )
}

/// The way out of NOSPACE: delete the filler, compact, defragment every
/// member, disarm.
fn free_and_disarm() -> Result<()> {
    sh_ok(
        "node1",
        &format!(
            "set -e
         etcdctl --command-timeout=30s del --prefix /e2e/fill/ >/dev/null
         rev=$(etcdctl endpoint status -w json | sed -n 's/.*\"revision\":\\([0-9]*\\).*/\\1/p')
         etcdctl --command-timeout=30s compact \"$rev\" >/dev/null
         {} --command-timeout=60s defrag --cluster >/dev/null
         etcdctl alarm disarm >/dev/null",
            etcdctl_members()?
        ),
    )?;
    Ok(())
}

/// Gives the members their default quota back (and frees the space) when
/// dropped, unless the test did.
struct QuotaBack(bool);

impl Drop for QuotaBack {
    fn drop(&mut self) {
        if self.0 {
            return;
        }
        let _ = free_and_disarm();
        for m in MEMBERS {
            let _ = sh(m, &format!("rm -f {QUOTA_DROPIN}"));
            let _ = restart_member(m);
        }
    }
}

/// A node's moved-aside data dirs and members, to compare before and after.
fn data_dirs() -> Result<Vec<String>> {
    MEMBERS
        .iter()
        .map(|m| sh_ok(m, "ls -1 /var/lib/deckhand-etcd/ | sort | paste -sd, -"))
        .collect()
}

fn member_ids() -> Result<Vec<u64>> {
    let m = members("node1")?;
    let mut ids: Vec<u64> = m["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["ID"].as_u64())
        .collect();
    ids.sort();
    Ok(ids)
}

/// (c) A full etcd: the members restarted with a small quota and filled
/// until `NOSPACE`. `deckhand status` shows the alarm, with the member and
/// node that raised it, and a node that cannot write its status as such;
/// nothing destructive happens; after deleting the filler, compaction,
/// defragmentation and disarm, every node converges.
#[test]
fn full_etcd_nospace_is_shown_and_recovers() -> Result<()> {
    let _c = ClusterGuard::shared()?;
    let st = status("node1")?;
    ensure!(
        st["cluster"]["alarms"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{:#}",
        st["cluster"]
    );
    let dirs = data_dirs()?;
    let ids = member_ids()?;
    // A quota a few MiB above the largest backend now.
    let out = sh_ok(
        "node1",
        &format!("{} endpoint status -w json", etcdctl_at(&MEMBER_IPS)?),
    )?;
    let eps: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    let db = eps
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["Status"]["dbSize"].as_u64())
        .max()
        .context("dbSize")?;
    let quota = db + (4 << 20);
    let mut back = QuotaBack(false);
    for m in MEMBERS {
        sh_ok(
            m,
            &format!(
                "mkdir -p {d} && printf '[Service]\\nEnvironment=ETCD_QUOTA_BACKEND_BYTES={quota}\\n' > {QUOTA_DROPIN}",
                d = QUOTA_DROPIN.rsplit_once('/').unwrap().0
            ),
        )?;
        restart_member(m)?;
        // The drop-in's Environment= reaches etcd: the agent's env file
        // (EnvironmentFile=, which would win) does not set it.
        let env = sh_ok(
            m,
            "tr '\\0' '\\n' < /proc/$(systemctl show -P MainPID deckhand-etcd-member.service)/environ",
        )?;
        ensure!(
            env.lines()
                .any(|l| l == format!("ETCD_QUOTA_BACKEND_BYTES={quota}")),
            "{m}: etcd's environment lacks the quota:\n{env}"
        );
    }
    println!("[fixture] members restarted with a {quota}-byte quota (largest backend {db} bytes)");
    // Fill until etcd refuses.
    let fill = sh_ok(
        "node1",
        "head -c 393216 /dev/urandom | base64 -w0 > /tmp/fill
         i=0
         while [ $i -lt 600 ]; do
           i=$((i+1))
           if ! etcdctl --command-timeout=10s put /e2e/fill/$i < /tmp/fill >/dev/null 2>/tmp/fill.err; then
             echo \"refused at put $i: $(cat /tmp/fill.err)\"; exit 0
           fi
         done
         echo 'never refused'",
    )?;
    let t = Instant::now();
    ensure!(fill.contains("database space exceeded"), "filling: {fill}");
    println!("[fixture] {}", fill.trim());
    let st = wait_for(
        "deckhand status to show the NOSPACE alarm",
        Duration::from_secs(30),
        || {
            let st = status("node1")?;
            let alarms = st["cluster"]["alarms"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            Ok(alarms.iter().any(|a| a["alarm"] == "NOSPACE").then_some(st))
        },
    )?;
    println!(
        "[figure] NOSPACE -> `deckhand status` shows the alarm: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let alarm = st["cluster"]["alarms"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["alarm"] == "NOSPACE"))
        .context("alarm")?;
    ensure!(
        alarm["node"].as_str().is_some_and(|n| MEMBERS.contains(&n)),
        "the alarm names no member node: {alarm}"
    );
    // A node whose agent restarts cannot get a lease, so has no status: it
    // is shown as unable to write it, not as down.
    let t = Instant::now();
    sh_ok("node5", "systemctl restart --no-block deckhand.service")?;
    let st = wait_for(
        "node5 to be shown as unable to write its status",
        Duration::from_secs(90),
        || {
            let st = status("node1")?;
            let n5 = node(&st, "node5").context("node5 missing")?;
            Ok((n5["alive"] == false
                && n5["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("cannot write its status: etcd NOSPACE")))
            .then_some(st))
        },
    )?;
    println!(
        "[figure] agent restarted under NOSPACE -> shown as 'cannot write its status': {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let table = sh_ok("node1", "deckhand status")?;
    let row = table
        .lines()
        .find(|l| l.starts_with("node5 "))
        .context("node5 row")?;
    ensure!(row.contains("NO-WRITE") && !row.contains("DEAD"), "{table}");
    ensure!(table.contains("ALARM NOSPACE raised by member "), "{table}");
    ensure!(table.contains("etcdctl alarm disarm"), "{table}");
    ensure!(
        st["voters"] == 3,
        "voters changed under NOSPACE: {:#}",
        st["members"]
    );
    // Nothing destructive: same members, no data dir moved aside.
    ensure!(
        member_ids()? == ids,
        "the member list changed under NOSPACE"
    );
    ensure!(data_dirs()? == dirs, "a data dir was moved under NOSPACE");
    // The way out, then every node converges.
    let t = Instant::now();
    free_and_disarm()?;
    wait_for(
        "every node alive and converged, no alarm",
        Duration::from_secs(90),
        || {
            let st = status("node1")?;
            let nodes = st["nodes"].as_array().cloned().unwrap_or_default();
            Ok((nodes.len() == SHARED_NODES
                && nodes
                    .iter()
                    .all(|n| n["alive"] == true && n["converged"] == true)
                && st["cluster"]["alarms"]
                    .as_array()
                    .is_some_and(Vec::is_empty))
            .then_some(()))
        },
    )?;
    println!(
        "[figure] compact + defrag + disarm -> every node alive and converged: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    ensure!(member_ids()? == ids, "the member list changed");
    ensure!(data_dirs()? == dirs, "a data dir was moved");
    // The default quota back.
    for m in MEMBERS {
        sh_ok(m, &format!("rm -f {QUOTA_DROPIN}"))?;
        restart_member(m)?;
    }
    back.0 = true;
    Ok(())
}

//! The .deb installed for real (issue 12): `packaging/deb/build` makes the
//! package from the harness's build (`DECKHAND_DEB_PROFILE=e2e`, the binary
//! the other nodes run), and `apt-get install ./deckhand_*.deb` installs it
//! on an extra node, node6, booted with no deckhand and no cloud-init
//! (`integration/cluster add node6 --bare`) beside the shared 5-node
//! cluster. The node has no route to a mirror: the install must need no
//! download (every dependency is in the node image).
//!
//! Checked: installed without a config, the agent is enabled but refuses to
//! start, saying what to write; with the operator's config (the package's
//! example, whose addresses are the harness's) and, with TLS, the node's
//! certificates installed as the cloud-config does, it joins the cluster as a
//! proxy and serves `localhost:2379`; it turns into a member (the packaged
//! member unit) and back; `man deckhand-role` renders; the bash completion
//! completes subcommands; `apt-get remove deckhand` takes the binary and
//! stops the agent but leaves `/etc/deckhand` and the etcd data dir as they
//! were. node6 is removed at the end, pass or fail (the shared cluster's
//! tests want exactly node1..node5; the next reset deletes node6's keys).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use deckhand_integration::*;

const NODE: &str = "node6";

#[test]
fn deb_install_joins_and_remove_keeps_config_and_data() -> Result<()> {
    // A node6 left by an interrupted run (the fixture would not reuse a
    // cluster with it).
    let _ = cluster_raw(&["remove", NODE]);
    let guard = ClusterGuard::shared()?;
    let result = run(&guard);
    if result.is_err() {
        let journal = sh(NODE, "journalctl -u deckhand --no-pager -n 40")
            .map(|(_, o, e)| format!("{o}{e}"))
            .unwrap_or_default();
        println!("{NODE}'s agent journal (last 40 lines):\n{journal}");
    }
    cleanup();
    result
}

/// Leaves node1..node5 only: node6 out of the member list (if a failure
/// left it a voter), then removed.
fn cleanup() {
    if let Ok(m) = members("node1")
        && m["members"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == NODE))
    {
        let _ = sh("node1", &format!("deckhand member remove {NODE}"));
    }
    if let Err(e) = cluster(&["remove", NODE]) {
        println!("removing {NODE} failed: {e:#}");
    }
}

/// The .deb built from the harness's binary; its path on this host.
fn build_deb() -> Result<PathBuf> {
    let (ok, out, err) = host(&format!(
        "cd {} && DECKHAND_DEB_PROFILE=e2e packaging/deb/build --no-build",
        repo().display()
    ))?;
    ensure!(ok, "packaging/deb/build failed:\n{out}\n{err}");
    let deb = out
        .lines()
        .last()
        .context("packaging/deb/build printed nothing")?;
    let path = repo().join(deb.trim());
    ensure!(
        path.exists(),
        "packaging/deb/build printed {deb}, which does not exist"
    );
    Ok(path)
}

fn run(_guard: &ClusterGuard) -> Result<()> {
    let deb = build_deb()?;
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    println!("built {}", deb.display());
    cluster(&["add", NODE, "--bare"])?;
    // A bare Debian host with etcd-server (the package's dependency), no deckhand.
    sh_ok(
        NODE,
        "! command -v deckhand && test -x /usr/bin/etcd && ! test -e /etc/deckhand/config.toml",
    )
    .context("node6 is not a bare host")?;
    let (ok, _, err) = host(&format!(
        "docker cp {} {NODE}:/var/tmp/{name}",
        deb.display()
    ))?;
    ensure!(ok, "docker cp: {err}");

    // Installed with no config: enabled, not started, and says why.
    let out = sh_ok(
        NODE,
        &format!("cd /var/tmp && DEBIAN_FRONTEND=noninteractive apt-get install -y ./{name} 2>&1"),
    )?;
    println!("apt-get install:\n{out}");
    for l in out.lines().filter(|l| l.starts_with("Get:")) {
        ensure!(
            l.contains(&format!("/var/tmp/{name}")),
            "apt-get downloaded something: {l}"
        );
    }
    ensure!(
        out.contains("write /etc/deckhand/config.toml first"),
        "postinst did not say what to configure"
    );
    let state = sh_ok(
        NODE,
        "systemctl is-enabled deckhand.service deckhand-preseed.service; systemctl is-active deckhand.service || true; \
         systemctl is-enabled etcd.service || true",
    )?;
    let state: Vec<&str> = state.lines().collect();
    ensure!(
        state.len() >= 4
            && state[0] == "enabled"
            && state[1] == "enabled"
            && state[2] == "inactive"
            && state[3] != "enabled",
        "after install with no config: is-enabled deckhand, preseed, is-active deckhand, is-enabled etcd = {state:?}"
    );
    // Started by hand, it refuses: exit 78 (EX_CONFIG, not restarted), and
    // the journal names the file and the example.
    let _ = sh(NODE, "systemctl start deckhand.service");
    let refused = wait_for(
        "the unconfigured agent to fail",
        Duration::from_secs(30),
        || {
            let st = sh_ok(
                NODE,
                "systemctl show -P ExecMainStatus deckhand.service; journalctl -u deckhand --no-pager -o cat",
            )?;
            Ok((st.lines().next() == Some("78")
                && st.contains("/usr/share/doc/deckhand/examples/config.toml"))
            .then_some(st))
        },
    )?;
    println!(
        "unconfigured agent: {}",
        refused
            .lines()
            .find(|l| l.contains("does not exist"))
            .unwrap_or("")
    );

    // The operator's part: the config (the example, whose addresses are the
    // harness's) and, with TLS, the node's certificates as the cloud-config
    // installs them.
    sh_ok(
        NODE,
        "set -e
         install -m 0644 /usr/share/doc/deckhand/examples/config.toml /etc/deckhand/config.toml
         install -d -m 0755 -o root -g etcd /etc/deckhand/pki
         install -m 0644 -o root -g etcd /opt/deckhand/pki/ca.crt /opt/deckhand/pki/node.crt /opt/deckhand/pki/proxy.crt /etc/deckhand/pki/
         install -m 0640 -o root -g etcd /opt/deckhand/pki/node.key /opt/deckhand/pki/proxy.key /etc/deckhand/pki/
         systemctl reset-failed deckhand.service
         systemctl start --no-block deckhand.service",
    )?;
    let st = wait_converged("node1", NODE, 0)?;
    let me = node(&st, NODE).context("node6 in status")?;
    ensure!(
        me["etcd"]["mode"] == "proxy",
        "node6 joined as {}",
        me["etcd"]["mode"]
    );
    serves_localhost("joined as a proxy")?;

    // The packaged member unit: proxy -> member -> proxy.
    let (ok, out, rev) = role_set("node1", NODE, "member")?;
    ensure!(ok, "role set member: {out}");
    let st = wait_converged("node1", NODE, rev)?;
    ensure!(
        node(&st, NODE).unwrap()["etcd"]["mode"] == "member",
        "node6 is not a member: {}",
        node(&st, NODE).unwrap()
    );
    serves_localhost("as a member")?;
    let (ok, out, rev) = role_set("node1", NODE, "proxy")?;
    ensure!(ok, "role set proxy: {out}");
    let st = wait_converged("node1", NODE, rev)?;
    ensure!(
        node(&st, NODE).unwrap()["etcd"]["mode"] == "proxy",
        "node6 is not a proxy again"
    );
    serves_localhost("a proxy again")?;

    // The man page and the completion the package installed.
    let man = sh_ok(NODE, "MANPAGER=cat MANWIDTH=100 man deckhand-role 2>&1")?;
    ensure!(
        man.contains("deckhand-role") && (man.contains("SYNOPSIS") || man.contains("Synopsis")),
        "man deckhand-role did not render:\n{man}"
    );
    let words = sh_ok(
        NODE,
        r#"bash -c 'f=/usr/share/bash-completion/completions/deckhand; test -s $f && . $f
           COMP_WORDS=(deckhand ro); COMP_CWORD=1; COMP_LINE="deckhand ro"; COMP_POINT=${#COMP_LINE}
           _deckhand deckhand ro deckhand; echo "${COMPREPLY[@]}"'"#,
    )?;
    ensure!(
        words.split_whitespace().any(|w| w == "role"),
        "bash completion of `deckhand ro` gave {words:?}"
    );

    // Removed: binary gone, agent stopped, config and data as they were.
    let keep = "find /etc/deckhand /var/lib/deckhand-etcd -printf '%p %s\\n' | sort; \
                find /etc/deckhand -type f -exec sha256sum {} + | sort";
    let before = sh_ok(NODE, keep)?;
    ensure!(
        before.contains("/var/lib/deckhand-etcd/member.removed-"),
        "no moved-aside data dir after member -> proxy:\n{before}"
    );
    let out = sh_ok(
        NODE,
        "DEBIAN_FRONTEND=noninteractive apt-get remove -y deckhand 2>&1",
    )?;
    println!("apt-get remove:\n{out}");
    let gone = sh_ok(
        NODE,
        "command -v deckhand || echo no-binary; systemctl is-active deckhand.service || true; dpkg-query -W -f='${Status}' deckhand 2>&1 || true",
    )?;
    ensure!(
        gone.contains("no-binary") && gone.contains("inactive") && !gone.contains("ok installed"),
        "deckhand still installed or running after apt-get remove: {gone}"
    );
    let after = sh_ok(NODE, keep)?;
    if after != before {
        bail!(
            "apt-get remove changed /etc/deckhand or /var/lib/deckhand-etcd:\nbefore:\n{before}\nafter:\n{after}"
        );
    }
    println!(
        "after apt-get remove: {} entries of /etc/deckhand and /var/lib/deckhand-etcd unchanged",
        after.lines().count()
    );
    Ok(())
}

/// A key written through node1 is read on node6 through `localhost:2379`.
fn serves_localhost(when: &str) -> Result<()> {
    let v = format!("deb-{}", unix_now());
    sh_ok("node1", &format!("etcdctl put /e2e/deb {v} >/dev/null"))?;
    wait_for(
        &format!("node6's localhost:2379 ({when})"),
        Duration::from_secs(60),
        || {
            let got = sh_ok(
                NODE,
                "etcdctl --endpoints localhost:2379 --command-timeout=3s get --print-value-only /e2e/deb",
            )?;
            Ok((got.trim() == v).then_some(()))
        },
    )?;
    println!("node6 serves localhost:2379 ({when})");
    Ok(())
}

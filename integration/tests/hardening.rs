//! End-to-end hardening test (issue 10, "Hardened units"): the units as
//! cloud-config installs them on a member node and on a proxy node score
//! at or under their `systemd-analyze security` goals, and the sandboxes
//! they describe are the ones the running processes are in (capabilities,
//! seccomp, no new privileges, read-only file system tried and refused).
//! Runs on the shared 5-node cluster (`ClusterGuard::shared`).

use anyhow::{Context, Result, bail, ensure};
use deckhand_integration::*;

/// Each unit and the highest overall exposure it may have (issue 10).
const GOALS: [(&str, f64); 4] = [
    ("deckhand.service", 4.5),
    ("deckhand-etcd-member.service", 3.0),
    ("deckhand-etcd-proxy.service", 3.0),
    ("deckhand-preseed.service", 3.6),
];

/// The capability bounding set of the agent: CAP_CHOWN (0),
/// CAP_DAC_OVERRIDE (1) and CAP_NET_ADMIN (12), as /proc/PID/status shows
/// it.
const AGENT_CAPS: &str = "0000000000001003";

/// The overall exposure in `systemd-analyze security UNIT`'s output: the
/// number in its line "→ Overall exposure level for UNIT: 2.4 OK 🙂".
fn parse_exposure(out: &str, unit: &str) -> Result<f64> {
    let key = format!("Overall exposure level for {unit}: ");
    let Some(line) = out.lines().find(|l| l.contains(&key)) else {
        bail!("no \"{key}\" line in:\n{out}");
    };
    let rest = &line[line.find(&key).unwrap_or(0) + key.len()..];
    let num = rest.split_whitespace().next().unwrap_or("");
    num.parse()
        .with_context(|| format!("exposure {num:?} in {line:?} is not a number"))
}

/// `systemd-analyze security UNIT`'s overall exposure on `node`, once the
/// unit it analyses is checked to be the shipped file with no drop-in.
fn exposure(node: &str, unit: &str) -> Result<f64> {
    let shipped = std::fs::read_to_string(repo().join("units").join(unit))?;
    let installed = sh_ok(node, &format!("cat /etc/systemd/system/{unit}"))?;
    ensure!(
        installed == shipped,
        "{node}: /etc/systemd/system/{unit} is not units/{unit}"
    );
    let dropins = sh_ok(node, &format!("systemctl show -P DropInPaths {unit}"))?;
    ensure!(
        dropins.trim().is_empty(),
        "{node}: {unit} has drop-ins: {dropins}"
    );
    let out = sh_ok(node, &format!("systemd-analyze security --no-pager {unit}"))?;
    parse_exposure(&out, unit).with_context(|| format!("on {node}"))
}

/// The `Field:` line of /proc/PID/status of `unit`'s main process on `node`.
fn proc_status(node: &str, unit: &str, field: &str) -> Result<String> {
    let out = sh_ok(
        node,
        &format!(
            "pid=$(systemctl show -P MainPID {unit}); [ \"$pid\" -gt 0 ] && sed -n 's/^{field}:[[:space:]]*//p' /proc/$pid/status"
        ),
    )?;
    Ok(out.trim().to_string())
}

/// Whether creating (and removing) `path` succeeds in the mount namespace
/// of `unit`'s main process on `node`, and the error if not.
fn can_write(node: &str, unit: &str, path: &str) -> Result<(bool, String)> {
    let (ok, out, err) = sh(
        node,
        &format!(
            "pid=$(systemctl show -P MainPID {unit}); [ \"$pid\" -gt 0 ] || exit 2; nsenter -t $pid -m sh -c 'touch {path} && rm -f {path}'"
        ),
    )?;
    Ok((ok, format!("{out}{err}").trim().to_string()))
}

/// The preseed unit's test drop-in on node4 (removed on drop, with the
/// image it pulled).
const PRESEED_DROPIN: &str = "/run/systemd/system/deckhand-preseed.service.d/90-test.conf";

struct PreseedDropIn;

impl Drop for PreseedDropIn {
    fn drop(&mut self) {
        let _ = sh(
            "node4",
            &format!(
                "rm -f {PRESEED_DROPIN}; rmdir {dir} 2>/dev/null; systemctl daemon-reload; docker image rm -f {image} >/dev/null 2>&1; true",
                dir = PRESEED_DROPIN.trim_end_matches("/90-test.conf"),
                image = ROUTER_IMAGE
            ),
        );
    }
}

/// An image of the harness registry that no node has after the reset.
const ROUTER_IMAGE: &str = "172.29.77.2:5000/deckhand/router:1";

#[test]
fn exposure_lines_are_parsed() -> Result<()> {
    let out = "  NAME  DESCRIPTION  EXPOSURE\n✗ PrivateNetwork=  ...  0.5\n\n→ Overall exposure level for deckhand.service: 2.4 OK 🙂\n";
    ensure!(parse_exposure(out, "deckhand.service")? == 2.4);
    ensure!(parse_exposure(out, "deckhand-etcd-member.service").is_err());
    ensure!(
        parse_exposure(
            "→ Overall exposure level for a.service: EXPOSED",
            "a.service"
        )
        .is_err()
    );
    Ok(())
}

#[test]
fn units_meet_their_exposure_goals_and_run_sandboxed() -> Result<()> {
    let _c = ClusterGuard::shared()?;
    // The figures, on a member node and on a proxy node.
    let mut over = Vec::new();
    for node in ["node1", "node4"] {
        for (unit, goal) in GOALS {
            let x = exposure(node, unit)?;
            println!("{node}: {unit}: exposure {x:.1} (goal at most {goal:.1})");
            if x > goal {
                over.push(format!("{node}: {unit} {x:.1} > {goal:.1}"));
            }
        }
    }
    ensure!(over.is_empty(), "over their goals: {over:?}");

    // The running processes are in those sandboxes.
    for (node, unit, caps) in [
        ("node1", "deckhand.service", AGENT_CAPS),
        ("node4", "deckhand.service", AGENT_CAPS),
        ("node1", "deckhand-etcd-member.service", "0000000000000000"),
        ("node4", "deckhand-etcd-proxy.service", "0000000000000000"),
    ] {
        let bnd = proc_status(node, unit, "CapBnd")?;
        let nnp = proc_status(node, unit, "NoNewPrivs")?;
        let seccomp = proc_status(node, unit, "Seccomp")?;
        println!("{node}: {unit}: CapBnd {bnd}, NoNewPrivs {nnp}, Seccomp {seccomp}");
        ensure!(bnd == caps, "{node}: {unit}: CapBnd {bnd}, not {caps}");
        ensure!(nnp == "1", "{node}: {unit}: NoNewPrivs {nnp}");
        ensure!(
            seccomp == "2",
            "{node}: {unit}: Seccomp {seccomp}, not 2 (filter)"
        );
    }
    // The etcd processes see root and etcd only (PrivateUsers=yes).
    for (node, unit) in [
        ("node1", "deckhand-etcd-member.service"),
        ("node4", "deckhand-etcd-proxy.service"),
    ] {
        let map = sh_ok(
            node,
            &format!("cat /proc/$(systemctl show -P MainPID {unit})/uid_map"),
        )?;
        ensure!(
            map.lines().count() == 2 && !map.contains("4294967295"),
            "{node}: {unit}: uid_map is not root and etcd only:\n{map}"
        );
    }

    // The agent reads home directories (a docker.config may be in
    // /root/.docker) but cannot write them; the etcd units see none.
    for (node, unit, visible) in [
        ("node1", "deckhand.service", true),
        ("node1", "deckhand-etcd-member.service", false),
        ("node4", "deckhand-etcd-proxy.service", false),
    ] {
        let (ok, ..) = sh(
            node,
            &format!("nsenter -t $(systemctl show -P MainPID {unit}) -m test -e /root/.profile"),
        )?;
        println!("{node}: {unit}: /root/.profile visible: {ok}");
        ensure!(
            ok == visible,
            "{node}: {unit}: /root/.profile visible: {ok}"
        );
    }
    let (ok, why) = can_write("node1", "deckhand.service", "/root/.hardening-probe")?;
    ensure!(
        !ok && why.contains("Read-only file system"),
        "node1: deckhand.service: writing /root: {why}"
    );

    // Writes tried in each sandbox: refused outside what the unit opens,
    // allowed where the unit needs them.
    for (node, unit, path, allowed) in [
        (
            "node1",
            "deckhand.service",
            "/etc/deckhand/.hardening-probe",
            false,
        ),
        (
            "node1",
            "deckhand.service",
            "/etc/deckhand/pki/.hardening-probe",
            true,
        ),
        (
            "node1",
            "deckhand.service",
            "/usr/local/bin/.hardening-probe",
            false,
        ),
        (
            "node1",
            "deckhand.service",
            "/var/lib/docker/.hardening-probe",
            false,
        ),
        (
            "node1",
            "deckhand.service",
            "/run/systemd/system/.hardening-probe",
            true,
        ),
        (
            "node1",
            "deckhand.service",
            "/var/lib/deckhand-etcd/.hardening-probe",
            true,
        ),
        (
            "node1",
            "deckhand.service",
            "/var/lib/deckhand/.hardening-probe",
            true,
        ),
        (
            "node1",
            "deckhand.service",
            "/run/deckhand/.hardening-probe",
            true,
        ),
        (
            "node1",
            "deckhand-etcd-member.service",
            "/var/lib/deckhand/.hardening-probe",
            false,
        ),
        (
            "node1",
            "deckhand-etcd-member.service",
            "/etc/deckhand/.hardening-probe",
            false,
        ),
        (
            "node1",
            "deckhand-etcd-member.service",
            "/var/lib/deckhand-etcd/.hardening-probe",
            true,
        ),
        (
            "node4",
            "deckhand-etcd-proxy.service",
            "/var/lib/deckhand/.hardening-probe",
            false,
        ),
        (
            "node4",
            "deckhand-etcd-proxy.service",
            "/var/lib/deckhand-etcd/.hardening-probe",
            false,
        ),
    ] {
        let (ok, why) = can_write(node, unit, path)?;
        println!(
            "{node}: {unit}: write {path}: {}",
            if ok {
                "allowed".to_string()
            } else {
                format!("refused ({why})")
            }
        );
        ensure!(
            ok == allowed,
            "{node}: {unit}: writing {path} was {}, expected {}: {why}",
            if ok { "allowed" } else { "refused" },
            if allowed { "allowed" } else { "refused" }
        );
        if !allowed {
            ensure!(
                why.contains("Read-only file system"),
                "{node}: {unit}: {path} refused for another reason than a read-only mount: {why}"
            );
        }
    }

    // The preseed unit, sandboxed as shipped (a drop-in changes only its
    // command line to name an image), reaches the Docker socket and pulls.
    let _dropin = PreseedDropIn;
    let (ok, ..) = sh(
        "node4",
        &format!("docker image inspect {ROUTER_IMAGE} >/dev/null 2>&1"),
    )?;
    ensure!(!ok, "node4 has {ROUTER_IMAGE} before the preseed");
    sh_ok(
        "node4",
        &format!(
            "mkdir -p {dir} && printf '[Service]\\nExecStart=\\nExecStart=/usr/local/bin/deckhand preseed {ROUTER_IMAGE}\\n' > {PRESEED_DROPIN} && systemctl daemon-reload",
            dir = PRESEED_DROPIN.trim_end_matches("/90-test.conf")
        ),
    )?;
    let (ok, out, err) = sh("node4", "systemctl start deckhand-preseed.service")?;
    let log = sh_ok(
        "node4",
        "journalctl -u deckhand-preseed --no-pager -o cat -n 5",
    )?;
    ensure!(ok, "the preseed unit failed: {out}{err}\n{log}");
    sh_ok(
        "node4",
        &format!("docker image inspect {ROUTER_IMAGE} >/dev/null"),
    )
    .context("the preseed unit succeeded, but the image is not in node4's Docker")?;
    println!(
        "node4: deckhand-preseed.service pulled {ROUTER_IMAGE}:\n{}",
        log.trim()
    );
    Ok(())
}

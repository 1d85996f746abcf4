//! Helpers for the end-to-end tests: drive `integration/cluster`, run
//! commands on nodes, read `deckhand status --json`, wait for conditions.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `integration/cluster ARGS`, failing with its output on a non-zero exit.
pub fn cluster(args: &[&str]) -> Result<String> {
    let out = cluster_raw(args)?;
    if !out.status.success() {
        bail!(
            "integration/cluster {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `integration/cluster ARGS` and returns its output whatever the exit.
pub fn cluster_raw(args: &[&str]) -> Result<Output> {
    Command::new(repo().join("integration/cluster"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running integration/cluster {}", args.join(" ")))
}

/// (success, stdout, stderr) of a finished process.
fn outcome(out: Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `sh -c SCRIPT` on `node`; returns (success, stdout, stderr).
pub fn sh(node: &str, script: &str) -> Result<(bool, String, String)> {
    Ok(outcome(cluster_raw(&[
        "exec", node, "--", "sh", "-c", script,
    ])?))
}

/// Runs `sh -c SCRIPT` on this host, stdin closed; returns (success,
/// stdout, stderr).
pub fn host(script: &str) -> Result<(bool, String, String)> {
    let out = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{script}` on the host"))?;
    Ok(outcome(out))
}

/// Runs `sh -c SCRIPT` on `node`, failing on a non-zero exit.
pub fn sh_ok(node: &str, script: &str) -> Result<String> {
    let (ok, out, err) = sh(node, script)?;
    if !ok {
        bail!("on {node}: `{script}` failed:\n{out}\n{err}");
    }
    Ok(out)
}

/// Runs `sh -c CMD` on `node`; returns (exit status, stdout, stderr).
/// The status travels as a last `rc=N` line appended to stderr (the
/// exec reports only success or failure); that line stays in the stderr
/// returned.
pub fn sh_rc(node: &str, cmd: &str) -> Result<(i32, String, String)> {
    let (_, out, err) = sh(node, &format!("{cmd}; echo \"rc=$?\" >&2"))?;
    let code = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("rc="))
        .and_then(|r| r.trim().parse().ok())
        .with_context(|| format!("no exit status of {cmd} on {node}: {err}"))?;
    Ok((code, out, err))
}

/// `deckhand status --json` as seen from `node`.
pub fn status(node: &str) -> Result<Value> {
    let out = sh_ok(node, "deckhand status --json")?;
    serde_json::from_str(&out).with_context(|| format!("status JSON from {node}: {out}"))
}

/// Every node's status events (`deckhand status --json`'s `nodes[].events`),
/// as seen from `via`.
pub fn all_events(via: &str) -> Result<Vec<String>> {
    Ok(status(via)?["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(String::from))
        .collect())
}

/// The entry of the node named `name` in a status document.
pub fn node<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

/// Polls `f` every 500 ms until it returns `Ok(Some(v))`, or fails after
/// `timeout` with the last error or `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!(
                "timed out after {} s waiting for {what}; last error: {last}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How long a role change may take to converge in the tests.
pub const CONVERGE: Duration = Duration::from_secs(180);

/// The size of the shared cluster: every end-to-end test runs on 5 nodes.
pub const SHARED_NODES: usize = 5;

/// How a harness cluster's etcd hops run: `integration/cluster up --tls`
/// (the default) or `--plaintext`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Mutual TLS on every hop that leaves a node; plaintext on loopback.
    Tls,
    /// Plaintext everywhere (the plaintext drop-in on every node).
    Plaintext,
}

impl Mode {
    /// The mode the tests want: `DECKHAND_E2E_TLS=0` is plaintext, anything
    /// else (or unset) TLS.
    pub fn from_env() -> Mode {
        match std::env::var("DECKHAND_E2E_TLS").as_deref() {
            Ok("0") => Mode::Plaintext,
            _ => Mode::Tls,
        }
    }

    /// The `integration/cluster up` flag that boots this mode.
    pub fn up_flag(self) -> &'static str {
        match self {
            Mode::Tls => "--tls",
            Mode::Plaintext => "--plaintext",
        }
    }

    /// `integration/cluster status`'s ETCD-HOPS column for this mode.
    fn status_word(self) -> &'static str {
        match self {
            Mode::Tls => "tls",
            Mode::Plaintext => "plaintext",
        }
    }
}

/// The harness's CA and operator certificate on this host (made by a TLS
/// `integration/cluster up`): `ca.crt`, `operators/root/operator.{crt,key}`.
pub fn pki_dir() -> PathBuf {
    repo().join("integration/.cache/pki")
}

/// The mode the running harness cluster was booted in (node1's label),
/// which is what the tests' commands that reach node addresses must speak.
pub fn cluster_mode() -> Result<Mode> {
    let t = docker_out(&[
        "inspect",
        "-f",
        r#"{{index .Config.Labels "io.deckhand.tls"}}"#,
        "node1",
    ])?;
    match t.as_str() {
        "1" => Ok(Mode::Tls),
        "0" => Ok(Mode::Plaintext),
        other => bail!(
            "node1 has no io.deckhand.tls label ({other:?}): boot it with this integration/cluster"
        ),
    }
}

/// The URL of `port` (2379 clients, 2380 peers) on a node address, with the
/// scheme of the running cluster's mode.
pub fn node_url(ip: &str, port: u16) -> Result<String> {
    Ok(match cluster_mode()? {
        Mode::Tls => format!("https://{ip}:{port}"),
        Mode::Plaintext => format!("http://{ip}:{port}"),
    })
}

/// The operator certificate's files on this host: (CA, certificate, key).
pub fn operator_files() -> (PathBuf, PathBuf, PathBuf) {
    let d = pki_dir().join("operators/root");
    (
        d.join("ca.crt"),
        d.join("operator.crt"),
        d.join("operator.key"),
    )
}

/// etcdctl's flags for the operator certificate, for an etcdctl run on
/// this host against node addresses of a TLS cluster.
pub fn operator_etcdctl_tls() -> String {
    let (ca, cert, key) = operator_files();
    format!(
        "--cacert={} --cert={} --key={}",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// The etcd client's TLS options with the operator certificate (for
/// clients on this host).
pub fn operator_tls() -> Result<etcd_client::TlsOptions> {
    let (ca, cert, key) = operator_files();
    let read = |p: &PathBuf| {
        std::fs::read(p).with_context(|| format!("the harness's operator files: {}", p.display()))
    };
    Ok(etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&ca)?))
        .identity(etcd_client::Identity::from_pem(read(&cert)?, read(&key)?)))
}

/// The node's own certificate files on every TLS node (the cloud-config
/// installs them there), as etcdctl flags.
pub const NODE_ETCDCTL_TLS: &str = "--cacert=/etc/deckhand/pki/ca.crt --cert=/etc/deckhand/pki/node.crt --key=/etc/deckhand/pki/node.key";

/// `etcdctl` run on a node against the client URLs of `ips` (node
/// addresses): the URLs in the cluster's scheme and, with TLS, the node's
/// own certificate. Append the etcdctl command.
pub fn etcdctl_at(ips: &[&str]) -> Result<String> {
    let urls: Vec<String> = ips
        .iter()
        .map(|ip| node_url(ip, 2379))
        .collect::<Result<_>>()?;
    let tls = match cluster_mode()? {
        Mode::Tls => NODE_ETCDCTL_TLS,
        Mode::Plaintext => "",
    };
    Ok(format!("etcdctl --endpoints={} {tls}", urls.join(",")))
}

/// An etcdctl, run in a node, that dials every node's client URL
/// (`https://172.29.77.1K:2379` with the node's certificate on a TLS
/// cluster) rather than `localhost:2379`: for what dials the members'
/// advertised URLs too (`defrag --cluster`, `endpoint health --cluster`).
/// Proxy nodes refuse on their address; etcdctl's balancer takes a member
/// that answers. Not localhost: etcdctl 3.4 given `--cacert/--cert/--key`
/// speaks TLS to an `http://127.0.0.1:2379` endpoint too, and fails there.
pub fn etcdctl_members() -> Result<String> {
    let ips: Vec<String> = (1..=SHARED_NODES)
        .map(|k| format!("172.29.77.{}", 10 + k))
        .collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    etcdctl_at(&ips)
}

/// A harness cluster ready for one test, in the boot layout: node1..node3
/// etcd members (the 3 voters), the others proxies, no plane, no plane
/// config, no cluster config, no failpoint armed, every node running and
/// connected, the registry running with the test images, and every agent
/// alive and converged.
///
/// [`ClusterGuard::shared`] reuses the running cluster when it has the size
/// and the inputs (node image, cloud-config) of this checkout, resetting and
/// then verifying what tests change; [`ClusterGuard::fresh`] always boots.
/// Dropping the guard leaves the cluster up for the next test:
/// `integration/test` takes it down at the end (unless `DECKHAND_E2E_KEEP`
/// is set); after a bare `cargo nextest run`, `integration/cluster down`.
pub struct ClusterGuard {
    /// Unix time (seconds) once the cluster was ready: journals and data
    /// dirs of earlier tests are older than this.
    pub since: u64,
}

impl ClusterGuard {
    /// The shared cluster of [`SHARED_NODES`] nodes: reused and reset if one
    /// is up (a reset that cannot be verified boots a fresh one instead),
    /// booted otherwise.
    ///
    /// The mode is [`Mode::from_env`]; a running cluster of the other mode
    /// is not reused.
    pub fn shared() -> Result<ClusterGuard> {
        Self::shared_mode(Mode::from_env())
    }

    /// [`ClusterGuard::shared`] in `mode`, whatever the environment says.
    pub fn shared_mode(mode: Mode) -> Result<ClusterGuard> {
        let n = SHARED_NODES;
        let t = Instant::now();
        match reusable(n, mode) {
            Ok(()) => match reset(n) {
                Ok(()) => {
                    println!(
                        "[fixture] reused the running {n}-node {mode:?} cluster: reset and verified in {:.1} s",
                        t.elapsed().as_secs_f64()
                    );
                    return Ok(Self::ready());
                }
                Err(e) => println!(
                    "[fixture] reset of the running cluster failed after {:.1} s, booting a fresh one: {e:#}",
                    t.elapsed().as_secs_f64()
                ),
            },
            Err(e) => println!("[fixture] booting a fresh {mode:?} cluster: {e:#}"),
        }
        Self::fresh_mode(n, mode)
    }

    /// A freshly booted cluster of `n` nodes (`down`, then `up n`) in the
    /// mode of [`Mode::from_env`], once every node is alive and converged
    /// with 3 voters.
    pub fn fresh(n: usize) -> Result<ClusterGuard> {
        Self::fresh_mode(n, Mode::from_env())
    }

    /// [`ClusterGuard::fresh`] in `mode`.
    pub fn fresh_mode(n: usize, mode: Mode) -> Result<ClusterGuard> {
        let t = Instant::now();
        let _ = cluster(&["down"]);
        cluster(&["up", mode.up_flag(), &n.to_string()])?;
        let booted = t.elapsed();
        wait_boot_layout(n, &[])?;
        println!(
            "[fixture] fresh {n}-node {mode:?} cluster: up in {:.1} s, converged {:.1} s later",
            booted.as_secs_f64(),
            (t.elapsed() - booted).as_secs_f64()
        );
        Ok(Self::ready())
    }

    fn ready() -> ClusterGuard {
        // Log lines of the second the cluster became ready belong to the
        // reset: tests read journals from the next second on.
        std::thread::sleep(Duration::from_millis(1100));
        ClusterGuard { since: unix_now() }
    }
}

/// Seconds since the Unix epoch (the nodes share this host's clock).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A harness node in `integration/cluster status`: name, container state,
/// connected to the harness network, ETCD-HOPS (`tls`, `plaintext`).
type NodeState = (String, String, bool, String);

/// The harness nodes, and whether the registry runs and answers.
fn harness_state() -> Result<(Vec<NodeState>, bool)> {
    let out = cluster(&["status"])?;
    let mut nodes = Vec::new();
    let mut registry = false;
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 && f[0].starts_with("node") {
            nodes.push((
                f[0].to_string(),
                f[2].to_string(),
                f[3] == "connected",
                f[4].to_string(),
            ));
        }
        if line.starts_with("registry ") {
            registry = line.contains(": running,") && line.ends_with("API answering");
        }
    }
    Ok((nodes, registry))
}

fn docker_out(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the running harness can serve as this checkout's `n`-node
/// cluster: exactly node1..nodeN exist, booted by this checkout (its staged
/// dist mounted) in `mode` from the current node image with the current
/// cloud-config, with TLS each node's certificates from this checkout's
/// harness CA mounted. (The binary and units are compared, and reinstalled
/// if they differ, by [`reset`].)
fn reusable(n: usize, mode: Mode) -> Result<()> {
    let (nodes, _) = harness_state()?;
    let names: Vec<&str> = nodes.iter().map(|(x, _, _, _)| x.as_str()).collect();
    let want: Vec<String> = (1..=n).map(|k| format!("node{k}")).collect();
    ensure!(
        names == want.iter().map(String::as_str).collect::<Vec<_>>(),
        "the harness nodes are {names:?}, not node1..node{n}"
    );
    let out = Command::new(repo().join("integration/node-image/build"))
        .arg("--tag")
        .output()
        .context("integration/node-image/build --tag")?;
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let image = docker_out(&["image", "inspect", "-f", "{{.Id}}", &tag])
        .with_context(|| format!("node image {tag}"))?;
    let cloud_config = std::fs::read(repo().join("packaging/cloud-config.yaml"))?;
    for (k, _, _, hops) in &nodes {
        ensure!(
            hops == mode.status_word(),
            "{k} runs with etcd hops {hops}, not {} ({mode:?} wanted)",
            mode.status_word()
        );
    }
    for k in &want {
        let used = docker_out(&["inspect", "-f", "{{.Image}}", k])?;
        ensure!(
            used == image,
            "{k} runs image {used}, not the current {tag} ({image})"
        );
        // Booted by this checkout: its staged binary is what the node runs
        // (another worktree's cluster mounts that worktree's dist).
        let dist = docker_out(&[
            "inspect",
            "-f",
            r#"{{range .Mounts}}{{if eq .Destination "/opt/deckhand/dist"}}{{.Source}}{{end}}{{end}}"#,
            k,
        ])?;
        let mine = repo().join("integration/.cache/dist");
        ensure!(
            std::path::Path::new(dist.trim()) == mine
                || std::fs::canonicalize(dist.trim()).ok() == std::fs::canonicalize(&mine).ok(),
            "{k} runs the binary staged by another checkout ({dist}), not {}",
            mine.display()
        );
        if mode == Mode::Tls {
            // Its certificates are this checkout's harness CA's (the mount
            // of pki/nodes/<k>, whose CA certificate is the current one).
            let pki = docker_out(&[
                "inspect",
                "-f",
                r#"{{range .Mounts}}{{if eq .Destination "/opt/deckhand/pki"}}{{.Source}}{{end}}{{end}}"#,
                k,
            ])?;
            let mine = pki_dir().join("nodes").join(k);
            ensure!(
                std::fs::canonicalize(pki.trim()).ok() == std::fs::canonicalize(&mine).ok()
                    && mine.join("node.crt").exists(),
                "{k}'s certificates ({pki}) are not this checkout's {}",
                mine.display()
            );
            let ca = std::fs::read(pki_dir().join("ca.crt")).context("the harness CA")?;
            ensure!(
                std::fs::read(mine.join("ca.crt")).ok().as_deref() == Some(&ca[..]),
                "{k}'s certificates are not from the harness CA {}",
                pki_dir().join("ca.crt").display()
            );
        }
        let seed = repo().join(format!("integration/.cache/nodes/{k}/seed/user-data"));
        ensure!(
            std::fs::read(&seed).ok().as_deref() == Some(&cloud_config[..]),
            "{k} was installed from another cloud-config than packaging/cloud-config.yaml"
        );
    }
    Ok(())
}

/// What a node's reset runs first: stop the tests' probes, disarm
/// failpoints, drop the tests' drop-ins and config files, start Docker if a
/// test stopped it, reinstall the
/// staged binary and units if they differ, start the agent if it is not
/// running (the agents themselves then stop the plane units of the planes
/// the reset takes away).
const NODE_CLEAN: &str = r#"
set -e
touch /tmp/probe.stop /tmp/faults-probe.stop
rm -f /run/deckhand/failpoint /run/deckhand/failpoint.hit
rm -f /run/systemd/system/deckhand.service.d/norestart.conf /etc/deckhand/config.d/50-test.toml
rm -f /run/systemd/system/deckhand.service.d/faketime.conf /run/deckhand/faketime
systemctl is-active -q docker.service || systemctl start docker.socket docker.service
quota=/run/systemd/system/deckhand-etcd-member.service.d/60-e2e-quota.conf
if [ -e $quota ]; then
  rm -f $quota
  systemctl daemon-reload
  systemctl try-restart deckhand-etcd-member.service
fi
rm -f /run/systemd/system/demo-*.service.d/90-test.conf
# The firewall test's listeners, and deckhand's table in case a test died
# with the firewall on (the agents remove it themselves once the reset has
# deleted the cluster config; this is for a table left by an older agent).
docker rm -f e2e-fw-any e2e-fw-cluster e2e-fw-etcd e2e-fw-metrics >/dev/null 2>&1 || true
if command -v nft >/dev/null; then nft delete table inet deckhand 2>/dev/null || true; fi
cmp -s /opt/deckhand/dist/deckhand /usr/local/bin/deckhand || install -m 0755 /opt/deckhand/dist/deckhand /usr/local/bin/deckhand
for u in /opt/deckhand/dist/units/*.service; do
  cmp -s "$u" "/etc/systemd/system/${u##*/}" || install -m 0644 "$u" /etc/systemd/system/
done
systemctl daemon-reload
systemctl reset-failed deckhand.service 2>/dev/null || true
systemctl is-active -q deckhand.service || systemctl start --no-block deckhand.service
"#;

/// Then, once the node runs no plane unit: a new agent (no events,
/// elections or memory of an earlier test carry over, and it runs the
/// binary installed now); prints the old agent's invocation id.
const NODE_RESTART: &str = r#"
systemctl show -P InvocationID deckhand.service
systemctl restart --no-block deckhand.service
"#;

/// What a node's verification checks after the reset (prints what is wrong).
const NODE_VERIFY: &str = r#"
bad=""
[ -e /run/deckhand/failpoint ] && bad="$bad failpoint-armed"
[ -e /run/deckhand/failpoint.hit ] && bad="$bad failpoint-hit-file"
[ -e /etc/deckhand/config.d/50-test.toml ] && bad="$bad config.d/50-test.toml"
[ -e /run/systemd/system/deckhand-etcd-member.service.d/60-e2e-quota.conf ] && bad="$bad member-quota-drop-in"
systemctl is-active -q docker.service || bad="$bad docker-inactive"
[ "$(systemctl show -P Restart deckhand.service)" = on-failure ] || bad="$bad agent-Restart=$(systemctl show -P Restart deckhand.service)"
systemctl show -P DropInPaths deckhand.service | grep -q /run/ && bad="$bad runtime-drop-in"
ls /run/systemd/system/demo-*.service.d/90-test.conf >/dev/null 2>&1 && bad="$bad demo-test-drop-in"
cmp -s /opt/deckhand/dist/deckhand /usr/local/bin/deckhand || bad="$bad stale-binary"
a=$(systemctl list-units --state=active,activating --no-legend --plain 'demo-*' | wc -l)
[ "$a" = 0 ] || bad="$bad demo-units-active:$a"
c=$(docker ps --format '{{.Names}}' | paste -sd, -)
[ -z "$c" ] || bad="$bad containers-running:$c"
pgrep -f '[p]robe\.log|[f]aults-probe\.stop' >/dev/null && bad="$bad probe-running"
command -v nft >/dev/null && nft list table inet deckhand >/dev/null 2>&1 && bad="$bad firewall-table"
echo "$bad"
"#;

/// Removes the stopped containers and the harness registry's images from
/// a node's Docker; prints the images of the registry left.
const NODE_IMAGES_RESET: &str = r#"
docker container prune -f >/dev/null
docker images --format '{{.Repository}}:{{.Tag}}' | grep '^172\.29\.77\.2:5000/' | xargs -r docker image rm -f >/dev/null
docker images --format '{{.Repository}}:{{.Tag}}' | grep '^172\.29\.77\.2:5000/' || true
"#;

/// Puts the running `n`-node cluster back into the boot layout and verifies
/// it (see [`ClusterGuard`]).
fn reset(n: usize) -> Result<()> {
    let names: Vec<String> = (1..=n).map(|k| format!("node{k}")).collect();
    // The node binary and units of this checkout, as `up` would stage them.
    cluster(&["build"])?;
    // Nodes, network, registry.
    let (nodes, _) = harness_state()?;
    for (name, state, connected, _) in &nodes {
        if state != "running" {
            cluster(&["start", name])?;
        }
        if !connected {
            cluster(&["heal", name])?;
        }
    }
    cluster(&["registry", "start"])?;
    cluster(&["images"])?;
    // The firewall test's container outside the cluster.
    let _ = Command::new("docker")
        .args(["rm", "-f", "deckhand-e2e-outsider"])
        .output();
    // Every node: probes, failpoints, drop-ins, binary, an agent running.
    for name in &names {
        sh_ok(name, NODE_CLEAN)?;
    }
    // etcd: the keys tests write, the configs, the keys of nodes that no
    // longer exist (a recreated host has a new machine-id).
    let ids: Vec<String> = names
        .iter()
        .map(|k| sh_ok(k, "cat /etc/machine-id").map(|s| s.trim().to_string()))
        .collect::<Result<_>>()?;
    wait_for("etcd to take writes", CONVERGE, || {
        Ok(sh(
            "node1",
            "etcdctl --command-timeout=5s del --prefix /e2e/ >/dev/null && etcdctl --command-timeout=5s del --prefix /faults/ >/dev/null",
        )?
        .0
        .then_some(()))
    })?;
    // An alarm left by a test (NOSPACE): the deletes above freed the
    // space; compact, defragment and disarm so that etcd takes puts again.
    let alarms = sh_ok("node1", "etcdctl alarm list")?;
    if !alarms.trim().is_empty() {
        sh_ok(
            "node1",
            &format!(
                "set -e
             rev=$(etcdctl endpoint status -w json | sed -n 's/.*\"revision\":\\([0-9]*\\).*/\\1/p')
             etcdctl --command-timeout=30s compact \"$rev\" >/dev/null
             {} --command-timeout=60s defrag --cluster >/dev/null
             etcdctl alarm disarm >/dev/null",
                etcdctl_members()?
            ),
        )?;
        println!(
            "[fixture] disarmed etcd alarms left by a test: {}",
            alarms.trim()
        );
    }
    sh_ok(
        "node1",
        "etcdctl del /deckhand/config/cluster >/dev/null && etcdctl del --prefix /deckhand/config/planes/ >/dev/null",
    )?;
    let keys = sh_ok("node1", "etcdctl get --prefix /deckhand/nodes/ --keys-only")?;
    let mut stale: Vec<&str> = keys
        .lines()
        .filter_map(|k| k.strip_prefix("/deckhand/nodes/"))
        .filter_map(|k| k.split('/').next())
        .filter(|id| !id.is_empty() && !ids.iter().any(|x| x == id))
        .collect();
    stale.dedup();
    for id in &stale {
        sh_ok(
            "node1",
            &format!("etcdctl del --prefix /deckhand/nodes/{id}/ >/dev/null"),
        )?;
        println!("[fixture] removed the keys of node id {id}, which no node has now");
    }
    // The boot layout's role keys.
    let mut revs = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        let etcd = if k < 3 { "member" } else { "proxy" };
        let out = sh_ok(
            "node1",
            &format!("deckhand role set {id} --etcd {etcd} --planes ''"),
        )?;
        let rev: i64 = out
            .split("revision ")
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .with_context(|| format!("no revision in {out:?}"))?;
        revs.push((id.clone(), rev));
    }
    wait_boot_layout(n, &revs)?;
    // The agents stopped their plane units (checked again after the
    // restart); then every agent is replaced by a new process.
    for name in &names {
        node_clean(name)?;
    }
    let mut invocations = Vec::new();
    for name in &names {
        invocations.push(sh_ok(name, NODE_RESTART)?.trim().to_string());
    }
    wait_for("every agent restarted", Duration::from_secs(60), || {
        for (k, name) in names.iter().enumerate() {
            let now = sh_ok(
                name,
                "systemctl is-active deckhand.service >/dev/null && systemctl show -P InvocationID deckhand.service",
            )?;
            ensure!(
                now.trim() != invocations[k] && !now.trim().is_empty(),
                "{name}: the agent was not restarted"
            );
        }
        Ok(Some(()))
    })?;
    wait_boot_layout(n, &revs)?;
    // Verify what the reset claims.
    for name in &names {
        node_clean(name)?;
        // No test image in the node's Docker, as after a boot: a plane's
        // first start must pull (and tests check that it did).
        let left = sh_ok(name, NODE_IMAGES_RESET)?;
        ensure!(
            left.trim().is_empty(),
            "{name}: test images left after the reset: {left}"
        );
    }
    let (nodes, registry) = harness_state()?;
    ensure!(
        nodes.iter().all(|(_, s, c, _)| s == "running" && *c),
        "nodes not all running and connected: {nodes:?}"
    );
    ensure!(registry, "the registry is not running and answering");
    let left = sh_ok(
        "node1",
        "etcdctl get --prefix /deckhand/config/ --keys-only; etcdctl get --prefix /e2e/ --keys-only; etcdctl get --prefix /faults/ --keys-only",
    )?;
    ensure!(left.trim().is_empty(), "keys left after the reset: {left}");
    let keys = sh_ok("node1", "etcdctl get --prefix /deckhand/nodes/ --keys-only")?;
    for k in keys.lines().filter(|l| !l.is_empty()) {
        ensure!(
            ids.iter()
                .any(|id| k.starts_with(&format!("/deckhand/nodes/{id}/"))),
            "key of a node that does not exist: {k}"
        );
    }
    for (k, id) in ids.iter().enumerate() {
        let role = sh_ok(
            "node1",
            &format!("etcdctl get --print-value-only /deckhand/nodes/{id}/role"),
        )?;
        let v: Value = serde_json::from_str(role.trim())
            .with_context(|| format!("node{}'s role key: {role}", k + 1))?;
        let etcd = if k < 3 { "member" } else { "proxy" };
        ensure!(
            v["etcd"] == etcd && v["planes"].as_array().is_none_or(Vec::is_empty),
            "node{}'s role key is {v}",
            k + 1
        );
    }
    let images = Command::new("curl")
        .args(["-fsS", "-m", "5", "http://127.0.0.1:5000/v2/_catalog"])
        .output()?;
    let catalog = String::from_utf8_lossy(&images.stdout);
    for i in ["router", "control", "bench-0", "bench-9"] {
        ensure!(
            catalog.contains(&format!("deckhand/{i}\"")),
            "registry lacks deckhand/{i}: {catalog}"
        );
    }
    Ok(())
}

/// Waits up to 30 s until `name` is clean: no failpoint, test drop-in or
/// config file, the installed binary, no plane unit, container or probe
/// running.
fn node_clean(name: &str) -> Result<()> {
    let clean = wait_for(
        &format!("{name} clean (no failpoint, drop-in, plane unit, container, probe)"),
        Duration::from_secs(30),
        || Ok(sh_ok(name, NODE_VERIFY)?.trim().is_empty().then_some(())),
    );
    if clean.is_err() {
        let bad = sh_ok(name, NODE_VERIFY)?;
        let log = sh_ok(
            name,
            "journalctl -u deckhand -u 'demo-*' --no-pager -o short-precise -n 30",
        )
        .unwrap_or_default();
        bail!(
            "{name} not clean after the reset: {}; its last journal lines:\n{log}",
            bad.trim()
        );
    }
    Ok(())
}

/// Waits until the cluster is in the boot layout: `n` nodes in status, each
/// alive, converged (to a role key of at least the revision `revs` gives
/// for its id), with no error and not blocked; 3 voters, the members
/// node1..node3, all started, no learner.
pub fn wait_boot_layout(n: usize, revs: &[(String, i64)]) -> Result<()> {
    let want: Vec<String> = (1..=3.min(n)).map(|k| format!("node{k}")).collect();
    wait_for(
        &format!("{n} nodes alive and converged, members node1..node3 (3 voters)"),
        CONVERGE,
        || {
            let st = status("node1")?;
            let nodes = st["nodes"].as_array().cloned().unwrap_or_default();
            let not_ready: Vec<String> = nodes
                .iter()
                .filter(|x| {
                    let min_rev = revs
                        .iter()
                        .find(|(id, _)| x["id"] == id.as_str())
                        .map_or(0, |(_, r)| *r);
                    !(x["alive"] == true
                        && x["converged"] == true
                        && x["desired_revision"].as_i64().unwrap_or(0) >= min_rev
                        && x["error"].is_null()
                        && x["blocked"].is_null())
                })
                .map(|x| {
                    format!(
                        "{} (alive {}, converged {}, revision {}, error {}, blocked {})",
                        x["name"],
                        x["alive"],
                        x["converged"],
                        x["desired_revision"],
                        x["error"],
                        x["blocked"]
                    )
                })
                .collect();
            ensure!(
                nodes.len() == n && not_ready.is_empty() && st["voters"] == 3,
                "{} nodes in status, {} voters; not ready: {not_ready:?}",
                nodes.len(),
                st["voters"]
            );
            let m = members("node1")?;
            let all = m["members"].as_array().cloned().unwrap_or_default();
            let mut names: Vec<String> = all
                .iter()
                .filter(|x| {
                    x["isLearner"] != true
                        && x["clientURLs"].as_array().is_some_and(|u| !u.is_empty())
                })
                .filter_map(|x| x["name"].as_str().map(String::from))
                .collect();
            names.sort();
            ensure!(
                all.len() == 3 && names == want,
                "members: {} entries, started voters {names:?}",
                all.len()
            );
            Ok(Some(()))
        },
    )
}

/// Waits until node `name` reports alive, converged, from a role key of at
/// least revision `min_rev`, as seen from node `from`; returns that status.
pub fn wait_converged(from: &str, name: &str, min_rev: i64) -> Result<Value> {
    wait_for(&format!("{name} to converge"), CONVERGE, || {
        let st = status(from)?;
        let n = node(&st, name).context("node missing from status")?;
        let ok = n["alive"] == true
            && n["converged"] == true
            && n["desired_revision"].as_i64().unwrap_or(0) >= min_rev;
        Ok(ok.then(|| st.clone()))
    })
}

/// `deckhand role set NODE --etcd ETCD` run on `via`: (success, output,
/// revision of the write).
pub fn role_set(via: &str, node: &str, etcd: &str) -> Result<(bool, String, i64)> {
    let (ok, out, err) = sh(via, &format!("deckhand role set {node} --etcd {etcd}"))?;
    let rev = out
        .split("revision ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Ok((ok, format!("{out}{err}"), rev))
}

/// The agent's journal on `node` (messages only) from the Unix time
/// `since` on (a test passes its guard's `since`: lines of earlier tests on
/// a reused cluster are older).
pub fn journal_since(node: &str, since: u64) -> Result<String> {
    sh_ok(
        node,
        &format!("journalctl -u deckhand --no-pager -o cat --since @{since}"),
    )
}

/// `etcdctl member list` as JSON, not through `via_member`'s
/// localhost:2379 (a grpc-proxy lists only itself) but through a real
/// member: the client URL on the node address of a member node (https and
/// the node's certificate on a TLS cluster).
pub fn members(via_member: &str) -> Result<Value> {
    let ip = cluster(&["ip", via_member])?;
    let out = sh_ok(
        via_member,
        &format!("{} member list -w json", etcdctl_at(&[ip.trim()])?),
    )?;
    serde_json::from_str(&out).context("member list JSON")
}

/// What a localhost write probe logged (the probes of `tls.rs` and
/// `tls_enable.rs`): one line per attempt, `A <unix ms> ok|fail`, and one
/// per logical write (retried for up to 10 s), `L ok KEY` or `L fail KEY`.
#[derive(Debug, Default)]
pub struct ProbeLog {
    /// The keys of the writes acknowledged.
    pub acknowledged: Vec<String>,
    /// Logical writes that failed for 10 s.
    pub failed_writes: usize,
    /// Attempts, and those that failed.
    pub attempts: usize,
    /// Attempts that failed.
    pub failed_attempts: usize,
    /// The longest time from one answered attempt to the next, in ms.
    pub longest_gap_ms: u64,
}

impl ProbeLog {
    /// Reads a probe's log.
    pub fn parse(log: &str) -> ProbeLog {
        let acknowledged = log
            .lines()
            .filter_map(|l| l.strip_prefix("L ok "))
            .map(String::from)
            .collect();
        let failed_writes = log.lines().filter(|l| l.starts_with("L fail")).count();
        let attempts: Vec<(u64, bool)> = log
            .lines()
            .filter_map(|l| {
                let mut f = l.strip_prefix("A ")?.split(' ');
                Some((f.next()?.parse().ok()?, f.next()? == "ok"))
            })
            .collect();
        let answered: Vec<u64> = attempts.iter().filter(|a| a.1).map(|a| a.0).collect();
        ProbeLog {
            acknowledged,
            failed_writes,
            attempts: attempts.len(),
            failed_attempts: attempts.iter().filter(|(_, ok)| !ok).count(),
            longest_gap_ms: answered.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0),
        }
    }

    /// Prints `node`'s figures and fails unless the probe made progress
    /// (5 writes or more) and no write failed for 10 s.
    pub fn report(&self, node: &str) -> Result<()> {
        println!(
            "{node}: {} writes acknowledged, {} of {} attempts failed, longest gap between answers {} ms, {} writes failed for 10 s",
            self.acknowledged.len(),
            self.failed_attempts,
            self.attempts,
            self.longest_gap_ms,
            self.failed_writes
        );
        ensure!(
            self.acknowledged.len() >= 5,
            "{node}: the probe made progress ({})",
            self.acknowledged.len()
        );
        ensure!(
            self.failed_writes == 0,
            "{node}: localhost:2379 refused writes for over 10 s"
        );
        Ok(())
    }
}

/// The S3 server of the backup tests (`moto`).
pub mod moto;

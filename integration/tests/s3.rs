//! S3 uploads of backups (issue 11) against a real S3 server, `moto`
//! (integration/src/moto.rs):
//! - on loopback, without the harness: deckhand's S3 module uploads
//!   verified snapshots of a real etcd (object, then manifest; SHA-256 as
//!   the manifest says), keeps the snapshot pending while the server is
//!   down and uploads it once it is back, applies retention over the
//!   listing, `fetch_snapshot_from_s3` gives back a verified file or
//!   refuses a missing or changed key, and an upload cut mid-part fails,
//!   stays pending and completes once the server is reachable again;
//! - on the shared 5-node cluster: moto on the harness gateway,
//!   `backup.s3` in the cluster config, `deckhand backup now` puts the
//!   object and its manifest; moto stopped during scheduled backups: the
//!   status says the upload failed, the local snapshot stays; moto back:
//!   the upload completes. The cluster config is put back at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use deckhand::backup::s3;
use deckhand_integration::moto::{HARNESS_GATEWAY, Moto};
use deckhand_integration::*;
use deckhand_model::backup::{Manifest, RetentionConfig, S3Config};
use serde_json::Value;

const BUCKET: &str = "deckhand-e2e";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd on loopback, killed on drop.
struct Etcd {
    child: Child,
    url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd(dir: &Path) -> Result<Etcd> {
    let (c, p) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{c}");
    let peer = format!("http://127.0.0.1:{p}");
    let child = Command::new("etcd")
        .args([
            "--name",
            "s3test",
            "--data-dir",
            &dir.join("etcd").display().to_string(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("s3test={peer}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting etcd")?;
    let e = Etcd { child, url };
    wait_for("etcd on loopback", Duration::from_secs(30), || {
        Ok(etcdctl(&e, "put /s3test/ready 1").is_ok().then_some(()))
    })?;
    Ok(e)
}

fn etcdctl(e: &Etcd, args: &str) -> Result<String> {
    let (ok, out, err) = host(&format!(
        "ETCDCTL_API=3 etcdctl --endpoints={} {args}",
        e.url
    ))?;
    ensure!(ok, "etcdctl {args}: {err}");
    Ok(out)
}

/// A verified snapshot in `<dir>/<cluster>/` named for `taken_at`, with
/// its manifest, as the taker writes them.
async fn snapshot(
    e: &Etcd,
    dir: &Path,
    cluster: &str,
    taken_at: u64,
) -> Result<(PathBuf, Manifest)> {
    let folder = dir.join(cluster);
    std::fs::create_dir_all(&folder)?;
    let tmp = folder.join(format!(".tmp-{taken_at}.db"));
    etcdctl(e, &format!("snapshot save {}", tmp.display()))?;
    let v = deckhand::backup::verify(&tmp, None)
        .await
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let path = folder.join(deckhand::backup::file_name(taken_at, v.revision));
    std::fs::rename(&tmp, &path)?;
    let m = Manifest {
        cluster_id: cluster.to_owned(),
        revision: v.revision,
        keys: v.keys,
        size: v.size,
        sha256: v.sha256,
        taken_at,
        member: "s3test".into(),
        member_id: "1".into(),
        node: "host".into(),
        path: path.display().to_string(),
        request: None,
    };
    std::fs::write(
        deckhand::backup::manifest_path(&path),
        serde_json::to_vec(&m)?,
    )?;
    Ok((path, m))
}

fn sha256_hex(bytes: &[u8]) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("b");
    std::fs::write(&f, bytes)?;
    let out = host(&format!("sha256sum {} | cut -d' ' -f1", f.display()))?.1;
    Ok(out.trim().to_owned())
}

#[test]
fn uploads_retention_and_fetch_against_moto_on_loopback() -> Result<()> {
    let work = tempfile::tempdir()?;
    let mut moto = Moto::start_on("127.0.0.1")?;
    moto.create_bucket(BUCKET)?;
    let creds = work.path().join("creds.toml");
    std::fs::write(
        &creds,
        "access_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
    )?;
    let cfg = S3Config {
        bucket: BUCKET.into(),
        prefix: "loop/back".into(),
        endpoint: Some(moto.endpoint()),
        region: "us-east-1".into(),
        credentials_file: creds.display().to_string(),
        part_size_mib: 5,
    };
    let e = etcd(work.path())?;
    // About 12 MiB of values: three parts of 5 MiB (the last shorter).
    let blob = "x".repeat(100 * 1024);
    for i in 0..120 {
        etcdctl(&e, &format!("put /s3test/k{i} {blob}"))?;
    }
    let dir = work.path().join("backups");
    let cluster = "c0ffee";
    let now = unix_now();
    let rt = tokio::runtime::Runtime::new()?;
    let (db1, m1) = rt.block_on(snapshot(&e, &dir, cluster, now - 3 * 86_400))?;
    ensure!(m1.size > 10 * 1024 * 1024, "snapshot of {} bytes", m1.size);
    let keep_all = RetentionConfig::default();

    // 1. Upload: object, then manifest, SHA-256 as the manifest says.
    let out = rt.block_on(s3::sync(&cfg, &dir, cluster, now, &keep_all));
    ensure!(out.error.is_none(), "sync: {:?}", out.error);
    ensure!(out.pending.is_empty(), "{out:?}");
    let name1 = db1.file_name().unwrap().to_string_lossy().into_owned();
    let key1 = format!("loop/back/{cluster}/{name1}");
    ensure!(out.uploaded == [key1.clone()], "{out:?}");
    let obj = moto.get(BUCKET, &key1)?.context("the object")?;
    ensure!(
        obj == std::fs::read(&db1)?,
        "the object differs from the file"
    );
    ensure!(sha256_hex(&obj)? == m1.sha256, "SHA-256 of the object");
    let man: Manifest = serde_json::from_slice(
        &moto
            .get(BUCKET, &format!("{key1}.json"))?
            .context("manifest")?,
    )?;
    ensure!(man == m1, "manifest {man:?}");
    // Again: nothing to do.
    let out = rt.block_on(s3::sync(&cfg, &dir, cluster, now, &keep_all));
    ensure!(out.uploaded.is_empty() && out.error.is_none(), "{out:?}");

    // 2. The server down: the new snapshot stays pending, with the reason.
    etcdctl(&e, "put /s3test/more 1")?;
    let (db2, _) = rt.block_on(snapshot(&e, &dir, cluster, now - 2 * 86_400))?;
    moto.stop();
    let out = rt.block_on(s3::sync(&cfg, &dir, cluster, now, &keep_all));
    let name2 = db2.file_name().unwrap().to_string_lossy().into_owned();
    // Not confirmed in the bucket: every local snapshot is pending.
    ensure!(out.pending.contains(&name2), "{out:?}");
    let err = out.error.clone().context("an error")?;
    ensure!(
        err.contains(&format!("s3://{BUCKET}/")) && err.contains("onnection refused"),
        "{err}"
    );
    eprintln!("[figure] upload with the server down: {err}");
    ensure!(db2.exists(), "the local copy is kept");

    // 3. Back (empty: moto keeps buckets in memory): both go up.
    moto.start()?;
    moto.create_bucket(BUCKET)?;
    let (db3, _) = rt.block_on(snapshot(&e, &dir, cluster, now - 60))?;
    let out = rt.block_on(s3::sync(&cfg, &dir, cluster, now, &keep_all));
    ensure!(out.error.is_none() && out.pending.is_empty(), "{out:?}");
    ensure!(out.uploaded.len() == 3, "{out:?}");
    let name3 = db3.file_name().unwrap().to_string_lossy().into_owned();
    ensure!(
        out.newest.as_ref().map(|u| u.key.as_str())
            == Some(&format!("loop/back/{cluster}/{name3}")[..]),
        "{out:?}"
    );

    // 4. Retention over the bucket: one a day for a day keeps the
    // snapshot of a minute ago; the two older ones go with their manifests.
    let daily = RetentionConfig {
        all_hours: 0,
        hourly_hours: 0,
        daily_days: 1,
    };
    let before = moto.keys(BUCKET, "loop/back/")?;
    ensure!(before.len() == 6, "{before:?}");
    let out = rt.block_on(s3::sync(&cfg, &dir, cluster, now, &daily));
    ensure!(out.error.is_none(), "{out:?}");
    let after = moto.keys(BUCKET, "loop/back/")?;
    ensure!(
        after
            == [
                format!("loop/back/{cluster}/{name3}"),
                format!("loop/back/{cluster}/{name3}.json")
            ],
        "{after:?}"
    );
    // The newest is never deleted, however old.
    let out = rt.block_on(s3::sync(&cfg, &dir, cluster, now + 400 * 86_400, &daily));
    ensure!(out.error.is_none(), "{out:?}");
    ensure!(moto.keys(BUCKET, "loop/back/")?.len() == 2);

    // 5. Fetch: a verified file; a missing key refused.
    let dest = work.path().join("fetched");
    let key3 = format!("loop/back/{cluster}/{name3}");
    let got = rt.block_on(s3::fetch_snapshot_from_s3(
        &cfg,
        &format!("s3://{BUCKET}/{key3}"),
        &dest,
    ))?;
    ensure!(got == dest.join(&name3), "{}", got.display());
    ensure!(std::fs::read(&got)? == std::fs::read(&db3)?);
    let e1 = rt
        .block_on(s3::fetch_snapshot_from_s3(&cfg, &key1, &dest))
        .unwrap_err();
    ensure!(
        e1.downcast_ref::<deckhand::backup::Refusal>().is_some()
            && format!("{e1:#}").contains("no such key"),
        "{e1:#}"
    );
    ensure!(
        std::fs::read_dir(&dest)?.count() == 2,
        "only the fetched file and its manifest"
    );
    // A changed object (the manifest stays): refused, nothing left.
    let bad = work.path().join("bad.db");
    let mut bytes = std::fs::read(&db3)?;
    bytes[5000] ^= 0xff;
    std::fs::write(&bad, &bytes)?;
    moto.put_file(BUCKET, &key3, &bad)?;
    let dest2 = work.path().join("fetched2");
    let e2 = rt
        .block_on(s3::fetch_snapshot_from_s3(&cfg, &key3, &dest2))
        .unwrap_err();
    ensure!(
        e2.downcast_ref::<deckhand::backup::Refusal>().is_some(),
        "{e2:#}"
    );
    ensure!(std::fs::read_dir(&dest2)?.count() == 0, "nothing left");

    // 6. The server gone mid-upload: through a proxy that cuts every
    // connection once 7 MiB went up (part 1 of 5 MiB whole, part 2 cut)
    // and refuses more, the upload fails naming part 2, the snapshot stays
    // pending and no object appears; once the proxy forwards again, the
    // next pass uploads it whole.
    let proxy = CutProxy::start(&moto)?;
    let cut = S3Config {
        endpoint: Some(proxy.endpoint()),
        ..cfg.clone()
    };
    let dir2 = work.path().join("backups2");
    let (db4, _) = rt.block_on(snapshot(&e, &dir2, "cut", now - 30))?;
    let name4 = db4.file_name().unwrap().to_string_lossy().into_owned();
    proxy.cut_after(7 * 1024 * 1024);
    let out = rt.block_on(s3::sync(&cut, &dir2, "cut", now, &keep_all));
    let err = out.error.clone().context("an error")?;
    ensure!(err.contains("uploading part 2 of"), "{err}");
    ensure!(out.pending == [name4.clone()], "{out:?}");
    ensure!(
        moto.keys(BUCKET, "loop/back/cut/")?.is_empty(),
        "no object of a cut upload"
    );
    eprintln!("[figure] upload cut after 7 MiB: {err}");
    proxy.heal();
    let out = rt.block_on(s3::sync(&cut, &dir2, "cut", now, &keep_all));
    ensure!(out.error.is_none() && out.pending.is_empty(), "{out:?}");
    let key4 = format!("loop/back/cut/{name4}");
    ensure!(moto.get(BUCKET, &key4)?.context("the object")? == std::fs::read(&db4)?);
    drop(e);
    Ok(())
}

/// A TCP proxy to moto that can cut the connections once a number of
/// bytes went up (and refuse new ones) until healed: S3 gone mid-upload.
struct CutProxy {
    port: u16,
    budget: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CutProxy {
    fn start(moto: &Moto) -> Result<CutProxy> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let budget = std::sync::Arc::new(AtomicU64::new(u64::MAX));
        let upstream = format!("{}:{}", moto.host, moto.port);
        let b = budget.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { continue };
                if b.load(Ordering::SeqCst) == 0 {
                    continue; // dropped: refused
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                let b = b.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let (mut client, mut server) = (client, server);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n as u64,
                        };
                        let left = b.load(Ordering::SeqCst);
                        let send = n.min(left);
                        if left != u64::MAX {
                            b.store(left - send, Ordering::SeqCst);
                        }
                        if server.write_all(&buf[..send as usize]).is_err() || send < n {
                            break;
                        }
                    }
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Ok(CutProxy { port, budget })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts after `bytes` more bytes from the client, then refuses.
    fn cut_after(&self, bytes: u64) {
        self.budget
            .store(bytes, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forwards again, without a limit.
    fn heal(&self) {
        self.budget
            .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    }
}

const DIR: &str = "/var/lib/deckhand/backups";
const CREDS: &str = "/etc/deckhand/s3-e2e.toml";
const WAIT: Duration = Duration::from_secs(180);

/// Puts the cluster config back, removes the snapshots and credentials,
/// also on failure.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = sh("node1", "deckhand cluster set backup=null");
        for k in 1..=SHARED_NODES {
            let _ = sh(&format!("node{k}"), &format!("rm -rf {DIR} {CREDS}"));
        }
    }
}

/// The taker's status document (`<prefix>/backup/status`).
fn backup_status() -> Result<Value> {
    let out = sh_ok(
        "node1",
        "ETCDCTL_API=3 etcdctl get /deckhand/backup/status --print-value-only",
    )?;
    serde_json::from_str(out.trim()).with_context(|| format!("the backup status: {out}"))
}

fn s3_section(moto: &Moto, enabled: bool) -> String {
    format!(
        r#"backup={{"enabled":{enabled},"interval_seconds":10,"s3":{{"bucket":"{BUCKET}","prefix":"e2e","endpoint":"{}","credentials_file":"{CREDS}","part_size_mib":5}}}}"#,
        moto.endpoint()
    )
}

#[test]
fn uploads_to_moto_on_the_harness_and_survive_an_outage() -> Result<()> {
    let _guard = ClusterGuard::shared()?;
    drop(Restore);
    let _restore = Restore;
    let mut moto = Moto::start_on(HARNESS_GATEWAY)?;
    moto.create_bucket(BUCKET)?;
    for k in 1..=SHARED_NODES {
        sh_ok(
            &format!("node{k}"),
            &format!(
                "umask 077 && printf 'access_key_id = \"testing\"\\nsecret_access_key = \"testing\"\\n' > {CREDS}"
            ),
        )?;
    }
    // A bad value is refused naming its key, and nothing is changed.
    let (code, _, err) = sh_rc(
        "node1",
        r#"deckhand cluster set 'backup={"s3":{"bucket":"Bad_Bucket","credentials_file":"/x"}}'"#,
    )?;
    ensure!(
        code != 0 && err.contains("backup.s3.bucket"),
        "{code} {err}"
    );
    sh_ok(
        "node1",
        &format!("deckhand cluster set '{}'", s3_section(&moto, false)),
    )?;

    // `backup now`: the snapshot, then its object and manifest in the bucket.
    let t = Instant::now();
    let out = wait_for("deckhand backup now with an upload", WAIT, || {
        let (code, out, err) = sh_rc("node5", "deckhand backup now --timeout 120")?;
        ensure!(code == 0, "backup now exited {code}: {out} {err}");
        Ok(Some(out))
    })?;
    eprintln!(
        "[figure] backup now with the upload: {:.1} s: {out}",
        t.elapsed().as_secs_f64()
    );
    let key = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("s3://{BUCKET}/")))
        .with_context(|| format!("no key in {out}"))?
        .to_owned();
    ensure!(key.starts_with("e2e/") && key.ends_with(".db"), "{key}");
    let object = moto.get(BUCKET, &key)?.context("the object")?;
    let manifest: Value = serde_json::from_slice(
        &moto
            .get(BUCKET, &format!("{key}.json"))?
            .context("the manifest")?,
    )?;
    ensure!(
        manifest["sha256"].as_str() == Some(sha256_hex(&object)?.as_str()),
        "manifest {manifest} vs the object's SHA-256"
    );
    ensure!(manifest["size"].as_u64() == Some(object.len() as u64));
    let cluster_id = manifest["cluster_id"].as_str().context("cluster_id")?;
    ensure!(key.starts_with(&format!("e2e/{cluster_id}/")), "{key}");
    for f in ["revision", "taken_at", "member", "node"] {
        ensure!(!manifest[f].is_null(), "manifest without {f}: {manifest}");
    }
    let taker = manifest["node"].as_str().context("node")?.to_owned();

    // list shows it in both places; verify KEY downloads and checks it;
    // a missing key is refused (65).
    let list = sh_ok(&taker, "deckhand backup list")?;
    ensure!(
        list.contains(&format!("  {key}  revision")) && list.contains("s3: last uploaded"),
        "{list}"
    );
    let (code, out, err) = sh_rc("node4", &format!("deckhand backup verify {key}"))?;
    ensure!(
        code == 0 && out.contains("good") && out.contains("as its manifest says"),
        "{code} {out} {err}"
    );
    let (code, _, err) = sh_rc(
        "node4",
        &format!("deckhand backup verify e2e/{cluster_id}/20200101T000000Z-rev1.db"),
    )?;
    ensure!(code == 65 && err.contains("no such key"), "{code} {err}");

    // The schedule on, S3 down: the status says the upload failed, the
    // snapshots stay on the taker's disk.
    sh_ok(
        "node1",
        &format!("deckhand cluster set '{}'", s3_section(&moto, true)),
    )?;
    moto.stop();
    let down = Instant::now();
    let failed = wait_for("the status to say the upload failed", WAIT, || {
        let st = backup_status()?;
        let s3 = &st["s3"];
        let pending: Vec<String> = s3["pending"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let newest = st["last_good"]["path"].as_str().unwrap_or("");
        let newest_pending = pending.iter().any(|p| newest.ends_with(p.as_str()));
        Ok((s3["last_failure"].is_object() && newest_pending).then_some((st.clone(), pending)))
    })?;
    let (st, pending) = failed;
    eprintln!(
        "[figure] upload failure reported {:.1} s after S3 stopped: {}",
        down.elapsed().as_secs_f64(),
        st["s3"]["last_failure"]["error"]
    );
    let node = st["node"].as_str().context("node")?;
    for p in &pending {
        sh_ok(node, &format!("test -s {DIR}/{cluster_id}/{p}"))
            .with_context(|| format!("the pending snapshot {p} on {node}"))?;
    }
    let table = sh_ok("node4", "deckhand status")?;
    ensure!(table.contains("S3 upload failing"), "{table}");

    // S3 back (empty: moto keeps buckets in memory): the uploads complete.
    moto.start()?;
    moto.create_bucket(BUCKET)?;
    let up = Instant::now();
    wait_for("the pending uploads to complete", WAIT, || {
        let st = backup_status()?;
        let s3 = &st["s3"];
        let done =
            s3["last_failure"].is_null() && s3["pending"].as_array().is_some_and(|a| a.is_empty());
        Ok(done.then_some(()))
    })?;
    eprintln!(
        "[figure] pending uploads done {:.1} s after S3 came back",
        up.elapsed().as_secs_f64()
    );
    let keys = moto.keys(BUCKET, &format!("e2e/{cluster_id}/"))?;
    for p in &pending {
        let k = format!("e2e/{cluster_id}/{p}");
        ensure!(
            keys.contains(&k) && keys.contains(&format!("{k}.json")),
            "{k} not in {keys:?}"
        );
    }
    Ok(())
}

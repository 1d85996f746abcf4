//! Snapshots in an S3-compatible bucket (`backup.s3`): the upload of a
//! verified local snapshot and its manifest, the listing, retention over
//! the listing, and the download of a key to a verified local file
//! ([`fetch_snapshot_from_s3`], for `deckhand backup verify KEY` and
//! `deckhand restore`).
//!
//! Layout: `<prefix>/<cluster id>/<UTC time>-rev<revision>.db` with its
//! manifest ([`Manifest`], the local one unchanged) at `<same>.json`, put
//! only after the object is whole: a key with a manifest is a complete,
//! verified snapshot.
//!
//! Transport: `object_store`'s S3 client over reqwest and rustls with
//! ring (the process-default provider is set to ring here, the one
//! etcd-client's tonic uses). No whole-request timeout (object_store's 30 s
//! default cut uploads in k3s#4205): uploads go in parts
//! (`backup.s3.part_size_mib`, S3's multipart upload), each part bounded by
//! [`part_timeout`] and retried in place with exponential backoff
//! ([`backon`]); downloads are bounded by progress (each read within
//! [`READ_TIMEOUT`]). Each part carries `x-amz-checksum-sha256`, which the
//! server checks against the body.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use backon::{ExponentialBuilder, Retryable as _};
use deckhand_model::backup::{Manifest, RetentionConfig, S3Config, Uploaded};
use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore as _, ObjectStoreExt as _, PutPayload, RetryConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Refusal, manifest_path, revision_of_name, verify};

/// Bound on connecting to the endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on each read of a response (progress, not the whole transfer).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a request without a body to send (list, head, manifest, delete,
/// the multipart upload's create and complete).
pub const SMALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries of each request, the first included: waits of 1, 2, 4, 8 s
/// between them (about 15 s plus the requests before a failure is given up
/// for this pass; the taker tries again in a later pass).
pub const TRIES: usize = 5;

/// The bound on one part of `part_size` bytes: 60 s plus the time to send
/// it at 64 KiB/s (16 MiB: 316 s). Generous on purpose: it catches a stalled
/// connection, not a slow one.
pub fn part_timeout(part_size: u64) -> Duration {
    Duration::from_secs(60 + part_size / (64 * 1024))
}

/// The credentials file named by `backup.s3.credentials_file` (TOML).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
}

/// One object of the bucket under `<prefix>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A snapshot in the bucket: its object, and whether its manifest is
/// beside it (only then it counts: the manifest goes up last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSnapshot {
    /// `<prefix>/<cluster id>/<name>.db`.
    pub key: String,
    /// The cluster id (the folder).
    pub cluster_id: String,
    /// The file name, `<UTC time>-rev<revision>.db`.
    pub name: String,
    /// The object's size in bytes.
    pub size: u64,
    /// `<key>.json` exists.
    pub has_manifest: bool,
}

/// A bucket of `backup.s3`, opened with its credentials.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<AmazonS3>,
    cfg: S3Config,
}

/// Is a retry worth it: not for a key that does not exist, nor refused
/// credentials.
fn transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
    )
}

/// An error with its causes (reqwest's "error sending request" says why
/// only in its sources: connection refused, timed out, ...).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(8))
        .with_max_times(TRIES - 1)
}

/// `f` tried [`TRIES`] times with backoff, each try bounded by `timeout`.
async fn retried<T, F, Fut>(what: &str, timeout: Duration, f: F) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, object_store::Error>>,
{
    let mut f = f;
    let once = || {
        let fut = f();
        async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(object_store::Error::Generic {
                    store: "S3",
                    source: format!("no answer within {} s", timeout.as_secs()).into(),
                }),
            }
        }
    };
    once.retry(backoff())
        .sleep(tokio::time::sleep)
        .when(transient)
        .notify(|e, wait| tracing::warn!("S3 {what}: {}; again in {wait:?}", chain(e)))
        .await
}

/// `s3://bucket/key` or `key` → the key, checking the bucket.
///
/// # Errors
/// A URL naming another bucket than `cfg.bucket`.
pub fn key_of_arg(cfg: &S3Config, arg: &str) -> Result<String> {
    match arg.strip_prefix("s3://") {
        None => Ok(arg.trim_start_matches('/').to_owned()),
        Some(rest) => {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket != cfg.bucket {
                bail!(
                    "{arg} names bucket {bucket}, backup.s3.bucket is {}",
                    cfg.bucket
                );
            }
            Ok(key.to_owned())
        }
    }
}

/// `<prefix>/<cluster id>/` (or `<cluster id>/` with an empty prefix).
pub fn folder(prefix: &str, cluster_id: &str) -> String {
    if prefix.is_empty() {
        format!("{cluster_id}/")
    } else {
        format!("{prefix}/{cluster_id}/")
    }
}

/// The snapshots in a listing under `prefix`: each `<prefix>/<cluster
/// id>/<name>.db` whose name is a snapshot's ([`revision_of_name`]), with
/// whether its manifest is listed too; sorted by key (oldest first within
/// a cluster id). Other objects are left out.
pub fn snapshots_in(prefix: &str, objects: &[RemoteObject]) -> Vec<RemoteSnapshot> {
    let base = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let keys: std::collections::BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut out: Vec<RemoteSnapshot> = objects
        .iter()
        .filter_map(|o| {
            let rest = o.key.strip_prefix(&base)?;
            let (cluster_id, name) = rest.split_once('/')?;
            if name.contains('/') || revision_of_name(name).is_none() {
                return None;
            }
            Some(RemoteSnapshot {
                key: o.key.clone(),
                cluster_id: cluster_id.to_owned(),
                name: name.to_owned(),
                size: o.size,
                has_manifest: keys.contains(format!("{}.json", o.key).as_str()),
            })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Unix seconds of a snapshot name's `YYYYMMDDTHHMMSSZ` (the taker's
/// `taken_at`, [`super::file_name`]), `None` for another name.
pub fn time_of_name(name: &str) -> Option<u64> {
    revision_of_name(name)?;
    let t = name.get(..16)?;
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if t.as_bytes()[8] != b'T' || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil (the inverse of crate::tls::utc).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// The keys retention deletes from `cluster_id`'s snapshots in `snaps` at
/// `now` ([`deckhand_plan::retention::keep`] over the snapshots with a
/// manifest, their times from their names): for each snapshot dropped, its
/// object and then its manifest. Snapshots without a manifest (an upload
/// under way or cut) are neither counted nor deleted; the newest with a
/// manifest is always kept.
pub fn prune_plan(
    snaps: &[RemoteSnapshot],
    cluster_id: &str,
    now: u64,
    policy: &RetentionConfig,
) -> Vec<String> {
    let good: Vec<(&RemoteSnapshot, u64)> = snaps
        .iter()
        .filter(|s| s.cluster_id == cluster_id && s.has_manifest)
        .filter_map(|s| time_of_name(&s.name).map(|t| (s, t)))
        .collect();
    let times: Vec<u64> = good.iter().map(|(_, t)| *t).collect();
    let keep = deckhand_plan::retention::keep(now, &times, policy);
    good.iter()
        .zip(keep)
        .filter(|(_, k)| !k)
        .flat_map(|((s, _), _)| [s.key.clone(), format!("{}.json", s.key)])
        .collect()
}

impl Bucket {
    /// Opens `cfg`'s bucket: reads the credentials file, builds the client
    /// (path-style requests to `endpoint` when set, plain HTTP allowed
    /// only for an `http://` endpoint). Sends nothing.
    ///
    /// # Errors
    /// The credentials file cannot be read or lacks a key (named), or the
    /// settings are refused ([`S3Config::validate`]).
    pub fn open(cfg: &S3Config) -> Result<Bucket> {
        cfg.validate().map_err(|e| anyhow!(e))?;
        let file = &cfg.credentials_file;
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("backup.s3.credentials_file {file}"))?;
        let creds: Credentials = toml::from_str(&text).map_err(|e| {
            anyhow!(
                "backup.s3.credentials_file {file}: {} (it takes access_key_id, secret_access_key and optionally session_token)",
                e.message()
            )
        })?;
        if creds.access_key_id.is_empty() || creds.secret_access_key.is_empty() {
            bail!("backup.s3.credentials_file {file}: access_key_id or secret_access_key is empty");
        }
        // reqwest is built with rustls and no bundled provider: ring, as
        // everywhere in deckhand. Already set (an earlier call): fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = ClientOptions::new()
            .with_timeout_disabled()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_read_timeout(READ_TIMEOUT)
            .with_allow_http(
                cfg.endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            );
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&creds.access_key_id)
            .with_secret_access_key(&creds.secret_access_key)
            .with_checksum_algorithm(Checksum::SHA256)
            .with_client_options(options)
            // One layer of retries: ours ([`retried`]), per part.
            .with_retry(RetryConfig {
                max_retries: 0,
                ..Default::default()
            });
        if let Some(t) = &creds.session_token {
            b = b.with_token(t);
        }
        if let Some(e) = &cfg.endpoint {
            b = b
                .with_endpoint(e.trim_end_matches('/'))
                .with_virtual_hosted_style_request(false);
        }
        let store = b
            .build()
            .map_err(|e| anyhow!("backup.s3: the S3 client cannot be built: {}", chain(&e)))?;
        Ok(Bucket {
            store: Arc::new(store),
            cfg: cfg.clone(),
        })
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// The key of snapshot file `name` of `cluster_id`.
    pub fn key(&self, cluster_id: &str, name: &str) -> String {
        format!("{}{name}", folder(&self.cfg.prefix, cluster_id))
    }

    /// Every object under `<prefix>/` (or `<prefix>/<cluster id>/`).
    ///
    /// # Errors
    /// The listing failed (after retries), in words.
    pub async fn list(&self, cluster_id: Option<&str>) -> Result<Vec<RemoteObject>> {
        let under = match cluster_id {
            Some(c) => folder(&self.cfg.prefix, c),
            None if self.cfg.prefix.is_empty() => String::new(),
            None => format!("{}/", self.cfg.prefix),
        };
        let prefix = (!under.is_empty()).then(|| Key::from(under.trim_end_matches('/')));
        let store = self.store.clone();
        let metas = retried("list", SMALL_TIMEOUT, || {
            let store = store.clone();
            let prefix = prefix.clone();
            async move {
                let mut s = store.list(prefix.as_ref());
                let mut out = Vec::new();
                while let Some(m) = s.next().await {
                    out.push(m?);
                }
                Ok(out)
            }
        })
        .await
        .map_err(|e| anyhow!("listing s3://{}/{under}: {}", self.cfg.bucket, chain(&e)))?;
        Ok(metas
            .into_iter()
            .map(|m| RemoteObject {
                key: m.location.to_string(),
                size: m.size,
            })
            .collect())
    }

    /// The manifest of snapshot `key` (`<key>.json`); `None` if it does not
    /// exist.
    ///
    /// # Errors
    /// The request failed, or the object is not a manifest.
    pub async fn manifest(&self, key: &str) -> Result<Option<Manifest>> {
        let mkey = Key::from(format!("{key}.json"));
        let store = self.store.clone();
        let got = retried("get", SMALL_TIMEOUT, || {
            let store = store.clone();
            let mkey = mkey.clone();
            async move { store.get(&mkey).await?.bytes().await }
        })
        .await;
        match got {
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(anyhow!(
                "reading s3://{}/{mkey}: {}",
                self.cfg.bucket,
                chain(&e)
            )),
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .with_context(|| format!("s3://{}/{mkey} is not a manifest", self.cfg.bucket)),
        }
    }

    /// Uploads snapshot file `db` with its manifest `m` as
    /// `<prefix>/<m.cluster_id>/<file name>` and `<same>.json`: the object
    /// by a multipart upload (parts of `part_size_mib`, each retried in
    /// place and bounded by [`part_timeout`]; the upload is aborted if a
    /// part fails for good), then the manifest. Returns the key.
    ///
    /// # Errors
    /// The file cannot be read, or a request failed after its retries
    /// (in words, naming the key and the part).
    pub async fn upload(&self, db: &Path, m: &Manifest) -> Result<String> {
        let name = db
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| revision_of_name(n).is_some())
            .ok_or_else(|| anyhow!("{} is not a snapshot's file name", db.display()))?;
        let key = self.key(&m.cluster_id, name);
        let path = Key::from(key.as_str());
        let url = format!("s3://{}/{key}", self.cfg.bucket);
        let part_size = self.cfg.part_size_mib * 1024 * 1024;
        let store = self.store.clone();
        let id = retried("create multipart upload", SMALL_TIMEOUT, || {
            let store = store.clone();
            let path = path.clone();
            async move { store.create_multipart(&path).await }
        })
        .await
        .map_err(|e| anyhow!("starting the upload of {url}: {}", chain(&e)))?;
        let parts = self.put_parts(db, &path, &id, part_size, &url).await;
        let parts = match parts {
            Ok(p) => p,
            Err(e) => {
                let _ =
                    tokio::time::timeout(SMALL_TIMEOUT, store.abort_multipart(&path, &id)).await;
                return Err(e);
            }
        };
        let n = parts.len();
        let done = retried("complete multipart upload", SMALL_TIMEOUT, || {
            let store = store.clone();
            let path = path.clone();
            let id = id.clone();
            let parts = parts.clone();
            async move { store.complete_multipart(&path, &id, parts).await }
        })
        .await;
        if let Err(e) = done {
            let _ = tokio::time::timeout(SMALL_TIMEOUT, store.abort_multipart(&path, &id)).await;
            bail!("completing the upload of {url} ({n} parts): {}", chain(&e));
        }
        let body = PutPayload::from(serde_json::to_vec_pretty(m)?);
        let mpath = Key::from(format!("{key}.json"));
        retried("put manifest", SMALL_TIMEOUT, || {
            let store = store.clone();
            let mpath = mpath.clone();
            let body = body.clone();
            async move { store.put(&mpath, body).await }
        })
        .await
        .map_err(|e| anyhow!("putting the manifest {url}.json: {}", chain(&e)))?;
        tracing::info!(
            "uploaded {url} ({} bytes in {n} parts) and its manifest",
            m.size
        );
        Ok(key)
    }

    async fn put_parts(
        &self,
        db: &Path,
        path: &Key,
        id: &str,
        part_size: u64,
        url: &str,
    ) -> Result<Vec<PartId>> {
        let mut f = tokio::fs::File::open(db)
            .await
            .with_context(|| format!("opening {}", db.display()))?;
        let timeout = part_timeout(part_size);
        let mut parts = Vec::new();
        loop {
            let mut buf = Vec::with_capacity(part_size as usize);
            (&mut f)
                .take(part_size)
                .read_to_end(&mut buf)
                .await
                .with_context(|| format!("reading {}", db.display()))?;
            if buf.is_empty() && !parts.is_empty() {
                break;
            }
            let last = (buf.len() as u64) < part_size;
            let idx = parts.len();
            let payload = PutPayload::from(buf);
            let store = self.store.clone();
            let part = retried(&format!("part {}", idx + 1), timeout, || {
                let store = store.clone();
                let path = path.clone();
                let id = id.to_owned();
                let payload = payload.clone();
                async move { store.put_part(&path, &id, idx, payload).await }
            })
            .await
            .map_err(|e| anyhow!("uploading part {} of {url}: {}", idx + 1, chain(&e)))?;
            parts.push(part);
            if last {
                break;
            }
        }
        Ok(parts)
    }

    /// Deletes `keys`, in order.
    ///
    /// # Errors
    /// A delete failed after its retries (the later keys are left).
    pub async fn delete(&self, keys: &[String]) -> Result<()> {
        for k in keys {
            let path = Key::from(k.as_str());
            let store = self.store.clone();
            retried("delete", SMALL_TIMEOUT, || {
                let store = store.clone();
                let path = path.clone();
                async move { store.delete(&path).await }
            })
            .await
            .map_err(|e| anyhow!("deleting s3://{}/{k}: {}", self.cfg.bucket, chain(&e)))?;
        }
        Ok(())
    }

    /// Applies retention ([`prune_plan`]) to `cluster_id`'s snapshots in the
    /// bucket at `now` (the taker's clock); returns the keys deleted.
    ///
    /// # Errors
    /// The listing or a delete failed.
    pub async fn prune(
        &self,
        cluster_id: &str,
        now: u64,
        policy: &RetentionConfig,
    ) -> Result<Vec<String>> {
        let objects = self.list(Some(cluster_id)).await?;
        let snaps = snapshots_in(&self.cfg.prefix, &objects);
        let gone = prune_plan(&snaps, cluster_id, now, policy);
        self.delete(&gone).await?;
        Ok(gone)
    }

    /// Downloads `key` to `dest` (created 0600, fsynced), streaming; each
    /// read bounded by [`READ_TIMEOUT`], the whole not bounded. Returns the
    /// bytes written. `Ok(None)` when the key does not exist.
    ///
    /// # Errors
    /// The request or the disk failed.
    pub async fn download(&self, key: &str, dest: &Path) -> Result<Option<u64>> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = Key::from(key);
        let store = self.store.clone();
        let got = retried("get", SMALL_TIMEOUT, || {
            let store = store.clone();
            let path = path.clone();
            async move { store.get(&path).await }
        })
        .await;
        let got = match got {
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => bail!("reading s3://{}/{key}: {}", self.cfg.bucket, chain(&e)),
            Ok(g) => g,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        let mut out = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
        let mut stream = got.into_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| anyhow!("reading s3://{}/{key}: {}", self.cfg.bucket, chain(&e)))?;
            out.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", dest.display()))?;
            n += chunk.len() as u64;
        }
        out.flush().await?;
        out.into_inner()
            .sync_all()
            .await
            .with_context(|| format!("fsync of {}", dest.display()))?;
        Ok(Some(n))
    }
}

/// Downloads snapshot `key` of the bucket of `settings` into `dest_dir`
/// and verifies it against its manifest (the same checks as a local
/// snapshot, [`verify`]); returns the verified file,
/// `<dest_dir>/<file name of key>`, with the manifest beside it
/// (`<file>.json`). `key` is `<prefix>/<cluster id>/<name>.db` or
/// `s3://<bucket>/<that>`. Nothing is left in `dest_dir` on failure. Needs
/// no etcd (for `deckhand restore`).
///
/// # Errors
/// A [`Refusal`] (use `downcast_ref::<Refusal>()`; `deckhand` exits
/// [`crate::exit::BAD_SNAPSHOT`] with it) when the key or its manifest
/// does not exist, or the file fails verification; other errors (the
/// credentials file, the network, the disk) otherwise.
pub async fn fetch_snapshot_from_s3(
    settings: &S3Config,
    key: &str,
    dest_dir: &Path,
) -> Result<PathBuf> {
    let bucket = Bucket::open(settings)?;
    let key = key_of_arg(settings, key)?;
    let url = format!("s3://{}/{key}", settings.bucket);
    let refuse = |why: String| {
        anyhow::Error::new(Refusal {
            path: url.clone(),
            why,
        })
    };
    let name = key.rsplit('/').next().unwrap_or_default().to_owned();
    if revision_of_name(&name).is_none() {
        return Err(refuse(
            "not a snapshot's key (<prefix>/<cluster id>/<UTC time>-rev<revision>.db)".into(),
        ));
    }
    let Some(manifest) = bucket.manifest(&key).await? else {
        let exists = bucket
            .list(None)
            .await
            .map(|l| l.iter().any(|o| o.key == key))
            .unwrap_or(false);
        return Err(refuse(if exists {
            format!("it has no manifest ({key}.json): its upload did not finish")
        } else {
            format!("no such key in bucket {}", settings.bucket)
        }));
    };
    if !key.ends_with(&format!("/{}/{name}", manifest.cluster_id))
        && key != format!("{}/{name}", manifest.cluster_id)
    {
        return Err(refuse(format!(
            "its manifest names cluster {}, its key another folder",
            manifest.cluster_id
        )));
    }
    std::fs::create_dir_all(dest_dir).with_context(|| format!("making {}", dest_dir.display()))?;
    let dest = dest_dir.join(&name);
    let tmp = dest_dir.join(format!(".tmp-{name}"));
    let result = async {
        match bucket.download(&key, &tmp).await? {
            None => Err(refuse(format!("no such key in bucket {}", settings.bucket))),
            Some(_) => Ok(()),
        }?;
        verify(&tmp, Some(&manifest))
            .await
            .map_err(|r| refuse(r.why))?;
        std::fs::rename(&tmp, &dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
        std::fs::write(manifest_path(&dest), serde_json::to_vec_pretty(&manifest)?)
            .with_context(|| format!("writing {}", manifest_path(&dest).display()))?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(dest)
}

/// What one [`sync`] did.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    /// The newest local snapshot now in the bucket with its manifest (one
    /// uploaded now, or earlier), as its [`Uploaded`] (its `at`: now).
    pub newest: Option<Uploaded>,
    /// Keys uploaded by this pass.
    pub uploaded: Vec<String>,
    /// Local snapshots (file names) still not in the bucket, oldest first.
    pub pending: Vec<String>,
    /// Keys retention deleted from the bucket.
    pub pruned: Vec<String>,
    /// Why the pass stopped short, in words (the snapshots it did not
    /// upload stay in `pending`, and on disk).
    pub error: Option<String>,
}

/// One pass of the taker's uploads: every verified local snapshot of
/// `cluster_id` in `dir` that is not in the bucket with its manifest (and
/// the object's size the manifest's) is uploaded, newest first
/// ([`Bucket::upload`]); the first that fails stops the pass (the rest
/// wait for the next). Only when all are up, retention runs over the
/// bucket's listing ([`Bucket::prune`], at `now` on the taker's clock).
/// Never fails: what went wrong is in [`SyncOutcome::error`].
pub async fn sync(
    cfg: &S3Config,
    dir: &Path,
    cluster_id: &str,
    now: u64,
    policy: &RetentionConfig,
) -> SyncOutcome {
    let mut out = SyncOutcome::default();
    let local: Vec<(PathBuf, Manifest)> = match super::list_local(dir, Some(cluster_id)) {
        Ok(l) => l
            .into_iter()
            .filter_map(|s| s.manifest.map(|m| (s.path, m)))
            .collect(),
        Err(e) => {
            out.error = Some(format!("reading {}: {e}", dir.display()));
            return out;
        }
    };
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    out.pending = local.iter().map(|(p, _)| name_of(p)).collect();
    let bucket = match Bucket::open(cfg) {
        Ok(b) => b,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let remote = match bucket.list(Some(cluster_id)).await {
        Ok(r) => snapshots_in(&cfg.prefix, &r),
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let is_up = |name: &str, m: &Manifest| {
        remote
            .iter()
            .any(|r| r.name == name && r.has_manifest && r.size == m.size)
    };
    let mut up: Vec<&(PathBuf, Manifest)> = Vec::new();
    let mut todo: Vec<&(PathBuf, Manifest)> = Vec::new();
    for s in &local {
        if is_up(&name_of(&s.0), &s.1) {
            up.push(s);
        } else {
            todo.push(s);
        }
    }
    // Newest first: the one most worth having if S3 fails again.
    for s in todo.iter().rev() {
        match bucket.upload(&s.0, &s.1).await {
            Ok(key) => {
                out.uploaded.push(key);
                up.push(s);
            }
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                break;
            }
        }
    }
    out.pending = local
        .iter()
        .filter(|s| !up.iter().any(|u| u.0 == s.0))
        .map(|(p, _)| name_of(p))
        .collect();
    out.newest = up
        .iter()
        .max_by_key(|s| name_of(&s.0))
        .map(|(p, m)| Uploaded {
            key: bucket.key(cluster_id, &name_of(p)),
            at: now,
            revision: m.revision,
            size: m.size,
            sha256: m.sha256.clone(),
            request: m.request.clone(),
        });
    if out.error.is_none() {
        match bucket.prune(cluster_id, now, policy).await {
            Ok(gone) => out.pruned = gone,
            Err(e) => out.error = Some(format!("retention in the bucket: {e:#}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> RemoteObject {
        RemoteObject {
            key: key.into(),
            size: 1,
        }
    }

    #[test]
    fn names_give_back_the_time_they_were_made_of() {
        for t in [0u64, 1_796_239_697, 951_782_400, 4_102_444_799] {
            let name = super::super::file_name(t, 7);
            assert_eq!(time_of_name(&name), Some(t), "{name}");
        }
        assert_eq!(time_of_name("20261302T000000Z-rev1.db"), None);
        assert_eq!(time_of_name("x.db"), None);
    }

    #[test]
    fn listing_pairs_objects_with_manifests_per_cluster() {
        let l = [
            obj("p/c1/20261202T000000Z-rev5.db"),
            obj("p/c1/20261202T000000Z-rev5.db.json"),
            obj("p/c1/20261202T010000Z-rev6.db"),
            obj("p/c2/20261202T000000Z-rev1.db"),
            obj("p/c2/20261202T000000Z-rev1.db.json"),
            obj("p/c2/notes.txt"),
            obj("p/c2/deeper/20261202T000000Z-rev1.db"),
            obj("q/c1/20261202T000000Z-rev5.db"),
        ];
        let s = snapshots_in("p", &l);
        let got: Vec<(&str, &str, bool)> = s
            .iter()
            .map(|s| (s.cluster_id.as_str(), s.name.as_str(), s.has_manifest))
            .collect();
        assert_eq!(
            got,
            [
                ("c1", "20261202T000000Z-rev5.db", true),
                ("c1", "20261202T010000Z-rev6.db", false),
                ("c2", "20261202T000000Z-rev1.db", true),
            ]
        );
        assert_eq!(
            snapshots_in("", &[obj("c/20261202T000000Z-rev5.db")]).len(),
            1
        );
        assert_eq!(folder("", "c"), "c/");
        assert_eq!(folder("a/b", "c"), "a/b/c/");
    }

    #[test]
    fn retention_over_the_listing_keeps_the_newest_and_skips_unfinished() {
        let day = 86_400u64;
        let now = 20 * day;
        let mut l = Vec::new();
        for d in 0..5u64 {
            let name = super::super::file_name(d * day, (d + 1) as i64);
            l.push(obj(&format!("p/c/{name}")));
            l.push(obj(&format!("p/c/{name}.json")));
        }
        // An unfinished upload, old: never counted nor deleted.
        l.push(obj(&format!("p/c/{}", super::super::file_name(3600, 99))));
        // Another cluster's: not this cluster's retention.
        l.push(obj(&format!("p/d/{}", super::super::file_name(0, 1))));
        l.push(obj(&format!("p/d/{}.json", super::super::file_name(0, 1))));
        let snaps = snapshots_in("p", &l);
        let policy = RetentionConfig {
            all_hours: 0,
            hourly_hours: 0,
            daily_days: 1,
        };
        let gone = prune_plan(&snaps, "c", now, &policy);
        // Every day is older than a day: only the newest (day 4) stays.
        let expect: Vec<String> = (0..4u64)
            .flat_map(|d| {
                let k = format!("p/c/{}", super::super::file_name(d * day, (d + 1) as i64));
                [k.clone(), format!("{k}.json")]
            })
            .collect();
        assert_eq!(gone, expect);
        let policy = RetentionConfig {
            all_hours: 0,
            hourly_hours: 0,
            daily_days: 30,
        };
        assert!(prune_plan(&snaps, "c", now, &policy).is_empty());
    }

    #[test]
    fn keys_as_arguments() {
        let cfg: S3Config =
            serde_json::from_str(r#"{"bucket":"bkt","credentials_file":"/c"}"#).unwrap();
        assert_eq!(key_of_arg(&cfg, "s3://bkt/p/c/x.db").unwrap(), "p/c/x.db");
        assert_eq!(key_of_arg(&cfg, "p/c/x.db").unwrap(), "p/c/x.db");
        assert!(key_of_arg(&cfg, "s3://other/p/c/x.db").is_err());
    }

    #[test]
    fn credentials_errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds.toml");
        std::fs::write(&f, "access_key_id = \"a\"\n").unwrap();
        let cfg = S3Config {
            bucket: "bkt".into(),
            prefix: String::new(),
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            credentials_file: f.display().to_string(),
            part_size_mib: 16,
        };
        let e = format!("{:#}", Bucket::open(&cfg).unwrap_err());
        assert!(
            e.contains("secret_access_key") && e.contains("creds.toml"),
            "{e}"
        );
        std::fs::write(&f, "access_key_id = \"a\"\nsecret_access_key = \"b\"\n").unwrap();
        assert!(Bucket::open(&cfg).is_ok());
        let missing = S3Config {
            credentials_file: "/nonexistent/creds.toml".into(),
            ..cfg
        };
        let e = format!("{:#}", Bucket::open(&missing).unwrap_err());
        assert!(
            e.contains("backup.s3.credentials_file /nonexistent/creds.toml"),
            "{e}"
        );
    }

    #[test]
    fn parts_have_a_generous_bound() {
        assert_eq!(part_timeout(16 * 1024 * 1024), Duration::from_secs(316));
    }
}

//! Backups: the cluster config's `backup` section, the manifest written
//! beside each snapshot, and the status document of the agent that takes
//! them (`<prefix>/backup/status`, JSON). `docs/backup.md` describes the
//! whole.

use serde::{Deserialize, Serialize};

/// Where snapshots go by default: a folder in the agent's state dir, which
/// `deckhand.service` may write (`StateDirectory=deckhand`).
pub const DEFAULT_BACKUP_DIR: &str = "/var/lib/deckhand/backups";

/// `backup` of the cluster config: scheduled snapshots of etcd.
///
/// Example: `{"enabled":true,"interval_seconds":3600,"retention":{"all_hours":6}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Take snapshots on the schedule. Off by default (an existing cluster
    /// keeps its behaviour); `deckhand backup now` works either way.
    pub enabled: bool,
    /// Seconds between two scheduled snapshots, on the elected agent's
    /// clock. Default 3600, allowed 10..=604800.
    pub interval_seconds: u64,
    /// The local directory, absolute; snapshots go to `<dir>/<cluster id>/`.
    /// Default [`DEFAULT_BACKUP_DIR`]. Another directory needs a drop-in
    /// adding it to `deckhand.service`'s `ReadWritePaths=`.
    pub dir: String,
    /// Names of the nodes that may take snapshots. Empty (the default):
    /// the nodes whose role is an etcd member (the control plane).
    pub nodes: Vec<String>,
    /// What the taker keeps.
    pub retention: RetentionConfig,
    /// Where verified snapshots are uploaded too; `None` (the default):
    /// local disk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            enabled: false,
            interval_seconds: 3600,
            dir: DEFAULT_BACKUP_DIR.to_owned(),
            nodes: Vec::new(),
            retention: RetentionConfig::default(),
            s3: None,
        }
    }
}

/// `backup.s3`: an S3-compatible bucket the taker uploads each verified
/// snapshot to, as `<prefix>/<cluster id>/<UTC time>-rev<revision>.db`
/// with its manifest beside it (`<same>.json`, uploaded after the object).
///
/// Example: `{"bucket":"etcd-backups","prefix":"prod","endpoint":"https://s3.example.net",
/// "region":"eu-west-1","credentials_file":"/etc/deckhand/s3-credentials.toml"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket: 3..=63 lowercase letters, digits, `.` and `-` (S3's
    /// bucket naming rules), which must exist.
    pub bucket: String,
    /// Key prefix, without a leading or trailing `/`; may be empty.
    /// Default empty.
    #[serde(default)]
    pub prefix: String,
    /// The service's URL (`https://host[:port]`, or `http://` for a test
    /// server); `None`: AWS's own endpoint for `region`. Requests are
    /// path-style (`<endpoint>/<bucket>/<key>`) when an endpoint is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region requests are signed for. Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// An absolute path, on each node that may take snapshots (and where
    /// `deckhand backup list/verify` runs), of a TOML file with
    /// `access_key_id` and `secret_access_key` (and optionally
    /// `session_token`); read at each use, never stored in etcd.
    pub credentials_file: String,
    /// Size of each part of the multipart upload in MiB, 5..=512 (S3's
    /// minimum part is 5 MiB). Default 16.
    #[serde(default = "default_part_mib")]
    pub part_size_mib: u64,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_part_mib() -> u64 {
    16
}

impl S3Config {
    /// Checks the fields, each error naming its key (`backup.s3.bucket`, ...).
    ///
    /// # Errors
    /// The reason in words.
    pub fn validate(&self) -> Result<(), String> {
        let b = &self.bucket;
        if !(3..=63).contains(&b.len())
            || !b
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            || !b.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !b.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(format!(
                "backup.s3.bucket = {b:?} is not a bucket name (3..=63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
            ));
        }
        let p = &self.prefix;
        if p.len() > 512
            || p.starts_with('/')
            || p.ends_with('/')
            || p.split('/').any(|s| s == "." || s == "..")
            || (!p.is_empty() && p.split('/').any(str::is_empty))
            || !p
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'-' | b'_' | b'.' | b'='))
        {
            return Err(format!(
                "backup.s3.prefix = {p:?} is not a key prefix (letters, digits, '-', '_', '.', '=' in segments joined by '/', no leading, trailing or doubled '/', no '.' or '..' segment, at most 512 bytes)"
            ));
        }
        if let Some(e) = &self.endpoint {
            let rest = e
                .strip_prefix("https://")
                .or_else(|| e.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| {
                let host = r.trim_end_matches('/');
                !host.is_empty()
                    && host.bytes().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']')
                    })
            });
            if !ok {
                return Err(format!(
                    "backup.s3.endpoint = {e:?} is not an http:// or https:// URL of a host[:port] (no path, no credentials)"
                ));
            }
        }
        let r = &self.region;
        if r.is_empty()
            || r.len() > 64
            || !r
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return Err(format!(
                "backup.s3.region = {r:?} is not a region name (lowercase letters, digits and '-')"
            ));
        }
        let f = &self.credentials_file;
        if !f.starts_with('/') || f.split('/').any(|p| p == "..") {
            return Err(format!(
                "backup.s3.credentials_file = {f:?} is not an absolute path without `..`"
            ));
        }
        if !(5..=512).contains(&self.part_size_mib) {
            return Err(format!(
                "backup.s3.part_size_mib = {} is outside 5..=512",
                self.part_size_mib
            ));
        }
        Ok(())
    }
}

/// `backup.retention`: every snapshot younger than `all_hours`, then the
/// newest of each hour younger than `hourly_hours`, then the newest of each
/// UTC day younger than `daily_days`; the newest good snapshot always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep every snapshot younger than this many hours. Default 6, 0..=8760.
    pub all_hours: u64,
    /// Then one an hour, up to this age in hours. Default 48, 0..=8760.
    pub hourly_hours: u64,
    /// Then one a day, up to this age in days. Default 30, 0..=3660.
    pub daily_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            all_hours: 6,
            hourly_hours: 48,
            daily_days: 30,
        }
    }
}

impl BackupConfig {
    /// Checks what serde cannot: ranges, an absolute `dir`.
    ///
    /// # Errors
    /// The reason in words, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let range = |field: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("backup.{field} = {v} is outside {lo}..={hi}"))
            }
        };
        range("interval_seconds", self.interval_seconds, 10, 604_800)?;
        range("retention.all_hours", self.retention.all_hours, 0, 8760)?;
        range(
            "retention.hourly_hours",
            self.retention.hourly_hours,
            0,
            8760,
        )?;
        range("retention.daily_days", self.retention.daily_days, 0, 3660)?;
        if !self.dir.starts_with('/') || self.dir.split('/').any(|p| p == "..") {
            return Err(format!(
                "backup.dir = {:?} is not an absolute path without `..`",
                self.dir
            ));
        }
        if self.nodes.len() > 64 || self.nodes.iter().any(|n| n.is_empty() || n.len() > 253) {
            return Err("backup.nodes takes at most 64 node names of 1..=253 bytes".to_owned());
        }
        if let Some(s3) = &self.s3 {
            s3.validate()?;
        }
        Ok(())
    }

    /// Whether the node named `name`, whose role is an etcd member when
    /// `is_member`, may take snapshots.
    pub fn may_take(&self, name: &str, is_member: bool) -> bool {
        if self.nodes.is_empty() {
            is_member
        } else {
            self.nodes.iter().any(|n| n == name)
        }
    }
}

/// What is known of one verified snapshot: the manifest written beside it
/// (`<file>.json`) and the last good one in [`BackupStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The deckhand cluster id (`<prefix>/backup/cluster-id`), which a
    /// restore keeps (etcd's own cluster ID changes).
    pub cluster_id: String,
    /// The store revision in the snapshot (`etcdctl snapshot status`).
    pub revision: i64,
    /// The number of keys in the database, every bucket (`totalKey`).
    pub keys: u64,
    /// The file size in bytes, etcd's appended SHA-256 included.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// When the taker's stream ended, Unix seconds on the taker's clock.
    pub taken_at: u64,
    /// Name of the member the snapshot was streamed from.
    pub member: String,
    /// Its member id, hex.
    pub member_id: String,
    /// The node whose agent took it.
    pub node: String,
    /// Where it was written (on `node`).
    pub path: String,
    /// The `deckhand backup now` request it answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// A failed snapshot, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFailure {
    /// When, Unix seconds on the taker's clock.
    pub at: u64,
    /// The node whose agent failed.
    pub node: String,
    /// What went wrong.
    pub error: String,
    /// The `deckhand backup now` request it answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// `<prefix>/backup/status`: written by the elected taker after each
/// snapshot and at least once a minute while it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
    /// The taker that wrote this.
    pub node: String,
    /// When it wrote it, Unix seconds on its clock.
    pub checked_at: u64,
    /// `backup.interval_seconds` it followed; 0 when the schedule is off.
    pub interval_seconds: u64,
    /// The newest good snapshot.
    pub last_good: Option<Manifest>,
    /// Age of `last_good` at `checked_at` in seconds, on the clock of the
    /// node that wrote this (so it never compares two nodes' clocks when
    /// the same node took the snapshot; after a new election it compares
    /// the new taker's clock with the old one's `taken_at`).
    pub last_good_age_seconds: Option<u64>,
    /// The last failure, if newer than `last_good`.
    pub last_failure: Option<BackupFailure>,
    /// The uploads to `backup.s3`, when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<UploadStatus>,
}

/// The S3 part of [`BackupStatus`]: what the taker uploaded last, what is
/// waiting (kept on its disk and retried each pass), and the last failed
/// upload in words.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// The bucket.
    pub bucket: String,
    /// The newest snapshot whose object and manifest are both in the bucket.
    pub last_uploaded: Option<Uploaded>,
    /// Local snapshots (file names) not confirmed in the bucket by the last
    /// pass (all of them when the bucket could not be listed), oldest first.
    #[serde(default)]
    pub pending: Vec<String>,
    /// The last failed upload, if newer than `last_uploaded`'s.
    pub last_failure: Option<BackupFailure>,
}

/// One snapshot in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    /// Its key (`<prefix>/<cluster id>/<name>.db`); the manifest is `<key>.json`.
    pub key: String,
    /// When its manifest was put, Unix seconds on the taker's clock.
    pub at: u64,
    /// Its revision.
    pub revision: i64,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of the object, lowercase hex (the manifest's).
    pub sha256: String,
    /// The `deckhand backup now` request of the snapshot, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

impl BackupStatus {
    /// The schedule is late: the newest good snapshot is older than twice
    /// the interval (or there is none). Never overdue when the schedule is off.
    pub fn overdue(&self) -> bool {
        if self.interval_seconds == 0 {
            return false;
        }
        match self.last_good_age_seconds {
            Some(age) => age > 2 * self.interval_seconds,
            None => true,
        }
    }
}

/// `<prefix>/backup/request`: a snapshot asked for by `deckhand backup now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequest {
    /// A random id the answer carries ([`Manifest::request`]).
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validation_and_takers() {
        let d = BackupConfig::default();
        assert!(!d.enabled);
        assert!(d.validate().is_ok());
        let mut c = d.clone();
        c.interval_seconds = 5;
        assert!(c.validate().unwrap_err().contains("interval_seconds = 5"));
        let mut c = d.clone();
        c.dir = "backups".into();
        assert!(c.validate().unwrap_err().contains("absolute"));
        c.dir = "/var/../etc".into();
        assert!(c.validate().is_err());
        assert!(d.may_take("n1", true));
        assert!(!d.may_take("n1", false));
        let c = BackupConfig {
            nodes: vec!["n4".into()],
            ..d
        };
        assert!(c.may_take("n4", false));
        assert!(!c.may_take("n1", true));
    }

    #[test]
    fn s3_settings_are_checked_naming_the_key() {
        let good: S3Config = serde_json::from_str(
            r#"{"bucket":"etcd-backups","prefix":"prod/eu","endpoint":"http://172.29.77.1:9000","credentials_file":"/etc/deckhand/s3.toml"}"#,
        )
        .unwrap();
        assert_eq!(good.region, "us-east-1");
        assert_eq!(good.part_size_mib, 16);
        assert!(good.validate().is_ok());
        let bad = |f: &dyn Fn(&mut S3Config), key: &str| {
            let mut c = good.clone();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.starts_with(&format!("backup.s3.{key} = ")), "{e}");
        };
        bad(&|c| c.bucket = "Etcd".into(), "bucket");
        bad(&|c| c.bucket = "ab".into(), "bucket");
        bad(&|c| c.bucket = "-ab".into(), "bucket");
        bad(&|c| c.prefix = "/p".into(), "prefix");
        bad(&|c| c.prefix = "p/".into(), "prefix");
        bad(&|c| c.prefix = "a//b".into(), "prefix");
        bad(&|c| c.prefix = "a/../b".into(), "prefix");
        bad(&|c| c.prefix = "a b".into(), "prefix");
        bad(&|c| c.endpoint = Some("s3.example.net".into()), "endpoint");
        bad(&|c| c.endpoint = Some("ftp://h".into()), "endpoint");
        bad(&|c| c.endpoint = Some("https://u:p@h".into()), "endpoint");
        bad(&|c| c.endpoint = Some("https://h/path".into()), "endpoint");
        bad(&|c| c.region = "".into(), "region");
        bad(&|c| c.region = "EU".into(), "region");
        bad(
            &|c| c.credentials_file = "creds.toml".into(),
            "credentials_file",
        );
        bad(&|c| c.part_size_mib = 4, "part_size_mib");
        let mut c = good.clone();
        c.prefix = String::new();
        c.endpoint = Some("https://s3.example.net:443/".into());
        assert!(c.validate().is_ok());
        // Reached from the backup section, and unknown fields are refused.
        let b = BackupConfig {
            s3: Some(S3Config {
                bucket: "x".into(),
                ..good.clone()
            }),
            ..Default::default()
        };
        assert!(b.validate().unwrap_err().contains("backup.s3.bucket"));
        assert!(
            serde_json::from_str::<S3Config>(
                r#"{"bucket":"abc","credentials_file":"/x","key":"k"}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<S3Config>(r#"{"bucket":"abc"}"#).is_err());
    }

    #[test]
    fn overdue_is_twice_the_interval() {
        let mut s = BackupStatus {
            node: "n1".into(),
            checked_at: 1000,
            interval_seconds: 60,
            last_good: None,
            last_good_age_seconds: Some(120),
            last_failure: None,
            s3: None,
        };
        assert!(!s.overdue());
        s.last_good_age_seconds = Some(121);
        assert!(s.overdue());
        s.last_good_age_seconds = None;
        assert!(s.overdue());
        s.interval_seconds = 0;
        assert!(!s.overdue());
    }
}

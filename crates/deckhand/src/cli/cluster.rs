//! `deckhand cluster get|set`: the cluster config (`<prefix>/config/cluster`),
//! read with its defaults filled in, and changed field by field, validated
//! before anything is written and written with a compare on the revision
//! read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use deckhand_model::ClusterConfig;
use serde_json::{Map, Value};

use super::session::Session;
use crate::connect::Target;
use crate::exit::Failure;
use crate::store::Revision;

/// `deckhand cluster ...`
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Print the cluster config as JSON, every field with its value (the
    /// default where the stored document does not set it); the key's
    /// revision goes to stderr.
    ///
    /// The output is a whole document `deckhand cluster set --file` takes:
    ///   deckhand cluster get > cluster.json     (prints: revision N)
    ///   $EDITOR cluster.json
    ///   deckhand cluster set --file cluster.json --if-revision N
    #[command(verbatim_doc_comment)]
    Get {
        /// Accepted for scripts that pass it to every command: the output
        /// is JSON either way.
        #[arg(long)]
        json: bool,
    },
    /// Change fields of the cluster config: KEY=VALUE for each.
    ///
    /// KEY is a field of the cluster config; VALUE is JSON (a number, true,
    /// false, a list) or else a plain string; null unsets the field, which
    /// then takes its default. Fields not named keep their stored value.
    /// The result is validated as every agent validates it before anything
    /// is written (an unknown field or a value out of range: exit 2, nothing
    /// written), and it is written only if the key is still at the revision
    /// read (a concurrent change is reported, never overwritten: exit 1).
    ///
    /// Fields (default, allowed):
    ///   lease_ttl_seconds            20, 5..=300: a dead node's status disappears this long
    ///                                after its last keep-alive; singletons move after it
    ///   min_voters                   3, 1..=9: demotions never leave fewer voters
    ///   voters                       unset, odd 1..=9: voters the replacer keeps
    ///   learner_timeout_seconds      300, 10..=86400: a learner that has not caught up by then is removed
    ///   voter_start_timeout_seconds  300, 10..=86400: a voter added but never started is removed
    ///   dead_grace_seconds           300, 5..=86400: a dead voter is replaced after this long
    ///   preseed_concurrency          3, 1..=16: image pulls at once per node
    ///   preseed_all_planes           false: every node keeps every plane's images
    ///   upcoming                     []: images every node keeps present (the next release)
    ///   firewall                     {"enabled":false,"default":"accept","cluster_networks":[]}:
    ///                                the host firewall (docs/firewall.md); off until turned on;
    ///                                default accept or drop; cluster_networks: CIDRs that count
    ///                                as the cluster's nodes (new nodes' subnet)
    ///
    /// Examples:
    ///   deckhand cluster set voters=5 dead_grace_seconds=600
    ///   deckhand cluster set 'upcoming=["registry.example/app:2","registry.example/sched:3"]'
    ///   deckhand cluster set voters=null          (unset: operators decide the voters)
    ///   deckhand cluster set 'firewall={"enabled":true,"default":"drop","cluster_networks":["10.0.0.0/24"]}'
    ///   deckhand cluster set firewall=null        (the firewall off: every node removes its table)
    ///   deckhand cluster set lease_ttl_seconds=30 (every node moves its keys to a new lease; none looks dead)
    ///   deckhand cluster set --file cluster.json  (a whole document; - for stdin)
    #[command(verbatim_doc_comment)]
    Set {
        /// KEY=VALUE: a field and its new value (JSON, or a plain string;
        /// null unsets it).
        #[arg(value_name = "KEY=VALUE", required_unless_present = "file")]
        assignments: Vec<String>,
        /// Replace the whole document with this file's JSON (- for stdin);
        /// fields it does not set take their defaults.
        #[arg(long, conflicts_with = "assignments")]
        file: Option<PathBuf>,
        /// Write only if the key is still at this revision (the one
        /// `deckhand cluster get` printed; 0: only if the key is absent),
        /// instead of the revision read just before writing.
        #[arg(long, value_name = "REVISION")]
        if_revision: Option<Revision>,
    },
}

/// The names of the cluster config's fields.
fn fields() -> Vec<String> {
    match serde_json::to_value(ClusterConfig::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// One `KEY=VALUE`, checked against the fields: the key and its JSON value
/// (`Value::Null` to unset).
fn assignment(a: &str) -> Result<(String, Value)> {
    let Some((key, raw)) = a.split_once('=') else {
        bail!("{a:?} is not KEY=VALUE (e.g. voters=5)");
    };
    let key = key.trim();
    let fields = fields();
    if !fields.iter().any(|f| f == key) {
        bail!(
            "{key:?} is not a field of the cluster config (fields: {})",
            fields.join(", ")
        );
    }
    if raw.is_empty() {
        bail!("{a:?}: no value (to unset the field: {key}=null)");
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    Ok((key.to_string(), value))
}

/// The document `assignments` make of `stored` (the key's current value;
/// `None` when absent), and the config it parses to. Every assignment is
/// checked, and the result validated by [`ClusterConfig::parse`].
///
/// # Errors
/// A malformed or unknown assignment, a key given twice, a stored value
/// that is not a JSON object, or a result the agents would reject.
fn apply(stored: Option<&[u8]>, assignments: &[String]) -> Result<(Vec<u8>, ClusterConfig)> {
    let mut doc: Map<String, Value> = match stored {
        None => Map::new(),
        Some(v) => match serde_json::from_slice(v) {
            Ok(Value::Object(m)) => m,
            _ => bail!(
                "the stored cluster config is not a JSON object, so fields cannot be set in it; \
                 replace it whole with deckhand cluster set --file"
            ),
        },
    };
    let mut seen = Vec::new();
    for a in assignments {
        let (key, value) = assignment(a)?;
        if seen.contains(&key) {
            bail!("{key} is given twice");
        }
        seen.push(key.clone());
        if value.is_null() {
            doc.remove(&key);
        } else {
            doc.insert(key, value);
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(doc))?;
    let config = ClusterConfig::parse(&bytes)
        .map_err(|e| anyhow!("{e}; nothing written (see deckhand cluster set --help)"))?;
    Ok((bytes, config))
}

/// A whole document from `--file` (- for stdin), validated.
fn from_file(path: &Path) -> Result<(Vec<u8>, ClusterConfig)> {
    let bytes = if path == Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .context("reading the cluster config from stdin")?;
        b
    } else {
        std::fs::read(path)
            .with_context(|| format!("reading the cluster config from {}", path.display()))?
    };
    let config = ClusterConfig::parse(&bytes)
        .map_err(|e| anyhow!("{e}; nothing written (see deckhand cluster set --help)"))?;
    Ok((bytes, config))
}

/// The fields whose value differs between `a` and `b`, as `field: a → b`.
fn changes(a: &ClusterConfig, b: &ClusterConfig) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return Vec::new();
    };
    a.iter()
        .filter_map(|(k, old)| {
            let new = b.get(k)?;
            (old != new).then(|| format!("{k}: {old} → {new}"))
        })
        .collect()
}

/// `deckhand cluster get|set`.
///
/// # Errors
/// [`crate::exit::USAGE`] for a malformed or unknown `KEY=VALUE`, or a
/// result the agents would reject (checked before connecting as far as it
/// can be, and again on the stored document; nothing is written);
/// [`crate::exit::FAILED`] when no endpoint answers, a request fails, or the
/// key changed since it was read.
pub async fn cluster(target: Target, cmd: ClusterCommand) -> Result<(), Failure> {
    // Validate before connecting: bad input changes nothing. A file (or
    // stdin, which can be read only once) is read here, once.
    let mut document = None;
    if let ClusterCommand::Set {
        assignments, file, ..
    } = &cmd
    {
        match file {
            Some(f) => document = Some(from_file(f).map_err(Failure::usage)?),
            None => {
                apply(None, assignments).map_err(Failure::usage)?;
            }
        }
    }
    let session = Session::connect(target).await.map_err(Failure::failed)?;
    let store = &session.store;
    let key = store.keyspace().cluster_config();
    let stored = store.cluster_config_raw().await.map_err(Failure::failed)?;
    match cmd {
        ClusterCommand::Get { .. } => {
            let rev = stored.as_ref().map(|(_, r)| *r).unwrap_or(0);
            match &stored {
                None => {
                    outln!("{}", pretty(&ClusterConfig::default())?);
                    eprintln!("{key} is not set (revision 0): every field takes its default");
                }
                Some((v, _)) => match ClusterConfig::parse(v) {
                    Ok(c) => {
                        outln!("{}", pretty(&c)?);
                        eprintln!(
                            "revision {rev} of {key} (fields it does not set show their defaults)"
                        );
                    }
                    Err(e) => {
                        outln!("{}", String::from_utf8_lossy(v));
                        eprintln!(
                            "deckhand: warning: this value (revision {rev} of {key}) is rejected \
                             by every node, which keep their last valid config: {e}"
                        );
                    }
                },
            }
            Ok(())
        }
        ClusterCommand::Set {
            assignments,
            file: _,
            if_revision,
        } => {
            let (old_bytes, rev) = match &stored {
                Some((v, r)) => (Some(v.as_slice()), *r),
                None => (None, 0),
            };
            // `--file` was read and validated above.
            let (bytes, config) = match document {
                Some(d) => d,
                None => apply(old_bytes, &assignments).map_err(Failure::usage)?,
            };
            let expected = if_revision.unwrap_or(rev);
            let old = old_bytes
                .and_then(|v| ClusterConfig::parse(v).ok())
                .unwrap_or_default();
            if old_bytes == Some(bytes.as_slice()) && expected == rev {
                outln!("cluster config unchanged (revision {rev}): nothing written");
                return Ok(());
            }
            match store
                .put_cluster_config_if(&bytes, expected)
                .await
                .map_err(Failure::failed)?
            {
                Some(new_rev) => {
                    outln!(
                        "cluster config set at revision {new_rev}: {}",
                        String::from_utf8_lossy(&bytes)
                    );
                    for c in changes(&old, &config) {
                        outln!("  {c}");
                    }
                    Ok(())
                }
                None => Err(Failure::failed(anyhow!(
                    "{key} is no longer at revision {expected} (now {}): it changed since it was \
                     read; nothing written. Look at it (deckhand cluster get) and set again",
                    store
                        .cluster_config_raw()
                        .await
                        .ok()
                        .flatten()
                        .map(|(_, r)| r.to_string())
                        .unwrap_or_else(|| "absent".into())
                ))),
            }
        }
    }
}

fn pretty(c: &ClusterConfig) -> Result<String, Failure> {
    serde_json::to_string_pretty(c).map_err(|e| Failure::failed(anyhow!(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(stored: Option<&str>, a: &[&str]) -> Result<ClusterConfig> {
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        apply(stored.map(str::as_bytes), &a).map(|(_, c)| c)
    }

    fn err(stored: Option<&str>, a: &[&str]) -> String {
        format!("{:#}", set(stored, a).unwrap_err())
    }

    #[test]
    fn the_firewall_section_is_set_whole_and_checked() {
        let c = set(None, &[r#"firewall={"enabled":true,"default":"drop"}"#]).unwrap();
        assert!(c.firewall.enabled);
        assert_eq!(c.firewall.default, deckhand_model::FirewallDefault::Drop);
        let c = set(Some(r#"{"firewall":{"enabled":true}}"#), &["firewall=null"]).unwrap();
        assert!(!c.firewall.enabled, "unset: off");
        for (a, words) in [
            (
                r#"firewall={"default":"reject"}"#,
                "unknown variant `reject`",
            ),
            (
                r#"firewall={"enabled":true,"ports":[]}"#,
                "unknown field `ports`",
            ),
            (
                r#"firewall={"cluster_networks":["10.0.0.0/40"]}"#,
                "prefix length",
            ),
            ("firewall=on", "expected struct FirewallConfig"),
        ] {
            let e = err(None, &[a]);
            assert!(
                e.contains(words) && e.contains("nothing written"),
                "{a}: {e}"
            );
        }
    }

    #[test]
    fn assignments_are_json_or_plain_strings_and_null_unsets() {
        let c = set(None, &["voters=5", r#"upcoming=["a/b:1","c:2"]"#]).unwrap();
        assert_eq!(c.voters, Some(5));
        assert_eq!(c.upcoming.len(), 2);
        let c = set(Some(r#"{"voters":5,"min_voters":1}"#), &["voters=null"]).unwrap();
        assert_eq!(c.voters, None, "unset");
        assert_eq!(c.min_voters, 1, "fields not named are kept");
        let c = set(
            Some(r#"{"lease_ttl_seconds":30}"#),
            &["lease_ttl_seconds=null"],
        )
        .unwrap();
        assert_eq!(
            c.lease_ttl_seconds,
            ClusterConfig::default().lease_ttl_seconds
        );
        let (bytes, _) = apply(
            Some(br#"{"voters":3}"#),
            &["preseed_all_planes=true".into()],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"preseed_all_planes":true,"voters":3}"#,
            "the stored document stays sparse: defaults are not written"
        );
    }

    #[test]
    fn bad_assignments_are_refused_with_the_reason() {
        assert!(err(None, &["voters"]).contains("not KEY=VALUE"));
        assert!(err(None, &["voter=3"]).contains("not a field"));
        assert!(err(None, &["voter=3"]).contains("lease_ttl_seconds"));
        assert!(
            err(None, &["voters=4"]).contains("even"),
            "{}",
            err(None, &["voters=4"])
        );
        assert!(err(None, &["voters="]).contains("voters=null"));
        assert!(err(None, &["lease_ttl_seconds=1"]).contains("5..=300"));
        assert!(err(None, &["lease_ttl_seconds=ten"]).contains("JSON"));
        assert!(err(None, &["upcoming=[\"Not A Ref\"]"]).contains("nothing written"));
        assert!(err(None, &["voters=3", "voters=5"]).contains("twice"));
        assert!(err(Some("[1]"), &["voters=3"]).contains("--file"));
        // A stored value out of range stays refused until it is fixed.
        assert!(err(Some(r#"{"min_voters":0}"#), &["voters=3"]).contains("min_voters"));
        assert!(set(Some(r#"{"min_voters":0}"#), &["min_voters=2"]).is_ok());
    }

    #[test]
    fn changes_name_each_field_that_differs() {
        let a = ClusterConfig::default();
        let b = set(None, &["voters=5", "lease_ttl_seconds=30"]).unwrap();
        assert_eq!(
            changes(&a, &b),
            vec!["lease_ttl_seconds: 20 → 30", "voters: null → 5"]
        );
    }

    #[tokio::test]
    async fn a_write_compares_on_the_revision_read() {
        use crate::store::Store;
        use crate::testing::Etcd;
        let etcd = Etcd::start().await;
        let store = Store::new(
            etcd.client().await,
            deckhand_model::Keyspace::new("/t"),
            std::time::Duration::from_secs(5),
        );
        assert_eq!(store.cluster_config_raw().await.unwrap(), None);
        let (a, _) = apply(None, &["voters=3".into()]).unwrap();
        let rev = store.put_cluster_config_if(&a, 0).await.unwrap().unwrap();
        // Another writer read "absent" too: refused, nothing written.
        let (b, _) = apply(None, &["voters=5".into()]).unwrap();
        assert_eq!(store.put_cluster_config_if(&b, 0).await.unwrap(), None);
        let (stored, at) = store.cluster_config_raw().await.unwrap().unwrap();
        assert_eq!((stored.as_slice(), at), (a.as_slice(), rev));
        // One that read `rev` wins once; a second writer that read `rev` loses.
        let (c, _) = apply(Some(&stored), &["min_voters=1".into()]).unwrap();
        let rev2 = store.put_cluster_config_if(&c, rev).await.unwrap().unwrap();
        assert!(rev2 > rev);
        assert_eq!(store.put_cluster_config_if(&b, rev).await.unwrap(), None);
        assert_eq!(
            store.cluster_config().await.unwrap().0.voters,
            Some(3),
            "the concurrent change was not overwritten"
        );
    }
}

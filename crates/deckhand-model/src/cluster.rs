//! Cluster-wide settings: value of `<prefix>/config/cluster`, JSON.
//!
//! Every field is optional; a missing key or field takes the default.
//! Example: `{"lease_ttl_seconds":20,"min_voters":3,"upcoming":["registry.example/app:2"]}`.

use serde::{Deserialize, Serialize};

use crate::firewall::FirewallConfig;
use crate::image::ImageRef;

/// Largest cluster config accepted, in bytes (room for the `upcoming` list).
pub const MAX_CLUSTER_CONFIG_BYTES: usize = 64 * 1024;

/// Cluster-wide settings every agent follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// TTL, in seconds, of each node's health lease (its status key lives on
    /// it). A dead node's status disappears this long after its last
    /// keep-alive. Default 20, allowed 5..=300.
    pub lease_ttl_seconds: u64,
    /// Operators' demotions never leave fewer voters than this. Default 3.
    pub min_voters: usize,
    /// How long, in seconds, a learner may take to start and catch up before
    /// its join counts as failed and the learner is removed. Default 300.
    pub learner_timeout_seconds: u64,
    /// How long, in seconds, a voter may stay added but not started (in the
    /// member list with no name) before it is removed, when the started
    /// voters keep quorum without it. Measured on the judging agent's own
    /// monotonic clock. Default 300, allowed 10..=86400.
    pub voter_start_timeout_seconds: u64,
    /// The number of voters the cluster should keep (odd, 1..=9). When set,
    /// one elected agent replaces the members of dead nodes by promoting
    /// healthy proxies. Unset by default: operators decide.
    pub voters: Option<usize>,
    /// How long, in seconds, a voter's node must have been dead (no lease)
    /// before it is replaced. Default 300, allowed 5..=86400.
    pub dead_grace_seconds: u64,
    /// How many image pulls one node runs at once. Default 3, allowed 1..=16.
    pub preseed_concurrency: usize,
    /// When true, every node keeps the images of every plane present, not
    /// only those of its own planes (a failover to any plane never waits for
    /// a pull, at the cost of disk). Default false.
    pub preseed_all_planes: bool,
    /// Images every node keeps present in addition to its planes' images:
    /// the next release, preseeded before an upgrade. At most 64.
    pub upcoming: Vec<ImageRef>,
    /// The certificate signer's policy (`docs/pki.md`).
    pub pki: PkiConfig,
    /// The host firewall (`docs/firewall.md`): off by default.
    pub firewall: FirewallConfig,
    /// Scheduled etcd snapshots (`docs/backup.md`): off by default.
    pub backup: crate::backup::BackupConfig,
}

/// `pki` of the cluster config: how the elected signer treats requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PkiConfig {
    /// When true (the default), a request that passes the policy (the
    /// challenge, the address, the name) is signed at once; when false,
    /// only once an operator approved it (`deckhand pki approve NODE`).
    pub auto_sign: bool,
}

impl Default for PkiConfig {
    fn default() -> Self {
        PkiConfig { auto_sign: true }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            lease_ttl_seconds: 20,
            min_voters: 3,
            learner_timeout_seconds: 300,
            voter_start_timeout_seconds: 300,
            voters: None,
            dead_grace_seconds: 300,
            preseed_concurrency: 3,
            preseed_all_planes: false,
            upcoming: Vec::new(),
            pki: PkiConfig::default(),
            firewall: FirewallConfig::default(),
            backup: crate::backup::BackupConfig::default(),
        }
    }
}

impl ClusterConfig {
    /// Parses and validates the value of the cluster config key.
    ///
    /// # Errors
    /// [`ClusterConfigError`] when the value is too large, is not JSON of this
    /// shape (unknown fields are errors), or a number is out of range.
    pub fn parse(value: &[u8]) -> Result<ClusterConfig, ClusterConfigError> {
        if value.len() > MAX_CLUSTER_CONFIG_BYTES {
            return Err(ClusterConfigError::TooLarge(value.len()));
        }
        let cfg: ClusterConfig =
            serde_json::from_slice(value).map_err(|e| ClusterConfigError::Json(e.to_string()))?;
        if !(5..=300).contains(&cfg.lease_ttl_seconds) {
            return Err(ClusterConfigError::OutOfRange {
                field: "lease_ttl_seconds",
                value: cfg.lease_ttl_seconds,
                range: "5..=300",
            });
        }
        if !(1..=9).contains(&cfg.min_voters) {
            return Err(ClusterConfigError::OutOfRange {
                field: "min_voters",
                value: cfg.min_voters as u64,
                range: "1..=9",
            });
        }
        if let Some(v) = cfg.voters {
            if !(1..=9).contains(&v) {
                return Err(ClusterConfigError::OutOfRange {
                    field: "voters",
                    value: v as u64,
                    range: "1..=9",
                });
            }
            if v.is_multiple_of(2) {
                return Err(ClusterConfigError::EvenVoters(v));
            }
            if v < cfg.min_voters {
                return Err(ClusterConfigError::VotersBelowMin {
                    voters: v,
                    min_voters: cfg.min_voters,
                });
            }
        }
        if !(5..=86_400).contains(&cfg.dead_grace_seconds) {
            return Err(ClusterConfigError::OutOfRange {
                field: "dead_grace_seconds",
                value: cfg.dead_grace_seconds,
                range: "5..=86400",
            });
        }
        if !(10..=86_400).contains(&cfg.learner_timeout_seconds) {
            return Err(ClusterConfigError::OutOfRange {
                field: "learner_timeout_seconds",
                value: cfg.learner_timeout_seconds,
                range: "10..=86400",
            });
        }
        if !(10..=86_400).contains(&cfg.voter_start_timeout_seconds) {
            return Err(ClusterConfigError::OutOfRange {
                field: "voter_start_timeout_seconds",
                value: cfg.voter_start_timeout_seconds,
                range: "10..=86400",
            });
        }
        if !(1..=16).contains(&cfg.preseed_concurrency) {
            return Err(ClusterConfigError::OutOfRange {
                field: "preseed_concurrency",
                value: cfg.preseed_concurrency as u64,
                range: "1..=16",
            });
        }
        if cfg.upcoming.len() > 64 {
            return Err(ClusterConfigError::OutOfRange {
                field: "upcoming (number of images)",
                value: cfg.upcoming.len() as u64,
                range: "0..=64",
            });
        }
        cfg.firewall
            .validate()
            .map_err(ClusterConfigError::Firewall)?;
        cfg.backup.validate().map_err(ClusterConfigError::Backup)?;
        Ok(cfg)
    }
}

/// Why a cluster config value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterConfigError {
    /// Larger than [`MAX_CLUSTER_CONFIG_BYTES`].
    #[error("cluster config is {0} bytes, larger than the {max} bytes allowed", max = MAX_CLUSTER_CONFIG_BYTES)]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("cluster config is not valid JSON of the expected shape ({0})")]
    Json(String),
    /// An even voter count: it tolerates no more failures than one fewer.
    #[error("cluster config voters = {0} is even: {0} voters tolerate no more failures than {fewer} voters do; use an odd number", fewer = .0 - 1)]
    EvenVoters(usize),
    /// `voters` below `min_voters`: the replacer would keep fewer voters
    /// than operators' demotions may leave.
    #[error(
        "cluster config voters = {voters} is below min_voters = {min_voters}: set voters to at least min_voters, or lower min_voters"
    )]
    VotersBelowMin {
        /// The `voters` value.
        voters: usize,
        /// The `min_voters` value.
        min_voters: usize,
    },
    /// A bad `firewall` section (a value serde accepts but the firewall
    /// cannot use), in words.
    #[error("cluster config {0}")]
    Firewall(String),
    /// A bad `backup` section, in words.
    #[error("cluster config {0}")]
    Backup(String),
    /// A number outside its allowed range.
    #[error("cluster config field {field} = {value} is outside {range}")]
    OutOfRange {
        /// The field name.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The allowed range.
        range: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        assert_eq!(
            ClusterConfig::parse(b"{}").unwrap(),
            ClusterConfig::default()
        );
        assert_eq!(
            ClusterConfig::parse(br#"{"lease_ttl_seconds":7}"#)
                .unwrap()
                .lease_ttl_seconds,
            7
        );
        assert!(
            ClusterConfig::parse(br#"{"lease_ttl_seconds":1}"#)
                .unwrap_err()
                .to_string()
                .contains("lease_ttl_seconds = 1")
        );
        assert!(ClusterConfig::parse(br#"{"ttl":1}"#).is_err());
        assert_eq!(
            ClusterConfig::parse(br#"{"voters":3}"#).unwrap().voters,
            Some(3)
        );
        assert_eq!(
            ClusterConfig::parse(br#"{"voters":1}"#),
            Err(ClusterConfigError::VotersBelowMin {
                voters: 1,
                min_voters: 3
            })
        );
        assert_eq!(
            ClusterConfig::parse(br#"{"voters":1,"min_voters":1}"#)
                .unwrap()
                .voters,
            Some(1)
        );
        assert!(
            ClusterConfig::parse(br#"{"voters":4}"#)
                .unwrap_err()
                .to_string()
                .contains("is even")
        );
        assert!(ClusterConfig::parse(b"[").is_err());
        let cfg =
            ClusterConfig::parse(br#"{"upcoming":["redis:8"],"preseed_concurrency":5}"#).unwrap();
        assert_eq!(cfg.upcoming[0].as_str(), "docker.io/library/redis:8");
        assert_eq!(cfg.preseed_concurrency, 5);
        assert!(
            ClusterConfig::parse(br#"{"upcoming":["Bad Ref"]}"#)
                .unwrap_err()
                .to_string()
                .contains("invalid image reference")
        );
        assert!(ClusterConfig::parse(br#"{"preseed_concurrency":0}"#).is_err());
        assert!(ClusterConfig::default().pki.auto_sign);
        assert!(
            !ClusterConfig::parse(br#"{"pki":{"auto_sign":false}}"#)
                .unwrap()
                .pki
                .auto_sign
        );
        assert!(ClusterConfig::parse(br#"{"pki":{"autosign":false}}"#).is_err());
        assert!(ClusterConfig::parse(br#"{"pki":{"auto_sign":"no"}}"#).is_err());
        let b = ClusterConfig::parse(br#"{"backup":{"enabled":true,"interval_seconds":30}}"#)
            .unwrap()
            .backup;
        assert!(b.enabled && b.interval_seconds == 30);
        assert!(
            ClusterConfig::parse(br#"{"backup":{"interval_seconds":1}}"#)
                .unwrap_err()
                .to_string()
                .contains("backup.interval_seconds = 1")
        );
        assert!(ClusterConfig::parse(br#"{"backup":{"s3":{}}}"#).is_err());
    }

    #[test]
    fn firewall_section_defaults_off_and_refuses_bad_values() {
        use crate::firewall::FirewallDefault;
        let d = ClusterConfig::parse(b"{}").unwrap().firewall;
        assert!(!d.enabled, "an existing cluster keeps its behaviour");
        assert_eq!(d.default, FirewallDefault::Accept);
        let f = ClusterConfig::parse(
            br#"{"firewall":{"enabled":true,"default":"drop","cluster_networks":["10.0.0.0/24","fd00::1"]}}"#,
        )
        .unwrap()
        .firewall;
        assert!(f.enabled);
        assert_eq!(f.default, FirewallDefault::Drop);
        assert_eq!(f.networks().len(), 2);
        assert_eq!(f.networks()[0].to_string(), "10.0.0.0/24");
        for (bad, words) in [
            (
                r#"{"firewall":{"default":"reject"}}"#,
                "unknown variant `reject`",
            ),
            (r#"{"firewall":{"enable":true}}"#, "unknown field `enable`"),
            (r#"{"firewall":{"enabled":"yes"}}"#, "expected a boolean"),
            (
                r#"{"firewall":{"cluster_networks":["10.0.0.0/33"]}}"#,
                "prefix length must be 0..=32",
            ),
            (
                r#"{"firewall":{"cluster_networks":["node1"]}}"#,
                "not an IP address",
            ),
            (r#"{"firewall":true}"#, "expected struct FirewallConfig"),
        ] {
            let e = ClusterConfig::parse(bad.as_bytes())
                .expect_err(bad)
                .to_string();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }
}

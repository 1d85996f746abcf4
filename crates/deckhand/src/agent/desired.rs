//! The desired state, built from watch events of this node's role key and
//! of the cluster config: the last valid value of each, and why a newer
//! value was rejected. Bad input never replaces a good value: the node keeps
//! its role (or config) and reports the rejected one.

use deckhand_etcd::KeyEvent;
use deckhand_model::{ClusterConfig, EtcdRole, Role};

/// What the operator asks of this node, as far as the keys are valid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// The last valid role and the mod revision of its key; `None` when the
    /// key is absent (or was never valid).
    pub role: Option<(Role, i64)>,
    /// The role key has been read at least once (absent or present).
    pub role_seen: bool,
    /// Why the role key's current value was rejected.
    pub role_error: Option<String>,
    /// The last valid cluster config (the defaults when the key is absent).
    pub config: ClusterConfig,
    /// Why the cluster config's current value was rejected.
    pub config_error: Option<String>,
}

/// The value and mod revision an event leaves the key with (`None`: deleted
/// or absent).
fn value_of(ev: KeyEvent) -> Option<(Vec<u8>, i64)> {
    match ev {
        KeyEvent::Snapshot { kvs, .. } => kvs.into_iter().next().map(|(_, v, rev)| (v, rev)),
        KeyEvent::Put {
            value,
            mod_revision,
            ..
        } => Some((value, mod_revision)),
        KeyEvent::Delete { .. } => None,
    }
}

impl Desired {
    /// Applies an event of the role key `key`.
    pub fn on_role_event(&mut self, key: &str, ev: KeyEvent) {
        self.role_seen = true;
        match value_of(ev) {
            None => {
                self.role = None;
                self.role_error = None;
            }
            Some((v, rev)) => match Role::parse(&v) {
                Ok(role) => {
                    tracing::info!("desired role {role} (revision {rev})");
                    self.role = Some((role, rev));
                    self.role_error = None;
                }
                Err(e) => {
                    tracing::warn!("ignoring malformed role key {key} (revision {rev}): {e}");
                    self.role_error = Some(format!(
                        "role key {key} (revision {rev}) rejected: {e}; keeping the previous role"
                    ));
                }
            },
        }
    }

    /// Applies an event of the cluster config key `key`.
    pub fn on_config_event(&mut self, key: &str, ev: KeyEvent) {
        match value_of(ev) {
            None => {
                self.config = ClusterConfig::default();
                self.config_error = None;
            }
            Some((v, rev)) => match ClusterConfig::parse(&v) {
                Ok(c) => {
                    self.config = c;
                    self.config_error = None;
                }
                Err(e) => {
                    tracing::warn!("ignoring invalid cluster config {key} (revision {rev}): {e}");
                    self.config_error = Some(format!(
                        "cluster config {key} (revision {rev}) rejected: {e}; keeping the previous config"
                    ));
                }
            },
        }
    }

    /// The desired role, without its revision.
    pub fn role(&self) -> Option<&Role> {
        self.role.as_ref().map(|(r, _)| r)
    }

    /// The role key's revision the desired role came from; 0 if none.
    pub fn revision(&self) -> i64 {
        self.role.as_ref().map(|(_, rev)| *rev).unwrap_or(0)
    }

    /// Whether the role asks for an etcd proxy.
    pub fn wants_proxy(&self) -> bool {
        self.role().is_some_and(|r| r.etcd == EtcdRole::Proxy)
    }

    /// The planes the role names (none without a role).
    pub fn planes(&self) -> std::collections::BTreeSet<deckhand_model::Plane> {
        self.role().map(|r| r.planes.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/deckhand/nodes/n/role";

    fn put(v: &str, rev: i64) -> KeyEvent {
        KeyEvent::Put {
            key: KEY.into(),
            value: v.as_bytes().to_vec(),
            mod_revision: rev,
        }
    }

    #[test]
    fn a_valid_role_replaces_the_last_and_a_bad_one_keeps_it() {
        let mut d = Desired::default();
        assert!(!d.role_seen);
        d.on_role_event(
            KEY,
            KeyEvent::Snapshot {
                kvs: vec![],
                revision: 5,
            },
        );
        assert!(d.role_seen && d.role.is_none());
        d.on_role_event(KEY, put(r#"{"etcd":"member","planes":["control"]}"#, 7));
        assert_eq!(d.revision(), 7);
        assert!(!d.wants_proxy());
        assert_eq!(d.planes().len(), 1);
        d.on_role_event(KEY, put("garbage", 8));
        assert_eq!(d.revision(), 7, "the last valid role stays");
        let e = d.role_error.clone().unwrap();
        assert!(
            e.contains(KEY) && e.contains("revision 8") && e.contains("keeping the previous role"),
            "{e}"
        );
        d.on_role_event(KEY, put(r#"{"etcd":"proxy"}"#, 9));
        assert!(d.role_error.is_none() && d.wants_proxy());
        d.on_role_event(
            KEY,
            KeyEvent::Delete {
                key: KEY.into(),
                mod_revision: 10,
            },
        );
        assert!(d.role.is_none() && d.role_error.is_none());
    }

    #[test]
    fn a_bad_cluster_config_keeps_the_previous_one() {
        let mut d = Desired::default();
        let k = "/deckhand/config/cluster";
        d.on_config_event(
            k,
            KeyEvent::Snapshot {
                kvs: vec![(k.into(), br#"{"min_voters":5}"#.to_vec(), 3)],
                revision: 3,
            },
        );
        assert_eq!(d.config.min_voters, 5);
        d.on_config_event(k, put(r#"{"min_voters":"five"}"#, 4));
        assert_eq!(d.config.min_voters, 5);
        assert!(d.config_error.as_ref().unwrap().contains("revision 4"));
        d.on_config_event(
            k,
            KeyEvent::Delete {
                key: k.into(),
                mod_revision: 5,
            },
        );
        assert_eq!(d.config, ClusterConfig::default());
        assert!(d.config_error.is_none());
    }
}

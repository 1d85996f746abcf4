//! Role keys: what an operator wants a node to be.
//!
//! Value of `<prefix>/nodes/<node-id>/role`, JSON:
//! `{"etcd":"member"|"proxy","planes":["control","data","router"]}`.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::MAX_VALUE_BYTES;

/// Whether the node runs an etcd member (a voter) or an `etcd grpc-proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdRole {
    /// A voting member of the etcd cluster.
    Member,
    /// An `etcd grpc-proxy` forwarding `localhost:2379` to the voters.
    Proxy,
}

impl fmt::Display for EtcdRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EtcdRole::Member => "member",
            EtcdRole::Proxy => "proxy",
        })
    }
}

impl std::str::FromStr for EtcdRole {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, RoleError> {
        match s {
            "member" => Ok(EtcdRole::Member),
            "proxy" => Ok(EtcdRole::Proxy),
            other => Err(RoleError::UnknownEtcdRole(other.to_string())),
        }
    }
}

/// A plane: a group of units a node can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// Cluster control components.
    Control,
    /// Stateful data components.
    Data,
    /// Request routers.
    Router,
}

impl Plane {
    /// Every plane, in order.
    pub const ALL: [Plane; 3] = [Plane::Control, Plane::Data, Plane::Router];
}

impl fmt::Display for Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Plane::Control => "control",
            Plane::Data => "data",
            Plane::Router => "router",
        })
    }
}

impl std::str::FromStr for Plane {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, RoleError> {
        match s {
            "control" => Ok(Plane::Control),
            "data" => Ok(Plane::Data),
            "router" => Ok(Plane::Router),
            other => Err(RoleError::UnknownPlane(other.to_string())),
        }
    }
}

/// The role of one node: its etcd role and its planes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Member or proxy.
    pub etcd: EtcdRole,
    /// The planes the node serves; empty for none.
    #[serde(default)]
    pub planes: BTreeSet<Plane>,
}

impl Role {
    /// A role with no planes.
    pub fn new(etcd: EtcdRole) -> Role {
        Role {
            etcd,
            planes: BTreeSet::new(),
        }
    }

    /// Parses and validates a role key's value.
    ///
    /// # Errors
    /// [`RoleError`] when the value is larger than [`MAX_VALUE_BYTES`], is not
    /// JSON, has an unknown field, an unknown etcd role or an unknown plane, or
    /// names a plane twice.
    pub fn parse(value: &[u8]) -> Result<Role, RoleError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(RoleError::TooLarge(value.len()));
        }
        // Parse loosely first so that unknown enum values get a precise error.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            etcd: String,
            #[serde(default)]
            planes: Vec<String>,
        }
        let raw: Raw = serde_json::from_slice(value).map_err(|e| RoleError::Json(e.to_string()))?;
        let etcd = raw.etcd.parse()?;
        let mut planes = BTreeSet::new();
        for p in &raw.planes {
            if !planes.insert(p.parse::<Plane>()?) {
                return Err(RoleError::DuplicatePlane(p.clone()));
            }
        }
        Ok(Role { etcd, planes })
    }

    /// The canonical JSON of this role, as written by `deckhand role set`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.etcd)?;
        if !self.planes.is_empty() {
            let planes: Vec<String> = self.planes.iter().map(Plane::to_string).collect();
            write!(f, "+{}", planes.join(","))?;
        }
        Ok(())
    }
}

/// Why a role value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The value is larger than [`MAX_VALUE_BYTES`].
    #[error("role value is {0} bytes, larger than the {max} bytes allowed", max = MAX_VALUE_BYTES)]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error(
        "role value is not valid role JSON ({0}); expected {{\"etcd\":\"member\"|\"proxy\",\"planes\":[...]}}"
    )]
    Json(String),
    /// `etcd` is neither `member` nor `proxy`.
    #[error("unknown etcd role {0:?}; expected \"member\" or \"proxy\"")]
    UnknownEtcdRole(String),
    /// A plane other than control, data, router.
    #[error("unknown plane {0:?}; expected \"control\", \"data\" or \"router\"")]
    UnknownPlane(String),
    /// A plane listed twice.
    #[error("plane {0:?} is listed twice")]
    DuplicatePlane(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_good_roles() {
        let r = Role::parse(br#"{"etcd":"member","planes":["router","control"]}"#).unwrap();
        assert_eq!(r.etcd, EtcdRole::Member);
        assert_eq!(r.planes.len(), 2);
        assert_eq!(
            Role::parse(br#"{"etcd":"proxy"}"#).unwrap(),
            Role::new(EtcdRole::Proxy)
        );
        assert_eq!(r.to_string(), "member+control,router");
    }

    #[test]
    fn rejects_bad_roles_with_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"garbage", "not valid role JSON"),
            (br#"{"etcd":"leader"}"#, "unknown etcd role \"leader\""),
            (
                br#"{"etcd":"proxy","planes":["gpu"]}"#,
                "unknown plane \"gpu\"",
            ),
            (
                br#"{"etcd":"proxy","planes":["data","data"]}"#,
                "listed twice",
            ),
            (br#"{"etcd":"proxy","extra":1}"#, "unknown field"),
            (br#"{"planes":[]}"#, "missing field"),
        ];
        for (input, want) in cases {
            let err = Role::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        let big = format!(
            r#"{{"etcd":"proxy","planes":[],"x":"{}"}}"#,
            "a".repeat(5000)
        );
        assert!(matches!(
            Role::parse(big.as_bytes()),
            Err(RoleError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trips(member in any::<bool>(), planes in proptest::collection::btree_set(0usize..3, 0..3)) {
            let role = Role {
                etcd: if member { EtcdRole::Member } else { EtcdRole::Proxy },
                planes: planes.into_iter().map(|i| Plane::ALL[i]).collect(),
            };
            prop_assert_eq!(Role::parse(role.to_json().as_bytes()).unwrap(), role);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Role::parse(&bytes);
        }
    }
}

//! Plane configs: value of `<prefix>/config/planes/<plane>`, JSON.
//!
//! ```json
//! {"units": [{"name": "router.service", "mode": "global"},
//!            {"name": "scheduler.service", "mode": "singleton"}],
//!  "images": ["registry.example:5000/platform/router:1.4.2"]}
//! ```
//!
//! A `global` unit runs on every node of the plane; a `singleton` unit runs
//! on exactly one node of the plane, the leader of an etcd election per unit.
//! `images` are the Docker images the plane's units need: every node of the
//! plane keeps them present (preseed) so a unit never waits for a pull.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::firewall::{MAX_PLANE_PORTS, PlanePort};
use crate::image::ImageRef;
use crate::role::Plane;
use crate::unit_name::check_unit_name;

/// Largest plane config accepted, in bytes.
pub const MAX_PLANE_CONFIG_BYTES: usize = 64 * 1024;
/// Most units one plane may list.
pub const MAX_PLANE_UNITS: usize = 64;
/// Most images one plane may list.
pub const MAX_PLANE_IMAGES: usize = 64;

/// How many copies of a unit run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitMode {
    /// One copy on every node of the plane.
    Global,
    /// One copy in the cluster, on the node of the plane that leads the
    /// unit's election.
    Singleton,
}

impl fmt::Display for UnitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnitMode::Global => "global",
            UnitMode::Singleton => "singleton",
        })
    }
}

/// One unit of a plane.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaneUnit {
    /// The systemd unit name, e.g. `router.service` (validated by
    /// systemd.unit(5)'s rules; deckhand's own units are refused).
    pub name: String,
    /// `global` or `singleton`.
    pub mode: UnitMode,
}

/// A plane's config: its units and the images they need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaneConfig {
    /// The plane's units, each named once.
    #[serde(default)]
    pub units: Vec<PlaneUnit>,
    /// The images the plane's units need, normalized, each once.
    #[serde(default)]
    pub images: Vec<ImageRef>,
    /// The ports the plane's units serve, opened by the host firewall on
    /// the plane's nodes (`docs/firewall.md`): `{"port": 443, "protocol":
    /// "tcp", "from": "any"}`; each port and protocol once, at most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PlanePort>,
}

/// Why a plane config was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaneConfigError {
    /// Larger than [`MAX_PLANE_CONFIG_BYTES`].
    #[error("plane config of {plane} is {size} bytes, larger than the {max} allowed", max = MAX_PLANE_CONFIG_BYTES)]
    TooLarge {
        /// The plane.
        plane: Plane,
        /// The size found, in bytes.
        size: usize,
    },
    /// Not JSON of the expected shape (a bad image reference or mode lands
    /// here too, with serde's words).
    #[error("plane config of {plane} is not valid: {reason}")]
    Invalid {
        /// The plane.
        plane: Plane,
        /// What is wrong.
        reason: String,
    },
}

impl PlaneConfig {
    /// Parses and validates the value of `config/planes/<plane>`.
    ///
    /// # Errors
    /// [`PlaneConfigError`] when the value is too large, not JSON of this
    /// shape (unknown fields are errors), a mode is not `global` or
    /// `singleton`, a unit name breaks systemd's rules or names one of
    /// deckhand's own units, a unit or image is listed twice, an image
    /// reference is invalid, or a list is longer than its maximum.
    pub fn parse(plane: Plane, value: &[u8]) -> Result<PlaneConfig, PlaneConfigError> {
        if value.len() > MAX_PLANE_CONFIG_BYTES {
            return Err(PlaneConfigError::TooLarge {
                plane,
                size: value.len(),
            });
        }
        let invalid = |reason: String| PlaneConfigError::Invalid { plane, reason };
        let cfg: PlaneConfig = serde_json::from_slice(value).map_err(|e| invalid(e.to_string()))?;
        if cfg.units.len() > MAX_PLANE_UNITS {
            return Err(invalid(format!(
                "{} units, more than the {MAX_PLANE_UNITS} allowed",
                cfg.units.len()
            )));
        }
        if cfg.images.len() > MAX_PLANE_IMAGES {
            return Err(invalid(format!(
                "{} images, more than the {MAX_PLANE_IMAGES} allowed",
                cfg.images.len()
            )));
        }
        let mut names = BTreeSet::new();
        for u in &cfg.units {
            check_unit_name(&u.name)
                .map_err(|why| invalid(format!("unit name {:?}: {why}", u.name)))?;
            if u.name.starts_with("deckhand") {
                return Err(invalid(format!(
                    "unit {:?}: deckhand's own units (deckhand*) cannot be in a plane",
                    u.name
                )));
            }
            if !names.insert(u.name.as_str()) {
                return Err(invalid(format!("unit {:?} is listed twice", u.name)));
            }
        }
        if cfg.ports.len() > MAX_PLANE_PORTS {
            return Err(invalid(format!(
                "{} ports, more than the {MAX_PLANE_PORTS} allowed",
                cfg.ports.len()
            )));
        }
        let mut ports = BTreeSet::new();
        for p in &cfg.ports {
            if p.protocol == crate::firewall::PortProtocol::Tcp && matches!(p.port, 2379 | 2380) {
                return Err(invalid(format!(
                    "port {}/tcp is etcd's: deckhand's firewall decides who reaches it, by role",
                    p.port
                )));
            }
            if !ports.insert((p.port, p.protocol)) {
                return Err(invalid(format!(
                    "port {}/{} is listed twice",
                    p.port, p.protocol
                )));
            }
        }
        let mut images = BTreeSet::new();
        for i in &cfg.images {
            if !images.insert(i) {
                return Err(invalid(format!("image {i} is listed twice")));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_good_config() {
        let cfg = PlaneConfig::parse(
            Plane::Router,
            br#"{"units":[{"name":"demo-router.service","mode":"global"},
                          {"name":"sched@1.service","mode":"singleton"}],
                 "images":["172.29.77.2:5000/deckhand/router:1","redis"]}"#,
        )
        .unwrap();
        assert_eq!(cfg.units.len(), 2);
        assert_eq!(cfg.units[1].mode, UnitMode::Singleton);
        assert_eq!(cfg.images[1].as_str(), "docker.io/library/redis:latest");
        assert_eq!(
            PlaneConfig::parse(Plane::Data, b"{}").unwrap(),
            PlaneConfig::default()
        );
        let cfg = PlaneConfig::parse(
            Plane::Router,
            br#"{"ports":[{"port":443,"protocol":"tcp","from":"any"},
                          {"port":443,"protocol":"udp","from":"cluster"}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.ports.len(), 2);
        assert_eq!(cfg.ports[1].to_string(), "443/udp from cluster");
        // No ports: the document serializes as before.
        assert!(
            !serde_json::to_string(&PlaneConfig::default())
                .unwrap()
                .contains("ports")
        );
    }

    #[test]
    fn rejects_bad_configs_with_the_reason() {
        for (value, words) in [
            (
                r#"{"units":[{"name":"../x.service","mode":"global"}]}"#,
                "contains '/'",
            ),
            (
                r#"{"units":[{"name":"x;rm.service","mode":"global"}]}"#,
                "outside",
            ),
            (
                r#"{"units":[{"name":"x.service","mode":"sometimes"}]}"#,
                "unknown variant",
            ),
            (
                r#"{"units":[{"name":"deckhand-etcd-member.service","mode":"global"}]}"#,
                "deckhand's own",
            ),
            (
                r#"{"units":[{"name":"x.service","mode":"global"},{"name":"x.service","mode":"singleton"}]}"#,
                "listed twice",
            ),
            (r#"{"images":["Bad/Ref"]}"#, "invalid image reference"),
            (r#"{"images":["redis","redis:latest"]}"#, "listed twice"),
            (r#"{"unit":[]}"#, "unknown field"),
            (
                r#"{"ports":[{"port":0,"protocol":"tcp","from":"any"}]}"#,
                "port 0 is outside 1..=65535",
            ),
            (
                r#"{"ports":[{"port":70000,"protocol":"tcp","from":"any"}]}"#,
                "port 70000 is outside 1..=65535",
            ),
            (
                r#"{"ports":[{"port":-1,"protocol":"tcp","from":"any"}]}"#,
                "outside 1..=65535",
            ),
            (
                r#"{"ports":[{"port":53,"protocol":"sctp","from":"any"}]}"#,
                "unknown variant `sctp`",
            ),
            (
                r#"{"ports":[{"port":53,"protocol":"udp","from":"world"}]}"#,
                "unknown variant `world`",
            ),
            (
                r#"{"ports":[{"port":53,"protocol":"udp"}]}"#,
                "missing field `from`",
            ),
            (
                r#"{"ports":[{"port":53,"protocol":"udp","from":"any","to":1}]}"#,
                "unknown field `to`",
            ),
            (
                r#"{"ports":[{"port":53,"protocol":"udp","from":"any"},{"port":53,"protocol":"udp","from":"cluster"}]}"#,
                "port 53/udp is listed twice",
            ),
            ("[", "EOF"),
        ] {
            let e = PlaneConfig::parse(Plane::Control, value.as_bytes())
                .expect_err(value)
                .to_string();
            assert!(e.contains(words), "{value}: {e}");
            assert!(e.starts_with("plane config of control"), "{e}");
        }
    }
}

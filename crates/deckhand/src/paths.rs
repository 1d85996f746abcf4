//! Every file and directory the agent and the CLI use on a node, in one
//! place. The units in `units/` name the same paths; keep them in step.

/// The agent's main config file; its `config.d/*.toml` drop-ins apply after it.
pub const CONFIG_FILE: &str = "/etc/deckhand/config.toml";
/// The agent's state dir (`deckhand.service`'s `StateDirectory=deckhand`).
pub const STATE_DIR: &str = "/var/lib/deckhand";
/// The member unit's environment file, in [`STATE_DIR`]
/// (`units/deckhand-etcd-member.service` reads it).
pub const MEMBER_ENV: &str = "etcd-member.env";
/// The proxy unit's environment file, in [`STATE_DIR`]
/// (`units/deckhand-etcd-proxy.service` reads it).
pub const PROXY_ENV: &str = "etcd-proxy.env";
/// Marker in [`STATE_DIR`]: this node has started its member once (an
/// initial member must not bootstrap a new cluster a second time).
pub const BOOTSTRAPPED: &str = "bootstrapped";
/// The units deckhand started and has not stopped since, in [`STATE_DIR`]:
/// a JSON array of unit names.
pub const MANAGED_UNITS: &str = "units.json";
/// The image cache in [`STATE_DIR`]: the images this node wanted when its
/// agent last looked (see [`crate::images::write_cache`]).
pub const IMAGE_CACHE: &str = "/var/lib/deckhand/images.json";
/// Default etcd member data dir.
pub const DATA_DIR: &str = "/var/lib/deckhand-etcd/member";
/// Where the agent writes each plane unit's ordering drop-in: runtime
/// config, gone at reboot, rewritten before the unit is started.
pub const DROPIN_ROOT: &str = "/run/systemd/system";
/// The drop-in's file name in `<unit>.d/`.
pub const DROPIN_NAME: &str = "50-deckhand.conf";
/// Default Docker daemon socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// This node's id.
pub const MACHINE_ID: &str = "/etc/machine-id";
/// Where a crash test writes the failpoint to die at (feature `failpoints`).
pub const FAILPOINT: &str = "/run/deckhand/failpoint";
/// Where the agent writes the failpoint it died at (feature `failpoints`).
pub const FAILPOINT_HIT: &str = "/run/deckhand/failpoint.hit";

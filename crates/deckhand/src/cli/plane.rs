//! `deckhand plane set|get|delete`: a plane's config (its units and
//! images), validated before anything is written.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use deckhand_model::{
    ImageRef, Plane, PlaneConfig, PlanePort, PlaneUnit, PortFrom, PortProtocol, UnitMode,
};

use super::session::Session;
use crate::connect::Target;
use crate::exit::Failure;

/// `deckhand plane ...`
#[derive(Subcommand)]
pub enum PlaneCommand {
    /// Set a plane's config: its units (global or singleton) and images.
    ///
    /// The value is validated before anything is written: unit names by
    /// systemd's rules (no paths, no shell characters, not deckhand's own
    /// units), image references by Docker's grammar. Every node of the plane
    /// then preseeds the images and runs the units: a global unit on every
    /// node of the plane, a singleton on exactly one (the leader of an etcd
    /// election among the plane's nodes).
    ///
    /// Examples:
    ///   deckhand plane set router --unit router.service=global --image registry.example/router:1.4
    ///   deckhand plane set control --unit scheduler.service=singleton --image registry.example/sched:2
    ///   deckhand plane set router --unit router.service=global --port 443/tcp=any --port 9000/udp=cluster
    ///   deckhand plane set data --file data.json     (JSON: {"units":[{"name":..,"mode":..}],"images":[..]}; - for stdin)
    #[command(verbatim_doc_comment)]
    Set {
        /// control, data or router.
        plane: String,
        /// A unit and its mode, NAME=global or NAME=singleton; repeat for
        /// more units.
        #[arg(long = "unit", value_name = "NAME=MODE")]
        units: Vec<String>,
        /// A Docker image reference the plane's units need (tag or digest);
        /// repeat for more images.
        #[arg(long = "image", value_name = "REFERENCE")]
        images: Vec<String>,
        /// A port the plane's units serve, opened by the host firewall on
        /// the plane's nodes (docs/firewall.md): PORT/PROTOCOL=FROM, e.g.
        /// 443/tcp=any or 9000/udp=cluster; repeat for more ports.
        #[arg(long = "port", value_name = "PORT/PROTOCOL=FROM")]
        ports: Vec<String>,
        /// Read the whole config as JSON from this file (- for stdin)
        /// instead of --unit/--image/--port.
        #[arg(long, conflicts_with_all = ["units", "images", "ports"])]
        file: Option<std::path::PathBuf>,
    },
    /// Print a plane's config (every plane's when none is named).
    ///
    /// A named plane: its stored JSON value. Every plane: one line
    /// `PLANE: VALUE` each, or with --json one JSON object keyed by plane,
    /// each entry `{"revision": N, "config": VALUE, "error": null}`
    /// (`config` null for a plane with no config; `error` the reason every
    /// node rejects a stored value, whose `config` is then the raw text).
    #[command(verbatim_doc_comment)]
    Get {
        /// control, data or router.
        plane: Option<String>,
        /// Every plane as one JSON object (see above).
        #[arg(long)]
        json: bool,
    },
    /// Delete a plane's config: every node stops the plane's units.
    Delete {
        /// control, data or router.
        plane: String,
    },
}

/// Builds a plane config from `--unit`/`--image` or a JSON file, validated.
fn plane_config(
    plane: Plane,
    units: &[String],
    images: &[String],
    ports: &[String],
    file: Option<&Path>,
) -> Result<PlaneConfig> {
    if let Some(path) = file {
        let text = if path == Path::new("-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading the plane config from stdin")?;
            s
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the plane config from {}", path.display()))?
        };
        return Ok(PlaneConfig::parse(plane, text.as_bytes())?);
    }
    if units.is_empty() && images.is_empty() && ports.is_empty() {
        bail!(
            "nothing to set for plane {plane}: give --unit NAME=MODE and --image REFERENCE (or --file); \
             an empty config would stop the plane's units on every node (to do that on purpose: \
             deckhand plane delete {plane})"
        );
    }
    let mut cfg = PlaneConfig::default();
    for u in units {
        let Some((name, mode)) = u.rsplit_once('=') else {
            bail!("--unit {u:?} is not NAME=MODE (e.g. router.service=global)");
        };
        let mode = match mode {
            "global" => UnitMode::Global,
            "singleton" => UnitMode::Singleton,
            other => bail!("--unit {u:?}: unknown mode {other:?} (global or singleton)"),
        };
        cfg.units.push(PlaneUnit {
            name: name.to_string(),
            mode,
        });
    }
    for i in images {
        cfg.images.push(ImageRef::parse(i)?);
    }
    for p in ports {
        cfg.ports.push(port_flag(p)?);
    }
    // The same checks as a value read from etcd.
    let json = serde_json::to_vec(&cfg)?;
    Ok(PlaneConfig::parse(plane, &json)?)
}

/// One `--port PORT/PROTOCOL=FROM`.
fn port_flag(p: &str) -> Result<PlanePort> {
    let shape =
        || format!("--port {p:?} is not PORT/PROTOCOL=FROM (e.g. 443/tcp=any, 9000/udp=cluster)");
    let (pp, from) = p.split_once('=').with_context(shape)?;
    let (port, protocol) = pp.split_once('/').with_context(shape)?;
    let port = match port.parse::<u16>() {
        Ok(n) if n != 0 => n,
        _ => bail!("--port {p:?}: port {port:?} is outside 1..=65535"),
    };
    let protocol = match protocol {
        "tcp" => PortProtocol::Tcp,
        "udp" => PortProtocol::Udp,
        other => bail!("--port {p:?}: unknown protocol {other:?} (tcp or udp)"),
    };
    let from = match from {
        "any" => PortFrom::Any,
        "cluster" => PortFrom::Cluster,
        other => bail!("--port {p:?}: unknown source {other:?} (any or cluster)"),
    };
    Ok(PlanePort {
        port,
        protocol,
        from,
    })
}

/// `deckhand plane set|get|delete`.
///
/// # Errors
/// [`crate::exit::USAGE`] for an unknown plane or an invalid config
/// (checked before connecting: nothing is written); [`crate::exit::FAILED`]
/// when no endpoint answers, a request fails, or `get` of one plane finds
/// no config.
pub async fn plane(target: Target, cmd: PlaneCommand) -> Result<(), Failure> {
    // Validate before connecting: bad input changes nothing.
    let set = match &cmd {
        PlaneCommand::Set {
            plane,
            units,
            images,
            ports,
            file,
        } => {
            let p: Plane = plane.parse().map_err(Failure::usage)?;
            let config =
                plane_config(p, units, images, ports, file.as_deref()).map_err(Failure::usage)?;
            Some((p, config))
        }
        PlaneCommand::Get { plane: Some(p), .. } | PlaneCommand::Delete { plane: p } => {
            p.parse::<Plane>().map_err(Failure::usage)?;
            None
        }
        PlaneCommand::Get { plane: None, .. } => None,
    };
    run(target, cmd, set).await.map_err(Failure::failed)
}

/// `plane` once its arguments are valid (`set`: the config to write).
async fn run(target: Target, cmd: PlaneCommand, set: Option<(Plane, PlaneConfig)>) -> Result<()> {
    let session = Session::connect(target).await?;
    let store = &session.store;
    match cmd {
        PlaneCommand::Set { .. } => {
            let (plane, config) = set.expect("validated above");
            let rev = store.put_plane_config(plane, &config).await?;
            let json = serde_json::to_string(&config)?;
            outln!("plane {plane} set at revision {rev}: {json}");
        }
        PlaneCommand::Get {
            plane: None,
            json: true,
        } => {
            let mut all = serde_json::Map::new();
            for p in Plane::ALL {
                let raw = store.plane_config_raw(p).await?;
                all.insert(
                    p.to_string(),
                    plane_json(p, raw.as_ref().map(|r| (r.value.as_slice(), r.revision))),
                );
            }
            outln!("{}", serde_json::to_string_pretty(&all)?);
        }
        PlaneCommand::Get { plane, .. } => {
            let planes: Vec<Plane> = match plane {
                Some(p) => vec![p.parse()?],
                None => Plane::ALL.to_vec(),
            };
            let one = planes.len() == 1;
            for p in planes {
                match store.plane_config_raw(p).await? {
                    Some(raw) => {
                        let v = raw.value.as_slice();
                        if one {
                            outln!("{}", String::from_utf8_lossy(v));
                        } else {
                            outln!("{p}: {}", String::from_utf8_lossy(v));
                        }
                        if let Err(e) = PlaneConfig::parse(p, v) {
                            eprintln!(
                                "deckhand: warning: this value is rejected by every node (revision {}): {e}",
                                raw.revision
                            );
                        }
                    }
                    None if one => bail!("plane {p} has no config ({})", store.keyspace().plane(p)),
                    None => outln!("{p}: (no config)"),
                }
            }
        }
        PlaneCommand::Delete { plane } => {
            let p: Plane = plane.parse()?;
            if !store.delete_plane_config(p).await? {
                outln!("plane {p} had no config");
            } else {
                outln!("plane {p} config deleted: its nodes stop its units");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plane_config_from_flags_is_validated_like_a_stored_one() {
        let c = plane_config(
            Plane::Router,
            &["router.service=global".into()],
            &["registry.example/router:1.4".into()],
            &["443/tcp=any".into(), "53/udp=cluster".into()],
            None,
        )
        .unwrap();
        assert_eq!(c.units[0].mode, UnitMode::Global);
        assert_eq!(c.ports[1].to_string(), "53/udp from cluster");
        let port_err = |p: &str| {
            format!(
                "{:#}",
                plane_config(Plane::Router, &[], &[], &[p.to_string()], None).unwrap_err()
            )
        };
        assert!(port_err("443").contains("is not PORT/PROTOCOL=FROM"));
        assert!(port_err("0/tcp=any").contains("outside 1..=65535"));
        assert!(port_err("70000/tcp=any").contains("outside 1..=65535"));
        assert!(port_err("53/sctp=any").contains("unknown protocol"));
        assert!(port_err("53/udp=world").contains("unknown source"));
        assert!(port_err("2380/tcp=any").contains("etcd's"));
        let err = |u: &[&str], i: &[&str]| {
            let u: Vec<String> = u.iter().map(|s| s.to_string()).collect();
            let i: Vec<String> = i.iter().map(|s| s.to_string()).collect();
            format!(
                "{:#}",
                plane_config(Plane::Router, &u, &i, &[], None).unwrap_err()
            )
        };
        assert!(err(&[], &[]).contains("deckhand plane delete router"));
        assert!(err(&["router.service"], &[]).contains("is not NAME=MODE"));
        assert!(err(&["router.service=sometimes"], &[]).contains("unknown mode"));
        assert!(err(&["deckhand.service=global"], &[]).contains("deckhand"));
        assert!(!err(&["r.service=global"], &["Not A Ref"]).is_empty());
    }
}

/// One plane's entry in `plane get --json`: its stored value (`None`: no
/// config) and the revision it was written at.
fn plane_json(plane: Plane, stored: Option<(&[u8], i64)>) -> serde_json::Value {
    match stored {
        None => serde_json::json!({"revision": null, "config": null, "error": null}),
        Some((v, revision)) => match PlaneConfig::parse(plane, v) {
            Ok(_) => serde_json::json!({
                "revision": revision,
                "config": serde_json::from_slice::<serde_json::Value>(v).unwrap_or(serde_json::Value::Null),
                "error": null,
            }),
            Err(e) => serde_json::json!({
                "revision": revision,
                "config": String::from_utf8_lossy(v),
                "error": e.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn plane_get_json_entries() {
        let none = plane_json(Plane::Data, None);
        assert!(none["config"].is_null() && none["revision"].is_null());
        let bad = plane_json(Plane::Data, Some((b"{not json", 7)));
        assert_eq!(bad["revision"], 7);
        assert_eq!(bad["config"], "{not json");
        assert!(bad["error"].as_str().is_some_and(|e| !e.is_empty()));
        let good = plane_json(
            Plane::Router,
            Some((
                br#"{"units":[{"name":"router.service","mode":"global"}]}"#,
                9,
            )),
        );
        assert_eq!(good["revision"], 9);
        assert_eq!(good["config"]["units"][0]["name"], "router.service");
        assert!(good["error"].is_null());
    }
}

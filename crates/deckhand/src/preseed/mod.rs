//! `deckhand preseed`: makes the images this node needs present in the local
//! Docker, once, with the agent's logic (`deckhand_images`): for a boot
//! script or `deckhand-preseed.service`, before the plane units start.
//!
//! The image list comes from the command line, else from etcd (this node's
//! role key → its planes → their plane configs, plus the cluster config's
//! `upcoming`: `deckhand_plan::wanted_images`), else, when etcd does not
//! answer within [`ETCD_TIMEOUT`], from the image cache the agent keeps
//! ([`crate::paths::IMAGE_CACHE`], see [`crate::images::write_cache`]).
//! Its output (event lines, progress bars, summary) is [`output`].

pub mod output;

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Args;
use deckhand_images::Preseeder;
use deckhand_model::{ClusterConfig, ImageRef, Keyspace};
use tokio::sync::mpsc;

use self::output::{Source, age, print_events, summary_json, summary_line};
use crate::exit::Failure;
use crate::images::{pull_options, read_cache};
use crate::store::Store;
use crate::{config, connect, identity, paths};

/// How long `deckhand preseed` waits for etcd (connect and every read
/// together) before it falls back to [`crate::paths::IMAGE_CACHE`].
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// `deckhand preseed` arguments.
#[derive(Args)]
#[command(
    about = "Make the images this node needs present in the local Docker, once (exit 1 if one fails)",
    long_about = "Make the Docker images this node needs present in the local Docker daemon, \
once, then exit: the same logic as the agent's preseed, for a boot script or \
deckhand-preseed.service (which runs it before the plane units start, so a unit never \
waits for a pull).

Which images:
  deckhand preseed IMAGE...   exactly these (etcd is not read)
  deckhand preseed            this node's: its role key (/etc/machine-id) gives its planes, \
each plane's config (<prefix>/config/planes/<plane>) lists images, and the cluster config \
(<prefix>/config/cluster) adds its `upcoming` images (and every plane's with \
`preseed_all_planes`). An invalid plane config is reported and skipped. If etcd does not \
answer within 5 s, the list the agent last wrote to /var/lib/deckhand/images.json is used \
instead, and the output says so.

How: an image is present when the daemon has it by digest (for a reference with \
@sha256:...) or by name:tag; a present image is never pulled, so a second run downloads \
no layer. Missing images are pulled N at a time (--concurrency, default the cluster \
config's preseed_concurrency, else 3), each attempt abandoned after \
docker.pull_no_progress_seconds without progress, retried with backoff up to \
docker.pull_attempts times within docker.pull_deadline_seconds, and only while Docker's \
root dir has docker.min_free_bytes free. Registry credentials come from docker.config \
(a Docker config.json). These [docker] settings are read from the agent's config \
(--config); without a config file the defaults apply.

Output: progress bars on a terminal; otherwise one line per image event \
(present, pulling, retrying, pulled in 3.1 s (8.2 MiB, 2 layers), FAILED: reason); then a \
summary: 10 images: 7 present, 3 pulled, 0 failed in 4.2 s. --json prints the summary as \
JSON on stdout (event lines go to stderr).

Exit status: 0 every image is present; 1 an image could not be pulled (or the Docker \
daemon, etcd and the cache all failed); 2 bad arguments; 78 a configuration error \
(invalid config file, missing docker.config file).

Examples:
  deckhand preseed
  deckhand preseed --no-etcd --json
  deckhand preseed registry.example:5000/platform/router:1.4.2 redis:7"
)]
pub struct PreseedArgs {
    /// Images to make present (Docker references: redis:7,
    /// registry.example:5000/team/app@sha256:...). Default: this node's,
    /// from etcd or the agent's image cache.
    images: Vec<String>,
    /// Pulls at once, 1..=16. Default: the cluster config's
    /// preseed_concurrency, else 3.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16))]
    concurrency: Option<u16>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Do not read etcd: use the images given, else the agent's image cache.
    #[arg(long)]
    no_etcd: bool,
    /// The agent's image cache.
    #[arg(long, default_value = paths::IMAGE_CACHE, value_name = "PATH")]
    cache: PathBuf,
}

/// `deckhand preseed`.
///
/// # Errors
/// [`crate::exit::CONFIG`]: the agent config is invalid or names a missing
/// `docker.config` file (a config that exists is always read: its `[docker]`
/// settings decide how to pull); [`crate::exit::USAGE`]: an invalid image
/// reference; [`crate::exit::FAILED`]: an image could not be made present, or
/// neither etcd nor the image cache could say which images.
pub async fn run(
    cfg: &Path,
    endpoints: Vec<String>,
    prefix: Option<String>,
    args: PreseedArgs,
) -> Result<(), Failure> {
    // The config: its [docker] settings, key prefix and endpoints. No file
    // is fine (defaults); a broken one is a config error.
    let settings = config::load_optional(cfg).map_err(Failure::config)?;
    let docker = settings
        .as_ref()
        .map(|s| s.docker.clone())
        .unwrap_or_default();
    if let Some(c) = &docker.config
        && !c.is_file()
    {
        return Err(Failure::config(anyhow!(
            "docker.config names {}, which does not exist: create that Docker config.json \
             (docker login writes one) or remove docker.config from {}",
            c.display(),
            cfg.display()
        )));
    }

    let mut images = BTreeSet::new();
    for i in &args.images {
        match ImageRef::parse(i) {
            Ok(r) => {
                images.insert(r);
            }
            Err(e) => return Err(Failure::usage(e)),
        }
    }
    let mut concurrency = args.concurrency.map(usize::from);
    let source = if !args.images.is_empty() {
        Source::Arguments
    } else {
        let etcd = if args.no_etcd {
            Err(anyhow!("--no-etcd"))
        } else {
            let prefix = prefix
                .or_else(|| settings.as_ref().map(|s| s.key_prefix.clone()))
                .unwrap_or_else(|| Keyspace::DEFAULT_PREFIX.to_string());
            let mut eps = endpoints;
            if eps.is_empty() {
                eps.push(connect::LOCALHOST_CLIENT_URL.to_string());
                eps.extend(settings.iter().flat_map(|s| s.endpoints.iter().cloned()));
            }
            let ks = Keyspace::new(&prefix);
            // The node's own TLS files, for https:// endpoints (localhost
            // is tried first, in plaintext).
            let tls = settings
                .as_ref()
                .and_then(|s| s.tls.as_ref())
                .and_then(|t| {
                    crate::tls::CliFiles::default()
                        .load(Some(t), crate::agent::observe::unix_now())
                        .map_err(|e| eprintln!("deckhand preseed: warning: {e:#}"))
                        .ok()
                });
            let read = async { from_etcd(&eps, &ks, &identity::machine_id()?, tls.as_ref()).await };
            match tokio::time::timeout(ETCD_TIMEOUT, read).await {
                Ok(r) => r,
                Err(_) => Err(anyhow!(
                    "etcd ({}) did not answer within {} s",
                    eps.join(", "),
                    ETCD_TIMEOUT.as_secs()
                )),
            }
        };
        match etcd {
            Ok((wanted, cluster_concurrency)) => {
                images = wanted;
                concurrency = concurrency.or(Some(cluster_concurrency));
                Source::Etcd
            }
            Err(etcd_err) => match read_cache(&args.cache) {
                Ok(cached) => {
                    if !args.no_etcd {
                        eprintln!(
                            "deckhand preseed: {etcd_err:#}; using the image list the agent last wrote to {}{}",
                            args.cache.display(),
                            age(&args.cache)
                        );
                    }
                    images = cached;
                    Source::Cache
                }
                Err(cache_err) => {
                    let why = if args.no_etcd {
                        format!("{cache_err:#}")
                    } else {
                        format!("{etcd_err:#}, and {cache_err:#}")
                    };
                    return Err(Failure::failed(anyhow!(
                        "cannot tell which images this node needs: {why}. Name the images \
                         on the command line, or run again once etcd answers"
                    )));
                }
            },
        }
    };
    let concurrency = concurrency.unwrap_or(3);

    let preseeder = Preseeder::connect(&docker.socket, pull_options(&docker, concurrency))
        .await
        .map_err(Failure::failed)?;
    let wanted: Vec<ImageRef> = images.into_iter().collect();
    let start = Instant::now();
    let (tx, rx) = mpsc::unbounded_channel();
    let terminal = !args.json && std::io::stderr().is_terminal();
    let printer = tokio::spawn(print_events(rx, terminal, args.json));
    let report = preseeder.ensure(&wanted, tx).await;
    let _ = printer.await;
    let elapsed = start.elapsed();
    if args.json {
        let out = summary_json(&report, wanted.len(), source, elapsed);
        let text = serde_json::to_string_pretty(&out).map_err(Failure::failed)?;
        println!("{text}");
    } else {
        println!("{}", summary_line(&report, wanted.len(), elapsed));
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        // Each failure was printed with its reason.
        Err(Failure::failed(anyhow!(
            "{} of {} images could not be made present",
            report.failed.len(),
            wanted.len()
        )))
    }
}

/// Reads node `id`'s wanted images and the cluster's preseed concurrency
/// from etcd: its role key's planes, their plane configs (an invalid one is
/// reported on stderr and skipped) and the cluster config's `upcoming`
/// (an invalid cluster config: reported, the defaults apply).
///
/// # Errors
/// No endpoint answered, a read failed, or this node's role key is invalid.
async fn from_etcd(
    endpoints: &[String],
    ks: &Keyspace,
    id: &str,
    tls: Option<&deckhand_etcd::Tls>,
) -> Result<(BTreeSet<ImageRef>, usize)> {
    let client = connect::first_answering(endpoints, Duration::from_secs(2), tls).await?;
    let store = Store::new(client, ks.clone(), connect::CLI_REQUEST_TIMEOUT);
    let planes = store.role(id).await?.map(|r| r.planes).unwrap_or_default();
    let cluster = match store.cluster_config().await {
        Ok((c, _)) => c,
        Err(e)
            if e.chain()
                .any(|c| c.is::<deckhand_model::ClusterConfigError>()) =>
        {
            eprintln!("deckhand preseed: {e:#}; using the defaults");
            ClusterConfig::default()
        }
        Err(e) => return Err(e),
    };
    let configs = store.plane_configs().await?;
    for r in &configs.rejected {
        eprintln!("deckhand preseed: skipping {r}");
    }
    Ok((
        deckhand_plan::wanted_images(&planes, &configs.valid, &cluster),
        cluster.preseed_concurrency,
    ))
}

#[cfg(test)]
mod tests {
    use deckhand_model::Plane;

    use super::*;

    /// The image list from a real etcd (Debian's etcd-server, on free
    /// loopback ports): the node's planes' images and the upcoming ones,
    /// not the other planes', an invalid plane config skipped.
    #[tokio::test]
    async fn reads_the_wanted_images_from_etcd() {
        let etcd = crate::testing::Etcd::start().await;
        let eps = [etcd.url.clone()];
        let mut c = etcd.client().await;
        let ks = Keyspace::new("/t");
        let id = "0123456789abcdef0123456789abcdef";
        for (k, v) in [
            (
                ks.role(id),
                r#"{"etcd":"proxy","planes":["router","data"]}"#,
            ),
            (
                ks.plane(Plane::Router),
                r#"{"images":["127.0.0.1:5000/r:1","redis:7"]}"#,
            ),
            (
                ks.plane(Plane::Control),
                r#"{"images":["127.0.0.1:5000/c:1"]}"#,
            ),
            (ks.plane(Plane::Data), r#"{"images":["Not A Ref"]}"#),
            (
                ks.cluster_config(),
                r#"{"upcoming":["127.0.0.1:5000/r:2"],"preseed_concurrency":5}"#,
            ),
        ] {
            c.put(k, v, None).await.unwrap();
        }
        let (wanted, concurrency) = from_etcd(&eps, &ks, id, None).await.unwrap();
        let names: Vec<&str> = wanted.iter().map(ImageRef::as_str).collect();
        assert_eq!(
            names,
            [
                "127.0.0.1:5000/r:1",
                "127.0.0.1:5000/r:2",
                "docker.io/library/redis:7"
            ]
        );
        assert_eq!(concurrency, 5);
        // A node without a role key wants the upcoming images only.
        let (wanted, _) = from_etcd(&eps, &ks, &"f".repeat(32), None).await.unwrap();
        assert_eq!(wanted.len(), 1);
    }
}

//! `deckhand preseed`: makes the images this node needs present in the local
//! Docker, once, with the agent's logic (`deckhand_images`): for a boot
//! script or `deckhand-preseed.service`, before the plane units start.
//!
//! The image list comes from the command line, else from etcd (this node's
//! role key → its planes → their plane configs, plus the cluster config's
//! `upcoming`: `deckhand_plan::wanted_images`), else, when etcd does not
//! answer within [`ETCD_TIMEOUT`], from the image cache the agent keeps
//! ([`CACHE_FILE`], see [`write_cache`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use deckhand_images::{Event, EventKind, Preseeder, PullOptions, Report};
use deckhand_model::{ClusterConfig, ImageRef, Keyspace, Plane, PlaneConfig, Role};
use etcd_client::GetOptions;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{self, DockerSettings};

/// The image cache: the images this node wanted when its agent last looked,
/// a JSON array of normalized references, e.g.
/// `["registry.example:5000/platform/router:1.4.2", "docker.io/library/redis:7"]`.
/// Written by the agent ([`write_cache`]) whenever the set changes; read by
/// `deckhand preseed` when etcd does not answer (at boot, before the local
/// etcd or the network is up).
pub const CACHE_FILE: &str = "/var/lib/deckhand/images.json";

/// How long `deckhand preseed` waits for etcd (connect and every read
/// together) before it falls back to [`CACHE_FILE`].
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit status when an image could not be made present, or the image list
/// could not be had.
pub const EXIT_FAILED: u8 = 1;
/// Exit status for a bad argument (an invalid image reference).
pub const EXIT_USAGE: u8 = 2;

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
    #[arg(long, default_value = CACHE_FILE, value_name = "PATH")]
    cache: PathBuf,
}

/// The pull options of the `[docker]` settings, with `concurrency` pulls at
/// once (the cluster config's `preseed_concurrency`).
pub fn pull_options(docker: &DockerSettings, concurrency: usize) -> PullOptions {
    PullOptions {
        concurrency,
        no_progress_timeout: Duration::from_secs(docker.pull_no_progress_seconds),
        deadline: Duration::from_secs(docker.pull_deadline_seconds),
        attempts: docker.pull_attempts,
        min_free_bytes: docker.min_free_bytes,
        docker_config: docker.config.clone(),
        ..PullOptions::default()
    }
}

/// Writes the image cache: `images` as a JSON array of references,
/// atomically (a reader never sees half a file), mode 0644, creating the
/// parent directory. Returns whether the file changed.
///
/// # Errors
/// An I/O error creating the directory or writing the file, with the path.
pub fn write_cache(path: &Path, images: &BTreeSet<ImageRef>) -> Result<bool> {
    let mut json = serde_json::to_vec_pretty(images)?;
    json.push(b'\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    deckhand_systemd::write_atomic(path, &json, 0o644)
        .with_context(|| format!("writing the image cache {}", path.display()))
}

/// Reads the image cache written by [`write_cache`].
///
/// # Errors
/// The file is missing or unreadable, or is not a JSON array of valid image
/// references; the message names the path.
pub fn read_cache(path: &Path) -> Result<BTreeSet<ImageRef>> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the image cache {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| {
        format!(
            "the image cache {} is not a JSON array of image references",
            path.display()
        )
    })
}

/// Where the image list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Source {
    Arguments,
    Etcd,
    Cache,
}

/// `deckhand preseed`.
pub async fn run(
    cfg: &Path,
    endpoints: Vec<String>,
    prefix: Option<String>,
    args: PreseedArgs,
) -> ExitCode {
    let fail = |code: u8, e: anyhow::Error| {
        eprintln!("deckhand preseed: {e:#}");
        ExitCode::from(code)
    };
    // The config: its [docker] settings, key prefix and endpoints. No file
    // is fine (defaults); a broken one is a config error.
    let settings = if cfg.exists() {
        match config::load(cfg) {
            Ok(s) => Some(s),
            Err(e) => return fail(crate::EXIT_CONFIG, e),
        }
    } else {
        None
    };
    let docker = settings
        .as_ref()
        .map(|s| s.docker.clone())
        .unwrap_or_default();
    if let Some(c) = &docker.config
        && !c.is_file()
    {
        return fail(
            crate::EXIT_CONFIG,
            anyhow::anyhow!(
                "docker.config names {}, which does not exist: create that Docker config.json \
                 (docker login writes one) or remove docker.config from {}",
                c.display(),
                cfg.display()
            ),
        );
    }

    let mut images = BTreeSet::new();
    for i in &args.images {
        match ImageRef::parse(i) {
            Ok(r) => {
                images.insert(r);
            }
            Err(e) => return fail(EXIT_USAGE, e.into()),
        }
    }
    let mut concurrency = args.concurrency.map(usize::from);
    let source = if !args.images.is_empty() {
        Source::Arguments
    } else {
        let etcd = if args.no_etcd {
            Err(anyhow::anyhow!("--no-etcd"))
        } else {
            let prefix = prefix
                .or_else(|| settings.as_ref().map(|s| s.key_prefix.clone()))
                .unwrap_or_else(|| Keyspace::DEFAULT_PREFIX.to_string());
            let mut eps = endpoints;
            if eps.is_empty() {
                eps.push(crate::local::LOCALHOST_CLIENT_URL.to_string());
                eps.extend(settings.iter().flat_map(|s| s.endpoints.iter().cloned()));
            }
            let ks = Keyspace::new(&prefix);
            let read = async { from_etcd(&eps, &ks, &crate::identity::machine_id()?).await };
            match tokio::time::timeout(ETCD_TIMEOUT, read).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!(
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
                    return fail(
                        EXIT_FAILED,
                        anyhow::anyhow!(
                            "cannot tell which images this node needs: {why}. Name the images \
                             on the command line, or run again once etcd answers"
                        ),
                    );
                }
            },
        }
    };
    let concurrency = concurrency.unwrap_or(3);

    let preseeder =
        match Preseeder::connect(&docker.socket, pull_options(&docker, concurrency)).await {
            Ok(p) => p,
            Err(e) => return fail(EXIT_FAILED, e.into()),
        };
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
        match serde_json::to_string_pretty(&out) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(EXIT_FAILED, e.into()),
        }
    } else {
        println!("{}", summary_line(&report, wanted.len(), elapsed));
    }
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `, written 12 min ago` from the file's modification time.
fn age(path: &Path) -> String {
    let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return String::new();
    };
    let Ok(ago) = modified.elapsed() else {
        return String::new();
    };
    let s = ago.as_secs();
    let words = match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86400),
    };
    format!(" (written {words} ago)")
}

/// Reads node `id`'s wanted images and the cluster's preseed concurrency
/// from etcd.
async fn from_etcd(
    endpoints: &[String],
    ks: &Keyspace,
    id: &str,
) -> Result<(BTreeSet<ImageRef>, usize)> {
    let mut client = crate::cli::first_answering(endpoints, Duration::from_secs(2)).await?;
    let role = client
        .get(ks.role(id), None)
        .await
        .context("reading this node's role key")?;
    let planes: BTreeSet<Plane> = match role.kvs().first() {
        Some(kv) => Role::parse(kv.value())
            .map(|r| r.planes)
            .with_context(|| format!("this node's role key {} is invalid", ks.role(id)))?,
        None => BTreeSet::new(),
    };
    let cluster = client
        .get(ks.cluster_config(), None)
        .await
        .context("reading the cluster config")?;
    let cluster = match cluster.kvs().first() {
        Some(kv) => ClusterConfig::parse(kv.value()).unwrap_or_else(|e| {
            eprintln!("deckhand preseed: {e}; using the defaults");
            ClusterConfig::default()
        }),
        None => ClusterConfig::default(),
    };
    let resp = client
        .get(ks.planes(), Some(GetOptions::new().with_prefix()))
        .await
        .context("reading the plane configs")?;
    let mut configs = BTreeMap::new();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let name = key.strip_prefix(&ks.planes()).unwrap_or(&key);
        let Ok(plane) = name.parse::<Plane>() else {
            eprintln!("deckhand preseed: ignoring {key}: {name:?} is not a plane");
            continue;
        };
        match PlaneConfig::parse(plane, kv.value()) {
            Ok(c) => {
                configs.insert(plane, c);
            }
            Err(e) => eprintln!("deckhand preseed: skipping {key}: {e}"),
        }
    }
    Ok((
        deckhand_plan::wanted_images(&planes, &configs, &cluster),
        cluster.preseed_concurrency,
    ))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The line for one event, or `None` for events shown only as progress.
fn event_line(e: &Event) -> Option<String> {
    let i = &e.image;
    Some(match &e.kind {
        EventKind::Checking | EventKind::Progress(_) | EventKind::Waiting => return None,
        EventKind::Present => format!("present   {i}"),
        EventKind::Pulling { attempt: 1 } => format!("pulling   {i}"),
        EventKind::Pulling { attempt } => format!("pulling   {i} (attempt {attempt})"),
        EventKind::Retrying {
            attempt,
            reason,
            delay,
        } => format!(
            "retrying  {i} in {:.1} s: attempt {attempt} failed: {reason}",
            delay.as_secs_f64()
        ),
        EventKind::Pulled {
            elapsed,
            bytes,
            layers_downloaded,
            layers_existing,
        } => format!(
            "pulled    {i} in {:.1} s ({}, {}{})",
            elapsed.as_secs_f64(),
            mib(*bytes),
            plural(u64::from(*layers_downloaded), "layer"),
            if *layers_existing > 0 {
                format!(", {layers_existing} already present")
            } else {
                String::new()
            }
        ),
        EventKind::Failed { reason } => format!("FAILED    {i}: {reason}"),
    })
}

/// Prints events: progress bars on a terminal, else one line each (on
/// stderr when stdout carries JSON).
async fn print_events(mut rx: mpsc::UnboundedReceiver<Event>, terminal: bool, json: bool) {
    if !terminal {
        while let Some(e) = rx.recv().await {
            if let Some(line) = event_line(&e) {
                if json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
        }
        return;
    }
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let multi = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let mut bars: BTreeMap<ImageRef, ProgressBar> = BTreeMap::new();
    while let Some(e) = rx.recv().await {
        match &e.kind {
            EventKind::Pulling { attempt } => {
                let bar = bars.entry(e.image.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(style.clone());
                    b.set_prefix(e.image.to_string());
                    b.enable_steady_tick(Duration::from_millis(200));
                    b
                });
                bar.set_position(0);
                bar.set_message(if *attempt > 1 {
                    format!("attempt {attempt}")
                } else {
                    String::new()
                });
            }
            EventKind::Progress(p) => {
                if let Some(bar) = bars.get(&e.image) {
                    bar.set_length(p.total_bytes.max(p.bytes));
                    bar.set_position(p.bytes);
                    bar.set_message(format!(
                        "{} {}/{} layers",
                        p.status.to_lowercase(),
                        p.layers_downloaded + p.layers_existing,
                        p.layers
                    ));
                }
            }
            EventKind::Retrying { .. } => {
                if let (Some(bar), Some(line)) = (bars.get(&e.image), event_line(&e)) {
                    bar.set_message("waiting to retry");
                    let _ = multi.println(line);
                }
            }
            EventKind::Pulled { .. } | EventKind::Failed { .. } | EventKind::Present => {
                if let Some(bar) = bars.remove(&e.image) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                if let Some(line) = event_line(&e) {
                    let _ = multi.println(line);
                }
            }
            EventKind::Checking | EventKind::Waiting => {}
        }
    }
    let _ = multi.clear();
}

/// `10 images: 7 present, 3 pulled, 0 failed in 4.2 s`.
fn summary_line(r: &Report, wanted: usize, elapsed: Duration) -> String {
    format!(
        "{}: {} present, {} pulled, {} failed in {:.1} s",
        plural(wanted as u64, "image"),
        r.present.len() + r.joined.len(),
        r.pulled.len(),
        r.failed.len(),
        elapsed.as_secs_f64()
    )
}

#[derive(Serialize)]
struct SummaryJson {
    source: Source,
    images: usize,
    present: Vec<String>,
    pulled: Vec<PulledJson>,
    failed: Vec<FailedJson>,
    layers_downloaded: u64,
    seconds: f64,
}

#[derive(Serialize)]
struct PulledJson {
    image: String,
    seconds: f64,
    bytes: u64,
    layers_downloaded: u32,
    layers_existing: u32,
}

#[derive(Serialize)]
struct FailedJson {
    image: String,
    reason: String,
}

fn summary_json(r: &Report, wanted: usize, source: Source, elapsed: Duration) -> SummaryJson {
    SummaryJson {
        source,
        images: wanted,
        present: r
            .present
            .iter()
            .chain(&r.joined)
            .map(ToString::to_string)
            .collect(),
        pulled: r
            .pulled
            .iter()
            .map(|p| PulledJson {
                image: p.image.to_string(),
                seconds: p.elapsed.as_secs_f64(),
                bytes: p.bytes,
                layers_downloaded: p.layers_downloaded,
                layers_existing: p.layers_existing,
            })
            .collect(),
        failed: r
            .failed
            .iter()
            .map(|f| FailedJson {
                image: f.image.to_string(),
                reason: f.reason.clone(),
            })
            .collect(),
        layers_downloaded: r.layers_downloaded,
        seconds: elapsed.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deckhand_images::Pulled;

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn cache_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/images.json");
        let set: BTreeSet<ImageRef> = [img("redis:7"), img("127.0.0.1:5000/a/b:1")].into();
        assert!(write_cache(&path, &set).unwrap());
        assert!(
            !write_cache(&path, &set).unwrap(),
            "unchanged: not rewritten"
        );
        assert_eq!(read_cache(&path).unwrap(), set);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"docker.io/library/redis:7\""), "{text}");
        let e = format!(
            "{:#}",
            read_cache(&dir.path().join("none.json")).unwrap_err()
        );
        assert!(
            e.contains("cannot read the image cache") && e.contains("none.json"),
            "{e}"
        );
        std::fs::write(&path, "[\"Bad Ref\"]").unwrap();
        let e = format!("{:#}", read_cache(&path).unwrap_err());
        assert!(e.contains("not a JSON array of image references"), "{e}");
    }

    #[test]
    fn pull_options_follow_the_docker_settings() {
        let d = DockerSettings {
            socket: "/run/docker.sock".into(),
            config: Some("/etc/deckhand/docker.json".into()),
            min_free_bytes: 5,
            pull_no_progress_seconds: 30,
            pull_deadline_seconds: 600,
            pull_attempts: 4,
        };
        let o = pull_options(&d, 7);
        assert_eq!(o.concurrency, 7);
        assert_eq!(o.no_progress_timeout, Duration::from_secs(30));
        assert_eq!(o.deadline, Duration::from_secs(600));
        assert_eq!(o.attempts, 4);
        assert_eq!(o.min_free_bytes, 5);
        assert_eq!(
            o.docker_config,
            Some(PathBuf::from("/etc/deckhand/docker.json"))
        );
        // The config's defaults are the library's.
        let o = pull_options(&DockerSettings::default(), 3);
        assert_eq!(o, PullOptions::default());
    }

    /// The image list from a real etcd (Debian's etcd-server, on free
    /// loopback ports): the node's planes' images and the upcoming ones,
    /// not the other planes', an invalid plane config skipped.
    #[tokio::test]
    async fn reads_the_wanted_images_from_etcd() {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let dir = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = (free(), free());
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _etcd = Kill(
            std::process::Command::new("etcd")
                .args(["--name", "t", "--data-dir"])
                .arg(dir.path().join("data"))
                .args([
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args(["--initial-cluster", &format!("t={peer}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("these tests need etcd (Debian's etcd-server; integration/prereqs)"),
        );
        let eps = [url.clone()];
        let mut client = None;
        for _ in 0..100 {
            if let Ok(c) = crate::cli::first_answering(&eps, Duration::from_secs(2)).await {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut c = client.expect("etcd did not answer within 10 s");
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
        let (wanted, concurrency) = from_etcd(&eps, &ks, id).await.unwrap();
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
        let (wanted, _) = from_etcd(&eps, &ks, &"f".repeat(32)).await.unwrap();
        assert_eq!(wanted.len(), 1);
    }

    #[test]
    fn lines_and_summary() {
        let e = |kind| Event {
            image: img("redis:7"),
            kind,
        };
        assert_eq!(
            event_line(&e(EventKind::Pulled {
                elapsed: Duration::from_millis(3100),
                bytes: 8 * 1024 * 1024 + 200 * 1024,
                layers_downloaded: 2,
                layers_existing: 0
            }))
            .unwrap(),
            "pulled    docker.io/library/redis:7 in 3.1 s (8.2 MiB, 2 layers)"
        );
        assert_eq!(
            event_line(&e(EventKind::Pulled {
                elapsed: Duration::from_millis(3100),
                bytes: 1024 * 1024,
                layers_downloaded: 1,
                layers_existing: 1
            }))
            .unwrap(),
            "pulled    docker.io/library/redis:7 in 3.1 s (1.0 MiB, 1 layer, 1 already present)"
        );
        assert_eq!(
            event_line(&e(EventKind::Failed {
                reason: "no progress for 60 s".into()
            }))
            .unwrap(),
            "FAILED    docker.io/library/redis:7: no progress for 60 s"
        );
        assert!(event_line(&e(EventKind::Checking)).is_none());
        let r = Report {
            present: vec![img("a"), img("b")],
            pulled: vec![Pulled {
                image: img("c"),
                elapsed: Duration::from_secs(1),
                bytes: 1,
                layers_downloaded: 1,
                layers_existing: 0,
            }],
            ..Default::default()
        };
        assert_eq!(
            summary_line(&r, 3, Duration::from_millis(4200)),
            "3 images: 2 present, 1 pulled, 0 failed in 4.2 s"
        );
        let j = serde_json::to_value(summary_json(&r, 3, Source::Cache, Duration::ZERO)).unwrap();
        assert_eq!(j["source"], "cache");
        assert_eq!(j["pulled"][0]["image"], "docker.io/library/c:latest");
    }
}

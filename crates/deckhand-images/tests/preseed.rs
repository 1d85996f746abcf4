//! The preseeder against the host's Docker daemon and a real registry
//! (Debian's docker-registry on a loopback port), with images built FROM
//! scratch here. See `common/mod.rs`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Images, Registry, SOCKET, StallingProxy, login, require_docker, unique};
use deckhand_images::{Event, EventKind, Preseeder, PullOptions, Report};
use deckhand_model::ImageRef;
use tokio::sync::mpsc;

fn img(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

/// Options for tests: short retry delays.
fn opts() -> PullOptions {
    PullOptions {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..PullOptions::default()
    }
}

/// Runs `ensure` and collects its events.
async fn ensure(p: &Preseeder, images: &[ImageRef]) -> (Report, Vec<Event>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let report = p.ensure(images, tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (report, events)
}

fn count(events: &[Event], f: impl Fn(&EventKind) -> bool) -> usize {
    events.iter().filter(|e| f(&e.kind)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_what_is_missing_and_a_second_run_downloads_nothing() {
    require_docker();
    let registry = Registry::start();
    let images = Images::new();
    let name = unique("pull");
    let a = images.push(&registry, &format!("{name}/a"), 256 * 1024);
    let b = images.push(&registry, &format!("{name}/b"), 256 * 1024);
    let wanted = [img(&a.tagged), img(&b.tagged)];
    let p = Preseeder::connect(Path::new(SOCKET), opts()).await.unwrap();
    for w in &wanted {
        assert!(
            !p.is_present(w).await.unwrap(),
            "{w} present before the pull"
        );
    }

    let (report, events) = ensure(&p, &wanted).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.pulled.len(), 2, "{report:?}");
    assert!(report.layers_downloaded >= 2, "{report:?}");
    for pulled in &report.pulled {
        assert!(pulled.layers_downloaded >= 1, "{pulled:?}");
        assert!(pulled.bytes > 0, "{pulled:?}");
    }
    assert!(count(&events, |k| matches!(k, EventKind::Progress(_))) > 0);
    for w in &wanted {
        assert!(
            p.is_present(w).await.unwrap(),
            "{w} not present after the pull"
        );
    }
    assert!(images.has(&a) && images.has(&b));
    assert!(p.pulling().is_empty());

    // Everything present: nothing pulled, no layer downloaded.
    let (report, events) = ensure(&p, &wanted).await;
    assert_eq!(report.present, {
        let mut w = wanted.to_vec();
        w.sort();
        w
    });
    assert!(report.pulled.is_empty() && report.joined.is_empty() && report.failed.is_empty());
    assert_eq!(report.layers_downloaded, 0);
    assert_eq!(
        count(&events, |k| matches!(
            k,
            EventKind::Pulling { .. } | EventKind::Progress(_)
        )),
        0,
        "{events:?}"
    );
    let status = report.images_status();
    assert_eq!((status.wanted, status.present), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_by_digest() {
    require_docker();
    let registry = Registry::start();
    let images = Images::new();
    let name = unique("digest");
    let a = images.push(&registry, &format!("{name}/a"), 64 * 1024);
    let b = images.push(&registry, &format!("{name}/b"), 64 * 1024);
    let by_digest = img(&a.digested);
    assert!(by_digest.digest().is_some());
    let p = Preseeder::connect(Path::new(SOCKET), opts()).await.unwrap();
    assert!(!p.is_present(&by_digest).await.unwrap());

    let (report, _) = ensure(&p, std::slice::from_ref(&by_digest)).await;
    assert_eq!(report.pulled.len(), 1, "{report:?}");
    assert!(p.is_present(&by_digest).await.unwrap());
    // The same repository with another image's digest is not present,
    // though the repository has a local image.
    let (_, b_digest) = b.digested.split_once('@').unwrap();
    let other = img(&format!(
        "{}@{b_digest}",
        a.tagged.rsplit_once(':').unwrap().0
    ));
    assert!(!p.is_present(&other).await.unwrap());
    // A tag and a digest: the digest decides.
    let (_, a_digest) = a.digested.split_once('@').unwrap();
    assert!(
        p.is_present(&img(&format!("{}@{a_digest}", a.tagged)))
            .await
            .unwrap()
    );
    assert!(
        !p.is_present(&img(&format!("{}@{b_digest}", a.tagged)))
            .await
            .unwrap()
    );
    // Second ensure by digest: present, nothing pulled.
    let (report, _) = ensure(&p, std::slice::from_ref(&by_digest)).await;
    assert_eq!(report.present, vec![by_digest]);
    assert_eq!(report.layers_downloaded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_pull_an_image_once() {
    require_docker();
    let registry = Registry::start();
    let images = Images::new();
    let name = unique("dedupe");
    let a = images.push(&registry, &format!("{name}/a"), 8 * 1024 * 1024);
    // Two spellings of the same image: normalized, they are one.
    let one = img(&a.tagged);
    let p = Preseeder::connect(Path::new(SOCKET), opts()).await.unwrap();
    let q = p.clone();
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let first = [one.clone()];
    let second = [one.clone(), one.clone()];
    let (r1, r2) = tokio::join!(p.ensure(&first, tx1), q.ensure(&second, tx2));
    let mut events = Vec::new();
    while let Ok(e) = rx1.try_recv() {
        events.push(e);
    }
    while let Ok(e) = rx2.try_recv() {
        events.push(e);
    }
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::Pulling { .. })),
        1,
        "one pull in all: {events:?}"
    );
    assert_eq!(r1.pulled.len() + r2.pulled.len(), 1, "{r1:?} {r2:?}");
    eprintln!(
        "waited for the other call's pull: {}",
        count(&events, |k| matches!(k, EventKind::Waiting)) > 0
    );
    assert!(r1.failed.is_empty() && r2.failed.is_empty());
    // The other call either waited for that pull or found the image
    // present; either way it reports it once.
    assert_eq!(r1.present_now(), 1, "{r1:?}");
    assert_eq!(r2.present_now(), 1, "{r2:?}");
    assert!(p.is_present(&one).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_registry_fails_after_the_retries() {
    require_docker();
    let registry = Registry::start();
    let images = Images::new();
    let name = unique("stopped");
    let a = images.push(&registry, &format!("{name}/a"), 64 * 1024);
    registry.stop();
    let p = Preseeder::connect(
        Path::new(SOCKET),
        PullOptions {
            attempts: 2,
            ..opts()
        },
    )
    .await
    .unwrap();
    let wanted = img(&a.tagged);
    let (report, events) = ensure(&p, std::slice::from_ref(&wanted)).await;
    assert!(report.pulled.is_empty());
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let reason = &report.failed[0].reason;
    eprintln!("reason: {reason}");
    assert!(
        reason.contains(&registry.host()) && reason.contains("connection refused"),
        "{reason}"
    );
    assert!(reason.ends_with("(after 2 attempts)"), "{reason}");
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::Pulling { .. })),
        2
    );
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::Retrying { .. })),
        1
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Failed { reason: r } if r == reason))
    );
    assert!(!p.is_present(&wanted).await.unwrap());
    assert_eq!(report.images_status().failed[0].reason, *reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_image_fails_with_the_registrys_words() {
    require_docker();
    let registry = Registry::start();
    let p = Preseeder::connect(Path::new(SOCKET), opts()).await.unwrap();
    let missing = img(&format!(
        "{}/{}/nothing:1",
        registry.host(),
        unique("unknown")
    ));
    let (report, events) = ensure(&p, std::slice::from_ref(&missing)).await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let reason = &report.failed[0].reason;
    eprintln!("reason: {reason}");
    // distribution's error code for an unknown repository or tag.
    assert!(
        reason.contains("manifest unknown") || reason.contains("not found"),
        "{reason}"
    );
    // Another attempt cannot help: not retried.
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::Retrying { .. })),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_free_disk_pulls_nothing() {
    require_docker();
    let registry = Registry::start();
    let images = Images::new();
    let name = unique("disk");
    let a = images.push(&registry, &format!("{name}/a"), 64 * 1024);
    let p = Preseeder::connect(
        Path::new(SOCKET),
        PullOptions {
            // More than any disk here.
            min_free_bytes: 1 << 60,
            ..opts()
        },
    )
    .await
    .unwrap();
    let wanted = img(&a.tagged);
    let (report, events) = ensure(&p, std::slice::from_ref(&wanted)).await;
    assert!(report.pulled.is_empty());
    let reason = &report.failed[0].reason;
    eprintln!("reason: {reason}");
    assert!(
        reason.starts_with("not enough free disk space in /")
            && reason
                .contains("MiB free, at least 1099511627776 MiB required (docker.min_free_bytes)"),
        "{reason}"
    );
    assert_eq!(count(&events, |k| matches!(k, EventKind::Progress(_))), 0);
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::Retrying { .. })),
        0
    );
    assert!(!images.has(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_daemon_is_a_clear_failure() {
    let p = Preseeder::new(Path::new("/nonexistent/docker.sock"), opts());
    let (report, _) = ensure(&p, &[img("127.0.0.1:1/x:1")]).await;
    let reason = &report.failed[0].reason;
    eprintln!("reason: {reason}");
    assert!(
        reason.contains("cannot reach the Docker daemon at /nonexistent/docker.sock")
            && reason.ends_with("(is docker.service running?)"),
        "{reason}"
    );
    assert!(
        Preseeder::connect(Path::new("/nonexistent/docker.sock"), opts())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pull_is_abandoned_after_the_no_progress_timeout() {
    require_docker();
    let registry = Registry::start();
    let images = Images::new();
    let name = unique("stall");
    let a = images.push(&registry, &format!("{name}/a"), 4 * 1024 * 1024);
    // The same repository through a proxy that stops answering after
    // 256 KiB: the layers start downloading, then nothing more comes.
    let proxy = StallingProxy::start(registry.port, 256 * 1024);
    let through_proxy = img(&a
        .tagged
        .replace(&registry.host(), &format!("127.0.0.1:{}", proxy.port)));
    let p = Preseeder::connect(
        Path::new(SOCKET),
        PullOptions {
            no_progress_timeout: Duration::from_secs(3),
            attempts: 2,
            ..opts()
        },
    )
    .await
    .unwrap();
    let (report, events) = ensure(&p, std::slice::from_ref(&through_proxy)).await;
    assert!(report.pulled.is_empty(), "{report:?}");
    let reason = &report.failed[0].reason;
    eprintln!("reason: {reason}");
    assert_eq!(
        reason,
        "no progress for 3 s (docker.pull_no_progress_seconds) (after 2 attempts)"
    );
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::Retrying { .. })),
        1
    );
    assert!(!p.is_present(&through_proxy).await.unwrap());
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_a_docker_config_json() {
    require_docker();
    let registry = Registry::start_with_auth();
    let images = Images::new();
    let dir = tempfile::tempdir().unwrap();
    let config = login(&registry, dir.path());
    let name = unique("auth");
    let a = images.push_as(&registry, &format!("{name}/a"), 64 * 1024, Some(dir.path()));
    let wanted = img(&a.tagged);

    // Anonymous: the registry's refusal, not retried.
    let p = Preseeder::connect(Path::new(SOCKET), opts()).await.unwrap();
    let (report, events) = ensure(&p, std::slice::from_ref(&wanted)).await;
    let reason = &report.failed[0].reason;
    eprintln!("reason: {reason}");
    assert!(
        reason.contains("no basic auth credentials") || reason.contains("unauthorized"),
        "{reason}"
    );
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::Retrying { .. })),
        0
    );

    // With the config.json docker login wrote: pulled.
    let p = Preseeder::connect(
        Path::new(SOCKET),
        PullOptions {
            docker_config: Some(config),
            ..opts()
        },
    )
    .await
    .unwrap();
    let (report, _) = ensure(&p, std::slice::from_ref(&wanted)).await;
    assert_eq!(report.pulled.len(), 1, "{report:?}");
    assert!(p.is_present(&wanted).await.unwrap());

    // A config.json that is not there: the path, in the reason.
    images.remove(&a);
    let p = Preseeder::connect(
        Path::new(SOCKET),
        PullOptions {
            docker_config: Some(dir.path().join("missing.json")),
            ..opts()
        },
    )
    .await
    .unwrap();
    let (report, _) = ensure(&p, std::slice::from_ref(&wanted)).await;
    let reason = &report.failed[0].reason;
    assert!(
        reason.starts_with("cannot use the Docker credentials file")
            && reason.contains("missing.json"),
        "{reason}"
    );
}

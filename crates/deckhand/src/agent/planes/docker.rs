//! The Docker probe of the plane pass: pings the local Docker daemon
//! (`GET /_ping` through [`deckhand_images::Preseeder`], with the agent's
//! `[docker]` socket) every [`PROBE_EVERY`], each ping bounded by
//! [`PROBE_TIMEOUT`], and judges the answers with
//! [`deckhand_plan::ProbeJudge`]: sick after failing for
//! `ProbeJudge::SICK_AFTER`, healthy again after answering for
//! `ProbeJudge::HEALTHY_AFTER`. A sick daemon makes the node resign its
//! singleton candidacies when another node stands ([`deckhand_plan::plan_units`]).
//!
//! A separate small piece on purpose: the node's `docker` check in the
//! status can share it.

use std::time::Duration;

use deckhand_images::Preseeder;
use deckhand_plan::ProbeJudge;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::DockerSettings;
use crate::images::pull_options;

/// How often the daemon is pinged.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one ping may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts the probe on the current runtime; the receiver holds the
/// verdict (why the daemon counts as sick, or `None`), changed only when
/// the verdict changes.
pub fn spawn(docker: &DockerSettings) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    let mut opts = pull_options(docker, 1);
    opts.request_timeout = PROBE_TIMEOUT;
    let preseeder = Preseeder::new(&docker.socket, opts);
    let socket = docker.socket.display().to_string();
    tokio::spawn(async move {
        let mut judge = ProbeJudge::default();
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let outcome = match tokio::time::timeout(PROBE_TIMEOUT, preseeder.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("the Docker daemon does not answer ({e})")),
                Err(_) => Err(format!(
                    "the Docker daemon at {socket} does not answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                )),
            };
            judge.record(outcome, Instant::now().into_std());
            let verdict = judge.sick().map(str::to_string);
            tx.send_if_modified(|v| {
                let changed = *v != verdict;
                if changed {
                    match &verdict {
                        Some(why) => tracing::warn!(
                            "{why}: singleton candidacies are resigned where another node stands"
                        ),
                        None => tracing::info!(
                            "the Docker daemon answers again: campaigning for singletons again"
                        ),
                    }
                    v.clone_from(&verdict);
                }
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

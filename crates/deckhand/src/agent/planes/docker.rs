//! The Docker probe of the plane pass: pings the local Docker daemon
//! (`GET /_ping` through [`deckhand_images::Preseeder`], with the agent's
//! `[docker]` socket) every [`PROBE_EVERY`], each ping bounded by
//! [`PROBE_TIMEOUT`], and judges the answers with
//! [`deckhand_plan::ProbeJudge`]: sick after failing for
//! `ProbeJudge::SICK_AFTER`, healthy again after answering for
//! `ProbeJudge::HEALTHY_AFTER`. A sick daemon makes the node resign its
//! singleton candidacies when another node stands
//! ([`deckhand_plan::plan_units`]). [`DockerProbe::ping_now`] is asked
//! right before plane units are started: a unit with `Requires=docker.service`
//! would start a stopped daemon again.
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

/// The probe: its background task's verdict, and pings on demand.
pub struct DockerProbe {
    preseeder: Preseeder,
    socket: String,
    verdict: watch::Receiver<Option<String>>,
}

impl DockerProbe {
    /// Starts the probe's task on the current runtime.
    pub fn spawn(docker: &DockerSettings) -> DockerProbe {
        let (tx, verdict) = watch::channel(None);
        let mut opts = pull_options(docker, 1);
        opts.request_timeout = PROBE_TIMEOUT;
        let probe = DockerProbe {
            preseeder: Preseeder::new(&docker.socket, opts),
            socket: docker.socket.display().to_string(),
            verdict,
        };
        let (preseeder, socket) = (probe.preseeder.clone(), probe.socket.clone());
        tokio::spawn(async move {
            let mut judge = ProbeJudge::default();
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let outcome = ping(&preseeder, &socket).await;
                judge.record(outcome, Instant::now().into_std());
                let verdict = judge.sick().map(str::to_string);
                tx.send_if_modified(|v| {
                    let changed = *v != verdict;
                    if changed {
                        match &verdict {
                            Some(why) => tracing::warn!(
                                "{why}: resigning singleton candidacies where another node stands"
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
        probe
    }

    /// Why the daemon counts as sick, or `None` (the task's verdict).
    pub fn verdict(&self) -> Option<String> {
        self.verdict.borrow().clone()
    }

    /// One ping now, bounded by [`PROBE_TIMEOUT`]: `Err` says why it
    /// failed.
    pub async fn ping_now(&self) -> Result<(), String> {
        ping(&self.preseeder, &self.socket).await
    }
}

async fn ping(preseeder: &Preseeder, socket: &str) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, preseeder.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the Docker daemon does not answer ({e})")),
        Err(_) => Err(format!(
            "the Docker daemon at {socket} does not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

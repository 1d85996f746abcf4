//! The status document (`nodes/<id>/status`): built from the observation,
//! the step the planner chose and what the plane pass found — a pure
//! function — and written on the node's lease only when it changed.

use deckhand_model::{
    CertificateStatus, Check, EtcdMode, EtcdRole, EtcdStatus, NodeStatus, Role, VoterProblem,
};
use deckhand_plan::{Observation, Step};

use super::desired::Desired;
use super::planes::summary::PlanesOutcome;
use crate::identity::Identity;
use crate::store::Store;

/// How many notable events the status keeps.
pub const EVENTS_KEPT: usize = 5;

/// Everything the status document is made of.
pub struct Inputs<'a> {
    /// This node.
    pub identity: &'a Identity,
    /// The agent config's `node.failure_domain`.
    pub failure_domain: Option<&'a str>,
    /// The role and cluster config, with their rejections.
    pub desired: &'a Desired,
    /// This iteration's observation.
    pub observation: &'a Observation,
    /// The step the planner chose for it.
    pub step: &'a Step,
    /// Why the last step failed, if it did.
    pub step_error: Option<&'a str>,
    /// The plane pass's outcome.
    pub planes: &'a PlanesOutcome,
    /// The replacer's note, on the agent that runs it.
    pub replacer: Option<&'a str>,
    /// Notable events, newest last.
    pub events: &'a [String],
    /// The node checks' latest outcomes (`agent::checks`), in their order.
    pub checks: &'a [Check],
    /// The voters in trouble, on the agent that watches them
    /// (`agent::voters`); empty on the others.
    pub voter_problems: &'a [VoterProblem],
    /// The node certificate as last read (TLS on), for `certificate`.
    pub certificate: Option<&'a CertificateStatus>,
    /// The TLS stage applied (`crate::tls_enable`), for `tls_stage`.
    pub tls_stage: Option<&'a str>,
    /// The host firewall's state (`agent::firewall`).
    pub firewall: &'a deckhand_model::FirewallStatus,
}

/// The status document. `converged` holds only when the step is
/// `Converged`, the plane units are settled, and the etcd mode running is
/// both the planner's target and the role key's. `applied.planes` are the
/// desired planes once their units are settled (none before).
pub fn document(i: &Inputs<'_>) -> NodeStatus {
    let o = i.observation;
    let mode = deckhand_plan::etcd_mode(o);
    let me = o.me();
    let running = match mode {
        EtcdMode::Member => Some(EtcdRole::Member),
        EtcdMode::Proxy => Some(EtcdRole::Proxy),
        _ => None,
    };
    let desired_etcd = i.desired.role().map(|r| r.etcd);
    let planes = i.planes;
    let converged = *i.step == Step::Converged
        && planes.settled
        && running == Some(deckhand_plan::target_role(o))
        && desired_etcd.is_none_or(|d| Some(d) == running);
    let applied = running.map(|etcd| Role {
        etcd,
        planes: if planes.settled {
            i.desired.planes()
        } else {
            Default::default()
        },
    });
    let errors: Vec<&str> = [
        i.desired.role_error.as_deref(),
        i.desired.config_error.as_deref(),
        i.step_error,
        planes.error.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    NodeStatus {
        id: i.identity.id.clone(),
        name: i.identity.name.clone(),
        address: i.identity.address.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        desired: i.desired.role().cloned(),
        desired_revision: i.desired.revision(),
        applied,
        converged,
        etcd: EtcdStatus {
            mode,
            member_id: me.map(|m| format!("{:x}", m.id)),
            leader: me.is_some_and(|m| o.cluster.as_ref().and_then(|c| c.leader) == Some(m.id)),
        },
        step: if matches!(i.step, Step::Converged | Step::Blocked(_)) {
            planes.step.clone()
        } else {
            Some(i.step.to_string())
        },
        blocked: match i.step {
            Step::Blocked(r) => Some(r.clone()),
            _ => None,
        },
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        failure_domain: i.failure_domain.map(str::to_string),
        replacer: i.replacer.map(str::to_string),
        events: i.events.to_vec(),
        planes: planes.planes.clone(),
        images: planes.images.clone(),
        checks: i.checks.to_vec(),
        voter_problems: i.voter_problems.to_vec(),
        certificate: i.certificate.cloned(),
        tls_stage: i.tls_stage.map(str::to_string),
        firewall: i.firewall.clone(),
        metrics_listen: None,
    }
}

/// The `STATUS=` line for systemd (`systemctl status deckhand`).
pub fn status_line(desired: &Desired, mode: EtcdMode, last_step: Option<&Step>) -> String {
    let want = desired
        .role()
        .map(Role::to_string)
        .unwrap_or_else(|| "-".into());
    match last_step {
        Some(step) => format!("desired {want}; etcd {mode}; {step}"),
        None => format!("desired {want}; starting"),
    }
}

/// Notable events (reaped learners, removed stale entries, replacements),
/// newest last, at most [`EVENTS_KEPT`].
#[derive(Debug, Default)]
pub struct EventLog(Vec<String>);

impl EventLog {
    /// Records an event at the time now, dropping the oldest beyond
    /// [`EVENTS_KEPT`] (see [`EventLog::push_at`]).
    pub fn push(&mut self, what: String) {
        self.push_at(super::observe::unix_now(), what);
    }

    /// Records an event that happened at `unix` (seconds since the epoch,
    /// UTC) as `<RFC 3339 UTC time> <what>`, e.g. `2026-12-02T19:30:00Z
    /// removed member 8e9e05c52164694d: ...`, dropping the oldest beyond
    /// [`EVENTS_KEPT`].
    pub fn push_at(&mut self, unix: u64, what: String) {
        self.0
            .push(format!("{} {what}", deckhand_pki::utc_rfc3339(unix)));
        let extra = self.0.len().saturating_sub(EVENTS_KEPT);
        self.0.drain(..extra);
    }

    /// The events kept, oldest first.
    pub fn all(&self) -> &[String] {
        &self.0
    }
}

/// Writes the status document when it or the lease changed.
#[derive(Default)]
pub struct StatusWriter {
    written: Option<(NodeStatus, i64)>,
}

impl StatusWriter {
    /// Forgets what was written (a new lease: the old key is gone with it).
    pub fn reset(&mut self) {
        self.written = None;
    }

    /// Writes `status` on `lease` unless exactly that was written last.
    /// Failures are logged and retried on the next call.
    pub async fn write(&mut self, store: &Store, status: NodeStatus, lease: i64) {
        if lease == 0 || matches!(&self.written, Some((s, l)) if *s == status && *l == lease) {
            return;
        }
        match store.put_status(&status, lease).await {
            Ok(()) => {
                self.written = Some((status, lease));
                super::metrics::status_write(true);
            }
            Err(e) => {
                tracing::warn!("{e:#}");
                super::metrics::status_write(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use deckhand_model::Plane;
    use deckhand_plan::{ClusterView, LocalView, LockView, MemberView};

    use super::*;

    fn identity() -> Identity {
        Identity {
            id: "a".repeat(32),
            name: "node1".into(),
            address: "10.0.0.1".parse().unwrap(),
            tls: false,
        }
    }

    /// A member node whose member is running and listed.
    fn member_observation(desired: Option<Role>) -> Observation {
        Observation {
            node_name: "node1".into(),
            peer_url: "http://10.0.0.1:2380".into(),
            desired,
            in_initial_cluster: true,
            config_endpoints: vec!["http://10.0.0.1:2379".into()],
            min_voters: 1,
            local: LocalView {
                member_unit_active: true,
                proxy_unit_active: false,
                member_env: None,
                proxy_endpoints: vec![],
                data_dir_exists: true,
                bootstrapped: true,
            },
            cluster: Some(ClusterView {
                members: vec![MemberView {
                    id: 0xabc,
                    name: "node1".into(),
                    peer_urls: vec!["http://10.0.0.1:2380".into()],
                    client_urls: vec!["http://10.0.0.1:2379".into()],
                    is_learner: false,
                    healthy: Some(true),
                }],
                leader: Some(0xabc),
            }),
            lock: LockView::Free,
            learner_timeout: 120,
            voter_start_timeout: 300,
            pending: BTreeMap::new(),
            down: BTreeMap::new(),
            identity: Default::default(),
        }
    }

    fn desired(role: Option<Role>) -> Desired {
        Desired {
            role: role.map(|r| (r, 42)),
            role_seen: true,
            ..Default::default()
        }
    }

    fn settled() -> PlanesOutcome {
        PlanesOutcome {
            settled: true,
            ..Default::default()
        }
    }

    #[test]
    fn converged_member_with_its_planes_applied() {
        let mut role = Role::new(EtcdRole::Member);
        role.planes.insert(Plane::Control);
        let d = desired(Some(role.clone()));
        let o = member_observation(Some(role.clone()));
        let id = identity();
        let planes = settled();
        let events = vec!["removed member 5: stale".to_string()];
        let checks = [Check {
            name: "docker".into(),
            state: deckhand_model::CheckState::Fail,
            detail: "the Docker daemon does not answer".into(),
        }];
        let problems = [VoterProblem {
            member_id: "9".into(),
            peer_url: "http://10.0.0.9:2380".into(),
            trouble: deckhand_model::VoterTrouble::NotStarted,
            since: 1_700_000_000,
        }];
        let s = document(&Inputs {
            identity: &id,
            failure_domain: Some("rack-a"),
            desired: &d,
            observation: &o,
            step: &Step::Converged,
            step_error: None,
            planes: &planes,
            replacer: None,
            events: &events,
            checks: &checks,
            voter_problems: &problems,
            certificate: None,
            tls_stage: None,
            firewall: &Default::default(),
        });
        assert!(s.converged);
        assert_eq!(s.applied, Some(role));
        assert_eq!(s.desired_revision, 42);
        assert_eq!(s.etcd.mode, EtcdMode::Member);
        assert_eq!(s.etcd.member_id.as_deref(), Some("abc"));
        assert!(s.etcd.leader);
        assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(s.failure_domain.as_deref(), Some("rack-a"));
        assert_eq!(s.events, events);
        assert_eq!(s.checks, checks);
        assert_eq!(s.voter_problems, problems);
        assert!(s.error.is_none() && s.step.is_none() && s.blocked.is_none());
    }

    #[test]
    fn not_converged_while_the_role_key_asks_for_another_mode_or_planes_settle() {
        let id = identity();
        // The role key says proxy; the member still runs.
        let proxy = Role::new(EtcdRole::Proxy);
        let d = desired(Some(proxy.clone()));
        let o = member_observation(Some(proxy));
        let planes = settled();
        let inputs = Inputs {
            identity: &id,
            failure_domain: None,
            desired: &d,
            observation: &o,
            step: &Step::Blocked("2 healthy voters would be left, below min_voters 3".into()),
            step_error: None,
            planes: &planes,
            replacer: Some("keeping 3 voters: nothing to do"),
            events: &[],
            checks: &[],
            voter_problems: &[],
            certificate: None,
            tls_stage: None,
            firewall: &Default::default(),
        };
        let s = document(&inputs);
        assert!(!s.converged);
        assert_eq!(
            s.blocked.as_deref(),
            Some("2 healthy voters would be left, below min_voters 3")
        );
        assert_eq!(s.applied.as_ref().map(|a| a.etcd), Some(EtcdRole::Member));
        assert_eq!(
            s.replacer.as_deref(),
            Some("keeping 3 voters: nothing to do")
        );
        // Plane units still starting: not converged, no planes applied, and
        // the plane step is shown.
        let mut role = Role::new(EtcdRole::Member);
        role.planes.insert(Plane::Router);
        let d = desired(Some(role.clone()));
        let o = member_observation(Some(role));
        let planes = PlanesOutcome {
            settled: false,
            step: Some("starting and stopping plane units".into()),
            error: Some("starting x.service failed: boom".into()),
            ..Default::default()
        };
        let mut d2 = d.clone();
        d2.role_error = Some("role key rejected".into());
        let s = document(&Inputs {
            desired: &d2,
            observation: &o,
            step: &Step::Converged,
            step_error: Some("step failed"),
            planes: &planes,
            ..inputs
        });
        assert!(!s.converged);
        assert!(s.applied.unwrap().planes.is_empty());
        assert_eq!(s.step.as_deref(), Some("starting and stopping plane units"));
        assert_eq!(
            s.error.as_deref(),
            Some("role key rejected; step failed; starting x.service failed: boom")
        );
    }

    #[test]
    fn event_log_keeps_the_newest() {
        let mut log = EventLog::default();
        for k in 0..8 {
            log.push_at(1_764_703_800 + k, format!("e{k}"));
        }
        assert_eq!(
            log.all(),
            [
                "2025-12-02T19:30:03Z e3",
                "2025-12-02T19:30:04Z e4",
                "2025-12-02T19:30:05Z e5",
                "2025-12-02T19:30:06Z e6",
                "2025-12-02T19:30:07Z e7"
            ]
        );
        log.push("now".into());
        assert!(log.all()[4].ends_with("Z now"), "{:?}", log.all());
    }

    #[test]
    fn status_line_names_role_mode_and_step() {
        let d = desired(Some(Role::new(EtcdRole::Member)));
        assert_eq!(
            status_line(&d, EtcdMode::Proxy, None),
            "desired member; starting"
        );
        let line = status_line(&d, EtcdMode::Member, Some(&Step::Converged));
        assert!(line.starts_with("desired member; etcd member; "), "{line}");
    }
}

//! The execution of one step the planner chose: each is idempotent and
//! chosen again from what is observed, so an agent killed between any two
//! steps resumes on restart. Failpoints (`before-<kind>`, `after-<kind>`)
//! surround every acting step in crash-test builds.

use std::time::Duration;

use anyhow::Result;
use deckhand_etcd::{Cluster, LockOutcome};
use deckhand_plan::{Observation, Step};

use super::context::{Context, REQUEST_TIMEOUT};
use super::status::EventLog;
use crate::failpoint;

/// How long a promotion is retried within one step before re-observing.
const PROMOTE_SLICE: Duration = Duration::from_secs(8);

/// Takes `step` (observed as `o`; `lease` is the node's lease, 0 if none),
/// with its failpoints. Notable removals go to `events`.
///
/// # Errors
/// The step failed; the next iteration observes again and chooses anew.
pub async fn take(
    ctx: &Context,
    step: &Step,
    o: &Observation,
    lease: i64,
    events: &mut EventLog,
) -> Result<()> {
    let acting = !step.is_idle();
    if acting {
        failpoint::hit(&format!("before-{}", step.kind()));
    }
    let result = act(ctx, step, o, lease, events).await;
    if result.is_ok() && acting {
        failpoint::hit(&format!("after-{}", step.kind()));
    }
    result
}

async fn act(
    ctx: &Context,
    step: &Step,
    o: &Observation,
    lease: i64,
    events: &mut EventLog,
) -> Result<()> {
    let id = &ctx.identity.id;
    match step {
        Step::Converged | Step::Wait(_) | Step::Blocked(_) => Ok(()),
        Step::BootstrapMember => ctx.local.bootstrap_member().await,
        Step::StartMember => ctx.local.start_member().await,
        Step::StartProxy { endpoints } => ctx.local.start_proxy(endpoints, false).await,
        Step::UpdateProxy { endpoints } => ctx.local.start_proxy(endpoints, true).await,
        Step::AcquireLock => {
            anyhow::ensure!(lease != 0, "no lease yet to attach the membership lock to");
            let mut client = ctx.store.client();
            let lock = ctx.store.keyspace().membership_lock();
            match deckhand_etcd::try_lock(&mut client, &lock, id, lease).await? {
                LockOutcome::Acquired => Ok(()),
                LockOutcome::HeldBy(owner) => {
                    tracing::info!("membership lock is held by node {owner}");
                    Ok(())
                }
            }
        }
        Step::ReleaseLock => {
            let mut client = ctx.store.client();
            let lock = ctx.store.keyspace().membership_lock();
            Ok(deckhand_etcd::unlock(&mut client, &lock, id).await?)
        }
        Step::AddLearner => {
            let added = ctx.cluster.add_learner(&ctx.identity.peer_url()).await?;
            tracing::info!(
                "learner {:x} registered{}",
                added.member.id,
                if added.reused {
                    " (reused the existing entry)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Step::StartLearner {
            id,
            initial_cluster,
            move_aside,
        } => {
            ctx.local
                .start_learner(*id, initial_cluster, *move_aside)
                .await
        }
        Step::Promote { id } => match ctx.cluster.promote_until_in_sync(*id, PROMOTE_SLICE).await {
            Ok(()) => {
                tracing::info!("learner {id:x} promoted to voter");
                Ok(())
            }
            Err(deckhand_etcd::Error::LearnerNotInSync { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Step::ServeLocalhostFromMember { .. } => ctx.local.serve_localhost_from_member().await,
        Step::TransferLeadership { to, .. } => Ok(ctx.cluster.move_leader(*to).await?),
        Step::RemoveSelf { id } => {
            let others: Vec<String> = o
                .cluster
                .as_ref()
                .map(|c| c.voter_client_urls())
                .unwrap_or_default()
                .into_iter()
                .filter(|u| *u != ctx.identity.client_url())
                .collect();
            anyhow::ensure!(!others.is_empty(), "no other voter to send the removal to");
            let via = Cluster::connect(&others, REQUEST_TIMEOUT, ctx.cluster.tls()).await?;
            via.member_list().await?; // settles on a member that answers
            via.remove(*id).await?;
            tracing::warn!("removed this node's member {id:x} from the cluster");
            Ok(())
        }
        Step::RemoveMember { id, why } => {
            ctx.cluster.remove(*id).await?;
            tracing::warn!("removed member {id:x}: {why}");
            events.push(format!("removed member {id:x}: {why}"));
            Ok(())
        }
        Step::StopMember => {
            // The member list is not linearizable: confirm once more that
            // this node's member is gone before stopping it.
            let members = ctx.cluster.member_list().await?;
            if members
                .iter()
                .any(|m| m.has_peer_url(&ctx.identity.peer_url()))
            {
                tracing::info!("member is listed again; not stopping it");
                return Ok(());
            }
            ctx.local.stop_member().await
        }
        Step::MoveDataDirAside => {
            ctx.local.move_data_dir_aside()?;
            Ok(())
        }
        Step::QuarantineMember { reason } => quarantine(ctx, o, reason, events).await,
        Step::RecordMemberIdentity {
            member_id,
            cluster_id,
        } => {
            ctx.local.record_identity(*member_id, *cluster_id)?;
            tracing::info!("recorded member {member_id:x} of cluster {cluster_id:x} as confirmed");
            Ok(())
        }
    }
}

/// Stops a local member that is not the member the cluster knows and moves
/// its data dir, environment and start-check refusal aside (never deleting
/// them); the next iterations start the proxy on `localhost:2379` and
/// rejoin as the role says. A mismatch seen on the live cluster is looked
/// at once more first: the member list is not linearizable.
async fn quarantine(
    ctx: &Context,
    o: &Observation,
    reason: &str,
    events: &mut EventLog,
) -> Result<()> {
    if o.identity.start_refused.is_none() {
        let urls = o
            .cluster
            .as_ref()
            .map(|c| c.voter_client_urls())
            .unwrap_or_default();
        let again = Observation {
            identity: super::member_identity::observe(ctx, &o.local, &urls).await,
            ..o.clone()
        };
        if !matches!(
            deckhand_plan::identity::identity_step(&again),
            Some(Step::QuarantineMember { .. })
        ) {
            tracing::info!(
                "identity: a second look found no mismatch; not quarantining ({reason})"
            );
            return Ok(());
        }
    }
    ctx.local.stop_member().await?;
    let aside = ctx.local.move_data_dir_aside()?;
    let where_to = aside.map_or_else(
        || "no data dir to move aside".to_string(),
        |p| format!("data dir moved aside to {}", p.display()),
    );
    tracing::warn!("quarantined the local member: {reason}; {where_to}");
    events.push(format!(
        "quarantined the local member: {reason}; {where_to}; rejoining as the role says"
    ));
    Ok(())
}

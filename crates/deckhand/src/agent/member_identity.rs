//! The identity part of the observation: what the local member says it is
//! (its `Status` header on the node's own client URL), the cluster as the
//! other voters report it, what the member environment records, and the
//! member unit's start-check refusal. The decision is
//! [`deckhand_plan::identity::identity_step`].

use std::time::Duration;

use deckhand_etcd::Cluster;
use deckhand_plan::LocalView;
use deckhand_plan::identity::{IdentityView, MemberIdentity};

use super::context::Context;
use crate::connect::LOCALHOST_CLIENT_URL;
use crate::member_check;

/// Timeout of each identity request (the local member's status, each other
/// voter's status, one member list); the voters are asked at once.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Observes the identity. `voter_urls`: the client URLs of the voters in
/// the member list just read (the agent config's and the proxy
/// environment's endpoints are asked too, so that a member list read from
/// a foreign local member cannot hide the real cluster). The network is
/// asked only while there is a member to judge: a running one, or a
/// stopped one whose environment records its member id.
pub async fn observe(ctx: &Context, local: &LocalView, voter_urls: &[String]) -> IdentityView {
    observe_with(ctx, local, voter_urls, None).await
}

/// [`observe`], with the local member's answer to `Status` on the node's
/// own client URL already asked this pass (`own`: `Some(None)` when it did
/// not answer), so that it is not asked twice.
pub async fn observe_with(
    ctx: &Context,
    local: &LocalView,
    voter_urls: &[String],
    own_status: Option<&Option<deckhand_etcd::EndpointStatus>>,
) -> IdentityView {
    let recorded = ctx.local.recorded_identity();
    let start_refused = ctx.local.start_refused();
    let own = ctx.identity.client_url();
    let local_identity = if local.member_unit_active {
        let answer = match own_status {
            Some(answer) => answer.clone().ok_or(()),
            None => Cluster::endpoint_status(&own, TIMEOUT, ctx.cluster.tls())
                .await
                .map_err(|_| ()),
        };
        match answer {
            Ok(st) if st.cluster_id != 0 => Some(MemberIdentity {
                member_id: st.member_id,
                cluster_id: st.cluster_id,
            }),
            _ => None,
        }
    } else {
        None
    };
    let judge_stopped = !local.member_unit_active && recorded.member_id.is_some();
    let cluster = if local_identity.is_some() || judge_stopped {
        let mut candidates: Vec<String> = voter_urls.to_vec();
        candidates.extend(ctx.settings.endpoints.iter().cloned());
        candidates.extend(local.proxy_endpoints.iter().cloned());
        candidates.sort();
        candidates.dedup();
        candidates.retain(|u| *u != own && u != LOCALHOST_CLIENT_URL);
        member_check::cluster_identity(&candidates, TIMEOUT, ctx.cluster.tls()).await
    } else {
        None
    };
    IdentityView {
        local: local_identity,
        cluster,
        recorded,
        start_refused,
    }
}

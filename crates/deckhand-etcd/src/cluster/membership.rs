//! Membership changes: add a learner, promote it to a voter, remove a member
//! (learner or voter), each safe to re-run after an interruption.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use etcd_client::MemberAddOptions;
use tracing::debug;

use super::Cluster;
use super::member::{Member, members_of};
use crate::error::{Error, Result, etcd_msg, grpc_message, timed};

/// The answer of [`Cluster::add_learner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedLearner {
    /// The member that has the peer URL: the new learner, or the member found
    /// already there (which may be a voter by now, see [`Member::is_learner`]).
    pub member: Member,
    /// The member list after the add.
    pub members: Vec<Member>,
    /// The member was already in the list (an earlier add that was interrupted
    /// or timed out); nothing was added.
    pub reused: bool,
}

impl Cluster {
    /// Adds a learner with `peer_url` (`MemberAdd` with `isLearner`), or
    /// returns the member that already has this peer URL (`reused`), so that
    /// re-running an interrupted or timed-out add is safe.
    ///
    /// A learner does not count toward quorum, so adding one never blocks
    /// writes; start its etcd process with `--initial-cluster-state existing`,
    /// then [`Cluster::promote_until_in_sync`]
    /// (<https://etcd.io/docs/v3.4/learning/design-learner/>).
    ///
    /// etcd's strict reconfiguration check
    /// (<https://etcd.io/docs/v3.4/op-guide/configuration/>)
    /// refuses any membership change for about 5 s after a voter (re)connects.
    ///
    /// Errors: [`Error::TooManyLearners`] (etcd 3.4 allows one learner),
    /// [`Error::UnhealthyCluster`] (a voter was not connected for the last
    /// 5 s: retry later), [`Error::Timeout`], [`Error::Request`].
    pub async fn add_learner(&self, peer_url: &str) -> Result<AddedLearner> {
        const OP: &str = "member_add";
        let members = self.member_list().await?;
        if let Some(member) = members.iter().find(|m| m.has_peer_url(peer_url)) {
            debug!(
                id = member.id,
                peer_url, "peer URL already in the member list"
            );
            return Ok(AddedLearner {
                member: member.clone(),
                members,
                reused: true,
            });
        }
        let mut client = self.client();
        let options = MemberAddOptions::new().with_is_learner();
        let added = timed(
            OP,
            self.timeout(),
            client.member_add([peer_url.to_owned()], Some(options)),
        )
        .await;
        match added {
            Ok(resp) => {
                let member = resp.member().map(Member::from).ok_or(Error::Protocol {
                    op: OP,
                    what: "no member in the answer".to_owned(),
                })?;
                debug!(id = member.id, peer_url, "added learner");
                Ok(AddedLearner {
                    member,
                    members: members_of(resp.member_list()),
                    reused: false,
                })
            }
            Err(Error::Request { op, source }) => match grpc_message(&source) {
                // Someone added it meanwhile (or an earlier attempt that timed
                // out went through): the member list we read lagged.
                Some(etcd_msg::PEER_URL_EXISTS | etcd_msg::MEMBER_EXISTS) => {
                    self.find_added(peer_url, Error::Request { op, source })
                        .await
                }
                Some(etcd_msg::TOO_MANY_LEARNERS) => Err(Error::TooManyLearners {
                    peer_url: peer_url.to_owned(),
                }),
                Some(etcd_msg::UNHEALTHY) => Err(Error::UnhealthyCluster { op }),
                _ => Err(Error::Request { op, source }),
            },
            Err(e) => Err(e),
        }
    }

    /// After "peer URL exists": reads the member list until the member shows
    /// up (the list of the answering member may lag), or returns `refused`.
    async fn find_added(&self, peer_url: &str, refused: Error) -> Result<AddedLearner> {
        for attempt in 0..5u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let members = self.member_list().await?;
            if let Some(member) = members.iter().find(|m| m.has_peer_url(peer_url)) {
                return Ok(AddedLearner {
                    member: member.clone(),
                    members,
                    reused: true,
                });
            }
        }
        Err(refused)
    }

    /// One attempt to promote learner `id` to a voter (`MemberPromote`).
    ///
    /// Promoting a member that is already a voter is `Ok` (etcd says "can
    /// only promote a learner member"), so a re-run after an interrupted
    /// promote succeeds. A follower forwards the request to the leader, which
    /// decides (<https://etcd.io/docs/v3.4/learning/design-learner/>).
    ///
    /// Errors: [`Error::LearnerNotInSync`] while the learner's log is behind
    /// the leader's (etcd wants it at 90 % of the leader's progress; an
    /// unstarted learner is never in sync), [`Error::MemberNotFound`],
    /// [`Error::NotEnoughStartedMembers`], [`Error::UnhealthyCluster`],
    /// [`Error::Timeout`], [`Error::Request`].
    pub async fn promote(&self, id: u64) -> Result<()> {
        let mut client = self.client();
        match timed("member_promote", self.timeout(), client.member_promote(id)).await {
            Ok(_) => {
                debug!(id, "promoted learner");
                Ok(())
            }
            Err(Error::Request { op, source }) => match grpc_message(&source) {
                Some(etcd_msg::LEARNER_NOT_READY) => Err(Error::LearnerNotInSync { id }),
                Some(etcd_msg::NOT_LEARNER) => {
                    debug!(id, "member is already a voter");
                    Ok(())
                }
                Some(etcd_msg::MEMBER_NOT_FOUND) => Err(Error::MemberNotFound { op, id }),
                Some(etcd_msg::NOT_ENOUGH_STARTED) => {
                    Err(Error::NotEnoughStartedMembers { op, id })
                }
                Some(etcd_msg::UNHEALTHY) => Err(Error::UnhealthyCluster { op }),
                _ => Err(Error::Request { op, source }),
            },
            Err(e) => Err(e),
        }
    }

    /// Promotes learner `id`, retrying with backoff (100 ms growing to 1 s)
    /// while etcd says it is not in sync, for at most `deadline`.
    ///
    /// Errors: [`Error::PromoteDeadline`] when the learner has not caught up
    /// within `deadline`; any other error of [`Cluster::promote`] ends the
    /// retries at once.
    pub async fn promote_until_in_sync(&self, id: u64, deadline: Duration) -> Result<()> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_factor(1.5)
            .with_jitter()
            .without_max_times();
        let attempts = (|| self.promote(id))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, Error::LearnerNotInSync { .. }))
            .notify(|_, after| debug!(id, ?after, "learner not in sync yet; retrying"));
        match tokio::time::timeout(deadline, attempts).await {
            Err(_) => Err(Error::PromoteDeadline { id, deadline }),
            Ok(result) => result,
        }
    }

    /// Removes member `id` (`MemberRemove`). Removing an id that is not (or no
    /// longer) in the cluster is `Ok`, so a re-run is safe.
    ///
    /// The removed member's etcd stops itself and its data dir can never
    /// start again ("the member has been permanently removed from the
    /// cluster"). Removing the leader stalls writes for an election (and a
    /// request made in that window is dropped by raft and ends only with its
    /// timeout): call [`Cluster::move_leader`] first. See
    /// <https://etcd.io/docs/v3.4/op-guide/runtime-configuration/#remove-a-member>.
    ///
    /// etcd's strict reconfiguration check refuses the removal of a voter when
    /// the voters left that are active (connected for the last 5 s) would not
    /// hold a quorum; removing a voter that is down, or a learner, passes.
    ///
    /// Errors: [`Error::UnhealthyCluster`] (too few active voters would be
    /// left: a voter is down or just started), [`Error::NotEnoughStartedMembers`]
    /// (too few voters that ever started would be left), [`Error::Timeout`],
    /// [`Error::Request`].
    pub async fn remove(&self, id: u64) -> Result<()> {
        let mut client = self.client();
        match timed("member_remove", self.timeout(), client.member_remove(id)).await {
            Ok(_) => {
                debug!(id, "removed member");
                Ok(())
            }
            Err(Error::Request { op, source }) => match grpc_message(&source) {
                Some(etcd_msg::MEMBER_NOT_FOUND) => {
                    debug!(id, "member already removed");
                    Ok(())
                }
                Some(etcd_msg::NOT_ENOUGH_STARTED) => {
                    Err(Error::NotEnoughStartedMembers { op, id })
                }
                Some(etcd_msg::UNHEALTHY) => Err(Error::UnhealthyCluster { op }),
                _ => Err(Error::Request { op, source }),
            },
            Err(e) => Err(e),
        }
    }

    /// Sets the peer URLs of member `id` (`etcdctl member update`), e.g.
    /// from `http://` to `https://` when TLS is turned on. The member keeps
    /// listening where it listened: the other members dial the new URLs
    /// from now on, so it must serve them once restarted.
    ///
    /// Errors: [`Error::Timeout`], [`Error::Request`].
    pub async fn update_peer_urls(&self, id: u64, peer_urls: &[String]) -> Result<()> {
        let mut client = self.client();
        timed(
            "member_update",
            self.timeout(),
            client.member_update(id, peer_urls.to_vec()),
        )
        .await?;
        debug!(id, ?peer_urls, "updated the member's peer URLs");
        Ok(())
    }
}

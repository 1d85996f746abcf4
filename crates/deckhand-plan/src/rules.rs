//! The membership safety rules, as pure checks with reasons in words.

use crate::observation::MemberView;

/// Votes needed for a decision among `voters` voters: a strict majority.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

fn healthy(m: &MemberView) -> bool {
    m.is_started() && m.healthy == Some(true)
}

/// May voter `id` be removed?
///
/// Allowed only when (1) at least `min_voters` voters remain (when given:
/// `min_voters` guards operators' demotions of healthy members, not the
/// removal of a dead one), (2) the started,
/// healthy voters that remain hold quorum of the new configuration, and (3)
/// the healthy voters now hold quorum of the current configuration (so the
/// removal itself can commit). Unchecked health counts as unhealthy.
///
/// # Errors
/// The reason in words when the removal is refused.
pub fn check_removal(
    members: &[MemberView],
    id: u64,
    min_voters: Option<usize>,
) -> Result<(), String> {
    let voters: Vec<&MemberView> = members.iter().filter(|m| !m.is_learner).collect();
    if !voters.iter().any(|m| m.id == id) {
        return Err(format!("member {id:x} is not a voter"));
    }
    let remaining = voters.len() - 1;
    if let Some(min_voters) = min_voters
        && remaining < min_voters
    {
        return Err(format!(
            "removing this member would leave {remaining} voters, fewer than min_voters = {min_voters}"
        ));
    }
    let unhealthy = || {
        let names: Vec<&str> = voters
            .iter()
            .filter(|m| !healthy(m))
            .map(|m| m.display_name())
            .collect();
        if names.is_empty() {
            String::new()
        } else {
            format!(" (not healthy: {})", names.join(", "))
        }
    };
    let healthy_after = voters.iter().filter(|m| m.id != id && healthy(m)).count();
    if healthy_after < quorum(remaining) {
        return Err(format!(
            "{healthy_after} of the {remaining} remaining voters would be healthy, and quorum of {remaining} needs {}{}",
            quorum(remaining),
            unhealthy()
        ));
    }
    let healthy_now = voters.iter().filter(|m| healthy(m)).count();
    if healthy_now < quorum(voters.len()) {
        return Err(format!(
            "{healthy_now} of {} voters are healthy, too few to commit the removal{}",
            voters.len(),
            unhealthy()
        ));
    }
    Ok(())
}

/// May learner `id` be promoted? A promotion raises the quorum at once, so
/// the healthy voters plus the learner must hold quorum of the larger
/// configuration. Whether the learner is in sync is etcd's own check.
///
/// # Errors
/// The reason in words when the promotion is refused.
pub fn check_promotion(members: &[MemberView], id: u64) -> Result<(), String> {
    if !members.iter().any(|m| m.id == id && m.is_learner) {
        return Err(format!("member {id:x} is not a learner"));
    }
    let voters = members.iter().filter(|m| !m.is_learner).count();
    let healthy_voters = members
        .iter()
        .filter(|m| !m.is_learner && healthy(m))
        .count();
    let after = voters + 1;
    if healthy_voters + 1 < quorum(after) {
        return Err(format!(
            "only {healthy_voters} of {voters} voters are healthy; promoting would make {after} voters needing {}",
            quorum(after)
        ));
    }
    Ok(())
}

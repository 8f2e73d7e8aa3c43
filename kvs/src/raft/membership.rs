//! Cluster membership: voters and learners, and single-server changes
//! (Raft thesis §4.1, §4.2.1).
//!
//! ```text
//! AddLearner(id) ──▶ learner: replicated to, never counted, never votes
//! Promote(id)    ──▶ voter:   counted in quorums, may vote and campaign
//! Remove(id)     ──▶ gone:    a removed leader steps down once the removal commits
//! ```
//!
//! A configuration is carried by a [`Payload::Config`](super::Payload) entry
//! holding the whole resulting [`Membership`], and takes effect on a node as
//! soon as the entry is in its log, committed or not (thesis §4.1); a
//! truncated entry takes its configuration with it, and a snapshot carries
//! the configuration at its index.
//!
//! Invariants (enforced by [`Membership::apply`] and the leader):
//! - one change at a time: a leader appends a configuration only when the
//!   previous one is committed, and only after it has committed an entry of
//!   its own term (the fix to single-server changes of Ongaro's 2015 errata:
//!   otherwise a leader of a new term could combine an uncommitted change of
//!   an old term with its own and form disjoint majorities);
//! - each change adds or removes at most one voter, so any majority of the
//!   old voters and any majority of the new overlap;
//! - voters carry distinct names: a restarted process (a new incarnation)
//!   is promoted only after its previous incarnation is removed, which keeps
//!   the argument of `crate::lifecycle` (no two live clusters) valid.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Index, NodeId, Payload, Role};
use super::{Progress, RaftNode};

/// What the runtime knows a member by. The core only compares names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct MemberInfo {
    /// The stable name of the machine (one incarnation at a time runs under it).
    pub name: String,
    /// Where its peers reach it.
    pub addr: String,
}

/// Voters and learners, by incarnation id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Membership {
    /// Members counted in quorums.
    pub voters: BTreeMap<NodeId, MemberInfo>,
    /// Members that receive the log but neither vote nor count.
    pub learners: BTreeMap<NodeId, MemberInfo>,
}

/// One single-server change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// Adds a learner.
    AddLearner {
        /// The new member's incarnation id.
        id: NodeId,
        /// Its name and address.
        info: MemberInfo,
    },
    /// Makes a learner a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Removes a voter or learner.
    Remove {
        /// The member.
        id: NodeId,
    },
}

/// Why a configuration change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ConfChangeError {
    /// Only the leader changes the configuration.
    #[error("not the leader")]
    NotLeader,
    /// The previous change is not committed yet (or this leader has not
    /// committed an entry of its term); retry shortly.
    #[error("a configuration change is in progress")]
    InProgress,
    /// The change does not apply to the current configuration.
    #[error("invalid configuration change: {0}")]
    Invalid(String),
}

impl Membership {
    /// A configuration of voters only.
    pub fn with_voters(voters: impl IntoIterator<Item = (NodeId, MemberInfo)>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeMap::new(),
        }
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id) || self.learners.contains_key(&id)
    }

    /// A member's name and address.
    pub fn info(&self, id: NodeId) -> Option<&MemberInfo> {
        self.voters.get(&id).or_else(|| self.learners.get(&id))
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = (NodeId, &MemberInfo)> {
        self.voters
            .iter()
            .chain(self.learners.iter())
            .map(|(&id, info)| (id, info))
    }

    /// Votes or acknowledgements needed: a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The configuration after `change`, or why it does not apply.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        let invalid = |why: String| Err(ConfChangeError::Invalid(why));
        let mut next = self.clone();
        match change {
            ConfChange::AddLearner { id, info } => {
                if self.contains(*id) {
                    return invalid(format!("{id} is already a member"));
                }
                next.learners.insert(*id, info.clone());
            }
            ConfChange::Promote { id } => {
                let Some(info) = next.learners.remove(id) else {
                    return invalid(format!("{id} is not a learner"));
                };
                if self.voters.values().any(|v| v.name == info.name) {
                    return invalid(format!(
                        "a voter named {:?} exists; remove that incarnation first",
                        info.name
                    ));
                }
                next.voters.insert(*id, info);
            }
            ConfChange::Remove { id } => {
                if next.voters.remove(id).is_none() && next.learners.remove(id).is_none() {
                    return invalid(format!("{id} is not a member"));
                }
                if next.voters.is_empty() {
                    return invalid(format!("{id} is the last voter"));
                }
            }
        }
        Ok(next)
    }
}

impl RaftNode {
    /// Appends the configuration after `change`; returns its index. Leader
    /// only, one change at a time (see the module doc).
    pub fn propose_conf_change(&mut self, change: &ConfChange) -> Result<Index, ConfChangeError> {
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader);
        }
        if !self.committed_in_term
            || self.log.config_index() > self.log.committed
            || self.lead_transferee.is_some()
        {
            return Err(ConfChangeError::InProgress);
        }
        let next = self.config.apply(change)?;
        let index = self.append_own(Payload::Config(next));
        self.sync_config();
        Ok(index)
    }

    /// Adopts the log's latest configuration (called after every change to
    /// the log): a leader starts or stops replicating to members.
    pub(super) fn sync_config(&mut self) {
        if self.log.config() == &self.config {
            return;
        }
        self.config = self.log.config().clone();
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let config = &self.config;
        self.progress.retain(|id, _| config.contains(*id));
        for (id, _) in config.members() {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(last));
        }
        if self
            .lead_transferee
            .is_some_and(|t| !self.config.is_voter(t))
        {
            self.lead_transferee = None;
        }
        // The quorum may have shrunk.
        self.maybe_commit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            addr: String::new(),
        }
    }

    #[test]
    fn changes_apply_one_server_at_a_time_and_keep_names_distinct() {
        let m = Membership::with_voters([(1, info("a")), (2, info("b")), (3, info("c"))]);
        assert_eq!(m.quorum(), 2);
        let m = m
            .apply(&ConfChange::AddLearner {
                id: 4,
                info: info("c"),
            })
            .unwrap();
        assert!(m.contains(4) && !m.is_voter(4));
        assert_eq!(m.quorum(), 2, "learners do not count");
        let refused = m.apply(&ConfChange::Promote { id: 4 }).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("remove that incarnation first")
        );
        let m = m.apply(&ConfChange::Remove { id: 3 }).unwrap();
        let m = m.apply(&ConfChange::Promote { id: 4 }).unwrap();
        assert_eq!(m.voters.keys().copied().collect::<Vec<_>>(), [1, 2, 4]);
        assert!(m.apply(&ConfChange::Promote { id: 4 }).is_err());
        assert!(
            m.apply(&ConfChange::AddLearner {
                id: 1,
                info: info("x")
            })
            .is_err()
        );
        let one = Membership::with_voters([(1, info("a"))]);
        assert!(one.apply(&ConfChange::Remove { id: 1 }).is_err());
    }
}

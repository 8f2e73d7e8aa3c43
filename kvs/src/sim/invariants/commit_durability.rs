//! Commit Durability: no future election can lose a committed entry. This is
//! Leader Completeness (Raft §5.4.3) checked before the fact: the proof's
//! step is that a node lacking a committed entry is never at least as
//! up-to-date (Raft §5.4.1) as a node holding it, so it cannot collect a
//! quorum of votes. Here: for the highest committed entry, every node that
//! lacks it must be at least as up-to-date as fewer than a quorum of the
//! voters that would answer it (voters by its configuration that are voters
//! by their own). Figure 8's unsafe commit
//! fails this the moment it happens; so would a membership change that let
//! two majorities disagree.

use crate::raft::{Index, RaftNode, Term};

#[derive(Default)]
pub(crate) struct CommitDurability {
    /// The highest committed (index, term) seen on any node.
    highest: Option<(Index, Term)>,
}

impl CommitDurability {
    pub(crate) fn check(&mut self, changed: &RaftNode, all: &[&RaftNode]) -> Result<(), String> {
        let log = changed.log();
        if let Some(term) = log.term(log.committed)
            && log.committed > 0
            && self.highest.is_none_or(|(i, _)| log.committed > i)
        {
            self.highest = Some((log.committed, term));
        }
        let Some((index, term)) = self.highest else {
            return Ok(());
        };
        for c in all {
            if c.log().term(index) == Some(term)
                || index <= c.log().snapshot_index()
                || !c.is_voter()
            {
                continue;
            }
            let quorum = c.config().quorum();
            let (last_index, last_term) = (c.log().last_index(), c.log().last_term());
            let voters = all
                .iter()
                .filter(|v| {
                    c.config().is_voter(v.id())
                        && v.is_voter()
                        && v.log().is_up_to_date(last_index, last_term)
                })
                .count();
            if voters >= quorum {
                return Err(format!(
                    "commit durability: node {} lacks committed entry (index {index}, term {term}) yet its log \
                     (last index {last_index}, last term {last_term}) could win the votes of {voters} nodes",
                    c.id()
                ));
            }
        }
        Ok(())
    }
}

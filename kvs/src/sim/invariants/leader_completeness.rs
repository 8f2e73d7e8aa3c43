//! Leader Completeness: if an entry is committed in a term, it is present in
//! the logs of the leaders of all higher terms (Raft §5.4, Figure 3).
//!
//! Keeps the cluster's committed prefix as any node reports it (and checks
//! that all nodes agree on it), with the term in which each entry was
//! committed: the term of the first node seen committing it, which is the
//! leader that counted it (followers learn commits from leaders). A new
//! leader of term T must hold every entry committed in a term below T; a
//! leader of an older term, elected late by delayed votes, need not.

use super::{Step, digest};
use crate::raft::{Role, Term};

#[derive(Default)]
pub(crate) struct LeaderCompleteness {
    /// (entry term, digest, term it was committed in) of every committed entry, by index - 1.
    committed: Vec<(Term, u64, Term)>,
}

impl LeaderCompleteness {
    pub(crate) fn check(&mut self, step: &Step<'_>) -> Result<(), String> {
        let log = step.node.log();
        let id = step.node.id();
        for index in (step.commit_before + 1)..=log.committed {
            let Some(entry) = log.entry(index) else {
                // Covered by the node's snapshot. The first such index no
                // one committed as an entry is an epoch's seed (index 1).
                if index as usize == self.committed.len() + 1 {
                    self.committed.push((log.snapshot_term(), 0, 0));
                }
                continue;
            };
            let fact = (entry.term, digest(entry));
            match self.committed.get((index - 1) as usize) {
                Some(known) if (known.0, known.1) != fact => {
                    return Err(format!(
                        "committed entries differ: node {id} committed (index {index}, term {}) but (index {index}, term {}) was committed before",
                        entry.term, known.0
                    ));
                }
                Some(_) => {}
                None if index as usize == self.committed.len() + 1 => {
                    self.committed.push((fact.0, fact.1, step.node.term()))
                }
                None => {
                    return Err(format!(
                        "node {id} committed index {index} past the known committed prefix ({})",
                        self.committed.len()
                    ));
                }
            }
        }
        let became_leader = step.node.role() == Role::Leader && step.role_before != Role::Leader;
        if became_leader {
            let leader_term = step.node.term();
            for (i, &(term, hash, _)) in self
                .committed
                .iter()
                .enumerate()
                .filter(|(_, c)| c.2 < leader_term)
            {
                let index = i as u64 + 1;
                // A snapshot holds only committed entries: what it covers is present.
                let present = index <= log.snapshot_index()
                    || log
                        .entry(index)
                        .is_some_and(|e| e.term == term && digest(e) == hash);
                if !present {
                    return Err(format!(
                        "leader completeness: node {id} leads term {} without committed entry (index {index}, term {term})",
                        step.node.term()
                    ));
                }
            }
        }
        Ok(())
    }
}

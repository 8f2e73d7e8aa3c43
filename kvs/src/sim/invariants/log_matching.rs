//! Log Matching: if two logs contain an entry with the same index and term,
//! the logs are identical in all entries up through that index (Raft §5.3, Figure 3).
//!
//! Checked by induction: every (index, term) seen on any node must always
//! carry the same payload and follow an entry of the same term. Only the
//! changed node's uncommitted tail can have changed in a step (committed
//! entries are immutable, which state machine safety checks).

use std::collections::HashMap;

use super::{Step, digest};
use crate::raft::{Index, Term};

#[derive(Default)]
pub(crate) struct LogMatching {
    /// (index, term) → (payload digest, term of the entry before).
    seen: HashMap<(Index, Term), (u64, Term)>,
}

impl LogMatching {
    pub(crate) fn check(&mut self, step: &Step<'_>) -> Result<(), String> {
        let log = step.node.log();
        let from = step.commit_before.min(log.committed).max(1);
        for index in from..=log.last_index() {
            let Some(entry) = log.entry(index) else {
                continue;
            };
            let prev_term = log.term(index - 1).unwrap_or(0);
            let fact = (digest(entry), prev_term);
            match self.seen.insert((index, entry.term), fact) {
                Some(before) if before != fact => {
                    return Err(format!(
                        "log matching: node {} holds ({index}, term {}) with a different payload or predecessor than another node",
                        step.node.id(),
                        entry.term
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

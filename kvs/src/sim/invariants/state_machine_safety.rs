//! State Machine Safety: if a server has applied a log entry at a given
//! index, no other server will ever apply a different entry for that index
//! (Raft §5.4.3, Figure 3). Also: a node applies in order, without gaps.

use std::collections::BTreeMap;

use super::{Step, digest};
use crate::raft::{Index, NodeId, Term};

#[derive(Default)]
pub(crate) struct StateMachineSafety {
    applied: Vec<(Term, u64)>,
    last_applied: BTreeMap<NodeId, Index>,
}

impl StateMachineSafety {
    pub(crate) fn check(&mut self, step: &Step<'_>) -> Result<(), String> {
        let id = step.node.id();
        if self.applied.is_empty() {
            // Index 1 is the epoch's seed state (`crate::lifecycle`), which
            // every founding member starts from; the simulator checks that
            // they agree.
            self.applied.push((0, 0));
        }
        if let Some(meta) = &step.installed {
            // A snapshot stands for every entry up to its index (the
            // simulator checks its content against the applied state).
            let last = self.last_applied.entry(id).or_insert(0);
            if meta.index < *last {
                return Err(format!(
                    "node {id} installed a snapshot at {} behind its applied index {last}",
                    meta.index
                ));
            }
            *last = meta.index;
            if (self.applied.len() as u64) < meta.index {
                return Err(format!(
                    "node {id} installed a snapshot at {} that no node has applied",
                    meta.index
                ));
            }
        }
        let seeded = step.node.log().snapshot_index().min(1);
        for entry in step.applied {
            let last = self.last_applied.entry(id).or_insert(seeded);
            if entry.index != *last + 1 {
                return Err(format!(
                    "node {id} applied index {} after {}",
                    entry.index, last
                ));
            }
            *last = entry.index;
            let fact = (entry.term, digest(entry));
            match self.applied.get((entry.index - 1) as usize) {
                Some(known) if *known != fact => {
                    return Err(format!(
                        "state machine safety: node {id} applied (index {}, term {}) where another node applied term {}",
                        entry.index, entry.term, known.0
                    ));
                }
                Some(_) => {}
                None => self.applied.push(fact),
            }
        }
        Ok(())
    }
}

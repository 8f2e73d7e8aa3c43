//! The commit index of a node never decreases (Raft §5.3: committed means
//! durable; a node cannot "uncommit").

use std::collections::BTreeMap;

use super::Step;
use crate::raft::{Index, NodeId};

#[derive(Default)]
pub(crate) struct MonotonicCommit {
    highest: BTreeMap<NodeId, Index>,
}

impl MonotonicCommit {
    pub(crate) fn check(&mut self, step: &Step<'_>) -> Result<(), String> {
        let (id, commit) = (step.node.id(), step.node.log().committed);
        let highest = self.highest.entry(id).or_insert(0);
        if commit < *highest {
            return Err(format!(
                "node {id}'s commit index fell from {highest} to {commit}"
            ));
        }
        *highest = commit;
        Ok(())
    }
}

//! Election Safety: at most one leader can be elected in a given term (Raft §5.2, Figure 3).

use std::collections::BTreeMap;

use super::Step;
use crate::raft::{NodeId, Role, Term};

#[derive(Default)]
pub(crate) struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl ElectionSafety {
    pub(crate) fn check(&mut self, step: &Step<'_>) -> Result<(), String> {
        if step.node.role() != Role::Leader {
            return Ok(());
        }
        let (term, id) = (step.node.term(), step.node.id());
        match self.leaders.insert(term, id) {
            Some(other) if other != id => Err(format!(
                "election safety: nodes {other} and {id} both lead term {term}"
            )),
            _ => Ok(()),
        }
    }
}

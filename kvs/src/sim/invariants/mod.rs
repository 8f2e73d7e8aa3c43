//! Raft's safety properties, checked after every simulator step, one per module.
//!
//! A step changes one node (a tick, a delivered message, a client request),
//! so each check looks at that node against what the others have shown so far.

mod commit_durability;
mod election_safety;
mod leader_completeness;
mod log_matching;
mod monotonic_commit;
mod state_machine_safety;

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::raft::{Entry, Index, RaftNode, Role, SnapshotMeta};

/// What one step did to one node.
pub(crate) struct Step<'a> {
    pub(crate) node: &'a RaftNode,
    pub(crate) commit_before: Index,
    pub(crate) role_before: Role,
    /// Entries the node applied in this step.
    pub(crate) applied: &'a [Entry],
    /// A snapshot the node installed in this step (before `applied`).
    pub(crate) installed: Option<SnapshotMeta>,
}

/// All the checks, with what they remember.
#[derive(Default)]
pub(crate) struct Invariants {
    election: election_safety::ElectionSafety,
    matching: log_matching::LogMatching,
    completeness: leader_completeness::LeaderCompleteness,
    state_machine: state_machine_safety::StateMachineSafety,
    monotonic: monotonic_commit::MonotonicCommit,
    durability: commit_durability::CommitDurability,
}

impl Invariants {
    /// Checks `step`; `all` is every node, the changed one included.
    pub(crate) fn after_step(&mut self, step: &Step<'_>, all: &[&RaftNode]) -> Result<(), String> {
        self.election.check(step)?;
        self.matching.check(step)?;
        self.completeness.check(step)?;
        self.state_machine.check(step)?;
        self.monotonic.check(step)?;
        self.durability.check(step.node, all)
    }
}

/// A stable digest of an entry's payload.
pub(crate) fn digest(entry: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    entry.payload.hash(&mut h);
    h.finish()
}

//! The simulated network between Raft nodes.
//!
//! Invariants: every fault is drawn from the simulator's one RNG, so a seed
//! fixes which message is lost, duplicated or delayed; a blocked link
//! (`from → to`) drops everything sent on it while blocked, in that direction
//! only, so symmetric, asymmetric and one-way partitions are all sets of
//! blocked links.

use std::collections::BTreeSet;

use crate::raft::{NodeId, SplitMix64};

/// How links misbehave right now.
#[derive(Debug, Clone)]
pub(crate) struct LinkFaults {
    /// Probability that a message is lost.
    pub(crate) drop: f64,
    /// Probability that a message is delivered twice.
    pub(crate) duplicate: f64,
    /// Delivery delay range, in virtual ms (random delays reorder messages).
    pub(crate) delay_ms: (u64, u64),
}

impl LinkFaults {
    pub(crate) fn calm() -> Self {
        LinkFaults {
            drop: 0.0,
            duplicate: 0.0,
            delay_ms: (1, 3),
        }
    }
}

/// See the module doc.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub(crate) faults: LinkFaults,
    blocked: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    pub(crate) fn new() -> Self {
        Network {
            faults: LinkFaults::calm(),
            blocked: BTreeSet::new(),
        }
    }

    /// The delays at which copies of one message arrive (none if it is lost).
    pub(crate) fn deliveries(&self, from: NodeId, to: NodeId, rng: &mut SplitMix64) -> Vec<u64> {
        if self.blocked.contains(&(from, to)) || rng.chance(self.faults.drop) {
            return Vec::new();
        }
        let (lo, hi) = self.faults.delay_ms;
        let mut out = vec![rng.range(lo, hi + 1)];
        if rng.chance(self.faults.duplicate) {
            out.push(rng.range(lo, hi + 1));
        }
        out
    }

    /// Cuts `a` from `b` in both directions.
    pub(crate) fn cut(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Cuts only `from → to`.
    pub(crate) fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Splits the nodes into `side` and the rest.
    pub(crate) fn partition(&mut self, side: &[NodeId], all: &[NodeId]) {
        for &a in side {
            for &b in all.iter().filter(|b| !side.contains(b)) {
                self.cut(a, b);
            }
        }
    }

    pub(crate) fn heal(&mut self) {
        self.blocked.clear();
    }
}

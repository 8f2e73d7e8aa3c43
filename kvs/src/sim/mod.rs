//! The deterministic simulator: whole clusters of the store's members — the
//! very [`crate::member::Member`] the runtime drives — on a virtual network
//! and clock, driven by one `u64` seed.
//!
//! ```text
//!  event queue (virtual ms) ─▶ Tick(n) | Deliver(msg) | Lc(msg) | ClientRequest | ClientResponse
//!                               | Forward | ForwardAnswer | AttemptTimeout | Fault | Evict(n) | Restart(n)
//!        ▲                          │
//!        │          node n: Member::handle(input), Member::act, then its effects:
//!        │            Send ─▶ network (drop, duplicate, delay, partitions) ──────┐
//!        │            Answer ─▶ clients · Export ─▶ the shared export store     │
//!        └──────────────────────────────────────────────────────────────────────┘
//!  after every step: the invariants (one module each) on the node that changed,
//!  and every applied index's state against its peers' at that index
//!  at the end: liveness after healing, then linearizability of each epoch's history
//! ```
//!
//! Clients send each operation to their guess of the leader; a member that
//! does not lead forwards a write to the one it knows (over the same faulty
//! network) or holds it for one, as in production. An attempt unanswered
//! for a while goes elsewhere, a write with the same request id, so the
//! answer table that applies a retried write once is exercised. The
//! member's planted bugs (`MemberBugs`) and the Raft core's (`Bugs`) are each
//! caught within the default seed budget (`tests`).
//!
//! Faults: message loss, duplication, reordering and delay; symmetric,
//! asymmetric and one-way partitions; pauses (a node frozen, then resumed
//! with its memory); clock skew (each node ticks at its own rate); and Spot
//! evictions, where a node dies with its memory and an empty process takes
//! its name as a new incarnation: a minority, a majority, the whole fleet
//! (sometimes after an eviction notice), or churn replacing one node after
//! another. Nodes run `crate::lifecycle`, so they join, get replaced and
//! re-form epochs from the exports in a shared in-memory store. The
//! invariants and the linearizability check apply per epoch; `start_epoch`
//! checks that a re-formed epoch starts from exactly the newest export.
//!
//! Determinism: every choice comes from one [`SplitMix64`] seeded by the run's
//! seed; events at equal times run in scheduling order. `Report::trace_digest`
//! hashes every event, so a replay can be compared exactly.

mod cluster;
mod invariants;
mod network;
#[cfg(test)]
mod scenario;
#[cfg(test)]
mod tests;

pub(crate) use cluster::{Report, SimConfig, run};

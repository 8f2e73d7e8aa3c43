//! The leader's view of one follower's log (etcd's `Progress`).
//!
//! ```text
//!   Probe ──success──▶ Replicate ──rejection──▶ Probe
//!   (one AppendEntries in flight,     (up to max_inflight in flight,
//!    next_index found by back-off)     next_index advanced optimistically)
//!     │ next_index compacted away                 ▲
//!     └──────────▶ Snapshot ──last chunk taken────┘
//!                  (one chunk in flight)
//! ```
//!
//! Invariants: `match_index < next_index`; `match_index` never decreases
//! within a term; `inflight` holds the last index of each unacknowledged
//! AppendEntries, in increasing order.

use std::collections::VecDeque;

use super::types::Index;

/// How the leader sends to this follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding where the logs diverge: one message at a time.
    Probe,
    /// Streaming: several messages in flight.
    Replicate,
    /// The entries it needs are compacted: sending a snapshot, one chunk at a time.
    Snapshot,
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The highest index known to be replicated on the follower.
    pub match_index: Index,
    /// The next index to send.
    pub next_index: Index,
    /// How the leader sends.
    pub state: ProgressState,
    /// Last indexes of unacknowledged AppendEntries.
    pub inflight: VecDeque<Index>,
    /// Whether the follower answered since the last check-quorum round.
    pub recent_active: bool,
    /// In Probe, whether a message is outstanding; in Snapshot, whether a chunk is.
    pub probe_sent: bool,
    /// In Snapshot: the index of the snapshot being sent (0 while the
    /// leader waits for one to be taken).
    pub snapshot_index: Index,
    /// In Snapshot: the bytes of it the follower has.
    pub snapshot_offset: u64,
    /// In Snapshot: ticks since the chunk in flight was sent.
    pub chunk_ticks: u32,
}

impl Progress {
    /// A follower about which the new leader knows nothing yet.
    pub fn new(last_index: Index) -> Self {
        Progress {
            match_index: 0,
            next_index: last_index + 1,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            recent_active: false,
            probe_sent: false,
            snapshot_index: 0,
            snapshot_offset: 0,
            chunk_ticks: 0,
        }
    }

    /// Whether another AppendEntries may be sent now.
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot => !self.probe_sent,
            ProgressState::Replicate => self.inflight.len() < max_inflight,
        }
    }

    /// Records an AppendEntries that carries entries up to `last`.
    pub fn sent(&mut self, last: Index) {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot => self.probe_sent = true,
            ProgressState::Replicate => {
                if last >= self.next_index {
                    self.next_index = last + 1;
                    self.inflight.push_back(last);
                }
            }
        }
    }

    /// The follower's log matches up to `index`; returns whether that is news.
    pub fn acknowledge(&mut self, index: Index) -> bool {
        self.recent_active = true;
        self.probe_sent = false;
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index + 1);
        if self.state != ProgressState::Replicate {
            self.state = ProgressState::Replicate;
            self.inflight.clear();
        }
        true
    }

    /// The follower rejected an append after `rejected`; `next` is where the
    /// hint says to continue. Returns false for stale rejections (ignored).
    pub fn reject(&mut self, rejected: Index, next: Index) -> bool {
        self.recent_active = true;
        match self.state {
            // An answer to an old message of the stream: already superseded.
            ProgressState::Replicate if rejected <= self.match_index => false,
            ProgressState::Probe if rejected + 1 != self.next_index => false,
            ProgressState::Snapshot => false,
            _ => {
                self.state = ProgressState::Probe;
                self.inflight.clear();
                self.probe_sent = false;
                self.next_index =
                    next.clamp(self.match_index + 1, rejected.max(self.match_index + 1));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_then_replicate_then_back_off() {
        let mut p = Progress::new(10);
        assert!(p.can_send(4));
        p.sent(10);
        assert!(!p.can_send(4), "one probe at a time");
        // Rejected at 10: the hint says start at 6.
        assert!(p.reject(10, 6));
        assert_eq!(p.next_index, 6);
        p.sent(10);
        assert!(p.acknowledge(10));
        assert_eq!(p.state, ProgressState::Replicate);
        for last in [12, 14, 16, 18] {
            assert!(p.can_send(4));
            p.sent(last);
        }
        assert!(!p.can_send(4), "window full");
        assert!(p.acknowledge(14));
        assert_eq!(p.inflight, VecDeque::from([16, 18]));
        assert!(!p.reject(12, 5), "a stale rejection is ignored");
        assert_eq!(p.state, ProgressState::Replicate);
        assert!(p.reject(16, 15));
        assert_eq!((p.state, p.next_index), (ProgressState::Probe, 15));
    }
}

//! Linearizable reads without log writes: ReadIndex (Raft thesis §6.4).
//!
//! ```text
//! read_index(ctx) ─ follower ──ReadIndex──▶ leader ──ReadIndexResponse──▶ ReadState
//!                 └ leader: wait for a commit in its term, record commit index,
//!                   heartbeat with read_seq; a quorum of answers ⇒ ReadState
//! ```
//!
//! Invariants: a read's index is the leader's commit index when the request
//! arrived, taken only after the leader committed an entry of its own term;
//! it is released only after a quorum answered a heartbeat sent after the
//! request arrived (so no newer leader existed at that time); reads are
//! released in arrival order.

use std::collections::{BTreeSet, VecDeque};

use super::RaftNode;
use super::types::{Body, Index, NodeId, RaftError, ReadState, Role};

/// A read waiting for leadership confirmation.
#[derive(Debug, Clone)]
struct PendingRead {
    seq: u64,
    ctx: u64,
    from: NodeId,
    index: Index,
    acks: BTreeSet<NodeId>,
}

/// The leader's queue of reads, and a follower's forwarded ones.
#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    next_seq: u64,
    /// Leader: waiting for a heartbeat quorum.
    pending: VecDeque<PendingRead>,
    /// Leader: arrived before an entry of this term was committed.
    waiting_commit: Vec<(NodeId, u64)>,
    /// Follower: sent to the leader, not answered yet: (ctx, ticks waited).
    forwarded: Vec<(u64, u32)>,
}

impl ReadQueue {
    pub(super) fn last_seq(&self) -> u64 {
        self.next_seq
    }

    fn len(&self) -> usize {
        self.pending.len() + self.waiting_commit.len() + self.forwarded.len()
    }
}

impl RaftNode {
    /// Asks for a linearizable read identified by `ctx`; a [`ReadState`] with
    /// the same `ctx` appears in a later [`super::Ready`] (or `ctx` in its
    /// `dropped_reads`).
    pub fn read_index(&mut self, ctx: u64) -> Result<(), RaftError> {
        if self.reads.len() >= self.cfg.max_pending_reads {
            return Err(RaftError::TooManyPendingReads);
        }
        #[cfg(test)]
        if self.cfg.bugs.follower_read_without_read_index && self.role != Role::Leader {
            let index = self.log.committed;
            self.read_states.push(ReadState { ctx, index });
            return Ok(());
        }
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.accept_read(self.cfg.id, ctx);
                Ok(())
            }
            (_, Some(leader)) => {
                self.reads.forwarded.push((ctx, 0));
                self.send(leader, Body::ReadIndex { ctx });
                Ok(())
            }
            (_, None) => Err(RaftError::NotLeader { leader: None }),
        }
    }

    /// Leader: a read from `from` (itself or a follower) arrives.
    fn accept_read(&mut self, from: NodeId, ctx: u64) {
        if !self.committed_in_term {
            self.reads.waiting_commit.push((from, ctx));
            return;
        }
        let index = self.log.committed;
        if self.config.voters.len() == 1 && self.config.is_voter(self.cfg.id) {
            return self.answer_read(from, ctx, Some(index));
        }
        self.reads.next_seq += 1;
        self.reads.pending.push_back(PendingRead {
            seq: self.reads.next_seq,
            ctx,
            from,
            index,
            acks: BTreeSet::from([self.cfg.id]),
        });
        self.broadcast_heartbeat();
    }

    fn answer_read(&mut self, to: NodeId, ctx: u64, index: Option<Index>) {
        if to == self.cfg.id {
            match index {
                Some(index) => self.read_states.push(ReadState { ctx, index }),
                None => self.dropped_reads.push(ctx),
            }
        } else {
            self.send(to, Body::ReadIndexResponse { ctx, index });
        }
    }

    pub(super) fn release_reads_waiting_for_commit(&mut self) {
        for (from, ctx) in std::mem::take(&mut self.reads.waiting_commit) {
            self.accept_read(from, ctx);
        }
    }

    /// Leader: `from` answered a heartbeat carrying `read_seq`, confirming
    /// every read up to it.
    pub(super) fn confirm_reads(&mut self, from: NodeId, read_seq: u64) {
        for read in self
            .reads
            .pending
            .iter_mut()
            .take_while(|r| r.seq <= read_seq)
        {
            read.acks.insert(from);
        }
        let quorum = self.quorum();
        loop {
            let config = &self.config;
            let confirmed = self.reads.pending.front().is_some_and(|r| {
                r.acks.iter().filter(|&&id| config.is_voter(id)).count() >= quorum
            });
            if !confirmed {
                break;
            }
            if let Some(read) = self.reads.pending.pop_front() {
                self.answer_read(read.from, read.ctx, Some(read.index));
            }
        }
    }

    pub(super) fn handle_read_index_request(&mut self, from: NodeId, ctx: u64) {
        if self.role == Role::Leader {
            self.accept_read(from, ctx);
        } else {
            self.send(from, Body::ReadIndexResponse { ctx, index: None });
        }
    }

    pub(super) fn handle_read_index_response(&mut self, ctx: u64, index: Option<Index>) {
        let Some(pos) = self.reads.forwarded.iter().position(|&(c, _)| c == ctx) else {
            return;
        };
        self.reads.forwarded.swap_remove(pos);
        match index {
            Some(index) => self.read_states.push(ReadState { ctx, index }),
            None => self.dropped_reads.push(ctx),
        }
    }

    /// A leader stepping down fails every read it holds.
    pub(super) fn drop_leader_reads(&mut self) {
        let pending: Vec<(NodeId, u64)> = self
            .reads
            .pending
            .drain(..)
            .map(|r| (r.from, r.ctx))
            .chain(std::mem::take(&mut self.reads.waiting_commit))
            .collect();
        for (from, ctx) in pending {
            self.answer_read(from, ctx, None);
        }
    }

    /// A follower whose leader changed fails the reads it forwarded.
    pub(super) fn drop_forwarded_reads(&mut self) {
        let forwarded = std::mem::take(&mut self.reads.forwarded);
        self.dropped_reads
            .extend(forwarded.into_iter().map(|(ctx, _)| ctx));
    }

    /// Fails forwarded reads unanswered for two election timeouts (the
    /// request or its answer was lost).
    pub(super) fn expire_forwarded_reads(&mut self) {
        let limit = 2 * self.cfg.election_tick;
        let dropped = &mut self.dropped_reads;
        self.reads.forwarded.retain_mut(|(ctx, waited)| {
            *waited += 1;
            if *waited >= limit {
                dropped.push(*ctx);
                return false;
            }
            true
        });
    }
}

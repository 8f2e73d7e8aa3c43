//! Log replication: AppendEntries, heartbeats and the commit rule.
//!
//! ```text
//! leader: propose ─▶ log ─▶ send_appends (batched, ≤ max_inflight per follower)
//!                     ▲                         │
//!      commit ◀─ quorum of match_index ◀── AppendEntriesResponse (hint on reject)
//! ```
//!
//! Invariants: a leader commits index N only if a quorum has N and the entry
//! at N is of the leader's term (Raft §5.4.2); a follower commits at most up
//! to what it knows matches the leader's log.

use super::RaftNode;
use super::log::AppendOutcome;
use super::types::{Body, Entry, Index, NodeId, Payload, RejectHint, Role};

impl RaftNode {
    /// Leader: appends an entry of the current term and counts itself.
    pub(super) fn append_own(&mut self, payload: Payload) -> Index {
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.term,
            index,
            payload,
        });
        let me = self.cfg.id;
        if let Some(pr) = self.progress.get_mut(&me) {
            pr.acknowledge(index);
        }
        self.maybe_commit();
        index
    }

    /// Leader: sends what each follower is missing, within its window.
    pub(super) fn send_appends(&mut self) {
        for peer in self.member_peers() {
            while let Some(pr) = self.progress.get(&peer) {
                let pending = pr.next_index <= self.log.last_index();
                let probing = pr.state == super::ProgressState::Probe && !pr.probe_sent;
                if !(pending || probing) || !pr.can_send(self.cfg.max_inflight) {
                    break;
                }
                self.send_append(peer);
                if probing {
                    break;
                }
            }
        }
    }

    /// Leader: one AppendEntries to `to` from its `next_index`.
    pub(super) fn send_append(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        if !pr.can_send(self.cfg.max_inflight) {
            return;
        }
        let prev_log_index = pr.next_index - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // Compacted away: the follower needs the snapshot.
            return self.send_snapshot_chunk(to);
        };
        let entries = self.log.slice_bytes(
            pr.next_index,
            self.log.last_index(),
            self.cfg.max_batch_entries,
            self.cfg.max_batch_bytes,
        );
        let last = prev_log_index + entries.len() as Index;
        let leader_commit = self.log.committed;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent(last);
        }
        self.send(
            to,
            Body::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            },
        );
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let read_seq = self.reads.last_seq();
        for peer in self.member_peers() {
            let matched = self.progress.get(&peer).map_or(0, |pr| pr.match_index);
            let commit = self.log.committed.min(matched);
            self.send(peer, Body::Heartbeat { commit, read_seq });
        }
    }

    /// Leader: advances the commit index to what a quorum holds (Raft §5.3, §5.4.2).
    pub(super) fn maybe_commit(&mut self) {
        let mut matched: Vec<Index> = self
            .config
            .voters
            .keys()
            .map(|id| self.progress.get(id).map_or(0, |pr| pr.match_index))
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matched.get(self.quorum() - 1) else {
            return;
        };
        #[cfg(test)]
        let own_term = self.cfg.bugs.commit_old_term_by_counting
            || self.log.term(candidate) == Some(self.term);
        #[cfg(not(test))]
        let own_term = self.log.term(candidate) == Some(self.term);
        // Raft §5.4.2: only entries of the leader's own term commit by counting.
        if own_term && self.log.commit_to(candidate) && !self.committed_in_term {
            self.committed_in_term = self.log.term(self.log.committed) == Some(self.term);
            if self.committed_in_term {
                self.release_reads_waiting_for_commit();
            }
        }
        // Thesis §4.2.2: a leader removed from the configuration leads until
        // the removal commits, then steps down.
        if !self.is_voter() && self.log.committed >= self.log.config_index() {
            self.become_follower(self.term, None);
        }
    }

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: Index,
        prev_log_term: u64,
        entries: &[Entry],
        leader_commit: Index,
    ) {
        self.follow(from);
        if prev_log_index < self.log.committed {
            // Everything up to our commit index is the leader's log too
            // (Raft §5.4), and may be compacted away here: rather than
            // reject a `prev` we no longer hold, say where to go on from
            // (etcd's raft answers the same).
            let index = self.log.committed;
            return self.send(
                from,
                Body::AppendEntriesResponse {
                    success: true,
                    index,
                    hint: None,
                },
            );
        }
        let body = match self
            .log
            .append_after(prev_log_index, prev_log_term, entries)
        {
            AppendOutcome::Matched { last_new } => {
                self.log.commit_to(leader_commit.min(last_new));
                Body::AppendEntriesResponse {
                    success: true,
                    index: last_new,
                    hint: None,
                }
            }
            AppendOutcome::Rejected(hint) => Body::AppendEntriesResponse {
                success: false,
                index: prev_log_index,
                hint: Some(hint),
            },
        };
        self.send(from, body);
    }

    /// A message from the leader of the current term arrived.
    pub(super) fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            self.become_follower(self.term, Some(leader));
        }
        self.election_elapsed = 0;
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, commit: Index, read_seq: u64) {
        self.follow(from);
        self.log.commit_to(commit);
        self.send(from, Body::HeartbeatResponse { read_seq });
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: Index,
        hint: Option<RejectHint>,
    ) {
        if self.role != Role::Leader {
            return;
        }
        if success {
            let advanced = self
                .progress
                .get_mut(&from)
                .is_some_and(|pr| pr.acknowledge(index));
            if advanced {
                self.maybe_commit();
                self.maybe_finish_transfer(from);
            }
        } else if let Some(hint) = hint {
            let next = match hint.conflict_term {
                Some(term) => self
                    .log
                    .last_index_of_term(term, index)
                    .map_or(hint.conflict_index, |i| i + 1),
                None => hint.conflict_index,
            };
            let retry = self
                .progress
                .get_mut(&from)
                .is_some_and(|pr| pr.reject(index, next));
            if retry {
                self.send_append(from);
            }
        }
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.recent_active = true;
            // A snapshot chunk is sent again only after a timeout
            // (`tick_snapshots`): chunks are large, and one still on its way
            // would be followed by copies of itself on every heartbeat.
            if pr.state != super::ProgressState::Snapshot {
                pr.probe_sent = false;
            }
            // A lost AppendEntries would otherwise hold its window slot for ever.
            if pr.inflight.len() >= self.cfg.max_inflight {
                pr.inflight.pop_front();
            }
        }
        self.confirm_reads(from, read_seq);
        let behind = self
            .progress
            .get(&from)
            .is_some_and(|pr| pr.match_index < self.log.last_index());
        if behind {
            self.send_append(from);
        }
    }
}

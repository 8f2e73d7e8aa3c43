//! Elections: timers, pre-vote, votes, role changes, check-quorum and leader transfer.
//!
//! ```text
//!            timeout                 pre-vote quorum            vote quorum
//! Follower ──────────▶ PreCandidate ───────────────▶ Candidate ───────────▶ Leader
//!    ▲  ▲                  │ rejected by a quorum       │ higher term / AE     │ higher term,
//!    │  └──────────────────┘                            │                      │ lost quorum
//!    └──────────────────────────────────────────────────┴──────────────────────┘
//! ```
//!
//! Invariants: a node grants at most one vote per term (`voted_for`); it
//! grants only to candidates whose log is at least as up-to-date as its own
//! (Raft §5.4.1); while it has heard from a leader within an election timeout
//! it ignores vote requests of higher terms unless they come from a leader
//! transfer (thesis §4.2.3).

use super::types::{Body, Message, NodeId, Payload, Role, Term};
use super::{Progress, RaftNode};

impl RaftNode {
    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = u64::from(self.cfg.election_tick);
        self.randomized_election_timeout = (base + self.rng.below(base)) as u32;
    }

    /// Whether this node heard from a leader within the last election timeout.
    pub(super) fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_tick
    }

    pub(super) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_timeout && self.is_voter() {
            self.campaign(false);
        }
    }

    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            // A transfer that did not finish within an election timeout is abandoned.
            self.lead_transferee = None;
            self.quorum_contact = self.quorum_active();
            if self.cfg.check_quorum && !self.quorum_contact {
                // Raft thesis §6.2: a leader that cannot reach a quorum steps down.
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Counts followers heard from since the last check, and resets the marks.
    fn quorum_active(&mut self) -> bool {
        let me = self.cfg.id;
        let mut active = 0;
        for (id, pr) in self.progress.iter_mut() {
            if self.config.is_voter(*id) && (*id == me || pr.recent_active) {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= self.quorum()
    }

    /// Starts an election: a pre-vote first unless `transfer` or pre-vote is off.
    pub(super) fn campaign(&mut self, transfer: bool) {
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.cfg.id, true);
        if self.votes_won() {
            return self.become_candidate(false);
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.voter_peers() {
            self.send_with_term(
                peer,
                self.term + 1,
                Body::PreVote {
                    last_log_index,
                    last_log_term,
                },
            );
        }
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.term += 1;
        self.voted_for = Some(self.cfg.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.cfg.id, true);
        if self.votes_won() {
            return self.become_leader();
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.voter_peers() {
            self.send(
                peer,
                Body::RequestVote {
                    last_log_index,
                    last_log_term,
                    transfer,
                },
            );
        }
    }

    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.committed_in_term = false;
        self.lead_transferee = None;
        // Elected by a quorum just now.
        self.quorum_contact = true;
        let last = self.log.last_index();
        self.progress = self
            .config
            .members()
            .map(|(id, _)| (id, Progress::new(last)))
            .collect();
        // Raft §8: a new leader commits an entry of its own term to learn what is committed.
        self.append_own(Payload::Noop);
    }

    /// Steps down to follower in `term`, following `leader` if known.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
        }
        let was_leader = self.role == Role::Leader;
        self.role = Role::Follower;
        if leader != self.leader {
            self.drop_forwarded_reads();
        }
        self.leader = leader;
        self.reset_election_timer();
        self.votes.clear();
        self.progress.clear();
        self.lead_transferee = None;
        if was_leader {
            self.drop_leader_reads();
        }
    }

    /// Becomes a follower of no one in `term`, keeping the election timer running.
    pub(super) fn step_down(&mut self, term: Term) {
        let (elapsed, timeout) = (self.election_elapsed, self.randomized_election_timeout);
        self.become_follower(term, None);
        self.election_elapsed = elapsed;
        self.randomized_election_timeout = timeout;
    }

    fn count_votes(&self, granted: bool) -> usize {
        self.votes
            .iter()
            .filter(|&(&id, &v)| v == granted && self.config.is_voter(id))
            .count()
    }

    fn votes_won(&self) -> bool {
        self.count_votes(true) >= self.quorum()
    }

    fn votes_lost(&self) -> bool {
        self.count_votes(false) >= self.quorum()
    }

    pub(super) fn handle_vote_request(&mut self, m: &Message) {
        let (last_log_index, last_log_term, pre) = match m.body {
            Body::PreVote {
                last_log_index,
                last_log_term,
            } => (last_log_index, last_log_term, true),
            Body::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => (last_log_index, last_log_term, false),
            _ => return,
        };
        #[cfg(test)]
        let up_to_date = self.cfg.bugs.vote_without_log_check
            || self.log.is_up_to_date(last_log_index, last_log_term);
        #[cfg(not(test))]
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term);
        if pre {
            // Granted if a real vote in that term could be (thesis §9.6).
            let granted = m.term > self.term && up_to_date;
            let term = if granted { m.term } else { self.term };
            return self.send_with_term(m.from, term, Body::PreVoteResponse { granted });
        }
        let can_vote =
            self.voted_for == Some(m.from) || (self.voted_for.is_none() && self.leader.is_none());
        let granted = can_vote && up_to_date;
        if granted {
            self.voted_for = Some(m.from);
            self.reset_election_timer();
        }
        self.send(m.from, Body::RequestVoteResponse { granted });
    }

    pub(super) fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate || term != self.term + 1 {
            return;
        }
        self.votes.insert(from, granted);
        if self.votes_won() {
            self.become_candidate(false);
        } else if self.votes_lost() {
            self.become_follower(self.term, None);
        }
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(from, granted);
        if self.votes_won() {
            self.become_leader();
        } else if self.votes_lost() {
            self.become_follower(self.term, None);
        }
    }

    /// Hands leadership to `to` (thesis §3.10): brings it up to date, then
    /// tells it to campaign. Proposals are refused meanwhile.
    pub fn transfer_leadership(&mut self, to: NodeId) -> bool {
        if self.role != Role::Leader || to == self.cfg.id || !self.config.is_voter(to) {
            return false;
        }
        self.lead_transferee = Some(to);
        self.election_elapsed = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|pr| pr.match_index == self.log.last_index());
        if caught_up {
            self.send(to, Body::TimeoutNow);
        } else {
            self.send_append(to);
        }
        true
    }

    /// Called when `to` acknowledged the whole log during a transfer.
    pub(super) fn maybe_finish_transfer(&mut self, from: NodeId) {
        let caught_up = self
            .progress
            .get(&from)
            .is_some_and(|pr| pr.match_index == self.log.last_index());
        if self.lead_transferee == Some(from) && caught_up {
            self.send(from, Body::TimeoutNow);
        }
    }

    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role != Role::Leader && self.leader == Some(from) && self.is_voter() {
            self.campaign(true);
        }
    }
}

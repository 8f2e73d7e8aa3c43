//! The Raft core: a deterministic state machine with no I/O, clock or global RNG.
//!
//! ```text
//!  runtime ──step(msg) / tick() / propose(cmd) / read_index(ctx)──▶ RaftNode
//!     ▲                                                               │
//!     └──────── take_ready(): messages, committed entries, reads ◀────┘
//! ```
//!
//! Time is ticks; randomness comes from a [`SplitMix64`] seeded by the
//! caller. A [`NodeId`] names one incarnation of a member: state is never
//! persisted, so a restarted process comes back under a new id, as a
//! learner (`membership`), and can never vote with a term or vote it has
//! forgotten. Everything lives in memory: there is no stable storage to
//! write before sending, so taking the [`Ready`] is also its `advance`.
//!
//! # Layout
//!
//! - `types`: entries, messages, [`Ready`].
//! - `log`: [`RaftLog`], the in-memory log and its commit/apply cursors.
//! - `progress`: the leader's [`Progress`] per follower (probe / replicate).
//! - `election`: pre-vote, votes, role changes, check-quorum, leader transfer.
//! - `replication`: AppendEntries and heartbeats, commit.
//! - `read`: ReadIndex on leaders and followers.
//! - `snapshot`: compaction and chunked InstallSnapshot.
//! - `membership`: learners and single-server configuration changes.
//!
//! # Invariants kept (checked by the simulator, `crate::sim`)
//!
//! - at most one leader per term (Raft §5.2); a node votes at most once per term;
//! - a leader only commits by counting replicas of an entry of its own term (Raft §5.4.2);
//! - entries at or below the commit index are never replaced (Raft §5.4);
//! - the commit index never decreases;
//! - a read is answered with an index only after a quorum confirmed the
//!   leadership of the node that chose it, after that request arrived (thesis §6.4).

mod election;
pub mod log;
pub mod membership;
pub mod progress;
mod read;
mod replication;
pub mod rng;
mod snapshot;
pub mod types;

use std::collections::BTreeMap;

pub use log::RaftLog;
pub use membership::{ConfChange, ConfChangeError, MemberInfo, Membership};
pub use progress::{Progress, ProgressState};
pub use rng::SplitMix64;
pub use types::*;

use read::ReadQueue;

/// Deliberately broken behaviours, to prove the simulator catches them.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Commit an entry of an earlier term by counting its replicas (Raft §5.4.2, Figure 8).
    pub commit_old_term_by_counting: bool,
    /// Grant votes without the log up-to-date check (Raft §5.4.1).
    pub vote_without_log_check: bool,
    /// Serve follower reads at the local commit index, without ReadIndex.
    pub follower_read_without_read_index: bool,
    /// Hand out entries to apply before they are committed.
    pub apply_before_commit: bool,
}

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The initial voters, this node included, for a cluster started from
    /// an empty log (names are the ids); empty for a node that joins.
    pub voters: Vec<NodeId>,
    /// Ticks without a leader before campaigning (randomized up to twice this).
    pub election_tick: u32,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: u32,
    /// Most entries in one AppendEntries.
    pub max_batch_entries: usize,
    /// Most command bytes in one AppendEntries (a larger single entry goes alone).
    pub max_batch_bytes: usize,
    /// Most unacknowledged AppendEntries per follower.
    pub max_inflight: usize,
    /// Ask before campaigning, so a rejoining node does not disrupt the cluster.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down.
    pub check_quorum: bool,
    /// Most reads waiting for leadership confirmation.
    pub max_pending_reads: usize,
    /// Bytes per InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Applied entries kept in the log however far it could be cut, so a
    /// follower a little behind gets entries rather than a whole snapshot
    /// (etcd keeps 5,000).
    pub retain_entries: u64,
    /// Test-only defects.
    #[cfg(test)]
    pub bugs: Bugs,
}

impl Config {
    /// Defaults for a node `id` among `voters`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            election_tick: 10,
            heartbeat_tick: 1,
            max_batch_entries: 256,
            max_batch_bytes: 256 * 1024,
            max_inflight: 16,
            pre_vote: true,
            check_quorum: true,
            max_pending_reads: 4096,
            snapshot_chunk_bytes: 512 * 1024,
            retain_entries: 0,
            #[cfg(test)]
            bugs: Bugs::default(),
        }
    }
}

/// One Raft member. See the module doc.
#[derive(Debug)]
pub struct RaftNode {
    cfg: Config,
    /// The configuration in effect (always `log.config()`).
    config: Membership,
    term: Term,
    voted_for: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    rng: SplitMix64,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    /// Votes (or pre-votes) received in the current campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Leader only: each follower's progress.
    progress: BTreeMap<NodeId, Progress>,
    /// Leader only: whether an entry of the current term is committed.
    committed_in_term: bool,
    /// Leader only: whether a quorum answered within the last election
    /// timeout (tracked with or without check-quorum).
    quorum_contact: bool,
    lead_transferee: Option<NodeId>,
    reads: ReadQueue,
    msgs: Vec<Message>,
    read_states: Vec<ReadState>,
    dropped_reads: Vec<u64>,
    /// Leader: the snapshot being sent to followers that need compacted
    /// entries (taken on demand, dropped once no transfer needs it).
    snapshot: Option<(SnapshotMeta, bytes::Bytes)>,
    /// Leader: a follower needs a snapshot and none is held.
    snapshot_wanted: bool,
    /// Follower: a snapshot being received.
    incoming: Option<(SnapshotMeta, bytes::BytesMut)>,
    /// Follower: an installed snapshot for the runtime to restore.
    ready_snapshot: Option<(SnapshotMeta, bytes::Bytes)>,
}

impl RaftNode {
    /// A follower in term 0 with an empty log whose configuration is
    /// `cfg.voters`; `seed` drives its election timeouts.
    pub fn new(cfg: Config, seed: u64) -> Self {
        let config = Membership::with_voters(cfg.voters.iter().map(|&id| {
            (
                id,
                MemberInfo {
                    name: id.to_string(),
                    addr: String::new(),
                },
            )
        }));
        Self::from_snapshot(
            cfg,
            seed,
            SnapshotMeta {
                index: 0,
                term: 0,
                config,
            },
        )
    }

    /// A follower in term 0 whose log starts after the snapshot `meta`
    /// (the state machine holds its state): a member of a new cluster
    /// seeded with a known state, or (with an empty configuration) a node
    /// waiting to be added by a leader.
    pub fn from_snapshot(cfg: Config, seed: u64, meta: SnapshotMeta) -> Self {
        let log = RaftLog::from_snapshot(meta.index, meta.term, meta.config.clone());
        let mut node = RaftNode {
            cfg,
            config: meta.config.clone(),
            term: 0,
            voted_for: None,
            role: Role::Follower,
            leader: None,
            log,
            rng: SplitMix64::new(seed),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            committed_in_term: false,
            quorum_contact: false,
            lead_transferee: None,
            reads: ReadQueue::default(),
            msgs: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            snapshot: None,
            snapshot_wanted: false,
            incoming: None,
            ready_snapshot: None,
        };
        node.reset_election_timer();
        node
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Ticks since this node last heard from a leader (0 on a leader).
    pub fn ticks_since_leader(&self) -> u32 {
        if self.role == Role::Leader {
            0
        } else {
            self.election_elapsed
        }
    }

    /// Whether this node leads with a quorum heard from within the last
    /// election timeout: a leader that could commit.
    pub fn leads_with_quorum(&self) -> bool {
        self.role == Role::Leader && self.quorum_contact
    }

    /// Whom this node voted for in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }

    /// The log.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Membership {
        &self.config
    }

    /// Whether this node is a voter in its configuration.
    pub fn is_voter(&self) -> bool {
        self.config.is_voter(self.cfg.id)
    }

    /// Leader only: the progress of each follower.
    pub fn progress(&self) -> &BTreeMap<NodeId, Progress> {
        &self.progress
    }

    fn quorum(&self) -> usize {
        self.config.quorum()
    }

    fn send(&mut self, to: NodeId, body: Body) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, body: Body) {
        self.msgs.push(Message {
            from: self.cfg.id,
            to,
            term,
            body,
        });
    }

    /// The other voters: whom to ask for votes.
    fn voter_peers(&self) -> Vec<NodeId> {
        self.config
            .voters
            .keys()
            .copied()
            .filter(|&p| p != self.cfg.id)
            .collect()
    }

    /// The other members, learners included: whom to replicate to.
    fn member_peers(&self) -> Vec<NodeId> {
        self.config
            .members()
            .map(|(id, _)| id)
            .filter(|&p| p != self.cfg.id)
            .collect()
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.expire_forwarded_reads();
        match self.role {
            Role::Leader => {
                self.tick_snapshots();
                self.tick_leader();
            }
            _ => {
                self.snapshot = None;
                self.snapshot_wanted = false;
                self.tick_election();
            }
        }
    }

    /// Appends a command to the log; returns its index. Leader only.
    pub fn propose(&mut self, command: bytes::Bytes) -> Result<Index, RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::TransferInProgress);
        }
        Ok(self.append_own(Payload::Command(command)))
    }

    /// Handles one message from a peer (Raft §5.1's term rules first).
    pub fn step(&mut self, m: Message) {
        if m.to != self.cfg.id {
            return;
        }
        let is_vote_request = matches!(m.body, Body::PreVote { .. } | Body::RequestVote { .. });
        // Only voters give votes: a restarted node (a learner until
        // promoted) or a removed one never votes. A candidate's request is
        // answered even if it is not a voter in our configuration: it may
        // hold a newer one (thesis §4.1); disruption by removed members is
        // what pre-vote and the leader lease are for (thesis §4.2.3).
        if is_vote_request && !self.is_voter() {
            return;
        }
        self.step_inner(m);
        self.sync_config();
    }

    fn step_inner(&mut self, m: Message) {
        if m.term > self.term {
            if self.ignore_higher_term(&m) {
                return;
            }
        } else if m.term < self.term {
            self.answer_stale(&m);
            return;
        }
        match m.body {
            Body::PreVote { .. } | Body::RequestVote { .. } => self.handle_vote_request(&m),
            Body::PreVoteResponse { granted } => {
                self.handle_pre_vote_response(m.from, m.term, granted)
            }
            Body::RequestVoteResponse { granted } => self.handle_vote_response(m.from, granted),
            Body::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => self.handle_append(
                m.from,
                prev_log_index,
                prev_log_term,
                &entries,
                leader_commit,
            ),
            Body::AppendEntriesResponse {
                success,
                index,
                hint,
            } => self.handle_append_response(m.from, success, index, hint),
            Body::Heartbeat { commit, read_seq } => self.handle_heartbeat(m.from, commit, read_seq),
            Body::HeartbeatResponse { read_seq } => {
                self.handle_heartbeat_response(m.from, read_seq)
            }
            Body::ReadIndex { ctx } => self.handle_read_index_request(m.from, ctx),
            Body::ReadIndexResponse { ctx, index } => self.handle_read_index_response(ctx, index),
            Body::TimeoutNow => self.handle_timeout_now(m.from),
            Body::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => self.handle_install_snapshot(m.from, meta, offset, &data, done),
            Body::InstallSnapshotResponse {
                index,
                offset,
                next_offset,
                installed,
            } => {
                self.handle_install_snapshot_response(m.from, index, offset, next_offset, installed)
            }
        }
    }

    /// Decides what a message of a higher term does to this node (Raft §5.1,
    /// with the pre-vote and lease rules of thesis §9.6). Returns true if it
    /// is to be ignored.
    fn ignore_higher_term(&mut self, m: &Message) -> bool {
        let is_vote = matches!(
            m.body,
            Body::PreVote { .. }
                | Body::RequestVote {
                    transfer: false,
                    ..
                }
        );
        if is_vote && self.in_lease() {
            // Heard from a live leader recently: a disruptive candidate.
            return true;
        }
        match m.body {
            // A pre-vote does not change terms; nor does a granted pre-vote answer.
            Body::PreVote { .. } | Body::PreVoteResponse { granted: true } => {}
            Body::AppendEntries { .. } | Body::Heartbeat { .. } => {
                self.become_follower(m.term, Some(m.from))
            }
            // Raft §5.2 (Figure 2): only a leader's messages and granted votes
            // reset the election timer; a candidate that cannot win must not
            // keep up-to-date nodes from campaigning.
            _ => self.step_down(m.term),
        }
        false
    }

    /// Answers a message from an older term where that helps its sender catch up.
    fn answer_stale(&mut self, m: &Message) {
        match m.body {
            // Raft §5.1: replies carry the current term, so a partitioned old
            // leader learns the new term and steps down.
            Body::AppendEntries { .. } | Body::Heartbeat { .. } => {
                self.send(
                    m.from,
                    Body::AppendEntriesResponse {
                        success: false,
                        index: 0,
                        hint: None,
                    },
                );
            }
            Body::PreVote { .. } => self.send(m.from, Body::PreVoteResponse { granted: false }),
            _ => {}
        }
    }

    /// Everything the runtime must do now. Taking it is also advancing it.
    pub fn take_ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.send_appends();
        }
        #[cfg(test)]
        let up_to = if self.cfg.bugs.apply_before_commit {
            self.log.last_index()
        } else {
            self.log.committed
        };
        #[cfg(not(test))]
        let up_to = self.log.committed;
        Ready {
            messages: std::mem::take(&mut self.msgs),
            committed: self.log.take_committed(up_to),
            read_states: std::mem::take(&mut self.read_states),
            dropped_reads: std::mem::take(&mut self.dropped_reads),
            snapshot: self.ready_snapshot.take(),
        }
    }
}

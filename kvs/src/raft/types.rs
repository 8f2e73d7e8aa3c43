//! The values the Raft core exchanges with its runtime and its peers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::membership::Membership;

// A member's identity (a restarted process gets a new one, an
// incarnation), a term (Raft §5.1), a log position (the first entry has
// index 1, 0 means "none") and the role: wire types, defined with the
// client's view of a member's status.
pub use kvs_api::{Index, NodeId, Role, Term};

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position.
    pub index: Index,
    /// What it carries.
    pub payload: Payload,
}

impl Entry {
    /// The bytes of its command (0 for the others).
    pub fn payload_bytes(&self) -> usize {
        match &self.payload {
            Payload::Command(b) => b.len(),
            _ => 0,
        }
    }
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by a new leader so that it can commit in its own term (Raft §8).
    Noop,
    /// An opaque command for the state machine (base64 on the wire: a
    /// third larger, where a JSON array of numbers would be up to four times).
    Command(#[serde(with = "base64_bytes")] Bytes),
    /// The whole configuration after one single-server change; in effect
    /// from the moment it is in a log (see `membership`).
    Config(Membership),
}

/// A message between two members. `term` is the sender's term, except for
/// pre-votes, where it is the term the sender would campaign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// See the type's doc.
    pub term: Term,
    /// What the message says.
    pub body: Body,
}

/// The kinds of message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Would you vote for me in `term`? (thesis §9.6)
    PreVote {
        /// The candidate's last log index.
        last_log_index: Index,
        /// The candidate's last log term.
        last_log_term: Term,
    },
    /// The answer to a pre-vote.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// Vote for me in `term` (Raft §5.2).
    RequestVote {
        /// The candidate's last log index.
        last_log_index: Index,
        /// The candidate's last log term.
        last_log_term: Term,
        /// Sent on a leader's request (leader transfer): voters skip their lease check.
        transfer: bool,
    },
    /// The answer to a vote request.
    RequestVoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Append entries after `prev_log_index` (Raft §5.3).
    AppendEntries {
        /// The index of the entry before `entries`.
        prev_log_index: Index,
        /// Its term.
        prev_log_term: Term,
        /// The entries, possibly none.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: Index,
    },
    /// The answer to AppendEntries.
    AppendEntriesResponse {
        /// Whether the entries now follow `prev_log_index` in the follower's log.
        success: bool,
        /// On success, the last index known to match the leader's log; on
        /// failure, the `prev_log_index` that was rejected.
        index: Index,
        /// On failure, where the leader should look next (the fast back-off of Raft §5.3).
        hint: Option<RejectHint>,
    },
    /// The leader's periodic message: keeps followers from campaigning, and
    /// confirms leadership for reads.
    Heartbeat {
        /// `min(commit index, follower's match index)`: safe for the follower to commit.
        commit: Index,
        /// The newest read request this heartbeat confirms, if any.
        read_seq: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// Echoes the heartbeat's `read_seq`.
        read_seq: u64,
    },
    /// A follower asks the leader for a read index (Raft thesis §6.4).
    ReadIndex {
        /// The follower's request id.
        ctx: u64,
    },
    /// The leader's answer to ReadIndex.
    ReadIndexResponse {
        /// The follower's request id.
        ctx: u64,
        /// The index to wait for; `None` if the leader cannot serve reads yet.
        index: Option<Index>,
    },
    /// Start an election now (leader transfer, thesis §3.10).
    TimeoutNow,
    /// One chunk of the leader's snapshot (Raft §7), for a follower whose
    /// next entries are compacted away.
    InstallSnapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Where this chunk starts in the snapshot's bytes.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// The answer to a snapshot chunk.
    InstallSnapshotResponse {
        /// The snapshot's index.
        index: Index,
        /// The offset of the chunk answered: the leader acts only on the
        /// answer to the chunk it has in flight, so a duplicated or late
        /// answer sends nothing again.
        #[serde(default)]
        offset: u64,
        /// How many of its bytes the follower now holds (where to continue).
        next_offset: u64,
        /// Whether the follower installed the whole snapshot (or already had it).
        installed: bool,
    },
}

/// What a snapshot of the state machine covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index it includes.
    pub index: Index,
    /// The term of that entry.
    pub term: Term,
    /// The configuration as of that entry.
    pub config: Membership,
}

/// A follower's hint after a rejected AppendEntries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectHint {
    /// The term of the follower's entry at the rejected index, if it has one.
    pub conflict_term: Option<Term>,
    /// The first index of `conflict_term` in the follower's log, or its last
    /// index + 1 when the log is too short.
    pub conflict_index: Index,
}

/// A read that may be served once the state machine has applied `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// The caller's request id.
    pub ctx: u64,
    /// Serve the read after applying this index.
    pub index: Index,
}

/// What the runtime must do after calling into the core.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Messages to send.
    pub messages: Vec<Message>,
    /// Newly committed entries, in order, to apply.
    pub committed: Vec<Entry>,
    /// Reads that may be served once their index is applied.
    pub read_states: Vec<ReadState>,
    /// Reads that failed (no leader, or leadership lost): retry them elsewhere.
    pub dropped_reads: Vec<u64>,
    /// A snapshot from the leader to restore the state machine from, before
    /// applying `committed` (which follow it).
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && self.dropped_reads.is_empty()
    }
}

/// Why a proposal or read was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RaftError {
    /// This node is not the leader; `leader` is the one it knows of.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
    /// A leader transfer is in progress; retry shortly.
    #[error("leadership is being transferred")]
    TransferInProgress,
    /// Too many reads are waiting; retry later.
    #[error("too many pending reads")]
    TooManyPendingReads,
}

/// Serde of bytes as one base64 string.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

//! The wire types of kvs's client-facing `Kv` service: requests, answers,
//! the transactions and events of the KV model, a member's status and
//! [`KvsError`], with the typed `KvClient` the `#[rpc::service]` macro makes.
//!
//! A client of the store (mkctl, a dashboard) depends on this crate alone,
//! not on the store: no Raft core, lifecycle or state machine comes with
//! it. `kvs` re-exports everything here at its old paths (`kvs::api`,
//! `kvs::kv`, `kvs::raft::Role`, ...), so the two never disagree on a type.
//!
//! Invariant: nothing here knows how the store works; each type is what
//! travels on the wire, and a change to one is a change of the protocol.

pub mod kv;

use serde::{Deserialize, Serialize};

use crate::kv::{Event, KeyValue, KvError, Txn, TxnResponse};

/// A member incarnation's id (a Raft node id): random per process start.
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A Raft log index.
pub type Index = u64;

/// The role a member plays (Raft §5.1, plus the pre-vote phase of §9.6 of
/// Ongaro's thesis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without raising its term.
    PreCandidate,
    /// Campaigns for votes in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// One cluster's identity: formed `number`-th, by the incarnation `founder`.
/// Ordered by number, then founder.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct EpochId {
    /// Increases with each re-formation.
    pub number: u64,
    /// The incarnation that formed it.
    pub founder: NodeId,
}

impl std::fmt::Display for EpochId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{:x}", self.number, self.founder)
    }
}

/// What an export is. Ordered by epoch, then index: the newest state first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExportMeta {
    /// The cluster epoch it belongs to (it changes when a fleet is re-formed).
    pub epoch: EpochId,
    /// The last log index it includes.
    pub index: Index,
    /// The term of that entry.
    pub term: Term,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
}

/// Identifies a write so that a retried one applies at most once: `client`
/// picks a random id, `seq` rises with each new write of that client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The client's random id.
    pub client: u64,
    /// The write's number within that client.
    pub seq: u64,
}

/// `Kv.txn`: any transaction; reads are linearizable, writes go through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    /// The transaction.
    pub txn: Txn,
    /// Required for writes that may be retried.
    #[serde(default)]
    pub request_id: Option<RequestId>,
    /// Set by a member that forwards the write to its leader (never forwarded twice).
    #[serde(default)]
    pub forwarded: bool,
}

/// `Kv.put`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// See [`RequestId`].
    #[serde(default)]
    pub request_id: Option<RequestId>,
}

/// `Kv.put`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The revision of the write.
    pub revision: i64,
}

/// `Kv.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    /// The key.
    pub key: String,
}

/// `Kv.get`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The key, if present.
    pub kv: Option<KeyValue>,
    /// The store's revision when read.
    pub revision: i64,
}

/// `Kv.range`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    /// Keys starting with this.
    pub prefix: String,
    /// Most keys returned; 0 for all.
    #[serde(default)]
    pub limit: usize,
}

/// `Kv.range`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    /// The keys, in order.
    pub kvs: Vec<KeyValue>,
    /// More keys matched than the limit.
    pub more: bool,
    /// The store's revision when read.
    pub revision: i64,
}

/// `Kv.delete`: one key, or every key under a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// The key, or the prefix when `prefix` is set.
    pub key: String,
    /// Delete every key starting with `key`.
    #[serde(default)]
    pub prefix: bool,
    /// See [`RequestId`].
    #[serde(default)]
    pub request_id: Option<RequestId>,
}

/// `Kv.delete`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// How many keys were deleted.
    pub deleted: u64,
    /// The store's revision after the delete.
    pub revision: i64,
}

/// `Kv.watch`: a long-poll for events from a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    /// Keys starting with this ("" for all).
    #[serde(default)]
    pub prefix: String,
    /// The first revision wanted.
    pub from_revision: i64,
    /// Longest wait for a first event, in milliseconds (at most 60 000).
    #[serde(default = "default_watch_wait_ms")]
    pub wait_ms: u64,
}

fn default_watch_wait_ms() -> u64 {
    10_000
}

/// `Kv.watch`'s answer: events in order, possibly none after the wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    /// Matching events from `from_revision` on.
    pub events: Vec<Event>,
    /// Watch again from this revision.
    pub next_revision: i64,
}

/// An empty message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `Kv.status`: what a member knows of itself and the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This member's current incarnation id.
    pub id: NodeId,
    /// This member's name.
    pub name: String,
    /// The cluster epoch it is in, if any (none while it looks for one).
    pub epoch: Option<EpochId>,
    /// Whether it is a voter (else a learner, or in no cluster).
    pub voter: bool,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit_index: Index,
    /// Its applied index.
    pub applied_index: Index,
    /// The index its latest snapshot covers.
    pub snapshot_index: Index,
    /// The cluster's members as this one knows them.
    pub members: Vec<MemberStatus>,
    /// The newest export this member wrote or formed its epoch from.
    pub last_export: Option<ExportMeta>,
    /// How long ago that export was taken, in milliseconds.
    pub last_export_age_ms: Option<u64>,
    /// The store's revision.
    pub revision: i64,
    /// Keys stored.
    pub keys: usize,
    /// Bytes of keys and values stored.
    #[serde(default)]
    pub bytes: u64,
    /// The store's quota of bytes (`--quota-bytes`).
    #[serde(default)]
    pub quota_bytes: u64,
    /// Raised alarms: `NOSPACE` while the store holds its quota (writes
    /// that put are refused; deletes go on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
    /// Where this member's memory goes, as its own structures count it.
    #[serde(default)]
    pub memory: MemoryUse,
}

/// What a member holds in memory, by structure: counts and the bytes of
/// what they carry (keys, values, commands), without the structures' own
/// overhead, which the allocator's figures include.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryUse {
    /// Log entries held (applied ones kept for followers, and the rest).
    pub log_entries: u64,
    /// Bytes of their commands.
    pub log_bytes: u64,
    /// Watch events held (`--history`).
    pub history_events: u64,
    /// Bytes of their keys and values.
    pub history_bytes: u64,
    /// Answers kept so that retried writes apply once.
    pub session_answers: u64,
    /// Snapshot bytes held: one being sent to a member, or received.
    pub snapshot_bytes: u64,
    /// Bytes the process has allocated, as its allocator counts them
    /// (`None` where the allocator does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_bytes: Option<u64>,
    /// Bytes of memory the allocator holds from the system (resident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocator_resident_bytes: Option<u64>,
}

/// One member of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its incarnation id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Whether it votes.
    pub voter: bool,
    /// On the leader: how its log reaches this member (etcd's raft
    /// `Progress`), so a member that stops catching up shows where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
}

/// The leader's view of one member's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    /// `probe` (finding where the logs meet), `replicate` (streaming) or
    /// `snapshot` (sending one).
    pub state: String,
    /// The highest index known to be on the member.
    pub match_index: Index,
    /// The next index to send it.
    pub next_index: Index,
    /// AppendEntries sent and not yet answered.
    pub inflight: usize,
    /// In `probe` or `snapshot`: a message is out, and nothing more goes
    /// until it is answered (or a heartbeat is).
    pub waiting: bool,
    /// Whether it answered since the last check-quorum round.
    pub recently_active: bool,
}

/// The client-facing service of every member.
#[rpc::service]
pub trait Kv {
    /// Runs a transaction (writes through the leader, reads linearizable).
    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, KvsError>;
    /// Sets a key.
    async fn put(&self, req: PutRequest) -> Result<PutResponse, KvsError>;
    /// Reads a key (linearizable).
    async fn get(&self, req: GetRequest) -> Result<GetResponse, KvsError>;
    /// Reads keys by prefix (linearizable).
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, KvsError>;
    /// Deletes a key or a prefix.
    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, KvsError>;
    /// Waits for events from a revision.
    async fn watch(&self, req: WatchRequest) -> Result<WatchResponse, KvsError>;
    /// This member's view.
    async fn status(&self, req: Empty) -> Result<NodeStatus, KvsError>;
}

/// Why a store request failed: one enum for the store's API layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvsError {
    /// This member cannot take writes now and knows no leader to forward to.
    #[error("no leader is known; retry shortly")]
    NoLeader,
    /// The leader changed while the write was in flight; it did not apply.
    #[error("the write was not committed (leadership changed); retry it with the same request id")]
    Dropped,
    /// A watch asked for history the member no longer has.
    #[error(
        "revision {requested} is compacted; the oldest watchable revision is {oldest}: re-list, then watch from the list's revision"
    )]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The oldest one available.
        oldest: i64,
    },
    /// The request is invalid as written.
    #[error("{0}")]
    InvalidArgument(String),
    /// The member is shutting down or overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// The store holds its quota of bytes: writes that put are refused
    /// until deletes free room (etcd's NOSPACE alarm).
    #[error(
        "the store is full: {used} bytes of keys and values stored, the quota is {quota} (--quota-bytes); delete what is not needed or raise the quota"
    )]
    NoSpace {
        /// Bytes stored.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// An answer would be larger than one call may carry.
    #[error("{0}")]
    TooLarge(String),
}

impl From<KvError> for KvsError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Compacted { requested, oldest } => KvsError::Compacted { requested, oldest },
            KvError::InvalidArgument(m) => KvsError::InvalidArgument(m),
        }
    }
}

/// The one place store errors become RPC statuses; the variant travels in
/// `details` so clients get it back typed.
impl From<KvsError> for rpc::Status {
    fn from(e: KvsError) -> Self {
        let code = match &e {
            KvsError::NoLeader | KvsError::Dropped | KvsError::Unavailable(_) => {
                rpc::Code::Unavailable
            }
            KvsError::Compacted { .. } => rpc::Code::FailedPrecondition,
            KvsError::InvalidArgument(_) => rpc::Code::InvalidArgument,
            KvsError::NoSpace { .. } | KvsError::TooLarge(_) => rpc::Code::ResourceExhausted,
        };
        let status = rpc::Status::new(code, e.to_string());
        match serde_json::to_value(&e) {
            Ok(details) => status.with_details(details),
            Err(_) => status,
        }
    }
}

impl KvsError {
    /// The store error an RPC error carries, if it carries one.
    pub fn from_rpc(e: &rpc::Error) -> Option<KvsError> {
        e.status()
            .and_then(|s| s.details.clone())
            .and_then(|d| serde_json::from_value(d).ok())
    }
}

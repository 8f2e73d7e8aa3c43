//! The store's RPC surface: the `Kv` service that clients call on any
//! member (its wire types live in the `kvs-api` crate, re-exported here),
//! the `RaftPeer` service that members call on each other, and what the
//! log carries.

use serde::{Deserialize, Serialize};

pub use kvs_api::*;

use crate::kv::Txn;
use crate::lifecycle::LifecycleMessage;
use crate::raft::Message;

/// What the log carries: a transaction and, for writes, its request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCommand {
    /// Set on writes from clients; retries carry the same id.
    pub request_id: Option<RequestId>,
    /// The transaction.
    pub txn: Txn,
}

/// A batch of Raft and lifecycle messages from one member to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBatch {
    /// The sender's name.
    pub from: String,
    /// The Raft messages, in the order they were produced.
    pub messages: Vec<Message>,
    /// The lifecycle messages (joins, epochs), in order.
    #[serde(default)]
    pub lifecycle: Vec<LifecycleMessage>,
}

/// The member-to-member service.
#[rpc::service]
pub trait RaftPeer {
    /// Hands Raft messages to this member.
    async fn deliver(&self, req: MessageBatch) -> Result<Empty, KvsError>;
}

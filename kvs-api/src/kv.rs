//! Requests and answers of the KV state machine (etcd's model, in words an
//! etcd user knows).

use serde::{Deserialize, Serialize};

/// A stored key with its revisions (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The revision of the write that created the key.
    pub create_revision: i64,
    /// The revision of the last write to the key.
    pub mod_revision: i64,
    /// Writes since creation (1 after the first).
    pub version: i64,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Reads one key.
    Get {
        /// The key.
        key: String,
    },
    /// Reads keys starting with `prefix`, in order, at most `limit` (0: no limit).
    Range {
        /// The prefix ("" for every key).
        prefix: String,
        /// Most keys returned; 0 for all.
        limit: usize,
    },
    /// Deletes one key.
    Delete {
        /// The key.
        key: String,
    },
    /// Deletes every key starting with `prefix`.
    DeleteRange {
        /// The prefix.
        prefix: String,
    },
}

impl Op {
    /// Whether the operation can change the store.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Put { .. } | Op::Delete { .. } | Op::DeleteRange { .. }
        )
    }

    /// The key or prefix the operation names.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Delete { key } => key,
            Op::Range { prefix, .. } | Op::DeleteRange { prefix } => prefix,
        }
    }
}

/// The outcome of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpResult {
    /// A put happened.
    Put,
    /// The key, if present.
    Get(Option<KeyValue>),
    /// The keys found, and whether the limit cut the list short.
    Range {
        /// The keys, in order.
        kvs: Vec<KeyValue>,
        /// More keys matched than `limit`.
        more: bool,
    },
    /// How many keys were deleted.
    Delete(u64),
}

/// How a comparison compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CmpOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

/// What a comparison looks at (a missing key has version and revisions 0 and no value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value (a comparison with a missing key's value is false).
    Value(String),
    /// The version.
    Version(i64),
    /// The create revision.
    CreateRevision(i64),
    /// The mod revision.
    ModRevision(i64),
}

/// One guard of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// The comparison.
    pub op: CmpOp,
    /// What is compared, against what.
    pub target: CompareTarget,
}

/// If every compare holds, run `success`, else `failure` — atomically, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Txn {
    /// The guards.
    pub compares: Vec<Compare>,
    /// Run when every guard holds.
    pub success: Vec<Op>,
    /// Run otherwise.
    pub failure: Vec<Op>,
}

impl Txn {
    /// A transaction of one unconditional operation.
    pub fn single(op: Op) -> Txn {
        Txn {
            compares: Vec::new(),
            success: vec![op],
            failure: Vec::new(),
        }
    }

    /// Whether either branch can write.
    pub fn is_write(&self) -> bool {
        self.success.iter().chain(&self.failure).any(Op::is_write)
    }
}

/// The answer to a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// One result per operation of the branch that ran.
    pub results: Vec<OpResult>,
    /// The store's revision after the transaction.
    pub revision: i64,
}

/// What a watch reports (etcd's `mvccpb.Event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The key was written; `kv` is its new state.
    Put {
        /// The key after the write.
        kv: KeyValue,
    },
    /// The key was deleted at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: i64,
    },
}

impl Event {
    /// Bytes of key and value it holds (what bounds the watch history).
    pub fn bytes(&self) -> usize {
        match self {
            Event::Put { kv } => kv.key.len() + kv.value.len(),
            Event::Delete { key, .. } => key.len(),
        }
    }

    /// The key written or deleted.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv } => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }

    /// The revision of the write that caused the event.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put { kv } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

/// Why a request to the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    /// The history no longer reaches back to `requested`; re-list, then
    /// watch from the revision the list returned.
    #[error("revision {requested} is compacted; the oldest revision still watchable is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The oldest revision a watch may start from.
        oldest: i64,
    },
    /// The request is invalid as written.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
}

/// Limits on what one request may contain and on what the store holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most compares plus operations in one transaction.
    pub max_txn_ops: usize,
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
    /// Most bytes of keys and values stored (etcd's `--quota-backend-bytes`):
    /// beyond, writes that put are refused (`NoSpace`) while deletes go on.
    pub quota_bytes: u64,
    /// Most bytes of events the watch history keeps.
    pub max_history_bytes: usize,
    /// Most bytes of keys and values one answer over the network carries.
    pub max_response_bytes: usize,
}

/// Default of [`Limits::quota_bytes`].
pub const DEFAULT_QUOTA_BYTES: u64 = 1 << 30;
/// Default of [`Limits::max_history_bytes`].
pub const DEFAULT_MAX_HISTORY_BYTES: usize = 64 << 20;
/// Default of [`Limits::max_response_bytes`]: half what a client accepts
/// (`rpc::ClientConfig::max_response_bytes`), leaving room for the JSON.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_txn_ops: 128,
            max_key_bytes: 4096,
            max_value_bytes: 1536 * 1024,
            quota_bytes: DEFAULT_QUOTA_BYTES,
            max_history_bytes: DEFAULT_MAX_HISTORY_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl Txn {
    /// Checks the request against `limits` before it is proposed.
    pub fn validate(&self, limits: &Limits) -> Result<(), KvError> {
        let ops = self.compares.len() + self.success.len() + self.failure.len();
        if ops > limits.max_txn_ops {
            return Err(KvError::InvalidArgument(format!(
                "a transaction may hold at most {} compares and operations, this one has {ops}",
                limits.max_txn_ops
            )));
        }
        let keys = self
            .compares
            .iter()
            .map(|c| c.key.as_str())
            .chain(self.success.iter().chain(&self.failure).map(Op::key));
        for key in keys {
            if key.len() > limits.max_key_bytes {
                return Err(KvError::InvalidArgument(format!(
                    "key of {} bytes exceeds the limit of {}",
                    key.len(),
                    limits.max_key_bytes
                )));
            }
        }
        if self.is_write()
            && let Some(range) = self
                .success
                .iter()
                .chain(&self.failure)
                .find(|op| matches!(op, Op::Range { .. }))
        {
            return Err(KvError::InvalidArgument(format!(
                "a transaction that writes cannot also range (over {:?}): its answer is kept on every member for retries; range in a read-only transaction",
                range.key()
            )));
        }
        for op in self.success.iter().chain(&self.failure) {
            match op {
                Op::Put { key, value } => {
                    if key.is_empty() {
                        return Err(KvError::InvalidArgument("put needs a non-empty key".into()));
                    }
                    if value.len() > limits.max_value_bytes {
                        return Err(KvError::InvalidArgument(format!(
                            "value of {key} has {} bytes, more than the limit of {}",
                            value.len(),
                            limits.max_value_bytes
                        )));
                    }
                }
                Op::Get { key } | Op::Delete { key } if key.is_empty() => {
                    return Err(KvError::InvalidArgument(
                        "get and delete need a non-empty key".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

//! The registry: where each kind of object lives in the kvs, and typed
//! reads and compare-and-set writes over the member embedded in this master.
//!
//! Keys are `/registry/<plural>/<namespace>/<name>` (`/registry/nodes/<name>`
//! for nodes); values are the objects' JSON without `resourceVersion`,
//! which is the key's `mod_revision` and is filled in on every read. Reads
//! are linearizable (ReadIndex on any member); writes go to the Raft leader
//! (forwarded by the embedded `Kv` service when this member follows).

use std::sync::Arc;
use std::time::Duration;

use api::Kind;
use kvs::api::{Kv, KvsError, TxnRequest, WatchRequest};
use kvs::kv::{CmpOp, Compare, CompareTarget, Event, KeyValue, Op, OpResult, Txn, TxnResponse};
use kvs::node::KvService;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a store access failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot answer now (no leader, shutting down): retry.
    #[error("the store is unavailable: {0}")]
    Unavailable(KvsError),
    /// A watch asked for history that is gone: re-list.
    #[error("revision {0} is compacted")]
    Compacted(i64),
    /// A stored value does not parse as its kind (a bug or a manual edit).
    #[error("the value at {key} is not a valid object: {error}")]
    Corrupt {
        /// The key.
        key: String,
        /// The parse error.
        error: String,
    },
}

impl From<KvsError> for StoreError {
    fn from(e: KvsError) -> Self {
        match e {
            KvsError::Compacted { requested, .. } => StoreError::Compacted(requested),
            other => StoreError::Unavailable(other),
        }
    }
}

/// An object with the revision of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<T> {
    /// The object, `metadata.resourceVersion` filled in.
    pub object: T,
    /// The key's `mod_revision`.
    pub mod_revision: i64,
}

/// The key of one object.
pub fn key(kind: Kind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("/registry/{}/{namespace}/{name}", kind.plural())
    } else {
        format!("/registry/{}/{name}", kind.plural())
    }
}

/// The prefix of a kind's keys, in one namespace or in all.
pub fn prefix(kind: Kind, namespace: Option<&str>) -> String {
    match namespace.filter(|_| kind.namespaced()) {
        Some(ns) => format!("/registry/{}/{ns}/", kind.plural()),
        None => format!("/registry/{}/", kind.plural()),
    }
}

/// The (namespace, name) a key names.
pub fn split_key(kind: Kind, key: &str) -> (String, String) {
    let rest = key
        .strip_prefix(&prefix(kind, None))
        .unwrap_or(key)
        .to_string();
    if kind.namespaced() {
        match rest.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (String::new(), rest),
        }
    } else {
        (String::new(), rest)
    }
}

/// Parses a stored value as `T`, with `metadata.resourceVersion` set.
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<Stored<T>, StoreError> {
    let mut value: serde_json::Value =
        serde_json::from_str(&kv.value).map_err(|e| StoreError::Corrupt {
            key: kv.key.clone(),
            error: e.to_string(),
        })?;
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.insert(
            "resourceVersion".into(),
            serde_json::Value::String(kv.mod_revision.to_string()),
        );
    }
    let object = serde_json::from_value(value).map_err(|e| StoreError::Corrupt {
        key: kv.key.clone(),
        error: e.to_string(),
    })?;
    Ok(Stored {
        object,
        mod_revision: kv.mod_revision,
    })
}

/// The stored form of an object: its JSON without `resourceVersion`.
pub fn encode<T: Serialize>(object: &T) -> String {
    let mut value = serde_json::to_value(object).unwrap_or(serde_json::Value::Null);
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("resourceVersion");
    }
    value.to_string()
}

/// A guard that `key` is still at `mod_revision` (0: absent).
pub fn unchanged(key: String, mod_revision: i64) -> Compare {
    Compare {
        key,
        op: CmpOp::Equal,
        target: CompareTarget::ModRevision(mod_revision),
    }
}

/// Longest wait for the store to answer a read or a write: a loop or an
/// API call facing a store that cannot answer (no quorum) fails instead of
/// hanging.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(
    wait: Duration,
    call: impl std::future::Future<Output = Result<T, KvsError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(wait, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Unavailable(KvsError::Unavailable(format!(
            "the store did not answer within {} s (no quorum?)",
            wait.as_secs()
        )))),
    }
}

/// Typed access to the embedded member.
#[derive(Clone)]
pub struct Store {
    kv: Arc<KvService>,
}

impl Store {
    /// Over the member's `Kv` service.
    pub fn new(kv: Arc<KvService>) -> Self {
        Store { kv }
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let req = TxnRequest {
            txn,
            request_id: None,
            forwarded: false,
        };
        bounded(STORE_TIMEOUT, self.kv.txn(req)).await
    }

    /// Reads one key.
    pub async fn get_raw(&self, key: &str) -> Result<(Option<KeyValue>, i64), StoreError> {
        let r = self
            .txn(Txn::single(Op::Get {
                key: key.to_string(),
            }))
            .await?;
        let kv = match r.results.into_iter().next() {
            Some(OpResult::Get(kv)) => kv,
            _ => None,
        };
        Ok((kv, r.revision))
    }

    /// Reads one object.
    pub async fn get<T: DeserializeOwned>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Stored<T>>, StoreError> {
        let (kv, _) = self.get_raw(&key(kind, namespace, name)).await?;
        kv.map(|kv| decode(&kv)).transpose()
    }

    /// Reads every key under several prefixes at one revision.
    pub async fn range_many(
        &self,
        prefixes: &[String],
    ) -> Result<(Vec<Vec<KeyValue>>, i64), StoreError> {
        let txn = Txn {
            compares: Vec::new(),
            success: prefixes
                .iter()
                .map(|p| Op::Range {
                    prefix: p.clone(),
                    limit: 0,
                })
                .collect(),
            failure: Vec::new(),
        };
        let r = self.txn(txn).await?;
        let lists = r
            .results
            .into_iter()
            .map(|res| match res {
                OpResult::Range { kvs, .. } => kvs,
                _ => Vec::new(),
            })
            .collect();
        Ok((lists, r.revision))
    }

    /// Every object of a kind (in a namespace), and the revision read at.
    pub async fn list<T: DeserializeOwned>(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Stored<T>>, i64), StoreError> {
        let (mut lists, revision) = self.range_many(&[prefix(kind, namespace)]).await?;
        let kvs = lists.pop().unwrap_or_default();
        let objects = kvs.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((objects, revision))
    }

    /// Events under `prefix` from `from_revision`, waiting up to `wait`.
    pub async fn watch(
        &self,
        prefix: String,
        from_revision: i64,
        wait: Duration,
    ) -> Result<(Vec<Event>, i64), StoreError> {
        let req = WatchRequest {
            prefix,
            from_revision,
            wait_ms: wait.as_millis() as u64,
        };
        let r = bounded(wait + STORE_TIMEOUT, self.kv.watch(req)).await?;
        Ok((r.events, r.next_revision))
    }
}

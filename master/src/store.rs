//! The registry: where each kind of object lives in the kvs, and typed
//! reads and compare-and-set writes over the member embedded in this master.
//!
//! Keys are `/registry/<plural>/<namespace>/<name>` (`/registry/nodes/<name>`
//! for nodes); values are the objects' JSON without `resourceVersion`,
//! which is the key's `mod_revision` and is filled in on every read. Reads
//! are linearizable (ReadIndex on any member); writes go to the Raft leader
//! (forwarded by the embedded `Kv` service when this member follows).
//! The kinds the loops decide on are also kept decoded in a watch cache
//! ([`informer`]), which snapshots and lists read.

pub mod informer;

use std::sync::Arc;
use std::time::Duration;

use api::Kind;
use kvs::api::{Kv, KvsError, TxnRequest, WatchRequest};
use kvs::kv::{CmpOp, Compare, CompareTarget, Event, KeyValue, Op, OpResult, Txn, TxnResponse};
use kvs::node::KvService;
use serde::Serialize;
use serde::de::DeserializeOwned;

use informer::Informer;

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

/// Where the fence floor is kept: the highest fence epoch a worker has
/// reported at registration that the cluster was not above (a cluster
/// re-formed from nothing). Its value is a JSON number.
pub const FENCE_FLOOR_KEY: &str = "/mkube/fence-floor";

/// The epoch the leader fences with: the store's epoch, or one above the
/// floor when a worker has followed an epoch this high (see
/// [`FENCE_FLOOR_KEY`]). Pure, so that every leader of one store computes
/// the same.
pub fn fence_epoch(epoch: u64, floor: u64) -> u64 {
    if floor >= epoch {
        floor.saturating_add(1)
    } else {
        epoch
    }
}

/// The fence floor a stored value says (0 for none or an unreadable one).
pub fn fence_floor(value: Option<&str>) -> u64 {
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
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
///
/// A value is readable only if it is a JSON object whose
/// `metadata.namespace` and `metadata.name` are the ones its key names
/// (a value written through the raw `Kv` API may say anything): the loops
/// write back to the key an object names, never to another one.
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<Stored<T>, StoreError> {
    let corrupt = |error: String| StoreError::Corrupt {
        key: kv.key.clone(),
        error,
    };
    let mut value: serde_json::Value =
        serde_json::from_str(&kv.value).map_err(|e| corrupt(e.to_string()))?;
    let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) else {
        return Err(corrupt("not an object with metadata".into()));
    };
    let field = |name: &str| meta.get(name).and_then(|v| v.as_str()).unwrap_or("");
    // `/registry/<plural>/<namespace>/<name>`, or `/registry/<plural>/<name>`.
    let tail: Vec<&str> = kv
        .key
        .splitn(4, '/')
        .skip(3)
        .flat_map(|t| t.split('/'))
        .collect();
    let matches = match tail.as_slice() {
        [name] => *name == field("name"),
        [ns, name] => *ns == field("namespace") && *name == field("name"),
        _ => false,
    };
    if !matches {
        return Err(corrupt(format!(
            "its metadata names {:?} in namespace {:?}, not the object of its key",
            field("name"),
            field("namespace")
        )));
    }
    meta.insert(
        "resourceVersion".into(),
        serde_json::Value::String(kv.mod_revision.to_string()),
    );
    let object = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    Ok(Stored {
        object,
        mod_revision: kv.mod_revision,
    })
}

/// A stored value that does not parse as its kind: skipped by every loop
/// and by `list`, reported, and deletable by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The key.
    pub key: String,
    /// Why it does not parse.
    pub error: String,
}

impl Unreadable {
    /// `kv`, which `decode` refused with `e`.
    pub(crate) fn of(kv: &KeyValue, e: StoreError) -> Unreadable {
        Unreadable {
            key: kv.key.clone(),
            error: match e {
                StoreError::Corrupt { error, .. } => error,
                other => other.to_string(),
            },
        }
    }
}

/// The readable objects of a range, and the keys that are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<T> {
    /// The objects that parse, in key order.
    pub objects: Vec<Stored<T>>,
    /// The values that do not.
    pub unreadable: Vec<Unreadable>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            objects: Vec::new(),
            unreadable: Vec::new(),
        }
    }
}

/// Parses every value of a range, setting aside those that do not parse:
/// one bad value costs its own object, never the others.
pub fn decode_all<T: DeserializeOwned>(kvs: &[KeyValue]) -> Listed<T> {
    let mut listed = Listed::default();
    for kv in kvs {
        match decode(kv) {
            Ok(o) => listed.objects.push(o),
            Err(e) => listed.unreadable.push(Unreadable::of(kv, e)),
        }
    }
    listed
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

async fn txn_on(kv: &KvService, txn: Txn) -> Result<TxnResponse, StoreError> {
    let req = TxnRequest {
        txn,
        request_id: None,
        forwarded: false,
    };
    bounded(STORE_TIMEOUT, kv.txn(req)).await
}

/// Every key under several prefixes at one revision, read from `kv`.
pub(crate) async fn range_many_on(
    kv: &KvService,
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
    let r = txn_on(kv, txn).await?;
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

/// Events under `prefix` from `from_revision`, read from `kv`, waiting up
/// to `wait` for the first.
pub(crate) async fn watch_on(
    kv: &KvService,
    prefix: String,
    from_revision: i64,
    wait: Duration,
) -> Result<(Vec<Event>, i64), StoreError> {
    let req = WatchRequest {
        prefix,
        from_revision,
        wait_ms: wait.as_millis() as u64,
    };
    let r = bounded(wait + STORE_TIMEOUT, kv.watch(req)).await?;
    Ok((r.events, r.next_revision))
}

/// Typed access to the embedded member.
#[derive(Clone)]
pub struct Store {
    kv: Arc<KvService>,
    informer: Arc<Informer>,
}

impl Store {
    /// Over the member's `Kv` service.
    pub fn new(kv: Arc<KvService>) -> Self {
        Store {
            informer: Informer::new(Arc::clone(&kv)),
            kv,
        }
    }

    /// The watch-fed cache of the kinds the loops read whole (started by
    /// its first read).
    pub fn informer(&self) -> &Arc<Informer> {
        &self.informer
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        txn_on(&self.kv, txn).await
    }

    /// The store's revision, read linearizably (ReadIndex): every write
    /// acknowledged before the call is at or below it.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        Ok(self.get_raw(FENCE_FLOOR_KEY).await?.1)
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
        range_many_on(&self.kv, prefixes).await
    }

    /// Every readable object of a kind (in a namespace), the keys that do
    /// not parse, and the revision read at.
    pub async fn list<T: DeserializeOwned>(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Listed<T>, i64), StoreError> {
        let (mut lists, revision) = self.range_many(&[prefix(kind, namespace)]).await?;
        let kvs = lists.pop().unwrap_or_default();
        Ok((decode_all(&kvs), revision))
    }

    /// Events under `prefix` from `from_revision`, waiting up to `wait`.
    pub async fn watch(
        &self,
        prefix: String,
        from_revision: i64,
        wait: Duration,
    ) -> Result<(Vec<Event>, i64), StoreError> {
        watch_on(&self.kv, prefix, from_revision, wait).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_epoch_is_above_the_floor_and_never_below_the_epoch() {
        assert_eq!(fence_epoch(3, 0), 3);
        assert_eq!(fence_epoch(3, 2), 3);
        assert_eq!(fence_epoch(1, 5), 6);
        assert_eq!(fence_epoch(5, 5), 6);
        assert_eq!(fence_epoch(1, u64::MAX), u64::MAX);
        assert_eq!(fence_floor(Some("7")), 7);
        assert_eq!(fence_floor(Some("junk")), 0);
        assert_eq!(fence_floor(None), 0);
    }
    use api::Pod;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 1,
            mod_revision: 2,
            version: 1,
        }
    }

    #[test]
    fn a_value_is_readable_only_as_the_object_its_key_names() {
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"default"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        let listed: Listed<Pod> = decode_all(&[
            kv("/registry/pods/default/a", pod),
            kv("/registry/pods/default/b", pod),
            kv("/registry/pods/prod/a", pod),
            kv("/registry/pods/default/x", "\"not an object\""),
            kv("/registry/pods/default/y", "{not json"),
            kv(
                "/registry/pods/default/z",
                r#"{"metadata":{"name":"z","namespace":"default"}}"#,
            ),
        ]);
        assert_eq!(listed.objects.len(), 1);
        assert_eq!(
            listed.objects[0]
                .object
                .metadata
                .resource_version
                .as_deref(),
            Some("2")
        );
        let keys: Vec<&str> = listed.unreadable.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/registry/pods/default/b",
                "/registry/pods/prod/a",
                "/registry/pods/default/x",
                "/registry/pods/default/y",
                "/registry/pods/default/z"
            ]
        );
        assert!(
            listed.unreadable[0]
                .error
                .contains("not the object of its key")
        );
        assert!(
            listed.unreadable[4].error.contains("missing field"),
            "{:?}",
            listed.unreadable[4]
        );
    }
}

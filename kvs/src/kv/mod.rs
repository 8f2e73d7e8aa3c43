//! The KV state machine applied from the Raft log.
//!
//! ```text
//! committed entry ─▶ KvStore::apply(txn) ─▶ KvState (keys, revision) ─▶ TxnResponse
//!                                       └─▶ WatchHistory (bounded) ─▶ events_since(rev)
//! ```
//!
//! Invariants: `apply` is a pure function of the state and the command, so
//! every replica that applies the same log holds the same state; the
//! revision rises by exactly one per transaction that changes something, and
//! every event of that transaction carries it; the watch history holds whole
//! revisions only, at most `history_limit` events and `history_bytes`
//! bytes, and answers [`KvError::Compacted`] for anything older than it
//! holds; [`KvState::bytes`] is always the sum of the stored keys' and
//! values' lengths (what the store quota counts).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

pub use kvs_api::kv::*;

/// A stored key's value and revisions (the key is the map's). Keys and
/// values are shared (`Arc<str>`): a snapshot's image holds the same
/// bytes rather than a copy of them, and each key is held once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    value: Arc<str>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
}

/// One change a transaction made, as the watch history holds it: the
/// key and the record share the store's bytes (a watch event costs a few
/// pointers, not a copy of the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `key` was written; `record` is what it holds now.
    Put {
        /// The key.
        key: Arc<str>,
        /// Its new value and revisions.
        record: Record,
    },
    /// `key` was deleted at `revision`.
    Delete {
        /// The key.
        key: Arc<str>,
        /// The revision of the delete.
        revision: i64,
    },
}

impl Change {
    /// Bytes of key and value it names (what bounds the watch history).
    pub fn bytes(&self) -> usize {
        match self {
            Change::Put { key, record } => key.len() + record.value.len(),
            Change::Delete { key, .. } => key.len(),
        }
    }

    /// The key written or deleted.
    pub fn key(&self) -> &str {
        match self {
            Change::Put { key, .. } | Change::Delete { key, .. } => key,
        }
    }

    /// The revision of the write.
    pub fn revision(&self) -> i64 {
        match self {
            Change::Put { record, .. } => record.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }

    /// The watch event (etcd's `mvccpb.Event`) it stands for.
    pub fn event(&self) -> Event {
        match self {
            Change::Put { key, record } => Event::Put {
                kv: record.key_value(key),
            },
            Change::Delete { key, revision } => Event::Delete {
                key: key.to_string(),
                revision: *revision,
            },
        }
    }
}

impl Record {
    fn key_value(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: self.value.to_string(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

/// The keys and the revision: all the state a linearizability model needs.
/// It encodes as its [`KvImage`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "KvImage", from = "KvImage")]
pub struct KvState {
    data: BTreeMap<Arc<str>, Record>,
    revision: i64,
    /// Bytes of keys and values stored.
    bytes: u64,
}

impl KvState {
    /// The current revision (0 before the first write).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// How many keys are stored.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes of keys and values stored.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes `value` to `key` at `revision`: one search of the map for a
    /// key it holds (a put is mostly an overwrite), two for a new one.
    /// Returns what the watch history records.
    fn put(&mut self, key: &str, value: &str, revision: i64) -> Change {
        let value: Arc<str> = Arc::from(value);
        self.bytes += (key.len() + value.len()) as u64;
        let found = self
            .data
            .range_mut::<str, _>((Bound::Included(key), Bound::Included(key)))
            .next();
        if let Some((k, old)) = found {
            self.bytes -= (key.len() + old.value.len()) as u64;
            old.value = value;
            old.mod_revision = revision;
            old.version += 1;
            return Change::Put {
                key: Arc::clone(k),
                record: old.clone(),
            };
        }
        let k: Arc<str> = Arc::from(key);
        let record = Record {
            value,
            create_revision: revision,
            mod_revision: revision,
            version: 1,
        };
        self.data.insert(Arc::clone(&k), record.clone());
        Change::Put { key: k, record }
    }

    /// Removes `key`; returns it as the map held it.
    fn remove(&mut self, key: &str) -> Option<Arc<str>> {
        let (k, old) = self.data.remove_entry(key)?;
        self.bytes -= (key.len() + old.value.len()) as u64;
        Some(k)
    }

    /// The stored keys starting with `prefix`, in order.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a Arc<str>, &'a Record)> {
        self.data
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Runs a transaction; `events` receives what it changed.
    pub fn apply(&mut self, txn: &Txn, events: &mut Vec<Change>) -> TxnResponse {
        let succeeded = txn.compares.iter().all(|c| self.holds(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let revision = self.revision + 1;
        let results = ops
            .iter()
            .map(|op| self.run(op, revision, events))
            .collect();
        if !events.is_empty() {
            self.revision = revision;
        }
        TxnResponse {
            succeeded,
            results,
            revision: self.revision,
        }
    }

    /// Runs a read-only transaction (a linearizable read after ReadIndex).
    pub fn read(&self, txn: &Txn) -> Option<TxnResponse> {
        self.read_within(txn, usize::MAX)?.ok()
    }

    /// [`KvState::read`] that stops as soon as the answer holds more than
    /// `limit` bytes of keys and values: `Err` with the bytes gathered by
    /// then (the answer is never built whole). `None` if `txn` writes.
    pub fn read_within(&self, txn: &Txn, limit: usize) -> Option<Result<TxnResponse, usize>> {
        if txn.is_write() {
            return None;
        }
        let succeeded = txn.compares.iter().all(|c| self.holds(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut used = 0;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match self.read_op(op, limit, &mut used) {
                Some(r) => results.push(r),
                None => return Some(Err(used)),
            }
        }
        Some(Ok(TxnResponse {
            succeeded,
            results,
            revision: self.revision,
        }))
    }

    fn holds(&self, c: &Compare) -> bool {
        let kv = self.data.get(c.key.as_str());
        let ord = match &c.target {
            CompareTarget::Value(v) => match kv {
                Some(kv) => kv.value.as_ref().cmp(v.as_str()),
                None => return false,
            },
            CompareTarget::Version(n) => kv.map_or(0, |kv| kv.version).cmp(n),
            CompareTarget::CreateRevision(n) => kv.map_or(0, |kv| kv.create_revision).cmp(n),
            CompareTarget::ModRevision(n) => kv.map_or(0, |kv| kv.mod_revision).cmp(n),
        };
        match c.op {
            CmpOp::Equal => ord.is_eq(),
            CmpOp::NotEqual => ord.is_ne(),
            CmpOp::Greater => ord.is_gt(),
            CmpOp::Less => ord.is_lt(),
        }
    }

    /// One read, adding the bytes it gathers to `used`; `None` once they
    /// pass `limit`.
    fn read_op(&self, op: &Op, limit: usize, used: &mut usize) -> Option<OpResult> {
        let mut take = |key: &str, r: &Record| {
            *used = used.saturating_add(key.len() + r.value.len());
            *used <= limit
        };
        match op {
            Op::Get { key } => {
                let r = self.data.get(key.as_str());
                if r.is_some_and(|r| !take(key, r)) {
                    return None;
                }
                Some(OpResult::Get(r.map(|r| r.key_value(key))))
            }
            Op::Range {
                prefix,
                limit: count,
            } => {
                let wanted = if *count == 0 {
                    usize::MAX
                } else {
                    count.saturating_add(1)
                };
                let mut kvs = Vec::new();
                for (k, r) in self.under(prefix).take(wanted) {
                    if !take(k, r) {
                        return None;
                    }
                    kvs.push(r.key_value(k));
                }
                let more = *count != 0 && kvs.len() > *count;
                kvs.truncate(if *count == 0 { kvs.len() } else { *count });
                Some(OpResult::Range { kvs, more })
            }
            // Writes are never passed here.
            Op::Put { .. } | Op::Delete { .. } | Op::DeleteRange { .. } => {
                Some(OpResult::Delete(0))
            }
        }
    }

    fn run(&mut self, op: &Op, revision: i64, events: &mut Vec<Change>) -> OpResult {
        match op {
            Op::Put { key, value } => {
                events.push(self.put(key, value, revision));
                OpResult::Put
            }
            Op::Delete { key } => {
                let deleted = self.remove(key);
                let count = u64::from(deleted.is_some());
                if let Some(key) = deleted {
                    events.push(Change::Delete { key, revision });
                }
                OpResult::Delete(count)
            }
            Op::DeleteRange { prefix } => {
                let keys: Vec<Arc<str>> = self.under(prefix).map(|(k, _)| Arc::clone(k)).collect();
                for key in &keys {
                    self.remove(key);
                    events.push(Change::Delete {
                        key: Arc::clone(key),
                        revision,
                    });
                }
                OpResult::Delete(keys.len() as u64)
            }
            read => self
                .read_op(read, usize::MAX, &mut 0)
                .unwrap_or(OpResult::Delete(0)),
        }
    }
}

/// What a snapshot of the store holds: the revision and every key, in
/// order. It shares the store's keys and values, so taking one copies no
/// bytes of them; it encodes as `{"revision", "kvs": [KeyValue...]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvImage {
    revision: i64,
    kvs: Vec<(Arc<str>, Record)>,
}

impl From<KvState> for KvImage {
    fn from(state: KvState) -> KvImage {
        KvImage {
            revision: state.revision,
            kvs: state.data.into_iter().collect(),
        }
    }
}

impl From<KvImage> for KvState {
    fn from(image: KvImage) -> KvState {
        // Bytes counted over the map, not the list: a key listed twice is
        // stored (and counted) once.
        let data: BTreeMap<Arc<str>, Record> = image.kvs.into_iter().collect();
        KvState {
            bytes: data
                .iter()
                .map(|(k, r)| (k.len() + r.value.len()) as u64)
                .sum(),
            data,
            revision: image.revision,
        }
    }
}

impl serde::Serialize for KvImage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Kv<'a> {
            key: &'a str,
            value: &'a str,
            create_revision: i64,
            mod_revision: i64,
            version: i64,
        }
        struct Kvs<'a>(&'a [(Arc<str>, Record)]);
        impl serde::Serialize for Kvs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|(k, r)| Kv {
                    key: k,
                    value: &r.value,
                    create_revision: r.create_revision,
                    mod_revision: r.mod_revision,
                    version: r.version,
                }))
            }
        }
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("KvImage", 2)?;
        st.serialize_field("revision", &self.revision)?;
        st.serialize_field("kvs", &Kvs(&self.kvs))?;
        st.end()
    }
}

impl<'de> serde::Deserialize<'de> for KvImage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Owned {
            revision: i64,
            kvs: Vec<KeyValue>,
        }
        let owned = Owned::deserialize(d)?;
        Ok(KvImage {
            revision: owned.revision,
            kvs: owned
                .kvs
                .into_iter()
                .map(|kv| {
                    (
                        Arc::from(kv.key),
                        Record {
                            value: Arc::from(kv.value),
                            create_revision: kv.create_revision,
                            mod_revision: kv.mod_revision,
                            version: kv.version,
                        },
                    )
                })
                .collect(),
        })
    }
}

/// The state machine of one replica: the state plus the watch history.
#[derive(Debug, Clone)]
pub struct KvStore {
    state: KvState,
    history: VecDeque<Change>,
    history_limit: usize,
    history_bytes_limit: usize,
    /// Bytes of the events in `history`.
    history_bytes: usize,
    /// Revisions up to this one have been dropped from the history.
    compacted: i64,
}

impl KvStore {
    /// An empty store keeping at most `history_limit` watch events (and
    /// [`DEFAULT_MAX_HISTORY_BYTES`] bytes of them).
    pub fn new(history_limit: usize) -> Self {
        KvStore {
            state: KvState::default(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            history_bytes_limit: DEFAULT_MAX_HISTORY_BYTES,
            history_bytes: 0,
            compacted: 0,
        }
    }

    /// Keeps at most `bytes` bytes of watch events.
    pub fn with_history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes_limit = bytes.max(1);
        self
    }

    /// The keys and revision.
    pub fn state(&self) -> &KvState {
        &self.state
    }

    /// Watch events held.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Bytes of keys and values of the watch events held.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// Applies a committed transaction.
    pub fn apply(&mut self, txn: &Txn) -> TxnResponse {
        let mut events = Vec::new();
        let response = self.state.apply(txn, &mut events);
        self.history_bytes += events.iter().map(Change::bytes).sum::<usize>();
        self.history.extend(events);
        self.trim();
        response
    }

    /// Drops whole revisions from the front until the limits hold.
    fn trim(&mut self) {
        while self.history.len() > self.history_limit
            || self.history_bytes > self.history_bytes_limit
        {
            let Some(oldest) = self.history.front().map(Change::revision) else {
                break;
            };
            while self.history.front().is_some_and(|e| e.revision() == oldest) {
                if let Some(e) = self.history.pop_front() {
                    self.history_bytes -= e.bytes();
                }
            }
            self.compacted = oldest;
        }
    }

    /// The keys and revision, for a Raft snapshot. The watch history is
    /// not included: after a restore, watches from before the snapshot's
    /// revision answer `Compacted` (and re-list), as in etcd.
    pub fn image(&self) -> KvImage {
        KvImage {
            revision: self.state.revision,
            kvs: self
                .state
                .data
                .iter()
                .map(|(k, r)| (Arc::clone(k), r.clone()))
                .collect(),
        }
    }

    /// Replaces everything with a snapshot's content.
    pub fn restore(&mut self, image: KvImage) {
        let revision = image.revision;
        self.state = KvState::from(image);
        self.history.clear();
        self.history_bytes = 0;
        self.compacted = revision;
    }

    /// [`KvStore::image`] as JSON bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.image()).unwrap_or_default()
    }

    /// [`KvStore::restore`] from JSON bytes.
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<(), KvError> {
        let image = serde_json::from_slice(bytes)
            .map_err(|e| KvError::InvalidArgument(format!("snapshot does not decode: {e}")))?;
        self.restore(image);
        Ok(())
    }

    /// Every event from revision `from` on, in order (etcd's watch start
    /// revision); `Compacted` if the history no longer reaches back that far.
    pub fn events_since(&self, from: i64) -> Result<Vec<Event>, KvError> {
        self.events_under("", from)
    }

    /// [`KvStore::events_since`], only those of keys under `prefix`. The
    /// history is in revision order, so finding `from` is a binary search
    /// and only matching events are copied: a watch that is up to date
    /// costs nothing however long the history is.
    pub fn events_under(&self, prefix: &str, from: i64) -> Result<Vec<Event>, KvError> {
        if from <= self.compacted {
            return Err(KvError::Compacted {
                requested: from,
                oldest: self.compacted + 1,
            });
        }
        let start = self.history.partition_point(|e| e.revision() < from);
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.key().starts_with(prefix))
            .map(Change::event)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn revisions_versions_and_deletes_follow_etcd() {
        let mut kv = KvStore::new(100);
        assert_eq!(kv.apply(&Txn::single(put("a", "1"))).revision, 1);
        assert_eq!(kv.apply(&Txn::single(put("a", "2"))).revision, 2);
        let got = kv
            .state()
            .read(&Txn::single(Op::Get { key: "a".into() }))
            .unwrap();
        let Some(OpResult::Get(Some(a))) = got.results.first().cloned() else {
            panic!("{got:?}")
        };
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
        // Deleting nothing changes nothing, not even the revision.
        assert_eq!(
            kv.apply(&Txn::single(Op::Delete { key: "zz".into() }))
                .revision,
            2
        );
        let del = kv.apply(&Txn::single(Op::Delete { key: "a".into() }));
        assert_eq!((del.revision, &del.results[0]), (3, &OpResult::Delete(1)));
    }

    #[test]
    fn txn_is_atomic_at_one_revision() {
        let mut kv = KvStore::new(100);
        kv.apply(&Txn::single(put("/a", "x")));
        let txn = Txn {
            compares: vec![Compare {
                key: "/a".into(),
                op: CmpOp::Equal,
                target: CompareTarget::Value("x".into()),
            }],
            success: vec![put("/b", "1"), put("/c", "2")],
            failure: vec![Op::Get { key: "/a".into() }],
        };
        let r = kv.apply(&txn);
        assert!(r.succeeded);
        assert_eq!(r.revision, 2);
        let events = kv.events_since(2).unwrap();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.revision() == 2));
        let again = kv.apply(&Txn {
            compares: vec![Compare {
                key: "/a".into(),
                op: CmpOp::Equal,
                target: CompareTarget::Version(7),
            }],
            ..txn
        });
        assert!(!again.succeeded);
        assert_eq!(again.revision, 2, "the failure branch only read");
    }

    #[test]
    fn range_by_prefix_with_limit() {
        let mut kv = KvStore::new(100);
        for k in ["/p/a", "/p/b", "/p/c", "/q/a"] {
            kv.apply(&Txn::single(put(k, "v")));
        }
        let r = kv
            .state()
            .read(&Txn::single(Op::Range {
                prefix: "/p/".into(),
                limit: 2,
            }))
            .unwrap();
        let OpResult::Range { kvs, more } = &r.results[0] else {
            panic!()
        };
        assert_eq!(
            kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
            ["/p/a", "/p/b"]
        );
        assert!(more);
        let d = kv.apply(&Txn::single(Op::DeleteRange {
            prefix: "/p/".into(),
        }));
        assert_eq!(d.results[0], OpResult::Delete(3));
        assert_eq!(kv.state().len(), 1);
    }

    /// A client may send any limit: the largest one means "all", it does
    /// not overflow (`limit + 1` panicked in debug builds).
    #[test]
    fn the_largest_limit_reads_everything() {
        let mut kv = KvStore::new(100);
        kv.apply(&Txn::single(put("/p/a", "v")));
        let r = kv.state().read(&Txn::single(Op::Range {
            prefix: "/p/".into(),
            limit: usize::MAX,
        }));
        let Some(OpResult::Range { kvs, more }) = r.map(|r| r.results[0].clone()) else {
            panic!("a range result")
        };
        assert_eq!((kvs.len(), more), (1, false));
    }

    #[test]
    fn watch_history_is_bounded_and_says_compacted() {
        let mut kv = KvStore::new(3);
        for i in 0..5 {
            kv.apply(&Txn::single(put("k", &i.to_string())));
        }
        assert_eq!(kv.events_since(3).unwrap().len(), 3);
        assert_eq!(
            kv.events_since(2),
            Err(KvError::Compacted {
                requested: 2,
                oldest: 3
            })
        );
    }

    #[test]
    fn snapshot_restores_keys_and_revision_and_compacts_the_history() {
        let mut kv = KvStore::new(100);
        for i in 0..5 {
            kv.apply(&Txn::single(put(&format!("k{i}"), "v")));
        }
        let bytes = kv.snapshot();
        let mut other = KvStore::new(100);
        other.restore_bytes(&bytes).unwrap();
        assert_eq!(other.state(), kv.state());
        assert!(matches!(
            other.events_since(3),
            Err(KvError::Compacted { .. })
        ));
        assert_eq!(other.events_since(6).unwrap(), vec![]);
        assert!(other.restore_bytes(b"not json").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let limits = Limits {
            max_txn_ops: 2,
            ..Limits::default()
        };
        let txn = Txn {
            success: vec![put("a", "1"), put("b", "2"), put("c", "3")],
            ..Txn::default()
        };
        let err = txn.validate(&limits).unwrap_err().to_string();
        assert!(err.contains("at most 2"), "{err}");
        assert!(Txn::single(put("", "x")).validate(&limits).is_err());
    }

    #[test]
    fn a_transaction_that_writes_cannot_range() {
        let txn = Txn {
            success: vec![
                put("a", "1"),
                Op::Range {
                    prefix: String::new(),
                    limit: 0,
                },
            ],
            ..Txn::default()
        };
        let err = txn.validate(&Limits::default()).unwrap_err().to_string();
        assert!(err.contains("cannot also range"), "{err}");
        let read_only = Txn::single(Op::Range {
            prefix: String::new(),
            limit: 0,
        });
        assert!(read_only.validate(&Limits::default()).is_ok());
    }

    #[test]
    fn stored_bytes_follow_puts_deletes_and_restores() {
        let mut kv = KvStore::new(100);
        kv.apply(&Txn::single(put("ab", "123")));
        kv.apply(&Txn::single(put("c", "4")));
        assert_eq!(kv.state().bytes(), 7);
        kv.apply(&Txn::single(put("ab", "1")));
        assert_eq!(kv.state().bytes(), 5);
        kv.apply(&Txn::single(Op::Delete { key: "c".into() }));
        assert_eq!(kv.state().bytes(), 3);
        let mut other = KvStore::new(100);
        other.restore(kv.image());
        assert_eq!(other.state().bytes(), 3);
        other.apply(&Txn::single(Op::DeleteRange { prefix: "a".into() }));
        assert_eq!(other.state().bytes(), 0);
    }

    /// A snapshot that lists a key twice stores it once, and counts its
    /// bytes once (the quota is decided on that count).
    #[test]
    fn a_key_listed_twice_in_a_snapshot_is_counted_once() {
        let kv = |v: &str| {
            format!(
                r#"{{"key":"k","value":"{v}","create_revision":1,"mod_revision":1,"version":1}}"#
            )
        };
        let json = format!(r#"{{"revision":1,"kvs":[{},{}]}}"#, kv("ab"), kv("abcd"));
        let mut store = KvStore::new(10);
        store.restore_bytes(json.as_bytes()).unwrap();
        assert_eq!(store.state().len(), 1);
        assert_eq!(store.state().bytes(), 5, "k + abcd, the later entry");
    }

    #[test]
    fn watch_history_is_bounded_by_bytes() {
        let mut kv = KvStore::new(1_000).with_history_bytes(100);
        for i in 0..10 {
            kv.apply(&Txn::single(put(&format!("k{i}"), &"x".repeat(28))));
        }
        // 30 bytes an event: three revisions fit in 100 bytes.
        assert!(kv.events_since(8).is_ok());
        assert!(matches!(
            kv.events_since(7),
            Err(KvError::Compacted { oldest: 8, .. })
        ));
    }
}

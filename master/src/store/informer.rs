//! A watch-fed cache of the kinds the loops decide on (Kubernetes'
//! informer): listed once, then kept current by one watch of the whole
//! keyspace, each object decoded once per write and shared (`Arc`) by
//! every read.
//!
//! Why: the loops read everything every round. At 30,000 pods a range of
//! the whole store copied tens of megabytes inside the kvs member's loop
//! (where it delays Raft's heartbeats), and every round cloned every
//! object again. With the cache a round costs one small linearizable read
//! and a copy of pointers; decoding happens once per write, on the
//! blocking pool.
//!
//! ```text
//!  list (range of KINDS at rev L) ─▶ cache@L ─▶ watch from L+1 ─▶ cache@next-1 ─▶ …
//!                                       ▲ Compacted: list again
//!  Informer::read: R = linearizable read ─▶ wait until cache ≥ R ─▶ copy the Arcs
//! ```
//!
//! Invariants:
//! - The cache only ever holds whole revisions: it applies a watch answer
//!   (whole revisions, in order, decoded beforehand) under one lock, then
//!   says which revision it is complete up to. A snapshot taken under that lock is the store
//!   exactly at that revision.
//! - A snapshot is at least as new as a linearizable read made after the
//!   call began, so what the loops decide on is never older than what an
//!   API client has been told was written.
//! - The watch covers every key (not only the cached kinds), so the cache's
//!   revision follows the store's even when only other keys change (every
//!   new revision writes at least one key).
//! - A store that goes back to an older revision (its member joined
//!   another cluster) is listed again, never watched past what it lost.
//! - The feeding task ends when the last handle is dropped.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use api::service::{Endpoints, Service};
use api::{Deployment, Job, Kind, Node, Pod, PodDisruptionBudget, ReplicaSet};
use kvs::kv::{Event, KeyValue};
use kvs::node::KvService;
use serde::de::DeserializeOwned;

use super::{self as store, StoreError, Stored, Unreadable, decode, prefix};

/// The kinds cached (those the loops decide on).
pub const KINDS: [Kind; 8] = [
    Kind::Pod,
    Kind::ReplicaSet,
    Kind::Deployment,
    Kind::Node,
    Kind::Service,
    Kind::Endpoints,
    Kind::Job,
    Kind::PodDisruptionBudget,
];

/// How long one watch call waits for a change before asking again.
const WATCH_WAIT: Duration = Duration::from_secs(5);
/// Pause after a failed list or watch (no quorum, shutting down).
const RETRY: Duration = Duration::from_millis(200);

/// A decoded object (`Stored<T>` of its kind), or why it does not decode.
#[derive(Clone)]
enum Entry {
    Readable(Arc<dyn Any + Send + Sync>),
    Unreadable(Unreadable),
}

fn entry<T: DeserializeOwned + Send + Sync + 'static>(kv: &KeyValue) -> Entry {
    match decode::<T>(kv) {
        Ok(stored) => Entry::Readable(Arc::new(stored)),
        Err(e) => Entry::Unreadable(Unreadable::of(kv, e)),
    }
}

fn decode_entry(kind: Kind, kv: &KeyValue) -> Option<Entry> {
    Some(match kind {
        Kind::Pod => entry::<Pod>(kv),
        Kind::ReplicaSet => entry::<ReplicaSet>(kv),
        Kind::Deployment => entry::<Deployment>(kv),
        Kind::Node => entry::<Node>(kv),
        Kind::Service => entry::<Service>(kv),
        Kind::Endpoints => entry::<Endpoints>(kv),
        Kind::Job => entry::<Job>(kv),
        Kind::PodDisruptionBudget => entry::<PodDisruptionBudget>(kv),
        Kind::Event => return None,
    })
}

/// The cached objects of every kind at one revision.
#[derive(Default)]
struct Cache {
    /// Complete up to this revision (0: not listed yet).
    revision: i64,
    /// By kind (index in [`KINDS`]), then by key.
    objects: [BTreeMap<String, Entry>; KINDS.len()],
}

/// One decoded change to the cache: the kind's index in [`KINDS`], the
/// key, and its new entry (`None`: deleted).
type Change = (usize, String, Option<Entry>);

/// The changes `events` make to the cached kinds, decoded (pure cpu: the
/// feeder runs it on the blocking pool, outside the cache's lock).
fn decode_events(prefixes: &[String], events: &[Event]) -> Vec<Change> {
    let kind_of = |key: &str| prefixes.iter().position(|p| key.starts_with(p.as_str()));
    events
        .iter()
        .filter_map(|e| match e {
            Event::Put { kv } => {
                let i = kind_of(&kv.key)?;
                Some((i, kv.key.clone(), Some(decode_entry(KINDS[i], kv)?)))
            }
            Event::Delete { key, .. } => Some((kind_of(key)?, key.clone(), None)),
        })
        .collect()
}

/// [`decode_events`] for a list: every key put.
fn decode_list(prefixes: &[String], lists: &[Vec<KeyValue>]) -> Vec<Change> {
    let puts: Vec<Event> = lists
        .iter()
        .flatten()
        .map(|kv| Event::Put { kv: kv.clone() })
        .collect();
    decode_events(prefixes, &puts)
}

impl Cache {
    /// Applies decoded changes (whole revisions, in order), after which the
    /// store is at `revision`.
    fn apply(&mut self, changes: Vec<Change>, revision: i64) {
        for (i, key, entry) in changes {
            match entry {
                Some(e) => {
                    self.objects[i].insert(key, e);
                }
                None => {
                    self.objects[i].remove(&key);
                }
            }
        }
        self.revision = self.revision.max(revision);
    }

    /// The cache of a whole list at `revision`.
    #[cfg(test)]
    fn listed(prefixes: &[String], lists: &[Vec<KeyValue>], revision: i64) -> Cache {
        let mut cache = Cache::default();
        cache.apply(decode_list(prefixes, lists), revision);
        cache
    }

    /// Applies a watch answer: `events` (whole revisions, in order), after
    /// which the store is at `next - 1`.
    #[cfg(test)]
    fn watched(&mut self, prefixes: &[String], events: &[Event], next: i64) {
        self.apply(decode_events(prefixes, events), next - 1);
    }

    fn view(&self) -> CacheView<'_> {
        CacheView { cache: self }
    }
}

/// One kind's objects at a snapshot's revision, in key order.
pub struct KindView<T> {
    /// The readable ones.
    pub objects: Vec<Arc<Stored<T>>>,
    /// The values that do not decode.
    pub unreadable: Vec<Unreadable>,
}

/// The cache seen under its lock, at [`CacheView::revision`].
pub struct CacheView<'a> {
    cache: &'a Cache,
}

impl CacheView<'_> {
    /// The revision the view is exactly at.
    pub fn revision(&self) -> i64 {
        self.cache.revision
    }

    /// Every object of `kind`, which must be one of [`KINDS`] decoded as `T`
    /// (none otherwise).
    pub fn kind<T: Send + Sync + 'static>(&self, kind: Kind) -> KindView<T> {
        let mut view = KindView {
            objects: Vec::new(),
            unreadable: Vec::new(),
        };
        let Some(i) = KINDS.iter().position(|k| *k == kind) else {
            return view;
        };
        view.objects.reserve(self.cache.objects[i].len());
        for e in self.cache.objects[i].values() {
            match e {
                Entry::Readable(any) => {
                    if let Ok(stored) = Arc::clone(any).downcast::<Stored<T>>() {
                        view.objects.push(stored);
                    }
                }
                Entry::Unreadable(u) => view.unreadable.push(u.clone()),
            }
        }
        view
    }
}

/// The cache and the task that feeds it (started by the first read).
pub struct Informer {
    kv: Arc<KvService>,
    cache: RwLock<Cache>,
    /// The revision the cache is complete up to, for readers to wait on.
    applied: tokio::sync::watch::Sender<i64>,
    /// The key prefix of each of [`KINDS`].
    prefixes: Vec<String>,
    feeder: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Informer {
    fn drop(&mut self) {
        if let Some(feeder) = self.feeder.get() {
            feeder.abort();
        }
    }
}

impl Informer {
    /// Over the member's `Kv` service; nothing runs until the first read.
    pub fn new(kv: Arc<KvService>) -> Arc<Informer> {
        Arc::new(Informer {
            kv,
            cache: RwLock::default(),
            applied: tokio::sync::watch::Sender::new(0),
            prefixes: KINDS.iter().map(|k| prefix(*k, None)).collect(),
            feeder: OnceLock::new(),
        })
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        // Every update replaces whole revisions under the write lock and
        // cannot panic midway (decoding errors are entries): a poisoned
        // lock still guards a whole cache.
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cache once it holds revision `at_least` (or a later one); calls
    /// `read` with it under the lock. Fails if the cache does not get there
    /// within the store's timeout.
    pub async fn read<R>(
        self: &Arc<Self>,
        at_least: i64,
        read: impl FnOnce(&CacheView<'_>) -> R,
    ) -> Result<R, StoreError> {
        self.start();
        let mut applied = self.applied.subscribe();
        let reached =
            tokio::time::timeout(store::STORE_TIMEOUT, applied.wait_for(|r| *r >= at_least)).await;
        if !matches!(reached, Ok(Ok(_))) {
            return Err(StoreError::Unavailable(kvs::api::KvsError::Unavailable(
                format!(
                    "the watch cache did not reach revision {at_least} within {} s",
                    store::STORE_TIMEOUT.as_secs()
                ),
            )));
        }
        Ok(read(&self.read_cache().view()))
    }

    fn start(self: &Arc<Self>) {
        self.feeder.get_or_init(|| {
            let weak = Arc::downgrade(self);
            let kv = Arc::clone(&self.kv);
            tokio::spawn(feed(weak, kv)).abort_handle()
        });
    }

    /// Replaces the cache with a decoded list at `revision`.
    fn relisted(&self, changes: Vec<Change>, revision: i64) {
        let mut cache = Cache::default();
        cache.apply(changes, revision);
        *self.write_cache() = cache;
        self.applied.send_replace(revision);
    }

    /// Applies decoded watch events, after which the store is at `revision`.
    fn watched(&self, changes: Vec<Change>, revision: i64) {
        let mut cache = self.write_cache();
        cache.apply(changes, revision);
        let revision = cache.revision;
        drop(cache);
        self.applied.send_replace(revision);
    }
}

/// Lists, then watches, until the informer is dropped; lists again when
/// the watch is told its history is gone.
async fn feed(informer: Weak<Informer>, kv: Arc<KvService>) {
    loop {
        let Some(prefixes) = informer.upgrade().map(|i| i.prefixes.clone()) else {
            return;
        };
        let listing = std::time::Instant::now();
        let (lists, revision) = match store::range_many_on(&kv, &prefixes).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::debug!(error = %e, "informer: list failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let decoding = {
            let prefixes = prefixes.clone();
            tokio::task::spawn_blocking(move || decode_list(&prefixes, &lists))
        };
        let Ok(changes) = decoding.await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        match informer.upgrade() {
            Some(i) => i.relisted(changes, revision),
            None => return,
        }
        tracing::info!(
            revision,
            took_ms = listing.elapsed().as_millis() as u64,
            "informer: listed"
        );
        let mut from = revision + 1;
        let mut applied = kv.node().revision();
        loop {
            // A member that left its cluster and joined another (or
            // re-formed from an export) may go back to an older revision;
            // its watch would then skip what it writes again: list anew.
            let answer = tokio::select! {
                answer = store::watch_on(&kv, String::new(), from, WATCH_WAIT) => answer,
                _ = applied.wait_for(|r| *r < from - 1) => break,
            };
            match answer {
                Ok((events, next)) => {
                    let decoding = {
                        let prefixes = prefixes.clone();
                        tokio::task::spawn_blocking(move || decode_events(&prefixes, &events))
                    };
                    // A decoding that panicked (a bug): list again.
                    let Ok(changes) = decoding.await else { break };
                    let Some(i) = informer.upgrade() else { return };
                    i.watched(changes, next - 1);
                    from = next.max(from);
                }
                Err(StoreError::Compacted(_)) => {
                    tracing::info!(
                        from,
                        "informer: the watch history no longer holds the next revision; listing again"
                    );
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "informer: watch failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, mod_revision: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: mod_revision,
            mod_revision,
            version: 1,
        }
    }

    fn pod(name: &str, image: &str) -> String {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}},"spec":{{"containers":[{{"name":"c","image":"{image}"}}]}}}}"#
        )
    }

    fn prefixes() -> Vec<String> {
        KINDS.iter().map(|k| prefix(*k, None)).collect()
    }

    fn names(view: &CacheView<'_>) -> Vec<(String, i64)> {
        view.kind::<Pod>(Kind::Pod)
            .objects
            .iter()
            .map(|s| (s.object.metadata.name.clone(), s.mod_revision))
            .collect()
    }

    /// What a list then a watch leave is what decoding the store at that
    /// revision gives: puts replace, deletes remove, a bad value is set
    /// aside under its key, other keys are ignored, order is by key.
    #[test]
    fn a_list_and_then_events_give_the_store_at_their_revision() {
        let p = prefixes();
        let mut cache = Cache::listed(
            &p,
            &[vec![
                kv("/registry/pods/default/b", &pod("b", "one"), 4),
                kv("/registry/pods/default/a", &pod("a", "one"), 3),
                kv("/registry/nodes/n1", "not json", 5),
            ]],
            5,
        );
        assert_eq!(cache.revision, 5);
        assert_eq!(
            names(&cache.view()),
            [("a".to_string(), 3), ("b".to_string(), 4)]
        );
        let nodes = cache.view().kind::<Node>(Kind::Node);
        assert!(nodes.objects.is_empty());
        assert_eq!(nodes.unreadable.len(), 1);
        assert_eq!(nodes.unreadable[0].key, "/registry/nodes/n1");

        cache.watched(
            &p,
            &[
                Event::Put {
                    kv: kv("/registry/pods/default/a", &pod("a", "two"), 6),
                },
                Event::Delete {
                    key: "/registry/pods/default/b".into(),
                    revision: 7,
                },
                Event::Put {
                    kv: kv("/registry/events/default/e1", "{}", 8),
                },
                Event::Put {
                    kv: kv("/registry/pods/default/c", &pod("wrong-name", "x"), 8),
                },
            ],
            9,
        );
        assert_eq!(cache.revision, 8);
        let view = cache.view();
        let pods = view.kind::<Pod>(Kind::Pod);
        assert_eq!(names(&view), [("a".to_string(), 6)]);
        assert_eq!(
            pods.objects[0].object.spec.containers[0].image, "two",
            "the put replaced the object"
        );
        assert_eq!(
            pods.objects[0].object.metadata.resource_version.as_deref(),
            Some("6")
        );
        assert_eq!(pods.unreadable.len(), 1, "a value naming another object");
        // Asking for a kind as the wrong type finds nothing, never panics.
        assert!(view.kind::<Node>(Kind::Pod).objects.is_empty());
        assert!(view.kind::<Pod>(Kind::Event).objects.is_empty());

        // A watch answer with no events still says how far the store got.
        cache.watched(&p, &[], 12);
        assert_eq!(cache.revision, 11);
    }
}

//! Events the leader records about objects (scaling, scheduling failures,
//! node health), stored as `EventRecord`s, with a bound on how many stay.

use api::{Event, EventRecord, EventType, Kind};
use kvs::kv::Op;

use crate::clock::Clock;
use crate::store::{Store, encode, key, prefix};

/// Events kept in the store at most; older ones are deleted first.
pub const MAX_EVENTS: usize = 2_000;

/// The write that records an event about `kind` `namespace/name`, now.
pub fn event(
    kind: Kind,
    meta: &api::ObjectMeta,
    type_: EventType,
    reason: &str,
    message: String,
    source: &str,
) -> Op {
    event_at(&Clock::system(), kind, meta, type_, reason, message, source)
}

/// [`event`] at `clock`'s time, named with its ids.
pub fn event_at(
    clock: &Clock,
    kind: Kind,
    meta: &api::ObjectMeta,
    type_: EventType,
    reason: &str,
    message: String,
    source: &str,
) -> Op {
    let e = Event {
        kind: kind.as_str().into(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        reason: reason.into(),
        message,
        type_,
        source: source.into(),
        timestamp: clock.rfc3339(),
    };
    record_at(clock, e)
}

/// The write that stores `e` under a fresh name.
pub fn record(e: Event) -> Op {
    record_at(&Clock::system(), e)
}

/// [`record`] with `clock`'s ids.
pub fn record_at(clock: &Clock, e: Event) -> Op {
    let uid = clock.uid();
    // The uid's last eight characters: random in a random one, the
    // counter in a fixed clock's.
    let name = format!("{}.{}", e.name, &uid[uid.len().saturating_sub(8)..]);
    let mut r = EventRecord::new(e, name);
    r.metadata.uid = uid;
    r.metadata.creation_timestamp = Some(r.timestamp.clone());
    Op::Put {
        key: key(Kind::Event, &r.metadata.namespace, &r.metadata.name),
        value: encode(&r),
    }
}

/// Deletes the oldest events beyond [`MAX_EVENTS`].
pub async fn trim(store: &Store) {
    let Ok((lists, _)) = store.range_many(&[prefix(Kind::Event, None)]).await else {
        return;
    };
    let Some(kvs) = lists.into_iter().next() else {
        return;
    };
    if kvs.len() <= MAX_EVENTS {
        return;
    }
    let mut by_age: Vec<(i64, String)> = kvs
        .into_iter()
        .map(|kv| (kv.create_revision, kv.key))
        .collect();
    by_age.sort_unstable();
    let excess = by_age.len() - MAX_EVENTS;
    for chunk in by_age[..excess].chunks(100) {
        let txn = kvs::kv::Txn {
            compares: Vec::new(),
            success: chunk
                .iter()
                .map(|(_, k)| Op::Delete { key: k.clone() })
                .collect(),
            failure: Vec::new(),
        };
        if let Err(e) = store.txn(txn).await {
            tracing::warn!(error = %e, "trimming events failed");
            return;
        }
    }
}

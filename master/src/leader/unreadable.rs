//! Reporting stored values that do not parse: once per key, not per pass.
//!
//! The loops skip such values (see [`super::Snapshot`]); this module tells
//! the operator about them: a log line and a `Warning` event
//! (`UnreadableObject`) naming the key when a key first turns up unreadable,
//! again only if it turns up again after it was fixed or deleted. The count
//! is the `mkube_unreadable_objects` metric (see [`crate::metrics`]).

use std::collections::HashSet;

use api::{EventType, Kind};
use kvs::kv::Op;

use crate::events::event;
use crate::store::{Unreadable, split_key};

/// Why the events are written.
pub const REASON: &str = "UnreadableObject";

/// The kind a registry key belongs to (`/registry/<plural>/...`).
pub fn kind_of_key(key: &str) -> Option<Kind> {
    let plural = key.strip_prefix("/registry/")?.split('/').next()?;
    Kind::parse(plural).ok()
}

/// The events for the keys of `unreadable` not yet in `reported`; forgets
/// the reported keys that are readable (or gone) again.
pub fn report(unreadable: &[Unreadable], reported: &mut HashSet<String>, source: &str) -> Vec<Op> {
    let now: HashSet<&str> = unreadable.iter().map(|u| u.key.as_str()).collect();
    reported.retain(|k| now.contains(k.as_str()));
    let mut ops = Vec::new();
    for u in unreadable {
        if !reported.insert(u.key.clone()) {
            continue;
        }
        tracing::warn!(key = %u.key, error = %u.error, "a stored object does not parse; it is skipped until it is fixed or deleted");
        let Some(kind) = kind_of_key(&u.key) else {
            continue;
        };
        let (namespace, name) = split_key(kind, &u.key);
        // A raw key may name anything: the event is about a valid name.
        let valid = |n: &str| api::validation::is_dns1123_subdomain(n);
        let mut meta = api::ObjectMeta::named(if valid(&name) { &name } else { "unreadable" });
        if valid(&namespace) {
            meta.namespace = namespace;
        }
        let message = format!(
            "{} does not parse ({}); it is skipped until it is deleted (mkctl delete {} {}, or mkctl kv del KEY) or rewritten",
            clip(&u.key),
            clip(&u.error),
            kind.plural(),
            clip(&name)
        );
        ops.push(event(
            kind,
            &meta,
            EventType::Warning,
            REASON,
            message,
            source,
        ));
    }
    ops
}

/// At most 256 bytes of `text`, for messages.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(256) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(key: &str) -> Unreadable {
        Unreadable {
            key: key.into(),
            error: "invalid type: string \"x\", expected struct Pod".into(),
        }
    }

    #[test]
    fn each_key_is_reported_once_until_it_is_readable_again() {
        let mut reported = HashSet::new();
        let poison = bad("/registry/pods/default/poison");
        let ops = report(std::slice::from_ref(&poison), &mut reported, "test");
        let [Op::Put { key, value }] = ops.as_slice() else {
            panic!("one event: {ops:?}");
        };
        assert!(key.starts_with("/registry/events/default/poison."), "{key}");
        let e: api::EventRecord = serde_json::from_str(value).expect("an event");
        assert_eq!(e.reason, REASON);
        assert_eq!(e.type_, EventType::Warning);
        assert_eq!(e.involved_object.kind, "Pod");
        assert!(
            e.message.contains("/registry/pods/default/poison"),
            "{}",
            e.message
        );

        assert!(report(std::slice::from_ref(&poison), &mut reported, "test").is_empty());
        assert!(report(&[], &mut reported, "test").is_empty());
        assert_eq!(
            report(&[poison], &mut reported, "test").len(),
            1,
            "back again"
        );
    }

    #[test]
    fn a_raw_key_with_a_bad_name_is_reported_under_a_valid_one() {
        let ops = report(
            &[bad("/registry/pods/default/a/b/C")],
            &mut HashSet::new(),
            "test",
        );
        let [Op::Put { key, .. }] = ops.as_slice() else {
            panic!("one event: {ops:?}");
        };
        assert!(
            key.starts_with("/registry/events/default/unreadable."),
            "{key}"
        );
    }

    #[test]
    fn node_keys_name_the_node() {
        assert_eq!(kind_of_key("/registry/nodes/n1"), Some(Kind::Node));
        assert_eq!(kind_of_key("/elsewhere/x"), None);
        let ops = report(&[bad("/registry/nodes/n1")], &mut HashSet::new(), "test");
        assert_eq!(ops.len(), 1);
    }
}

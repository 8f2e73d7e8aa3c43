//! `Event`: something that happened to an object, for people to read.

use serde::{Deserialize, Serialize};

/// Normal or Warning, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// Expected (`Started`, `Pulled`).
    Normal,
    /// Worth a look (`BackOff`, `Unhealthy`, `Failed`).
    Warning,
}

/// An event about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// The object's kind (`Pod`).
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// One CamelCase word: `Created`, `Started`, `Killing`, `BackOff`, ...
    pub reason: String,
    /// A sentence.
    pub message: String,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// Who reported it (`worker/<node>`).
    pub source: String,
    /// When (RFC 3339).
    pub timestamp: String,
}

/// The object an [`EventRecord`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    /// Its kind.
    pub kind: String,
    /// Its namespace (empty for nodes).
    #[serde(default)]
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    #[serde(default)]
    pub uid: String,
}

/// An event as the masters store and list it (Kubernetes' `v1 Event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRecord {
    /// `v1`.
    pub api_version: String,
    /// `Event`.
    pub kind: String,
    /// Its own name and namespace (the involved object's namespace).
    pub metadata: crate::meta::ObjectMeta,
    /// What it is about.
    pub involved_object: ObjectReference,
    /// One CamelCase word.
    pub reason: String,
    /// A sentence.
    pub message: String,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// Who reported it.
    pub source: String,
    /// When (RFC 3339).
    pub timestamp: String,
}

impl EventRecord {
    /// The stored form of `event`, named `name`.
    pub fn new(event: Event, name: String) -> EventRecord {
        let mut metadata = crate::meta::ObjectMeta::named(name);
        metadata.namespace = if event.namespace.is_empty() {
            crate::meta::DEFAULT_NAMESPACE.to_string()
        } else {
            event.namespace.clone()
        };
        EventRecord {
            api_version: "v1".into(),
            kind: "Event".into(),
            metadata,
            involved_object: ObjectReference {
                kind: event.kind,
                namespace: event.namespace,
                name: event.name,
                uid: event.uid,
            },
            reason: event.reason,
            message: event.message,
            type_: event.type_,
            source: event.source,
            timestamp: event.timestamp,
        }
    }
}

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

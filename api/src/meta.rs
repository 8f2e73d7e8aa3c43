//! Object metadata shared by every resource, in Kubernetes' words.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The namespace an object lands in when its manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `metadata`: identity, labels and the store's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Unique within its namespace and kind; a DNS-1123 label.
    pub name: String,
    /// Defaults to `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Assigned by the API server when the object is created; unique for all time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Key/value labels that selectors match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Rises by one with each change of the spec (set by the API server);
    /// controllers report the generation they acted on as `observedGeneration`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: i64,
    /// The store revision the object was read at (set by the API server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// When the object was created (RFC 3339, set by the API server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Set when deletion was requested; the object goes once its owner has
    /// finished with it (a pod once its containers are stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// The grace the object's deletion gives it, in seconds (a pod's
    /// containers get SIGTERM, then SIGKILL after this long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<u64>,
    /// The controllers that own this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    /// The managing controller's reference, if any.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.owner_references.iter().find(|o| o.controller)
    }

    /// Metadata with just a name, in the default namespace.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            namespace: default_namespace(),
            uid: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            generation: 0,
            resource_version: None,
            creation_timestamp: None,
            deletion_timestamp: None,
            deletion_grace_period_seconds: None,
            owner_references: Vec::new(),
        }
    }
}

/// Points at the controller that owns an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    /// The owner's kind (`ReplicaSet`, `Deployment`).
    pub kind: String,
    /// The owner's name.
    pub name: String,
    /// The owner's uid.
    pub uid: String,
    /// True for the one managing controller.
    #[serde(default)]
    pub controller: bool,
}

//! The `Master` service: what mkctl and workers ask of any master.
//!
//! Objects travel as JSON values carrying their `kind`, so that one set of
//! methods serves every kind and the server, not serde on the client,
//! decides what a manifest means: the server parses each object into its
//! typed form (refusing unknown fields, naming the path of a bad one),
//! validates it, and answers with the stored object, `resourceVersion` set
//! to the store's `mod_revision` of its key.
//!
//! Writes carrying `metadata.resourceVersion` are compare-and-set on it
//! (optimistic concurrency); without it, `apply` overwrites the spec.
//! Status is not written through this API: controllers and the prober own it.

use serde::{Deserialize, Serialize};

use crate::node::NodeInfo;
use crate::validation::ValidationError;

/// `Master.join`: a worker announces itself (the cluster token authenticates it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// The node as it sees itself; `address` is where masters probe it.
    pub node: NodeInfo,
    /// The highest fence the worker has followed: a cluster re-formed from
    /// nothing (every master and export lost) fences above it, so that the
    /// worker follows the new leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<crate::worker::Fence>,
}

/// `Master.join`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinResponse {
    /// The masters' addresses, so that the worker can reach any of them later.
    pub masters: Vec<String>,
    /// The epoch the cluster's fences are at now (the store's epoch, or
    /// above the highest fence a worker reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_epoch: Option<u64>,
}

/// `Master.bootstrap`: a worker that has no certificate yet asks for one,
/// with the join token (kubelet TLS bootstrapping). The name must not be
/// taken by a live node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapRequest {
    /// The node's name: the certificate's common name.
    pub node: String,
    /// A PKCS#10 signing request (PEM) for a key the worker made; only its
    /// public key is used.
    pub csr: String,
    /// DNS names and IP addresses the worker is reached at.
    pub hosts: Vec<String>,
}

/// `Master.renew`: a worker asks for a new certificate for its own node,
/// presenting its current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewRequest {
    /// A PKCS#10 signing request (PEM) for the worker's new key.
    pub csr: String,
    /// DNS names and IP addresses the worker is reached at.
    pub hosts: Vec<String>,
}

/// `Master.bootstrap`'s and `Master.renew`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateResponse {
    /// The certificate (PEM), group `mkube:workers`.
    pub certificate: String,
}

/// `Master.review_access`: may the caller do VERB on KIND here? (`mkctl
/// auth can-i`, Kubernetes' SelfSubjectAccessReview.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessReviewRequest {
    /// get, list, watch, create, apply (update, patch), delete, rollback,
    /// drain, logs, exec; for the store (`kv`) also put.
    pub verb: String,
    /// Any name of a kind (`pods`, `deploy`), or `kv` for the store's keys.
    pub kind: String,
}

/// `Master.review_access`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessReviewResponse {
    /// Whether the call would be let through.
    pub allowed: bool,
    /// The method checked and why (the refusal's words when refused).
    pub reason: String,
}

/// `Master.create` and `Master.apply`: one object, as a manifest writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteRequest {
    /// The object, with `kind`, `metadata` and `spec`.
    pub object: serde_json::Value,
}

/// What a write did, in kubectl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The object is new.
    Created,
    /// The object changed.
    Configured,
    /// The object was already so.
    Unchanged,
}

impl Outcome {
    /// `created`, `configured`, `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteResponse {
    /// The object as stored.
    pub object: serde_json::Value,
    /// What happened.
    pub outcome: Outcome,
}

/// Names one object: `Master.get` and `Master.delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRequest {
    /// Any name of the kind (`pods`, `po`, `Pod`).
    pub kind: String,
    /// The namespace (default `default`; ignored for nodes).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
    /// For a delete: only if the object is still at this version.
    #[serde(default)]
    pub resource_version: Option<String>,
    /// For a delete of a pod: its grace in seconds (default: the pod's
    /// `terminationGracePeriodSeconds`). `Some(0)` removes it at once, as
    /// kubectl's `--grace-period=0 --force`: its containers may still run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<u64>,
}

/// The answer to a get or a delete: the object (as it was, for a delete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectResponse {
    /// The object.
    pub object: serde_json::Value,
}

/// `Master.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListRequest {
    /// Any name of the kind.
    pub kind: String,
    /// One namespace; `None` for every namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// kubectl's `-l` syntax (`app=web,tier!=db`).
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Only pods bound to this node.
    #[serde(default)]
    pub node_name: Option<String>,
}

/// `Master.list`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListResponse {
    /// The objects, by namespace and name.
    pub items: Vec<serde_json::Value>,
    /// Watch from here to see every change after this list.
    pub resource_version: String,
    /// Stored values in the range that do not parse as the kind: left out
    /// of `items`, named here so that they can be deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<UnreadableObject>,
}

/// A stored value that does not parse as its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnreadableObject {
    /// Its key in the store.
    pub key: String,
    /// Why it does not parse.
    pub error: String,
}

/// `Master.watch`: a long-poll for changes after a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchRequest {
    /// Any name of the kind.
    pub kind: String,
    /// One namespace; `None` for every namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// kubectl's `-l` syntax.
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Changes after this version (a list's or the previous watch's).
    pub resource_version: String,
    /// Longest wait for a change, in milliseconds (default 10 000, at most 60 000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    /// It was created.
    Added,
    /// It changed.
    Modified,
    /// It was deleted (the object is its last state).
    Deleted,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub type_: WatchEventType,
    /// The object after the change.
    pub object: serde_json::Value,
}

/// `Master.watch`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchResponse {
    /// Changes in order; empty when the wait ran out.
    pub events: Vec<WatchEvent>,
    /// Watch again from here.
    pub resource_version: String,
}

/// `Master.rollback`: `rollout undo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// The Deployment's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Deployment's name.
    pub name: String,
    /// The revision to go back to; the previous one when absent.
    #[serde(default)]
    pub to_revision: Option<u64>,
}

/// `Master.drain`: cordon a node and evict its pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrainRequest {
    /// The node.
    pub node: String,
    /// Also evict pods no controller manages (they are gone for good);
    /// without it such pods make the drain fail and nothing changes.
    #[serde(default)]
    pub force: bool,
    /// Evict at once, ignoring PodDisruptionBudgets (kubectl's
    /// `--disable-eviction`): for a Spot eviction notice, which cannot
    /// wait. The budgets it breaks are reported as Warning events.
    #[serde(default)]
    pub disable_eviction: bool,
}

/// `Master.drain`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrainResponse {
    /// The evicted pods, as `namespace/name`; each stops within its grace period.
    pub evicted: Vec<String>,
    /// Pods left on the node because evicting them now would break a
    /// PodDisruptionBudget, each with the budget and why; call again once
    /// replacements elsewhere are ready.
    #[serde(default)]
    pub blocked: Vec<String>,
}

/// `Master.figures`: asks a master for its own figures (see [`crate::metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiguresRequest {}

/// `Master.figures`' answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiguresResponse {
    /// The master's CPU, memory and Raft figures, now.
    pub points: Vec<crate::metrics::Point>,
}

/// `Master.record_metrics`: points and annotations the leader collected,
/// for the receiving master's metrics store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordMetricsRequest {
    /// The points.
    pub points: Vec<crate::metrics::Point>,
    /// The annotations.
    #[serde(default)]
    pub annotations: Vec<crate::metrics::Annotation>,
}

/// `Master.record_metrics`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordMetricsResponse {
    /// Points stored.
    pub points: usize,
}

/// `Master.prepare_eviction`: the VM of this master is about to be evicted
/// (an Azure Scheduled Events Preempt): hand leadership over if it leads,
/// and export the store's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareEvictionRequest {}

/// `Master.prepare_eviction`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareEvictionResponse {
    /// Whether this master led and another member leads now.
    pub leadership_moved: bool,
    /// The log index the export covers, if one was written.
    pub exported_index: Option<u64>,
}

/// Why a master call failed: one enum for the API layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MasterError {
    /// The request is malformed (unknown kind, unparsable object).
    #[error("{0}")]
    InvalidArgument(String),
    /// The object parsed but is invalid; every bad field is named.
    #[error("{kind} {name:?} is invalid: {errors}")]
    Invalid {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The invalid fields.
        errors: ValidationError,
    },
    /// No such object.
    #[error("{kind} {name:?} not found{}", in_namespace(.namespace))]
    NotFound {
        /// Its kind (plural resource name, as kubectl prints it).
        kind: String,
        /// Its namespace (empty for nodes).
        namespace: String,
        /// Its name.
        name: String,
    },
    /// `create` of an object that exists.
    #[error("{kind} {name:?} already exists{}", in_namespace(.namespace))]
    AlreadyExists {
        /// Its kind.
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A write's `resourceVersion` is not the stored one: read again and retry.
    #[error(
        "Operation cannot be fulfilled on {kind} {name:?}: the object has been modified (resourceVersion {given}, now {current}); read it again and retry"
    )]
    Conflict {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// The version the request carried.
        given: String,
        /// The stored version.
        current: String,
    },
    /// The stored value of the object does not parse as its kind (a raw
    /// `Kv` write, or a bug): it can only be deleted or overwritten.
    #[error(
        "{key} holds a value that does not parse ({error}); delete it (mkctl delete KIND NAME, or mkctl kv del {key}) or write a valid object with mkctl kv put"
    )]
    Unreadable {
        /// The key.
        key: String,
        /// Why it does not parse.
        error: String,
    },
    /// A watch asked for changes older than the history kept: list again.
    #[error("resourceVersion {0} is too old; list again and watch from the list's resourceVersion")]
    Expired(String),
    /// This master cannot serve now (no leader, store unavailable).
    #[error("{0}")]
    Unavailable(String),
    /// The caller may not do this (a worker acting for another node).
    #[error("{0}")]
    Forbidden(String),
}

fn in_namespace(ns: &str) -> String {
    if ns.is_empty() {
        String::new()
    } else {
        format!(" in namespace {ns:?}")
    }
}

impl From<MasterError> for rpc::Status {
    fn from(e: MasterError) -> Self {
        let code = match &e {
            MasterError::InvalidArgument(_) | MasterError::Invalid { .. } => {
                rpc::Code::InvalidArgument
            }
            MasterError::NotFound { .. } => rpc::Code::NotFound,
            MasterError::AlreadyExists { .. } => rpc::Code::AlreadyExists,
            MasterError::Conflict { .. } => rpc::Code::Aborted,
            MasterError::Expired(_) | MasterError::Unreadable { .. } => {
                rpc::Code::FailedPrecondition
            }
            MasterError::Unavailable(_) => rpc::Code::Unavailable,
            MasterError::Forbidden(_) => rpc::Code::PermissionDenied,
        };
        let status = rpc::Status::new(code, e.to_string());
        match serde_json::to_value(&e) {
            Ok(details) => status.with_details(details),
            Err(_) => status,
        }
    }
}

impl MasterError {
    /// The master error an RPC error carries, if it carries one.
    pub fn from_rpc(e: &rpc::Error) -> Option<MasterError> {
        e.status()
            .and_then(|s| s.details.clone())
            .and_then(|d| serde_json::from_value(d).ok())
    }
}

/// The masters' service.
#[rpc::service]
pub trait Master {
    /// Registers (or re-registers) a node.
    async fn join(&self, req: JoinRequest) -> Result<JoinResponse, MasterError>;
    /// Signs a first certificate for a worker (join token).
    async fn bootstrap(&self, req: BootstrapRequest) -> Result<CertificateResponse, MasterError>;
    /// Signs a new certificate for the calling worker's node.
    async fn renew(&self, req: RenewRequest) -> Result<CertificateResponse, MasterError>;
    /// Whether the caller may do a verb on a kind.
    async fn review_access(
        &self,
        req: AccessReviewRequest,
    ) -> Result<AccessReviewResponse, MasterError>;
    /// Creates an object; fails if it exists.
    async fn create(&self, req: WriteRequest) -> Result<WriteResponse, MasterError>;
    /// Creates or updates an object.
    async fn apply(&self, req: WriteRequest) -> Result<WriteResponse, MasterError>;
    /// Reads one object (linearizable).
    async fn get(&self, req: ObjectRequest) -> Result<ObjectResponse, MasterError>;
    /// Reads objects of a kind (linearizable).
    async fn list(&self, req: ListRequest) -> Result<ListResponse, MasterError>;
    /// Deletes one object; a pod stops within its grace period.
    async fn delete(&self, req: ObjectRequest) -> Result<ObjectResponse, MasterError>;
    /// Waits for changes after a version.
    async fn watch(&self, req: WatchRequest) -> Result<WatchResponse, MasterError>;
    /// Rolls a Deployment back to an earlier revision.
    async fn rollback(&self, req: RollbackRequest) -> Result<WriteResponse, MasterError>;
    /// Cordons a node and evicts its pods.
    async fn drain(&self, req: DrainRequest) -> Result<DrainResponse, MasterError>;
    /// A container's output, from the node the pod runs on.
    async fn logs(
        &self,
        req: crate::worker::LogsRequest,
    ) -> Result<crate::worker::LogsResponse, MasterError>;
    /// Runs a command in a container, on the node the pod runs on.
    async fn exec(
        &self,
        req: crate::worker::ExecRequest,
    ) -> Result<crate::worker::ExecResponse, MasterError>;
    /// This master's own figures (the leader's collector asks every master).
    async fn figures(&self, req: FiguresRequest) -> Result<FiguresResponse, MasterError>;
    /// Hands leadership over and exports before this master's VM is evicted.
    async fn prepare_eviction(
        &self,
        req: PrepareEvictionRequest,
    ) -> Result<PrepareEvictionResponse, MasterError>;
    /// Stores points and annotations in this master's metrics store.
    async fn record_metrics(
        &self,
        req: RecordMetricsRequest,
    ) -> Result<RecordMetricsResponse, MasterError>;
}

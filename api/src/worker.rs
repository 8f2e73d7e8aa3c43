//! The `Worker` service: what a master asks of a node.
//!
//! ```text
//!  leader ──probe(fence, version, pods delta, events_after)──▶ worker
//!         ◀──node info, acked_version, pod statuses, events────┘
//! ```
//!
//! * Fencing: a worker refuses a probe whose [`Fence`] (cluster epoch, Raft
//!   term) is lower than the highest it has seen, so a deposed leader cannot
//!   undo what a newer one asked for.
//! * Deltas: a probe carries only what changed since `base_version`. A worker
//!   whose version is not `base_version` applies nothing and answers with the
//!   version it holds; the master then sends the whole set (`base_version:
//!   None`). Versions are the master's (a store revision), opaque to the worker.
//! * Events are kept by the worker in a bounded ring with sequence numbers;
//!   a probe asks for those after `events_after`, so a lost answer loses none.

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::node::NodeInfo;
use crate::pod::{Pod, PodStatus};

/// (cluster epoch, leader term), compared in that order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct Fence {
    /// The store's epoch: changes when a whole fleet is re-formed.
    pub epoch: u64,
    /// The leader's Raft term within the epoch.
    pub term: u64,
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} term {}", self.epoch, self.term)
    }
}

/// `Worker.probe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeRequest {
    /// The node this probe is for: a worker refuses a probe for another
    /// (a node re-registered at another's address must not empty it).
    #[serde(default)]
    pub node: String,
    /// The sender's epoch and term.
    pub fence: Fence,
    /// The desired-state version this probe brings the node to.
    pub version: u64,
    /// `Some(v)`: `upserts` and `deletes` change version `v`. `None`:
    /// `upserts` is the node's whole set of pods.
    #[serde(default)]
    pub base_version: Option<u64>,
    /// Pods to run (new or changed), each with a uid and `spec.nodeName` of this node.
    #[serde(default)]
    pub upserts: Vec<Pod>,
    /// Uids of pods to stop and remove.
    #[serde(default)]
    pub deletes: Vec<String>,
    /// The grace of deleted pods whose deletion set one (uid to seconds):
    /// it replaces the pod's own `terminationGracePeriodSeconds`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub delete_grace: std::collections::BTreeMap<String, u64>,
    /// Send the events with a sequence number above this.
    #[serde(default)]
    pub events_after: u64,
    /// More parts of this sync follow (a node's pods that do not fit one
    /// probe go in several): until the last part, the worker keeps the
    /// containers of pods it has not been sent yet.
    #[serde(default)]
    pub more: bool,
}

/// `Worker.probe`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeResponse {
    /// The node as it sees itself.
    pub node: NodeInfo,
    /// The desired-state version the worker holds after this probe.
    pub acked_version: u64,
    /// The status of every pod the worker holds.
    pub pods: Vec<PodReport>,
    /// Uids of deleted pods whose containers are still there (stopping
    /// within their grace): the master keeps such a pod, `Terminating`,
    /// until its uid is gone from here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terminating: Vec<String>,
    /// Events after `events_after`, oldest first (bounded).
    pub events: Vec<SequencedEvent>,
}

/// One pod's status, as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodReport {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid.
    pub uid: String,
    /// What runs.
    pub status: PodStatus,
}

/// An event with the worker's sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SequencedEvent {
    /// Rises by one per event on this worker process.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// `Worker.logs`: a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsRequest {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container; may be left out when the pod has one.
    #[serde(default)]
    pub container: Option<String>,
    /// Only the last N lines.
    #[serde(default)]
    pub tail_lines: Option<u64>,
    /// Only lines from the last N seconds.
    #[serde(default)]
    pub since_seconds: Option<u64>,
    /// Follow: wait up to `wait_ms` for lines after `cursor`.
    #[serde(default)]
    pub follow: bool,
    /// With `follow`: the cursor of the previous answer.
    #[serde(default)]
    pub cursor: Option<String>,
    /// With `follow`: how long to wait for new lines (default 10 s, at most 60 s).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// `Worker.logs`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsResponse {
    /// The lines, oldest first, without their timestamps.
    pub lines: Vec<String>,
    /// Pass back to continue after the last line.
    pub cursor: Option<String>,
    /// The answer was cut at the size limit; ask again from `cursor`.
    pub truncated: bool,
}

/// `Worker.exec`: run a command in a container, without a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container; may be left out when the pod has one.
    #[serde(default)]
    pub container: Option<String>,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Kill it after this long (default 30 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `Worker.exec`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecResponse {
    /// The command's exit code.
    pub exit_code: i64,
    /// Its standard output (bounded).
    pub stdout: String,
    /// Its standard error (bounded).
    pub stderr: String,
}

/// Why a worker call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum WorkerError {
    /// The probe comes from a deposed leader.
    #[error("probe refused: it carries {got}, but this node has seen {seen}")]
    StaleFence {
        /// The highest fence seen.
        seen: Fence,
        /// The probe's fence.
        got: Fence,
    },
    /// No such pod or container on this node.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid as written.
    #[error("{0}")]
    InvalidArgument(String),
    /// The container runtime does not answer.
    #[error("{0}")]
    Unavailable(String),
}

/// The one place worker errors become RPC statuses; the variant travels in
/// `details` so that callers get it back typed.
impl From<WorkerError> for rpc::Status {
    fn from(e: WorkerError) -> Self {
        let code = match &e {
            WorkerError::StaleFence { .. } => rpc::Code::FailedPrecondition,
            WorkerError::NotFound(_) => rpc::Code::NotFound,
            WorkerError::InvalidArgument(_) => rpc::Code::InvalidArgument,
            WorkerError::Unavailable(_) => rpc::Code::Unavailable,
        };
        let status = rpc::Status::new(code, e.to_string());
        match serde_json::to_value(&e) {
            Ok(details) => status.with_details(details),
            Err(_) => status,
        }
    }
}

impl WorkerError {
    /// The worker error an RPC error carries, if it carries one.
    pub fn from_rpc(e: &rpc::Error) -> Option<WorkerError> {
        e.status()
            .and_then(|s| s.details.clone())
            .and_then(|d| serde_json::from_value(d).ok())
    }
}

/// The node agent's service, called by the leading master (probe) and by
/// masters on behalf of users (logs, exec).
#[rpc::service]
pub trait Worker {
    /// Hands the node its desired pods; answers with what runs.
    async fn probe(&self, req: ProbeRequest) -> Result<ProbeResponse, WorkerError>;
    /// A container's output.
    async fn logs(&self, req: LogsRequest) -> Result<LogsResponse, WorkerError>;
    /// Runs a command in a container.
    async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, WorkerError>;
}

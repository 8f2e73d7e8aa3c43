//! What a node is and reports: capacity, allocatable, usage, conditions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// cpu and memory as integers (millicores, bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Millicores.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
}

/// A node condition's kind; only `Ready` for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeConditionType {
    /// The node can run pods: its container runtime answers.
    Ready,
}

/// `conditions[]` of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCondition {
    /// Which condition.
    #[serde(rename = "type")]
    pub type_: NodeConditionType,
    /// Whether it holds.
    pub status: bool,
    /// One CamelCase word (`DockerUnreachable`).
    pub reason: String,
    /// A human-readable detail.
    pub message: String,
}

/// A node as its worker describes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeInfo {
    /// The node's name (unique in the cluster).
    pub name: String,
    /// Where the worker's RPC server listens (`host:port`).
    pub address: String,
    /// The address at which its pods' host ports answer.
    pub host_ip: String,
    /// The node's labels (what node selectors match).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// All of the machine.
    pub capacity: Resources,
    /// What pods may request: capacity less what the node reserves.
    pub allocatable: Resources,
    /// What the pods use now (from the runtime's stats).
    pub usage: Resources,
    /// `Ready` and why.
    pub conditions: Vec<NodeCondition>,
    /// The runtime (`docker 20.10.24`).
    pub runtime_version: String,
}

impl NodeInfo {
    /// Whether the `Ready` condition holds.
    pub fn is_ready(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == NodeConditionType::Ready && c.status)
    }
}

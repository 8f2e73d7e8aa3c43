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

impl Resources {
    /// The sum, each figure saturating at `u64::MAX` (which fits nowhere):
    /// quantities come from users and nodes, and a wrapped sum would let a
    /// pod "fit".
    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
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

fn api_version_v1() -> String {
    "v1".to_string()
}

fn kind_node() -> String {
    "Node".to_string()
}

/// A node as the masters store it: the worker's report plus what operators
/// set (labels, `unschedulable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// `v1`.
    #[serde(default = "api_version_v1")]
    pub api_version: String,
    /// `Node`.
    #[serde(default = "kind_node")]
    pub kind: String,
    /// Name (the node's), labels; nodes have no namespace.
    pub metadata: crate::meta::ObjectMeta,
    /// What operators set.
    #[serde(default)]
    pub spec: NodeSpec,
    /// What the worker and the prober report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

/// `spec` of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Cordoned: the scheduler places no new pods here.
    #[serde(default)]
    pub unschedulable: bool,
    /// Pods that do not tolerate these are not scheduled here (`mkctl
    /// taint`; Kubernetes keeps pods off its control plane so).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    /// No new pod is scheduled onto the node (pods already there stay).
    NoSchedule,
}

impl std::fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaintEffect::NoSchedule => "NoSchedule",
        })
    }
}

/// A node's taint: `key[=value]:effect`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// A label-style key (`node-role.kubernetes.io/control-plane`).
    pub key: String,
    /// An optional value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// What it does.
    pub effect: TaintEffect,
}

impl std::fmt::Display for Taint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect)
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect)
        }
    }
}

impl std::str::FromStr for Taint {
    type Err = String;

    /// `key[=value]:Effect`, as `kubectl taint` writes it.
    fn from_str(s: &str) -> Result<Taint, String> {
        let (kv, effect) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("taint {s:?} must be KEY[=VALUE]:EFFECT"))?;
        let effect = match effect {
            "NoSchedule" => TaintEffect::NoSchedule,
            other => {
                return Err(format!(
                    "taint effect {other:?} is not supported; mkube has NoSchedule"
                ));
            }
        };
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.is_empty() {
            return Err(format!("taint {s:?} has no key"));
        }
        Ok(Taint {
            key: key.to_owned(),
            value: value.to_owned(),
            effect,
        })
    }
}

/// `status` of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    /// Where masters probe the worker.
    pub address: String,
    /// Where its pods' host ports answer.
    pub host_ip: String,
    /// All of the machine.
    pub capacity: Resources,
    /// What pods may request.
    pub allocatable: Resources,
    /// What the pods use.
    pub usage: Resources,
    /// `Ready` and why; the prober sets it false when probes go unanswered.
    pub conditions: Vec<NodeCondition>,
    /// The container runtime.
    pub runtime_version: String,
    /// When a probe was last answered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
}

impl Node {
    /// The stored node for a worker's own description.
    pub fn from_info(info: NodeInfo) -> Node {
        let mut metadata = crate::meta::ObjectMeta::named(info.name.clone());
        metadata.namespace = String::new();
        metadata.labels = info.labels;
        Node {
            api_version: api_version_v1(),
            kind: kind_node(),
            metadata,
            spec: NodeSpec::default(),
            status: Some(NodeStatus {
                address: info.address,
                host_ip: info.host_ip,
                capacity: info.capacity,
                allocatable: info.allocatable,
                usage: info.usage,
                conditions: info.conditions,
                runtime_version: info.runtime_version,
                last_heartbeat_time: None,
            }),
        }
    }

    /// Whether the `Ready` condition holds.
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == NodeConditionType::Ready && c.status)
        })
    }
}

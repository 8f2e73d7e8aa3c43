//! Service discovery: `Service` (a name, a label selector and named ports)
//! and `Endpoints` (where the ready pods that match it answer).
//!
//! Pods have no address of their own: a pod is reached at its node's
//! address and a host port, as in Borg. A Service port therefore names a
//! *container* port (by number or by its name), and an endpoint is the
//! node's address with the host port the pod exposes it on. A ready pod
//! that does not expose the port on its host cannot be reached and is not
//! an endpoint of that port.
//!
//! The shapes follow Kubernetes' `v1` `Service` and `Endpoints` so that
//! manifests and tools carry over; fields mkube cannot honour (cluster IPs,
//! session affinity, external traffic policies) are refused by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::pod::Protocol;

fn v1() -> String {
    "v1".to_string()
}

fn kind_service() -> String {
    "Service".to_string()
}

fn kind_endpoints() -> String {
    "Endpoints".to_string()
}

/// A Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// `v1`.
    #[serde(default = "v1")]
    pub api_version: String,
    /// `Service`.
    #[serde(default = "kind_service")]
    pub kind: String,
    /// Identity; the name is the DNS label of `NAME.NAMESPACE.svc.<domain>`.
    pub metadata: ObjectMeta,
    /// Which pods, which ports.
    pub spec: ServiceSpec,
}

/// `spec` of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The pods it stands for: every pair must be among a pod's labels (as
    /// Kubernetes, a plain map; an empty selector selects nothing).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Its ports, at least one; names are required when there are several.
    pub ports: Vec<ServicePort>,
}

/// `spec.ports[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// The port's name (a DNS-1123 label): SRV records are
    /// `_NAME._PROTOCOL.SERVICE.NAMESPACE.svc.<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Service's port number (informational: clients use the endpoints'
    /// host ports, which SRV records give).
    pub port: u16,
    /// The container port it reaches: a number or a container port's name
    /// (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// `targetPort`: a container port's number or name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A container port number.
    Number(u16),
    /// A container port's name.
    Name(String),
}

/// The Endpoints of a Service: same namespace and name, written by the
/// endpoints controller only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoints {
    /// `v1`.
    #[serde(default = "v1")]
    pub api_version: String,
    /// `Endpoints`.
    #[serde(default = "kind_endpoints")]
    pub kind: String,
    /// The Service's namespace and name.
    pub metadata: ObjectMeta,
    /// One subset per distinct set of ports (in mkube: per port, since
    /// host ports differ from pod to pod).
    #[serde(default)]
    pub subsets: Vec<EndpointSubset>,
}

/// `subsets[]`: addresses that all serve the same ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSubset {
    /// Ready pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EndpointAddress>,
    /// Matching pods that are not ready (kept for `describe`, never in DNS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// The ports these addresses answer on.
    pub ports: Vec<EndpointPort>,
}

/// `addresses[]`: one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointAddress {
    /// The node's address (where the host port answers).
    pub ip: String,
    /// The node.
    pub node_name: String,
    /// The pod.
    pub target_ref: PodRef,
}

/// The pod behind an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRef {
    /// `Pod`.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
}

/// `ports[]` of a subset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    /// The Service port's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host port.
    pub port: u16,
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

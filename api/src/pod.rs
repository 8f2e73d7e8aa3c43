//! `Pod`: one or more containers scheduled together onto one node.
//!
//! The spec is what a user writes; the status is what the node reports.
//! Containers of a pod share the first container's network namespace, and
//! there are no pod IPs: a container port is reached through its host port
//! on the node's address (Borg style: no overlay network to run on cheap
//! VMs; the README's "Service discovery" says how clients find pods).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;

/// The most of a finished container's output its status keeps (Kubernetes'
/// bound on a termination message).
pub const TERMINATION_MESSAGE_BYTES: usize = 4096;

/// The grace period a pod gets when its spec names none (Kubernetes' 30 s).
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: u64 = 30;

fn api_version_v1() -> String {
    "v1".to_string()
}

fn kind_pod() -> String {
    "Pod".to_string()
}

/// A pod: metadata, spec and (once reported) status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    /// Always `v1`.
    #[serde(default = "api_version_v1")]
    pub api_version: String,
    /// Always `Pod`.
    #[serde(default = "kind_pod")]
    pub kind: String,
    /// Name, namespace, uid, labels.
    pub metadata: ObjectMeta,
    /// What should run.
    pub spec: PodSpec,
    /// What runs, as last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

impl Pod {
    /// A pod with the given name and spec, in the default namespace.
    pub fn new(name: impl Into<String>, spec: PodSpec) -> Self {
        Pod {
            api_version: api_version_v1(),
            kind: kind_pod(),
            metadata: ObjectMeta::named(name),
            spec,
            status: None,
        }
    }

    /// `namespace/name`, the way events and logs name a pod.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

/// `spec` of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// At least one; names unique within the pod.
    pub containers: Vec<Container>,
    /// What happens when a container exits.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Time between SIGTERM and SIGKILL when the pod is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<u64>,
    /// Labels the node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints of nodes this pod may still be scheduled onto.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The node the pod is bound to (set by the scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

impl PodSpec {
    /// The grace period in seconds, with the default applied.
    pub fn grace_period_seconds(&self) -> u64 {
        self.termination_grace_period_seconds
            .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
    }
}

/// How a toleration compares its value (Kubernetes' operators).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TolerationOperator {
    /// The taint's value must equal the toleration's.
    #[default]
    Equal,
    /// Any value (and, without a key, any taint).
    Exists,
}

/// A pod's toleration of node taints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// The taint key (empty with `Exists`: every key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: TolerationOperator,
    /// The value `Equal` compares with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// The effect tolerated; none: every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<crate::node::TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint` (Kubernetes' rules).
    pub fn tolerates(&self, taint: &crate::node::Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => self.key.is_empty() || self.key == taint.key,
            TolerationOperator::Equal => self.key == taint.key && self.value == taint.value,
        }
    }
}

/// `restartPolicy`: applies to every container of the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Restart whenever a container exits.
    #[default]
    Always,
    /// Restart when a container exits with a non-zero code.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Whether a container that exited with `exit_code` is restarted.
    pub fn restarts(self, exit_code: i64) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    /// Unique within the pod; a DNS-1123 label.
    pub name: String,
    /// The image reference; pulled only if absent on the node.
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's cmd.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Ports the container listens on, and the host ports that expose them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// cpu/memory requests (for scheduling) and limits (enforced by Docker).
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Restarts the container when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Decides whether the container is ready (and its pod an endpoint of
    /// the Services that select it); not ready until it first succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
}

impl Container {
    /// A container with just a name and an image; everything else defaults.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        Container {
            name: name.into(),
            image: image.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            ports: Vec::new(),
            resources: ResourceRequirements::default(),
            liveness_probe: None,
            readiness_probe: None,
        }
    }
}

/// `env[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// The variable's name.
    pub name: String,
    /// Its value.
    #[serde(default)]
    pub value: String,
}

/// `ports[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    /// An optional name (a DNS-1123 label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port inside the container, 1–65535.
    pub container_port: u16,
    /// The port on the node, 1–65535; unset means not exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A port's protocol.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    TCP,
    /// UDP.
    UDP,
}

impl Protocol {
    /// Docker's spelling (`tcp`, `udp`).
    pub fn docker_name(self) -> &'static str {
        match self {
            Protocol::TCP => "tcp",
            Protocol::UDP => "udp",
        }
    }
}

/// `resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    /// What the scheduler reserves on the node.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub requests: ResourceList,
    /// What Docker enforces (cpu → NanoCpus, memory → Memory).
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
}

/// cpu and memory quantities (see [`crate::quantity`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceList {
    /// cpu: `"500m"`, `"2"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// memory: `"128Mi"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl ResourceList {
    /// Neither cpu nor memory is set.
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

/// `livenessProbe` and `readinessProbe`: exactly one of `exec`, `httpGet`,
/// `tcpSocket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// Run a command in the container; exit code 0 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// GET a path; a status in 200–399 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Open a TCP connection; connecting is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Seconds after the container starts before the first probe.
    #[serde(default)]
    pub initial_delay_seconds: u32,
    /// Seconds between probes (default 10).
    #[serde(default = "default_period_seconds")]
    pub period_seconds: u32,
    /// Seconds before a probe counts as failed (default 1).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u32,
    /// Consecutive failures that restart the container (liveness) or make
    /// it not ready (readiness) (default 3).
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Consecutive successes that make a not-ready container ready again
    /// (default 1; must be 1 for liveness).
    #[serde(default = "default_success_threshold")]
    pub success_threshold: u32,
}

fn default_period_seconds() -> u32 {
    10
}
fn default_timeout_seconds() -> u32 {
    1
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_success_threshold() -> u32 {
    1
}

/// `exec` probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecAction {
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// `httpGet` probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    /// The path (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The container port.
    pub port: u16,
}

fn default_path() -> String {
    "/".to_string()
}

/// `tcpSocket` probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocketAction {
    /// The container port.
    pub port: u16,
}

/// `status` of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodStatus {
    /// Where the pod is in its life.
    pub phase: PodPhase,
    /// Why the pod is in this phase, in one CamelCase word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The node's address: where the host ports answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Host ports in use, with the container ports they expose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<HostPort>,
    /// When the node first started the pod (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// One per container, in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
}

/// A pod's phase. `Scheduled` is mkube's: bound to a node that has not yet
/// reported the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PodPhase {
    /// Accepted, not yet running on a node.
    #[default]
    Pending,
    /// Bound to a node.
    Scheduled,
    /// Bound, and at least one container runs or is restarting.
    Running,
    /// Every container exited 0 and none will restart.
    Succeeded,
    /// Every container exited, at least one with a failure, and none will restart.
    Failed,
    /// The node stopped answering.
    Unknown,
}

/// A host port in use by a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPort {
    /// The container it belongs to.
    pub container: String,
    /// The port inside the container.
    pub container_port: u16,
    /// The port on the node.
    pub host_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// `containerStatuses[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStatus {
    /// The container's name in the spec.
    pub name: String,
    /// What it is doing now.
    pub state: ContainerState,
    /// How its previous run ended, once it has restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
    /// Running, not failing its liveness probe, and passing its readiness
    /// probe if it has one.
    pub ready: bool,
    /// How many times the node restarted it.
    pub restart_count: u32,
    /// The image it runs.
    pub image: String,
    /// The runtime's id (`docker://<id>`), once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// A container's state: exactly one of waiting, running, terminated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ContainerState {
    /// Not running: being created, pulling, or backing off.
    Waiting {
        /// `ContainerCreating`, `ErrImagePull`, `CrashLoopBackOff`, ...
        reason: String,
        /// Detail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Running.
    #[serde(rename_all = "camelCase")]
    Running {
        /// When it (last) started (RFC 3339).
        started_at: String,
    },
    /// Exited.
    #[serde(rename_all = "camelCase")]
    Terminated {
        /// Its exit code.
        exit_code: i64,
        /// `Completed`, `Error` or `OOMKilled`.
        reason: String,
        /// When it started (RFC 3339).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<String>,
        /// When it exited (RFC 3339).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finished_at: Option<String>,
        /// The end of its output (at most [`TERMINATION_MESSAGE_BYTES`],
        /// whole lines), kept with the status so that a finished pod's
        /// result can be read after its container, or its node, is gone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

//! The worker's view of containers, shared by the pure reconciler and the
//! Docker runtime: slots, observed containers, their labels and names.
//!
//! A *slot* is one container of one pod (pod uid + container name). The
//! invariant the whole worker keeps is: at most one Docker container exists
//! per slot, and the worker only ever acts on containers that carry its own
//! node label.

use std::collections::BTreeMap;

use api::pod::{Container, Pod};

/// Label: the node whose worker owns the container.
pub const LABEL_NODE: &str = "mkube.node";
/// Label: `namespace/name` of the pod.
pub const LABEL_POD: &str = "mkube.pod";
/// Label: the pod's uid.
pub const LABEL_UID: &str = "mkube.uid";
/// Label: the container's name in the pod spec.
pub const LABEL_CONTAINER: &str = "mkube.container";
/// Label: hash of the container's spec; a container whose hash differs from
/// the desired spec is replaced.
pub const LABEL_HASH: &str = "mkube.hash";
/// Label: the pod's grace period in seconds, so that a container can be
/// stopped gracefully after its pod has been forgotten.
pub const LABEL_GRACE: &str = "mkube.grace";

/// One container of one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// The pod's uid.
    pub uid: String,
    /// The container's name in the pod spec.
    pub container: String,
}

/// What Docker says a container is doing, with times in ms since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Created, never started.
    Created,
    /// Running since `started_at_ms`.
    Running {
        /// When it (last) started.
        started_at_ms: u64,
    },
    /// Exited.
    Exited {
        /// Its exit code.
        exit_code: i64,
        /// When it started.
        started_at_ms: u64,
        /// When it exited.
        finished_at_ms: u64,
        /// The kernel killed it for exceeding its memory limit.
        oom_killed: bool,
    },
    /// Paused, restarting, being removed or dead: not ours to act on now.
    Other(String),
}

/// A container as listed and inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Docker's id.
    pub id: String,
    /// The `mkube.node` label.
    pub node: String,
    /// The `mkube.pod` label (`namespace/name`), empty if absent.
    pub pod: String,
    /// The slot, when the labels name one.
    pub slot: Option<Slot>,
    /// The `mkube.hash` label.
    pub spec_hash: String,
    /// The `mkube.grace` label (seconds), if readable.
    pub grace_seconds: Option<u64>,
    /// What it is doing.
    pub state: RunState,
}

impl Observed {
    /// Reads the mkube labels of a container; `None` when it has no node label
    /// (a foreign container, never touched).
    pub fn from_labels(
        id: String,
        labels: &BTreeMap<String, String>,
        state: RunState,
    ) -> Option<Observed> {
        let node = labels.get(LABEL_NODE)?.clone();
        let slot = match (labels.get(LABEL_UID), labels.get(LABEL_CONTAINER)) {
            (Some(uid), Some(container)) => Some(Slot {
                uid: uid.clone(),
                container: container.clone(),
            }),
            _ => None,
        };
        Some(Observed {
            id,
            node,
            pod: labels.get(LABEL_POD).cloned().unwrap_or_default(),
            slot,
            spec_hash: labels.get(LABEL_HASH).cloned().unwrap_or_default(),
            grace_seconds: labels.get(LABEL_GRACE).and_then(|g| g.parse().ok()),
            state,
        })
    }

    /// Whether the container runs.
    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }
}

/// The labels the worker puts on a container it creates for `pod`'s
/// container `c` (index `index`).
pub fn labels_for(node: &str, pod: &Pod, index: usize, c: &Container) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_POD.to_string(), pod.key()),
        (LABEL_UID.to_string(), pod.metadata.uid.clone()),
        (LABEL_CONTAINER.to_string(), c.name.clone()),
        (LABEL_HASH.to_string(), spec_hash(pod, index)),
        (
            LABEL_GRACE.to_string(),
            pod.spec.grace_period_seconds().to_string(),
        ),
    ])
}

/// Docker's name for a slot's container: readable, unique per node and pod.
pub fn container_name(node: &str, pod: &Pod, c: &Container) -> String {
    let uid: String = pod
        .metadata
        .uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let raw = format!(
        "mkube_{node}_{}_{}_{}_{uid}",
        pod.metadata.namespace, pod.metadata.name, c.name
    );
    raw.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "_.-".contains(ch) {
                ch
            } else {
                '-'
            }
        })
        .collect()
}

/// A hash of everything that shapes container `index` of `pod` once created
/// (its spec, whether it holds the pod's network or joins it, and the host
/// ports it publishes for the pod). Stable
/// across worker versions (FNV-1a over the spec's JSON), so that an upgraded
/// worker adopts the containers of the old one.
pub fn spec_hash(pod: &Pod, index: usize) -> String {
    // The first container holds the pod's network, so it publishes the host
    // ports of every container of the pod.
    let published: Vec<&api::pod::ContainerPort> = if index == 0 {
        pod.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .filter(|p| p.host_port.is_some())
            .collect()
    } else {
        Vec::new()
    };
    let json = pod
        .spec
        .containers
        .get(index)
        .and_then(|c| serde_json::to_vec(&(c, index == 0, published)).ok())
        .unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

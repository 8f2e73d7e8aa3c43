//! The controllers' decisions, as pure functions of a store snapshot
//! (kube-rs' level-triggered model: each call looks at the whole state, not
//! at what changed, so running one twice changes nothing).
//!
//! # Layout
//!
//! - [`replicaset`]: how many pods to create and which to delete.
//! - [`deployment`]: rolling updates, revision history, rollback, progress.
//! - [`disruption`]: PodDisruptionBudgets and what a drain may evict.
//! - [`endpoints`]: where a Service's ready pods answer (host and port).
//! - [`job`]: Jobs: pods to completion, indexes, failures vs disruptions.
//! - [`nodes`]: when a silent node becomes NotReady and when its pods go.
//! - [`gc`]: objects whose controlling owner is gone.
//! - [`revival`]: which silent nodes' VMs to start, with back-off.
//! - [`termination`]: graceful deletion of pods (`Terminating`).
//!
//! Shared here: pod readiness and activity, and pods from templates.

pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod nodes;
pub mod replicaset;
pub mod revival;
pub mod termination;

use api::workloads::PodTemplateSpec;
use api::{ObjectMeta, OwnerReference, Pod, PodPhase};

/// Whether a pod's containers have all ended for good (Succeeded, Failed).
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().map(|s| s.phase),
        Some(PodPhase::Succeeded | PodPhase::Failed)
    )
}

/// Whether a pod still counts as a replica: not finished and not being
/// deleted (Kubernetes' `IsPodActive`). A terminating pod still holds its
/// node's resources and host ports (see [`termination`]).
pub fn is_active(pod: &Pod) -> bool {
    !is_finished(pod) && !termination::is_terminating(pod)
}

/// Whether a pod is Running with every container ready.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase == PodPhase::Running
            && s.container_statuses.len() == pod.spec.containers.len()
            && s.container_statuses.iter().all(|c| c.ready)
    })
}

/// Whether `pod` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.controller().is_some_and(|o| o.uid == uid)
}

/// A new pod of a template, owned by `owner`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name: String,
    owner: OwnerReference,
) -> Pod {
    let mut pod = Pod::new(name, template.spec.clone());
    pod.metadata.namespace = namespace.to_string();
    pod.metadata.labels.clone_from(&template.metadata.labels);
    pod.metadata
        .annotations
        .clone_from(&template.metadata.annotations);
    pod.metadata.owner_references.push(owner);
    pod
}

/// A stored RFC 3339 time (`None` when absent or not a time).
pub fn parse_time(t: Option<&str>) -> Option<std::time::SystemTime> {
    t.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

/// FNV-1a of some bytes: a stable hash, the same on every master and release.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

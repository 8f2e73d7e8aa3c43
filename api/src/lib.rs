//! mkube's resource types and the orchestrator's RPC contracts.
//!
//! Types follow Kubernetes' names and JSON shapes (camelCase fields,
//! `apiVersion`/`kind`/`metadata`/`spec`/`status`), and refuse unknown
//! fields, so that a typo in a manifest is an error naming the field rather
//! than a silently ignored setting. This crate knows nothing of how masters
//! or workers are built; both depend on it.
//!
//! # Layout
//!
//! - [`meta`]: `ObjectMeta`, owner references.
//! - [`pod`]: `Pod`, its spec (containers, ports, resources, probes, restart
//!   policy) and status (phase, container states).
//! - [`node`]: what a node reports: capacity, allocatable, usage, conditions.
//! - [`event`]: the `Event` type.
//! - [`quantity`]: cpu and memory quantities (`500m`, `128Mi`) as integers.
//! - [`validation`]: field-precise validation (`spec.containers[0].image: required`).
//! - [`worker`]: the `Worker` service (probe, logs, exec) and fencing.
//! - [`master`]: the `Master` service (worker registration).

pub mod event;
pub mod master;
pub mod meta;
pub mod node;
pub mod pod;
pub mod quantity;
pub mod validation;
pub mod worker;

pub use event::{Event, EventType};
pub use meta::{ObjectMeta, OwnerReference};
pub use node::{NodeCondition, NodeConditionType, NodeInfo, Resources};
pub use pod::{
    Container, ContainerPort, ContainerState, ContainerStatus, EnvVar, Pod, PodPhase, PodSpec,
    PodStatus, Probe, Protocol, RestartPolicy,
};
pub use validation::{FieldError, ValidationError, validate_pod};
pub use worker::{Fence, WorkerError};

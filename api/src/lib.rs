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
//! - [`metrics`]: the figures mkube reports (`Point`, the metric catalogue)
//!   and their Prometheus text.
//! - [`node`]: what a node reports (capacity, allocatable, usage,
//!   conditions) and the stored `Node`.
//! - [`event`]: the `Event` type, and its stored form `EventRecord`.
//! - [`kind`]: the kinds the API serves and their names (`po`, `deploy`).
//! - [`selector`]: label selectors, as workloads and `-l` write them.
//! - [`workloads`]: `ReplicaSet` and `Deployment`.
//! - [`batch`]: `Job` and `PodDisruptionBudget`.
//! - [`service`]: `Service` and `Endpoints` (service discovery).
//! - [`quantity`]: cpu and memory quantities (`500m`, `128Mi`) as integers.
//! - [`validation`]: field-precise validation (`spec.containers[0].image: required`).
//! - [`worker`]: the `Worker` service (probe, logs, exec) and fencing.
//! - [`master`]: the `Master` service: objects, watch, rollback, drain,
//!   worker registration.

pub mod batch;
pub mod event;
pub mod kind;
pub mod master;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod pod;
pub mod quantity;
pub mod selector;
pub mod service;
pub mod validation;
pub mod worker;
pub mod workloads;

pub use batch::{Job, PodDisruptionBudget};
pub use event::{Event, EventRecord, EventType};
pub use kind::Kind;
pub use meta::{ObjectMeta, OwnerReference};
pub use node::{Node, NodeCondition, NodeConditionType, NodeInfo, NodeSpec, NodeStatus, Resources};
pub use pod::{
    Container, ContainerPort, ContainerState, ContainerStatus, EnvVar, Pod, PodPhase, PodSpec,
    PodStatus, Probe, Protocol, RestartPolicy,
};
pub use selector::LabelSelector;
pub use validation::{FieldError, ValidationError, validate_pod};
pub use worker::{Fence, WorkerError};
pub use workloads::{Deployment, ReplicaSet};

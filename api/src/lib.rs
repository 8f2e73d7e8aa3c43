//! mkube's resource types and the orchestrator's RPC contracts.
//!
//! This crate will own (see `DESIGN.md`, "Crates"):
//!
//! - the resource types: `Pod`, `ReplicaSet`, `Deployment`, `Node`, `Event`,
//!   `Service`, with their specs and statuses, in Kubernetes' words;
//! - validation with field-precise errors (`spec.containers[0].image: required`);
//! - the `#[rpc::service]` traits the processes speak: `Master` (the API that
//!   mkctl and workers call) and `Worker` (the probe the master sends).
//!
//! It knows nothing of how masters or workers are built; both depend on it.

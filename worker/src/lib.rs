//! The mkube node agent (`mkube-worker`): the kubelet of mkube.
//!
//! This crate will own (see `DESIGN.md`, "Orchestrator"):
//!
//! - the `Worker` service: answers the master's probes (desired pods in,
//!   node and pod status out), logs and exec;
//! - a pure reconciler of desired against observed containers, and the loop
//!   that applies its plan to Docker through bollard;
//! - the Spot eviction-notice watcher.

//! The mkube control plane, run by every master (`mkube-master`).
//!
//! This crate will own (see `DESIGN.md`, "Data flow" and "Orchestrator"):
//!
//! - the `Master` API over the embedded kvs node (reads anywhere, writes
//!   forwarded to the Raft leader);
//! - the leader-only loops: scheduler, heartbeat prober, node lifecycle,
//!   ReplicaSet and Deployment controllers, metrics collector, peer reviver;
//!   they start and stop with leadership.

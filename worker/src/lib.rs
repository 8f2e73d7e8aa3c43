//! The mkube node agent (`mkube-worker`): the kubelet of mkube.
//!
//! A master's probe hands the worker the pods bound to its node; the agent
//! loop turns them into Docker containers and reports what really runs.
//! Decisions are made by a pure reconciler; only [`docker`] talks to the
//! daemon.
//!
//! # Layout
//!
//! - [`model`]: slots (one container of one pod), observed containers, the
//!   labels and names the worker puts on containers.
//! - [`reconcile`]: the pure reconciler, `reconcile(inputs) -> Plan`, and the
//!   restart back-off.
//! - [`status`]: pod and container status from what is observed (pure).
//! - [`docker`]: the container runtime on bollard: list, inspect, pull if
//!   absent, create/start/stop/remove, stats, logs, exec.
//! - [`agent`]: the loop that applies plans, liveness probes, stats, and the
//!   state the service reads (fencing, desired-set versions, events).
//! - [`service`]: the `Worker` RPC service over the agent.
//! - [`certificate`]: the worker's certificate, bootstrapped with the join
//!   token and renewed before it expires.
//! - [`register`]: registration with the masters (`Master.join`).
//! - [`isolation`]: iptables rules that keep pods from the metadata address
//!   and the member ports.
//! - [`eviction`]: Spot eviction notices (Azure Scheduled Events): drain,
//!   prepare the local master, stop, acknowledge.
//! - [`run`]: one worker assembled from resolved settings ([`run::run`]);
//!   `src/main.rs` parses flags, obtains the certificate and binds.

pub mod agent;
pub mod certificate;
pub mod docker;
pub mod eviction;
pub mod hollow;
pub mod isolation;
pub mod model;
pub mod reconcile;
pub mod register;
pub mod run;
pub mod runtime;
pub mod service;
pub mod status;

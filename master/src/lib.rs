//! The mkube control plane, run by every master (`mkube-master`).
//!
//! Every master embeds a kvs member and serves, on one port, the Raft peer
//! service, the `Kv` service and the `Master` API. The member that leads
//! Raft also runs the leader-only loops; they start when it becomes leader,
//! stop when it loses leadership, and fence their effects with its term.
//!
//! # Layout
//!
//! - [`authz`]: node-bound authorization of workers' calls, and the signer
//!   of their certificates.
//! - [`store`]: keys of each kind and typed, compare-and-set access to the kvs.
//! - [`objects`]: manifests parsed by kind, validated, and merged on update.
//! - [`service`]: the `Master` API (create/apply/get/list/delete/watch,
//!   rollback, drain, node registration).
//! - [`scheduler`]: the pure `schedule(pod, nodes)` and its node views.
//! - [`controllers`]: pure decisions of the ReplicaSet and Deployment
//!   controllers, node lifecycle and garbage collection.
//! - [`leader`]: the leader-only loops that read snapshots, call those
//!   functions and write the plans (control loop, prober, metrics collector).
//! - [`clock`]: new uids and the time, the decisions' impure inputs.
//! - [`snapshot`]: one consistent read of what the controllers decide on.
//! - [`store::informer`]: the watch-fed cache snapshots are read from.
//! - [`events`]: writing Events (and trimming old ones).
//! - [`discovery`]: the DNS server's zone, following the Endpoints.
//! - [`metrics`]: this master's figures, the cluster's figures and their
//!   annotations, for the metrics store and the Prometheus page.
//! - [`run`]: one master assembled from resolved settings ([`run::run`]).
//! - `src/main.rs`: the `mkube-master` binary: flags, secrets, listeners.

pub mod authz;
pub mod clock;
pub mod controllers;
pub mod discovery;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod run;
pub mod scheduler;
pub mod service;
pub mod snapshot;
pub mod store;

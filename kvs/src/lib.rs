//! kvs: mkube's Raft-replicated key-value store, held in memory only.
//!
//! # Layout
//!
//! - [`raft`]: the sans-IO Raft core (`step`, `tick`, `propose`,
//!   `read_index`, `take_ready`) with pre-vote, check-quorum, pipelined
//!   replication, ReadIndex reads, leader transfer, snapshots, learners and
//!   single-server membership changes.
//! - [`lifecycle`]: incarnations, joining after a restart, and cluster
//!   epochs re-formed after whole-fleet loss (with the argument why two live
//!   clusters cannot coexist); sans-IO too.
//! - [`kv`]: the KV state machine applied from the log: revisions, put / get /
//!   range / delete, txn, and watch with a bounded history.
//! - [`linearizability`]: a checker of client histories against the KV model.
//! - `sim` (tests only): the deterministic simulator that drives whole
//!   clusters under faults and checks Raft's safety invariants at every step,
//!   and the runner of the scenario files in `testdata/`.
//!
//! - [`api`]: the `Kv` and `RaftPeer` services and [`api::KvsError`]; the
//!   `Kv` wire types are the `kvs-api` crate's (a client needs no more),
//!   re-exported here with the KV model's types ([`kv`]) and `raft::Role`.
//! - [`member`]: one member, sans I/O: the cores, the state machine, the
//!   proposals and reads waiting on the log, the snapshot and export
//!   policies; inputs in, effects out.
//! - [`node`]: a running member: tokio drives a [`member::Member`], peers
//!   talk over `rpc`.
//! - [`client`]: [`client::KvsClient`], with leader discovery, retries and deadlines.
//! - [`snapshot_store`]: durable exports of the leader's snapshots ([`snapshot_store::SnapshotStore`]).
//! - `src/bin/kvs_node.rs`: `kvs-node`, a standalone member.
//!
//! It is a general store: it knows nothing of pods or nodes.

pub mod api;
pub mod client;
pub mod kv;
pub mod lifecycle;
pub mod linearizability;
pub mod member;
pub mod node;
pub mod raft;
mod signed_store;
#[cfg(test)]
mod sim;
pub mod snapshot_store;

//! kvs: mkube's Raft-replicated key-value store, held in memory only.
//!
//! This crate will own (see `DESIGN.md`, "Raft KVS"):
//!
//! - a sans-IO Raft core (`step`, `tick`, `propose`, `read_index`, and a
//!   `Ready` batch) with pre-vote, check-quorum, pipelined replication,
//!   ReadIndex reads, leader transfer, snapshots and membership changes;
//! - the KV state machine: revisions, put / get / range / delete, txn, and
//!   watch with a bounded history;
//! - its RPC services (Raft peer, `Kv`), the node runtime that drives the core
//!   over `rpc`, and a client with leader discovery;
//! - a deterministic simulator and linearizability checker proving it.
//!
//! It is a general store: it knows nothing of pods or nodes.

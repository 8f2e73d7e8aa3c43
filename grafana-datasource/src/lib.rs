//! Metrics storage and the Grafana JSON datasource API.
//!
//! This crate will own (see `DESIGN.md`, "Interfaces people touch"):
//!
//! - the `MetricsStore` trait (batched writes, range queries with tag filters
//!   and a step, metric and tag listings) with two implementations: an
//!   embedded database file (the default) and Azure Cosmos DB;
//! - the HTTP API that Grafana's JSON datasource calls (`specs/`), and a
//!   standalone binary serving it.

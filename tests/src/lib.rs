//! End-to-end tests of whole mkube clusters and the benchmark harnesses.
//!
//! # Layout
//!
//! - `src/bin/bench_*.rs`: one binary per `scripts/bench NAME`; each runs our
//!   code and its peer (tarpc, etcd, `docker run`) side by side in one run and
//!   ends with `NAME: ours=<v> <unit> peer=<v> <unit> ratio=<ours/peer>`.
//! - [`clusters`]: starting kvs and etcd clusters for the benchmarks.
//! - `tests/`: end-to-end tests that start real clusters on real Docker
//!   (added with the orchestrator).

pub mod clusters;

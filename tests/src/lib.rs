//! End-to-end tests of whole mkube clusters and the benchmark harnesses.
//!
//! # Layout
//!
//! - `src/bin/bench_*.rs`: one binary per `scripts/bench NAME`; each runs our
//!   code and its peer (tarpc, etcd, `docker run`) side by side in one run and
//!   ends with `NAME: ours=<v> <unit> peer=<v> <unit> ratio=<ours/peer>`.
//! - [`cluster`]: a whole mkube cluster (masters and workers) as processes.
//! - [`canary`]: a background user of a cluster that records what fails.
//! - [`masters`]: what both kinds of cluster offer the tests (clients,
//!   leader, settled membership, waiting with a deadline).
//! - [`mkctl`]: the real `mkctl` binary with a config of its own.
//! - [`netcluster`]: a whole cluster as containers on a private network,
//!   for partitions (`docker network disconnect`).
//! - [`rehearsal`]: the Azure deployment rehearsed: VM containers booted by
//!   cloud-init from `deploy/azure`, against doubles of Azure's services.
//! - [`clusters`]: starting kvs and etcd clusters for the benchmarks.
//! - [`images`]: test and demo images built locally (`docker import`).
//! - [`testpki`]: each test cluster's CA, certificates and tokens.
//! - `tests/`: end-to-end tests that start real clusters on real Docker.

pub mod canary;
pub mod cluster;
pub mod clusters;
pub mod images;
pub mod masters;
pub mod mkctl;
pub mod netcluster;
pub mod rehearsal;
pub mod scale;
pub mod testpki;

/// Runs a benchmark on the runtime every harness uses: two worker threads,
/// as on the 2-core machines the figures come from.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(
    benchmark: F,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(benchmark)
}

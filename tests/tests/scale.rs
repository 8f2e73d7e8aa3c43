//! The scale scenario at CI size: three masters and 100 hollow nodes
//! (`mkube-hollow`), 3,000 pods in 100 Deployments, then 10 nodes lost at
//! once. The same scenario at 1,000 nodes and 30,000 pods is
//! `scripts/bench scale`; here only its properties are asserted, no times.

use std::time::Duration;

use anyhow::Result;
use tests::cluster::Timing;
use tests::scale::{ScaleSpec, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_hollow_nodes_run_3000_pods_and_lose_ten_at_once() -> Result<()> {
    let spec = ScaleSpec {
        nodes: 100,
        lost: 10,
        deployments: 100,
        replicas: 30,
        create_concurrency: 8,
        timing: Timing {
            probe_interval_ms: 1_000,
            node_grace_ms: 5_000,
            eviction_timeout_ms: 10_000,
            metrics_interval_ms: 5_000,
            // The masters' default: exporting a large store is not free.
            export_interval_s: 30,
        },
        phase_deadline: Duration::from_secs(300),
        poll: Duration::from_secs(2),
        master_args: Vec::new(),
    };
    let report = run(&spec).await?;
    eprintln!("{report:#?}");
    // Every pod ran, and again after the loss, off the lost nodes (run()
    // fails otherwise); no live node was judged NotReady meanwhile.
    assert!(
        report.live_nodes_not_ready.is_empty(),
        "live nodes judged NotReady after the loss: {:?}",
        report.live_nodes_not_ready
    );
    assert!(report.store_keys >= 3_000, "{report:#?}");
    // The leader measured how often each node was answered (its value is
    // a time, printed above, not asserted).
    assert!(report.probe_interval_p99.is_some(), "{report:#?}");
    Ok(())
}

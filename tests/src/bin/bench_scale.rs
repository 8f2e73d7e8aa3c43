//! `scripts/bench scale`: three masters and a fleet of hollow nodes
//! (`mkube-hollow`), Deployments created through the API until every pod
//! runs, then 10 % of the fleet lost at once (see `tests::scale`). It runs
//! the scenario twice, at a tenth of the size and at full size, and
//! compares the leader's cpu per node per second in the steady phase: the
//! cost of a node must stay flat as the fleet grows.
//!
//! Full size is 1,000 nodes and 1,000 Deployments of 30 pods;
//! `SCALE_NODES`, `SCALE_DEPLOYMENTS` and `SCALE_REPLICAS` change it (the
//! small run is a tenth of the nodes and Deployments). `SCALE_ONLY=full`
//! (or `small`) runs one size alone, for profiling; the last line then
//! has no ratio.

use std::time::Duration;

use anyhow::{Context, Result};
use tests::cluster::Timing;
use tests::scale::{ScaleReport, ScaleSpec, run};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spec(nodes: usize, deployments: usize, replicas: usize) -> ScaleSpec {
    ScaleSpec {
        nodes,
        lost: (nodes / 10).max(1),
        deployments,
        replicas,
        create_concurrency: 16,
        // Kubernetes' defaults in spirit: probes every 5 s, NotReady after
        // 40 s, pods moved 5 s after that (scaled down so a run ends).
        timing: Timing {
            probe_interval_ms: 2_000,
            node_grace_ms: 10_000,
            eviction_timeout_ms: 20_000,
            metrics_interval_ms: 10_000,
            // The masters' default: exporting a large store is not free.
            export_interval_s: 30,
        },
        phase_deadline: Duration::from_secs(1_800),
        poll: Duration::from_secs(1),
        // Raft's timing for masters that share two cores with a whole
        // fleet (etcd's advice: an election timeout well above the worst
        // delay a heartbeat meets): 100 ms ticks, elections after 2 s.
        master_args: ["--tick-ms", "100", "--election-ticks", "20"]
            .map(String::from)
            .to_vec(),
    }
}

fn print(label: &str, spec: &ScaleSpec, r: &ScaleReport) {
    let ms = |d: Duration| d.as_millis();
    println!(
        "{label}: {} nodes, {} pods ({} Deployments × {})",
        spec.nodes,
        spec.deployments * spec.replicas,
        spec.deployments,
        spec.replicas
    );
    println!(
        "  all Running after      {:.1} s",
        r.all_running.as_secs_f64()
    );
    println!(
        "  pod start              p50 {} ms, p99 {} ms (create → Running as a watch shows it)",
        ms(r.pod_start_p50),
        ms(r.pod_start_p99)
    );
    for (call, p99) in &r.api_p99 {
        println!("  API {call:<6} p99         {} ms", ms(*p99));
    }
    if r.create_retries > 0 {
        println!(
            "  API create retried     {} times (failed calls)",
            r.create_retries
        );
    }
    println!(
        "  leader cpu             {:.1} s over {:.0} s; peak RSS {} MiB{}",
        r.leader_cpu_s,
        r.wall_s,
        r.leader_peak_rss >> 20,
        if r.leader_changed {
            " (the first leader's: leadership moved during the ramp)"
        } else {
            ""
        }
    );
    println!(
        "  store                  {} keys, {} KiB",
        r.store_keys,
        r.store_bytes >> 10
    );
    println!(
        "  {} nodes lost at once: their pods Running elsewhere after {:.1} s (node-loss timeouts {:.0} s); live nodes judged NotReady meanwhile: {}",
        spec.lost,
        r.recovered_after_loss.as_secs_f64(),
        (spec.timing.eviction_timeout_ms as f64) / 1000.0,
        r.live_nodes_not_ready.len()
    );
    println!(
        "  probe interval p99     {} (worst collection after the ramp; probe interval {} ms)",
        r.probe_interval_p99
            .map_or_else(|| "not collected".to_string(), |d| format!("{} ms", ms(d))),
        spec.timing.probe_interval_ms
    );
    println!(
        "  steady leader cpu      {:.6} cpu-s per node per s",
        r.steady_cpu_per_node_s
    );
}

fn main() -> Result<()> {
    tests::block_on(async {
        let nodes = env("SCALE_NODES", 1_000);
        let deployments = env("SCALE_DEPLOYMENTS", 1_000);
        let replicas = env("SCALE_REPLICAS", 30);
        let small = spec((nodes / 10).max(10), (deployments / 10).max(1), replicas);
        let big = spec(nodes, deployments, replicas);
        let only = std::env::var("SCALE_ONLY").unwrap_or_default();
        if only == "full" || only == "small" {
            let spec = if only == "full" { &big } else { &small };
            let report = run(spec).await.with_context(|| format!("the {only} run"))?;
            print(&only, spec, &report);
            return Ok(());
        }
        let small_report = run(&small).await.context("the small run")?;
        print("small", &small, &small_report);
        let big_report = run(&big).await.context("the full run")?;
        print("full", &big, &big_report);
        let ours = big_report.steady_cpu_per_node_s;
        let peer = small_report.steady_cpu_per_node_s;
        println!(
            "scale: ours={ours:.6} cpu-s/node/s peer={peer:.6} cpu-s/node/s ratio={:.2}",
            if peer > 0.0 { ours / peer } else { f64::NAN }
        );
        Ok(())
    })
}

//! `scripts/bench podstart`: pod start latency through a whole mkube
//! cluster against a bare `docker run -d` of the same image on the same
//! daemon, in one run.
//!
//! - ours: 3 masters and 2 workers (processes, release builds, default
//!   timing: 1 s probe interval). One pod at a time is created through the
//!   `Master` API; the clock stops when the API reports it Running
//!   (create → schedule → probe → container started → next probe reports
//!   it). Then 100 pods created at once: time from the first create to all
//!   Running, and their spread over the workers.
//! - peer: `docker run -d` of the same image and command, one at a time
//!   (each returns once its container runs), then 100 at once.
//!
//! Environment: `BENCH_PODS` (sequential samples per side, default 30).
//! The last line compares the p99s.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::master::{ListRequest, MasterClient, ObjectRequest, WriteRequest};
use api::{Pod, PodPhase};
use hdrhistogram::Histogram;
use serde_json::json;
use tests::cluster::{Cluster, Timing};
use tests::images::BUSYBOX;
use tests::masters::Masters;

const BURST: usize = 100;
const PEER_PARALLEL: usize = 16;
const PEER_LABEL: &str = "mkube-bench-podstart=peer";

fn pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "podstart"}},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": BUSYBOX, "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}}]}})
}

async fn phase(client: &MasterClient, name: &str) -> Result<Option<PodPhase>> {
    let got = client
        .get(&ObjectRequest {
            kind: "pods".into(),
            namespace: None,
            name: name.into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await?;
    let pod: Pod = serde_json::from_value(got.object)?;
    Ok(pod.status.map(|s| s.phase))
}

async fn running_count(client: &MasterClient) -> Result<(usize, BTreeMap<String, usize>)> {
    let list = client
        .list(&ListRequest {
            kind: "pods".into(),
            label_selector: Some("bench=podstart".into()),
            ..Default::default()
        })
        .await?;
    let mut n = 0;
    let mut spread = BTreeMap::new();
    for item in list.items {
        let pod: Pod = serde_json::from_value(item)?;
        if pod
            .status
            .as_ref()
            .is_some_and(|s| s.phase == PodPhase::Running)
        {
            n += 1;
            *spread
                .entry(pod.spec.node_name.unwrap_or_default())
                .or_insert(0) += 1;
        }
    }
    Ok((n, spread))
}

async fn wait_running(client: &MasterClient, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while phase(client, name).await? != Some(PodPhase::Running) {
        if Instant::now() > deadline {
            bail!("pod {name} not Running within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn delete_all(client: &MasterClient) -> Result<()> {
    let list = client
        .list(&ListRequest {
            kind: "pods".into(),
            label_selector: Some("bench=podstart".into()),
            ..Default::default()
        })
        .await?;
    for item in list.items {
        let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
        client
            .delete(&ObjectRequest {
                kind: "pods".into(),
                namespace: None,
                name,
                resource_version: None,
                grace_period_seconds: None,
            })
            .await?;
    }
    Ok(())
}

async fn ours(samples: usize) -> Result<(Histogram<u64>, Duration, BTreeMap<String, usize>)> {
    let timing = Timing {
        probe_interval_ms: 1_000,
        node_grace_ms: 5_000,
        eviction_timeout_ms: 10_000,
        metrics_interval_ms: 10_000,
        export_interval_s: 2,
    };
    let c = Cluster::start(3, 2, timing).await?;
    let client = c.any_client().await?;
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..samples {
        let name = format!("seq-{i}");
        let start = Instant::now();
        client.create(&WriteRequest { object: pod(&name) }).await?;
        wait_running(&client, &name).await?;
        hist.record(start.elapsed().as_millis() as u64)?;
    }
    delete_all(&client).await?;
    let start = Instant::now();
    for i in 0..BURST {
        client
            .create(&WriteRequest {
                object: pod(&format!("burst-{i:03}")),
            })
            .await?;
    }
    let deadline = start + Duration::from_secs(180);
    let spread = loop {
        let (n, spread) = running_count(&client).await?;
        if n == BURST {
            break spread;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {BURST} pods Running after 180 s\n{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let burst = start.elapsed();
    delete_all(&client).await?;
    Ok((hist, burst, spread))
}

async fn docker_run(name: &str) -> Result<()> {
    let status = tokio::process::Command::new("docker")
        .args([
            "run", "-d", "--name", name, "--label", PEER_LABEL, BUSYBOX, "sleep", "3600",
        ])
        .stdout(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        bail!("docker run {name} failed");
    }
    Ok(())
}

fn remove_peer_containers() {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={PEER_LABEL}")])
        .output();
    if let Ok(out) = out {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
    }
}

async fn peer(samples: usize) -> Result<(Histogram<u64>, Duration)> {
    remove_peer_containers();
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..samples {
        let start = Instant::now();
        docker_run(&format!("mkube-bench-seq-{i}")).await?;
        hist.record(start.elapsed().as_millis() as u64)?;
    }
    remove_peer_containers();
    // As many `docker run` in flight as one worker runs Docker operations
    // (its --max-parallel-ops default, 16): a peer that does not swamp the
    // daemon (100 at once wedged Docker 20.10 here once, under load).
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(PEER_PARALLEL));
    let start = Instant::now();
    let runs: Vec<_> = (0..BURST)
        .map(|i| {
            let limit = limit.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await?;
                docker_run(&format!("mkube-bench-burst-{i:03}")).await
            })
        })
        .collect();
    for r in runs {
        r.await??;
    }
    let burst = start.elapsed();
    remove_peer_containers();
    Ok((hist, burst))
}

fn main() -> Result<()> {
    tests::block_on(async {
        tests::images::ensure_busybox()?;
        let samples: usize = std::env::var("BENCH_PODS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let (ours, ours_burst, spread) = ours(samples).await.context("ours")?;
        let (peer, peer_burst) = peer(samples).await.context("peer")?;
        let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
        println!(
            "pod start, create → Running, {samples} pods one at a time (busybox, image present):"
        );
        println!(
            "  mkube (3 masters, 2 workers, 1 s probes): p50 {} ms, p99 {} ms",
            q(&ours, 0.5),
            q(&ours, 0.99)
        );
        println!(
            "  docker run -d:                           p50 {} ms, p99 {} ms",
            q(&peer, 0.5),
            q(&peer, 0.99)
        );
        println!(
            "{BURST} pods at once: mkube {:.1} s (spread {spread:?}), docker run -d {:.1} s; ratio {:.2}",
            ours_burst.as_secs_f64(),
            peer_burst.as_secs_f64(),
            ours_burst.as_secs_f64() / peer_burst.as_secs_f64()
        );
        println!(
            "podstart: ours={} ms peer={} ms ratio={:.2}",
            q(&ours, 0.99),
            q(&peer, 0.99),
            q(&ours, 0.99) as f64 / q(&peer, 0.99).max(1) as f64
        );
        Ok(())
    })
}

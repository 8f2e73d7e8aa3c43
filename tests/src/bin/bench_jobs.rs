//! `scripts/bench jobs`: the first user's batch workload through mkube
//! against the same containers run by hand on the same daemon, in one run.
//!
//! - ours: 3 masters and 2 workers (processes, release builds, 1 s probe
//!   interval). One Indexed Job of 200 completions, parallelism 8, whose
//!   busybox pods print a score computed from their index and run about a
//!   second; the clock runs from the Job's create until it is `Complete`,
//!   and every index's result is then read back from the pods' status.
//! - peer: the same 200 containers with `docker run` (attached: each
//!   returns when its container exits), 8 at a time, each given its index
//!   as `JOB_COMPLETION_INDEX`; the clock runs until the last exits.
//!
//! Environment: `BENCH_COMPLETIONS` (default 200), `BENCH_PARALLELISM`
//! (default 8). The last line compares the wall times.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::batch::{Job, results_by_index};
use api::master::{ListRequest, MasterClient, ObjectRequest, WriteRequest};
use api::{ContainerState, Pod};
use serde_json::json;
use tests::cluster::{Cluster, Timing};
use tests::images::BUSYBOX;
use tests::masters::Masters;

const SCRIPT: &str = "echo score $((JOB_COMPLETION_INDEX * JOB_COMPLETION_INDEX % 1009)); sleep 1";
const PEER_LABEL: &str = "mkube-bench-jobs=peer";

fn job(completions: u32, parallelism: u32) -> serde_json::Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "cases"},
        "spec": {"completions": completions, "parallelism": parallelism,
            "completionMode": "Indexed", "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": BUSYBOX,
                    "command": ["sh", "-c", SCRIPT],
                    "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}}]}}}})
}

async fn get_job(client: &MasterClient) -> Result<Job> {
    let got = client
        .get(&ObjectRequest {
            kind: "jobs".into(),
            namespace: None,
            name: "cases".into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await?;
    Ok(serde_json::from_value(got.object)?)
}

/// Where a slot's time goes: the mean container run (start → exit) and
/// the mean time from an exit to the start of the container that took
/// its slot (the orchestration's share), in seconds.
fn profile(pods: &[Pod], parallelism: usize) -> (f64, f64) {
    let times: Vec<(f64, f64)> = pods
        .iter()
        .filter_map(|p| {
            let c = p.status.as_ref()?.container_statuses.first()?;
            let ContainerState::Terminated {
                started_at: Some(s),
                finished_at: Some(f),
                ..
            } = &c.state
            else {
                return None;
            };
            let t = |x: &str| {
                x.parse::<jiff::Timestamp>()
                    .ok()
                    .map(|t| t.as_nanosecond() as f64 / 1e9)
            };
            Some((t(s)?, t(f)?))
        })
        .collect();
    let run = times.iter().map(|(s, f)| f - s).sum::<f64>() / times.len().max(1) as f64;
    let mut starts: Vec<f64> = times.iter().map(|t| t.0).collect();
    let mut finishes: Vec<f64> = times.iter().map(|t| t.1).collect();
    starts.sort_by(f64::total_cmp);
    finishes.sort_by(f64::total_cmp);
    let gaps: Vec<f64> = starts
        .iter()
        .skip(parallelism)
        .zip(&finishes)
        .map(|(s, f)| s - f)
        .collect();
    (run, gaps.iter().sum::<f64>() / gaps.len().max(1) as f64)
}

/// Each index's printed result, from the pods' kept output.
async fn results(client: &MasterClient, job: &Job) -> Result<Vec<String>> {
    let list = client
        .list(&ListRequest {
            kind: "pods".into(),
            label_selector: Some(format!(
                "{}={}",
                api::batch::CONTROLLER_UID_LABEL,
                job.metadata.uid
            )),
            ..Default::default()
        })
        .await?;
    let pods: Vec<Pod> = list
        .items
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let (run, gap) = profile(&pods, job.spec.parallelism as usize);
    println!(
        "  mkube's slots: a container runs {run:.2} s; from its exit to the start of the next in its slot, {gap:.2} s"
    );
    Ok(results_by_index(&pods, job.spec.completions)
        .values()
        .map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.first())
                .and_then(|c| match &c.state {
                    ContainerState::Terminated { message, .. } => message.clone(),
                    _ => None,
                })
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect())
}

async fn ours(completions: u32, parallelism: u32) -> Result<(Duration, Vec<String>)> {
    let timing = Timing {
        probe_interval_ms: 1_000,
        node_grace_ms: 5_000,
        eviction_timeout_ms: 10_000,
        metrics_interval_ms: 10_000,
        export_interval_s: 2,
    };
    let c = Cluster::start(3, 2, timing).await?;
    let client = c.any_client().await?;
    let start = Instant::now();
    client
        .create(&WriteRequest {
            object: job(completions, parallelism),
        })
        .await?;
    let deadline = start + Duration::from_secs(30 + u64::from(completions) * 2);
    let job = loop {
        let j = get_job(&client).await?;
        if j.status.as_ref().is_some_and(|s| s.finished()) {
            break j;
        }
        if Instant::now() > deadline {
            bail!(
                "the Job did not finish in time: {:?}\n{}",
                j.status,
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = start.elapsed();
    let status = job.status.clone().unwrap_or_default();
    if status.condition("Complete").is_none() {
        bail!("the Job failed: {status:?}");
    }
    Ok((took, results(&client, &job).await?))
}

async fn docker_run(index: u32) -> Result<String> {
    let out = tokio::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--label",
            PEER_LABEL,
            "-e",
            &format!("JOB_COMPLETION_INDEX={index}"),
            BUSYBOX,
            "sh",
            "-c",
            SCRIPT,
        ])
        .stderr(Stdio::inherit())
        .output()
        .await?;
    if !out.status.success() {
        bail!("docker run of index {index} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn peer(completions: u32, parallelism: u32) -> Result<(Duration, Vec<String>)> {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(parallelism as usize));
    let start = Instant::now();
    let runs: Vec<_> = (0..completions)
        .map(|i| {
            let limit = limit.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await?;
                docker_run(i).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for r in runs {
        out.push(r.await??);
    }
    Ok((start.elapsed(), out))
}

fn main() -> Result<()> {
    tests::block_on(async {
        tests::images::ensure_busybox()?;
        let env = |name: &str, default: u32| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let completions = env("BENCH_COMPLETIONS", 200);
        let parallelism = env("BENCH_PARALLELISM", 8);
        let (ours_took, ours_results) = ours(completions, parallelism).await.context("ours")?;
        let (peer_took, peer_results) = peer(completions, parallelism).await.context("peer")?;
        if ours_results != peer_results {
            bail!(
                "the results differ: mkube has {} indexes, docker run {}",
                ours_results.len(),
                peer_results.len()
            );
        }
        println!(
            "Indexed Job of {completions} busybox pods (about 1 s each), {parallelism} at a time, on one Docker daemon:"
        );
        println!(
            "  mkube (3 masters, 2 workers, 1 s probes): {:.1} s, create → Complete; every index's result read back",
            ours_took.as_secs_f64()
        );
        println!(
            "  docker run (attached, {parallelism} in flight): {:.1} s; the same {} results",
            peer_took.as_secs_f64(),
            peer_results.len()
        );
        println!(
            "  docker run's slots: {:.2} s each (the same container)",
            peer_took.as_secs_f64() * f64::from(parallelism) / f64::from(completions)
        );
        println!(
            "jobs: ours={:.1} s peer={:.1} s ratio={:.2}",
            ours_took.as_secs_f64(),
            peer_took.as_secs_f64(),
            ours_took.as_secs_f64() / peer_took.as_secs_f64()
        );
        Ok(())
    })
}

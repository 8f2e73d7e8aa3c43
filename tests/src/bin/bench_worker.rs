//! `scripts/bench worker`: start 50 pods through `mkube-worker` against 50
//! plain `docker run -d` of the same image, on the same daemon, in one run.
//!
//! Ours: one probe hands the worker 50 one-container pods; the clock stops
//! when a probe reports all 50 Running. Peer: 50 `docker run -d` processes
//! started at once; the clock stops when all have exited (each returns once
//! its container runs). Each side runs `ROUNDS` times, alternating, and the
//! median is reported.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::pod::{Container, ContainerState, Pod, PodSpec, RestartPolicy};
use api::worker::{Fence, ProbeRequest, WorkerClient};
use tokio::io::{AsyncBufReadExt, BufReader};

const PODS: usize = 50;
const ROUNDS: usize = 3;
const NODE: &str = "bench-worker";

fn main() -> Result<()> {
    tests::block_on(run())
}

async fn run() -> Result<()> {
    let image = tests::images::ensure_busybox()?;
    cleanup()?;
    let worker = std::env::current_exe()?.with_file_name("mkube-worker");
    let mut child = tokio::process::Command::new(&worker)
        .args([
            "--name",
            NODE,
            "--listen",
            "127.0.0.1:0",
            "--pod-isolation",
            "off",
            "--insecure",
            "--token",
            "bench",
            "--sync-interval-ms",
            "1000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", worker.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .context("the worker exited")?;
    let addr = line
        .strip_prefix("listening on ")
        .context("unexpected first line")?
        .to_string();
    let client = WorkerClient::new(rpc::Client::new(
        &addr,
        rpc::ClientConfig {
            token: Some("bench".into()),
            ..Default::default()
        },
    )?);
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    let mut version = 0;
    for round in 0..ROUNDS {
        let t = peer_round(image, round).await?;
        println!(
            "round {round}: docker run -d ×{PODS}: {:.2} s",
            t.as_secs_f64()
        );
        peer.push(t);
        cleanup()?;
        let t = our_round(&client, image, round, &mut version).await?;
        println!(
            "round {round}: mkube-worker ×{PODS}: {:.2} s",
            t.as_secs_f64()
        );
        ours.push(t);
        // Hand back an empty set, then clear what is left behind at once.
        version += 1;
        let req = ProbeRequest {
            node: NODE.into(),
            fence: Fence { epoch: 1, term: 1 },
            version,
            base_version: None,
            upserts: vec![],
            deletes: vec![],
            delete_grace: Default::default(),
            events_after: u64::MAX,
            more: false,
        };
        client.probe(&req).await?;
        cleanup()?;
    }
    let (o, p) = (median(&mut ours), median(&mut peer));
    println!("worker: ours={o:.2} s peer={p:.2} s ratio={:.2}", o / p);
    Ok(())
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

async fn peer_round(image: &str, round: usize) -> Result<Duration> {
    let start = Instant::now();
    let mut runs = Vec::new();
    for i in 0..PODS {
        let name = format!("bench-peer-{round}-{i}");
        let label = format!("mkube-bench={NODE}");
        runs.push(
            tokio::process::Command::new("docker")
                .args([
                    "run", "-d", "--name", &name, "--label", &label, image, "sleep", "3600",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output(),
        );
    }
    for out in futures_util::future::join_all(runs).await {
        let out = out?;
        if !out.status.success() {
            bail!(
                "docker run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(start.elapsed())
}

async fn our_round(
    client: &WorkerClient,
    image: &str,
    round: usize,
    version: &mut u64,
) -> Result<Duration> {
    let pods: Vec<Pod> = (0..PODS)
        .map(|i| pod(image, &format!("bench-{round}-{i}")))
        .collect();
    *version += 1;
    let start = Instant::now();
    let req = ProbeRequest {
        node: NODE.into(),
        fence: Fence { epoch: 1, term: 1 },
        version: *version,
        base_version: None,
        upserts: pods,
        deletes: vec![],
        delete_grace: Default::default(),
        events_after: u64::MAX,
        more: false,
    };
    client.probe(&req).await?;
    let deadline = start + Duration::from_secs(300);
    loop {
        let poll = ProbeRequest {
            node: NODE.into(),
            fence: Fence { epoch: 1, term: 1 },
            version: *version,
            base_version: Some(*version),
            upserts: vec![],
            deletes: vec![],
            delete_grace: Default::default(),
            events_after: u64::MAX,
            more: false,
        };
        let r = client.probe(&poll).await?;
        let running = r
            .pods
            .iter()
            .filter(|p| {
                p.status
                    .container_statuses
                    .iter()
                    .all(|c| matches!(c.state, ContainerState::Running { .. }))
            })
            .count();
        if running == PODS {
            return Ok(start.elapsed());
        }
        if Instant::now() > deadline {
            bail!("only {running} of {PODS} pods running after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pod(image: &str, name: &str) -> Pod {
    let mut c = Container::new("main", image);
    c.command = vec!["sleep".into(), "3600".into()];
    let mut p = Pod::new(
        name,
        PodSpec {
            containers: vec![c],
            restart_policy: RestartPolicy::Always,
            termination_grace_period_seconds: Some(0),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            node_name: Some(NODE.into()),
        },
    );
    p.metadata.uid = format!("{name}-uid");
    p
}

/// Removes the benchmark's containers of both sides.
fn cleanup() -> Result<()> {
    for filter in [
        format!("label=mkube.node={NODE}"),
        format!("label=mkube-bench={NODE}"),
    ] {
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()?;
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let status = std::process::Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "docker rm -f failed");
        }
    }
    Ok(())
}

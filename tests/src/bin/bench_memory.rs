//! `scripts/bench memory`: resident memory of a 3-member kvs cluster and a
//! 3-member etcd cluster under 1,000,000 writes over 10,000 keys (256-byte
//! values), both compacting: kvs snapshots and truncates its log, etcd runs
//! with revision auto-compaction keeping 10,000 revisions (its data dir on
//! tmpfs). Memory is sampled every 250 ms; the peak and the final figure are
//! printed with the live data size (keys + values) for scale.
//!
//! Environment: `MEMORY_WRITES` (default 1,000,000), `KVS_NODE`, `ETCD`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kvs::client::{KvsClient, KvsClientConfig};
use tests::clusters::{Procs, scratch_dir, start_etcd, start_kvs};

const KEYS: u64 = 10_000;
const VALUE_BYTES: usize = 256;
const WRITERS: u64 = 64;

/// Writes `total` puts with `WRITERS` tasks while sampling `procs`' memory; returns (peak, final) KiB and the time taken.
async fn drive<F, Fut>(procs: &Procs, total: u64, put: F) -> Result<(u64, u64, Duration)>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let put = Arc::new(put);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (put, next) = (Arc::clone(&put), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return anyhow::Ok(());
                    }
                    put(format!("mem/{:05}", n % KEYS)).await?;
                }
            })
        })
        .collect();
    let mut peak = 0;
    let all_done = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            for w in writers {
                w.await??;
            }
            done.store(true, Ordering::Relaxed);
            anyhow::Ok(())
        })
    };
    while !done.load(Ordering::Relaxed) && !all_done.is_finished() {
        peak = peak.max(procs.rss_kib());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    all_done.await??;
    let elapsed = start.elapsed();
    let last = procs.rss_kib();
    Ok((peak.max(last), last, elapsed))
}

async fn run() -> Result<()> {
    let total: u64 = std::env::var("MEMORY_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = scratch_dir("memory")?;
    let live_kib = KEYS * (VALUE_BYTES as u64 + 9) / 1024;
    println!(
        "{total} writes over {KEYS} keys of {VALUE_BYTES} bytes, {WRITERS} writers; live data {live_kib} KiB per member"
    );

    let (kvs_procs, kvs_addrs, kvs_creds) = start_kvs(&dir, &[])?;
    let client = KvsClient::new(
        &kvs_addrs,
        KvsClientConfig {
            token: Some(kvs_creds.token.clone()),
            tls: kvs_creds.tls.clone(),
            ..Default::default()
        },
    )?;
    let value = Arc::new("v".repeat(VALUE_BYTES));
    let ready = Instant::now();
    while client.put("ready", "1").await.is_err() {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("kvs did not come up");
        }
    }
    let start_kib = kvs_procs.rss_kib();
    let (kvs_peak, kvs_last, kvs_time) = {
        let (client, value) = (client.clone(), Arc::clone(&value));
        drive(&kvs_procs, total, move |key| {
            let (client, value) = (client.clone(), Arc::clone(&value));
            async move {
                client.put(&key, &value).await?;
                Ok(())
            }
        })
        .await?
    };
    drop(kvs_procs);
    println!(
        "kvs:  idle {} MiB, peak {} MiB, final {} MiB (3 members) in {:.0} s",
        start_kib / 1024,
        kvs_peak / 1024,
        kvs_last / 1024,
        kvs_time.as_secs_f64()
    );

    let (etcd_procs, etcd_addrs) = start_etcd(
        &dir,
        &[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "10000",
        ],
    )?;
    let endpoints: Vec<String> = etcd_addrs.iter().map(|a| format!("http://{a}")).collect();
    let ready = Instant::now();
    let etcd = loop {
        let attempt = async {
            let mut c = etcd_client::Client::connect(endpoints.clone(), None).await?;
            c.put("ready", "1", None).await?;
            anyhow::Ok(c)
        };
        match attempt.await {
            Ok(c) => break c,
            Err(e) if ready.elapsed() > Duration::from_secs(30) => {
                return Err(e).context("etcd did not come up");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let etcd_start = etcd_procs.rss_kib();
    let (etcd_peak, etcd_last, etcd_time) = {
        let value = Arc::clone(&value);
        drive(&etcd_procs, total, move |key| {
            let (mut etcd, value) = (etcd.clone(), Arc::clone(&value));
            async move {
                etcd.put(key, value.as_str(), None).await?;
                Ok(())
            }
        })
        .await?
    };
    drop(etcd_procs);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "etcd: idle {} MiB, peak {} MiB, final {} MiB (3 members) in {:.0} s",
        etcd_start / 1024,
        etcd_peak / 1024,
        etcd_last / 1024,
        etcd_time.as_secs_f64()
    );
    println!(
        "peak per member: kvs {:.0}× live data, etcd {:.0}× live data",
        kvs_peak as f64 / 3.0 / live_kib as f64,
        etcd_peak as f64 / 3.0 / live_kib as f64
    );
    println!(
        "memory: ours={} MiB peer={} MiB ratio={:.2}",
        kvs_peak / 1024,
        etcd_peak / 1024,
        kvs_peak as f64 / etcd_peak.max(1) as f64
    );
    Ok(())
}

fn main() -> Result<()> {
    tests::block_on(run())
}

//! `scripts/bench kvs`: a 3-member kvs cluster against a 3-member etcd
//! cluster (Debian's etcd-server, data dir on tmpfs), all on loopback,
//! driven by the same load generator in the same run.
//!
//! etcd is driven through the `etcd-client` crate (gRPC), its native API.
//! Both stores are driven at their leader, found through their status APIs
//! (our client finds ours that way; etcd's benchmark tool is pointed at the
//! leader for writes): puts/s and p50/p99 with 1 and 64 concurrent callers
//! (256-byte values), linearizable gets/s with 64 callers. Then the same
//! with the callers spread over all three members (followers forward
//! writes, and serve reads after asking the leader for a read index), and
//! the resident memory of each cluster (sum of its three processes) after
//! 100,000 keys, with each kvs member's own account of where its bytes are.
//! Each store keeps its durable copy on the same tmpfs: etcd its data dir,
//! kvs its exports (`--export-dir`).
//! The cpu the members used per operation (user + system, from /proc) is
//! printed beside each leader-driven figure. The last line compares
//! leader-driven puts at 64 callers.
//!
//! Environment: `BENCH_SECONDS` (per measurement, default 5), `KVS_NODE`
//! (path of kvs-node; default: next to this binary), `ETCD` (default: etcd on PATH).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use kvs::client::{KvsClient, KvsClientConfig};
use tests::clusters::{Procs, scratch_dir, start_etcd, start_kvs};

const VALUE_BYTES: usize = 256;
const MEMORY_KEYS: usize = 100_000;

type Op = Arc<dyn Fn(u64, u64) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

struct Round {
    ops_per_sec: f64,
    latencies_us: Histogram<u64>,
}

async fn run_load(op: &Op, callers: u64, duration: Duration) -> Result<Round> {
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = (0..callers)
        .map(|task| {
            let op = Arc::clone(op);
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3)?;
                let mut n = 0;
                while Instant::now() < end {
                    let t = Instant::now();
                    op(task, n).await?;
                    hist.record(t.elapsed().as_micros() as u64)?;
                    n += 1;
                }
                anyhow::Ok(hist)
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok(Round {
        ops_per_sec: all.len() as f64 / start.elapsed().as_secs_f64(),
        latencies_us: all,
    })
}

async fn wait_ready(op: &Op) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match op(0, 0).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("cluster not ready after 30 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn value() -> String {
    "v".repeat(VALUE_BYTES)
}

/// Puts and gets; caller `task` uses `clients[task % len]` (one client:
/// every caller at the leader; one per member: callers spread over them).
fn kvs_ops(clients: Vec<KvsClient>) -> (Op, Op) {
    let clients = Arc::new(clients);
    let pick = |clients: &[KvsClient], task: u64| clients[task as usize % clients.len()].clone();
    let v = Arc::new(value());
    let cs = Arc::clone(&clients);
    let put: Op = Arc::new(move |task, n| {
        let (c, v) = (pick(&cs, task), Arc::clone(&v));
        Box::pin(async move {
            c.put(&format!("bench/{task}/{}", n % 1000), &v).await?;
            Ok(())
        })
    });
    let get: Op = Arc::new(move |task, n| {
        let c = pick(&clients, task);
        Box::pin(async move {
            c.get(&format!("bench/{task}/{}", n % 1000)).await?;
            Ok(())
        })
    });
    (put, get)
}

/// [`kvs_ops`] for etcd: `client` connected to the leader alone, or to
/// every member (it then spreads calls over them).
fn etcd_ops(client: etcd_client::Client) -> (Op, Op) {
    let v = Arc::new(value());
    let c = client.clone();
    let put: Op = Arc::new(move |task, n| {
        let (mut c, v) = (c.clone(), Arc::clone(&v));
        Box::pin(async move {
            c.put(format!("bench/{task}/{}", n % 1000), v.as_str(), None)
                .await?;
            Ok(())
        })
    });
    let get: Op = Arc::new(move |task, n| {
        let mut c = client.clone();
        Box::pin(async move {
            c.get(format!("bench/{task}/{}", n % 1000), None).await?;
            Ok(())
        })
    });
    (put, get)
}

/// The address of etcd's leader, from each member's status.
async fn etcd_leader(addrs: &[String]) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for addr in addrs {
            let status = async {
                let mut c = etcd_client::Client::connect([format!("http://{addr}")], None).await?;
                anyhow::Ok(c.status().await?)
            };
            if let Ok(s) = status.await
                && s.leader() != 0
                && s.header().is_some_and(|h| h.member_id() == s.leader())
            {
                return Ok(addr.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("no etcd member reported itself leader within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `MEMORY_KEYS` distinct keys with 64 callers.
async fn fill(put_key: &Op) -> Result<()> {
    let per = (MEMORY_KEYS / 64) as u64;
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let op = Arc::clone(put_key);
            tokio::spawn(async move {
                for i in 0..per {
                    op(t, i).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Each kvs member's own account of its memory (its `/Kv/status`), beside
/// its resident size: where the bytes are.
async fn print_memory_use(client: &KvsClient, procs: &Procs) {
    const MIB: f64 = 1024.0 * 1024.0;
    let rss = procs.rss_kib_each();
    for (i, rss_kib) in rss.iter().enumerate() {
        let Ok(s) = client.status_of(i).await else {
            println!("  member {i}: no status");
            continue;
        };
        let m = &s.memory;
        let allocator = match (m.allocated_bytes, m.allocator_resident_bytes) {
            (Some(a), Some(r)) => format!(
                "; allocator: {:.1} MiB allocated, {:.1} MiB held",
                a as f64 / MIB,
                r as f64 / MIB
            ),
            _ => String::new(),
        };
        println!(
            "  {} ({:?}): rss {:.1} MiB; keys {} holding {:.1} MiB; log {} entries, {:.1} MiB; watch history {} events, {:.1} MiB; {} answers kept; snapshots {:.1} MiB{allocator}",
            s.name,
            s.role,
            *rss_kib as f64 / 1024.0,
            s.keys,
            s.bytes as f64 / MIB,
            m.log_entries,
            m.log_bytes as f64 / MIB,
            m.history_events,
            m.history_bytes as f64 / MIB,
            m.session_answers,
            m.snapshot_bytes as f64 / MIB,
        );
    }
}

/// Microseconds of the members' cpu per operation of `r`.
fn cpu_per_op(cpu_seconds: f64, r: &Round) -> f64 {
    cpu_seconds * 1e6 / r.latencies_us.len().max(1) as f64
}

fn line(name: &str, r: &Round) -> String {
    format!(
        "{name}: {:>8.0} ops/s p50={:>6} us p99={:>6} us",
        r.ops_per_sec,
        r.latencies_us.value_at_quantile(0.5),
        r.latencies_us.value_at_quantile(0.99)
    )
}

async fn run() -> Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let dir = scratch_dir("etcd")?;

    // Each store's durable copy on the same tmpfs, outside its processes:
    // etcd's data dir, and the directory kvs exports its state to (without
    // one, a member keeps its exports in memory).
    let exports = dir.join("kvs-exports").display().to_string();
    let (kvs_procs, kvs_addrs, kvs_creds) = start_kvs(&dir, &["--export-dir", &exports])?;
    let (etcd_procs, etcd_addrs) = start_etcd(&dir, &[])?;
    let config = {
        let mut c = KvsClientConfig {
            token: Some(kvs_creds.token.clone()),
            tls: kvs_creds.tls.clone(),
            ..Default::default()
        };
        if let Some(n) = std::env::var("KVS_CONNECTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            c.connections = n;
        }
        if let Some(n) = std::env::var("KVS_PIPELINE_DEPTH")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            c.pipeline_depth = n;
        }
        c
    };
    let ours = KvsClient::new(&kvs_addrs, config.clone())?;
    let ours_each = kvs_addrs
        .iter()
        .map(|a| KvsClient::new(std::slice::from_ref(a), config.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let etcd_all = etcd_client::Client::connect(
        etcd_addrs
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>(),
        None,
    )
    .await?;
    let (our_put, our_get) = kvs_ops(vec![ours.clone()]);
    wait_ready(&our_put).await.context("kvs")?;
    wait_ready(&etcd_ops(etcd_all.clone()).0)
        .await
        .context("etcd")?;
    let etcd_leader_addr = etcd_leader(&etcd_addrs).await?;
    let etcd = etcd_client::Client::connect([format!("http://{etcd_leader_addr}")], None).await?;
    let (etcd_put, etcd_get) = etcd_ops(etcd.clone());
    println!(
        "kvs vs etcd 3.4 (3 members each, loopback, etcd data on {}), {VALUE_BYTES}-byte values, {seconds} s per measurement",
        dir.parent().unwrap_or(&dir).display()
    );
    println!("-- callers at each store's leader");

    let mut final_ratio = None;
    for callers in [1u64, 64] {
        run_load(&our_put, callers, Duration::from_millis(500)).await?;
        run_load(&etcd_put, callers, Duration::from_millis(500)).await?;
        let cpu = kvs_procs.cpu_seconds();
        let o = run_load(&our_put, callers, duration).await?;
        let our_cpu = cpu_per_op(kvs_procs.cpu_seconds() - cpu, &o);
        let cpu = etcd_procs.cpu_seconds();
        let e = run_load(&etcd_put, callers, duration).await?;
        let etcd_cpu = cpu_per_op(etcd_procs.cpu_seconds() - cpu, &e);
        println!(
            "put, {callers:>2} callers | {} | {} | ratio {:.2}, p99 ratio {:.2}; cpu per put (3 members): kvs {our_cpu:.0} us, etcd {etcd_cpu:.0} us",
            line("kvs", &o),
            line("etcd", &e),
            o.ops_per_sec / e.ops_per_sec,
            o.latencies_us.value_at_quantile(0.99) as f64
                / e.latencies_us.value_at_quantile(0.99).max(1) as f64
        );
        if callers == 64 {
            final_ratio = Some((o.ops_per_sec, e.ops_per_sec));
        }
    }
    let cpu = kvs_procs.cpu_seconds();
    let o = run_load(&our_get, 64, duration).await?;
    let our_cpu = cpu_per_op(kvs_procs.cpu_seconds() - cpu, &o);
    let cpu = etcd_procs.cpu_seconds();
    let e = run_load(&etcd_get, 64, duration).await?;
    let etcd_cpu = cpu_per_op(etcd_procs.cpu_seconds() - cpu, &e);
    println!(
        "linearizable get, 64 callers | {} | {} | ratio {:.2}; cpu per get (3 members): kvs {our_cpu:.0} us, etcd {etcd_cpu:.0} us",
        line("kvs", &o),
        line("etcd", &e),
        o.ops_per_sec / e.ops_per_sec
    );
    println!("-- callers spread over all three members");
    let (our_put_spread, our_get_spread) = kvs_ops(ours_each.clone());
    let (etcd_put_spread, etcd_get_spread) = etcd_ops(etcd_all.clone());
    for (what, ours, peer) in [
        ("put", &our_put_spread, &etcd_put_spread),
        ("linearizable get", &our_get_spread, &etcd_get_spread),
    ] {
        run_load(ours, 64, Duration::from_millis(500)).await?;
        run_load(peer, 64, Duration::from_millis(500)).await?;
        let o = run_load(ours, 64, duration).await?;
        let e = run_load(peer, 64, duration).await?;
        println!(
            "{what}, 64 callers | {} | {} | ratio {:.2}",
            line("kvs", &o),
            line("etcd", &e),
            o.ops_per_sec / e.ops_per_sec
        );
    }

    let ours_put_key: Op = {
        let c = ours.clone();
        let v = Arc::new(value());
        Arc::new(move |t, i| {
            let (c, v) = (c.clone(), Arc::clone(&v));
            Box::pin(async move {
                c.put(&format!("mem/{t}/{i}"), &v).await?;
                Ok(())
            })
        })
    };
    let etcd_put_key: Op = {
        let c = etcd.clone();
        let v = Arc::new(value());
        Arc::new(move |t, i| {
            let (mut c, v) = (c.clone(), Arc::clone(&v));
            Box::pin(async move {
                c.put(format!("mem/{t}/{i}"), v.as_str(), None).await?;
                Ok(())
            })
        })
    };
    fill(&ours_put_key).await?;
    fill(&etcd_put_key).await?;
    let (our_rss, etcd_rss) = (kvs_procs.rss_kib(), etcd_procs.rss_kib());
    println!(
        "resident memory after {MEMORY_KEYS} keys (3 members): kvs {} MiB, etcd {} MiB, ratio {:.2}",
        our_rss / 1024,
        etcd_rss / 1024,
        our_rss as f64 / etcd_rss.max(1) as f64
    );
    print_memory_use(&ours, &kvs_procs).await;
    drop(etcd_procs);
    drop(kvs_procs);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some((o, e)) = final_ratio {
        println!(
            "kvs: ours={o:.0} puts/s peer={e:.0} puts/s ratio={:.2}",
            o / e
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    tests::block_on(run())
}

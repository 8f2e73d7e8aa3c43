//! `scripts/bench store`: the embedded metrics store against Prometheus' TSDB,
//! with the same points and the same dashboard query, in one run.
//!
//! Data: 10 metrics × 10 series (a `master` tag each) × 10,000 points 10 s
//! apart = 1,000,000 points ending now (27.8 h).
//!
//! - Writes: ours stores them through `MetricsStore::write` in batches of
//!   1,000 points (one SQLite transaction each); the peer backfills the
//!   same points from an OpenMetrics file with `promtool tsdb
//!   create-blocks-from openmetrics` (Prometheus' own bulk ingest, writing
//!   its TSDB blocks). Points per second of wall time each.
//! - Query: a dashboard panel over the last 24 h of one metric (10 series),
//!   averaged into 60 s steps (1,440 points a series): ours through the
//!   datasource API's `POST /query` served by `grafana_datasource::serve`,
//!   the peer through Prometheus' `GET /api/v1/query_range` of
//!   `avg_over_time(metric[60s])` with step 60 s, served by a Prometheus
//!   started over the backfilled blocks. Both over loopback HTTP; the median
//!   of 20 runs after 2 warm-ups.
//!
//! The last line compares the write rates (`ratio` above 1: ours is faster).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::metrics::Point;
use grafana_datasource::{MetricsStore, SqliteStore};
use serde_json::{Value, json};
use tests::clusters::free_port;

const METRICS: usize = 10;
const SERIES: usize = 10;
const POINTS: i64 = 10_000;
const STEP_MS: i64 = 10_000;
const BATCH: usize = 1_000;
const RUNS: usize = 20;

fn metric(i: usize) -> String {
    format!("mkube_bench_metric_{i}")
}

fn value(m: usize, s: usize, t: i64) -> f64 {
    ((m * 31 + s * 7) as i64 + t % 97) as f64
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed<F: FnMut() -> Result<usize>>(mut f: F) -> Result<(Duration, usize)> {
    for _ in 0..2 {
        f()?;
    }
    let mut times = Vec::new();
    let mut points = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        points = f()?;
        times.push(start.elapsed());
    }
    Ok((median(times), points))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("mkube-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(dir: &Path) -> Result<()> {
    let now = jiff::Timestamp::now().as_millisecond() / 1000 * 1000;
    let start = now - (POINTS - 1) * STEP_MS;
    let total = METRICS * SERIES * POINTS as usize;
    println!(
        "store: {total} points ({METRICS} metrics x {SERIES} series x {POINTS}, 10 s apart), then a 24 h query of 10 series in 60 s steps"
    );

    // Ours: batched writes, in time order across every series (as rounds of a collector).
    let store = SqliteStore::open(&dir.join("metrics.db"), Duration::from_secs(30 * 86_400))?;
    let mut batch = Vec::with_capacity(BATCH);
    let begun = Instant::now();
    for t in 0..POINTS {
        for m in 0..METRICS {
            for s in 0..SERIES {
                let master = format!("m{s}");
                batch.push(Point::new(
                    &metric(m),
                    &[("master", &master)],
                    start + t * STEP_MS,
                    value(m, s, t),
                ));
                if batch.len() == BATCH {
                    store.write(&batch).await?;
                    batch.clear();
                }
            }
        }
    }
    store.write(&batch).await?;
    let ours_write = begun.elapsed();
    let ours_rate = total as f64 / ours_write.as_secs_f64();
    let db_bytes = std::fs::metadata(dir.join("metrics.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.join("metrics.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "  ours: wrote in {ours_write:.2?} = {ours_rate:.0} points/s ({:.1} MiB on disk)",
        db_bytes as f64 / (1 << 20) as f64
    );

    // Peer: the same points as OpenMetrics, backfilled by promtool.
    let input = dir.join("points.om");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        for m in 0..METRICS {
            writeln!(f, "# TYPE {} gauge", metric(m))?;
            for s in 0..SERIES {
                for t in 0..POINTS {
                    let ts = start + t * STEP_MS;
                    writeln!(
                        f,
                        "{}{{master=\"m{s}\"}} {} {}.{:03}",
                        metric(m),
                        value(m, s, t),
                        ts / 1000,
                        ts % 1000
                    )?;
                }
            }
        }
        writeln!(f, "# EOF")?;
    }
    let tsdb = dir.join("tsdb");
    let begun = Instant::now();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(&input)
        .arg(&tsdb)
        .output()
        .context("running promtool (Debian's prometheus package)")?;
    let peer_write = begun.elapsed();
    if !out.status.success() {
        bail!("promtool failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let peer_rate = total as f64 / peer_write.as_secs_f64();
    println!(
        "  peer (promtool tsdb create-blocks-from openmetrics): wrote in {peer_write:.2?} = {peer_rate:.0} points/s"
    );

    // The query, ours over the datasource API.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ours_addr = listener.local_addr()?;
    let store: Arc<dyn MetricsStore> = Arc::new(store);
    tokio::spawn(grafana_datasource::serve(
        listener,
        store,
        std::future::pending(),
    ));
    let from = jiff::Timestamp::from_millisecond(now - 86_400_000)?;
    let to = jiff::Timestamp::from_millisecond(now)?;
    let body = json!({
        "range": {"from": from.to_string(), "to": to.to_string()},
        "intervalMs": 60_000,
        "targets": [{"refId": "A", "target": metric(3)}],
    })
    .to_string();
    let ours = tokio::task::spawn_blocking(move || {
        timed(|| {
            let mut r = ureq::post(&format!("http://{ours_addr}/query"))
                .header("content-type", "application/json")
                .send(body.as_str())?;
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
            Ok(v.as_array().map_or(0, |a| {
                a.iter()
                    .map(|s| s["datapoints"].as_array().map_or(0, Vec::len))
                    .sum()
            }))
        })
    })
    .await??;

    // The peer's query, over a Prometheus serving the blocks.
    let address = format!("127.0.0.1:{}", free_port()?);
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global: {scrape_interval: 1h}\n")?;
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg("--storage.tsdb.retention.time=30d")
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
            .spawn()
            .context("starting prometheus")?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while ureq::get(&format!("http://{address}/-/ready"))
        .call()
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("prometheus did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let query = format!("avg_over_time({}[60s])", metric(3));
    let (start_s, end_s) = ((now - 86_400_000) / 1000, now / 1000);
    let peer = tokio::task::spawn_blocking(move || {
        timed(|| {
            let mut r = ureq::get(&format!("http://{address}/api/v1/query_range"))
                .query("query", &query)
                .query("start", start_s.to_string())
                .query("end", end_s.to_string())
                .query("step", "60")
                .call()?;
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
            Ok(v["data"]["result"].as_array().map_or(0, |a| {
                a.iter()
                    .map(|s| s["values"].as_array().map_or(0, Vec::len))
                    .sum()
            }))
        })
    })
    .await??;
    println!(
        "  24 h query: ours {:.1} ms ({} points), peer {:.1} ms ({} points), ratio={:.2}",
        ours.0.as_secs_f64() * 1e3,
        ours.1,
        peer.0.as_secs_f64() * 1e3,
        peer.1,
        ours.0.as_secs_f64() / peer.0.as_secs_f64()
    );
    if ours.1 < 10 * 1_400 || peer.1 < 10 * 1_400 {
        bail!(
            "a query returned too few points (ours {}, peer {}): the comparison would mean nothing",
            ours.1,
            peer.1
        );
    }
    println!(
        "store: ours={ours_rate:.0} points/s peer={peer_rate:.0} points/s ratio={:.2}",
        ours_rate / peer_rate
    );
    Ok(())
}

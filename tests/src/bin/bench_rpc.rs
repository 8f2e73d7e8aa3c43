//! `scripts/bench rpc`: our RPC against tarpc (serde JSON transport over TCP),
//! side by side in one process, on loopback.
//!
//! Both serve an echo of the same ~256-byte JSON message. For each number of
//! concurrent callers (1 and 64) the two systems run in alternating rounds
//! after a warm-up; the reported throughput is the median round, latencies
//! come from all rounds' samples. Client and server share one tokio runtime
//! with two worker threads, as on the 2-core machines we run on.
//!
//! Environment: `BENCH_SECONDS` (per round, default 3), `BENCH_ROUNDS`
//! (default 3), `RPC_MAX_CONNECTIONS` / `RPC_PIPELINE_DEPTH` (our client's
//! pool, default: the library defaults).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tarpc::server::Channel as _;
use tarpc::tokio_serde::formats::Json;

/// The message both systems echo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Msg {
    /// A counter.
    pub id: u64,
    /// An object name.
    pub name: String,
    /// Some labels.
    pub labels: Vec<(String, String)>,
    /// Filler up to the target size.
    pub body: String,
}

fn message() -> Msg {
    Msg {
        id: 123_456_789,
        name: "default/web-7d9f8b6c5-x2k4p".into(),
        labels: vec![
            ("app".into(), "web".into()),
            ("pod-template-hash".into(), "7d9f8b6c5".into()),
        ],
        body: "x".repeat(134),
    }
}

// ---- ours ----

/// The echo service on our RPC.
#[rpc::service]
pub trait Echo {
    /// Returns the message.
    async fn echo(&self, msg: Msg) -> Result<Msg, rpc::Status>;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, msg: Msg) -> Result<Msg, rpc::Status> {
        Ok(msg)
    }
}

// ---- tarpc ----

/// The echo service on tarpc.
#[tarpc::service]
pub trait TarpcEcho {
    /// Returns the message.
    async fn echo(msg: Msg) -> Msg;
}

#[derive(Clone)]
struct TarpcEchoImpl;

impl TarpcEcho for TarpcEchoImpl {
    async fn echo(self, _: tarpc::context::Context, msg: Msg) -> Msg {
        msg
    }
}

const TOKEN: &str = "bench-token";

/// One round's outcome.
struct Round {
    calls_per_sec: f64,
    latencies_us: Histogram<u64>,
}

type Call = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

/// Runs `callers` loops of `call` for `duration`.
async fn round(call: &Call, callers: usize, duration: Duration) -> Result<Round> {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let call = Arc::clone(call);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            while Instant::now() < end {
                let t = Instant::now();
                call().await?;
                hist.record(t.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(hist)
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Round {
        calls_per_sec: all.len() as f64 / elapsed,
        latencies_us: all,
    })
}

async fn start_ours() -> Result<(SocketAddr, Call)> {
    let server = rpc::Server::builder(rpc::Auth::Bearer(vec![TOKEN.into()]))
        .service(EchoServer::new(EchoImpl))
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server.serve(listener, std::future::pending()));
    let mut config = rpc::ClientConfig {
        token: Some(TOKEN.into()),
        ..Default::default()
    };
    if let Some(n) = env_usize("RPC_MAX_CONNECTIONS")? {
        config.max_connections = n;
    }
    if let Some(n) = env_usize("RPC_PIPELINE_DEPTH")? {
        config.pipeline_depth = n;
    }
    let client = EchoClient::new(rpc::Client::new(&addr.to_string(), config)?);
    let msg = Arc::new(message());
    let call: Call = Arc::new(move || {
        let client = client.clone();
        let msg = Arc::clone(&msg);
        Box::pin(async move {
            let back = client.echo(&msg).await?;
            anyhow::ensure!(back.id == msg.id, "wrong echo");
            Ok(())
        })
    });
    Ok((addr, call))
}

async fn start_tarpc() -> Result<(SocketAddr, Call)> {
    let mut incoming = tarpc::serde_transport::tcp::listen("127.0.0.1:0", Json::default).await?;
    let addr = incoming.local_addr();
    tokio::spawn(async move {
        while let Some(Ok(transport)) = incoming.next().await {
            let channel = tarpc::server::BaseChannel::with_defaults(transport);
            tokio::spawn(
                channel
                    .execute(TarpcEchoImpl.serve())
                    .for_each(|response| async move {
                        tokio::spawn(response);
                    }),
            );
        }
    });
    let transport = tarpc::serde_transport::tcp::connect(addr, Json::default).await?;
    let client = TarpcEchoClient::new(tarpc::client::Config::default(), transport).spawn();
    let msg = Arc::new(message());
    let call: Call = Arc::new(move || {
        let client = client.clone();
        let msg = Arc::clone(&msg);
        Box::pin(async move {
            let back = client
                .echo(tarpc::context::current(), (*msg).clone())
                .await?;
            anyhow::ensure!(back.id == msg.id, "wrong echo");
            Ok(())
        })
    });
    Ok((addr, call))
}

fn env_usize(name: &str) -> Result<Option<usize>> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .with_context(|| format!("{name} must be a whole number, got {v:?}"))
        })
        .transpose()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median throughput and merged latencies of one system over all rounds.
struct Summary {
    calls_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
}

fn summarize(rounds: &[Round]) -> Result<Summary> {
    let mut all = Histogram::<u64>::new(3)?;
    for r in rounds {
        all.add(&r.latencies_us)?;
    }
    Ok(Summary {
        calls_per_sec: median(rounds.iter().map(|r| r.calls_per_sec).collect()),
        p50_us: all.value_at_quantile(0.50),
        p99_us: all.value_at_quantile(0.99),
    })
}

async fn run() -> Result<()> {
    let seconds = env_usize("BENCH_SECONDS")?.unwrap_or(3) as u64;
    let rounds = env_usize("BENCH_ROUNDS")?.unwrap_or(3).max(1);
    let duration = Duration::from_secs(seconds);
    let size = serde_json::to_vec(&message())?.len();
    println!(
        "rpc echo of a {size}-byte JSON message on loopback; {rounds} rounds of {seconds} s per system and caller count"
    );

    let (_, ours) = start_ours().await?;
    let (_, tarpc) = start_tarpc().await?;
    let mut last = None;
    for callers in [1usize, 64] {
        // Warm up connections and allocators.
        round(&ours, callers, Duration::from_millis(500)).await?;
        round(&tarpc, callers, Duration::from_millis(500)).await?;
        let (mut o, mut t) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            o.push(round(&ours, callers, duration).await?);
            t.push(round(&tarpc, callers, duration).await?);
        }
        let (o, t) = (summarize(&o)?, summarize(&t)?);
        println!(
            "callers={callers:>2}  ours: {:>8.0} calls/s p50={:>5} us p99={:>5} us | tarpc: {:>8.0} calls/s p50={:>5} us p99={:>5} us | ratio calls/s={:.2} p50={:.2} p99={:.2}",
            o.calls_per_sec,
            o.p50_us,
            o.p99_us,
            t.calls_per_sec,
            t.p50_us,
            t.p99_us,
            o.calls_per_sec / t.calls_per_sec,
            o.p50_us as f64 / t.p50_us.max(1) as f64,
            o.p99_us as f64 / t.p99_us.max(1) as f64,
        );
        last = Some((o, t));
    }
    if let Some((o, t)) = last {
        println!(
            "rpc: ours={:.0} calls/s peer={:.0} calls/s ratio={:.2}",
            o.calls_per_sec,
            t.calls_per_sec,
            o.calls_per_sec / t.calls_per_sec
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    tests::block_on(run())
}

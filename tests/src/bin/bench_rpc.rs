//! `scripts/bench rpc`: our RPC against tarpc (serde JSON transport over TCP),
//! side by side in one process, on loopback.
//!
//! Both serve an echo of the same ~256-byte JSON message, each twice: over
//! plain TCP and over TLS 1.3 with the same rustls configuration (a CA of
//! the run's own, client certificates, aws-lc-rs), tarpc's JSON transport
//! framed over a tokio-rustls stream. For each number of concurrent callers
//! (1 and 64) the four run in alternating rounds after a warm-up; the reported throughput is the median round, latencies
//! come from all rounds' samples. Client and server share one tokio runtime
//! with two worker threads, as on the 2-core machines we run on.
//!
//! Environment: `BENCH_SECONDS` (per round, default 3), `BENCH_ROUNDS`
//! (default 3), `RPC_MAX_CONNECTIONS` / `RPC_PIPELINE_DEPTH` (our client's
//! pool, default: the library defaults). The last line compares the TLS
//! pair at 64 callers.

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
use tokio_util::codec::{Framed, LengthDelimitedCodec};

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

/// One CA, a server identity for 127.0.0.1 and a client identity, shared
/// by both systems' TLS runs.
struct Tls {
    server: rpc::ServerTls,
    client: rpc::ClientTls,
}

fn tls() -> Result<Tls> {
    let ca = pki::Ca::generate("bench")?;
    let roots = rpc::Roots::from_pem(ca.cert_pem().as_bytes())?;
    let identity = |name: &str| -> Result<rpc::Identity> {
        let issued = ca.issue(&pki::Request::new(
            name,
            pki::MASTERS,
            vec!["127.0.0.1".into()],
        ))?;
        Ok(rpc::Identity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )?)
    };
    Ok(Tls {
        server: rpc::ServerTls::new(&roots, identity("server")?)?,
        client: rpc::ClientTls::new(&roots, Some(identity("client")?))?,
    })
}

async fn start_ours(tls: Option<&Tls>) -> Result<(SocketAddr, Call)> {
    let mut server = rpc::Server::builder(rpc::Auth::Bearer(vec![TOKEN.into()]))
        .service(EchoServer::new(EchoImpl));
    if let Some(tls) = tls {
        server = server.tls(tls.server.clone());
    }
    let server = server.build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server.serve(listener, std::future::pending()));
    let mut config = rpc::ClientConfig {
        token: Some(TOKEN.into()),
        tls: tls.map(|t| t.client.clone()),
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

/// Serves one tarpc connection.
fn serve_tarpc<T>(transport: T)
where
    T: tarpc::Transport<tarpc::Response<TarpcEchoResponse>, tarpc::ClientMessage<TarpcEchoRequest>>
        + Send
        + 'static,
{
    let channel = tarpc::server::BaseChannel::with_defaults(transport);
    tokio::spawn(
        channel
            .execute(TarpcEchoImpl.serve())
            .for_each(|response| async move {
                tokio::spawn(response);
            }),
    );
}

async fn start_tarpc(tls: Option<&Tls>) -> Result<(SocketAddr, Call)> {
    let client = match tls {
        None => {
            let mut incoming =
                tarpc::serde_transport::tcp::listen("127.0.0.1:0", Json::default).await?;
            let addr = incoming.local_addr();
            tokio::spawn(async move {
                while let Some(Ok(transport)) = incoming.next().await {
                    serve_tarpc(transport);
                }
            });
            let transport = tarpc::serde_transport::tcp::connect(addr, Json::default).await?;
            (
                addr,
                TarpcEchoClient::new(tarpc::client::Config::default(), transport).spawn(),
            )
        }
        Some(tls) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.rustls_config());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let framed = Framed::new(stream, LengthDelimitedCodec::new());
                            serve_tarpc(tarpc::serde_transport::new(framed, Json::default()));
                        }
                    });
                }
            });
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(tls.client.rustls_config());
            let name = rpc::tls::rustls::pki_types::ServerName::try_from("127.0.0.1")?;
            let stream = connector.connect(name, tcp).await?;
            let framed = Framed::new(stream, LengthDelimitedCodec::new());
            let transport = tarpc::serde_transport::new(framed, Json::default());
            (
                addr,
                TarpcEchoClient::new(tarpc::client::Config::default(), transport).spawn(),
            )
        }
    };
    let (addr, client) = client;
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

    let tls = tls()?;
    let pairs = [
        ("tcp", start_ours(None).await?.1, start_tarpc(None).await?.1),
        (
            "tls",
            start_ours(Some(&tls)).await?.1,
            start_tarpc(Some(&tls)).await?.1,
        ),
    ];
    let mut last = None;
    for callers in [1usize, 64] {
        // Warm up connections and allocators.
        for (_, ours, tarpc) in &pairs {
            round(ours, callers, Duration::from_millis(500)).await?;
            round(tarpc, callers, Duration::from_millis(500)).await?;
        }
        let mut results: Vec<(Vec<Round>, Vec<Round>)> =
            pairs.iter().map(|_| (Vec::new(), Vec::new())).collect();
        for _ in 0..rounds {
            for ((_, ours, tarpc), (o, t)) in pairs.iter().zip(results.iter_mut()) {
                o.push(round(ours, callers, duration).await?);
                t.push(round(tarpc, callers, duration).await?);
            }
        }
        for ((transport, _, _), (o, t)) in pairs.iter().zip(&results) {
            let (o, t) = (summarize(o)?, summarize(t)?);
            print_row(transport, callers, &o, &t);
            if *transport == "tls" {
                last = Some((o, t));
            }
        }
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

fn print_row(transport: &str, callers: usize, o: &Summary, t: &Summary) {
    println!(
        "{transport} callers={callers:>2}  ours: {:>8.0} calls/s p50={:>5} us p99={:>5} us | tarpc: {:>8.0} calls/s p50={:>5} us p99={:>5} us | ratio calls/s={:.2} p50={:.2} p99={:.2}",
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
}

fn main() -> Result<()> {
    tests::block_on(run())
}

//! `mkube-hollow`: many hollow nodes in one process, for scale runs.
//!
//! Each node is a whole worker (`worker::run::run`: the agent, the
//! `Worker` service on its own listener, registration, with its own
//! certificate under `--pki-dir`) over a [`HollowRuntime`] instead of
//! Docker: its containers exist only in memory (see `worker::hollow`).
//! Nodes are named `PREFIX-NNNN` from `--first`, so that several processes
//! can make up one fleet (and one of them can be killed to lose a slice).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use api::node::Resources;
use api::quantity::parse_memory_bytes;
use clap::Parser;
use pki::member::{Kind, ListenerFlags, Security};
use worker::agent::AgentConfig;
use worker::certificate::Bootstrap;
use worker::hollow::{HollowRuntime, HollowSettings};
use worker::reconcile::Backoff;
use worker::run::WorkerConfig;

/// Hollow nodes: real workers over a simulated container runtime.
#[derive(Debug, Parser)]
#[command(name = "mkube-hollow", version)]
struct Args {
    /// How many nodes this process runs.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// The number of the first node (names are PREFIX-NNNN).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// The nodes' name prefix.
    #[arg(long, default_value = "hollow")]
    prefix: String,
    /// The address every node listens on (each on a port of its own).
    #[arg(long, default_value = "127.0.0.1")]
    listen_ip: std::net::IpAddr,
    /// Masters to register with, comma-separated `host:port`.
    #[arg(long, value_delimiter = ',', env = "MKUBE_MASTERS")]
    masters: Vec<String>,
    /// TLS from this directory: the cluster's ca.crt and tokens/join; each
    /// node has its own certificate signed by a master (kept here as
    /// NAME.crt and NAME.key).
    #[arg(long, conflicts_with = "insecure")]
    pki_dir: Option<std::path::PathBuf>,
    /// Speak plain HTTP with --token: local experiments only.
    #[arg(long, requires = "token")]
    insecure: bool,
    /// The cluster token (with --insecure).
    #[arg(long, env = "MKUBE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// cpus each node reports.
    #[arg(long, default_value_t = 4)]
    cpus: u64,
    /// Memory each node reports.
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// From a container's creation to its start, in ms.
    #[arg(long, default_value_t = 500)]
    start_delay_ms: u64,
    /// How often each node's reconcile loop runs when nothing wakes it.
    #[arg(long, default_value_t = 1_000)]
    sync_interval_ms: u64,
    /// How often container stats are sampled.
    #[arg(long, default_value_t = 10_000)]
    stats_interval_ms: u64,
    /// Re-register when no probe arrived for this long.
    #[arg(long, default_value_t = 30_000)]
    rejoin_after_ms: u64,
    /// Nodes bootstrapping their certificates at once.
    #[arg(long, default_value_t = 16)]
    bootstrap_concurrency: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkube-hollow: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One node's TLS: its certificate, obtained with the join token and
/// renewed in the background.
async fn security(args: &Args, name: &str, host: &str) -> anyhow::Result<Option<Security>> {
    let Some(dir) = &args.pki_dir else {
        return Ok(None);
    };
    let roots = rpc::Roots::from_file(&dir.join("ca.crt"))
        .context("loading the cluster CA from --pki-dir")?;
    let join = pki::read_tokens(&pki::token_path(dir, "join")?)
        .context("reading the join token from --pki-dir")?;
    let join = join.first().context("tokens/join in --pki-dir is empty")?;
    let bootstrap = Bootstrap {
        node: name.to_string(),
        dir: dir.clone(),
        hosts: vec![name.to_string(), host.to_string()],
        masters: args.masters.clone(),
        roots,
        join_token: join.clone(),
    };
    let (identity, not_after) = bootstrap
        .obtain()
        .await
        .with_context(|| format!("obtaining {name}'s certificate"))?;
    let live = rpc::LiveIdentity::new(identity).context("using a node's certificate")?;
    bootstrap.spawn_renewal(live.clone(), not_after);
    Ok(Some(
        Security::load_live(dir, &live, Kind::Worker)
            .context("loading TLS and tokens from --pki-dir")?,
    ))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.pki_dir.is_none() && !args.insecure {
        bail!("TLS is required: give --pki-dir DIR, or --insecure --token T for plain HTTP");
    }
    if !api::validation::is_dns1123_subdomain(&args.prefix) {
        bail!("--prefix {:?} must be a DNS-1123 name", args.prefix);
    }
    let memory_bytes =
        parse_memory_bytes(&args.memory).map_err(|e| anyhow::anyhow!("--memory: {e}"))?;
    let settings = HollowSettings {
        start_delay: Duration::from_millis(args.start_delay_ms),
        cpus: args.cpus.max(1),
        memory_bytes,
        ..Default::default()
    };
    let Some(end) = args.first.checked_add(args.count) else {
        bail!(
            "--first {} and --count {} go past the last node number",
            args.first,
            args.count
        );
    };
    let args = Arc::new(args);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limit = Arc::new(tokio::sync::Semaphore::new(
        args.bootstrap_concurrency.max(1),
    ));
    let mut nodes = tokio::task::JoinSet::new();
    for i in args.first..end {
        let name = format!("{}-{i:04}", args.prefix);
        let listener = tokio::net::TcpListener::bind((args.listen_ip, 0))
            .await
            .with_context(|| format!("listening on {}", args.listen_ip))?;
        let address = listener.local_addr()?.to_string();
        let host = args.listen_ip.to_string();
        let (args, settings, limit) = (Arc::clone(&args), settings.clone(), Arc::clone(&limit));
        let mut stop = stop_rx.clone();
        nodes.spawn(async move {
            let security = {
                let _permit = limit.acquire().await;
                security(&args, &name, &host).await?
            };
            let config = WorkerConfig {
                agent: AgentConfig {
                    node: name.clone(),
                    address,
                    host_ip: host,
                    labels: [("mkube.io/hollow".to_string(), "true".to_string())].into(),
                    backoff: Backoff {
                        initial_ms: 1_000,
                        max_ms: 60_000,
                    },
                    sync_interval: Duration::from_millis(args.sync_interval_ms.max(10)),
                    max_parallel_ops: 16,
                    pod_network: None,
                    publish_ip: None,
                    reserved: Resources::default(),
                    stats_interval: Duration::from_millis(args.stats_interval_ms.max(100)),
                    cluster_dns: Vec::new(),
                    cluster_domain: "cluster.local".into(),
                },
                runtime: Arc::new(HollowRuntime::new(settings)),
                security,
                token: args.token.clone(),
                listener_limits: ListenerFlags::default(),
                masters: args.masters.clone(),
                rejoin_after: Duration::from_millis(args.rejoin_after_ms.max(100)),
                eviction: None,
            };
            worker::run::run(config, listener, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .with_context(|| format!("node {name}"))
        });
    }
    // Printed for scripts and tests.
    println!(
        "hollow nodes {}-{:04}..{:04} started",
        args.prefix, args.first, end
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        Some(done) = nodes.join_next() => {
            // A node stopped on its own: say why, and stop the others.
            let _ = stop_tx.send(true);
            done.context("a node's task failed")??;
            bail!("a node stopped serving");
        }
    }
    let _ = stop_tx.send(true);
    while let Some(done) = nodes.join_next().await {
        done.context("a node's task failed")??;
    }
    Ok(())
}

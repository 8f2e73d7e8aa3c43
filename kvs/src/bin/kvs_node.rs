//! `kvs-node`: one member of a standalone kvs cluster.
//!
//! ```text
//! kvs-node --name n1 --listen 127.0.0.1:7001 \
//!          --peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003 --pki-dir pki
//! ```
//!
//! Every member gets the same `--peers` list (an odd number of names: the
//! argument in `kvs::lifecycle` that two clusters never run at once needs
//! it). A member starts empty, as a new incarnation: it joins the live
//! cluster or, if none is live and a majority of names are empty too, forms
//! a new epoch from the newest export in `--export-dir` (shared by all
//! members: without it, a whole-fleet loss loses everything). SIGTERM or
//! SIGINT (an eviction notice) exports the applied state before exiting.
//! Logs go to stderr (`RUST_LOG` filters them).
//!
//! Security is a master's (see `pki::member`): with `--pki-dir`, TLS with the
//! cluster CA, Raft only between certificates of `mkube:masters` with member
//! tokens, the `Kv` API for member and user tokens. `--insecure` speaks plain
//! HTTP with one `--token`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kvs::api::{KvServer, RaftPeerServer};
use kvs::node::{KvService, Node, NodeConfig, PeerService};
use kvs::snapshot_store::{
    FileSnapshotStore, MemorySnapshotStore, SignedSnapshotStore, SnapshotStore,
};
use pki::member::{Kind, Security};

/// One member of a kvs cluster.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Connection limits of the listener.
    #[command(flatten)]
    listener: pki::member::ListenerFlags,
    /// Limits of the store.
    #[command(flatten)]
    store: kvs::node::StoreFlags,
    /// This member's name; must appear in --peers.
    #[arg(long)]
    name: String,
    /// Address to serve peers and clients on.
    #[arg(long)]
    listen: String,
    /// Every member as NAME=HOST:PORT, comma separated, this one included.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// The cluster token (prefer --token-file or KVS_TOKEN).
    #[arg(long, env = "KVS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the cluster token.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Serve without authentication (local experiments only; needs --insecure).
    #[arg(long, requires = "insecure")]
    insecure_no_auth: bool,
    /// TLS and tokens from this PKI directory (see mkube-pki): ca.crt,
    /// NAME.crt, NAME.key, tokens/{member,join,user}.
    #[arg(long, conflicts_with_all = ["token", "token_file", "insecure"])]
    pki_dir: Option<std::path::PathBuf>,
    /// Speak plain HTTP (tokens and data in clear text): local experiments only.
    #[arg(long)]
    insecure: bool,
    /// Length of a Raft tick, in milliseconds.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// Ticks without a leader before campaigning.
    #[arg(long, default_value_t = 10)]
    election_ticks: u32,
    /// Watch history, in events.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Most log entries kept for a member far behind (or as many as there
    /// are keys, if more); past that it is sent a snapshot of the state.
    #[arg(long, default_value_t = 10_000)]
    snapshot_entries: u64,
    /// Directory the leader exports its state to, shared by every member
    /// (it is what survives whole-fleet loss).
    #[arg(long)]
    export_dir: Option<std::path::PathBuf>,
    /// Seconds between exports.
    #[arg(long, default_value_t = 30)]
    export_interval_s: u64,
}

fn fleet(peers: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in peers {
        let Some((name, addr)) = p.split_once('=') else {
            bail!("--peers entry {p:?} is not NAME=HOST:PORT");
        };
        if name.is_empty() || addr.is_empty() {
            bail!("--peers entry {p:?} is not NAME=HOST:PORT");
        }
        if out.insert(name.to_string(), addr.to_string()).is_some() {
            bail!("--peers names {name} twice");
        }
    }
    if out.len() % 2 == 0 {
        bail!(
            "--peers lists {} members; use an odd number (1, 3, 5): with an even one, two clusters could form after a partition",
            out.len()
        );
    }
    Ok(out)
}

/// jemalloc: measured side by side with glibc's malloc (`scripts/bench
/// kvs`), about a fifth more puts a second for about 8 % more resident
/// memory (a 272-byte value takes a 320-byte size class); and its
/// statistics tell a member's status where the bytes are.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's bytes allocated and resident (its statistics are cached
/// until the epoch advances).
fn jemalloc_stats() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some((
        stats::allocated::read().ok()? as u64,
        stats::resident::read().ok()? as u64,
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    kvs::node::set_allocator_stats(jemalloc_stats);
    let fleet = fleet(&args.peers)?;
    if !fleet.contains_key(&args.name) {
        bail!("--name {} is not among --peers", args.name);
    }
    let security = match &args.pki_dir {
        Some(dir) => Some(
            Security::load(dir, &args.name, Kind::Master)
                .context("loading TLS and tokens from --pki-dir")?,
        ),
        None if args.insecure => {
            tracing::warn!(
                "--insecure: plain HTTP; tokens and data cross the network in clear text"
            );
            None
        }
        None => bail!(
            "TLS is required: give --pki-dir DIR (create one with mkube-pki init); --insecure speaks plain HTTP"
        ),
    };
    let token = match (&args.token, &args.token_file) {
        _ if security.is_some() => security.as_ref().map(|s| s.send.clone()),
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) if args.insecure_no_auth => None,
        (None, None) => bail!(
            "a cluster token is required: --token-file, --token or KVS_TOKEN (or --insecure-no-auth)"
        ),
    };
    let store: std::sync::Arc<dyn SnapshotStore> = match &args.export_dir {
        Some(dir) => std::sync::Arc::new(
            FileSnapshotStore::new(dir, 3).context("opening the export directory")?,
        ),
        None => {
            tracing::warn!(
                "no --export-dir: exports stay in memory, and a whole-fleet loss loses the data"
            );
            std::sync::Arc::new(MemorySnapshotStore::default())
        }
    };
    // With the CA key in --pki-dir (only members hold it), exports are
    // signed and a recovery refuses any other.
    let ca_key = args.pki_dir.as_ref().map(|d| d.join("ca.key"));
    let store: std::sync::Arc<dyn SnapshotStore> = match ca_key.filter(|k| k.exists()) {
        Some(path) => {
            let secret =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            std::sync::Arc::new(SignedSnapshotStore::new(store, &secret))
        }
        None => store,
    };
    let config = NodeConfig {
        name: args.name.clone(),
        fleet,
        token: token.clone(),
        // Peers must be members (masters' certificates), not any holder
        // of a certificate of the CA.
        tls: security
            .as_ref()
            .map(|s| s.client.expecting_group(pki::MASTERS))
            .transpose()
            .context("configuring TLS towards the peers")?,
        tick: Duration::from_millis(args.tick_ms.max(1)),
        election_ticks: args.election_ticks.max(2),
        history_limit: args.history,
        limits: args.store.limits(),
        snapshot_entries: args.snapshot_entries,
        store,
        export_interval: Duration::from_secs(args.export_interval_s.max(1)),
    };
    let node = Node::start(config).context("starting the member")?;
    let server = pki::member::server_builder(security.as_ref(), token.as_deref(), &args.listener)
        .service(KvServer::new(KvService::new(node.clone())))
        .service(RaftPeerServer::new(PeerService::new(node.clone())))
        .build()
        .context("configuring the server")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(name = %args.name, listen = %args.listen, "kvs member started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    server
        .serve(listener, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            // The eviction notice: leave the newest state behind.
            match node.export_now().await {
                Ok(Some(meta)) => tracing::info!(epoch = %meta.epoch, index = meta.index, "exported before exiting"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "export before exiting failed"),
            }
        })
        .await
        .context("serving")?;
    Ok(())
}

//! `mkube-master`: one master of an mkube cluster.
//!
//! ```text
//! mkube-master --name m1 --listen 0.0.0.0:7000 --advertise 10.0.0.1:7000 \
//!     --peers m1=10.0.0.1:7000,m2=10.0.0.2:7000,m3=10.0.0.3:7000 --token-file token
//! ```
//!
//! One port serves the Raft peer service, the `Kv` service and the
//! `Master` API. Every master gets the same `--peers` (an odd number of
//! names; a list without this master's own name gets it added with
//! `--advertise`). The member that leads Raft runs the scheduler, the
//! controllers and the prober. SIGTERM or SIGINT exports the store's state
//! (see `--export-dir`) before exiting. Logs go to stderr (`RUST_LOG`).
//!
//! DNS: with `--dns-listen`, Services resolve by name under
//! `--cluster-domain` (see the `dns` crate).
//!
//! Metrics: `GET /metrics` on the same port is Prometheus text (same token);
//! the leader collects every `--metrics-interval-ms` into every master's
//! embedded database (`--metrics-db`), which `--grafana-listen` serves to
//! Grafana's JSON datasource.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use grafana_datasource::config::StoreArgs;
use kvs::snapshot_store::{FileSnapshotStore, MemorySnapshotStore, SnapshotStore};
use master::controllers::nodes::Timeouts;
use master::leader::LeaderConfig;
use master::run::{MasterConfig, MemberSettings};
use master::scheduler::ScorePolicy;
use pki::member::{Kind, Security};

/// One master of an mkube cluster.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Connection limits of the listener.
    #[command(flatten)]
    listener: pki::member::ListenerFlags,
    /// Limits of the store.
    #[command(flatten)]
    store: kvs::node::StoreFlags,
    /// The most replicas one Deployment or ReplicaSet may ask for; more is
    /// refused as invalid (`spec.replicas`).
    #[arg(long, default_value_t = master::objects::DEFAULT_MAX_REPLICAS)]
    max_replicas: u32,
    /// This master's name; one of --peers.
    #[arg(long)]
    name: String,
    /// Address to listen on.
    #[arg(long)]
    listen: String,
    /// Address the other masters and the workers reach this one at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// The masters as NAME=HOST:PORT, comma separated (this one may be left out).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// The cluster token (prefer --token-file or MKUBE_TOKEN).
    #[arg(long, env = "MKUBE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the cluster token.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Read the cluster token (secret `mkube-token`) and the Cosmos DB key
    /// (secret `cosmos-key`) from this Key Vault, `keyvault://NAME`, with the
    /// VM's managed identity.
    #[arg(long, conflicts_with_all = ["token", "token_file"])]
    secrets: Option<String>,
    /// The client id of a user-assigned managed identity for --secrets and
    /// peer revival.
    #[arg(long)]
    identity_client_id: Option<String>,
    /// Start the deallocated VMs of silent nodes (the VM name is the node
    /// name) in this subscription ...
    #[arg(long, requires = "azure_resource_group")]
    azure_subscription: Option<String>,
    /// ... and resource group, with the VM's managed identity.
    #[arg(long, requires = "azure_subscription")]
    azure_resource_group: Option<String>,
    /// Serve without authentication (local experiments only; needs --insecure).
    #[arg(long, requires = "insecure")]
    insecure_no_auth: bool,
    /// TLS and tokens from this PKI directory (see mkube-pki): ca.crt,
    /// NAME.crt, NAME.key and tokens/{member,join,user}. Token files are
    /// read again every second, so tokens rotate without a restart.
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
    /// Directory the leader exports the store to, shared by every master
    /// (what survives the loss of every master at once).
    #[arg(long)]
    export_dir: Option<std::path::PathBuf>,
    /// Seconds between exports.
    #[arg(long, default_value_t = 30)]
    export_interval_s: u64,
    /// Most Raft log entries the store keeps for a member far behind (or
    /// as many as there are keys, if more); past that it is sent a snapshot.
    #[arg(long, default_value_t = 10_000)]
    snapshot_entries: u64,
    /// Time between heartbeat probes of each worker, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    probe_interval_ms: u64,
    /// Longest wait for a probe's answer, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    probe_timeout_ms: u64,
    /// Probes in flight at once (at least: a fleet larger than eight times
    /// this gets one per eight nodes).
    #[arg(long, default_value_t = 32)]
    probe_concurrency: usize,
    /// Silence after which a node is NotReady and its pods Unknown, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    node_grace_ms: u64,
    /// Silence after which a node's controller-owned pods are replaced elsewhere, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    eviction_timeout_ms: u64,
    /// Control passes run at least this often, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    resync_ms: u64,
    /// How the scheduler ranks nodes: spread or least-allocated.
    #[arg(long, default_value = "spread")]
    score: ScorePolicy,
    /// Where metrics go: the embedded file (default mkube-metrics-NAME.db
    /// in the temporary directory) or Cosmos DB.
    #[command(flatten)]
    metrics: StoreArgs,
    /// Time between metric collections on the leader, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    metrics_interval_ms: u64,
    /// Serve the Grafana JSON datasource API over this master's metrics on
    /// this address: over TLS with user or member tokens, like the API
    /// (plain and unauthenticated with --insecure).
    #[arg(long)]
    grafana_listen: Option<String>,
    /// Validity of the certificates this master signs for workers, in
    /// seconds (workers renew at two thirds of it, without a restart).
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    worker_cert_validity_s: u64,
    /// The node whose worker runs on this master's machine, the only one
    /// that may call `prepare_eviction` here (default: --name, as on Azure,
    /// where a VM's master and worker share its name).
    #[arg(long)]
    local_node: Option<String>,
    /// Answer DNS for the cluster domain on this address, UDP and TCP
    /// (`0.0.0.0:53` where pods resolve through the masters): Services as
    /// NAME.NAMESPACE.svc.DOMAIN (A/AAAA) and _PORT._PROTO.NAME... (SRV).
    #[arg(long)]
    dns_listen: Option<std::net::SocketAddr>,
    /// The cluster domain DNS answers for.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// TTL of DNS answers (and of negative answers), in seconds.
    #[arg(long, default_value_t = 5)]
    dns_ttl: u32,
    /// Forward names outside the cluster domain (when the client asks for
    /// recursion) to `system` (this host's /etc/resolv.conf) or to
    /// IP[:PORT],...; without it they are REFUSED.
    #[arg(long, requires = "dns_listen")]
    dns_forward: Option<dns::Upstream>,
}

fn fleet(args: &Args, advertise: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in &args.peers {
        let Some((name, addr)) = p
            .split_once('=')
            .filter(|(n, a)| !n.is_empty() && !a.is_empty())
        else {
            bail!("--peers entry {p:?} is not NAME=HOST:PORT");
        };
        if out.insert(name.to_string(), addr.to_string()).is_some() {
            bail!("--peers names {name} twice");
        }
    }
    out.entry(args.name.clone())
        .or_insert_with(|| advertise.to_string());
    if out.len() % 2 == 0 {
        bail!(
            "there are {} masters; use an odd number (1, 3, 5): with an even one, two clusters could form after a partition",
            out.len()
        );
    }
    Ok(out)
}

fn token(args: &Args) -> Result<Option<String>> {
    match (&args.token, &args.token_file) {
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(path)) => Ok(Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_string(),
        )),
        (None, None) if args.insecure_no_auth => Ok(None),
        (None, None) => bail!(
            "a cluster token is required: --token-file, --token or MKUBE_TOKEN (or --insecure-no-auth)"
        ),
    }
}

/// How often tokens kept in Key Vault are read again (rotation there needs
/// no restart either).
const VAULT_REFRESH: Duration = Duration::from_secs(60);

/// TLS from the Key Vault: the CA (`mkube-ca-crt`, `mkube-ca-key`) and the
/// role tokens (`mkube-{admin,user,viewer,join,member}-token`, one or more
/// lines each); the master issues its own certificate for its name and
/// advertised host, and signs workers' with the CA.
async fn security_from_vault(
    secrets: &cloud::secrets::Secrets,
    name: &str,
    advertise: &str,
) -> Result<(Security, pki::Ca)> {
    let ca = pki::Ca::from_pem(
        &secrets.get("mkube-ca-crt").await?,
        &secrets.get("mkube-ca-key").await?,
    )?;
    let tokens = secrets.tokens(&pki::ROLES).await?;
    let host = advertise
        .rsplit_once(':')
        .map_or(advertise, |(h, _)| h)
        .trim_matches(['[', ']']);
    let security = Security::issue(
        &ca,
        name,
        vec![
            name.to_string(),
            host.to_string(),
            pki::MASTERS_SERVER_NAME.to_string(),
        ],
        Kind::Master,
        &tokens,
    )?;
    Ok((security, ca))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hickory_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?.to_string();
    let advertise = args.advertise.clone().unwrap_or(local.clone());
    let fleet = fleet(&args, &advertise)?;
    // The Key Vault, read once: the Cosmos DB key, then TLS and the tokens
    // (or, with --insecure, the one cluster token).
    let vault = match &args.secrets {
        Some(spec) => Some(cloud::secrets::Secrets::new(
            spec,
            cloud::managed_identity(args.identity_client_id.clone())?,
            None,
        )?),
        None => None,
    };
    if let Some(secrets) = &vault
        && args.metrics.cosmos_endpoint.is_some()
        && args.metrics.cosmos_key_file.is_none()
    {
        args.metrics.cosmos_key = Some(secrets.get("cosmos-key").await?);
    }
    let mut ca = None;
    let mut token = None;
    let security = match (&args.pki_dir, vault) {
        (Some(dir), _) => {
            if dir.join("ca.key").exists() {
                ca = Some(pki::Ca::load(dir).context("loading the CA from --pki-dir")?);
            } else {
                tracing::warn!(dir = %dir.display(), "no ca.key in --pki-dir: this master signs no worker certificates");
            }
            Some(
                Security::load(dir, &args.name, Kind::Master)
                    .context("loading TLS and tokens from --pki-dir")?,
            )
        }
        (None, Some(secrets)) if args.insecure => {
            token = Some(secrets.get("mkube-token").await?);
            None
        }
        (None, Some(secrets)) => {
            let (security, vault_ca) =
                security_from_vault(&secrets, &args.name, &advertise).await?;
            ca = Some(vault_ca);
            let secrets = Arc::new(secrets);
            security.spawn_refresh(VAULT_REFRESH, move || {
                let secrets = Arc::clone(&secrets);
                async move { secrets.tokens(&pki::ROLES).await }
            });
            Some(security)
        }
        (None, None) if args.insecure => {
            token = self::token(&args)?;
            None
        }
        (None, None) => bail!(
            "TLS is required: give --pki-dir DIR (create one with mkube-pki init) or --secrets keyvault://NAME; --insecure serves plain HTTP"
        ),
    };
    if security.is_none() {
        tracing::warn!(
            "--insecure: serving plain HTTP; tokens and data cross the network in clear text"
        );
    }
    let cosmos_exports = match (
        args.metrics.cosmos_account()?,
        &args.metrics.cosmos_exports_container,
    ) {
        (Some(account), Some(name)) => Some(
            cloud::exports::CosmosSnapshotStore::open(&account, name)
                .await
                .context("opening the Cosmos DB export store")?,
        ),
        _ => None,
    };
    let exports: Arc<dyn SnapshotStore> = match (cosmos_exports, &args.export_dir) {
        (Some(_), Some(_)) => bail!("give --export-dir or --cosmos-exports-container, not both"),
        (Some(cosmos), None) => Arc::new(cosmos),
        (None, Some(dir)) => {
            Arc::new(FileSnapshotStore::new(dir, 3).context("opening the export directory")?)
        }
        (None, None) => {
            tracing::warn!(
                "no --export-dir or --cosmos-exports-container: exports stay in memory, and losing every master loses the cluster's state"
            );
            Arc::new(MemorySnapshotStore::default())
        }
    };
    let metrics_store = args
        .metrics
        .open(std::env::temp_dir().join(format!("mkube-metrics-{}.db", args.name)))
        .await
        .context("opening the metrics store")?;
    let vms = match (&args.azure_subscription, &args.azure_resource_group) {
        (Some(subscription), Some(group)) => Some(Arc::new(cloud::vms::Vms::new(
            "https://management.azure.com/",
            subscription,
            group,
            cloud::managed_identity(args.identity_client_id.clone())?,
            None,
        )?)),
        _ => None,
    };
    let dns = match args.dns_listen {
        Some(address) => {
            let zone_config = dns::ZoneConfig {
                domain: args.cluster_domain.clone(),
                ttl: args.dns_ttl,
            };
            let zone =
                dns::ZoneHandle::new(dns::Zone::empty(&zone_config).context("--cluster-domain")?);
            let forward = args
                .dns_forward
                .as_ref()
                .map(dns::Forwarder::new)
                .transpose()
                .context("--dns-forward")?;
            let server = dns::DnsServer::bind(address, zone.clone(), forward)
                .await
                .context("--dns-listen")?;
            println!("dns on {}", server.local_addr());
            Some(master::run::Dns {
                zone_config,
                zone,
                server,
            })
        }
        None => None,
    };
    let grafana = match &args.grafana_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("listening on {address} (--grafana-listen)"))?;
            println!("grafana datasource on {}", listener.local_addr()?);
            Some(listener)
        }
        None => None,
    };
    let config = MasterConfig {
        name: args.name.clone(),
        fleet,
        security,
        token,
        ca,
        exports,
        member: MemberSettings {
            tick: Duration::from_millis(args.tick_ms.max(1)),
            election_ticks: args.election_ticks.max(2),
            limits: args.store.limits(),
            snapshot_entries: args.snapshot_entries,
            export_interval: Duration::from_secs(args.export_interval_s.max(1)),
        },
        metrics_store,
        listener_limits: args.listener.clone(),
        api_limits: master::objects::ApiLimits {
            max_replicas: args.max_replicas,
        },
        worker_cert_validity: Duration::from_secs(args.worker_cert_validity_s.max(10)),
        local_node: args.local_node.clone().unwrap_or_else(|| args.name.clone()),
        leader: LeaderConfig {
            probe_interval: Duration::from_millis(args.probe_interval_ms.max(10)),
            probe_timeout: Duration::from_millis(args.probe_timeout_ms.max(10)),
            probe_concurrency: args.probe_concurrency.max(1),
            timeouts: Timeouts {
                grace_ms: args.node_grace_ms,
                eviction_ms: args.eviction_timeout_ms,
            },
            resync_interval: Duration::from_millis(args.resync_ms.max(10)),
            score_policy: args.score,
            metrics_interval: Duration::from_millis(args.metrics_interval_ms.max(100)),
            ..LeaderConfig::default()
        },
        vms,
        dns,
        grafana,
    };
    println!("listening on {local}");
    tracing::info!(name = %args.name, listen = %local, advertise = %advertise, "master started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    master::run::run(config, listener, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await?;
    Ok(())
}

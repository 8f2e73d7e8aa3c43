//! `mkube-worker`: runs the pods a master assigns to this node as Docker
//! containers and answers the master's probes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use api::node::Resources;
use api::quantity::{parse_cpu_millis, parse_memory_bytes};
use clap::Parser;
use pki::member::{Kind, Security};
use worker::agent::AgentConfig;
use worker::certificate::Bootstrap;
use worker::docker::DockerRuntime;
use worker::reconcile::Backoff;
use worker::run::{EvictionSettings, WorkerConfig};

/// The mkube node agent.
#[derive(Debug, Parser)]
#[command(name = "mkube-worker", version)]
struct Args {
    /// Connection limits of the listener.
    #[command(flatten)]
    listener: pki::member::ListenerFlags,
    /// This node's name (a DNS-1123 name, unique in the cluster).
    #[arg(long, env = "MKUBE_NODE_NAME")]
    name: String,
    /// Where the Worker RPC server listens.
    #[arg(long, default_value = "0.0.0.0:10250")]
    listen: SocketAddr,
    /// The address masters use to reach this worker (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// The address at which pods' host ports answer (default: the host of --advertise).
    #[arg(long)]
    host_ip: Option<String>,
    /// Masters to register with, comma-separated `host:port`.
    #[arg(long, value_delimiter = ',', env = "MKUBE_MASTERS")]
    masters: Vec<String>,
    /// The cluster token (callers must present it; registration sends it).
    #[arg(long, env = "MKUBE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the cluster token.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Read the CA certificate (`mkube-ca-crt`) and the join token
    /// (`mkube-join-token`) from this Key Vault, `keyvault://NAME`, with the
    /// VM's managed identity, and bootstrap a certificate (kept in
    /// --cert-dir). With --insecure: the cluster token `mkube-token`.
    #[arg(long, conflicts_with_all = ["token", "token_file"])]
    secrets: Option<String>,
    /// Where a worker using --secrets keeps its certificate and key.
    #[arg(long, default_value = "/var/lib/mkube/pki")]
    cert_dir: std::path::PathBuf,
    /// The client id of a user-assigned managed identity for --secrets.
    #[arg(long, requires = "secrets")]
    identity_client_id: Option<String>,
    /// TLS from this directory: the cluster's ca.crt and tokens/join; the
    /// worker makes its key, has a master sign its certificate (kept here
    /// as NAME.crt and NAME.key) and renews it before it expires. No CA key
    /// and no member token: the masters' probes are known by their
    /// certificates.
    #[arg(long, conflicts_with_all = ["token", "token_file", "insecure"])]
    pki_dir: Option<std::path::PathBuf>,
    /// Speak plain HTTP (tokens and data in clear text): local experiments only.
    #[arg(long)]
    insecure: bool,
    /// The Docker daemon.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker_host: String,
    /// Network mode of each pod's first container, e.g. `container:<worker>`
    /// to share the worker container's network (local clusters). Default:
    /// Docker's bridge with host ports published.
    #[arg(long)]
    pod_network: Option<String>,
    /// Publish pods' host ports on this address only (e.g. the --host-ip of
    /// one of several workers sharing a machine); default: every address.
    #[arg(long)]
    publish_ip: Option<String>,
    /// The DNS servers pods resolve with (the masters' `--dns-listen`
    /// addresses, port 53), comma-separated; pods then find Services by
    /// name. Not applied to pods in another container's network namespace
    /// (`--pod-network container:...`), which use that container's resolver.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster domain, for pods' DNS search path.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Node labels, `key=value`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// cpu kept back from pods (e.g. `250m`).
    #[arg(long, default_value = "0")]
    reserved_cpu: String,
    /// memory kept back from pods (e.g. `256Mi`).
    #[arg(long, default_value = "0")]
    reserved_memory: String,
    /// First restart back-off (kubelet: 10 s).
    #[arg(long, default_value_t = 10_000)]
    backoff_initial_ms: u64,
    /// Restart back-off cap (kubelet: 5 min).
    #[arg(long, default_value_t = 300_000)]
    backoff_max_ms: u64,
    /// How often the reconcile loop runs when nothing wakes it.
    #[arg(long, default_value_t = 1_000)]
    sync_interval_ms: u64,
    /// Docker operations in flight at most.
    #[arg(long, default_value_t = 16)]
    max_parallel_ops: usize,
    /// How often container stats are sampled.
    #[arg(long, default_value_t = 10_000)]
    stats_interval_ms: u64,
    /// Re-register when no probe arrived for this long.
    #[arg(long, default_value_t = 30_000)]
    rejoin_after_ms: u64,
    /// Watch Azure Scheduled Events at this metadata service
    /// (http://169.254.169.254 on an Azure VM) and drain before an eviction.
    #[arg(long)]
    scheduled_events_url: Option<String>,
    /// This VM's name in Scheduled Events (default: --name).
    #[arg(long)]
    vm_name: Option<String>,
    /// The master running on this VM, if any: on an eviction notice it hands
    /// leadership over and exports the store.
    #[arg(long)]
    local_master: Option<String>,
    /// Keep pods from the metadata address (169.254.169.254) and the member
    /// ports (this worker's and the masters') with iptables rules: `on`
    /// refuses to start without them, `auto` warns, `off` installs none.
    #[arg(long, value_enum, default_value_t = PodIsolation::Auto)]
    pod_isolation: PodIsolation,
    /// The Docker bridge pods' traffic comes from.
    #[arg(long, default_value = "docker0")]
    pod_bridge: String,
    /// How long this node's containers may take to stop after an eviction
    /// notice before it is acknowledged, in milliseconds.
    #[arg(long, default_value_t = 20_000)]
    eviction_stop_budget_ms: u64,
}

/// This node's certificate (kept, or signed by a master for a key made
/// here), renewed in the background for as long as the worker runs.
async fn bootstrap(bootstrap: Bootstrap) -> anyhow::Result<rpc::LiveIdentity> {
    let (identity, not_after) = bootstrap
        .obtain()
        .await
        .context("obtaining this node's certificate")?;
    let live = rpc::LiveIdentity::new(identity).context("using this node's certificate")?;
    bootstrap.spawn_renewal(live.clone(), not_after);
    Ok(live)
}

/// `--pod-isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PodIsolation {
    /// Required: the worker does not start without the rules.
    On,
    /// Installed if possible; a warning if not.
    Auto,
    /// None.
    Off,
}

/// Puts `--pod-isolation` in place (see `worker::isolation`).
fn isolate_pods(args: &Args, listen_port: u16) -> anyhow::Result<()> {
    if args.pod_isolation == PodIsolation::Off {
        return Ok(());
    }
    if args
        .pod_network
        .as_deref()
        .is_some_and(|n| n.starts_with("container:"))
    {
        tracing::warn!(
            "pods share a container's network namespace (--pod-network container:...): no rule can keep them from its ports; pod isolation is not applied"
        );
        return Ok(());
    }
    let port = |a: &str| a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
    let mut member_ports: std::collections::BTreeSet<u16> =
        args.masters.iter().filter_map(|a| port(a)).collect();
    member_ports.extend(args.local_master.as_deref().and_then(port));
    member_ports.insert(listen_port);
    let isolation = worker::isolation::Isolation {
        bridge: args.pod_bridge.clone(),
        node: args.name.clone(),
        member_ports,
    };
    match worker::isolation::install(&isolation) {
        Ok(()) => {
            tracing::info!(bridge = %isolation.bridge, ports = ?isolation.member_ports, "pods are kept from the metadata address and the member ports");
            Ok(())
        }
        Err(e) if args.pod_isolation == PodIsolation::On => {
            Err(e).context("--pod-isolation on: isolating pods")
        }
        Err(e) => {
            tracing::warn!(error = %e, "pods are NOT kept from the metadata address and the member ports (--pod-isolation on makes this fatal)");
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkube-worker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !api::validation::is_dns1123_subdomain(&args.name) {
        bail!(
            "--name {:?} must be a DNS-1123 name (lowercase letters, digits, '-' and '.')",
            args.name
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let address = args.advertise.clone().unwrap_or_else(|| bound.to_string());
    let host_ip = args.host_ip.clone().unwrap_or_else(|| {
        address
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| address.clone())
    });
    let mut hosts = vec![args.name.clone(), host_ip.clone()];
    let advertised_host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_string();
    if !hosts.contains(&advertised_host) {
        hosts.push(advertised_host);
    }
    // The Key Vault, read once: TLS and the tokens (or, with --insecure,
    // the one cluster token).
    let vault = match &args.secrets {
        Some(spec) => Some(cloud::secrets::Secrets::new(
            spec,
            cloud::managed_identity(args.identity_client_id.clone())?,
            None,
        )?),
        None => None,
    };
    let mut vault_token = None;
    let security = match (&args.pki_dir, vault) {
        (Some(dir), _) => {
            let roots = rpc::Roots::from_file(&dir.join("ca.crt"))
                .context("loading the cluster CA from --pki-dir")?;
            let join = pki::read_tokens(&pki::token_path(dir, "join")?)
                .context("reading the join token from --pki-dir")?;
            let join = join.first().context("tokens/join in --pki-dir is empty")?;
            let live = bootstrap(Bootstrap {
                node: args.name.clone(),
                dir: dir.clone(),
                hosts: hosts.clone(),
                masters: args.masters.clone(),
                roots,
                join_token: join.clone(),
            })
            .await?;
            Some(
                Security::load_live(dir, &live, Kind::Worker)
                    .context("loading TLS and tokens from --pki-dir")?,
            )
        }
        (None, Some(secrets)) if args.insecure => {
            vault_token = Some(secrets.get("mkube-token").await?);
            None
        }
        (None, Some(secrets)) => {
            let roots = rpc::Roots::from_pem(secrets.get("mkube-ca-crt").await?.as_bytes())
                .context("reading the cluster CA from Key Vault")?;
            const ROLES: [&str; 1] = ["join"];
            let tokens = secrets.tokens(&ROLES).await?;
            let join = tokens
                .get("join")
                .and_then(|t| t.first())
                .context("the join token in Key Vault is empty")?;
            let live = bootstrap(Bootstrap {
                node: args.name.clone(),
                dir: args.cert_dir.clone(),
                hosts: hosts.clone(),
                masters: args.masters.clone(),
                roots: roots.clone(),
                join_token: join.clone(),
            })
            .await?;
            let security = Security::with_live(&roots, &live, Kind::Worker, &tokens, None)?;
            // Key Vault is read again every minute: rotation needs no restart.
            let secrets = Arc::new(secrets);
            security.spawn_refresh(Duration::from_secs(60), move || {
                let secrets = Arc::clone(&secrets);
                async move { secrets.tokens(&ROLES).await }
            });
            Some(security)
        }
        _ if args.insecure => None,
        _ => bail!(
            "TLS is required: give --pki-dir DIR (the cluster's ca.crt and tokens/join; the worker has its certificate signed by a master) or --secrets keyvault://NAME; --insecure speaks plain HTTP"
        ),
    };
    if security.is_none() {
        tracing::warn!("--insecure: plain HTTP; tokens and data cross the network in clear text");
    }
    let token = match (&args.token_file, vault_token) {
        (_, Some(token)) => Some(token),
        (Some(path), None) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => args.token.clone(),
    };
    let mut labels = BTreeMap::new();
    for kv in &args.labels {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--labels: {kv:?} is not key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let reserved = Resources {
        cpu_millis: parse_cpu_millis(&args.reserved_cpu)
            .map_err(|e| anyhow::anyhow!("--reserved-cpu: {e}"))?,
        memory_bytes: parse_memory_bytes(&args.reserved_memory)
            .map_err(|e| anyhow::anyhow!("--reserved-memory: {e}"))?,
    };
    let runtime = std::sync::Arc::new(DockerRuntime::connect(&args.docker_host).await?);
    isolate_pods(&args, bound.port())?;
    let config = AgentConfig {
        node: args.name.clone(),
        address,
        host_ip,
        labels,
        backoff: Backoff {
            initial_ms: args.backoff_initial_ms.max(1),
            max_ms: args.backoff_max_ms.max(args.backoff_initial_ms),
        },
        sync_interval: Duration::from_millis(args.sync_interval_ms.max(10)),
        max_parallel_ops: args.max_parallel_ops.max(1),
        pod_network: args.pod_network.clone(),
        publish_ip: args.publish_ip.clone(),
        reserved,
        stats_interval: Duration::from_millis(args.stats_interval_ms.max(100)),
        cluster_dns: args.cluster_dns.iter().map(ToString::to_string).collect(),
        cluster_domain: args.cluster_domain.clone(),
    };
    let config = WorkerConfig {
        agent: config,
        runtime,
        security,
        token,
        listener_limits: args.listener.clone(),
        masters: args.masters.clone(),
        rejoin_after: Duration::from_millis(args.rejoin_after_ms.max(100)),
        eviction: args
            .scheduled_events_url
            .clone()
            .map(|imds| EvictionSettings {
                imds,
                vm: args.vm_name.clone().unwrap_or_else(|| args.name.clone()),
                local_master: args.local_master.clone(),
                stop_budget: Duration::from_millis(args.eviction_stop_budget_ms),
            }),
    };
    tracing::info!(node = %args.name, listen = %bound, "worker started");
    // Printed for scripts and tests that bind port 0.
    println!("listening on {bound}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    worker::run::run(config, listener, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await?;
    Ok(())
}

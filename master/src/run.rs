//! One master, assembled: the kvs member, the registry over it, the server
//! of the Raft peer, `Kv` and `Master` services and the `/metrics` page on
//! one listener, the leader-only loops, and the DNS and Grafana servers
//! when they are asked for.
//!
//! [`run`] takes everything already resolved: secrets read, the export
//! store chosen, listeners bound. The binary (`src/main.rs`) parses flags
//! and does that I/O; tests call [`run`] in-process with a one-member
//! fleet and a memory export store.
//!
//! Invariants: on `shutdown` the leader loops and the side servers stop
//! first, then the member exports its state (leader or not: the newest
//! state wins when the fleet re-forms), then the listener closes; exports
//! are signed with the CA key whenever this master holds it, so a recovery
//! refuses any export that masters did not write.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use api::master::MasterServer;
use grafana_datasource::MetricsStore;
use kvs::api::{KvServer, RaftPeerServer};
use kvs::kv::Limits;
use kvs::node::{KvService, Node, NodeConfig, PeerService};
use kvs::snapshot_store::{SignedSnapshotStore, SnapshotStore};
use pki::member::{ListenerFlags, Security};
use tokio::net::TcpListener;

use crate::leader::{self, LeaderConfig};
use crate::metrics::MasterMetrics;
use crate::objects::ApiLimits;
use crate::service::MasterService;
use crate::store::Store;

/// Why a master could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store member could not be set up (a peer address, TLS).
    #[error("starting the store member: {0}")]
    Member(rpc::ConfigError),
    /// The TLS towards the other masters cannot be configured.
    #[error("configuring TLS towards the other masters: {0}")]
    Tls(rpc::TlsError),
    /// The server could not be configured (a token, a limit).
    #[error("configuring the server: {0}")]
    Server(rpc::ConfigError),
    /// The listener failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// The kvs member's settings.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// Length of a Raft tick.
    pub tick: Duration,
    /// Ticks without a leader before campaigning.
    pub election_ticks: u32,
    /// Request limits of the store.
    pub limits: Limits,
    /// Snapshot and compact the log after this many entries.
    pub snapshot_entries: u64,
    /// Time between the leader's exports.
    pub export_interval: Duration,
}

/// The DNS server of the cluster domain, bound.
pub struct Dns {
    /// The domain and TTL.
    pub zone_config: dns::ZoneConfig,
    /// The zone the server answers from, which [`crate::discovery`] keeps.
    pub zone: dns::ZoneHandle,
    /// The bound server.
    pub server: dns::DnsServer,
}

/// Everything a master runs with (see the module doc).
pub struct MasterConfig {
    /// This master's name; a key of `fleet`.
    pub name: String,
    /// Every master's name and address, this one's included.
    pub fleet: BTreeMap<String, String>,
    /// TLS and tokens; `None` serves plain HTTP.
    pub security: Option<Security>,
    /// The token sent and accepted when there is no `security`; `None`
    /// serves without authentication.
    pub token: Option<String>,
    /// The cluster CA, when this master signs workers' certificates and
    /// its exports.
    pub ca: Option<pki::Ca>,
    /// Where the member's exports go (signed here when `ca` is given).
    pub exports: Arc<dyn SnapshotStore>,
    /// The member's settings.
    pub member: MemberSettings,
    /// Where metrics are kept.
    pub metrics_store: Arc<dyn MetricsStore>,
    /// Connection limits of the listener.
    pub listener_limits: ListenerFlags,
    /// Limits of API objects.
    pub api_limits: ApiLimits,
    /// Validity of the certificates signed for workers.
    pub worker_cert_validity: Duration,
    /// The node whose worker runs on this machine (may call `prepare_eviction`).
    pub local_node: String,
    /// The leader loops' settings; their token and TLS are this master's own.
    pub leader: LeaderConfig,
    /// Peer revival through Azure, if configured.
    pub vms: Option<Arc<cloud::vms::Vms>>,
    /// The DNS server, if asked for.
    pub dns: Option<Dns>,
    /// The Grafana datasource API's listener, if asked for.
    pub grafana: Option<TcpListener>,
}

/// Runs a master on `listener` until `shutdown` (see the module doc).
pub async fn run(
    config: MasterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let MasterConfig {
        name,
        fleet,
        security,
        token,
        ca,
        exports,
        member,
        metrics_store,
        listener_limits,
        api_limits,
        worker_cert_validity,
        local_node,
        mut leader,
        vms,
        dns,
        grafana,
    } = config;
    let token = security.as_ref().map(|s| s.send.clone()).or(token);
    // Calls to other masters (Raft, metrics) check that a master answers;
    // calls to workers check for the node's own certificate instead.
    let client_tls = security
        .as_ref()
        .map(|s| s.client.expecting_group(pki::MASTERS))
        .transpose()
        .map_err(RunError::Tls)?;
    let exports: Arc<dyn SnapshotStore> = match &ca {
        Some(ca) => Arc::new(SignedSnapshotStore::new(exports, ca.key_pem().as_bytes())),
        None => {
            tracing::warn!(
                "no CA key: exports are not signed, and a recovery would trust a forged one"
            );
            exports
        }
    };
    let node = Node::start(NodeConfig {
        name: name.clone(),
        fleet: fleet.clone(),
        token: token.clone(),
        tls: client_tls.clone(),
        tick: member.tick,
        election_ticks: member.election_ticks,
        history_limit: 10_000,
        limits: member.limits,
        snapshot_entries: member.snapshot_entries,
        store: exports,
        export_interval: member.export_interval,
    })
    .map_err(RunError::Member)?;
    let registry = Store::new(Arc::new(KvService::local(node.clone())));
    let metrics = MasterMetrics::new(
        name.clone(),
        node.clone(),
        Arc::clone(&metrics_store),
        fleet.clone(),
    );
    let masters: Vec<String> = fleet.values().cloned().collect();
    let signer = ca.map(|ca| Arc::new(crate::authz::Signer::new(ca, worker_cert_validity)));
    let server = pki::member::server_builder(security.as_ref(), token.as_deref(), &listener_limits)
        .service(KvServer::new(KvService::new(node.clone())))
        .service(RaftPeerServer::new(PeerService::new(node.clone())))
        .service(MasterServer::new(
            MasterService::new(registry.clone(), masters, token.clone())
                .with_worker_tls(client_tls.clone())
                .with_metrics(Arc::clone(&metrics))
                .with_member(node.clone())
                .with_signer(signer)
                .with_access_rules(security.is_some().then(pki::member::master_rules))
                .with_local_node(Some(local_node))
                .with_limits(api_limits),
        ))
        .page("/metrics", {
            let metrics = Arc::clone(&metrics);
            Arc::new(move || {
                let metrics = Arc::clone(&metrics);
                Box::pin(async move {
                    Ok((
                        api::metrics::EXPOSITION_CONTENT_TYPE,
                        metrics.exposition().await.into(),
                    ))
                })
            })
        })
        .build()
        .map_err(RunError::Server)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    leader.token = token;
    leader.tls = client_tls;
    let loops = tokio::spawn(leader::run(
        node.clone(),
        registry.clone(),
        leader,
        Some(metrics),
        vms,
        stopped(),
    ));
    if let Some(dns) = dns {
        tokio::spawn(crate::discovery::follow(
            registry,
            dns.zone_config,
            dns.zone,
            stopped(),
        ));
        tokio::spawn(dns.server.serve(stopped()));
    }
    if let Some(listener) = grafana {
        let security = security.as_ref().map(|s| grafana_datasource::Security {
            tls: s.server.clone(),
            tokens: s.accepted.clone(),
        });
        let shutdown = stopped();
        tokio::spawn(async move {
            let served = match security {
                Some(security) => {
                    grafana_datasource::serve_secure(listener, metrics_store, security, shutdown)
                        .await
                }
                None => grafana_datasource::serve(listener, metrics_store, shutdown).await,
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "the grafana datasource stopped");
            }
        });
    }
    let served = server
        .serve(listener, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            match node.export_now().await {
                Ok(Some(meta)) => {
                    tracing::info!(epoch = %meta.epoch, index = meta.index, "exported before stopping");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "export before stopping failed"),
            }
        })
        .await;
    let _ = loops.await;
    served.map_err(RunError::Serve)
}

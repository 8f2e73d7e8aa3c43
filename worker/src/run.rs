//! One worker, assembled: the agent over its container runtime, the
//! `Worker` service and the `/metrics` page on one listener, registration
//! with the masters, and (on Azure Spot VMs) the watch for eviction notices.
//!
//! [`run`] takes everything already resolved: the node's certificate
//! obtained, tokens read, the runtime connected, pods isolated, the
//! listener bound. The binary (`src/main.rs`) parses flags and does that
//! I/O, then calls it.
//!
//! Invariant: on `shutdown` the loops stop and the listener closes, but the
//! pods keep running: a worker restart must not restart them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use api::worker::WorkerServer;
use pki::member::{ListenerFlags, Security};
use tokio::net::TcpListener;

use crate::agent::{Agent, AgentConfig};
use crate::eviction::{self, EvictionConfig};
use crate::register::{self, RegisterConfig};
use crate::runtime::{Runtime, RuntimeError};
use crate::service::WorkerService;

/// Why a worker could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The container runtime refused the agent's first look.
    #[error("starting the agent: {0}")]
    Agent(RuntimeError),
    /// The TLS towards the masters cannot be configured.
    #[error("configuring TLS towards the masters: {0}")]
    Tls(rpc::TlsError),
    /// The server could not be configured (a token, a limit).
    #[error("configuring the server: {0}")]
    Server(rpc::ConfigError),
    /// The listener failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Where Spot eviction notices come from, and what the worker does about them.
#[derive(Debug, Clone)]
pub struct EvictionSettings {
    /// The Scheduled Events endpoint of the instance metadata service.
    pub imds: String,
    /// This VM's name, as the events name it.
    pub vm: String,
    /// The master on this VM, told to hand over and export.
    pub local_master: Option<String>,
    /// How long the containers may take to stop before the notice is acknowledged.
    pub stop_budget: Duration,
}

/// Everything a worker runs with (see the module doc).
pub struct WorkerConfig {
    /// The agent's settings (the node's name, address and resources).
    pub agent: AgentConfig,
    /// The connected container runtime.
    pub runtime: Runtime,
    /// TLS and tokens; `None` serves plain HTTP.
    pub security: Option<Security>,
    /// The token sent and accepted when there is no `security`.
    pub token: Option<String>,
    /// Connection limits of the listener.
    pub listener_limits: ListenerFlags,
    /// The masters' addresses.
    pub masters: Vec<String>,
    /// Register again after this long without a probe.
    pub rejoin_after: Duration,
    /// Spot eviction notices, if this node gets them.
    pub eviction: Option<EvictionSettings>,
}

/// Runs a worker on `listener` until `shutdown` (see the module doc).
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let WorkerConfig {
        agent,
        runtime,
        security,
        token,
        listener_limits,
        masters,
        rejoin_after,
        eviction,
    } = config;
    let node = agent.node.clone();
    let token = security.as_ref().map(|s| s.send.clone()).or(token);
    // Calls to the masters check that a master answers, not any holder of
    // a certificate of the CA (another worker's) at a master's address.
    let client_tls = security
        .as_ref()
        .map(|s| s.client.expecting_group(pki::MASTERS))
        .transpose()
        .map_err(RunError::Tls)?;
    let agent = Agent::new(agent, runtime).await.map_err(RunError::Agent)?;
    let server = pki::member::server_builder(security.as_ref(), token.as_deref(), &listener_limits)
        .service(WorkerServer::new(WorkerService::new(agent.clone())))
        .page("/metrics", {
            let agent = agent.clone();
            Arc::new(move || {
                let text = api::metrics::exposition(&agent.figures());
                Box::pin(async move { Ok((api::metrics::EXPOSITION_CONTENT_TYPE, text.into())) })
            })
        })
        .build()
        .map_err(RunError::Server)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let loop_task = tokio::spawn({
        let agent = agent.clone();
        let done = stopped();
        async move { agent.run(done).await }
    });
    let eviction_task = eviction.map(|e| {
        tokio::spawn(eviction::run(
            agent.clone(),
            EvictionConfig {
                imds: e.imds,
                vm: e.vm,
                node: node.clone(),
                masters: masters.clone(),
                local_master: e.local_master,
                token: token.clone(),
                tls: client_tls.clone(),
                poll_interval: Duration::from_secs(1),
                stop_budget: e.stop_budget,
            },
            stopped(),
        ))
    });
    let register_task = tokio::spawn(register::run(
        agent.clone(),
        RegisterConfig {
            masters,
            token,
            tls: client_tls,
            rejoin_after,
        },
        stopped(),
    ));
    let served = server
        .serve(listener, async move {
            shutdown.await;
            // Pods keep running: a worker restart must not restart them.
            let _ = stop_tx.send(true);
        })
        .await;
    let _ = loop_task.await;
    let _ = register_task.await;
    if let Some(task) = eviction_task {
        let _ = task.await;
    }
    served.map_err(RunError::Serve)
}

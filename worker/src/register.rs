//! Registration: the worker announces itself to the masters (`Master.join`,
//! with its certificate) and announces itself again whenever no probe has
//! arrived for a while, in case the masters forgot it. It reports the
//! highest fence it has followed, so that a cluster re-formed from nothing
//! fences above it rather than being refused forever.
//!
//! Failing to reach any master changes nothing on the node: pods keep
//! running as they are ("fail-static"); only registration is retried, with
//! back-off.

use std::time::Duration;

use api::master::{JoinRequest, MasterClient};

use crate::agent::Agent;

/// Registration settings.
#[derive(Debug, Clone)]
pub struct RegisterConfig {
    /// Masters' RPC addresses (`host:port`); any one will do.
    pub masters: Vec<String>,
    /// The cluster token.
    pub token: Option<String>,
    /// TLS towards the masters; `None` speaks plain HTTP.
    pub tls: Option<rpc::ClientTls>,
    /// Re-announce when no probe arrived for this long.
    pub rejoin_after: Duration,
}

/// Registers until `shutdown`; never returns early.
pub async fn run(
    agent: Agent,
    config: RegisterConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    if config.masters.is_empty() {
        return shutdown.await;
    }
    let clients: Vec<(String, MasterClient)> = config
        .masters
        .iter()
        .filter_map(|addr| {
            let rpc_config = rpc::ClientConfig {
                token: config.token.clone(),
                tls: config.tls.clone(),
                default_timeout: Duration::from_secs(5),
                ..Default::default()
            };
            match rpc::Client::new(addr, rpc_config) {
                Ok(c) => Some((addr.clone(), MasterClient::new(c))),
                Err(e) => {
                    tracing::error!(master = %addr, error = %e, "ignoring a master address");
                    None
                }
            }
        })
        .collect();
    let mut retry = Duration::from_secs(1);
    loop {
        let node = agent.describe_node();
        let mut joined = false;
        for (addr, client) in &clients {
            let fence = agent.fence();
            let request = JoinRequest {
                node: node.clone(),
                fence: (fence != Default::default()).then_some(fence),
            };
            match client.join(&request).await {
                Ok(answer) => {
                    tracing::info!(master = %addr, node = %node.name, fence_epoch = ?answer.fence_epoch, followed = %fence, "registered with the masters");
                    joined = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(master = %addr, error = %e, "registration failed; pods keep running")
                }
            }
        }
        if joined {
            retry = Duration::from_secs(1);
            // Stay quiet while probes keep coming.
            loop {
                let before = agent.probes_received();
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(config.rejoin_after) => {}
                }
                if agent.probes_received() == before {
                    break;
                }
            }
        } else {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(Duration::from_secs(30));
        }
    }
}

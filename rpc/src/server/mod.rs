//! The RPC server: accepts connections and hands each request to the [`Router`].
//!
//! ```text
//! listener ──accept (≤ max_connections)──▶ hyper HTTP/1.1 connection ──▶ Router::handle
//!    ▲                                         (pipelined requests answered in order,
//! shutdown: stop accepting, let connections     responses written in batches: batched_io)
//! finish their in-flight call, abort after drain_timeout
//! ```
//!
//! Invariants: the number of open connections never exceeds
//! `max_connections` (accept waits for a free slot); after `shutdown`
//! resolves no new connection is accepted, every call already running either
//! completes and is answered or is failed by the connection closing, and
//! `serve` returns within `drain_timeout`.

mod batched_io;
mod router;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use batched_io::BatchedIo;

pub use router::{Auth, InProcess, Page, Router};

use crate::error::{ConfigError, check_token};
use crate::service::Service;

/// Default limit on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default limit on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time given to in-flight calls at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures a [`Server`].
pub struct ServerBuilder {
    auth: Auth,
    services: Vec<Arc<dyn Service>>,
    pages: HashMap<&'static str, Page>,
    max_body_bytes: usize,
    max_connections: usize,
    drain_timeout: Duration,
}

impl ServerBuilder {
    /// Mounts a service (a generated `FooServer`).
    pub fn service<S: Service>(mut self, service: S) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Serves `handler`'s answer to `GET path` (same authentication as the
    /// RPC methods): for pages such as Prometheus' `/metrics`.
    pub fn page(mut self, path: &'static str, handler: Page) -> Self {
        self.pages.insert(path, handler);
        self
    }

    /// Largest request body accepted; larger ones get `PayloadTooLarge`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Most connections open at once; further clients wait in the accept queue.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// How long shutdown waits for in-flight calls before closing their connections.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Checks the configuration and builds the server.
    pub fn build(self) -> Result<Server, ConfigError> {
        if let Auth::Bearer(tokens) = &self.auth {
            for (i, t) in tokens.iter().enumerate() {
                check_token(i, t)?;
            }
            if tokens.is_empty() {
                return Err(ConfigError::InvalidToken {
                    index: 0,
                    reason: "bearer auth needs at least one token",
                });
            }
        }
        let mut services = HashMap::new();
        for s in self.services {
            let name = s.name();
            if services.insert(name, s).is_some() {
                return Err(ConfigError::DuplicateService(name));
            }
        }
        Ok(Server {
            router: Arc::new(Router::new(
                services,
                self.pages,
                self.auth,
                self.max_body_bytes,
            )),
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout,
        })
    }
}

/// An RPC server: a [`Router`] plus the connection handling around it.
pub struct Server {
    router: Arc<Router>,
    max_connections: usize,
    drain_timeout: Duration,
}

impl Server {
    /// Starts configuring a server with the given authentication.
    pub fn builder(auth: Auth) -> ServerBuilder {
        ServerBuilder {
            auth,
            services: Vec::new(),
            pages: HashMap::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// The router, to call without a socket.
    pub fn router(&self) -> Arc<Router> {
        Arc::clone(&self.router)
    }

    /// Serves `listener` until `shutdown` resolves, then drains (see the module doc).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        if self.router.requires_auth() {
            tracing::info!(%addr, services = ?self.router.service_names(), "rpc server listening");
        } else {
            tracing::warn!(%addr, services = ?self.router.service_names(), "rpc server listening WITHOUT authentication: any caller can call any method");
        }
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let graceful = GracefulShutdown::new();
        // Responses are batched by `BatchedIo`, not by hyper's `pipeline_flush`
        // (see batched_io.rs for why).
        let http = http1::Builder::new();
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            let slot = tokio::select! {
                biased;
                () = &mut shutdown => break,
                slot = Arc::clone(&slots).acquire_owned() => slot,
            };
            let Ok(slot) = slot else { break };
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off briefly rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "set_nodelay failed");
            }
            let router = Arc::clone(&self.router);
            let service = service_fn(move |request| {
                let router = Arc::clone(&router);
                async move { Ok::<_, Infallible>(router.handle(request).await) }
            });
            let connection = graceful
                .watch(http.serve_connection(TokioIo::new(BatchedIo::new(stream)), service));
            connections.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(slot);
            });
        }
        drop(listener);
        tracing::info!(%addr, "rpc server shutting down");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!(%addr, "rpc server drained"),
            () = tokio::time::sleep(self.drain_timeout) => {
                tracing::warn!(%addr, timeout = ?self.drain_timeout, open = connections.len(), "drain timeout: closing the remaining connections");
            }
        }
        connections.shutdown().await;
        Ok(())
    }
}

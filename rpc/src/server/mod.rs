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

pub use router::{Access, Auth, InProcess, Page, Router, Tokens};

use crate::error::{ConfigError, check_token};
use crate::service::Service;
use crate::tls::{Peer, ServerTls};

/// Default limit on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default limit on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time given to in-flight calls at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures a [`Server`].
pub struct ServerBuilder {
    auth: Auth,
    services: Vec<Arc<dyn Service>>,
    pages: HashMap<&'static str, Page>,
    rules: Vec<(&'static str, Access)>,
    tls: Option<ServerTls>,
    max_body_bytes: usize,
    max_connections: usize,
    drain_timeout: Duration,
}

impl ServerBuilder {
    /// Serves TLS (see [`crate::tls`]); without it the server speaks plain
    /// HTTP and warns at start-up.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Requires `access` of calls whose path starts with `prefix`
    /// (`"/RaftPeer/"`, `"/Master/join"`); the longest matching prefix
    /// applies, and paths no rule matches take any valid token.
    pub fn restrict(mut self, prefix: &'static str, access: Access) -> Self {
        self.rules.push((prefix, access));
        self
    }

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
                self.rules,
                self.max_body_bytes,
            )),
            tls: self.tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config)),
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout,
        })
    }
}

/// An RPC server: a [`Router`] plus the connection handling around it.
pub struct Server {
    router: Arc<Router>,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
            rules: Vec::new(),
            tls: None,
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
        if self.tls.is_none() {
            tracing::warn!(%addr, "rpc server listening WITHOUT TLS: tokens and data cross the network in clear text");
        }
        if self.router.requires_auth() {
            tracing::info!(%addr, services = ?self.router.service_names(), "rpc server listening");
        } else {
            tracing::warn!(%addr, services = ?self.router.service_names(), "rpc server listening WITHOUT authentication: any caller can call any method");
        }
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let graceful = GracefulShutdown::new();
        // Responses are batched by `BatchedIo`, not by hyper's `pipeline_flush`
        // (see batched_io.rs for why).
        let http = Arc::new(http1::Builder::new());
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
            let http = Arc::clone(&http);
            let watcher = graceful.watcher();
            let tls = self.tls.clone();
            connections.spawn(async move {
                match tls {
                    None => serve_connection(&http, stream, None, router, watcher, peer).await,
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                                    return;
                                }
                                Err(_) => {
                                    tracing::info!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let client = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .and_then(|leaf| Peer::from_certificate(leaf));
                        serve_connection(&http, stream, client, router, watcher, peer).await;
                    }
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

/// Serves one connection's requests, each carrying the client's verified
/// certificate subject (if any) in its extensions.
async fn serve_connection<S>(
    http: &http1::Builder,
    stream: S,
    client: Option<Peer>,
    router: Arc<Router>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let router = Arc::clone(&router);
        if let Some(client) = &client {
            request.extensions_mut().insert(client.clone());
        }
        async move { Ok::<_, Infallible>(router.handle(request).await) }
    });
    let connection =
        watcher.watch(http.serve_connection(TokioIo::new(BatchedIo::new(stream)), service));
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

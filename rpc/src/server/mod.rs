//! The RPC server: accepts connections and hands each request to the [`Router`].
//!
//! The accept loop itself is `listener.rs` ([`serve_http`]), shared by
//! every listener of the project.
//!
//! ```text
//! listener ──accept──▶ admission (address share, TLS handshake ≤ 10 s,
//!    ▲                 member or client pool; see admission.rs)
//!    │                    ──▶ hyper HTTP/1.1 connection ──▶ Router::handle
//!    │                         (pipelined requests answered in order,
//!    │                          responses written in batches: batched_io)
//! shutdown: stop accepting, let connections finish their in-flight call,
//! abort after drain_timeout
//! ```
//!
//! Invariants: connections are admitted as `admission` says (clients per
//! address and in all, members in their own pool; over a limit, held
//! unread in a bounded tarpit for the header-read timeout and then reset),
//! so accepting never stops and no client can starve a member; a
//! connection that does not send a request's header within
//! `header_read_timeout` (counted from its start or from its previous
//! answer: it is also the idle timeout) is closed, and a body that does not
//! arrive within `body_read_timeout` is refused; after `shutdown` resolves
//! no new connection is accepted, every call already running either
//! completes and is answered or is failed by the connection closing, and
//! `serve` returns within `drain_timeout`.

mod admission;
mod batched_io;
mod caller;
mod listener;
mod router;
mod tarpit;

// Layout: `admission` (who gets a slot), `tarpit` (where refused ones wait),
// `listener` (the accept loop), `batched_io` (response batching), `router`
// (one request).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::net::TcpListener;

pub use admission::{
    ConnectionLimits, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_MEMBER_CONNECTIONS,
};

pub use caller::Caller;
pub use listener::{ListenerConfig, serve_http};
pub use router::{Access, Auth, InProcess, Page, Router, Tokens, rule_for};

use crate::error::{ConfigError, check_token};
use crate::service::Service;
use crate::tls::{Peer, ServerTls};

/// Default limit on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default time given to in-flight calls at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures a [`Server`].
pub struct ServerBuilder {
    auth: Auth,
    services: Vec<Arc<dyn Service>>,
    pages: HashMap<&'static str, Page>,
    rules: Vec<(&'static str, Access)>,
    bound: Vec<(String, String)>,
    tls: Option<ServerTls>,
    max_body_bytes: usize,
    limits: ConnectionLimits,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
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

    /// Accepts a token of `role` only from a caller whose client
    /// certificate is in `group`, on every path: a stolen `member` token is
    /// worthless without a masters' certificate.
    pub fn bind_role(mut self, role: &str, group: &str) -> Self {
        self.bound.push((role.to_owned(), group.to_owned()));
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

    /// Most client connections (without a cluster certificate) open at
    /// once; further ones are refused as they arrive (see admission.rs).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.limits.clients = connections.max(1);
        self
    }

    /// Most client connections from one address open at once.
    pub fn max_connections_per_ip(mut self, connections: usize) -> Self {
        self.limits.per_ip = connections.max(1);
        self
    }

    /// Most member connections (with a certificate of the cluster CA) open
    /// at once: a pool of their own, which clients cannot take.
    pub fn max_member_connections(mut self, connections: usize) -> Self {
        self.limits.members = connections.max(1);
        self
    }

    /// Time a client has to send a request's header, from the connection's
    /// start or from the previous answer (so also the keep-alive idle timeout).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Time a client has to send a request's body once its header arrived;
    /// later, the call fails with `DeadlineExceeded`.
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
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
        if matches!(self.auth, Auth::Certificates) && self.tls.is_none() {
            return Err(ConfigError::CertificatesWithoutTls);
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
                self.bound,
                self.max_body_bytes,
                self.body_read_timeout,
            )),
            tls: self.tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config)),
            limits: self.limits,
            header_read_timeout: self.header_read_timeout,
            drain_timeout: self.drain_timeout,
        })
    }
}

/// An RPC server: a [`Router`] plus the connection handling around it.
pub struct Server {
    router: Arc<Router>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
    header_read_timeout: Duration,
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
            bound: Vec::new(),
            tls: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            limits: ConnectionLimits::default(),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
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
        let config = ListenerConfig {
            tls: self.tls,
            limits: self.limits,
            header_read_timeout: self.header_read_timeout,
            drain_timeout: self.drain_timeout,
        };
        let router = self.router;
        serve_http(listener, config, shutdown, move |client: Option<Peer>| {
            let router = Arc::clone(&router);
            service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                let router = Arc::clone(&router);
                if let Some(client) = &client {
                    request.extensions_mut().insert(client.clone());
                }
                async move { Ok::<_, Infallible>(router.handle(request).await) }
            })
        })
        .await
    }
}

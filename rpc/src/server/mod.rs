//! The RPC server: accepts connections and hands each request to the [`Router`].
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
mod router;
mod tarpit;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use admission::{Admission, HANDSHAKE_TIMEOUT};
use batched_io::BatchedIo;

pub use admission::{
    ConnectionLimits, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_MEMBER_CONNECTIONS,
};

pub use router::{Access, Auth, InProcess, Page, Router, Tokens};

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

/// How [`serve_http`] admits and keeps connections.
#[derive(Clone)]
pub struct ListenerConfig {
    /// TLS; `None` serves plain HTTP (every connection is then a client).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Slots for clients, per address and for members (see admission.rs).
    pub limits: ConnectionLimits,
    /// Time to send a request's header (also the idle timeout).
    pub header_read_timeout: Duration,
    /// Time given to in-flight calls at shutdown.
    pub drain_timeout: Duration,
}

impl ListenerConfig {
    /// The defaults, with `tls`.
    pub fn new(tls: Option<&ServerTls>) -> ListenerConfig {
        ListenerConfig {
            tls: tls.map(|t| tokio_rustls::TlsAcceptor::from(Arc::clone(&t.config))),
            limits: ConnectionLimits::default(),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown`, as the module doc says:
/// every connection admitted by [`ConnectionLimits`], TLS-handshaken within
/// 10 s, held to the header-read timeout, and served by the service `make`
/// builds for its client's verified certificate (if any). Any listener of
/// the project (the RPC server, the Grafana datasource) goes through here.
pub async fn serve_http<F, S, B>(
    listener: TcpListener,
    config: ListenerConfig,
    shutdown: impl Future<Output = ()>,
    make: F,
) -> std::io::Result<()>
where
    F: Fn(Option<Peer>) -> S + Send + Sync + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = listener.local_addr()?;
    let make = Arc::new(make);
    let admission = Admission::new(config.limits);
    let graceful = GracefulShutdown::new();
    // Responses are batched by `BatchedIo`, not by hyper's `pipeline_flush`
    // (see batched_io.rs for why).
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let http = Arc::new(http);
    let mut refusals = RefusalLog::default();
    let mut tarpit = tarpit::Tarpit::new(config.header_read_timeout, config.limits.clients);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let due = tarpit.next_due();
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = sleep_until(due) => {
                tarpit.release(tokio::time::Instant::now());
                continue;
            }
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
        let pending = match admission.accept(peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                refusals.note(peer, refusal.as_str());
                // Held unread, then reset: closed at once, it would be
                // opened again at once (see tarpit.rs).
                tarpit.hold(stream, tokio::time::Instant::now());
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay failed");
        }
        let (http, make, watcher) = (Arc::clone(&http), Arc::clone(&make), graceful.watcher());
        let tls = config.tls.clone();
        let limits = config.limits;
        connections.spawn(async move {
            let Some(acceptor) = tls else {
                let mut stream = stream;
                let _ticket = match pending.client() {
                    Ok(ticket) => ticket,
                    Err(refusal) => return refuse(&mut stream, refusal, &limits, peer).await,
                };
                return serve_connection(&http, stream, make(None), watcher, peer).await;
            };
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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
            let ticket = match client {
                Some(_) => pending.member(),
                None => pending.client(),
            };
            let mut stream = stream;
            let _ticket = match ticket {
                Ok(ticket) => ticket,
                Err(refusal) => return refuse(&mut stream, refusal, &limits, peer).await,
            };
            serve_connection(&http, stream, make(client), watcher, peer).await;
        });
    }
    drop(listener);
    tracing::info!(%addr, "server shutting down");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(%addr, "server drained"),
        () = tokio::time::sleep(config.drain_timeout) => {
            tracing::warn!(%addr, timeout = ?config.drain_timeout, open = connections.len(), "drain timeout: closing the remaining connections");
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// Answers a connection that found its pool full with one
/// `ResourceExhausted` response naming the limit, then closes it: its
/// client learns why, not just that the connection ended.
async fn refuse<T>(
    stream: &mut T,
    refusal: admission::Refusal,
    limits: &ConnectionLimits,
    peer: std::net::SocketAddr,
) where
    T: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    tracing::debug!(%peer, refusal = refusal.as_str(), "connection refused");
    let (pool, size, flag) = match refusal {
        admission::Refusal::Members => ("member", limits.members, "--max-member-connections"),
        _ => ("client", limits.clients, "--max-connections"),
    };
    let status = crate::Status::new(
        crate::Code::ResourceExhausted,
        format!("the server's {pool} connections are all taken ({size}, {flag}); retry later"),
    );
    let body = status.to_json();
    let head = format!(
        "HTTP/1.1 {} Too Many Requests\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        crate::Code::ResourceExhausted.http_status(),
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// Sleeps until `due`, or for ever.
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Logs refused connections: the first of each burst at once, then a
/// count at most every ten seconds (a flood must not flood the log too).
#[derive(Default)]
struct RefusalLog {
    since: Option<std::time::Instant>,
    count: u64,
}

impl RefusalLog {
    fn note(&mut self, peer: std::net::SocketAddr, reason: &str) {
        self.count += 1;
        let due = self
            .since
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            tracing::warn!(%peer, reason, refused = self.count, "refusing connections");
            self.since = Some(std::time::Instant::now());
            self.count = 0;
        }
    }
}

/// Serves one connection's requests with `service`.
async fn serve_connection<T, S, B>(
    http: &http1::Builder,
    stream: T,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection =
        watcher.watch(http.serve_connection(TokioIo::new(BatchedIo::new(stream)), service));
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

//! The accept loop every listener of the project runs ([`serve_http`]):
//! admission (see admission.rs), the TLS handshake, hyper's HTTP/1.1
//! connection with the header-read timeout, refusals that say why, and
//! the tarpit for connections over their address's share.
//!
//! Invariants: accepting never waits for a slot; a refused connection is
//! answered (pool full) or held and reset (over its share), never served;
//! after `shutdown` resolves no connection is accepted and the loop returns
//! within `drain_timeout`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::admission::{self, Admission, ConnectionLimits, HANDSHAKE_TIMEOUT};
use super::batched_io::BatchedIo;
use super::tarpit;
use super::{DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT};
use crate::tls::{Peer, ServerTls};

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

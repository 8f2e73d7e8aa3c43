//! The HTTP client: a small pool of pipelining HTTP/1.1 connections to one server.
//!
//! Why pipelining: at high concurrency the cost of an RPC is system calls, not
//! JSON. A connection that carries one request at a time costs ~4 syscalls
//! per call; pipelining lets the writer put every queued request in one
//! `write` and the reader take many responses per `read` (measured
//! against tarpc by `scripts/bench rpc`). hyper's client does not pipeline, hence this module;
//! the server side stays hyper.
//!
//! What pipelining costs, and the answers here:
//! - hyper's server answers a connection's requests one after another, so a
//!   slow call holds up those behind it. A call is pipelined behind others
//!   only while the connection has fewer than `pipeline_depth` in flight;
//!   beyond that a new connection opens (up to `max_connections`), and
//!   [`CallOptions::long_poll`] calls get a connection of their own.
//! - When a connection drops mid-pipeline, which calls ran is unknown. Calls
//!   that certainly did not run (never written, or queued behind a
//!   `connection: close`) are sent again once on a fresh connection; the
//!   others fail with [`TransportError::ConnectionLost`], and a caller that
//!   retries them needs idempotency (request ids) at its own layer.
//!
//! Invariants: at most `max_connections` pipelined connections plus one per
//! outstanding long-poll; no call is sent twice unless the first attempt
//! certainly did not run.

mod conn;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::error::{ConfigError, Error, TransportError, check_token};
use crate::service::{BoxFuture, CallOptions, Method, Transport};
use crate::wire::{self, RequestHead};
use conn::{Conn, ConnParams, Failure, Queued};

/// A pooled connection unused for this long is closed rather than reused:
/// half the server's default idle timeout
/// ([`crate::server::DEFAULT_HEADER_READ_TIMEOUT`]), so a call never races
/// the server closing it.
pub const IDLE_CONNECTION: Duration = Duration::from_secs(15);

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The bearer token sent with every call.
    pub token: Option<String>,
    /// Deadline of calls that name none.
    pub default_timeout: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Most pipelined connections to the server.
    pub max_connections: usize,
    /// Calls in flight on a connection before another connection is opened.
    pub pipeline_depth: usize,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// TLS: verify the server against this CA (and present this client
    /// certificate). `None` speaks plain HTTP.
    pub tls: Option<crate::tls::ClientTls>,
    /// The name the server's certificate must carry when it is not the host
    /// dialled (a member reached at an address of another network; kubectl's
    /// `tls-server-name`).
    pub server_name: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            token: None,
            default_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_connections: 4,
            pipeline_depth: 32,
            max_response_bytes: 64 * 1024 * 1024,
            tls: None,
            server_name: None,
        }
    }
}

/// A client of one RPC server. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    head: RequestHead,
    params: ConnParams,
    config: ClientConfig,
    conns: Mutex<Vec<Arc<Conn>>>,
}

impl Client {
    /// A client of the server at `addr`: `host:port`, or `https://host:port`
    /// with [`ClientConfig::tls`], `http://host:port` without. With TLS the
    /// server's certificate must name `host`. Connections open lazily, on
    /// the first call.
    pub fn new(addr: &str, config: ClientConfig) -> Result<Client, ConfigError> {
        let host = parse_addr(addr, config.tls.is_some())?;
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let name = config.server_name.as_deref().unwrap_or(host_name(host));
                let name = ServerName::try_from(name.to_owned()).map_err(|_| {
                    ConfigError::InvalidAddress {
                        addr: addr.to_owned(),
                        reason: "the host is neither a DNS name nor an IP address a certificate can name",
                    }
                })?;
                Some((
                    tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&tls.config)),
                    name,
                ))
            }
        };
        if let Some(token) = &config.token {
            check_token(0, token)?;
        }
        Ok(Client {
            inner: Arc::new(Inner {
                head: RequestHead::new(host, config.token.as_deref()),
                params: ConnParams {
                    addr: host.to_owned(),
                    connect_timeout: config.connect_timeout,
                    max_response_bytes: config.max_response_bytes,
                    tls,
                },
                config,
                conns: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.inner.params.addr
    }

    /// Open connections (pipelined and long-poll).
    pub fn connections(&self) -> usize {
        self.lock_conns().iter().filter(|c| !c.is_closed()).count()
    }

    fn lock_conns(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.inner
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Chooses the connection for one call and counts the call against it.
    fn pick(&self, long_poll: bool) -> Lease {
        let config = &self.inner.config;
        let mut conns = self.lock_conns();
        conns.retain(|c| !c.is_closed() && !c.idle_longer_than(IDLE_CONNECTION));
        let open = |conns: &mut Vec<Arc<Conn>>| {
            let c = Conn::open(self.inner.params.clone());
            conns.push(Arc::clone(&c));
            c
        };
        let conn = if long_poll {
            let idle = conns
                .iter()
                .find(|c| !c.is_reserved() && c.in_flight() == 0)
                .cloned();
            idle.unwrap_or_else(|| open(&mut conns))
        } else {
            let pipelined = conns.iter().filter(|c| !c.is_reserved());
            let count = pipelined.clone().count();
            match pipelined.min_by_key(|c| c.in_flight()) {
                Some(c)
                    if c.in_flight() < config.pipeline_depth || count >= config.max_connections =>
                {
                    Arc::clone(c)
                }
                _ => open(&mut conns),
            }
        };
        conn.acquire(long_poll);
        Lease {
            conn,
            reserved: long_poll,
        }
    }

    /// Sends one encoded request, once more if the first attempt certainly did not run.
    async fn send(self, request: Bytes, long_poll: bool) -> Result<Bytes, Error> {
        let mut attempts_left = 2;
        loop {
            attempts_left -= 1;
            let lease = self.pick(long_poll);
            match self.attempt(lease, request.clone()).await {
                Err(Failure::NotSent) if attempts_left > 0 => continue,
                result => return self.outcome(result),
            }
        }
    }

    /// One attempt on `lease`'s connection.
    async fn attempt(&self, lease: Lease, request: Bytes) -> Result<wire::Response, Failure> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = Queued { request, reply };
        if lease.conn.send(queued).is_err() {
            // The connection ended before it took the request; if it never
            // connected, that is the answer (nothing ran), else try again.
            return Err(match lease.conn.failure() {
                Some(f @ Failure::Connect(_)) => f,
                _ => Failure::NotSent,
            });
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(Failure::Lost("the connection task ended".into())),
        }
    }

    /// The caller's result of an attempt.
    fn outcome(&self, result: Result<wire::Response, Failure>) -> Result<Bytes, Error> {
        let addr = &self.inner.params.addr;
        let error = match result {
            Ok(response) => return wire::into_result(response.status, response.body),
            Err(Failure::NotSent) => TransportError::ConnectionLost {
                addr: addr.clone(),
                reason: "the connection closed before the request was sent".into(),
            },
            Err(Failure::Connect(source)) => TransportError::Connect {
                addr: addr.clone(),
                source,
            },
            Err(Failure::Lost(reason)) => TransportError::ConnectionLost {
                addr: addr.clone(),
                reason,
            },
            Err(Failure::Protocol(reason)) => TransportError::Protocol {
                addr: addr.clone(),
                reason,
            },
        };
        Err(Error::Transport(error))
    }
}

impl Transport for Client {
    fn call(
        &self,
        method: &'static Method,
        body: Bytes,
        options: &CallOptions,
    ) -> BoxFuture<'static, Result<Bytes, Error>> {
        let request = self.inner.head.encode(method.path, options.timeout, &body);
        Box::pin(self.clone().send(request, options.long_poll))
    }

    fn default_timeout(&self) -> Duration {
        self.inner.config.default_timeout
    }
}

/// One call's claim on a connection, released on drop (also when the caller
/// gives up at its deadline).
struct Lease {
    conn: Arc<Conn>,
    reserved: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.release(self.reserved);
    }
}

/// `host:port`, `http://host:port[/]` or `https://host:port[/]` → `host:port`;
/// the scheme, when given, must agree with whether TLS is configured.
fn parse_addr(addr: &str, tls: bool) -> Result<&str, ConfigError> {
    let invalid = |reason| ConfigError::InvalidAddress {
        addr: addr.to_owned(),
        reason,
    };
    let host = if let Some(rest) = addr.strip_prefix("https://") {
        if !tls {
            return Err(invalid(
                "an https:// address needs TLS settings (the cluster CA); give the CA or use http://",
            ));
        }
        rest
    } else if let Some(rest) = addr.strip_prefix("http://") {
        if tls {
            return Err(invalid(
                "an http:// address is plain text but TLS is configured; use https://",
            ));
        }
        rest
    } else {
        addr
    }
    .trim_end_matches('/');
    if host.contains('/') {
        return Err(invalid("a server address has no path"));
    }
    let Some((name, port)) = host.rsplit_once(':') else {
        return Err(invalid("expected host:port"));
    };
    if name.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid("expected host:port with a port from 1 to 65535"));
    }
    if !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("only visible ASCII characters are allowed"));
    }
    Ok(host)
}

/// `host:port` → `host`, without the brackets of an IPv6 address.
fn host_name(host: &str) -> &str {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that reaches a connection after it failed to connect (the
    /// connect lost a race with the caller, seen under load in CI) is a
    /// connect error, not a lost connection: the call certainly did not run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_that_finds_its_connection_already_refused_is_a_connect_error() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("addr").to_string();
        let client = Client::new(&addr, ClientConfig::default()).expect("client");
        // The pool's connection, left to fail before the call is queued.
        let conn = Conn::open(client.inner.params.clone());
        client.lock_conns().push(Arc::clone(&conn));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !conn.is_closed() {
            assert!(std::time::Instant::now() < deadline, "never closed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lease = Lease {
            conn: Arc::clone(&conn),
            reserved: false,
        };
        let attempt = client.attempt(lease, Bytes::from_static(b"x")).await;
        let err = client.outcome(attempt).expect_err("nobody listens");
        assert!(
            matches!(err, Error::Transport(TransportError::Connect { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_addr("127.0.0.1:7000", false).unwrap(),
            "127.0.0.1:7000"
        );
        assert_eq!(parse_addr("http://m1:7000/", false).unwrap(), "m1:7000");
        assert_eq!(parse_addr("https://m1:7000/", true).unwrap(), "m1:7000");
        assert_eq!(parse_addr("[::1]:7000", true).unwrap(), "[::1]:7000");
        assert_eq!(host_name("[::1]:7000"), "::1");
        assert_eq!(host_name("m1:7000"), "m1");
        for (bad, tls) in [
            ("m1", false),
            ("m1:port", false),
            (":80", false),
            ("http://m1:80/x", false),
            ("https://m1:443", false),
            ("http://m1:443", true),
            ("m 1:80", false),
        ] {
            assert!(parse_addr(bad, tls).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tokens_must_be_header_safe() {
        let config = |t: &str| ClientConfig {
            token: Some(t.into()),
            ..Default::default()
        };
        assert!(Client::new("h:1", config("abc\r\nx: y")).is_err());
        assert!(Client::new("h:1", config("")).is_err());
        assert!(Client::new("h:1", config("abc")).is_ok());
    }
}

//! The DNS server: hickory-server's UDP and TCP transports (which parse
//! requests, answer malformed ones with FORMERR and truncate UDP answers to
//! the client's buffer), with a handler that answers from the current
//! [`Zone`].
//!
//! Invariants: a request never waits on the store: the zone is swapped in
//! whole by whoever follows the Endpoints ([`ZoneHandle::set`]), and a
//! request reads the zone current when it arrives. Names outside the zone
//! go to the [`Forwarder`] when there is one and the client asked for
//! recursion, else they are REFUSED. Anything but a single IN-class QUERY
//! gets an error code (NOTIMP, FORMERR, REFUSED, BADVERS), never a crash
//! or silence.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::DNSClass;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

use crate::forward::Forwarder;
use crate::zone::Zone;

/// Idle TCP connections are closed after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of responses buffered per TCP connection.
const TCP_BUFFER: usize = 64;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The address could not be bound.
    #[error("cannot listen for DNS on {addr} ({transport}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        transport: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// The zone the server answers from, shared with whoever updates it.
#[derive(Debug, Clone)]
pub struct ZoneHandle(Arc<RwLock<Arc<Zone>>>);

impl ZoneHandle {
    /// A handle holding `zone`.
    pub fn new(zone: Zone) -> Self {
        ZoneHandle(Arc::new(RwLock::new(Arc::new(zone))))
    }

    /// Replaces the zone; requests from now on see the new one.
    pub fn set(&self, zone: Zone) {
        let zone = Arc::new(zone);
        match self.0.write() {
            Ok(mut z) => *z = zone,
            Err(poisoned) => *poisoned.into_inner() = zone,
        }
    }

    /// The current zone.
    pub fn get(&self) -> Arc<Zone> {
        match self.0.read() {
            Ok(z) => z.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

struct Handler {
    zone: ZoneHandle,
    rotation: AtomicUsize,
    forward: Option<Forwarder>,
}

fn header(metadata: Metadata) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = false;
        let refuse = |code| {
            let mut m = Metadata::response_from_request(&request.metadata);
            m.recursion_available = false;
            m.response_code = code;
            m
        };
        let outcome = if request.metadata.op_code != OpCode::Query {
            Err(refuse(ResponseCode::NotImp))
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Err(refuse(ResponseCode::BADVERS))
        } else {
            match request.request_info() {
                Err(_) => Err(refuse(ResponseCode::FormErr)),
                Ok(info) if !matches!(info.query.query_class(), DNSClass::IN | DNSClass::ANY) => {
                    Err(refuse(ResponseCode::Refused))
                }
                Ok(info) => Ok(info),
            }
        };
        let sent = match outcome {
            Err(m) => response.send_response(builder.build_no_records(m)).await,
            Ok(info) => {
                let zone = self.zone.get();
                let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
                let answer = zone.answer(info.query.name(), info.query.query_type(), rotation);
                match &self.forward {
                    Some(forward)
                        if answer.code == ResponseCode::Refused
                            && request.metadata.recursion_desired =>
                    {
                        let forwarded = forward
                            .answer(info.query.name().into(), info.query.query_type())
                            .await;
                        metadata.recursion_available = true;
                        metadata.authoritative = false;
                        metadata.response_code = forwarded.code;
                        let message = builder.build(
                            metadata,
                            forwarded.answers.iter(),
                            forwarded.authority.iter(),
                            std::iter::empty(),
                            std::iter::empty(),
                        );
                        response.send_response(message).await
                    }
                    _ => {
                        metadata.authoritative = answer.authoritative;
                        metadata.response_code = answer.code;
                        let message = builder.build(
                            metadata,
                            answer.answers,
                            answer.authority,
                            std::iter::empty(),
                            answer.additionals,
                        );
                        response.send_response(message).await
                    }
                }
            }
        };
        match sent {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "a DNS response could not be sent");
                header(refuse(ResponseCode::ServFail))
            }
        }
    }
}

/// A running DNS server.
pub struct DnsServer {
    server: Server<Handler>,
    addr: SocketAddr,
}

impl DnsServer {
    /// Listens on `addr` over UDP and TCP (the same port; with port 0, the
    /// port UDP got), answering from `zone` and forwarding other names to
    /// `forward`, if given.
    pub async fn bind(
        addr: SocketAddr,
        zone: ZoneHandle,
        forward: Option<Forwarder>,
    ) -> Result<DnsServer, DnsError> {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                addr,
                transport: "udp",
                source,
            })?;
        let bound = udp.local_addr().map_err(|source| DnsError::Bind {
            addr,
            transport: "udp",
            source,
        })?;
        let tcp = TcpListener::bind(bound)
            .await
            .map_err(|source| DnsError::Bind {
                addr: bound,
                transport: "tcp",
                source,
            })?;
        let mut server = Server::new(Handler {
            zone,
            rotation: AtomicUsize::new(0),
            forward,
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, TCP_BUFFER);
        Ok(DnsServer {
            server,
            addr: bound,
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops gracefully.
    pub async fn serve(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::select! {
            r = self.server.block_until_done() => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "the DNS server stopped");
                }
            }
            _ = shutdown => {
                if let Err(e) = self.server.shutdown_gracefully().await {
                    tracing::debug!(error = %e, "the DNS server's shutdown");
                }
            }
        }
    }
}

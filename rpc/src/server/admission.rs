//! Who gets a connection: slots per client address, a pool for clients and
//! a pool reserved for members.
//!
//! ```text
//! accept ─▶ address share? ─no─▶ close
//!              │yes (counts while unidentified)
//!              ▼
//!           TLS handshake ─▶ certificate of the cluster CA? ─yes─▶ member slot? ─no─▶ close
//!                                      │no                 (address share released)
//!                                      ▼
//!                                client slot? ─no─▶ close
//! ```
//!
//! Invariants: connections without a cluster certificate (users, tools,
//! strangers) from one address never hold more than `per_ip` slots, and all
//! of them together never more than `clients`; members (Raft, probes,
//! workers' calls) draw from their own `members` pool, so no number of
//! clients can starve them. A connection over its address's share is
//! handed to the tarpit (held unread, then reset: see tarpit.rs); one that
//! finds a pool full after its handshake is closed at once (waiting for a
//! slot would hold its file descriptor anyway).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default limit on client connections (without a cluster certificate).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default limit on client connections from one address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Default limit on member connections (with a cluster certificate).
pub const DEFAULT_MAX_MEMBER_CONNECTIONS: usize = 1024;
/// Default time a client has to send a request's header, and longest idle
/// time between two requests on a connection.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a client has to send a request's body once its header arrived.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection limits of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Client connections at once (unidentified ones included).
    pub clients: usize,
    /// Client connections from one address at once.
    pub per_ip: usize,
    /// Member connections at once.
    pub members: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            clients: DEFAULT_MAX_CONNECTIONS,
            per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            members: DEFAULT_MAX_MEMBER_CONNECTIONS,
        }
    }
}

/// The slots of one server.
pub(crate) struct Admission {
    per_ip_limit: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Connections still in their TLS handshake.
    pending: Arc<Semaphore>,
    clients: Arc<Semaphore>,
    members: Arc<Semaphore>,
}

/// A connection accepted but not yet identified: it holds its address's
/// share and a handshake slot.
pub(crate) struct Pending {
    share: Share,
    _slot: OwnedSemaphorePermit,
}

/// A connection's place once identified. Dropping it frees what it holds.
pub(crate) struct Ticket {
    /// Clients keep counting against their address.
    _share: Option<Share>,
    _slot: OwnedSemaphorePermit,
}

/// One unit of an address's share.
struct Share {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut map = self
            .admission
            .per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address holds its share already.
    AddressShare,
    /// Too many connections are in their TLS handshake.
    Handshakes,
    /// The client pool is full.
    Clients,
    /// The member pool is full.
    Members,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::AddressShare => "its address holds its share of connections",
            Refusal::Handshakes => "too many connections are in their TLS handshake",
            Refusal::Clients => "the client connection pool is full",
            Refusal::Members => "the member connection pool is full",
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: ConnectionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            per_ip_limit: limits.per_ip.max(1),
            per_ip: Mutex::new(HashMap::new()),
            pending: Arc::new(Semaphore::new(limits.clients.max(1))),
            clients: Arc::new(Semaphore::new(limits.clients.max(1))),
            members: Arc::new(Semaphore::new(limits.members.max(1))),
        })
    }

    /// A freshly accepted connection from `ip`.
    pub(crate) fn accept(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, Refusal> {
        {
            let mut map = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let n = map.entry(ip).or_insert(0);
            if *n >= self.per_ip_limit {
                return Err(Refusal::AddressShare);
            }
            *n += 1;
        }
        let share = Share {
            admission: Arc::clone(self),
            ip,
        };
        let slot = Arc::clone(&self.pending)
            .try_acquire_owned()
            .map_err(|_| Refusal::Handshakes)?;
        Ok(Pending { share, _slot: slot })
    }
}

impl Pending {
    /// It showed no cluster certificate: a client slot, still counted
    /// against its address.
    pub(crate) fn client(self) -> Result<Ticket, Refusal> {
        let slot = Arc::clone(&self.share.admission.clients)
            .try_acquire_owned()
            .map_err(|_| Refusal::Clients)?;
        Ok(Ticket {
            _share: Some(self.share),
            _slot: slot,
        })
    }

    /// It showed a certificate of the cluster CA: a member slot; its
    /// address share is released.
    pub(crate) fn member(self) -> Result<Ticket, Refusal> {
        let slot = Arc::clone(&self.share.admission.members)
            .try_acquire_owned()
            .map_err(|_| Refusal::Members)?;
        Ok(Ticket {
            _share: None,
            _slot: slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn limits(clients: usize, per_ip: usize, members: usize) -> ConnectionLimits {
        ConnectionLimits {
            clients,
            per_ip,
            members,
        }
    }

    #[test]
    fn an_address_gets_its_share_and_gets_it_back() {
        let a = Admission::new(limits(10, 2, 1));
        let t1 = a.accept(ip(2)).expect("first").client().expect("slot");
        let _t2 = a.accept(ip(2)).expect("second");
        assert_eq!(a.accept(ip(2)).err(), Some(Refusal::AddressShare));
        assert!(a.accept(ip(3)).is_ok(), "another address");
        drop(t1);
        assert!(a.accept(ip(2)).is_ok(), "the share came back");
    }

    #[test]
    fn a_full_client_pool_leaves_the_member_pool_alone() {
        let a = Admission::new(limits(2, 10, 1));
        let _c1 = a.accept(ip(2)).expect("c1").client().expect("slot 1");
        let _c2 = a.accept(ip(3)).expect("c2").client().expect("slot 2");
        let third = a.accept(ip(4)).expect("a handshake slot");
        assert_eq!(third.client().err(), Some(Refusal::Clients));
        let m = a.accept(ip(5)).expect("m").member().expect("a member slot");
        assert_eq!(
            a.accept(ip(5)).expect("m2").member().err(),
            Some(Refusal::Members)
        );
        drop(m);
        assert!(a.accept(ip(5)).expect("m3").member().is_ok());
    }

    #[test]
    fn members_do_not_count_against_their_address() {
        let a = Admission::new(limits(10, 1, 10));
        let _m1 = a.accept(ip(2)).expect("m1").member().expect("member");
        let _m2 = a.accept(ip(2)).expect("m2").member().expect("member");
        let _c = a.accept(ip(2)).expect("c").client().expect("client");
        assert_eq!(a.accept(ip(2)).err(), Some(Refusal::AddressShare));
    }
}

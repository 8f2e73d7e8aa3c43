//! The masters' DNS server: Services found by name.
//!
//! Every master runs one. It answers for the cluster domain only, from the
//! Endpoints the leader's endpoints controller writes: `NAME.NAMESPACE.svc.<domain>`
//! gives the addresses of the nodes where the Service's ready pods answer
//! (A/AAAA), and `_PORT._PROTO.NAME.NAMESPACE.svc.<domain>` their host
//! ports (SRV), since pods have no addresses of their own.
//!
//! # Layout
//!
//! - [`zone`]: the records, built from Endpoints, and the answer to one
//!   question (pure).
//! - [`server`]: UDP and TCP transports (hickory-server) answering from
//!   the current zone.
//! - [`forward`]: other names, forwarded to upstream resolvers
//!   (hickory-resolver), for pods whose resolver is the masters.

pub mod forward;
pub mod server;
pub mod zone;

pub use forward::{ForwardError, Forwarded, Forwarder, Upstream};
pub use server::{DnsError, DnsServer, ZoneHandle};
pub use zone::{Answer, Zone, ZoneConfig, ZoneError};

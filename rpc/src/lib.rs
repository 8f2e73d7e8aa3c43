//! mkube's RPC runtime: JSON over HTTP/1.1, one endpoint per method.
//!
//! A trait marked [`service`] becomes a server adapter (`FooServer`) that a
//! [`Server`] mounts next to other services on one listener, and a typed
//! client (`FooClient`) that sends through any [`Transport`]: a [`Client`]
//! over real sockets, or an [`InProcess`] router in unit tests.
//!
//! ```text
//!  FooClient ──JSON──▶ Transport ─┬─ Client ══ pipelined HTTP/1.1 ══▶ Server ─┐
//!                                 └─ InProcess ─────────────────────▶ Router ◀┘
//!                                                 auth · route · limit · deadline
//!                                                          │
//!                                                 FooServer ──▶ impl Foo
//! ```
//!
//! # Wire format
//!
//! `POST /<Service>/<method>` with a JSON body, over TLS 1.3 ([`tls`]) or,
//! where a deployment says `--insecure`, plain TCP; `authorization: Bearer
//! <token>`; `rpc-timeout-ms: <remaining milliseconds>` when the caller has a
//! deadline. Success is `200` with the JSON response. Failure is one envelope,
//! `{"code": "NotFound", "message": "..."}`, with the HTTP status that
//! [`Code::http_status`] maps it to.
//!
//! # Layout
//!
//! - [`status`]: the error envelope ([`Status`], [`Code`]) and its one HTTP mapping.
//! - [`error`]: the client-side [`Error`], separating the server's answers from
//!   transport failures.
//! - [`service`]: the contracts between generated code and the runtime
//!   ([`Service`], [`Transport`], [`Method`], [`CallOptions`]).
//! - [`server`]: [`Server`] (listener, connections, graceful shutdown),
//!   [`server::serve_http`] (the one accept loop of every listener: who is
//!   admitted, timeouts, a tarpit for connections over their share),
//!   [`Router`] (everything that happens to one request) and [`Caller`]
//!   (who called: the token's role and the certificate's subject, for
//!   handlers whose answer depends on it).
//! - [`client`]: [`Client`], a pool of pipelining HTTP/1.1 connections.
//! - [`tls`]: rustls settings of both sides ([`ServerTls`], [`ClientTls`],
//!   an identity renewed in place: [`LiveIdentity`]) and the verified
//!   client certificate's subject ([`Peer`]), which [`Access`] rules check
//!   beside the token's role ([`Tokens`]).
//! - `wire`: request and response framing shared by both sides.

pub mod client;
pub mod error;
pub mod server;
pub mod service;
pub mod status;
pub mod strict;
pub mod tls;
mod wire;

#[doc(hidden)]
pub mod __private;

pub use client::{Client, ClientConfig};
pub use error::{ConfigError, Error, TransportError};
pub use rpc_macros::service;
pub use server::{Access, Auth, Caller, InProcess, Page, Router, Server, ServerBuilder, Tokens};
pub use service::{CallOptions, Method, Service, Transport};
pub use status::{Code, Status};
pub use tls::{ClientTls, Identity, LiveIdentity, Peer, Roots, ServerTls, TlsError};

//! The contracts between `#[rpc::service]`-generated code and the runtime.
//!
//! A generated `FooServer` implements [`Service`]; a generated `FooClient`
//! sends through a [`Transport`]. Both name a method by its [`Method`]
//! descriptor, a `'static` value the macro emits.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::error::Error;
use crate::status::Status;

/// Identifies one RPC method: its service, its name and its HTTP path
/// (`/<service>/<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method {
    /// The service (trait) name, e.g. `Kv`.
    pub service: &'static str,
    /// The method name, e.g. `range`.
    pub name: &'static str,
    /// `/<service>/<name>`.
    pub path: &'static str,
}

/// A boxed, sendable future, as stored by routers and transports.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a server adapter returns for one call: the encoded response or a status.
pub type CallFuture = BoxFuture<'static, Result<Bytes, Status>>;

/// A mounted service: the server side of a `#[rpc::service]` trait.
///
/// Implementations (generated) must:
/// - return the same `name` and `methods` every time;
/// - return `None` from `call` exactly for names not in `methods`;
/// - decode the body themselves and answer `InvalidArgument` when it does not
///   decode; everything else (auth, limits, deadlines) is the router's job.
pub trait Service: Send + Sync + 'static {
    /// The service name: the first path segment.
    fn name(&self) -> &'static str;
    /// The method names: the second path segment.
    fn methods(&self) -> &'static [&'static str];
    /// Starts one call of `method` with the JSON `body`.
    fn call(&self, method: &str, body: Bytes) -> Option<CallFuture>;
}

/// Per-call settings carried by a generated client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// The call's deadline, as time from the start of the call; `None` uses
    /// the transport's default. Sent to the server as remaining time.
    pub timeout: Option<Duration>,
    /// The call may wait a long time on the server (a long-poll): the HTTP
    /// client gives it a connection of its own so that no other call is
    /// pipelined behind it.
    pub long_poll: bool,
}

/// Carries encoded calls to a server.
///
/// Implementations must:
/// - send `body` to `method` and resolve to the response body on success or
///   the server's [`Status`] as [`Error::Status`];
/// - send `options.timeout` to the server as the remaining time (the caller
///   enforces it locally too);
/// - never run a call twice unless it certainly did not run the first time.
pub trait Transport: Send + Sync + 'static {
    /// Sends one call.
    fn call(
        &self,
        method: &'static Method,
        body: Bytes,
        options: &CallOptions,
    ) -> BoxFuture<'static, Result<Bytes, Error>>;

    /// The deadline for calls whose options name none.
    fn default_timeout(&self) -> Duration;
}

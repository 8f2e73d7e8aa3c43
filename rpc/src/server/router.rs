//! Everything that happens to one request, without a socket.
//!
//! ```text
//! request ─▶ POST? ─▶ /Service/method? ─▶ token ─▶ known method? ─▶ timeout header
//!         ─▶ content-length ≤ limit ─▶ read body (limited) ─▶ handler under deadline
//!         ─▶ 200 JSON | error envelope
//!         ╰▶ GET of a mounted page (e.g. `/metrics`) ─▶ token ─▶ page handler
//! ```
//!
//! Invariants: a handler never runs for a request that fails any earlier
//! step; a body over the limit is refused from its `content-length` before any
//! of it is read, and a body without one is read only up to the limit; a
//! handler past its deadline is dropped (cancelled), never left running; a
//! panicking handler becomes an `Internal` status, not a dropped connection.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::error::Error;

/// The error type `Limited` bodies report.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
use crate::service::{BoxFuture, CallOptions, Method, Service, Transport};
use crate::status::{Code, Status};
use crate::wire;

/// Who may call.
#[derive(Clone)]
pub enum Auth {
    /// Every call must carry `authorization: Bearer <t>` for one of these
    /// tokens (several, so a token can be rotated without downtime); any of
    /// them may call any method.
    Bearer(Vec<String>),
    /// Every call must carry one of these tokens, and the token's role must be
    /// one its method accepts (see [`ServerBuilder::restrict`](crate::ServerBuilder::restrict)).
    Tokens(Tokens),
    /// No authentication: for local demos only; the server warns at start-up.
    None,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(tokens) => write!(f, "Bearer({} tokens)", tokens.len()),
            Auth::Tokens(tokens) => write!(f, "Tokens({} tokens)", tokens.len()),
            Auth::None => f.write_str("None"),
        }
    }
}

/// The tokens a server accepts right now, each with its role (`member`,
/// `join`, `user`, ...). Clones share one set, so whoever holds a clone can
/// [`replace`](Tokens::replace) it while the server runs: rotation is
/// "accept old and new", move every client to the new one, "accept new".
#[derive(Clone, Default)]
pub struct Tokens {
    set: Arc<RwLock<Vec<(String, String)>>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens, hidden)", self.len())
    }
}

impl Tokens {
    /// A set of `(role, token)` pairs.
    pub fn new(tokens: Vec<(String, String)>) -> Result<Tokens, crate::ConfigError> {
        let t = Tokens::default();
        t.replace(tokens)?;
        Ok(t)
    }

    /// Replaces the whole set; refused (and the old set kept) if a token
    /// cannot travel in a header or the set is empty.
    pub fn replace(&self, tokens: Vec<(String, String)>) -> Result<(), crate::ConfigError> {
        for (i, (_, t)) in tokens.iter().enumerate() {
            crate::error::check_token(i, t)?;
        }
        if tokens.is_empty() {
            return Err(crate::ConfigError::InvalidToken {
                index: 0,
                reason: "a server needs at least one token",
            });
        }
        *self.set.write().unwrap_or_else(PoisonError::into_inner) = tokens;
        Ok(())
    }

    /// The current `(role, token)` pairs.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The role of the presented token. Compares against every token so the
    /// time taken does not reveal which one matched.
    pub fn role_of(&self, presented: &[u8]) -> Option<String> {
        let set = self.set.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for (role, token) in set.iter() {
            if bool::from(token.as_bytes().ct_eq(presented)) {
                found = Some(role.clone());
            }
        }
        found
    }
}

/// What the methods under one path prefix require of a caller.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Roles whose tokens may call (empty: a token of any role). Only
    /// [`Auth::Tokens`] has roles; with [`Auth::Bearer`] any token passes.
    pub roles: Vec<String>,
    /// The caller must have presented a client certificate, verified against
    /// the cluster CA, whose subject is in this group (for example
    /// `mkube:masters` for Raft).
    pub group: Option<String>,
}

/// A plain `GET` page served beside the RPC methods (Prometheus' `/metrics`):
/// returns its content type and body.
pub type Page =
    Arc<dyn Fn() -> BoxFuture<'static, Result<(&'static str, Bytes), Status>> + Send + Sync>;

/// Routes calls to mounted services and enforces auth, limits and deadlines.
pub struct Router {
    services: HashMap<&'static str, Arc<dyn Service>>,
    pages: HashMap<&'static str, Page>,
    auth: Auth,
    rules: Vec<(&'static str, Access)>,
    max_body_bytes: usize,
    body_read_timeout: Duration,
}

/// A request that passed every check before its body is read.
struct Admitted {
    service: Arc<dyn Service>,
    method: String,
    timeout: Option<Duration>,
}

impl Router {
    pub(crate) fn new(
        services: HashMap<&'static str, Arc<dyn Service>>,
        pages: HashMap<&'static str, Page>,
        auth: Auth,
        mut rules: Vec<(&'static str, Access)>,
        max_body_bytes: usize,
        body_read_timeout: Duration,
    ) -> Self {
        // Longest prefix first: the most specific rule wins.
        rules.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Router {
            services,
            pages,
            auth,
            rules,
            max_body_bytes,
            body_read_timeout,
        }
    }

    /// Whether calls need a token.
    pub fn requires_auth(&self) -> bool {
        !matches!(self.auth, Auth::None)
    }

    /// The mounted services' names, sorted.
    pub fn service_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.services.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Answers one HTTP request. Never fails: every error is an envelope.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        if parts.method == http::Method::GET
            && let Some(page) = self.pages.get(parts.uri.path())
        {
            return match self.authenticate(&parts) {
                Ok(()) => match page().await {
                    Ok((content_type, body)) => {
                        let mut response = Response::new(Full::new(body));
                        response
                            .headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                        response
                    }
                    Err(status) => status_response(&status),
                },
                Err(status) => status_response(&status),
            };
        }
        let admitted = match self.admit(&parts) {
            Ok(a) => a,
            Err(status) => {
                tracing::debug!(path = parts.uri.path(), code = %status.code, "refused: {}", status.message);
                return status_response(&status);
            }
        };
        let span = tracing::info_span!("rpc", service = admitted.service.name(), method = %admitted.method);
        let started = Instant::now();
        let result = self.run(admitted, body).instrument(span.clone()).await;
        let _entered = span.enter();
        match result {
            Ok(body) => {
                tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "ok");
                json_response(StatusCode::OK, body)
            }
            Err(status) => {
                tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, code = %status.code, "failed: {}", status.message);
                status_response(&status)
            }
        }
    }

    /// The checks that need no body, in the order the module doc gives.
    fn admit(&self, parts: &Parts) -> Result<Admitted, Status> {
        if parts.method != http::Method::POST {
            return Err(Status::invalid_argument(format!(
                "RPC calls are POST requests; got {} {}",
                parts.method,
                parts.uri.path()
            )));
        }
        let (service_name, method) = split_path(parts.uri.path())?;
        self.authenticate(parts)?;
        let service = self.services.get(service_name).ok_or_else(|| {
            Status::not_found(format!(
                "unknown service `{service_name}`; this server serves {}",
                self.service_names().join(", ")
            ))
        })?;
        if !service.methods().contains(&method) {
            return Err(Status::not_found(format!(
                "unknown method `{method}` of service `{service_name}`; it has {}",
                service.methods().join(", ")
            )));
        }
        let timeout = parts
            .headers
            .get(wire::TIMEOUT_HEADER)
            .map(|v| wire::parse_timeout(v.as_bytes()))
            .transpose()?;
        if let Some(length) = parts.headers.get(CONTENT_LENGTH) {
            let length: u64 = length
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Status::invalid_argument("invalid content-length header"))?;
            if length > self.max_body_bytes as u64 {
                return Err(too_large(length, self.max_body_bytes));
            }
        }
        Ok(Admitted {
            service: Arc::clone(service),
            method: method.to_owned(),
            timeout,
        })
    }

    /// Checks the token and, where the path's [`Access`] asks for them, the
    /// token's role and the client certificate's group.
    fn authenticate(&self, parts: &Parts) -> Result<(), Status> {
        let path = parts.uri.path();
        let access = self
            .rules
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, access)| access);
        if let Some(group) = access.and_then(|a| a.group.as_deref()) {
            match parts.extensions.get::<crate::tls::Peer>() {
                Some(peer) if peer.in_group(group) => {}
                Some(peer) => {
                    return Err(Status::new(
                        Code::PermissionDenied,
                        format!(
                            "{path} is for members of {group}; the client certificate of `{}` is in {:?}",
                            peer.name, peer.groups
                        ),
                    ));
                }
                None => {
                    return Err(Status::new(
                        Code::PermissionDenied,
                        format!(
                            "{path} requires a client certificate of {group} signed by the cluster CA; none was presented"
                        ),
                    ));
                }
            }
        }
        if matches!(self.auth, Auth::None) {
            return Ok(());
        }
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <token>` header")
        })?;
        let presented = header.as_bytes().strip_prefix(b"Bearer ").ok_or_else(|| {
            Status::unauthenticated("the authorization header must use the Bearer scheme")
        })?;
        match &self.auth {
            Auth::None => Ok(()),
            Auth::Bearer(tokens) => {
                // Compare against every token so the time taken does not reveal which matched.
                let matched = tokens.iter().fold(subtle::Choice::from(0), |acc, t| {
                    acc | t.as_bytes().ct_eq(presented)
                });
                if bool::from(matched) {
                    Ok(())
                } else {
                    Err(Status::unauthenticated("invalid bearer token"))
                }
            }
            Auth::Tokens(tokens) => {
                let role = tokens
                    .role_of(presented)
                    .ok_or_else(|| Status::unauthenticated("invalid bearer token"))?;
                match access {
                    Some(a) if !a.roles.is_empty() && !a.roles.contains(&role) => Err(Status::new(
                        Code::PermissionDenied,
                        format!(
                            "a {role} token may not call {path}; it needs a token of role {}",
                            a.roles.join(" or ")
                        ),
                    )),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Reads the body within the limit and runs the handler within the deadline.
    async fn run<B>(&self, admitted: Admitted, body: B) -> Result<Bytes, Status>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let wait = self.body_read_timeout;
        let body = tokio::time::timeout(wait, read_body(body, self.max_body_bytes))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the request body did not arrive within {wait:?} of its header"
                ))
            })??;
        let Some(call) = admitted.service.call(&admitted.method, body) else {
            return Err(Status::internal(format!(
                "service {} listed method {} but has no handler for it",
                admitted.service.name(),
                admitted.method
            )));
        };
        let call = AssertUnwindSafe(call).catch_unwind();
        let outcome = match admitted.timeout {
            Some(timeout) => tokio::time::timeout(timeout, call).await.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the call's deadline of {timeout:?} passed; the handler was cancelled"
                ))
            })?,
            None => call.await,
        };
        outcome.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Status::internal(format!("handler panicked: {what}")))
        })
    }
}

/// `/Service/method` → (`Service`, `method`).
fn split_path(path: &str) -> Result<(&str, &str), Status> {
    let mut segments = path.strip_prefix('/').unwrap_or(path).splitn(2, '/');
    match (segments.next(), segments.next()) {
        (Some(service), Some(method))
            if !service.is_empty() && !method.is_empty() && !method.contains('/') =>
        {
            Ok((service, method))
        }
        _ => Err(Status::not_found(format!(
            "no RPC method at `{path}`; calls go to /<Service>/<method>"
        ))),
    }
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Status>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Status::new(
            Code::PayloadTooLarge,
            format!("request body exceeds the limit of {limit} bytes"),
        )),
        Err(e) => Err(Status::invalid_argument(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

fn too_large(length: u64, limit: usize) -> Status {
    Status::new(
        Code::PayloadTooLarge,
        format!("request body of {length} bytes exceeds the limit of {limit} bytes"),
    )
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The one place a [`Status`] becomes an HTTP response.
pub(crate) fn status_response(status: &Status) -> Response<Full<Bytes>> {
    let code = StatusCode::from_u16(status.code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, status.to_json())
}

/// A [`Transport`] that hands calls straight to a [`Router`]: the full
/// server-side path (auth, limits, deadlines, JSON) without a socket.
#[derive(Clone)]
pub struct InProcess {
    router: Arc<Router>,
    token: Option<HeaderValue>,
}

impl InProcess {
    /// Calls `router`, presenting `token` if given.
    pub fn new(router: Arc<Router>, token: Option<&str>) -> Result<Self, crate::ConfigError> {
        let token = token
            .map(|t| {
                crate::error::check_token(0, t)?;
                HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    crate::ConfigError::InvalidToken {
                        index: 0,
                        reason: "not a header value",
                    }
                })
            })
            .transpose()?;
        Ok(InProcess { router, token })
    }
}

impl Transport for InProcess {
    fn call(
        &self,
        method: &'static Method,
        body: Bytes,
        options: &CallOptions,
    ) -> BoxFuture<'static, Result<Bytes, Error>> {
        let uri = match http::Uri::try_from(method.path) {
            Ok(uri) => uri,
            Err(e) => {
                let error = Error::Encode {
                    path: method.path,
                    reason: format!("not a valid path: {e}"),
                };
                return Box::pin(std::future::ready(Err(error)));
            }
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        if let Some(token) = &self.token {
            request.headers_mut().insert(AUTHORIZATION, token.clone());
        }
        if let Some(timeout) = options.timeout {
            request.headers_mut().insert(
                wire::TIMEOUT_HEADER,
                HeaderValue::from(wire::timeout_value(timeout)),
            );
        }
        let router = Arc::clone(&self.router);
        Box::pin(async move {
            let response = router.handle(request).await;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            wire::into_result(status, body)
        })
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

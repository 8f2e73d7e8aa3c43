//! Everything that happens to one request, without a socket.
//!
//! ```text
//! request ─▶ POST? ─▶ /Service/method? ─▶ caller (token, certificate) vs the
//!            path's Access rule ─▶ known method? ─▶ timeout header
//!         ─▶ content-length ≤ limit ─▶ read body (limited)
//!         ─▶ handler under deadline, with its Caller ─▶ 200 JSON | error envelope
//!         ╰▶ GET of a mounted page (e.g. `/metrics`) ─▶ caller ─▶ page handler
//! ```
//!
//! Invariants: a handler never runs for a request that fails any earlier
//! step; a token of a role bound to a certificate group counts only with
//! such a certificate, on every path; a body over the limit is refused from
//! its `content-length` before any of it is read, and a body without one is
//! read only up to the limit; a handler past its deadline is dropped
//! (cancelled), never left running; a panicking handler becomes an
//! `Internal` status, not a dropped connection.

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
use crate::server::Caller;

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
    /// No token: callers are known by their client certificate alone, and
    /// only paths with an [`Access`] rule naming a certificate group can be
    /// called (a worker, which masters call with their certificates).
    Certificates,
    /// No authentication: for local demos only; the server warns at start-up.
    None,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(tokens) => write!(f, "Bearer({} tokens)", tokens.len()),
            Auth::Tokens(tokens) => write!(f, "Tokens({} tokens)", tokens.len()),
            Auth::Certificates => f.write_str("Certificates"),
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
///
/// A caller passes when each part that is set holds: its token's role is
/// in `roles`, and its client certificate is in one of `groups`. A rule
/// with `groups` and no `roles` is passed by the certificate alone (no
/// token needed); a rule with neither takes any valid token.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Roles whose tokens may call (empty: no token needed if `groups` is
    /// set, else a token of any role). Only [`Auth::Tokens`] has roles;
    /// with [`Auth::Bearer`] any valid token passes.
    pub roles: Vec<String>,
    /// The caller must have presented a client certificate, verified against
    /// the cluster CA, whose subject is in one of these groups (for example
    /// `mkube:masters` for Raft); empty: no certificate needed.
    pub groups: Vec<String>,
}

impl Access {
    /// Tokens of `roles`, any certificate or none.
    pub fn roles(roles: &[&str]) -> Access {
        Access {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            groups: Vec::new(),
        }
    }

    /// A certificate of one of `groups`, no token needed.
    pub fn certificate(groups: &[&str]) -> Access {
        Access {
            roles: Vec::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// And also a certificate of one of `groups`.
    pub fn with_certificate(mut self, groups: &[&str]) -> Access {
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }

    /// Whether `caller` may call `path` under this rule (`roles`: whether
    /// the server's tokens have roles to check); the refusal names what
    /// was needed.
    pub fn admits(&self, path: &str, caller: &Caller, roles: bool) -> Result<(), Status> {
        if !self.groups.is_empty() {
            let groups = self.groups.join(" or ");
            match &caller.peer {
                Some(peer) if self.groups.iter().any(|g| peer.in_group(g)) => {}
                Some(peer) => {
                    return Err(Status::new(
                        Code::PermissionDenied,
                        format!(
                            "{path} is for members of {groups}; the client certificate of `{}` is in {:?}",
                            peer.name, peer.groups
                        ),
                    ));
                }
                None => {
                    return Err(Status::new(
                        Code::PermissionDenied,
                        format!(
                            "{path} requires a client certificate of {groups} signed by the cluster CA; none was presented"
                        ),
                    ));
                }
            }
        }
        if roles && !self.roles.is_empty() {
            match &caller.role {
                Some(role) if self.roles.contains(role) => {}
                Some(role) => {
                    return Err(Status::new(
                        Code::PermissionDenied,
                        format!(
                            "a {role} token may not call {path}; it needs a token of role {}",
                            self.roles.join(" or ")
                        ),
                    ));
                }
                None => return Err(TokenError::Missing.status()),
            }
        }
        Ok(())
    }
}

/// The rule of `rules` for `path`: the one with the longest matching prefix.
pub fn rule_for<'a>(rules: &'a [(&str, Access)], path: &str) -> Option<&'a Access> {
    rules
        .iter()
        .filter(|(prefix, _)| path.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, access)| access)
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
    bound: Vec<(String, String)>,
    max_body_bytes: usize,
    body_read_timeout: Duration,
}

/// A request that passed every check before its body is read.
struct Admitted {
    service: Arc<dyn Service>,
    method: String,
    timeout: Option<Duration>,
    caller: Caller,
}

impl Router {
    pub(crate) fn new(
        services: HashMap<&'static str, Arc<dyn Service>>,
        pages: HashMap<&'static str, Page>,
        auth: Auth,
        mut rules: Vec<(&'static str, Access)>,
        bound: Vec<(String, String)>,
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
            bound,
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
                Ok(_) => match page().await {
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
        let caller = self.authenticate(parts)?;
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
            caller,
        })
    }

    /// Establishes the caller: the token's role and the client
    /// certificate's subject, checked against the path's [`Access`] rule and
    /// the roles bound to a certificate group.
    fn authenticate(&self, parts: &Parts) -> Result<Caller, Status> {
        let path = parts.uri.path();
        let access = self
            .rules
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, access)| access);
        let peer = parts.extensions.get::<crate::tls::Peer>().cloned();
        // A token is needed unless the server takes none, or the path's
        // rule is passed by a certificate alone.
        let certificate_alone = access.is_some_and(|a| a.roles.is_empty() && !a.groups.is_empty());
        let role = match self.role_of(parts) {
            Err(TokenError::Missing)
                if certificate_alone || matches!(self.auth, Auth::None | Auth::Certificates) =>
            {
                None
            }
            Err(e) => return Err(e.status()),
            Ok(role) => role,
        };
        if let Some(role) = &role
            && let Some(group) = self.bound_group(role)
            && !peer.as_ref().is_some_and(|p| p.in_group(group))
        {
            return Err(Status::new(
                Code::PermissionDenied,
                format!(
                    "a {role} token is accepted only with a client certificate of {group}; {}",
                    match &peer {
                        Some(p) => format!("`{}` is in {:?}", p.name, p.groups),
                        None => "none was presented".into(),
                    }
                ),
            ));
        }
        let caller = Caller { role, peer };
        let Some(access) = access else {
            // No rule: any valid token, but nothing on a server whose
            // callers are known by certificate only.
            if matches!(self.auth, Auth::Certificates) {
                return Err(Status::new(
                    Code::PermissionDenied,
                    format!("no caller may call {path} on this server"),
                ));
            }
            return Ok(caller);
        };
        access.admits(path, &caller, matches!(self.auth, Auth::Tokens(_)))?;
        Ok(caller)
    }

    /// The presented token's role: `None` where the server takes no token
    /// (`Auth::None`, `Auth::Certificates`) or its tokens have no roles
    /// (`Auth::Bearer`); an error for a missing or unknown token.
    fn role_of(&self, parts: &Parts) -> Result<Option<String>, TokenError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(TokenError::Missing)?;
        if matches!(self.auth, Auth::None | Auth::Certificates) {
            return Ok(None);
        }
        let presented = header
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or(TokenError::NotBearer)?;
        match &self.auth {
            Auth::None | Auth::Certificates => Ok(None),
            Auth::Bearer(tokens) => {
                // Compare against every token so the time taken does not reveal which matched.
                let matched = tokens.iter().fold(subtle::Choice::from(0), |acc, t| {
                    acc | t.as_bytes().ct_eq(presented)
                });
                if bool::from(matched) {
                    Ok(None)
                } else {
                    Err(TokenError::Invalid)
                }
            }
            Auth::Tokens(tokens) => tokens
                .role_of(presented)
                .map(Some)
                .ok_or(TokenError::Invalid),
        }
    }

    /// The group whose certificate a token of `role` must come with.
    fn bound_group(&self, role: &str) -> Option<&str> {
        self.bound
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, g)| g.as_str())
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
        let call = AssertUnwindSafe(admitted.caller.scope(call)).catch_unwind();
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

/// Why a presented token is not one.
enum TokenError {
    Missing,
    NotBearer,
    Invalid,
}

impl TokenError {
    fn status(&self) -> Status {
        Status::unauthenticated(match self {
            TokenError::Missing => "missing `authorization: Bearer <token>` header",
            TokenError::NotBearer => "the authorization header must use the Bearer scheme",
            TokenError::Invalid => "invalid bearer token",
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

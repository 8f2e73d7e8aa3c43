//! The datasource API over TLS with bearer tokens, as every other mkube
//! listener: the cluster CA's certificate on the server side, and a token of
//! an allowed role (`user` or `member`) on every request. Grafana's JSON
//! datasource sends both when provisioned with `tlsAuthWithCACert` and an
//! `Authorization` header (`deploy/grafana/`).
//!
//! ```text
//! TcpListener ──▶ rpc::server::serve_http (address shares, pools, TLS ≤ 10 s,
//!                 header-read and idle timeouts) ──▶ token check ──▶ routes
//! ```
//!
//! Invariants: a connection reaches the routes only after its TLS handshake
//! completed, within the same connection limits as every mkube listener; a
//! request reaches them only with a token whose role is allowed.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header::AUTHORIZATION};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::store::MetricsStore;

/// Roles whose tokens may read metrics (a member token only with a
/// masters' certificate, as everywhere).
const ROLES: [&str; 4] = ["admin", "user", "viewer", "member"];

/// What the listener enforces.
#[derive(Clone, Debug)]
pub struct Security {
    /// The server's TLS settings (the member's certificate).
    pub tls: rpc::ServerTls,
    /// The accepted tokens, live (rotations apply at once).
    pub tokens: rpc::Tokens,
}

/// Serves the datasource API over TLS, requiring a token, until `shutdown`.
pub async fn serve_secure(
    listener: TcpListener,
    store: Arc<dyn MetricsStore>,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "grafana datasource listening (TLS, bearer tokens)");
    let app = crate::http::router(store).layer(axum::middleware::from_fn_with_state(
        security.tokens.clone(),
        require_token,
    ));
    let config = rpc::server::ListenerConfig::new(Some(&security.tls));
    rpc::server::serve_http(
        listener,
        config,
        shutdown,
        move |peer: Option<rpc::Peer>| {
            // The connection's certificate, for the member token's check.
            hyper_util::service::TowerToHyperService::new(app.clone().layer(axum::Extension(peer)))
        },
    )
    .await
}

async fn require_token(
    State(tokens): State<rpc::Tokens>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.as_bytes().strip_prefix(b"Bearer "));
    let refusal = |status: StatusCode, why: &str| {
        (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
    };
    match presented.map(|p| tokens.role_of(p)) {
        None => refusal(
            StatusCode::UNAUTHORIZED,
            "missing `authorization: Bearer <token>` header",
        ),
        Some(None) => refusal(StatusCode::UNAUTHORIZED, "invalid bearer token"),
        Some(Some(role)) if !ROLES.contains(&role.as_str()) => refusal(
            StatusCode::FORBIDDEN,
            &format!("a {role} token may not read metrics; use a viewer, user or admin token"),
        ),
        Some(Some(role))
            if role == "member"
                && !request
                    .extensions()
                    .get::<Option<rpc::Peer>>()
                    .is_some_and(|p| p.as_ref().is_some_and(|p| p.in_group(pki::MASTERS))) =>
        {
            refusal(
                StatusCode::FORBIDDEN,
                "a member token is accepted only with a client certificate of mkube:masters",
            )
        }
        Some(Some(_)) => next.run(request).await,
    }
}

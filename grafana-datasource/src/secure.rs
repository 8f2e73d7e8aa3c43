//! The datasource API over TLS with bearer tokens, as every other mkube
//! listener: the cluster CA's certificate on the server side, and a token of
//! an allowed role (`user` or `member`) on every request. Grafana's JSON
//! datasource sends both when provisioned with `tlsAuthWithCACert` and an
//! `Authorization` header (`deploy/grafana/`).
//!
//! ```text
//! TcpListener ──accept──▶ handshake task (≤ 10 s, never blocks accepting) ──▶ queue ──▶ axum::serve
//!                                                                  request ──▶ token check ──▶ routes
//! ```
//!
//! Invariants: a connection reaches the routes only after its TLS handshake
//! completed; a request reaches them only with a token whose role is allowed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header::AUTHORIZATION};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::store::MetricsStore;

/// Roles whose tokens may read metrics.
const ROLES: [&str; 2] = ["user", "member"];
/// Time a client has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    let tls = TlsListener::start(listener, security.tls);
    axum::serve(tls, app).with_graceful_shutdown(shutdown).await
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
            "this token's role may not read metrics; use a user or member token",
        ),
        Some(Some(_)) => next.run(request).await,
    }
}

/// Connections whose TLS handshake completed, for `axum::serve`.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    fn start(listener: TcpListener, tls: rpc::ServerTls) -> TlsListener {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.rustls_config());
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = ready.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it never does while the listener
            // lives): wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

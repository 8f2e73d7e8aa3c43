//! Metrics storage and the Grafana JSON datasource API.
//!
//! ```text
//! collector (master leader) ──Point batches──▶ MetricsStore ◀── http::router ◀── Grafana
//!                                              ├ SqliteStore (embedded file, default)
//!                                              └ Cosmos DB
//! ```
//!
//! - [`store`]: the `MetricsStore` contract and its conformance checks.
//! - [`sqlite`]: the embedded store, one SQLite file with a retention limit.
//! - [`config`]: the flags that choose a store, shared by the binaries.
//! - [`cosmos`]: the Azure Cosmos DB store (one container, partitioned so
//!   that dashboard queries stay in one partition).
//! - [`http`]: the routes Grafana's JSON datasource calls
//!   (`specs/simpod-json-datasource-openapi.patched.yaml`), and [`serve`].
//! - [`secure`]: the same over TLS with bearer tokens ([`serve_secure`]).
//!
//! The points themselves ([`api::metrics::Point`]) and the metric names are
//! defined in the `api` crate, shared with the Prometheus pages.

pub mod config;
pub mod cosmos;
pub mod http;
pub mod secure;
pub mod sqlite;
pub mod store;

use std::future::Future;
use std::sync::Arc;

pub use cosmos::{CosmosAuth, CosmosConfig, CosmosStore};
pub use secure::{Security, serve_secure};
pub use sqlite::SqliteStore;
pub use store::{Aggregation, MetricsStore, Series, SeriesQuery, StoreError, TagFilter};

/// Serves the datasource API for `store` on `listener` until `shutdown`,
/// in plain HTTP without authentication (tests, `--insecure`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn MetricsStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "grafana datasource listening");
    }
    let app = http::router(store);
    let config = rpc::server::ListenerConfig::new(None);
    rpc::server::serve_http(listener, config, shutdown, move |_| {
        hyper_util::service::TowerToHyperService::new(app.clone())
    })
    .await
}

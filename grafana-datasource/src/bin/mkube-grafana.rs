//! `mkube-grafana`: the Grafana JSON datasource API as a process of its own,
//! over a metrics store that masters write to.
//!
//! ```text
//! mkube-grafana --listen 127.0.0.1:3100 --store /var/lib/mkube/metrics.db
//! ```
//!
//! Masters serve the same API themselves (`mkube-master --grafana-listen`);
//! this binary is for a store that outlives them, read from elsewhere.
//! Logs go to stderr (`RUST_LOG`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use grafana_datasource::{MetricsStore, SqliteStore};

/// Serves the Grafana JSON datasource API over an mkube metrics store.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3100")]
    listen: String,
    /// The embedded store's database file.
    #[arg(long, default_value = "mkube-metrics.db")]
    store: PathBuf,
    /// How long points are kept (e.g. `14d`, `6h`).
    #[arg(long, default_value = "14d", value_parser = humantime::parse_duration)]
    retention: Duration,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let store: Arc<dyn MetricsStore> = Arc::new(
        SqliteStore::open(&args.store, args.retention)
            .with_context(|| format!("opening the metrics store {}", args.store.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    grafana_datasource::serve(listener, store, shutdown)
        .await
        .context("serving the datasource API")
}

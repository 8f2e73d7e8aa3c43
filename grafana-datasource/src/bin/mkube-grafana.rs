//! `mkube-grafana`: the Grafana JSON datasource API as a process of its own,
//! over a metrics store that masters write to.
//!
//! ```text
//! mkube-grafana --listen 127.0.0.1:3100 --metrics-db /var/lib/mkube/metrics.db
//! mkube-grafana --listen 10.0.0.4:3100 --cosmos-endpoint https://ACCOUNT.documents.azure.com/
//! ```
//!
//! Masters serve the same API themselves (`mkube-master --grafana-listen`);
//! this binary is for a store that outlives them, read from elsewhere.
//! Logs go to stderr (`RUST_LOG`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use grafana_datasource::config::StoreArgs;

/// Serves the Grafana JSON datasource API over an mkube metrics store.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3100")]
    listen: String,
    /// Which store, and where.
    #[command(flatten)]
    store: StoreArgs,
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
    let store = args
        .store
        .open(PathBuf::from("mkube-metrics.db"))
        .await
        .context("opening the metrics store")?;
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

//! `mkube-grafana`: the Grafana JSON datasource API as a process of its own,
//! over a metrics store that masters write to.
//!
//! ```text
//! mkube-grafana --listen 10.0.0.4:3100 --metrics-db /var/lib/mkube/metrics.db \
//!               --pki-dir /etc/mkube/pki --name grafana
//! mkube-grafana --listen 127.0.0.1:3100 --cosmos-endpoint https://ACCOUNT.documents.azure.com/ --insecure
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
    /// TLS and tokens from this PKI directory (see mkube-pki): ca.crt,
    /// NAME.crt, NAME.key (a certificate for this host) and tokens/*;
    /// requests need a user or member token.
    #[arg(long, requires = "name", conflicts_with = "insecure")]
    pki_dir: Option<PathBuf>,
    /// The name of this server's certificate in --pki-dir.
    #[arg(long)]
    name: Option<String>,
    /// Serve plain HTTP without authentication (bind it to a private address).
    #[arg(long)]
    insecure: bool,
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
    match (&args.pki_dir, &args.name) {
        (Some(dir), Some(name)) => {
            let security = pki::member::Security::load(dir, name, pki::member::Kind::Master)
                .context("loading TLS and tokens from --pki-dir")?;
            security.spawn_reload();
            let security = grafana_datasource::Security {
                tls: security.server.clone(),
                tokens: security.accepted.clone(),
            };
            grafana_datasource::serve_secure(listener, store, security, shutdown)
                .await
                .context("serving the datasource API")
        }
        _ if args.insecure => {
            tracing::warn!("--insecure: plain HTTP without authentication");
            grafana_datasource::serve(listener, store, shutdown)
                .await
                .context("serving the datasource API")
        }
        _ => anyhow::bail!(
            "TLS is required: give --pki-dir DIR --name NAME (a certificate from mkube-pki issue); --insecure serves plain HTTP"
        ),
    }
}

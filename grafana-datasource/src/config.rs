//! The command-line flags that choose a metrics store, shared by
//! `mkube-master` and `mkube-grafana`: the embedded SQLite file unless a
//! Cosmos DB endpoint is given.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cosmos::{CosmosAuth, CosmosConfig, CosmosStore};
use crate::sqlite::SqliteStore;
use crate::store::{MetricsStore, StoreError};

/// Flags of the metrics store.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The embedded metrics database file (the default store).
    #[arg(long)]
    pub metrics_db: Option<PathBuf>,
    /// How long metric points are kept (e.g. 14d, 6h).
    #[arg(long, default_value = "14d", value_parser = humantime::parse_duration)]
    pub metrics_retention: Duration,
    /// Keep metrics in Azure Cosmos DB at this endpoint
    /// (https://ACCOUNT.documents.azure.com/) instead of the embedded file.
    #[arg(long)]
    pub cosmos_endpoint: Option<String>,
    /// The Cosmos DB region this process runs in (request routing).
    #[arg(long, default_value = "westeurope")]
    pub cosmos_region: String,
    /// The Cosmos DB database.
    #[arg(long, default_value = "mkube")]
    pub cosmos_database: String,
    /// The Cosmos DB container (partition key path /pk, defaultTtl -1).
    #[arg(long, default_value = "metrics")]
    pub cosmos_container: String,
    /// A file holding the Cosmos DB account key; without it, the VM's
    /// managed identity is used.
    #[arg(long)]
    pub cosmos_key_file: Option<PathBuf>,
    /// The client id of a user-assigned managed identity.
    #[arg(long)]
    pub cosmos_client_id: Option<String>,
    /// The account key, when the binary read it from elsewhere (Key Vault).
    #[arg(skip)]
    pub cosmos_key: Option<String>,
    /// Keep the Raft store's exports (whole-fleet recovery) in this Cosmos DB
    /// container (partition key path /pk) of --cosmos-endpoint's database.
    #[arg(long, requires = "cosmos_endpoint")]
    pub cosmos_exports_container: Option<String>,
}

impl StoreArgs {
    /// The Cosmos DB settings, if an endpoint is given.
    fn cosmos(&self) -> Result<Option<CosmosConfig>, StoreError> {
        let Some(endpoint) = &self.cosmos_endpoint else {
            return Ok(None);
        };
        let auth = match (&self.cosmos_key, &self.cosmos_key_file) {
            (Some(key), _) => CosmosAuth::Key(key.clone()),
            (None, Some(path)) => CosmosAuth::Key(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        StoreError::Invalid(format!(
                            "cannot read the Cosmos DB key file {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => CosmosAuth::ManagedIdentity {
                client_id: self.cosmos_client_id.clone(),
            },
        };
        Ok(Some(CosmosConfig {
            endpoint: endpoint.clone(),
            region: self.cosmos_region.clone(),
            database: self.cosmos_database.clone(),
            container: self.cosmos_container.clone(),
            auth,
            retention: self.metrics_retention,
        }))
    }

    /// The Cosmos DB account the flags name, if any (the kvs export store
    /// of `mkube-master` lives there too, in `--cosmos-exports-container`).
    pub fn cosmos_account(&self) -> Result<Option<cloud::cosmos::CosmosAccount>, StoreError> {
        Ok(self.cosmos()?.map(|c| c.account()))
    }

    /// Opens the store the flags name; `default_db` when neither
    /// `--metrics-db` nor `--cosmos-endpoint` is given.
    pub async fn open(&self, default_db: PathBuf) -> Result<Arc<dyn MetricsStore>, StoreError> {
        let Some(config) = self.cosmos()? else {
            let path = self.metrics_db.clone().unwrap_or(default_db);
            tracing::info!(path = %path.display(), "metrics in the embedded database");
            return Ok(Arc::new(SqliteStore::open(&path, self.metrics_retention)?));
        };
        tracing::info!(endpoint = %config.endpoint, database = %config.database, container = %config.container, auth = ?config.auth, "metrics in Cosmos DB");
        Ok(Arc::new(CosmosStore::connect(&config).await?))
    }
}

//! Reaching an Azure Cosmos DB account: its endpoint, region and database,
//! the key or managed identity it is opened with, and one container of it.
//! Shared by the stores kept there: the metrics store
//! (`grafana_datasource::cosmos`) and the kvs export store (`exports`).

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::options::Region;
use azure_data_cosmos::{AccountEndpoint, AccountReference, CosmosClient, RoutingStrategy};

use crate::CloudError;

/// How a client authenticates to the account.
#[derive(Clone)]
pub enum CosmosAuth {
    /// An account key (from Key Vault or a file).
    Key(String),
    /// The VM's managed identity (system-assigned, or the user-assigned
    /// one with this client id).
    ManagedIdentity {
        /// A user-assigned identity's client id.
        client_id: Option<String>,
    },
}

impl std::fmt::Debug for CosmosAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CosmosAuth::Key(_) => f.write_str("Key(..)"),
            CosmosAuth::ManagedIdentity { client_id } => {
                write!(f, "ManagedIdentity {{ client_id: {client_id:?} }}")
            }
        }
    }
}

/// An account and database.
#[derive(Debug, Clone)]
pub struct CosmosAccount {
    /// `https://ACCOUNT.documents.azure.com/`.
    pub endpoint: String,
    /// The region the client is in (for routing), e.g. `westeurope`.
    pub region: String,
    /// The database.
    pub database: String,
    /// How to authenticate.
    pub auth: CosmosAuth,
}

/// Opens container `name` of `account`'s database.
pub async fn open_container(
    account: &CosmosAccount,
    name: &str,
) -> Result<ContainerClient, CloudError> {
    let endpoint: AccountEndpoint = account.endpoint.parse().map_err(|e| {
        CloudError::Invalid(format!(
            "the Cosmos DB endpoint {:?} is not a URL: {e}",
            account.endpoint
        ))
    })?;
    let reference = match &account.auth {
        CosmosAuth::Key(key) => AccountReference::with_authentication_key(
            endpoint,
            azure_core::credentials::Secret::new(key.clone()),
        ),
        CosmosAuth::ManagedIdentity { client_id } => {
            AccountReference::with_credential(endpoint, crate::managed_identity(client_id.clone())?)
        }
    };
    let client = CosmosClient::builder()
        .build(
            reference,
            RoutingStrategy::ProximityTo(Region::new(account.region.clone())),
        )
        .await
        .map_err(|e| CloudError::Cosmos {
            what: "connecting to Cosmos DB".into(),
            reason: e.to_string(),
        })?;
    client
        .database_client(&account.database)
        .container_client(name, None)
        .await
        .map_err(|e| CloudError::Cosmos {
            what: format!("opening container {}/{name}", account.database),
            reason: e.to_string(),
        })
}

/// FNV-1a, 64 bits: the checksum and the stable ids of items.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

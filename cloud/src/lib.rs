//! mkube's Azure clients, on the official 1.x SDK (`azure_core`,
//! `azure_identity`, `azure_security_keyvault_secrets`):
//!
//! - [`secrets`]: the cluster token and the Cosmos DB key from Key Vault
//!   (`--secrets keyvault://NAME`), with the VM's managed identity;
//! - [`vms`]: a VM's power state (instance view) and starting a deallocated
//!   one, through ARM's REST API on the `azure_core` pipeline (there is no
//!   1.x compute crate), for the masters' peer revival;
//! - [`cosmos`]: reaching a Cosmos DB account and container
//!   (`azure_data_cosmos`), shared with the metrics store;
//! - `exports` (feature `exports`, the masters'): the kvs `SnapshotStore`
//!   in Cosmos DB, where the store's exports survive the loss of every VM;
//! - `emulator` (feature `emulator`, tests only): a container on the SDK's
//!   in-memory Cosmos DB emulator.
//!
//! Both take an optional `azure_core` [`Transport`](azure_core::http::Transport),
//! so tests plug in a local server and see every request on the wire.

pub mod cosmos;
#[cfg(feature = "emulator")]
pub mod emulator;
#[cfg(feature = "exports")]
pub mod exports;
pub mod secrets;
pub mod vms;

/// Why an Azure call failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The configuration names something unusable.
    #[error("{0}")]
    Invalid(String),
    /// Azure refused or failed the call.
    #[error("{what}: {source}")]
    Azure {
        /// What was being done.
        what: String,
        /// The SDK's error (status and service message).
        #[source]
        source: azure_core::Error,
    },
    /// Cosmos DB refused or failed the call.
    #[error("{what}: {reason}")]
    Cosmos {
        /// What was being done.
        what: String,
        /// The SDK's error.
        reason: String,
    },
    /// The answer does not have the documented shape.
    #[error("{what}: unexpected answer: {reason}")]
    Answer {
        /// What was being done.
        what: String,
        /// How it differs.
        reason: String,
    },
}

/// The managed identity of this VM (system-assigned, or the user-assigned
/// one with `client_id`).
pub fn managed_identity(
    client_id: Option<String>,
) -> Result<std::sync::Arc<dyn azure_core::credentials::TokenCredential>, CloudError> {
    let options = azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(azure_identity::UserAssignedId::ClientId),
        ..Default::default()
    };
    let credential =
        azure_identity::ManagedIdentityCredential::new(Some(options)).map_err(|source| {
            CloudError::Azure {
                what: "setting up the managed identity".into(),
                source,
            }
        })?;
    Ok(credential)
}

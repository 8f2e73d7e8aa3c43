//! Secrets from Azure Key Vault: `keyvault://NAME` names the vault
//! `https://NAME.vault.azure.net/`; secrets are read with the SDK's
//! `SecretClient` (Key Vault's challenge-based bearer authentication, then
//! `GET /secrets/{name}/?api-version=…`).

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

use crate::CloudError;

/// The vault URL of a `keyvault://NAME` spec (or of an `https://` URL).
pub fn vault_url(spec: &str) -> Result<String, CloudError> {
    if let Some(name) = spec.strip_prefix("keyvault://") {
        let name = name.trim_end_matches('/');
        let valid = (3..=24).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && name.starts_with(|c: char| c.is_ascii_alphabetic());
        if !valid {
            return Err(CloudError::Invalid(format!(
                "--secrets {spec}: a Key Vault name is 3-24 letters, digits and dashes, starting with a letter"
            )));
        }
        return Ok(format!("https://{name}.vault.azure.net/"));
    }
    if spec.starts_with("https://") {
        return Ok(spec.to_owned());
    }
    Err(CloudError::Invalid(format!(
        "--secrets {spec}: expected keyvault://NAME"
    )))
}

/// Reads secrets from one vault.
pub struct Secrets {
    client: SecretClient,
    vault: String,
}

impl Secrets {
    /// A reader of the vault `spec` names, authenticating with `credential`;
    /// `transport` replaces the HTTP client (tests).
    pub fn new(
        spec: &str,
        credential: Arc<dyn TokenCredential>,
        transport: Option<Transport>,
    ) -> Result<Secrets, CloudError> {
        let vault = vault_url(spec)?;
        let options = SecretClientOptions {
            client_options: ClientOptions {
                transport,
                ..Default::default()
            },
            ..Default::default()
        };
        let client = SecretClient::new(&vault, credential, Some(options)).map_err(|source| {
            CloudError::Azure {
                what: format!("setting up the Key Vault client for {vault}"),
                source,
            }
        })?;
        Ok(Secrets { client, vault })
    }

    /// The current value of secret `name`.
    pub async fn get(&self, name: &str) -> Result<String, CloudError> {
        let what = format!("reading secret {name} from {}", self.vault);
        let response =
            self.client
                .get_secret(name, None)
                .await
                .map_err(|source| CloudError::Azure {
                    what: what.clone(),
                    source,
                })?;
        let secret = response.into_model().map_err(|source| CloudError::Azure {
            what: what.clone(),
            source,
        })?;
        secret.value.ok_or(CloudError::Answer {
            what,
            reason: "the secret has no value".into(),
        })
    }

    /// The tokens of `roles`, from the secrets `mkube-<role>-token` (one
    /// token per line, the first one sent; see `pki`).
    pub async fn tokens(
        &self,
        roles: &[&str],
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>, CloudError> {
        let mut tokens = std::collections::BTreeMap::new();
        for role in roles {
            let text = self.get(&format!("mkube-{role}-token")).await?;
            tokens.insert(role.to_string(), pki::parse_tokens(&text));
        }
        Ok(tokens)
    }
}

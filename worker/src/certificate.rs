//! The worker's certificate, as kubelet TLS bootstrapping makes it: the
//! worker makes its own key, has it signed by a master with the join token
//! (`Master.bootstrap`), and before two thirds of the certificate's life
//! have passed asks for a new one with the current one (`Master.renew`),
//! swapping it into its live TLS settings without a restart.
//!
//! ```text
//! start: DIR/NAME.crt valid, of this CA, for NAME? ──yes──▶ use it
//!              └─no──▶ new key + CSR ──Master.bootstrap (join token)──▶ write key, crt
//! renewal: at 2/3 of the remaining life ──new key + CSR──Master.renew
//!          (join token + current certificate)──▶ write, swap; on failure retry
//! ```
//!
//! Invariants: the worker never holds the CA key nor the member token; the
//! key is written (0600) before the certificate naming it, so a crash
//! between the two leaves an old pair or a key without a certificate
//! (bootstrapped again), never a certificate without its key; a failed
//! renewal keeps the current certificate in use.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use api::master::{BootstrapRequest, MasterClient, RenewRequest};
use thiserror::Error;

/// Why a certificate could not be had.
#[derive(Debug, Error)]
pub enum CertificateError {
    /// A file or key could not be made, read or written.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The TLS settings refused the certificate.
    #[error(transparent)]
    Tls(#[from] rpc::TlsError),
    /// No master signed it.
    #[error("no master signed a certificate for {node}: {reason}")]
    Refused {
        /// The node.
        node: String,
        /// The last master's answer.
        reason: String,
    },
}

/// Where a worker keeps its certificate and how it asks for one.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// The node's name: the certificate's common name.
    pub node: String,
    /// Where `NODE.crt` and `NODE.key` are kept.
    pub dir: PathBuf,
    /// The names and addresses the certificate is for.
    pub hosts: Vec<String>,
    /// The masters' addresses.
    pub masters: Vec<String>,
    /// The cluster CA.
    pub roots: rpc::Roots,
    /// The join token, sent with both requests.
    pub join_token: String,
}

impl Bootstrap {
    fn paths(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{}.crt", self.node)),
            self.dir.join(format!("{}.key", self.node)),
        )
    }

    /// The certificate kept in `dir` if it is valid for another minute,
    /// else a new one from the masters (retried until one signs, with
    /// back-off, since a worker without a certificate cannot serve).
    pub async fn obtain(&self) -> Result<(rpc::Identity, SystemTime), CertificateError> {
        if let Some(kept) = self.kept()? {
            return Ok(kept);
        }
        let mut wait = Duration::from_secs(1);
        loop {
            match self.request(None).await {
                Ok(got) => return Ok(got),
                Err(CertificateError::Refused { reason, .. }) => {
                    tracing::warn!(node = %self.node, %reason, retry_in = ?wait, "no certificate yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn kept(&self) -> Result<Option<(rpc::Identity, SystemTime)>, CertificateError> {
        let (crt, key) = self.paths();
        if !crt.exists() || !key.exists() {
            return Ok(None);
        }
        let pem = std::fs::read_to_string(&crt).map_err(|source| pki::PkiError::Io {
            path: crt.clone(),
            source,
        })?;
        let not_after = match pki::not_after(&pem) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "the kept certificate does not parse; bootstrapping");
                return Ok(None);
            }
        };
        if not_after < SystemTime::now() + Duration::from_secs(60) {
            tracing::info!(node = %self.node, "the kept certificate has expired; bootstrapping");
            return Ok(None);
        }
        if let Err(e) = self.roots.verify_certificate(pem.as_bytes(), &self.node) {
            // Another cluster's CA (the cluster was re-created), or not
            // this node's: a new one is asked for.
            tracing::warn!(node = %self.node, error = %e, "the kept certificate is not one of this cluster for this node; bootstrapping");
            return Ok(None);
        }
        match rpc::Identity::from_files(&crt, &key) {
            Ok(identity) => Ok(Some((identity, not_after))),
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "the kept certificate is unusable; bootstrapping");
                Ok(None)
            }
        }
    }

    /// Asks the masters for a certificate for a new key: `Master.bootstrap`
    /// without `current`, `Master.renew` presenting it. Writes the pair.
    async fn request(
        &self,
        current: Option<&rpc::LiveIdentity>,
    ) -> Result<(rpc::Identity, SystemTime), CertificateError> {
        let asked = pki::KeyRequest::generate(&self.node)?;
        let tls = match current {
            Some(live) => rpc::ClientTls::live(&self.roots, live)?,
            None => rpc::ClientTls::new(&self.roots, None)?,
        }
        .expecting_group(pki::MASTERS)?;
        let mut reason = "no master address".to_string();
        for address in &self.masters {
            let config = rpc::ClientConfig {
                token: Some(self.join_token.clone()),
                tls: Some(tls.clone()),
                default_timeout: Duration::from_secs(10),
                max_connections: 1,
                ..Default::default()
            };
            let client = match rpc::Client::new(address, config) {
                Ok(c) => MasterClient::new(c),
                Err(e) => {
                    reason = format!("{address}: {e}");
                    continue;
                }
            };
            let answer = match current {
                None => {
                    client
                        .bootstrap(&BootstrapRequest {
                            node: self.node.clone(),
                            csr: asked.csr_pem.clone(),
                            hosts: self.hosts.clone(),
                        })
                        .await
                }
                Some(_) => {
                    client
                        .renew(&RenewRequest {
                            csr: asked.csr_pem.clone(),
                            hosts: self.hosts.clone(),
                        })
                        .await
                }
            };
            match answer {
                Ok(signed) => {
                    let identity = rpc::Identity::from_pem(
                        signed.certificate.as_bytes(),
                        asked.key_pem.as_bytes(),
                    )?;
                    let not_after = pki::not_after(&signed.certificate)?;
                    let (crt, key) = self.paths();
                    pki::write_secret(&key, &asked.key_pem)?;
                    pki::write_public(&crt, &signed.certificate)?;
                    return Ok((identity, not_after));
                }
                Err(e) => reason = format!("{address}: {e}"),
            }
        }
        Err(CertificateError::Refused {
            node: self.node.clone(),
            reason,
        })
    }

    /// Renews the certificate `live` presents, which expires at
    /// `not_after`, for as long as the runtime runs.
    pub fn spawn_renewal(self, live: rpc::LiveIdentity, mut not_after: SystemTime) {
        tokio::spawn(async move {
            loop {
                let left = not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tokio::time::sleep((left * 2 / 3).max(Duration::from_secs(1))).await;
                match self.request(Some(&live)).await {
                    Ok((identity, until)) => match live.replace(identity) {
                        Ok(()) => {
                            not_after = until;
                            tracing::info!(node = %self.node, valid_for = ?until.duration_since(SystemTime::now()).unwrap_or_default(), "certificate renewed");
                        }
                        Err(e) => {
                            tracing::error!(node = %self.node, error = %e, "the renewed certificate is unusable; keeping the current one")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(node = %self.node, error = %e, "renewal failed; keeping the current certificate and trying again")
                    }
                }
            }
        });
    }
}

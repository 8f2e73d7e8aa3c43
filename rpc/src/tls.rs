//! TLS for servers and clients (rustls), and who the peer is.
//!
//! One cluster CA signs every member's certificate. A server presents its
//! certificate and *asks* for the client's: a client certificate, when
//! presented, must chain to the cluster CA or the handshake fails; when none
//! is presented the connection still opens (mkctl has no certificate) and
//! the [`Router`](crate::Router) decides per service whether a certificate
//! was required (Raft and worker probes require one, see
//! [`ServerBuilder::restrict`](crate::ServerBuilder::restrict)). A client
//! always verifies the server's certificate against the CA and the name or
//! address it dialled.
//!
//! Identity follows Kubernetes' X.509 convention: the subject's common name
//! is the peer's name and its organizations are its groups
//! (`mkube:masters`, `mkube:workers`).
//!
//! Invariants: a [`Peer`] exists only for a certificate that rustls verified
//! against the CA during this connection's handshake; no configuration built
//! here accepts a server certificate without checking it.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::rustls;

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// What the file was meant to hold ("CA certificate", "private key", ...).
        what: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration (a key that does not match its
    /// certificate, an unusable CA).
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// A certificate chain (leaf first) and its private key.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({} certificates, key hidden)", self.chain.len())
    }
}

impl Identity {
    /// Reads a PEM certificate chain and a PEM private key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = read(cert, "certificate", std::fs::read(cert))?;
        let key_pem = read(key, "private key", std::fs::read(key))?;
        Identity::from_pem(&chain, &key_pem).map_err(|e| match e {
            TlsError::File { what, reason, .. } if what == "certificate" => TlsError::File {
                what,
                path: cert.display().to_string(),
                reason,
            },
            TlsError::File { what, reason, .. } => TlsError::File {
                what,
                path: key.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parses a PEM certificate chain and a PEM private key.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Identity, TlsError> {
        let chain = certificates(chain, "certificate", "<memory>")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::File {
            what: "private key",
            path: "<memory>".into(),
            reason: format!("no usable PEM private key: {e}"),
        })?;
        Ok(Identity { chain, key })
    }
}

/// The cluster CA's certificates, as trust anchors.
#[derive(Clone)]
pub struct Roots {
    store: Arc<rustls::RootCertStore>,
}

impl std::fmt::Debug for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Roots({} anchors)", self.store.len())
    }
}

impl Roots {
    /// Reads the CA certificate(s) from a PEM file.
    pub fn from_file(path: &Path) -> Result<Roots, TlsError> {
        let pem = read(path, "CA certificate", std::fs::read(path))?;
        Roots::from_pem(&pem).map_err(|e| match e {
            TlsError::File { what, reason, .. } => TlsError::File {
                what,
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parses the CA certificate(s) from PEM.
    pub fn from_pem(pem: &[u8]) -> Result<Roots, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        for cert in certificates(pem, "CA certificate", "<memory>")? {
            store
                .add(cert)
                .map_err(|e| TlsError::Config(format!("unusable CA certificate: {e}")))?;
        }
        Ok(Roots {
            store: Arc::new(store),
        })
    }
}

/// A server's TLS settings: its identity, and the CA client certificates
/// must chain to when presented.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// The rustls configuration, for serving something else with the same
    /// settings (the Grafana datasource, a benchmark's peer).
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Presents `identity`; verifies client certificates against `roots`
    /// when a client presents one (see the module doc).
    pub fn new(roots: &Roots, identity: Identity) -> Result<ServerTls, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots.store),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain, identity.key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }
}

/// A client's TLS settings: the CA that server certificates must chain to,
/// and optionally the client's own identity (cluster members present one).
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientTls(client certificate: {})",
            self.config.client_auth_cert_resolver.has_certs()
        )
    }
}

impl ClientTls {
    /// The rustls configuration, for dialling something else with the same
    /// settings (a benchmark's peer).
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.config)
    }

    /// Verifies servers against `roots`; presents `identity` when asked.
    pub fn new(roots: &Roots, identity: Option<Identity>) -> Result<ClientTls, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(Arc::clone(&roots.store));
        let mut config = match identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain, id.key)
                .map_err(|e| TlsError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }
}

/// The verified client certificate's subject: who is calling.
///
/// Present in a request's extensions when the connection's client presented
/// a certificate that chains to the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The subject's common name (the member's name).
    pub name: String,
    /// The subject's organizations (the member's groups).
    pub groups: Vec<String>,
}

impl Peer {
    /// Reads the subject of a verified leaf certificate.
    pub(crate) fn from_certificate(der: &[u8]) -> Option<Peer> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let groups = subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect();
        Some(Peer { name, groups })
    }

    /// Whether the peer is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The one crypto provider (aws-lc-rs, which the Azure SDK's rustls uses
/// too), named explicitly so that no process-wide default is needed.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read<T>(path: &Path, what: &'static str, r: std::io::Result<T>) -> Result<T, TlsError> {
    r.map_err(|e| TlsError::File {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn certificates(
    pem: &[u8],
    what: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            what,
            path: path.into(),
            reason: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            what,
            path: path.into(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

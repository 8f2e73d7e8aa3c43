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
//! address it dialled, and, with [`ClientTls::expecting_peer`], that the
//! certificate names the peer it means to reach (a master probing node
//! `w1` checks that `w1` answers). A [`LiveIdentity`] is presented at each
//! handshake as it is then, so a renewed certificate needs no restart.
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

/// An identity that can be replaced while servers and clients use it: a
/// worker renewing its certificate. Connections made after
/// [`LiveIdentity::replace`] present the new certificate; open ones keep
/// the one they were made with.
#[derive(Clone)]
pub struct LiveIdentity {
    current: Arc<std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>>,
}

impl std::fmt::Debug for LiveIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveIdentity(key hidden)")
    }
}

impl LiveIdentity {
    /// Starts with `identity`.
    pub fn new(identity: Identity) -> Result<LiveIdentity, TlsError> {
        Ok(LiveIdentity {
            current: Arc::new(std::sync::RwLock::new(certified(identity)?)),
        })
    }

    /// Presents `identity` from now on; on error the old one stays.
    pub fn replace(&self, identity: Identity) -> Result<(), TlsError> {
        let new = certified(identity)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(())
    }

    fn get(&self) -> Arc<rustls::sign::CertifiedKey> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl rustls::server::ResolvesServerCert for LiveIdentity {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for LiveIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A certificate chain with its key loaded for signing; refuses a key
/// that does not match the certificate.
fn certified(identity: Identity) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let key = provider()
        .key_provider
        .load_private_key(identity.key)
        .map_err(|e| TlsError::Config(format!("unusable private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(identity.chain, key);
    certified
        .keys_match()
        .map_err(|e| TlsError::Config(format!("the key does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
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

    /// Checks that the PEM certificate (chain) `cert_pem` is valid now,
    /// chains to these roots and is for `name`, as a client dialling
    /// `name` would: a member keeping its certificate across restarts
    /// finds out so that the cluster's CA has changed.
    pub fn verify_certificate(&self, cert_pem: &[u8], name: &str) -> Result<(), TlsError> {
        use rustls::client::danger::ServerCertVerifier;
        let certs = certificates(cert_pem, "certificate", "<memory>")?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::clone(&self.store),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let server_name = rustls_pki_types::ServerName::try_from(name.to_owned())
            .map_err(|e| TlsError::Config(format!("{name:?} is not a server name: {e}")))?;
        verifier
            .verify_server_cert(
                &certs[0],
                &certs[1..],
                &server_name,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| TlsError::Config(e.to_string()))
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
        ServerTls::live(roots, &LiveIdentity::new(identity)?)
    }

    /// Presents whatever `identity` holds at each handshake.
    pub fn live(roots: &Roots, identity: &LiveIdentity) -> Result<ServerTls, TlsError> {
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
            .with_cert_resolver(Arc::new(identity.clone()));
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
    roots: Arc<rustls::RootCertStore>,
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

    /// Verifies servers against `roots`; presents what `identity` holds
    /// at each handshake.
    pub fn live(roots: &Roots, identity: &LiveIdentity) -> Result<ClientTls, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(Arc::clone(&roots.store))
            .with_client_cert_resolver(Arc::new(identity.clone()));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            roots: Arc::clone(&roots.store),
        })
    }

    /// These settings, and the server's certificate must also name `name`
    /// in `group`: a master probing node `w1` talks to `w1`'s worker, not
    /// to whatever holds `w1`'s registered address.
    pub fn expecting_peer(&self, name: &str, group: &str) -> Result<ClientTls, TlsError> {
        self.expecting(Some(name), group)
    }

    /// These settings, and the server's certificate must also be in
    /// `group`: a client of the masters talks to a master, not to a holder
    /// of any certificate of the CA that names the address it dialled.
    pub fn expecting_group(&self, group: &str) -> Result<ClientTls, TlsError> {
        self.expecting(None, group)
    }

    fn expecting(&self, name: Option<&str>, group: &str) -> Result<ClientTls, TlsError> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::clone(&self.roots),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = (*self.config).clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(ExpectPeer {
                inner,
                name: name.map(str::to_owned),
                group: group.to_owned(),
            }));
        Ok(ClientTls {
            config: Arc::new(config),
            roots: Arc::clone(&self.roots),
        })
    }

    /// Verifies servers against `roots`; presents `identity` when asked.
    pub fn new(roots: &Roots, identity: Option<Identity>) -> Result<ClientTls, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(Arc::clone(&roots.store));
        let mut config = match identity {
            Some(id) => builder.with_client_cert_resolver(Arc::new(LiveIdentity::new(id)?)),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            roots: Arc::clone(&roots.store),
        })
    }
}

/// The CA's verification, then the subject's name and group.
#[derive(Debug)]
struct ExpectPeer {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: Option<String>,
    group: String,
}

impl rustls::client::danger::ServerCertVerifier for ExpectPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match Peer::from_certificate(end_entity) {
            Some(peer)
                if self.name.as_ref().is_none_or(|n| *n == peer.name)
                    && peer.in_group(&self.group) =>
            {
                Ok(verified)
            }
            Some(peer) => Err(rustls::Error::General(format!(
                "the server's certificate is of `{}` in {:?}, not of {} in {}",
                peer.name,
                peer.groups,
                self.name
                    .as_ref()
                    .map_or("a member".to_string(), |n| format!("`{n}`")),
                self.group
            ))),
            None => Err(rustls::Error::General(
                "the server's certificate has no readable subject".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
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

//! The cluster CA: created once at bootstrap (or supplied by the operator),
//! it signs a certificate for every master and worker; plus the cluster's
//! tokens.
//!
//! Identity follows Kubernetes' X.509 convention, which `rpc::tls::Peer`
//! reads back: the subject's common name is the member's name and its
//! organization its group, [`MASTERS`] or [`WORKERS`]. A certificate is
//! valid for the DNS names and IP addresses it is issued for (its subject
//! alternative names), for both server and client authentication, since
//! members are both.
//!
//! On disk (a *PKI directory*, like Kubernetes' `/etc/kubernetes/pki`):
//!
//! ```text
//! ca.crt             the CA certificate (public; mkctl contexts hold a copy)
//! ca.key             the CA key                                      0600
//! <name>.crt/.key    a member's certificate and key                  key 0600
//! tokens/admin       everything, raw store writes included           0600
//! tokens/user        the Master API; the store read-only             0600
//! tokens/viewer      get, list, watch, metrics (Grafana, Prometheus) 0600
//! tokens/join        workers' bootstrap and their own node's calls  0600
//! tokens/member      masters, only with a masters' certificate       0600
//! ```
//!
//! A token file holds one token per line: the first is the one a process
//! sends, all are accepted, so a rotation is "add a new first line",
//! "move every client", "drop the old line" ([`add_token`], [`retire_tokens`]).
//!
//! Invariants: secret files are created with mode 0600 before any byte is
//! written to them; [`Ca::generate`] never overwrites an existing CA.

pub mod member;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The group (subject organization) of masters' certificates.
pub const MASTERS: &str = "mkube:masters";
/// The group (subject organization) of workers' certificates.
pub const WORKERS: &str = "mkube:workers";
/// The group of read-only certificates (Prometheus scraping workers'
/// `/metrics`, which take no tokens).
pub const VIEWERS: &str = "mkube:viewers";

/// A DNS name every master's certificate carries besides its own names, so
/// that a client dialling masters at addresses they do not know (public IPs
/// on Azure) can check for it instead (mkctl's `--tls-server-name`).
pub const MASTERS_SERVER_NAME: &str = "masters.mkube";

/// The token roles, and their file names under `tokens/`: what each may
/// call is [`member::master_rules`].
pub const ROLES: [&str; 5] = ["admin", "user", "viewer", "join", "member"];

/// Default validity of member certificates.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Validity of the CA certificate.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key could not be made or parsed.
    #[error("{what}: {reason}")]
    Certificate {
        /// What was being done.
        what: String,
        /// rcgen's explanation.
        reason: String,
    },
    /// The CA exists already and would be overwritten.
    #[error("{0} exists already; a cluster CA is created once (remove it to start over)")]
    Exists(PathBuf),
    /// A role that is not one of [`ROLES`].
    #[error("unknown token role `{0}`; the roles are admin, user, viewer, join and member")]
    UnknownRole(String),
}

fn cert_error(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |e| PkiError::Certificate {
        what,
        reason: e.to_string(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a member's certificate is for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The member's name: the subject's common name.
    pub name: String,
    /// Its group: [`MASTERS`] or [`WORKERS`].
    pub group: String,
    /// DNS names and IP addresses clients dial it at.
    pub hosts: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl Request {
    /// A request valid from a minute ago (clock skew) for [`DEFAULT_VALIDITY`].
    pub fn new(name: &str, group: &str, hosts: Vec<String>) -> Request {
        let now = SystemTime::now();
        Request {
            name: name.to_owned(),
            group: group.to_owned(),
            hosts,
            not_before: now - Duration::from_secs(60),
            not_after: now + DEFAULT_VALIDITY,
        }
    }
}

/// A certificate and its private key, in PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issued(key hidden)")
    }
}

impl Issued {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key` (0600).
    pub fn write(&self, dir: &Path, name: &str) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        write_public(&dir.join(format!("{name}.crt")), &self.cert_pem)?;
        write_secret(&dir.join(format!("{name}.key")), &self.key_pem)
    }
}

/// The cluster CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(key hidden)")
    }
}

impl Ca {
    /// A new CA named `cluster` (ECDSA P-256, valid ten years).
    pub fn generate(cluster: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(cert_error("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{cluster} cluster CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + CA_VALIDITY).into();
        let cert = params
            .self_signed(&key)
            .map_err(cert_error("signing the CA certificate"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA from its PEM certificate and key (an operator-supplied CA).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_error("reading the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(cert_error("reading the CA certificate"))?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// Reads `ca.crt` and `ca.key` from a PKI directory.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert = dir.join("ca.crt");
        let key = dir.join("ca.key");
        let cert_pem = std::fs::read_to_string(&cert).map_err(io_error(&cert))?;
        let key_pem = std::fs::read_to_string(&key).map_err(io_error(&key))?;
        Ca::from_pem(&cert_pem, &key_pem)
    }

    /// Writes `ca.crt` and `ca.key` (0600), refusing to overwrite a CA.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let cert = dir.join("ca.crt");
        if cert.exists() {
            return Err(PkiError::Exists(cert));
        }
        write_secret(&dir.join("ca.key"), &self.key_pem())?;
        write_public(&cert, &self.cert_pem)
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key (PEM): a secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a certificate and a fresh key for `request`.
    pub fn issue(&self, request: &Request) -> Result<Issued, PkiError> {
        let what = |s: &str| format!("{s} for {}", request.name);
        let key = KeyPair::generate().map_err(cert_error(what("generating the key")))?;
        let cert = member_params(request)?
            .signed_by(&key, &self.issuer)
            .map_err(cert_error(what("signing the certificate")))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a certificate for `request` (name, group, hosts, validity)
    /// and the public key of `csr_pem`, a PKCS#10 request whose signature
    /// proves that its sender holds the key. Everything else the request
    /// asks for (subject, names, usages) is ignored: the signer decides.
    pub fn sign_request(&self, csr_pem: &str, request: &Request) -> Result<String, PkiError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            PkiError::Certificate {
                what: format!(
                    "reading the certificate signing request of {}",
                    request.name
                ),
                reason: e.to_string(),
            }
        })?;
        let cert = member_params(request)?
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(cert_error(format!(
                "signing the certificate of {}",
                request.name
            )))?;
        Ok(cert.pem())
    }
}

/// The certificate a member gets: its name and group in the subject, its
/// hosts as subject alternative names, for server and client use.
fn member_params(request: &Request) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(request.hosts.clone())
        .map_err(cert_error(format!("naming the hosts of {}", request.name)))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, request.name.as_str());
    params
        .distinguished_name
        .push(DnType::OrganizationName, request.group.as_str());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = request.not_before.into();
    params.not_after = request.not_after.into();
    Ok(params)
}

/// A key a member makes for itself and the signing request that proves it
/// holds it (kubelet TLS bootstrapping): the key never leaves the member.
pub struct KeyRequest {
    /// The private key (PKCS#8 PEM): a secret.
    pub key_pem: String,
    /// The PKCS#10 request (PEM) naming `name`.
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyRequest(key hidden)")
    }
}

impl KeyRequest {
    /// A fresh ECDSA P-256 key and a request for `name`.
    pub fn generate(name: &str) -> Result<KeyRequest, PkiError> {
        let key = KeyPair::generate().map_err(cert_error("generating a key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let csr = params
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .map_err(cert_error("making the certificate signing request"))?;
        Ok(KeyRequest {
            key_pem: key.serialize_pem(),
            csr_pem: csr,
        })
    }
}

/// When a PEM certificate stops being valid.
pub fn not_after(cert_pem: &str) -> Result<SystemTime, PkiError> {
    let bad = |reason: String| PkiError::Certificate {
        what: "reading a certificate's validity".into(),
        reason,
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// A new random token: 64 hex digits (244 random bits, from the OS).
pub fn generate_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The path of a role's token file.
pub fn token_path(dir: &Path, role: &str) -> Result<PathBuf, PkiError> {
    if !ROLES.contains(&role) {
        return Err(PkiError::UnknownRole(role.to_owned()));
    }
    Ok(dir.join("tokens").join(role))
}

/// The tokens of a token file, first (the one to send) first; blank lines
/// and `#` comments skipped.
pub fn parse_tokens(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Reads a token file.
pub fn read_tokens(path: &Path) -> Result<Vec<String>, PkiError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    Ok(parse_tokens(&text))
}

/// Creates the token files of every role with one new token each, keeping
/// files that exist.
pub fn init_tokens(dir: &Path) -> Result<(), PkiError> {
    for role in ROLES {
        let path = token_path(dir, role)?;
        if !path.exists() {
            write_secret(&path, &format!("{}\n", generate_token()))?;
        }
    }
    Ok(())
}

/// Rotation, step 1: puts a new token first in `role`'s file (sent from now
/// on; the old ones stay accepted). Returns the new token.
pub fn add_token(dir: &Path, role: &str) -> Result<String, PkiError> {
    let path = token_path(dir, role)?;
    let old = if path.exists() {
        read_tokens(&path)?
    } else {
        Vec::new()
    };
    let token = generate_token();
    let mut text = format!("{token}\n");
    for t in old {
        text.push_str(&t);
        text.push('\n');
    }
    write_secret(&path, &text)?;
    Ok(token)
}

/// Rotation, step 2: keeps only the first token of `role`'s file, so the
/// older ones are refused from the servers' next reload.
pub fn retire_tokens(dir: &Path, role: &str) -> Result<usize, PkiError> {
    let path = token_path(dir, role)?;
    let tokens = read_tokens(&path)?;
    let Some(first) = tokens.first() else {
        return Ok(0);
    };
    write_secret(&path, &format!("{first}\n"))?;
    Ok(tokens.len() - 1)
}

/// Writes a secret: the file is created (or truncated) with mode 0600, then
/// replaced atomically, so a reader never sees half a file.
pub fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_file(path, contents, 0o600)
}

/// Writes a public file (a certificate), mode 0644, replaced atomically.
pub fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_file(path, contents, 0o644)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_ca_round_trips_and_issues() {
        let dir = tempdir();
        let ca = Ca::generate("test").unwrap();
        ca.write(&dir).unwrap();
        assert!(matches!(ca.write(&dir), Err(PkiError::Exists(_))));
        let mode = std::fs::metadata(dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Ca::load(&dir).unwrap();
        let issued = loaded
            .issue(&Request::new(
                "m0",
                MASTERS,
                vec!["127.0.0.1".into(), "m0".into()],
            ))
            .unwrap();
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn a_signing_request_gets_the_signers_name_not_its_own() {
        let ca = Ca::generate("test").unwrap();
        let asked = KeyRequest::generate("m0").unwrap();
        let mut request = Request::new("w1", WORKERS, vec!["10.0.0.9".into()]);
        request.not_after = request.not_before + Duration::from_secs(3600);
        let cert = ca.sign_request(&asked.csr_pem, &request).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let parsed = pem.parse_x509().unwrap();
        let subject = parsed.subject().to_string();
        assert!(subject.contains("CN=w1"), "{subject}");
        assert!(subject.contains("O=mkube:workers"), "{subject}");
        let left = not_after(&cert)
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left <= Duration::from_secs(3600), "{left:?}");
        // The certificate is for the requester's key.
        rpc::Identity::from_pem(cert.as_bytes(), asked.key_pem.as_bytes()).unwrap();
        let refused = ca.sign_request(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            &request,
        );
        assert!(
            matches!(refused, Err(PkiError::Certificate { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn tokens_rotate() {
        let dir = tempdir();
        init_tokens(&dir).unwrap();
        let path = token_path(&dir, "user").unwrap();
        let first = read_tokens(&path).unwrap();
        assert_eq!(first.len(), 1);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "token files are secrets");
        let new = add_token(&dir, "user").unwrap();
        assert_eq!(
            read_tokens(&path).unwrap(),
            vec![new.clone(), first[0].clone()]
        );
        assert_eq!(retire_tokens(&dir, "user").unwrap(), 1);
        assert_eq!(read_tokens(&path).unwrap(), vec![new]);
        assert!(matches!(
            token_path(&dir, "root"),
            Err(PkiError::UnknownRole(_))
        ));
        assert_eq!(parse_tokens("# c\n\n a \nb\n"), vec!["a", "b"]);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pki-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

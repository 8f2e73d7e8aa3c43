//! The PKI directory of a test cluster: a fresh cluster CA and tokens per
//! cluster, member certificates issued as members start, and the
//! credentials the tests call with (the CA and the user token, no client
//! certificate, as mkctl).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What a test client presents: a token, and TLS settings when the cluster
/// speaks TLS.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The bearer token.
    pub token: String,
    /// The cluster CA (and possibly a client certificate).
    pub tls: Option<rpc::ClientTls>,
}

/// A cluster's CA and token files, in `dir`.
pub struct TestPki {
    dir: PathBuf,
    ca: pki::Ca,
}

impl TestPki {
    /// Creates the CA and one token per role in `dir`.
    pub fn create(dir: &Path) -> Result<TestPki> {
        let ca = pki::Ca::generate("test")?;
        ca.write(dir)?;
        pki::init_tokens(dir)?;
        Ok(TestPki {
            dir: dir.to_path_buf(),
            ca,
        })
    }

    /// The CA and tokens already in `dir` (made by `mkube-pki init`).
    pub fn open(dir: &Path) -> Result<TestPki> {
        Ok(TestPki {
            dir: dir.to_path_buf(),
            ca: pki::Ca::load(dir)?,
        })
    }

    /// The directory (`--pki-dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate's path.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues `<name>.crt`/`.key` for `hosts` into the directory.
    pub fn issue(&self, name: &str, group: &str, hosts: &[&str]) -> Result<()> {
        let hosts = hosts.iter().map(|h| h.to_string()).collect();
        self.ca
            .issue(&pki::Request::new(name, group, hosts))?
            .write(&self.dir, name)
            .with_context(|| format!("writing the certificate of {name}"))
    }

    /// A worker's own directory, as a worker VM has it: the CA certificate
    /// and the join token, nothing else (no CA key, no member token); the
    /// worker bootstraps its certificate into it. Kept across restarts of
    /// the worker, as a VM's disk is.
    pub fn worker_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.worker_dir_path(name);
        std::fs::create_dir_all(dir.join("tokens"))?;
        std::fs::copy(self.ca_file(), dir.join("ca.crt"))?;
        pki::write_secret(
            &dir.join("tokens/join"),
            &format!("{}\n", self.token("join")?),
        )?;
        Ok(dir)
    }

    /// The certificate worker `name` bootstrapped into its directory.
    pub fn worker_identity(&self, name: &str) -> Result<rpc::Identity> {
        let dir = self.worker_dir_path(name);
        Ok(rpc::Identity::from_files(
            &dir.join(format!("{name}.crt")),
            &dir.join(format!("{name}.key")),
        )?)
    }

    fn worker_dir_path(&self, name: &str) -> PathBuf {
        self.dir
            .parent()
            .unwrap_or(&self.dir)
            .join(format!("node-{name}"))
    }

    /// A certificate for `name` in `group` written into `dir` (a
    /// Prometheus' viewer certificate, say).
    pub fn issue_into(&self, dir: &Path, name: &str, group: &str, hosts: &[&str]) -> Result<()> {
        let hosts = hosts.iter().map(|h| h.to_string()).collect();
        Ok(self
            .ca
            .issue(&pki::Request::new(name, group, hosts))?
            .write(dir, name)?)
    }

    /// The identity issued to `name` (after [`TestPki::issue`]).
    pub fn identity(&self, name: &str) -> Result<rpc::Identity> {
        Ok(rpc::Identity::from_files(
            &self.dir.join(format!("{name}.crt")),
            &self.dir.join(format!("{name}.key")),
        )?)
    }

    /// The token `role` sends now (the first line of its file).
    pub fn token(&self, role: &str) -> Result<String> {
        let path = pki::token_path(&self.dir, role)?;
        pki::read_tokens(&path)?
            .into_iter()
            .next()
            .with_context(|| format!("{} is empty", path.display()))
    }

    /// TLS settings trusting the CA, presenting `identity` if given.
    pub fn client_tls(&self, identity: Option<rpc::Identity>) -> Result<rpc::ClientTls> {
        let roots = rpc::Roots::from_file(&self.ca_file())?;
        Ok(rpc::ClientTls::new(&roots, identity)?)
    }

    /// A user's credentials: the user token and the CA, no certificate.
    pub fn user(&self) -> Result<Credentials> {
        self.role("user")
    }

    /// The credentials of a token of `role`, and the CA, no certificate.
    pub fn role(&self, role: &str) -> Result<Credentials> {
        Ok(Credentials {
            token: self.token(role)?,
            tls: Some(self.client_tls(None)?),
        })
    }
}

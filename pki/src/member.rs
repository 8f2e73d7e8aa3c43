//! A member's TLS settings and tokens, from a PKI directory or from
//! secrets, kept current while it runs.
//!
//! A master accepts tokens of every role (what each role may call is
//! [`master_rules`]; a member token counts only with a masters'
//! certificate) and sends the member token. A worker takes no token at all:
//! it knows the masters' probes by their certificates ([`worker_rules`]);
//! it sends the join token. Token files are read again every
//! [`RELOAD_INTERVAL`]: a rotation needs no restart of the servers.
//!
//! Invariants: the accepted set is only replaced by a complete, valid read
//! of the files (a file being rewritten is skipped until whole: writers
//! rename, see [`crate::write_secret`]); a failed read keeps the previous set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Ca, PkiError, Request};

/// How often token files are read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Which side of the cluster a member is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A master: Raft, the API, probes.
    Master,
    /// A worker: runs pods, answers probes.
    Worker,
}

impl Kind {
    /// The roles whose tokens this kind's server accepts.
    pub fn accepts(self) -> &'static [&'static str] {
        match self {
            Kind::Master => &crate::ROLES,
            Kind::Worker => &[],
        }
    }

    /// The role of the token this kind sends.
    pub fn sends(self) -> &'static str {
        match self {
            Kind::Master => "member",
            Kind::Worker => "join",
        }
    }

    /// The certificate group of this kind.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Master => crate::MASTERS,
            Kind::Worker => crate::WORKERS,
        }
    }
}

/// What a member needs to speak TLS and authenticate.
#[derive(Clone, Debug)]
pub struct Security {
    /// For its listener.
    pub server: rpc::ServerTls,
    /// For its calls to other members (presents its certificate).
    pub client: rpc::ClientTls,
    /// The tokens its listener accepts, live.
    pub accepted: rpc::Tokens,
    /// The token it sends.
    pub send: String,
    kind: Kind,
    dir: Option<PathBuf>,
}

impl Security {
    /// Loads `ca.crt`, `<name>.crt`, `<name>.key` and the token files from
    /// a PKI directory.
    pub fn load(dir: &Path, name: &str, kind: Kind) -> Result<Security, PkiError> {
        let tls = |e: rpc::TlsError| PkiError::Certificate {
            what: format!("loading the TLS files of {name} from {}", dir.display()),
            reason: e.to_string(),
        };
        let identity = rpc::Identity::from_files(
            &dir.join(format!("{name}.crt")),
            &dir.join(format!("{name}.key")),
        )
        .map_err(tls)?;
        let identity = rpc::LiveIdentity::new(identity).map_err(tls)?;
        Security::load_live(dir, &identity, kind)
    }

    /// Loads `ca.crt` and the token files from a PKI directory, and
    /// presents whatever `identity` holds (a worker's bootstrapped and
    /// renewed certificate).
    pub fn load_live(
        dir: &Path,
        identity: &rpc::LiveIdentity,
        kind: Kind,
    ) -> Result<Security, PkiError> {
        let roots =
            rpc::Roots::from_file(&dir.join("ca.crt")).map_err(|e| PkiError::Certificate {
                what: format!("loading the CA certificate from {}", dir.display()),
                reason: e.to_string(),
            })?;
        let tokens = read_role_tokens(dir, kind)?;
        Security::with_live(&roots, identity, kind, &tokens, Some(dir))
    }

    /// A member presenting whatever `identity` holds, trusting `roots`,
    /// with `tokens` by role (re-read from `dir` if given).
    pub fn with_live(
        roots: &rpc::Roots,
        identity: &rpc::LiveIdentity,
        kind: Kind,
        tokens: &BTreeMap<String, Vec<String>>,
        dir: Option<&Path>,
    ) -> Result<Security, PkiError> {
        let mut security = Security::assemble(roots, identity, kind, tokens)?;
        security.dir = dir.map(Path::to_path_buf);
        Ok(security)
    }

    /// Builds a member's security from the CA itself (as fetched from Key
    /// Vault): issues its own certificate for `hosts` in memory.
    pub fn issue(
        ca: &Ca,
        name: &str,
        hosts: Vec<String>,
        kind: Kind,
        tokens: &BTreeMap<String, Vec<String>>,
    ) -> Result<Security, PkiError> {
        let issued = ca.issue(&Request::new(name, kind.group(), hosts))?;
        let tls = |e: rpc::TlsError| PkiError::Certificate {
            what: format!("using the certificate issued for {name}"),
            reason: e.to_string(),
        };
        let roots = rpc::Roots::from_pem(ca.cert_pem().as_bytes()).map_err(tls)?;
        let identity =
            rpc::Identity::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
                .and_then(rpc::LiveIdentity::new)
                .map_err(tls)?;
        Security::assemble(&roots, &identity, kind, tokens)
    }

    fn assemble(
        roots: &rpc::Roots,
        identity: &rpc::LiveIdentity,
        kind: Kind,
        tokens: &BTreeMap<String, Vec<String>>,
    ) -> Result<Security, PkiError> {
        let tls = |e: rpc::TlsError| PkiError::Certificate {
            what: "configuring TLS".into(),
            reason: e.to_string(),
        };
        let server = rpc::ServerTls::live(roots, identity).map_err(tls)?;
        let client = rpc::ClientTls::live(roots, identity).map_err(tls)?;
        let send = tokens
            .get(kind.sends())
            .and_then(|t| t.first())
            .cloned()
            .ok_or_else(|| PkiError::Certificate {
                what: "choosing the token to send".into(),
                reason: format!("no {} token", kind.sends()),
            })?;
        let accepted = if kind.accepts().is_empty() {
            rpc::Tokens::default()
        } else {
            rpc::Tokens::new(accepted(kind, tokens)).map_err(|e| PkiError::Certificate {
                what: "reading the tokens".into(),
                reason: e.to_string(),
            })?
        };
        Ok(Security {
            server,
            client,
            accepted,
            send,
            kind,
            dir: None,
        })
    }

    /// Reads the token files again and replaces the accepted set if they
    /// changed; returns whether they did.
    pub fn reload(&self) -> Result<bool, PkiError> {
        let Some(dir) = &self.dir else {
            return Ok(false);
        };
        let tokens = read_role_tokens(dir, self.kind)?;
        self.set_tokens(&tokens)
    }

    /// Replaces the accepted set with `tokens` (by role) if it differs;
    /// returns whether it did. For tokens kept elsewhere (Key Vault).
    pub fn set_tokens(&self, tokens: &BTreeMap<String, Vec<String>>) -> Result<bool, PkiError> {
        let new = accepted(self.kind, tokens);
        if new == self.accepted.snapshot() || self.kind.accepts().is_empty() {
            return Ok(false);
        }
        self.accepted
            .replace(new)
            .map_err(|e| PkiError::Certificate {
                what: "reloading the tokens".into(),
                reason: e.to_string(),
            })?;
        Ok(true)
    }

    /// Replaces the accepted tokens with what `fetch` returns every `every`
    /// (tokens kept in Key Vault); a failed fetch keeps the current ones.
    pub fn spawn_refresh<F, Fut, E>(&self, every: Duration, fetch: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<BTreeMap<String, Vec<String>>, E>> + Send,
        E: std::fmt::Display,
    {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let changed = match fetch().await {
                    Ok(tokens) => this.set_tokens(&tokens).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match changed {
                    Ok(true) => {
                        tracing::info!("tokens changed at their source: accepted tokens replaced")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot refresh the tokens; keeping the current ones")
                    }
                }
            }
        });
    }

    /// Reloads the token files every [`RELOAD_INTERVAL`] for as long as the
    /// runtime runs (nothing to do without a PKI directory).
    pub fn spawn_reload(&self) {
        if self.dir.is_none() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            loop {
                tick.tick().await;
                match this.reload() {
                    Ok(true) => tracing::info!(
                        tokens = this.accepted.len(),
                        "token files changed: accepted tokens replaced"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reload the token files; keeping the current tokens")
                    }
                }
            }
        });
    }
}

/// The connection limits of a member's listener, as command-line flags
/// (the same on masters, workers and `kvs-node`).
#[derive(Debug, Clone, clap::Args)]
pub struct ListenerFlags {
    /// Most client connections (without a certificate of the cluster CA)
    /// open at once; more are closed as they arrive.
    #[arg(long, default_value_t = rpc::server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most client connections from one address open at once.
    #[arg(long, default_value_t = rpc::server::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Connections reserved for members (masters and workers, which show a
    /// certificate of the cluster CA): clients cannot take them.
    #[arg(long, default_value_t = rpc::server::DEFAULT_MAX_MEMBER_CONNECTIONS)]
    pub max_member_connections: usize,
    /// Time a client has to send a request's header, counted from the
    /// connection's start or its previous answer (also the idle timeout).
    #[arg(long, default_value_t = rpc::server::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64)]
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's body after its header.
    #[arg(long, default_value_t = rpc::server::DEFAULT_BODY_READ_TIMEOUT.as_millis() as u64)]
    pub body_read_timeout_ms: u64,
}

impl Default for ListenerFlags {
    fn default() -> Self {
        ListenerFlags {
            max_connections: rpc::server::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: rpc::server::DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_member_connections: rpc::server::DEFAULT_MAX_MEMBER_CONNECTIONS,
            header_read_timeout_ms: rpc::server::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64,
            body_read_timeout_ms: rpc::server::DEFAULT_BODY_READ_TIMEOUT.as_millis() as u64,
        }
    }
}

impl ListenerFlags {
    fn apply(&self, builder: rpc::ServerBuilder) -> rpc::ServerBuilder {
        builder
            .max_connections(self.max_connections)
            .max_connections_per_ip(self.max_connections_per_ip)
            .max_member_connections(self.max_member_connections)
            .header_read_timeout(Duration::from_millis(self.header_read_timeout_ms.max(1)))
            .body_read_timeout(Duration::from_millis(self.body_read_timeout_ms.max(1)))
    }
}

/// A server builder for a member's listener: with `security`, TLS, the
/// access rules of its kind, and for a master its live tokens (reloaded);
/// without (`--insecure`), plain HTTP taking `token` (or anyone, with none).
pub fn server_builder(
    security: Option<&Security>,
    token: Option<&str>,
    limits: &ListenerFlags,
) -> rpc::ServerBuilder {
    let Some(security) = security else {
        return limits.apply(rpc::Server::builder(match token {
            Some(t) => rpc::Auth::Bearer(vec![t.to_owned()]),
            None => rpc::Auth::None,
        }));
    };
    let (auth, rules) = match security.kind {
        Kind::Master => (rpc::Auth::Tokens(security.accepted.clone()), master_rules()),
        Kind::Worker => (rpc::Auth::Certificates, worker_rules()),
    };
    let mut server = limits
        .apply(rpc::Server::builder(auth).tls(security.server.clone()))
        .bind_role("member", crate::MASTERS);
    for (prefix, access) in rules {
        server = server.restrict(prefix, access);
    }
    security.spawn_reload();
    server
}

fn accepted(kind: Kind, tokens: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
    kind.accepts()
        .iter()
        .flat_map(|role| {
            tokens
                .get(*role)
                .into_iter()
                .flatten()
                .map(move |t| (role.to_string(), t.clone()))
        })
        .collect()
}

/// The token files a kind needs: the roles it accepts and the one it sends.
fn read_role_tokens(dir: &Path, kind: Kind) -> Result<BTreeMap<String, Vec<String>>, PkiError> {
    let mut roles: Vec<&str> = kind.accepts().to_vec();
    if !roles.contains(&kind.sends()) {
        roles.push(kind.sends());
    }
    let mut out = BTreeMap::new();
    for role in roles {
        let path = crate::token_path(dir, role)?;
        out.insert(role.to_string(), crate::read_tokens(&path)?);
    }
    Ok(out)
}

/// Who may call what on a master's TLS listener (the longest matching
/// prefix applies; a `member` token counts only with a masters'
/// certificate, everywhere). The README's access table is this list.
///
/// | role    | may call                                                      |
/// |---------|---------------------------------------------------------------|
/// | admin   | everything, raw `/Kv/` writes included                        |
/// | user    | the Master API; `/Kv/` reads and status                       |
/// | viewer  | get, list, watch, `/metrics`, `/Kv/status`                    |
/// | join    | bootstrap and renew a worker certificate, join, and drain or  |
/// |         | prepare the eviction of its own node (the handlers check it)  |
/// | member  | everything, with a masters' certificate                       |
pub fn master_rules() -> Vec<(&'static str, rpc::Access)> {
    use rpc::Access;
    const ADMIN: [&str; 2] = ["admin", "member"];
    const USERS: [&str; 3] = ["admin", "user", "member"];
    const READERS: [&str; 4] = ["admin", "user", "viewer", "member"];
    let masters_only = || Access::roles(&["member"]).with_certificate(&[crate::MASTERS]);
    vec![
        // Raft and the metric fan-out: only masters, by certificate and token.
        ("/RaftPeer/", masters_only()),
        ("/Master/figures", masters_only()),
        ("/Master/record_metrics", masters_only()),
        // Anyone may ask what it may do.
        (
            "/Master/review_access",
            Access::roles(&["admin", "user", "viewer", "join", "member"]),
        ),
        // Workers: bootstrap by join token; the rest as their own node,
        // which the handlers check against the worker's certificate.
        ("/Master/bootstrap", Access::roles(&["join", "admin"])),
        (
            "/Master/renew",
            Access::roles(&["join"]).with_certificate(&[crate::WORKERS]),
        ),
        ("/Master/join", Access::roles(&["join", "admin", "member"])),
        (
            "/Master/drain",
            Access::roles(&["admin", "user", "member", "join"]),
        ),
        (
            "/Master/prepare_eviction",
            Access::roles(&["admin", "member", "join"]),
        ),
        // Reading the API.
        ("/Master/get", Access::roles(&READERS)),
        ("/Master/list", Access::roles(&READERS)),
        ("/Master/watch", Access::roles(&READERS)),
        ("/Master/", Access::roles(&USERS)),
        // The store itself: users read, only admins write.
        ("/Kv/get", Access::roles(&["admin", "user", "member"])),
        ("/Kv/range", Access::roles(&["admin", "user", "member"])),
        ("/Kv/watch", Access::roles(&["admin", "user", "member"])),
        ("/Kv/status", Access::roles(&READERS)),
        ("/Kv/", Access::roles(&ADMIN)),
        ("/metrics", Access::roles(&READERS)),
        // Anything else (a service mounted later): admins only.
        ("/", Access::roles(&ADMIN)),
    ]
}

/// Who may call a worker: the masters (probes, logs, exec), by their
/// certificates; `/metrics` also a viewer's certificate (Prometheus).
pub fn worker_rules() -> Vec<(&'static str, rpc::Access)> {
    vec![
        ("/Worker/", rpc::Access::certificate(&[crate::MASTERS])),
        (
            "/metrics",
            rpc::Access::certificate(&[crate::MASTERS, crate::VIEWERS]),
        ),
    ]
}

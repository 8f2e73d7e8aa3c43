//! Contexts: which cluster mkctl talks to, with which token, in which
//! namespace. Kept in `~/.mkube/config` (or `$MKUBECONFIG`), YAML:
//!
//! ```yaml
//! current-context: local
//! contexts:
//! - name: local
//!   servers: ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
//!   token: "..."
//!   certificate-authority: /home/me/.mkube/local/ca.crt
//!   namespace: default
//! ```
//!
//! `--server`, `--token`, `--certificate-authority` and `--insecure`
//! override the context, as with kubectl. Servers are verified against the
//! certificate authority (TLS); a context without one must say `insecure:
//! true` (a cluster started with `--insecure`), else mkctl refuses to send
//! the token.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::CliError;

/// The config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// The context used when `--context` is not given.
    #[serde(default)]
    pub current_context: Option<String>,
    /// Every context.
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// One cluster and the identity used with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Its name.
    pub name: String,
    /// The masters (`host:port`); any one will do.
    pub servers: Vec<String>,
    /// The bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// The cluster CA's certificate (PEM file): servers must present a
    /// certificate it signed for the address dialled.
    #[serde(
        default,
        rename = "certificate-authority",
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority: Option<PathBuf>,
    /// The name the masters' certificates must carry when it is not the
    /// address dialled (`masters.mkube` for masters reached at public IPs).
    #[serde(
        default,
        rename = "tls-server-name",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_server_name: Option<String>,
    /// Plain HTTP, for clusters started with `--insecure`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// The namespace when `-n` is not given.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// What a command connects with, after flags and the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The masters to try, in order.
    pub servers: Vec<String>,
    /// The token.
    pub token: Option<String>,
    /// The CA servers are verified against.
    pub certificate_authority: Option<PathBuf>,
    /// The name servers' certificates must carry, if not the host dialled.
    pub tls_server_name: Option<String>,
    /// Plain HTTP.
    pub insecure: bool,
    /// The default namespace.
    pub namespace: String,
}

/// The flags that choose the target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags<'a> {
    /// `--context`.
    pub context: Option<&'a str>,
    /// `--server`.
    pub server: Option<&'a str>,
    /// `--token`.
    pub token: Option<&'a str>,
    /// `--certificate-authority`.
    pub certificate_authority: Option<&'a Path>,
    /// `--tls-server-name`.
    pub tls_server_name: Option<&'a str>,
    /// `--insecure`.
    pub insecure: bool,
}

/// The config file's path: `$MKUBECONFIG`, else `~/.mkube/config`.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MKUBECONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".mkube").join("config"))
}

/// Reads the config file; a missing file is an empty config.
pub fn load(path: &Path) -> Result<Config, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_yaml_ng::from_str(&text).map_err(|e| {
            CliError::client(format!(
                "the config file {} is invalid: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(CliError::client(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the config file (0600: it holds tokens).
pub fn save(path: &Path, config: &Config) -> Result<(), CliError> {
    let text = serde_yaml_ng::to_string(config)
        .map_err(|e| CliError::client(format!("cannot encode the config: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::client(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, text)
        .map_err(|e| CliError::client(format!("cannot write {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(())
}

impl Config {
    /// The target for these flags.
    pub fn target(&self, flags: &Flags<'_>) -> Result<Target, CliError> {
        let Flags {
            context,
            server,
            token,
            certificate_authority,
            tls_server_name,
            insecure,
        } = *flags;
        let name = context.or(self.current_context.as_deref());
        let ctx = match name {
            Some(n) => match self.contexts.iter().find(|c| c.name == n) {
                Some(c) => Some(c),
                None if context.is_some() || server.is_none() => {
                    return Err(CliError::client(format!(
                        "context {n:?} is not in the config file; known: {}",
                        self.names()
                    )));
                }
                None => None,
            },
            None => None,
        };
        let servers = match (server, ctx) {
            (Some(s), _) => s
                .split(',')
                .map(|a| {
                    a.trim()
                        .trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .to_string()
                })
                .filter(|a| !a.is_empty())
                .collect(),
            (None, Some(c)) => c.servers.clone(),
            (None, None) => {
                return Err(CliError::client(
                    "no cluster configured: pass --server HOST:PORT, or add a context to ~/.mkube/config (mkctl config set-context)",
                ));
            }
        };
        Ok(Target {
            servers,
            token: token
                .map(str::to_string)
                .or_else(|| ctx.and_then(|c| c.token.clone())),
            certificate_authority: certificate_authority
                .map(Path::to_path_buf)
                .or_else(|| ctx.and_then(|c| c.certificate_authority.clone())),
            tls_server_name: tls_server_name
                .map(str::to_owned)
                .or_else(|| ctx.and_then(|c| c.tls_server_name.clone())),
            insecure: insecure || ctx.is_some_and(|c| c.insecure),
            namespace: ctx
                .and_then(|c| c.namespace.clone())
                .unwrap_or_else(|| "default".into()),
        })
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.contexts.iter().map(|c| c.name.as_str()).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    /// Adds or replaces a context and makes it current.
    pub fn set_context(&mut self, ctx: Context) {
        self.current_context = Some(ctx.name.clone());
        match self.contexts.iter_mut().find(|c| c.name == ctx.name) {
            Some(c) => *c = ctx,
            None => self.contexts.push(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_context() {
        let mut config = Config::default();
        config.set_context(Context {
            name: "a".into(),
            servers: vec!["1:1".into()],
            token: Some("t".into()),
            certificate_authority: Some("ca.crt".into()),
            tls_server_name: None,
            insecure: false,
            namespace: Some("ns".into()),
        });
        let t = config.target(&Flags::default()).expect("target");
        assert_eq!(t.certificate_authority, Some(PathBuf::from("ca.crt")));
        assert_eq!(
            (
                t.servers[0].as_str(),
                t.token.as_deref(),
                t.namespace.as_str()
            ),
            ("1:1", Some("t"), "ns")
        );
        let t = config
            .target(&Flags {
                server: Some("2:2,https://3:3"),
                token: Some("u"),
                certificate_authority: Some(Path::new("other.crt")),
                ..Flags::default()
            })
            .expect("target");
        assert_eq!(t.servers, vec!["2:2", "3:3"]);
        assert_eq!(t.certificate_authority, Some(PathBuf::from("other.crt")));
        assert_eq!(t.token.as_deref(), Some("u"));
        let e = config
            .target(&Flags {
                context: Some("b"),
                ..Flags::default()
            })
            .expect_err("unknown context");
        assert!(e.to_string().contains("\"b\""), "{e}");
        assert!(Config::default().target(&Flags::default()).is_err());
    }
}

//! Contexts: which cluster mkctl talks to, with which token, in which
//! namespace. Kept in `~/.mkube/config` (or `$MKUBECONFIG`), YAML:
//!
//! ```yaml
//! current-context: local
//! contexts:
//! - name: local
//!   servers: ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
//!   token: "..."
//!   namespace: default
//! ```
//!
//! `--server` and `--token` override the context, as with kubectl.

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
    /// The default namespace.
    pub namespace: String,
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
    pub fn target(
        &self,
        context: Option<&str>,
        server: Option<&str>,
        token: Option<&str>,
    ) -> Result<Target, CliError> {
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
                .map(|a| a.trim().trim_start_matches("http://").to_string())
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
            namespace: Some("ns".into()),
        });
        let t = config.target(None, None, None).expect("target");
        assert_eq!(
            (
                t.servers[0].as_str(),
                t.token.as_deref(),
                t.namespace.as_str()
            ),
            ("1:1", Some("t"), "ns")
        );
        let t = config
            .target(None, Some("2:2,3:3"), Some("u"))
            .expect("target");
        assert_eq!(t.servers, vec!["2:2", "3:3"]);
        assert_eq!(t.token.as_deref(), Some("u"));
        let e = config
            .target(Some("b"), None, None)
            .expect_err("unknown context");
        assert!(e.to_string().contains("\"b\""), "{e}");
        assert!(Config::default().target(None, None, None).is_err());
    }
}

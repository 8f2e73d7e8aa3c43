//! `mkctl config`: contexts in the config file.

use crate::config::{self, Context};
use crate::errors::CliError;

use super::ConfigCmd;

/// What the global flags say about a cluster's TLS, for `config set-context`.
pub(super) struct ContextTls {
    pub(super) certificate_authority: Option<std::path::PathBuf>,
    pub(super) tls_server_name: Option<String>,
    pub(super) insecure: bool,
}

pub(super) fn config_command(
    action: ConfigCmd,
    path: Option<&std::path::Path>,
    tls: &ContextTls,
) -> Result<(), CliError> {
    let path = path.ok_or_else(|| CliError::client("no config file: set HOME or MKUBECONFIG"))?;
    let mut cfg = config::load(path)?;
    match action {
        ConfigCmd::SetContext {
            name,
            servers,
            token_file,
            default_namespace,
        } => {
            // The global --certificate-authority (kept as an absolute path)
            // and --insecure describe the cluster.
            let ca_file = tls
                .certificate_authority
                .clone()
                .map(|f| {
                    let f = std::path::absolute(&f).unwrap_or(f);
                    rpc::Roots::from_file(&f)
                        .map(|_| f)
                        .map_err(|e| CliError::client(format!("the certificate authority {e}")))
                })
                .transpose()?;
            let token = token_file
                .map(|f| {
                    // The first token of the file: a token file being
                    // rotated lists the new token first (see mkube-pki).
                    std::fs::read_to_string(&f)
                        .map(|t| {
                            t.lines()
                                .map(str::trim)
                                .find(|l| !l.is_empty() && !l.starts_with('#'))
                                .unwrap_or_default()
                                .to_string()
                        })
                        .map_err(|e| CliError::client(format!("cannot read {}: {e}", f.display())))
                })
                .transpose()?;
            cfg.set_context(Context {
                name: name.clone(),
                servers,
                token,
                certificate_authority: ca_file,
                tls_server_name: tls.tls_server_name.clone(),
                insecure: tls.insecure,
                namespace: default_namespace,
            });
            config::save(path, &cfg)?;
            println!("Context \"{name}\" set and in use.");
        }
        ConfigCmd::DeleteContext { name } => {
            let before = cfg.contexts.len();
            cfg.contexts.retain(|c| c.name != name);
            if cfg.contexts.len() == before {
                return Err(CliError::client(format!(
                    "no context exists with the name: {name:?}"
                )));
            }
            if cfg.current_context.as_deref() == Some(name.as_str()) {
                cfg.current_context = None;
            }
            config::save(path, &cfg)?;
            println!("deleted context {name} from {}", path.display());
        }
        ConfigCmd::UseContext { name } => {
            if !cfg.contexts.iter().any(|c| c.name == name) {
                return Err(CliError::client(format!(
                    "no context exists with the name: {name:?}"
                )));
            }
            cfg.current_context = Some(name.clone());
            config::save(path, &cfg)?;
            println!("Switched to context \"{name}\".");
        }
        ConfigCmd::View => {
            for c in &mut cfg.contexts {
                if c.token.is_some() {
                    c.token = Some("REDACTED".into());
                }
            }
            print!(
                "{}",
                serde_yaml_ng::to_string(&cfg).map_err(|e| CliError::client(e.to_string()))?
            );
        }
    }
    Ok(())
}

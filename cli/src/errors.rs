//! mkctl's errors, printed in kubectl's two styles: `Error from server
//! (Reason): ...` when a master refused the request, `error: ...` for
//! everything else. Either way one line on stderr and exit code 1.

use api::master::MasterError;

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// A master answered with a refusal.
    #[error("Error from server ({reason}): {message}")]
    Server {
        /// kubectl's reason word (`NotFound`, `Invalid`, `Conflict`, ...).
        reason: &'static str,
        /// What the server said.
        message: String,
    },
    /// The request never got an answer, or mkctl itself refuses it.
    #[error("error: {0}")]
    Client(String),
    /// Already reported (a failed object among several); just exit 1.
    #[error("")]
    Silent,
}

impl CliError {
    /// An `error: ...`.
    pub fn client(message: impl Into<String>) -> CliError {
        CliError::Client(message.into())
    }

    /// The error for an RPC to `server` that failed.
    pub fn from_rpc(e: &rpc::Error, server: &str) -> CliError {
        if let Some(m) = MasterError::from_rpc(e) {
            let reason = match &m {
                MasterError::InvalidArgument(_) => "BadRequest",
                MasterError::Invalid { .. } => "Invalid",
                MasterError::NotFound { .. } => "NotFound",
                MasterError::AlreadyExists { .. } => "AlreadyExists",
                MasterError::Conflict { .. } => "Conflict",
                MasterError::Expired(_) => "Expired",
                // Kubernetes 1.32 names a corrupt stored object so.
                MasterError::Unreadable { .. } => "StoreReadError",
                MasterError::Unavailable(_) => "ServiceUnavailable",
                MasterError::Forbidden(_) => "Forbidden",
            };
            return CliError::Server {
                reason,
                message: m.to_string(),
            };
        }
        match e {
            rpc::Error::Status(s) if s.code == rpc::Code::Unauthenticated => {
                CliError::client(format!(
                    "You must be logged in to the server (Unauthorized): {server} refused the token; check --token or the context's token"
                ))
            }
            rpc::Error::Status(s) => CliError::Server {
                reason: code_reason(s.code),
                message: s.message.clone(),
            },
            rpc::Error::Transport(t) if t.to_string().contains("TLS") => {
                // A certificate problem is not an outage: no other master is
                // tried with the token, and the mismatch is named.
                CliError::client(format!(
                    "TLS verification of {server} failed: {t}; check the context's certificate-authority and the server address"
                ))
            }
            rpc::Error::Transport(t) => {
                CliError::client(format!("cannot reach the cluster at {server}: {t}"))
            }
            rpc::Error::DeadlineExceeded { timeout, .. } => CliError::client(format!(
                "the server {server} did not answer within {timeout:?}"
            )),
            other => CliError::client(format!("{server}: {other}")),
        }
    }

    /// Whether the cluster could not be reached (another master may do).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CliError::Client(m) if m.starts_with("cannot reach") || m.contains("did not answer"))
            || matches!(
                self,
                CliError::Server {
                    reason: "ServiceUnavailable",
                    ..
                }
            )
    }
}

fn code_reason(code: rpc::Code) -> &'static str {
    match code {
        rpc::Code::InvalidArgument => "BadRequest",
        rpc::Code::NotFound => "NotFound",
        rpc::Code::AlreadyExists => "AlreadyExists",
        rpc::Code::Aborted => "Conflict",
        rpc::Code::PermissionDenied => "Forbidden",
        rpc::Code::PayloadTooLarge => "RequestEntityTooLarge",
        rpc::Code::Unavailable => "ServiceUnavailable",
        _ => "InternalError",
    }
}

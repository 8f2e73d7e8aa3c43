//! Errors a caller sees, and configuration errors.
//!
//! [`Error`] separates three situations a caller handles differently:
//! the server answered with a [`Status`] (an application or protocol-level
//! refusal: act on its code); the deadline passed; or the transport failed
//! (retry elsewhere, minding [`TransportError::may_have_run`]).

use std::sync::Arc;
use std::time::Duration;

use crate::status::{Code, Status};

/// The result of a failed call, as the client sees it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The server answered with an error envelope.
    #[error(transparent)]
    Status(#[from] Status),
    /// The call's deadline passed before the response arrived.
    #[error("{path}: deadline of {timeout:?} exceeded")]
    DeadlineExceeded {
        /// The method's path.
        path: &'static str,
        /// The deadline the call had.
        timeout: Duration,
    },
    /// The call did not complete: no connection, a lost connection, or a
    /// response that is not valid HTTP.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The request could not be encoded as JSON (nothing was sent).
    #[error("{path}: cannot encode the request: {reason}")]
    Encode {
        /// The method's path.
        path: &'static str,
        /// serde_json's explanation.
        reason: String,
    },
    /// The server answered 200 with a body that is not the response type
    /// (a version skew between client and server).
    #[error("{path}: cannot decode the response: {reason}")]
    Decode {
        /// The method's path.
        path: &'static str,
        /// serde_json's explanation.
        reason: String,
    },
}

impl Error {
    /// The [`Code`] a caller acts on: the server's code for a [`Status`],
    /// `DeadlineExceeded`, `Unavailable` for transport failures, and
    /// `InvalidArgument` / `Internal` for encoding / decoding failures.
    pub fn code(&self) -> Code {
        match self {
            Error::Status(s) => s.code,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Transport(_) => Code::Unavailable,
            Error::Encode { .. } => Code::InvalidArgument,
            Error::Decode { .. } => Code::Internal,
        }
    }

    /// The server's status, if it answered with one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Status(s) => Some(s),
            _ => None,
        }
    }
}

/// The ways a call can fail below the RPC layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made; the request was not sent.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why the connection failed.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The connection broke after the request was written and before its
    /// response arrived: the server may or may not have run the call.
    #[error(
        "connection to {addr} lost before the response arrived ({reason}); the call may or may not have run"
    )]
    ConnectionLost {
        /// The peer.
        addr: String,
        /// What was observed.
        reason: String,
    },
    /// The peer answered with something that is not a valid response.
    #[error("invalid response from {addr}: {reason}")]
    Protocol {
        /// The peer.
        addr: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl TransportError {
    /// Whether the server may have run the call (so a retry must be idempotent).
    pub fn may_have_run(&self) -> bool {
        !matches!(self, TransportError::Connect { .. })
    }
}

/// A server or client was configured in a way that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bearer token is empty or contains characters not allowed in an HTTP header.
    #[error("bearer token #{index} is invalid: {reason}")]
    InvalidToken {
        /// Its position in the list given (0 for a client's token).
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A server that knows its callers by certificate only must speak TLS.
    #[error("a server that authenticates callers by client certificate needs TLS")]
    CertificatesWithoutTls,
    /// Two services with the same name were mounted on one server.
    #[error("service `{0}` is mounted twice")]
    DuplicateService(&'static str),
    /// The address is not `host:port` (optionally with an `http://` prefix).
    #[error("invalid server address `{addr}`: {reason}")]
    InvalidAddress {
        /// The address given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Checks that a bearer token can travel in an HTTP header unchanged.
pub(crate) fn check_token(index: usize, token: &str) -> Result<(), ConfigError> {
    let invalid = |reason| Err(ConfigError::InvalidToken { index, reason });
    if token.is_empty() {
        return invalid("it is empty");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return invalid("only visible ASCII characters (no spaces or line breaks) are allowed");
    }
    Ok(())
}

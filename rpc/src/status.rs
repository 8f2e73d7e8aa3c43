//! The error envelope every failed call answers with, and its HTTP mapping.
//!
//! [`Code::http_status`] is the only place in mkube where an error becomes an
//! HTTP status; [`Code::from_http_status`] is its inverse for responses that
//! carry no envelope. Internal errors are logged with their source where they
//! are created and leave the process as an opaque `Internal` status.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong, in words a caller can act on (gRPC's codes, as Kubernetes
/// and etcd users know them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Code {
    /// The request is malformed or names something invalid; do not retry as is.
    InvalidArgument,
    /// The named object, service or method does not exist.
    NotFound,
    /// The object to create exists already.
    AlreadyExists,
    /// The system is not in the state the call requires (e.g. a stale revision).
    FailedPrecondition,
    /// The call lost a race (e.g. a compare-and-set); retry from a fresh read.
    Aborted,
    /// The request carries no valid credentials.
    Unauthenticated,
    /// The credentials are valid but do not allow this call.
    PermissionDenied,
    /// The request body exceeds the server's limit.
    PayloadTooLarge,
    /// A quota or rate limit is exhausted; retry later.
    ResourceExhausted,
    /// The call's deadline passed before it completed.
    DeadlineExceeded,
    /// The service cannot answer now (not leader, shutting down); retry with back-off.
    Unavailable,
    /// The call was cancelled.
    Cancelled,
    /// A bug or unexpected failure on the server; details are in its log.
    Internal,
    /// A code this version does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl Code {
    /// The HTTP status this code is sent with.
    pub fn http_status(self) -> u16 {
        match self {
            Code::InvalidArgument => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::FailedPrecondition => 412,
            Code::PayloadTooLarge => 413,
            Code::ResourceExhausted => 429,
            Code::Cancelled => 499,
            Code::Internal | Code::Unknown => 500,
            Code::Unavailable => 503,
            Code::DeadlineExceeded => 504,
        }
    }

    /// The code a response with this HTTP status and no envelope stands for.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 | 405 => Code::NotFound,
            409 => Code::Aborted,
            412 => Code::FailedPrecondition,
            413 => Code::PayloadTooLarge,
            429 => Code::ResourceExhausted,
            499 => Code::Cancelled,
            502..=503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            500 => Code::Internal,
            _ => Code::Unknown,
        }
    }

    /// The code's name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "InvalidArgument",
            Code::NotFound => "NotFound",
            Code::AlreadyExists => "AlreadyExists",
            Code::FailedPrecondition => "FailedPrecondition",
            Code::Aborted => "Aborted",
            Code::Unauthenticated => "Unauthenticated",
            Code::PermissionDenied => "PermissionDenied",
            Code::PayloadTooLarge => "PayloadTooLarge",
            Code::ResourceExhausted => "ResourceExhausted",
            Code::DeadlineExceeded => "DeadlineExceeded",
            Code::Unavailable => "Unavailable",
            Code::Cancelled => "Cancelled",
            Code::Internal => "Internal",
            Code::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error envelope: `{"code": ..., "message": ..., "details": ...}`.
///
/// `details` is optional structured data for callers that act on it (a kvs
/// `NotLeader` carries the leader's address there); it is omitted when empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Status {
    /// What kind of failure this is.
    pub code: Code,
    /// A sentence for people: what failed and, where possible, how to fix it.
    pub message: String,
    /// Machine-readable details, if the service defines any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Attaches machine-readable details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// [`Code::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// [`Code::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// [`Code::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, message)
    }

    /// [`Code::FailedPrecondition`].
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }

    /// [`Code::Unauthenticated`].
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    /// [`Code::DeadlineExceeded`].
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(Code::DeadlineExceeded, message)
    }

    /// [`Code::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    /// An opaque [`Code::Internal`] status; `source` is logged here, with the
    /// current span (the call), and never sent to the caller.
    pub fn internal(source: impl fmt::Display) -> Self {
        tracing::error!(error = %source, "internal error");
        Self::new(Code::Internal, "internal error; see the server's log")
    }

    /// The JSON envelope.
    pub fn to_json(&self) -> bytes::Bytes {
        // A struct of strings and a `Value` always serialises.
        serde_json::to_vec(self)
            .map(bytes::Bytes::from)
            .unwrap_or_else(|_| {
                bytes::Bytes::from_static(
                    b"{\"code\":\"Internal\",\"message\":\"unencodable error\"}",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Code; 14] = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::PayloadTooLarge,
        Code::ResourceExhausted,
        Code::DeadlineExceeded,
        Code::Unavailable,
        Code::Cancelled,
        Code::Internal,
        Code::Unknown,
    ];

    #[test]
    fn envelope_round_trips_and_omits_empty_details() {
        let s = Status::not_found("no pod default/web");
        let json = String::from_utf8(s.to_json().to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"code":"NotFound","message":"no pod default/web"}"#
        );
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn wire_names_match_serde() {
        for code in ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn unknown_codes_from_newer_peers_decode() {
        let s: Status =
            serde_json::from_str(r#"{"code":"Teapot","message":"short and stout"}"#).unwrap();
        assert_eq!(s.code, Code::Unknown);
    }

    #[test]
    fn http_mapping_round_trips_where_unambiguous() {
        for code in ALL {
            let back = Code::from_http_status(code.http_status());
            match code {
                Code::AlreadyExists => assert_eq!(back, Code::Aborted),
                Code::Unknown => assert_eq!(back, Code::Internal),
                _ => assert_eq!(back, code),
            }
        }
    }
}

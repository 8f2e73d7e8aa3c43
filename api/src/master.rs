//! The `Master` service: what workers (and, with the API issue, mkctl) ask of
//! a master. For now it holds what a worker needs: registration.

use serde::{Deserialize, Serialize};

use crate::node::NodeInfo;

/// `Master.join`: a worker announces itself (the cluster token authenticates it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// The node as it sees itself; `address` is where masters probe it.
    pub node: NodeInfo,
}

/// `Master.join`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinResponse {
    /// The masters' addresses, so that the worker can reach any of them later.
    pub masters: Vec<String>,
}

/// Why a master call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MasterError {
    /// The request is invalid as written.
    #[error("{0}")]
    InvalidArgument(String),
    /// This master cannot serve now (no leader, store unavailable).
    #[error("{0}")]
    Unavailable(String),
}

impl From<MasterError> for rpc::Status {
    fn from(e: MasterError) -> Self {
        let code = match &e {
            MasterError::InvalidArgument(_) => rpc::Code::InvalidArgument,
            MasterError::Unavailable(_) => rpc::Code::Unavailable,
        };
        rpc::Status::new(code, e.to_string())
    }
}

/// The masters' service.
#[rpc::service]
pub trait Master {
    /// Registers (or re-registers) a node.
    async fn join(&self, req: JoinRequest) -> Result<JoinResponse, MasterError>;
}

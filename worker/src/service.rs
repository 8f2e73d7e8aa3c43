//! The `Worker` RPC service: a thin adapter from the wire to the [`Agent`].

use api::worker::{
    ExecRequest, ExecResponse, LogsRequest, LogsResponse, ProbeRequest, ProbeResponse, Worker,
    WorkerError,
};

use crate::agent::Agent;

/// Serves `Worker` calls from an agent.
#[derive(Clone)]
pub struct WorkerService {
    agent: Agent,
}

impl WorkerService {
    /// Serves `agent`.
    pub fn new(agent: Agent) -> Self {
        WorkerService { agent }
    }
}

impl Worker for WorkerService {
    async fn probe(&self, req: ProbeRequest) -> Result<ProbeResponse, WorkerError> {
        self.agent.probe(req)
    }

    async fn logs(&self, req: LogsRequest) -> Result<LogsResponse, WorkerError> {
        self.agent.logs(req).await
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, WorkerError> {
        self.agent.exec(req).await
    }
}

//! The `Kv` and `RaftPeer` services of a running member.
//!
//! Writes go through the log: proposed here when this member leads, else
//! forwarded once to the leader it knows (with the same request id, so a
//! retry anywhere applies at most once). Reads are linearizable on any
//! member through ReadIndex. Watches are long-polls on the local history.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Node;
use crate::api::*;
use crate::kv::{Op, OpResult, Txn, TxnResponse};

/// Longest a watch waits for its first event.
const MAX_WATCH_WAIT: Duration = Duration::from_secs(60);

/// `Kv` over a [`Node`].
pub struct KvService {
    node: Node,
    /// Clients of leaders, by address.
    leaders: Mutex<HashMap<String, KvClient>>,
}

impl KvService {
    /// Serves `node`.
    pub fn new(node: Node) -> Self {
        KvService {
            node,
            leaders: Mutex::new(HashMap::new()),
        }
    }

    fn leader_client(&self, addr: &str) -> Result<KvClient, KvsError> {
        let mut leaders = self
            .leaders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = leaders.get(addr) {
            return Ok(c.clone());
        }
        let config = self.node.config();
        // Writes wait for a commit: no pipelining behind them (see KvsClientConfig::pipeline_depth).
        let client = rpc::Client::new(
            addr,
            rpc::ClientConfig {
                token: config.token.clone(),
                tls: config.tls.clone(),
                max_connections: 64,
                pipeline_depth: 1,
                ..Default::default()
            },
        )
        .map_err(|e| KvsError::Unavailable(format!("cannot reach the leader: {e}")))?;
        let client = KvClient::new(client);
        leaders.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    fn validate(&self, txn: &Txn) -> Result<(), KvsError> {
        txn.validate(&self.node.config().limits)
            .map_err(KvsError::from)
    }

    async fn write(&self, req: TxnRequest) -> Result<TxnResponse, KvsError> {
        self.validate(&req.txn)?;
        let cmd = LogCommand {
            request_id: req.request_id,
            txn: req.txn.clone(),
        };
        match self.node.propose(cmd).await {
            Err(KvsError::NoLeader) if !req.forwarded => {
                let own = self.node.config().fleet.get(&self.node.config().name);
                let (_, leader) = self
                    .node
                    .leader()
                    .filter(|(_, addr)| Some(addr) != own)
                    .ok_or(KvsError::NoLeader)?;
                let forwarded = TxnRequest {
                    forwarded: true,
                    ..req
                };
                self.leader_client(&leader)?
                    .txn(&forwarded)
                    .await
                    .map_err(|e| {
                        KvsError::from_rpc(&e).unwrap_or_else(|| {
                            KvsError::Unavailable(format!("forwarding to the leader failed: {e}"))
                        })
                    })
            }
            other => other,
        }
    }

    async fn run(&self, req: TxnRequest) -> Result<TxnResponse, KvsError> {
        if req.txn.is_write() {
            self.write(req).await
        } else {
            self.validate(&req.txn)?;
            self.node.read(req.txn).await
        }
    }
}

fn one(op: Op, request_id: Option<RequestId>) -> TxnRequest {
    TxnRequest {
        txn: Txn::single(op),
        request_id,
        forwarded: false,
    }
}

fn first(r: TxnResponse) -> (Option<OpResult>, i64) {
    (r.results.into_iter().next(), r.revision)
}

impl Kv for KvService {
    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, KvsError> {
        self.run(req).await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse, KvsError> {
        let op = Op::Put {
            key: req.key,
            value: req.value,
        };
        let (_, revision) = first(self.run(one(op, req.request_id)).await?);
        Ok(PutResponse { revision })
    }

    async fn get(&self, req: GetRequest) -> Result<GetResponse, KvsError> {
        match first(self.run(one(Op::Get { key: req.key }, None)).await?) {
            (Some(OpResult::Get(kv)), revision) => Ok(GetResponse { kv, revision }),
            _ => Err(KvsError::Unavailable("unexpected answer to a get".into())),
        }
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, KvsError> {
        let op = Op::Range {
            prefix: req.prefix,
            limit: req.limit,
        };
        match first(self.run(one(op, None)).await?) {
            (Some(OpResult::Range { kvs, more }), revision) => Ok(RangeResponse {
                kvs,
                more,
                revision,
            }),
            _ => Err(KvsError::Unavailable("unexpected answer to a range".into())),
        }
    }

    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, KvsError> {
        let op = if req.prefix {
            Op::DeleteRange { prefix: req.key }
        } else {
            Op::Delete { key: req.key }
        };
        match first(self.run(one(op, req.request_id)).await?) {
            (Some(OpResult::Delete(deleted)), revision) => Ok(DeleteResponse { deleted, revision }),
            _ => Err(KvsError::Unavailable(
                "unexpected answer to a delete".into(),
            )),
        }
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchResponse, KvsError> {
        let deadline = Instant::now() + Duration::from_millis(req.wait_ms).min(MAX_WATCH_WAIT);
        let mut from = req.from_revision;
        if from <= 0 {
            // "From now": the next revision.
            let (_, next) = self.node.events(req.prefix.clone(), i64::MAX).await?;
            from = next;
        }
        loop {
            let (events, next) = self.node.events(req.prefix.clone(), from).await?;
            let now = Instant::now();
            if !events.is_empty() || now >= deadline {
                return Ok(WatchResponse {
                    events,
                    next_revision: next.max(from),
                });
            }
            // Nothing under the prefix yet: skip past what was seen and wait for more.
            from = next.max(from);
            self.node.wait_for_revision(from - 1, deadline - now).await;
        }
    }

    async fn status(&self, _req: Empty) -> Result<NodeStatus, KvsError> {
        self.node.status().await
    }
}

/// `RaftPeer` over a [`Node`].
pub struct PeerService {
    node: Node,
}

impl PeerService {
    /// Serves `node`.
    pub fn new(node: Node) -> Self {
        PeerService { node }
    }
}

impl RaftPeer for PeerService {
    async fn deliver(&self, req: MessageBatch) -> Result<Empty, KvsError> {
        if !self.node.config().fleet.contains_key(&req.from) {
            return Err(KvsError::InvalidArgument(format!(
                "{:?} is not a member of this fleet",
                req.from
            )));
        }
        self.node
            .deliver(req.from, req.messages, req.lifecycle)
            .await?;
        Ok(Empty {})
    }
}

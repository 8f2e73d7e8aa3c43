//! The `Kv` and `RaftPeer` services of a running member.
//!
//! Writes go through the log: the member (`crate::member`) proposes them
//! when it leads, else forwards them to the leader it knows (with the same
//! request id, so a retry anywhere applies at most once). With no leader,
//! one that cannot be reached, or one that stops answering while another
//! is elected, the write waits for the next leader (up to four election
//! timeouts) and goes to it: a fail-over costs a client the election, not
//! its back-off, and a client that knows only this member still gets
//! through. A forwarded write is proposed by its receiver or refused, never
//! forwarded again.
//!
//! Reads are linearizable on any member through ReadIndex, and wait for a
//! leader the same way. Watches are long-polls on the local history.
//!
//! Answers over the network are bounded: a read whose keys and values
//! exceed `max_response_bytes` is refused (`TooLarge`, naming the limit),
//! and a watch answers whole revisions up to that size, the client asking
//! again from where it stopped. A service for callers in the same process
//! ([`KvService::local`], the master's registry) has no such bound.

use std::time::{Duration, Instant};

use super::Node;
use crate::api::*;
use crate::kv::{Op, OpResult, Txn, TxnResponse};

/// Longest a watch waits for its first event.
const MAX_WATCH_WAIT: Duration = Duration::from_secs(60);

/// `Kv` over a [`Node`].
pub struct KvService {
    node: Node,
    /// Most bytes of keys and values in one answer; `None` in process.
    response_limit: Option<usize>,
}

impl KvService {
    /// Serves `node` to callers over the network: answers bounded by
    /// `max_response_bytes` of the node's limits.
    pub fn new(node: Node) -> Self {
        let limit = node.config().limits.max_response_bytes;
        KvService {
            node,
            response_limit: Some(limit),
        }
    }

    /// Serves `node` to callers in this process, whose answers are not
    /// copied onto a socket: no bound on their size.
    pub fn local(node: Node) -> Self {
        KvService {
            response_limit: None,
            ..KvService::new(node)
        }
    }

    /// The member it serves.
    pub fn node(&self) -> &Node {
        &self.node
    }

    fn validate(&self, txn: &Txn) -> Result<(), KvsError> {
        txn.validate(&self.node.config().limits)
            .map_err(KvsError::from)
    }

    /// A write through the member: proposed, forwarded to the leader, or
    /// held until there is one (`crate::member`).
    async fn write(&self, req: TxnRequest) -> Result<TxnResponse, KvsError> {
        self.validate(&req.txn)?;
        self.node.write(req).await
    }

    /// A linearizable read here (held by the member while there is no leader).
    async fn read(&self, txn: Txn) -> Result<TxnResponse, KvsError> {
        self.validate(&txn)?;
        let limit = self.response_limit.unwrap_or(usize::MAX);
        self.node.read(txn, limit).await
    }

    async fn run(&self, req: TxnRequest) -> Result<TxnResponse, KvsError> {
        if req.txn.is_write() {
            self.write(req).await
        } else {
            self.read(req.txn).await
        }
    }
}

/// Where to cut `events` so that they hold at most `limit` bytes in whole
/// revisions (always at least the first revision, however large); `None`
/// if they fit.
fn cut_revisions(events: &[crate::kv::Event], limit: usize) -> Option<usize> {
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        bytes += e.bytes();
        if bytes > limit {
            let first = events[0].revision();
            // Back to the start of this revision, but past the first one.
            let mut cut = i;
            while cut > 0 && events[cut - 1].revision() == e.revision() {
                cut -= 1;
            }
            if cut == 0 {
                cut = events
                    .iter()
                    .position(|e| e.revision() != first)
                    .unwrap_or(events.len());
            }
            return (cut < events.len()).then_some(cut);
        }
    }
    None
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
            let (mut events, mut next) = self.node.events(req.prefix.clone(), from).await?;
            if let Some(cut) = self.response_limit.and_then(|l| cut_revisions(&events, l)) {
                next = events[cut].revision();
                events.truncate(cut);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Event, KeyValue};

    fn put(key: &str, bytes: usize, revision: i64) -> Event {
        Event::Put {
            kv: KeyValue {
                key: key.into(),
                value: "x".repeat(bytes),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
        }
    }

    #[test]
    fn a_watch_answer_is_cut_between_whole_revisions() {
        let events = [
            put("a", 9, 1),
            put("b", 9, 2),
            put("c", 9, 2),
            put("d", 9, 3),
        ];
        assert_eq!(cut_revisions(&events, 100), None);
        assert_eq!(
            cut_revisions(&events, 25),
            Some(1),
            "revision 2 does not fit whole"
        );
        assert_eq!(cut_revisions(&events, 35), Some(3));
        assert_eq!(
            cut_revisions(&events, 1),
            Some(1),
            "the first revision always goes"
        );
        let big_first = [put("a", 9, 1), put("b", 9, 1)];
        assert_eq!(cut_revisions(&big_first, 1), None);
    }
}

//! The store's client: a list of members, the leader found and cached,
//! retries with back-off, and a deadline per operation.
//!
//! Leader discovery: before the first call the client asks every member for
//! its status and prefers the one that leads (any member serves reads and
//! forwards writes, so this saves a hop rather than being needed for
//! correctness); after a failure it tries the next member. A member that
//! knows no working leader holds a request until the next one is elected
//! (up to four election timeouts), so a fail-over costs the client about
//! the election rather than the election rounded up to its back-off.
//!
//! Invariants: a write carries one request id through all its retries, so
//! it applies at most once however often it is sent; an operation never runs
//! past its deadline; a member that fails is skipped for the next attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::api::*;
use crate::kv::{KeyValue, Op, Txn, TxnResponse};

/// Settings of a [`KvsClient`].
#[derive(Debug, Clone)]
pub struct KvsClientConfig {
    /// The bearer token.
    pub token: Option<String>,
    /// TLS (the cluster CA); `None` speaks plain HTTP.
    pub tls: Option<rpc::ClientTls>,
    /// Deadline of one operation, retries included.
    pub timeout: Duration,
    /// First back-off between attempts (doubles up to `max_backoff`).
    pub backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// Connections per member (see `rpc::ClientConfig::max_connections`).
    pub connections: usize,
    /// Calls pipelined per connection before another opens. A member answers
    /// a connection's calls one at a time, and a write waits for a commit,
    /// so deep pipelines serialise writes; shallow ones let Raft batch them.
    pub pipeline_depth: usize,
}

impl Default for KvsClientConfig {
    fn default() -> Self {
        KvsClientConfig {
            token: None,
            tls: None,
            timeout: Duration::from_secs(10),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
            connections: 64,
            pipeline_depth: 1,
        }
    }
}

/// Why an operation failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The store refused the request as written.
    #[error("{0}")]
    Rejected(KvsError),
    /// No member answered in time; the last error seen is attached.
    #[error("no member completed the request within {timeout:?}; last error: {last}")]
    DeadlineExceeded {
        /// The operation's deadline.
        timeout: Duration,
        /// What the last attempt saw.
        last: String,
    },
    /// The client is misconfigured.
    #[error("{0}")]
    Config(#[from] rpc::ConfigError),
}

struct Endpoint {
    addr: String,
    client: KvClient,
}

/// See the module doc. Cheap to clone; clones share connections and ids.
#[derive(Clone)]
pub struct KvsClient {
    endpoints: Arc<Vec<Endpoint>>,
    preferred: Arc<AtomicUsize>,
    /// Whether `preferred` should be rediscovered before the next call.
    stale: Arc<std::sync::atomic::AtomicBool>,
    client_id: u64,
    seq: Arc<AtomicU64>,
    config: KvsClientConfig,
}

impl KvsClient {
    /// A client of the members at `addrs` (`host:port`).
    pub fn new(addrs: &[String], config: KvsClientConfig) -> Result<Self, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::Rejected(KvsError::InvalidArgument(
                "no member address given".into(),
            )));
        }
        let endpoints = addrs
            .iter()
            .map(|addr| {
                let rpc_config = rpc::ClientConfig {
                    token: config.token.clone(),
                    tls: config.tls.clone(),
                    default_timeout: config.timeout,
                    max_connections: config.connections.max(1),
                    pipeline_depth: config.pipeline_depth.max(1),
                    ..Default::default()
                };
                Ok(Endpoint {
                    addr: addr.clone(),
                    client: KvClient::new(rpc::Client::new(addr, rpc_config)?),
                })
            })
            .collect::<Result<Vec<_>, rpc::ConfigError>>()?;
        Ok(KvsClient {
            endpoints: Arc::new(endpoints),
            preferred: Arc::new(AtomicUsize::new(0)),
            stale: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            client_id: random_id(),
            seq: Arc::new(AtomicU64::new(0)),
            config,
        })
    }

    /// The member addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.addr.clone()).collect()
    }

    /// Asks every member who leads and prefers that one (see the module doc).
    async fn discover_leader(&self, wait: Duration) {
        let probes = self.endpoints.iter().enumerate().map(|(i, e)| {
            let client = e.client.with_timeout(wait);
            async move { (i, client.status(&Empty {}).await) }
        });
        let answers = futures_util::future::join_all(probes).await;
        let leader = answers
            .into_iter()
            .find(|(_, s)| {
                s.as_ref()
                    .is_ok_and(|s| s.role == crate::raft::Role::Leader)
            })
            .map(|(i, _)| i);
        if let Some(i) = leader {
            self.preferred.store(i, Ordering::Relaxed);
            self.stale.store(false, Ordering::Relaxed);
        }
    }

    /// Runs `call` against members until one succeeds, an error is final, or the deadline passes.
    async fn retry<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, rpc::Error>>,
    {
        let deadline = Instant::now() + self.config.timeout;
        let mut backoff = self.config.backoff;
        let mut last = String::from("no attempt made");
        let n = self.endpoints.len();
        loop {
            if self.stale.load(Ordering::Relaxed) && n > 1 {
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500));
                self.discover_leader(wait).await;
            }
            let i = self.preferred.load(Ordering::Relaxed) % n;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::DeadlineExceeded {
                    timeout: self.config.timeout,
                    last,
                });
            }
            let client = self.endpoints[i].client.with_timeout(remaining);
            match call(client).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let kvs = KvsError::from_rpc(&e);
                    let retry = match (&kvs, e.code()) {
                        (
                            Some(KvsError::NoLeader | KvsError::Dropped | KvsError::Unavailable(_)),
                            _,
                        ) => true,
                        (Some(other), _) => return Err(ClientError::Rejected(other.clone())),
                        (None, rpc::Code::Unavailable | rpc::Code::DeadlineExceeded) => true,
                        (None, _) => {
                            return Err(ClientError::Rejected(KvsError::InvalidArgument(
                                e.to_string(),
                            )));
                        }
                    };
                    debug_assert!(retry);
                    last = format!("{}: {e}", self.endpoints[i].addr);
                    // Try the next member after a failure.
                    let _ = self.preferred.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    let sleep = backoff.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(sleep).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    fn next_request_id(&self) -> RequestId {
        RequestId {
            client: self.client_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, ClientError> {
        let request_id = txn.is_write().then(|| self.next_request_id());
        let req = TxnRequest {
            txn,
            request_id,
            forwarded: false,
        };
        self.retry(|c| {
            let req = req.clone();
            async move { c.txn(&req).await }
        })
        .await
    }

    /// Sets `key` to `value`; returns the revision.
    pub async fn put(&self, key: &str, value: &str) -> Result<i64, ClientError> {
        let req = PutRequest {
            key: key.into(),
            value: value.into(),
            request_id: Some(self.next_request_id()),
        };
        let r = self
            .retry(|c| {
                let req = req.clone();
                async move { c.put(&req).await }
            })
            .await?;
        Ok(r.revision)
    }

    /// Reads `key` (linearizable).
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, ClientError> {
        let req = GetRequest { key: key.into() };
        let r = self
            .retry(|c| {
                let req = req.clone();
                async move { c.get(&req).await }
            })
            .await?;
        Ok(r.kv)
    }

    /// Reads keys under `prefix` (linearizable).
    pub async fn range(&self, prefix: &str, limit: usize) -> Result<RangeResponse, ClientError> {
        let req = RangeRequest {
            prefix: prefix.into(),
            limit,
        };
        self.retry(|c| {
            let req = req.clone();
            async move { c.range(&req).await }
        })
        .await
    }

    /// Deletes `key`; returns how many keys went.
    pub async fn delete(&self, key: &str) -> Result<u64, ClientError> {
        let r = self
            .txn(Txn::single(Op::Delete { key: key.into() }))
            .await?;
        Ok(r.results
            .iter()
            .map(|r| match r {
                crate::kv::OpResult::Delete(n) => *n,
                _ => 0,
            })
            .sum())
    }

    /// One member's status.
    pub async fn status_of(&self, member: usize) -> Result<NodeStatus, rpc::Error> {
        match self.endpoints.get(member) {
            Some(e) => e.client.status(&Empty {}).await,
            None => Err(rpc::Error::Status(rpc::Status::not_found(format!(
                "no member #{member}"
            )))),
        }
    }
}

/// A random client id (no RNG crate: the std hasher's per-process random keys).
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

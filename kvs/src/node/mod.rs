//! A running member: a [`Member`] driven by tokio, its peers over `rpc`.
//!
//! ```text
//!  ticker (tick_ms) ────────── 1st ─┐                 ┌─▶ PeerSender (per peer name, batched) ─▶ peers
//!  RaftPeer.deliver ─▶ peer queue ─ 2nd ─┼─▶ driver loop ─┤
//!  Kv handlers ──▶ client queue ─── 3rd ─┘  Member:     ├─▶ answers to the waiting handlers
//!                  (both bounded)           handle × n, └─▶ exports, written off the loop
//!                                           then act
//! ```
//!
//! Peers' messages have a queue of their own, taken before client
//! requests (at most `CLIENT_BATCH` of those a turn): no flood of clients
//! delays heartbeats. Encoding and writing exports happens off the loop.
//!
//! Everything the store decides is the [`Member`]'s (`crate::member`): this
//! loop only turns channels and timers into its inputs and its effects into
//! messages, answers, calls to the leader (forwarded writes), reads and
//! writes of the export store (on the blocking pool), so the simulator,
//! which drives the same `Member`, tests what runs here.
//!
//! # Layout
//!
//! - `transport`: per-peer outgoing queues.
//! - `service`: the `Kv` and `RaftPeer` services over a [`Node`].

mod service;
mod transport;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{KvClient, KvsError, NodeStatus, TxnRequest};
use crate::kv::{Event, Limits, Txn, TxnResponse};
use crate::lifecycle::LifecycleMessage;
use crate::member::{Effect, ForwardOutcome, Input, Member, MemberConfig, StateImage, Token};
pub use crate::member::{Leadership, NOSPACE};
use crate::raft::{Config, Message, NodeId};
use crate::snapshot_store::{ExportMeta, SnapshotStore};
pub use service::{KvService, PeerService};
use transport::PeerSender;

/// How one member is set up.
#[derive(Clone)]
pub struct NodeConfig {
    /// This member's name: its slot in the fleet.
    pub name: String,
    /// Every configured name and its address, this one included.
    pub fleet: BTreeMap<String, String>,
    /// The bearer token members and clients present.
    pub token: Option<String>,
    /// TLS towards the other members (the cluster CA and this member's
    /// certificate); `None` speaks plain HTTP.
    pub tls: Option<rpc::ClientTls>,
    /// Length of a tick.
    pub tick: Duration,
    /// Ticks before an election (randomized up to twice this).
    pub election_ticks: u32,
    /// Watch history, in events.
    pub history_limit: usize,
    /// Request limits.
    pub limits: Limits,
    /// Most entries the log keeps for a follower far behind (or as many as
    /// there are keys, if more): past that it is sent a snapshot.
    pub snapshot_entries: u64,
    /// Where the leader exports its state (and a new epoch finds it).
    pub store: Arc<dyn SnapshotStore>,
    /// How often the leader exports.
    pub export_interval: Duration,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("fleet", &self.fleet)
            .field("tick", &self.tick)
            .field("election_ticks", &self.election_ticks)
            .field("export_interval", &self.export_interval)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// The election timeout (its lower bound).
    pub fn election_timeout(&self) -> Duration {
        self.tick * self.election_ticks
    }
}

/// Requests to the driver loop.
enum Request {
    Peer(String, Vec<Message>, Vec<LifecycleMessage>),
    ExportNow(oneshot::Sender<Option<(ExportMeta, StateImage)>>),
    TransferAway(oneshot::Sender<Option<NodeId>>),
    Write(TxnRequest, Reply),
    /// A read-only transaction and the most bytes its answer may hold.
    Read(Txn, usize, Reply),
    Events(
        String,
        i64,
        oneshot::Sender<Result<(Vec<Event>, i64), KvsError>>,
    ),
    Status(oneshot::Sender<NodeStatus>),
}

/// The handle to a running member; cheap to clone.
#[derive(Clone)]
pub struct Node {
    /// Client requests (proposals, reads, watches, status).
    inputs: mpsc::Sender<Request>,
    /// Peers' Raft and lifecycle messages: a queue of their own, taken
    /// before client requests, so that no flood of clients delays them.
    peers: mpsc::Sender<Request>,
    revision: watch::Receiver<i64>,
    leader: watch::Receiver<Option<(NodeId, String)>>,
    leadership: watch::Receiver<Option<Leadership>>,
    config: Arc<NodeConfig>,
}

/// Most requests waiting for the raft loop.
const INPUT_QUEUE: usize = 8192;
/// Applied entries the log keeps past what every follower holds (etcd
/// keeps 5,000 past its snapshot; the leader here keeps what its followers
/// lack anyway, so this tail serves only a follower that becomes leader),
/// unless `snapshot_entries` is lower.
const RETAIN_ENTRIES: u64 = 1_000;
/// Peers' message batches queued for the loop at most.
const PEER_QUEUE: usize = 1024;
/// Client requests the loop takes in one turn at most.
const CLIENT_BATCH: usize = 1024;

impl Node {
    /// Starts the raft loop and the peer senders.
    pub fn start(config: NodeConfig) -> Result<Node, rpc::ConfigError> {
        let mut peers = BTreeMap::new();
        for (name, addr) in config.fleet.iter().filter(|(n, _)| **n != config.name) {
            // Generous: a call in flight only holds up this peer's queue, and
            // a timed-out batch is lost; a busy machine (a learner restoring
            // snapshots under load) must not turn into message loss.
            let timeout = (config.tick * config.election_ticks * 2).max(Duration::from_secs(1));
            peers.insert(
                name.clone(),
                PeerSender::start(
                    config.name.clone(),
                    name.clone(),
                    addr.clone(),
                    config.token.clone(),
                    config.tls.clone(),
                    timeout,
                )?,
            );
        }
        let mut raft = Config::new(0, Vec::new());
        raft.election_tick = config.election_ticks;
        raft.retain_entries = config.snapshot_entries.min(RETAIN_ENTRIES);
        let member = Member::new(MemberConfig {
            name: config.name.clone(),
            fleet: config.fleet.clone(),
            raft,
            history_limit: config.history_limit,
            limits: config.limits,
            snapshot_entries: config.snapshot_entries,
            seed: seed_from_clock(),
        });
        tracing::info!(name = %config.name, incarnation = %format!("{:x}", member.id()), "starting empty; looking for the cluster");
        let (inputs, rx) = mpsc::channel(INPUT_QUEUE);
        let (peers_tx, peers_rx) = mpsc::channel(PEER_QUEUE);
        let (revision_tx, revision) = watch::channel(0);
        let (leader_tx, leader) = watch::channel(None);
        let (leadership_tx, leadership) = watch::channel(None);
        let (loaded_tx, loaded_rx) = mpsc::unbounded_channel();
        let config = Arc::new(config);
        let state = Loop {
            member,
            store: config.store.clone(),
            export_interval: config.export_interval,
            peers,
            replies: HashMap::new(),
            exports: HashMap::new(),
            transfers: HashMap::new(),
            next_token: 0,
            loaded: loaded_tx,
            config: Arc::clone(&config),
            leaders: HashMap::new(),
            revision: revision_tx,
            leader: leader_tx,
            leadership: leadership_tx,
        };
        tokio::spawn(state.run(rx, peers_rx, loaded_rx, config.tick));
        Ok(Node {
            inputs,
            peers: peers_tx,
            revision,
            leader,
            leadership,
            config,
        })
    }

    /// The member's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The leader this member knows of, and its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        self.leader.borrow().clone()
    }

    /// Whether (and in which epoch and term) this member leads, as it changes.
    pub fn leadership(&self) -> watch::Receiver<Option<Leadership>> {
        self.leadership.clone()
    }

    /// The store's latest applied revision here, as it changes.
    pub fn revision(&self) -> watch::Receiver<i64> {
        self.revision.clone()
    }

    /// An eviction notice: exports the applied state now (leader or not,
    /// the newest state wins when the fleet re-forms). Returns the export.
    pub async fn export_now(&self) -> Result<Option<ExportMeta>, KvsError> {
        let Some((meta, image)) = self.ask(Request::ExportNow).await? else {
            return Ok(None);
        };
        let store = self.config.store.clone();
        tokio::task::spawn_blocking(move || store.put(meta, &image.encode()))
            .await
            .map_err(|e| KvsError::Unavailable(format!("export task failed: {e}")))?
            .map_err(|e| KvsError::Unavailable(e.to_string()))?;
        Ok(Some(meta))
    }

    /// An eviction notice on the leader: hands leadership to the most
    /// caught-up other voter (thesis §3.10). Returns the voter asked to take
    /// over, or `None` when this member does not lead (or leads alone).
    pub async fn transfer_leadership_away(&self) -> Result<Option<NodeId>, KvsError> {
        self.ask(Request::TransferAway).await
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, KvsError> {
        let (tx, rx) = oneshot::channel();
        self.inputs
            .send(make(tx))
            .await
            .map_err(|_| KvsError::Unavailable("the member is shutting down".into()))?;
        rx.await
            .map_err(|_| KvsError::Unavailable("the member is shutting down".into()))
    }

    /// Hands a peer's messages to the loop.
    pub(crate) async fn deliver(
        &self,
        from: String,
        messages: Vec<Message>,
        lifecycle: Vec<LifecycleMessage>,
    ) -> Result<(), KvsError> {
        self.peers
            .send(Request::Peer(from, messages, lifecycle))
            .await
            .map_err(|_| KvsError::Unavailable("the member is shutting down".into()))
    }

    /// A write: proposed here, forwarded to the leader, or held until
    /// there is one (see [`Input::Write`]).
    pub(crate) async fn write(&self, request: TxnRequest) -> Result<TxnResponse, KvsError> {
        self.ask(|tx| Request::Write(request, tx)).await?
    }

    /// A linearizable read-only transaction whose answer may hold at most
    /// `limit` bytes of keys and values (`TooLarge` beyond; the answer is
    /// never built whole).
    pub(crate) async fn read(&self, txn: Txn, limit: usize) -> Result<TxnResponse, KvsError> {
        self.ask(|tx| Request::Read(txn, limit, tx)).await?
    }

    /// Events under `prefix` from revision `from`, and the revision to continue from.
    pub(crate) async fn events(
        &self,
        prefix: String,
        from: i64,
    ) -> Result<(Vec<Event>, i64), KvsError> {
        self.ask(|tx| Request::Events(prefix, from, tx)).await?
    }

    /// Waits until the store's revision passes `revision` or `wait` ends.
    pub(crate) async fn wait_for_revision(&self, revision: i64, wait: Duration) {
        let mut rx = self.revision.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(|&r| r > revision)).await;
    }

    /// This member's view (with the allocator's figures, where the
    /// process gave a way to read them: [`set_allocator_stats`]).
    pub async fn status(&self) -> Result<NodeStatus, KvsError> {
        let mut status: NodeStatus = self.ask(Request::Status).await?;
        if let Some((allocated, resident)) = ALLOCATOR_STATS.get().and_then(|read| read()) {
            status.memory.allocated_bytes = Some(allocated);
            status.memory.allocator_resident_bytes = Some(resident);
        }
        Ok(status)
    }
}

/// Reads the process allocator's (allocated, resident) bytes.
pub type AllocatorStats = fn() -> Option<(u64, u64)>;

static ALLOCATOR_STATS: std::sync::OnceLock<AllocatorStats> = std::sync::OnceLock::new();

/// Gives statuses the allocator's figures ([`crate::api::MemoryUse`]): a
/// binary that chose its allocator knows how to read them. Set once.
pub fn set_allocator_stats(read: AllocatorStats) {
    let _ = ALLOCATOR_STATS.set(read);
}

/// A seed that differs between process starts (incarnation ids come from it).
fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Reply = oneshot::Sender<Result<TxnResponse, KvsError>>;

/// The store's limits as command-line flags (masters and `kvs-node`).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreFlags {
    /// Most bytes of keys and values the store holds (etcd's
    /// --quota-backend-bytes): beyond, writes that put are refused with
    /// NOSPACE while deletes go on.
    #[arg(long, default_value_t = crate::kv::DEFAULT_QUOTA_BYTES)]
    pub quota_bytes: u64,
    /// Most bytes of keys and values one answer over the network carries
    /// (a larger read is refused; a watch answers in parts).
    #[arg(long, default_value_t = crate::kv::DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
    /// Most bytes of events the watch history keeps (older revisions are
    /// compacted, and a watch from them re-lists).
    #[arg(long, default_value_t = crate::kv::DEFAULT_MAX_HISTORY_BYTES)]
    pub max_history_bytes: usize,
}

impl StoreFlags {
    /// The limits these flags set, the rest at their defaults.
    pub fn limits(&self) -> Limits {
        Limits {
            quota_bytes: self.quota_bytes,
            max_response_bytes: self.max_response_bytes,
            max_history_bytes: self.max_history_bytes,
            ..Limits::default()
        }
    }
}

/// The driver loop's state: the member and what waits on it.
struct Loop {
    member: Member,
    store: Arc<dyn SnapshotStore>,
    export_interval: Duration,
    /// Peer senders by name.
    peers: BTreeMap<String, PeerSender>,
    replies: HashMap<Token, Reply>,
    exports: HashMap<Token, oneshot::Sender<Option<(ExportMeta, StateImage)>>>,
    transfers: HashMap<Token, oneshot::Sender<Option<NodeId>>>,
    next_token: Token,
    /// Reads of the export store and forwarded writes, done off the
    /// loop, come back here.
    loaded: mpsc::UnboundedSender<Input>,
    /// The member's settings (the fleet's addresses, token and TLS).
    config: Arc<NodeConfig>,
    /// Clients of leaders, by name.
    leaders: HashMap<String, KvClient>,
    revision: watch::Sender<i64>,
    leader: watch::Sender<Option<(NodeId, String)>>,
    leadership: watch::Sender<Option<Leadership>>,
}

impl Loop {
    /// The loop. Ticks come first, then peers' messages, then clients'
    /// requests (see `Node::peers`); each turn takes every queued peer
    /// message and up to [`CLIENT_BATCH`] client requests before acting.
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        mut peers: mpsc::Receiver<Request>,
        mut loaded: mpsc::UnboundedReceiver<Input>,
        tick: Duration,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut exports = tokio::time::interval(self.export_interval);
        exports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ticker.tick() => self.input(Input::Tick),
                request = peers.recv() => match request {
                    Some(request) => self.request(request),
                    None => return,
                },
                Some(input) = loaded.recv() => self.input(input),
                _ = exports.tick() => self.input(Input::ExportTick),
                request = rx.recv() => match request {
                    Some(request) => {
                        self.request(request);
                        // Take whatever else is queued before acting: one Ready for many inputs.
                        for _ in 1..CLIENT_BATCH {
                            match rx.try_recv() {
                                Ok(request) => self.request(request),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
            }
            // Peers' messages queued meanwhile go in the same turn.
            for _ in 0..PEER_QUEUE {
                match peers.try_recv() {
                    Ok(request) => self.request(request),
                    Err(_) => break,
                }
            }
            self.member.act();
            self.carry_out();
        }
    }

    fn input(&mut self, input: Input) {
        self.member.handle(input, now_ms());
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    fn request(&mut self, request: Request) {
        match request {
            Request::Peer(from, messages, lifecycle) => self.input(Input::Peer {
                from,
                messages,
                lifecycle,
            }),
            Request::Write(request, reply) => {
                let token = self.token();
                self.replies.insert(token, reply);
                self.input(Input::Write { token, request });
            }
            Request::Read(txn, limit, reply) => {
                let token = self.token();
                self.replies.insert(token, reply);
                self.input(Input::Read { token, txn, limit });
            }
            Request::ExportNow(reply) => {
                let token = self.token();
                self.exports.insert(token, reply);
                self.input(Input::ExportNow { token });
            }
            Request::TransferAway(reply) => {
                let token = self.token();
                self.transfers.insert(token, reply);
                self.input(Input::TransferAway { token });
            }
            Request::Events(prefix, from, reply) => {
                let _ = reply.send(self.member.events(&prefix, from));
            }
            Request::Status(reply) => {
                let _ = reply.send(self.member.status(now_ms()));
            }
        }
    }

    /// Sends, answers and exports what the member asks for, then publishes
    /// its revision and leadership.
    fn carry_out(&mut self) {
        for effect in self.member.take_effects() {
            match effect {
                Effect::Send { to, message } => {
                    if let Some(peer) = self.peers.get(&to) {
                        peer.send(message);
                    }
                }
                Effect::Answer { token, result } => {
                    if let Some(reply) = self.replies.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
                Effect::Export { meta, image } => self.export(meta, image),
                Effect::Exported { token, export } => {
                    if let Some(reply) = self.exports.remove(&token) {
                        let _ = reply.send(export);
                    }
                }
                Effect::Transferred { token, heir } => {
                    if let Some(reply) = self.transfers.remove(&token) {
                        let _ = reply.send(heir);
                    }
                }
                Effect::Forward {
                    token,
                    attempt,
                    to,
                    request,
                } => self.forward(token, attempt, &to, request),
                Effect::LoadLatest(seq) => self.load(move |store| Input::LatestLoaded {
                    seq,
                    latest: store.latest().map_err(|e| e.to_string()),
                }),
                Effect::LoadExport(meta) => self.load(move |store| Input::ExportLoaded {
                    meta,
                    bytes: store.get(&meta).map_err(|e| e.to_string()),
                }),
                Effect::EncodeSnapshot { epoch, meta, image } => {
                    self.load(move |_| Input::SnapshotEncoded {
                        epoch,
                        meta,
                        bytes: image.encode(),
                    })
                }
            }
        }
        let revision = self.member.revision();
        self.revision.send_if_modified(|r| {
            let changed = *r != revision;
            *r = revision;
            changed
        });
        // A joiner learns its leader before the configuration that names
        // the leader's address: publish the address when it appears too.
        let leader = self.member.leader();
        self.leader.send_if_modified(|current| {
            let changed = *current != leader;
            if changed {
                current.clone_from(&leader);
            }
            changed
        });
        let leading = self.member.leadership();
        self.leadership.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        });
    }

    /// Sends a write to the leader named `to`; what comes back is an input.
    fn forward(&mut self, token: Token, attempt: u64, to: &str, request: TxnRequest) {
        let client = match self.leader_client(to) {
            Ok(c) => c,
            Err(e) => {
                let outcome = ForwardOutcome::NotTaken(e);
                let _ = self.loaded.send(Input::Forwarded {
                    token,
                    attempt,
                    outcome,
                });
                return;
            }
        };
        let loaded = self.loaded.clone();
        tokio::spawn(async move {
            let outcome = match client.txn(&request).await {
                Ok(answer) => ForwardOutcome::Answer(Ok(answer)),
                Err(e) => match KvsError::from_rpc(&e) {
                    // It stopped leading: the next leader takes it.
                    Some(KvsError::NoLeader) => ForwardOutcome::NotTaken(KvsError::NoLeader),
                    Some(other) => ForwardOutcome::Answer(Err(other)),
                    None => {
                        let error =
                            KvsError::Unavailable(format!("forwarding to the leader failed: {e}"));
                        match &e {
                            // Sent again only if it surely did not run, or
                            // its request id applies it at most once.
                            rpc::Error::Transport(t)
                                if !t.may_have_run() || request.request_id.is_some() =>
                            {
                                ForwardOutcome::NotTaken(error)
                            }
                            _ => ForwardOutcome::Answer(Err(error)),
                        }
                    }
                },
            };
            let _ = loaded.send(Input::Forwarded {
                token,
                attempt,
                outcome,
            });
        });
    }

    /// The client of the leader named `name`, made on first use.
    fn leader_client(&mut self, name: &str) -> Result<KvClient, KvsError> {
        if let Some(c) = self.leaders.get(name) {
            return Ok(c.clone());
        }
        let addr = self.config.fleet.get(name).ok_or_else(|| {
            KvsError::Unavailable(format!("the leader {name:?} is not in this fleet"))
        })?;
        // Writes wait for a commit: no pipelining behind them (see KvsClientConfig::pipeline_depth).
        let client = rpc::Client::new(
            addr,
            rpc::ClientConfig {
                token: self.config.token.clone(),
                tls: self.config.tls.clone(),
                max_connections: 64,
                pipeline_depth: 1,
                ..Default::default()
            },
        )
        .map_err(|e| KvsError::Unavailable(format!("cannot reach the leader: {e}")))?;
        let client = KvClient::new(client);
        self.leaders.insert(name.to_string(), client.clone());
        Ok(client)
    }

    /// Runs `read` on the blocking pool and hands its input back to the loop
    /// (reads of the export store, and encoding a snapshot).
    fn load(&self, read: impl FnOnce(&dyn SnapshotStore) -> Input + Send + 'static) {
        let store = self.store.clone();
        let loaded = self.loaded.clone();
        tokio::task::spawn_blocking(move || {
            let _ = loaded.send(read(&*store));
        });
    }

    /// Writes an export to the durable store, off the loop.
    fn export(&self, meta: ExportMeta, image: StateImage) {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let data = image.encode();
            match store.put(meta, &data) {
                Ok(()) => tracing::info!(
                    epoch = %meta.epoch,
                    index = meta.index,
                    bytes = data.len(),
                    "exported a snapshot"
                ),
                Err(e) => tracing::warn!(error = %e, "snapshot export failed"),
            }
        });
    }
}

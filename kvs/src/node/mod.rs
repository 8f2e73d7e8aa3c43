//! A running member: the lifecycle and Raft cores driven by tokio, its peers
//! over `rpc`, and the state machine it applies to.
//!
//! ```text
//!  ticker (tick_ms) ────────── 1st ─┐                 ┌─▶ PeerSender (per peer name, batched) ─▶ peers
//!  RaftPeer.deliver ─▶ peer queue ─ 2nd ─┼─▶ raft loop ─┤
//!  Kv handlers ──▶ client queue ─── 3rd ─┘  Lifecycle:  └─▶ apply to StateMachine ─▶ answer
//!                  (both bounded)           join / form /    proposals, reads, watchers
//!                                           step / propose
//! ```
//!
//! Peers' messages have a queue of their own, taken before client
//! requests (at most `CLIENT_BATCH` of those a turn): no flood of clients
//! delays heartbeats. Encoding exports happens off the loop.
//!
//! A process starts empty, as a new incarnation, and finds its cluster
//! through `crate::lifecycle`: it joins a live one as a learner, or forms a
//! new epoch with its peers from the newest export of the [`SnapshotStore`].
//!
//! Invariants: only the raft loop touches the cores and the state machine, so
//! they stay single-threaded and deterministic; a proposal is answered
//! only when the entry at its index is applied — with its result if the entry
//! is the proposal (same term), else as dropped; a read is answered only
//! after the state machine has applied its read index.
//!
//! # Layout
//!
//! - `state`: the state machine with at-most-once client sessions.
//! - `transport`: per-peer outgoing queues.
//! - `service`: the `Kv` and `RaftPeer` services over a [`Node`].

mod service;
mod state;
mod transport;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{KvsError, LogCommand, MemberStatus, NodeStatus};
use crate::kv::{Event, Limits, Txn, TxnResponse};
use crate::lifecycle::{Action, Lifecycle, LifecycleMessage, Settings};
use crate::raft::{Config, Index, Message, NodeId, Payload, RaftError, Role, Term};
use crate::snapshot_store::{ExportMeta, SnapshotStore};
pub use service::{KvService, PeerService};
use state::{StateImage, StateMachine};
use transport::{Outgoing, PeerSender};

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
    /// Take a snapshot and compact the log after this many applied entries
    /// (or as many as there are keys, if more).
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

/// Requests to the raft loop.
enum Input {
    Peer(String, Vec<Message>, Vec<LifecycleMessage>),
    ExportNow(oneshot::Sender<Option<(ExportMeta, StateImage)>>),
    TransferAway(oneshot::Sender<Option<NodeId>>),
    Propose(LogCommand, oneshot::Sender<Result<TxnResponse, KvsError>>),
    /// A read-only transaction and the most bytes its answer may hold.
    Read(Bounded, oneshot::Sender<Result<TxnResponse, KvsError>>),
    Events(
        String,
        i64,
        oneshot::Sender<Result<(Vec<Event>, i64), KvsError>>,
    ),
    Status(oneshot::Sender<NodeStatus>),
}

/// This member leads: the epoch and term it leads in. Work done on behalf
/// of the leader carries them, so that its effects can be fenced once a
/// newer leader exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The cluster epoch's number.
    pub epoch: u64,
    /// The Raft term.
    pub term: Term,
}

/// The handle to a running member; cheap to clone.
#[derive(Clone)]
pub struct Node {
    /// Client requests (proposals, reads, watches, status).
    inputs: mpsc::Sender<Input>,
    /// Peers' Raft and lifecycle messages: a queue of their own, taken
    /// before client requests, so that no flood of clients delays them.
    peers: mpsc::Sender<Input>,
    revision: watch::Receiver<i64>,
    leader: watch::Receiver<Option<(NodeId, String)>>,
    leadership: watch::Receiver<Option<Leadership>>,
    config: Arc<NodeConfig>,
}

/// Most requests waiting for the raft loop.
const INPUT_QUEUE: usize = 8192;
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
        let mut raft_config = Config::new(0, Vec::new());
        raft_config.election_tick = config.election_ticks;
        raft_config.retain_entries = config.snapshot_entries.max(5_000);
        let settings = Settings::new(&config.name, config.fleet.clone(), raft_config);
        let lc = Lifecycle::new(settings, seed_from_clock());
        tracing::info!(name = %config.name, incarnation = %format!("{:x}", lc.id()), "starting empty; looking for the cluster");
        let (inputs, rx) = mpsc::channel(INPUT_QUEUE);
        let (peers_tx, peers_rx) = mpsc::channel(PEER_QUEUE);
        let (revision_tx, revision) = watch::channel(0);
        let (leader_tx, leader) = watch::channel(None);
        let (leadership_tx, leadership) = watch::channel(None);
        let state = Loop {
            lc,
            sm: StateMachine::new(config.history_limit, &config.limits),
            history_limit: config.history_limit,
            limits: config.limits,
            store: config.store.clone(),
            export_interval: config.export_interval,
            last_export: None,
            peers,
            heard: HashMap::new(),
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            next_ctx: 0,
            revision: revision_tx,
            leader: leader_tx,
            leadership: leadership_tx,
            seen: (0, None),
            name: config.name.clone(),
            snapshot_entries: config.snapshot_entries.max(1),
        };
        tokio::spawn(state.run(rx, peers_rx, config.tick));
        Ok(Node {
            inputs,
            peers: peers_tx,
            revision,
            leader,
            leadership,
            config: Arc::new(config),
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

    /// The leader this member knows of, as it changes.
    pub(crate) fn leader_changes(&self) -> watch::Receiver<Option<(NodeId, String)>> {
        self.leader.clone()
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
        let Some((meta, image)) = self.ask(Input::ExportNow).await? else {
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
        self.ask(Input::TransferAway).await
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Input) -> Result<T, KvsError> {
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
            .send(Input::Peer(from, messages, lifecycle))
            .await
            .map_err(|_| KvsError::Unavailable("the member is shutting down".into()))
    }

    /// Proposes a write here; `NoLeader`-style errors mean "not the leader".
    pub(crate) async fn propose(&self, cmd: LogCommand) -> Result<TxnResponse, KvsError> {
        self.ask(|tx| Input::Propose(cmd, tx)).await?
    }

    /// A linearizable read-only transaction whose answer may hold at most
    /// `limit` bytes of keys and values (`TooLarge` beyond; the answer is
    /// never built whole).
    pub(crate) async fn read(&self, txn: Txn, limit: usize) -> Result<TxnResponse, KvsError> {
        self.ask(|tx| Input::Read(Bounded { txn, limit }, tx))
            .await?
    }

    /// Events under `prefix` from revision `from`, and the revision to continue from.
    pub(crate) async fn events(
        &self,
        prefix: String,
        from: i64,
    ) -> Result<(Vec<Event>, i64), KvsError> {
        self.ask(|tx| Input::Events(prefix, from, tx)).await?
    }

    /// Waits until the store's revision passes `revision` or `wait` ends.
    pub(crate) async fn wait_for_revision(&self, revision: i64, wait: Duration) {
        let mut rx = self.revision.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(|&r| r > revision)).await;
    }

    /// This member's view.
    pub async fn status(&self) -> Result<NodeStatus, KvsError> {
        self.ask(Input::Status).await
    }
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

/// A read and the most bytes of keys and values its answer may hold.
#[derive(Debug)]
pub(crate) struct Bounded {
    txn: Txn,
    limit: usize,
}

/// The alarm [`NodeStatus::alarms`] raises while the store holds its quota.
pub const NOSPACE: &str = "NOSPACE";

/// The raft loop's state.
struct Loop {
    lc: Lifecycle,
    sm: StateMachine,
    history_limit: usize,
    limits: Limits,
    store: Arc<dyn SnapshotStore>,
    export_interval: Duration,
    /// The newest export written here or this epoch was formed from.
    last_export: Option<ExportMeta>,
    /// Peer senders by name.
    peers: BTreeMap<String, PeerSender>,
    /// The names of incarnations heard from (a joiner must answer a leader
    /// its empty configuration does not list yet).
    heard: HashMap<NodeId, String>,
    proposals: BTreeMap<Index, (Term, Reply)>,
    reads: HashMap<u64, (Bounded, Reply)>,
    ready_reads: Vec<(Index, Bounded, Reply)>,
    next_ctx: u64,
    revision: watch::Sender<i64>,
    leader: watch::Sender<Option<(NodeId, String)>>,
    leadership: watch::Sender<Option<Leadership>>,
    seen: (Term, Option<NodeId>),
    name: String,
    snapshot_entries: u64,
}

impl Loop {
    /// The loop. Ticks come first, then peers' messages, then clients'
    /// requests (see `Node::peers`); each turn takes every queued peer
    /// message and up to [`CLIENT_BATCH`] client requests before acting.
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        mut peers: mpsc::Receiver<Input>,
        tick: Duration,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut exports = tokio::time::interval(self.export_interval);
        exports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ticker.tick() => {
                    let store = self.store.clone();
                    self.lc.tick(&*store);
                }
                input = peers.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                _ = exports.tick() => {
                    if self.lc.raft().is_some_and(|r| r.role() == Role::Leader) {
                        self.export(false);
                    }
                }
                input = rx.recv() => match input {
                    Some(input) => {
                        self.handle(input);
                        // Take whatever else is queued before acting: one Ready for many inputs.
                        for _ in 1..CLIENT_BATCH {
                            match rx.try_recv() {
                                Ok(input) => self.handle(input),
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
                    Ok(input) => self.handle(input),
                    Err(_) => break,
                }
            }
            self.act();
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer(from, messages, lifecycle) => {
                let store = self.store.clone();
                for m in lifecycle {
                    self.lc.receive(&from, m, &*store);
                }
                if self.heard.len() > 1024 {
                    self.heard.clear();
                }
                if let Some(raft) = self.lc.raft_mut() {
                    for m in messages {
                        self.heard.insert(m.from, from.clone());
                        raft.step(m);
                    }
                }
            }
            Input::ExportNow(reply) => {
                let _ = reply.send(self.export_data(true));
            }
            Input::TransferAway(reply) => {
                let heir = self.lc.raft_mut().and_then(|raft| {
                    if raft.role() != Role::Leader {
                        return None;
                    }
                    let me = raft.id();
                    let heir = raft
                        .progress()
                        .iter()
                        .filter(|(id, _)| **id != me && raft.config().is_voter(**id))
                        .max_by_key(|(_, p)| p.match_index)
                        .map(|(id, _)| *id)?;
                    raft.transfer_leadership(heir).then_some(heir)
                });
                let _ = reply.send(heir);
            }
            Input::Propose(cmd, reply) => match serde_json::to_vec(&cmd) {
                Ok(bytes) => match self
                    .lc
                    .raft_mut()
                    .map(|r| (r.propose(bytes.into()), r.term()))
                {
                    None => {
                        let _ = reply.send(Err(KvsError::NoLeader));
                    }
                    Some((Ok(index), term)) => {
                        self.proposals.insert(index, (term, reply));
                    }
                    Some((Err(RaftError::NotLeader { .. } | RaftError::TransferInProgress), _)) => {
                        let _ = reply.send(Err(KvsError::NoLeader));
                    }
                    Some((Err(RaftError::TooManyPendingReads), _)) => {
                        let _ = reply.send(Err(KvsError::Unavailable("overloaded".into())));
                    }
                },
                Err(e) => {
                    let _ = reply.send(Err(KvsError::InvalidArgument(e.to_string())));
                }
            },
            Input::Read(txn, reply) => {
                self.next_ctx += 1;
                let ctx = self.next_ctx;
                match self.lc.raft_mut().map(|r| r.read_index(ctx)) {
                    Some(Ok(())) => {
                        self.reads.insert(ctx, (txn, reply));
                    }
                    None | Some(Err(RaftError::NotLeader { .. })) => {
                        let _ = reply.send(Err(KvsError::NoLeader));
                    }
                    Some(Err(e)) => {
                        let _ = reply.send(Err(KvsError::Unavailable(e.to_string())));
                    }
                }
            }
            Input::Events(prefix, from, reply) => {
                let answer = self
                    .sm
                    .kv
                    .events_since(from)
                    .map(|events| {
                        let matching = events
                            .into_iter()
                            .filter(|e| event_key(e).starts_with(prefix.as_str()))
                            .collect();
                        (matching, self.sm.kv.state().revision() + 1)
                    })
                    .map_err(KvsError::from);
                let _ = reply.send(answer);
            }
            Input::Status(reply) => {
                let _ = reply.send(self.status());
            }
        }
    }

    /// Sends, applies and answers what the cores have ready.
    fn act(&mut self) {
        for (to, m) in self.lc.take_outbox() {
            if let Some(peer) = self.peers.get(&to) {
                peer.send(Outgoing::Lifecycle(m));
            }
        }
        for action in self.lc.take_actions() {
            match action {
                Action::Start {
                    epoch,
                    state,
                    source,
                } => {
                    self.reset("joined another cluster");
                    if let Some(bytes) = state.filter(|b| !b.is_empty())
                        && let Err(e) = self.sm.restore(&bytes)
                    {
                        tracing::error!(%epoch, error = %e, "cannot restore the epoch's seed state");
                    }
                    if source.is_some() {
                        self.last_export = source;
                    }
                    tracing::info!(%epoch, incarnation = %format!("{:x}", self.lc.id()), ?source, "entered cluster");
                }
                Action::Discard { epoch } => {
                    self.reset("left the cluster");
                    tracing::warn!(%epoch, incarnation = %format!("{:x}", self.lc.id()), "left a superseded cluster; starting over empty");
                }
                Action::Export => {
                    self.export(true);
                }
            }
        }
        let Some(raft) = self.lc.raft_mut() else {
            self.log_changes();
            return;
        };
        let ready = raft.take_ready();
        let config = raft.config().clone();
        for m in ready.messages {
            let to = config
                .info(m.to)
                .map(|i| i.name.clone())
                .or_else(|| self.heard.get(&m.to).cloned());
            if let Some(peer) = to.and_then(|n| self.peers.get(&n)) {
                peer.send(Outgoing::Raft(m));
            }
        }
        if let Some((meta, bytes)) = &ready.snapshot {
            let restored = if bytes.is_empty() {
                self.sm = StateMachine::new(self.history_limit, &self.limits);
                Ok(())
            } else {
                self.sm.restore(bytes)
            };
            if let Err(e) = restored {
                tracing::error!(index = meta.index, error = %e, "cannot restore the leader's snapshot");
            }
            // Proposals the snapshot covers cannot be answered from it; they are retried.
            let covered: Vec<Index> = self
                .proposals
                .range(..=meta.index)
                .map(|(&i, _)| i)
                .collect();
            for index in covered {
                if let Some((_, reply)) = self.proposals.remove(&index) {
                    let _ = reply.send(Err(KvsError::Dropped));
                }
            }
            tracing::info!(
                index = meta.index,
                term = meta.term,
                bytes = bytes.len(),
                "installed a snapshot from the leader"
            );
        }
        for entry in ready.committed {
            let result = match &entry.payload {
                Payload::Command(bytes) => match serde_json::from_slice::<LogCommand>(bytes) {
                    Ok(cmd) => Some(self.sm.apply(entry.index, &cmd)),
                    Err(e) => {
                        tracing::error!(index = entry.index, error = %e, "undecodable log entry skipped");
                        None
                    }
                },
                Payload::Config(c) => {
                    let voters: Vec<&String> = c.voters.values().map(|i| &i.name).collect();
                    let learners: Vec<&String> = c.learners.values().map(|i| &i.name).collect();
                    tracing::info!(
                        index = entry.index,
                        ?voters,
                        ?learners,
                        "configuration committed"
                    );
                    None
                }
                Payload::Noop => None,
            };
            if let Some((term, reply)) = self.proposals.remove(&entry.index) {
                let answer = match result {
                    Some(r) if term == entry.term => r,
                    _ => Err(KvsError::Dropped),
                };
                let _ = reply.send(answer);
            }
        }
        let Some(raft) = self.lc.raft_mut() else {
            return;
        };
        let applied = raft.log().applied;
        for rs in ready.read_states {
            if let Some((txn, reply)) = self.reads.remove(&rs.ctx) {
                self.ready_reads.push((rs.index, txn, reply));
            }
        }
        for ctx in ready.dropped_reads {
            if let Some((_, reply)) = self.reads.remove(&ctx) {
                let _ = reply.send(Err(KvsError::NoLeader));
            }
        }
        let (serve, wait): (Vec<_>, Vec<_>) =
            self.ready_reads.drain(..).partition(|r| r.0 <= applied);
        self.ready_reads = wait;
        for (_, read, reply) in serve {
            let answer = match self.sm.kv.state().read_within(&read.txn, read.limit) {
                None => Err(KvsError::InvalidArgument(
                    "a read may not contain writes".into(),
                )),
                Some(Ok(answer)) => Ok(answer),
                Some(Err(bytes)) => Err(KvsError::TooLarge(format!(
                    "the answer holds more than {} bytes of keys and values ({bytes} gathered when it stopped), more than one call may carry (--max-response-bytes); read a narrower prefix or with a limit",
                    read.limit
                ))),
            };
            let _ = reply.send(answer);
        }
        // Snapshot when the log since the last one is as long as the state is
        // large (and at least `snapshot_entries`): the cost of serialising the
        // state stays a constant share per write, and memory stays ~2× the state.
        let log = raft.log();
        let threshold = self.snapshot_entries.max(self.sm.kv.state().len() as u64);
        if log.applied >= raft.snapshot_index() + threshold {
            let index = log.applied;
            let bytes = self.sm.snapshot();
            raft.compact(index, bytes.into());
        }
        self.revision.send_if_modified(|r| {
            let now = self.sm.kv.state().revision();
            let changed = *r != now;
            *r = now;
            changed
        });
        self.log_changes();
    }

    /// Drops the state machine and fails everything waiting on it.
    fn reset(&mut self, why: &str) {
        self.sm = StateMachine::new(self.history_limit, &self.limits);
        for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(KvsError::Unavailable(why.into())));
        }
        for (_, (_, reply)) in self.reads.drain() {
            let _ = reply.send(Err(KvsError::NoLeader));
        }
        for (_, _, reply) in self.ready_reads.drain(..) {
            let _ = reply.send(Err(KvsError::NoLeader));
        }
        self.last_export = None;
    }

    /// Writes the applied state to the durable store, off the loop (the
    /// interval export of a leader, or at once when `force`d: an eviction
    /// notice or a founder's request). Returns what is being written.
    fn export(&mut self, force: bool) -> Option<ExportMeta> {
        let (meta, image) = self.export_data(force)?;
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
        Some(meta)
    }

    /// The applied state to export, unless it was exported already (and
    /// not `force`d).
    fn export_data(&mut self, force: bool) -> Option<(ExportMeta, StateImage)> {
        let epoch = self.lc.epoch()?;
        let raft = self.lc.raft()?;
        let applied = raft.log().applied;
        let term = raft.log().term(applied)?;
        if !force
            && self
                .last_export
                .is_some_and(|m| m.epoch == epoch && m.index == applied)
        {
            return None;
        }
        let meta = ExportMeta {
            epoch,
            index: applied,
            term,
            taken_at_ms: now_ms(),
        };
        self.last_export = Some(meta);
        Some((meta, self.sm.image()))
    }

    fn status(&self) -> NodeStatus {
        let raft = self.lc.raft();
        let members = raft.map_or_else(Vec::new, |r| {
            r.config()
                .members()
                .map(|(id, info)| MemberStatus {
                    id,
                    name: info.name.clone(),
                    voter: r.config().is_voter(id),
                })
                .collect()
        });
        NodeStatus {
            id: self.lc.id(),
            name: self.name.clone(),
            epoch: self.lc.epoch(),
            voter: raft.is_some_and(|r| r.is_voter()),
            role: raft.map_or(Role::Follower, |r| r.role()),
            term: raft.map_or(0, |r| r.term()),
            leader: raft.and_then(|r| r.leader()),
            commit_index: raft.map_or(0, |r| r.log().committed),
            applied_index: raft.map_or(0, |r| r.log().applied),
            snapshot_index: raft.map_or(0, |r| r.snapshot_index()),
            members,
            last_export: self.last_export,
            last_export_age_ms: self
                .last_export
                .map(|m| now_ms().saturating_sub(m.taken_at_ms)),
            revision: self.sm.kv.state().revision(),
            keys: self.sm.kv.state().len(),
            bytes: self.sm.kv.state().bytes(),
            quota_bytes: self.limits.quota_bytes,
            alarms: if self.sm.kv.state().bytes() >= self.limits.quota_bytes {
                vec![NOSPACE.to_string()]
            } else {
                Vec::new()
            },
        }
    }

    fn log_changes(&mut self) {
        let raft = self.lc.raft();
        let now = (raft.map_or(0, |r| r.term()), raft.and_then(|r| r.leader()));
        if now != self.seen {
            self.seen = now;
            let role = raft.map(|r| r.role());
            tracing::info!(term = now.0, leader = ?now.1.map(|l| format!("{l:x}")), ?role, "raft state changed");
        }
        // A joiner learns its leader before the configuration that names
        // the leader's address: publish the address when it appears too.
        let addr = now.1.and_then(|l| {
            raft.and_then(|r| r.config().info(l))
                .map(|i| (l, i.addr.clone()))
        });
        self.leader.send_if_modified(|current| {
            let changed = *current != addr;
            if changed {
                current.clone_from(&addr);
            }
            changed
        });
        let leading = raft
            .filter(|r| r.role() == Role::Leader)
            .map(|r| Leadership {
                epoch: self.lc.epoch().map_or(0, |e| e.number),
                term: r.term(),
            });
        self.leadership.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        });
    }
}

fn event_key(e: &Event) -> &str {
    match e {
        Event::Put { kv } => &kv.key,
        Event::Delete { key, .. } => key,
    }
}

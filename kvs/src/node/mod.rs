//! A running member: the Raft core driven by tokio, its peers over `rpc`, and
//! the state machine it applies to.
//!
//! ```text
//!  RaftPeer.deliver ─┐                     ┌─▶ PeerSender (per peer, batched) ─▶ peers
//!  Kv handlers ──────┼─▶ Input queue ─▶ raft loop ─┤
//!  ticker (tick_ms) ─┘   (bounded)      step/tick/ └─▶ apply to StateMachine ─▶ answer
//!                                       propose/read    proposals, reads, watchers
//! ```
//!
//! Invariants: only the raft loop touches the core and the state machine, so
//! the core stays single-threaded and deterministic; a proposal is answered
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

use crate::api::{KvsError, LogCommand, NodeStatus};
use crate::kv::{Event, Limits, Txn, TxnResponse};
use crate::raft::{Config, Index, Message, NodeId, Payload, RaftError, RaftNode, Term};
pub use service::{KvService, PeerService};
use state::StateMachine;
use transport::PeerSender;

/// How one member is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member.
    pub id: NodeId,
    /// Its name (for logs and status).
    pub name: String,
    /// Every member, this one included: id → (name, address).
    pub members: BTreeMap<NodeId, (String, String)>,
    /// The bearer token members and clients present.
    pub token: Option<String>,
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
    /// Where and how often the leader exports its state, if anywhere.
    pub export: Option<Export>,
}

/// Periodic exports of the leader's state to durable storage.
#[derive(Clone)]
pub struct Export {
    /// The store.
    pub store: Arc<dyn crate::snapshot_store::SnapshotStore>,
    /// How often.
    pub interval: Duration,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("interval", &self.interval)
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
    Peer(Vec<Message>),
    Propose(LogCommand, oneshot::Sender<Result<TxnResponse, KvsError>>),
    Read(Txn, oneshot::Sender<Result<TxnResponse, KvsError>>),
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
    inputs: mpsc::Sender<Input>,
    revision: watch::Receiver<i64>,
    leader: watch::Receiver<Option<NodeId>>,
    config: Arc<NodeConfig>,
}

/// Most requests waiting for the raft loop.
const INPUT_QUEUE: usize = 8192;

impl Node {
    /// Starts the raft loop and the peer senders.
    pub fn start(config: NodeConfig) -> Result<Node, rpc::ConfigError> {
        let mut peers = BTreeMap::new();
        for (&id, (_, addr)) in config.members.iter().filter(|(id, _)| **id != config.id) {
            let timeout = (config.tick * 5).max(Duration::from_millis(200));
            peers.insert(
                id,
                PeerSender::start(id, addr.clone(), config.token.clone(), timeout)?,
            );
        }
        let mut raft_config = Config::new(config.id, config.members.keys().copied().collect());
        raft_config.election_tick = config.election_ticks;
        let seed = seed_from_clock(config.id);
        let (inputs, rx) = mpsc::channel(INPUT_QUEUE);
        let (revision_tx, revision) = watch::channel(0);
        let (leader_tx, leader) = watch::channel(None);
        let state = Loop {
            raft: RaftNode::new(raft_config, seed),
            sm: StateMachine::new(config.history_limit),
            peers,
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            next_ctx: 0,
            revision: revision_tx,
            leader: leader_tx,
            seen: (0, None),
            name: config.name.clone(),
            snapshot_entries: config.snapshot_entries.max(1),
            export: config.export.clone(),
            exported: 0,
        };
        tokio::spawn(state.run(rx, config.tick));
        Ok(Node {
            inputs,
            revision,
            leader,
            config: Arc::new(config),
        })
    }

    /// The member's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<NodeId> {
        *self.leader.borrow()
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

    /// Hands peer messages to the loop.
    pub(crate) async fn deliver(&self, messages: Vec<Message>) -> Result<(), KvsError> {
        self.inputs
            .send(Input::Peer(messages))
            .await
            .map_err(|_| KvsError::Unavailable("the member is shutting down".into()))
    }

    /// Proposes a write here; `NoLeader`-style errors mean "not the leader".
    pub(crate) async fn propose(&self, cmd: LogCommand) -> Result<TxnResponse, KvsError> {
        self.ask(|tx| Input::Propose(cmd, tx)).await?
    }

    /// A linearizable read-only transaction.
    pub(crate) async fn read(&self, txn: Txn) -> Result<TxnResponse, KvsError> {
        self.ask(|tx| Input::Read(txn, tx)).await?
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

fn seed_from_clock(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id())
}

type Reply = oneshot::Sender<Result<TxnResponse, KvsError>>;

/// The raft loop's state.
struct Loop {
    raft: RaftNode,
    sm: StateMachine,
    peers: BTreeMap<NodeId, PeerSender>,
    proposals: BTreeMap<Index, (Term, Reply)>,
    reads: HashMap<u64, (Txn, Reply)>,
    ready_reads: Vec<(Index, Txn, Reply)>,
    next_ctx: u64,
    revision: watch::Sender<i64>,
    leader: watch::Sender<Option<NodeId>>,
    seen: (Term, Option<NodeId>),
    name: String,
    snapshot_entries: u64,
    export: Option<Export>,
    /// The index of the last export.
    exported: Index,
}

impl Loop {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let export_every = self
            .export
            .as_ref()
            .map_or(Duration::from_secs(3600), |e| e.interval);
        let mut exports = tokio::time::interval(export_every);
        exports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.raft.tick(),
                _ = exports.tick() => self.export(),
                input = rx.recv() => match input {
                    Some(input) => {
                        self.handle(input);
                        // Take whatever else is queued before acting: one Ready for many inputs.
                        for _ in 0..1024 {
                            match rx.try_recv() {
                                Ok(input) => self.handle(input),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
            }
            self.act();
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer(messages) => {
                for m in messages {
                    self.raft.step(m);
                }
            }
            Input::Propose(cmd, reply) => match serde_json::to_vec(&cmd) {
                Ok(bytes) => match self.raft.propose(bytes.into()) {
                    Ok(index) => {
                        self.proposals.insert(index, (self.raft.term(), reply));
                    }
                    Err(RaftError::NotLeader { .. }) | Err(RaftError::TransferInProgress) => {
                        let _ = reply.send(Err(KvsError::NoLeader));
                    }
                    Err(RaftError::TooManyPendingReads) => {
                        let _ = reply.send(Err(KvsError::Unavailable("overloaded".into())));
                    }
                },
                Err(e) => {
                    let _ = reply.send(Err(KvsError::InvalidArgument(e.to_string())));
                }
            },
            Input::Read(txn, reply) => {
                self.next_ctx += 1;
                match self.raft.read_index(self.next_ctx) {
                    Ok(()) => {
                        self.reads.insert(self.next_ctx, (txn, reply));
                    }
                    Err(RaftError::NotLeader { .. }) => {
                        let _ = reply.send(Err(KvsError::NoLeader));
                    }
                    Err(e) => {
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
                let log = self.raft.log();
                let _ = reply.send(NodeStatus {
                    id: self.raft.id(),
                    name: self.name.clone(),
                    role: self.raft.role(),
                    term: self.raft.term(),
                    leader: self.raft.leader(),
                    commit_index: log.committed,
                    applied_index: log.applied,
                    revision: self.sm.kv.state().revision(),
                    keys: self.sm.kv.state().len(),
                });
            }
        }
    }

    /// Sends, applies and answers what the core has ready.
    fn act(&mut self) {
        let ready = self.raft.take_ready();
        for m in ready.messages {
            if let Some(peer) = self.peers.get(&m.to) {
                peer.send(m);
            }
        }
        if let Some((meta, bytes)) = &ready.snapshot {
            if let Err(e) = self.sm.restore(bytes) {
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
                Payload::Noop | Payload::Config(_) => None,
            };
            if let Some((term, reply)) = self.proposals.remove(&entry.index) {
                let answer = match result {
                    Some(r) if term == entry.term => r,
                    _ => Err(KvsError::Dropped),
                };
                let _ = reply.send(answer);
            }
        }
        let applied = self.raft.log().applied;
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
        for (_, txn, reply) in serve {
            let answer =
                self.sm.kv.state().read(&txn).ok_or_else(|| {
                    KvsError::InvalidArgument("a read may not contain writes".into())
                });
            let _ = reply.send(answer);
        }
        // Snapshot when the log since the last one is as long as the state is
        // large (and at least `snapshot_entries`): the cost of serialising the
        // state stays a constant share per write, and memory stays ~2× the state.
        let log = self.raft.log();
        let threshold = self.snapshot_entries.max(self.sm.kv.state().len() as u64);
        if log.applied >= log.snapshot_index() + threshold {
            let index = log.applied;
            let bytes = self.sm.snapshot();
            self.raft.compact(index, bytes.into());
        }
        self.revision.send_if_modified(|r| {
            let now = self.sm.kv.state().revision();
            let changed = *r != now;
            *r = now;
            changed
        });
        self.log_changes();
    }

    /// Leader: writes the current state to the durable store, off the loop.
    fn export(&mut self) {
        let Some(export) = self.export.clone() else {
            return;
        };
        let applied = self.raft.log().applied;
        if self.raft.role() != crate::raft::Role::Leader || applied == self.exported {
            return;
        }
        let Some(term) = self.raft.log().term(applied) else {
            return;
        };
        self.exported = applied;
        let data = self.sm.snapshot();
        let meta = crate::snapshot_store::ExportMeta {
            epoch: crate::lifecycle::EpochId::default(),
            index: applied,
            term,
            taken_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        tokio::task::spawn_blocking(move || match export.store.put(meta, &data) {
            Ok(()) => tracing::info!(
                index = meta.index,
                bytes = data.len(),
                "exported a snapshot"
            ),
            Err(e) => tracing::warn!(error = %e, "snapshot export failed"),
        });
    }

    fn log_changes(&mut self) {
        let now = (self.raft.term(), self.raft.leader());
        if now != self.seen {
            self.seen = now;
            let role = self.raft.role();
            tracing::info!(term = now.0, leader = ?now.1, ?role, "raft state changed");
            self.leader.send_replace(now.1);
        }
    }
}

fn event_key(e: &Event) -> &str {
    match e {
        Event::Put { kv } => &kv.key,
        Event::Delete { key, .. } => key,
    }
}

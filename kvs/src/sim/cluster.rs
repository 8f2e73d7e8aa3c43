//! The simulated cluster and its clients (see the parent module's doc).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::invariants::{Invariants, Step};
use super::network::{LinkFaults, Network};
use crate::api::{KvsError, RequestId, TxnRequest};
use crate::kv::{CmpOp, Compare, CompareTarget, KvState, Limits, Op, Txn, TxnResponse};
use crate::lifecycle::{EpochId, LifecycleMessage, Settings};
use crate::linearizability::{EpochHistory, KvHistory, Operation};
use crate::member::{
    Effect, ForwardOutcome, Input, Member, MemberBugs, MemberConfig, Observed, Outgoing,
    StateImage, StateMachine, Token,
};
use crate::raft::{
    Bugs, Config, Entry, Index, Message, NodeId, Payload, RaftNode, Role, SnapshotMeta, SplitMix64,
};
use crate::snapshot_store::{ExportMeta, MemorySnapshotStore, SnapshotStore};

/// One run's settings.
#[derive(Debug, Clone)]
pub(crate) struct SimConfig {
    pub(crate) seed: u64,
    pub(crate) nodes: usize,
    pub(crate) clients: usize,
    /// Faults happen during `[0, fault_ms)`; then everything heals.
    pub(crate) fault_ms: u64,
    /// After healing, a leader and `ops_after_heal` answers per client must come within this.
    pub(crate) liveness_ms: u64,
    pub(crate) ops_after_heal: usize,
    /// A client gives up on an operation after this long.
    pub(crate) op_timeout_ms: u64,
    pub(crate) bugs: Bugs,
    /// Bugs planted in the member (see `MemberBugs`).
    pub(crate) member_bugs: MemberBugs,
    /// Upper bound on the linearizability search.
    pub(crate) checker_steps: u64,
    /// Print every event but ticks to stderr.
    pub(crate) verbose: bool,
    /// Names the runs of one test in the files they save (with the seed).
    pub(crate) label: &'static str,
}

impl SimConfig {
    pub(crate) fn new(seed: u64, nodes: usize) -> Self {
        SimConfig {
            seed,
            nodes,
            clients: 4,
            fault_ms: 3_000,
            liveness_ms: 5_000,
            ops_after_heal: 3,
            op_timeout_ms: 1_000,
            bugs: Bugs::default(),
            member_bugs: MemberBugs::default(),
            checker_steps: 5_000_000,
            verbose: std::env::var_os("SIM_TRACE").is_some(),
            label: "faults",
        }
    }

    /// The one-line command that replays this run.
    pub(crate) fn replay_command(&self) -> String {
        format!(
            "SIM_SEED={} SIM_NODES={} cargo test -p kvs --lib sim::tests::replay -- --nocapture",
            self.seed, self.nodes
        )
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) trace_digest: u64,
    pub(crate) history: KvHistory,
    /// The same operations with their epochs, and each epoch's seed.
    pub(crate) epoch_history: EpochHistory,
    /// Lengths of the periods without a usable leader (virtual ms).
    pub(crate) leaderless_ms: Vec<u64>,
    /// From healing to a usable leader (virtual ms).
    pub(crate) recovery_ms: u64,
    pub(crate) events: u64,
    /// Snapshots installed from a leader during the run.
    pub(crate) snapshots_installed: u64,
    /// Clusters formed (the first included), and how many of them started
    /// from an export rather than from nothing.
    pub(crate) epochs: u64,
    pub(crate) epochs_from_export: u64,
    /// Evictions (crash with memory loss, then a restart) by kind.
    pub(crate) evictions: Evictions,
    /// Restarted incarnations promoted to voter in place of their previous one.
    pub(crate) promotions: u64,
    /// Acknowledged writes lost to re-formations: the bound the test states
    /// is that only writes acknowledged after the newest export are lost.
    pub(crate) lost_acknowledged: u64,
}

/// How many evictions of each kind a run saw.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Evictions {
    pub(crate) minority: u64,
    pub(crate) majority: u64,
    pub(crate) all: u64,
    /// Replace-a-node churn: one node after another restarted quickly.
    pub(crate) churn: u64,
}

const TICK_MS: u64 = 10;
const MAX_EVENTS: u64 = 3_000_000;
const KEYS: [&str; 3] = ["x", "y", "z"];

#[derive(Debug, Clone)]
enum Answer {
    /// Answered by a member of this epoch.
    Ok(EpochId, TxnResponse),
    /// Certainly not applied; retry (at `leader`, if known).
    Retry(Option<NodeId>),
}

#[derive(Debug, Clone)]
enum Ev {
    /// A node's clock; only the chain of the node's current generation counts.
    Tick(NodeId, u64),
    /// A Raft message from slot `from` to slot `to`.
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: Message,
    },
    ClientRequest {
        node: NodeId,
        client: usize,
        req: u64,
        slot: usize,
        /// The process that sent it (its request ids are its own).
        pid: u64,
        txn: Txn,
    },
    ClientResponse {
        client: usize,
        req: u64,
        answer: Answer,
    },
    ClientWake(usize),
    /// A write forwarded by slot `from` to the leader at slot `to`.
    Forward {
        from: NodeId,
        to: NodeId,
        token: Token,
        attempt: u64,
        request: TxnRequest,
    },
    /// What came back to slot `to` for a forwarded write.
    ForwardAnswer {
        to: NodeId,
        token: Token,
        attempt: u64,
        outcome: ForwardOutcome,
    },
    /// A client's attempt `req` went unanswered for long: it sends the
    /// operation again (a write with the same request id) elsewhere.
    AttemptTimeout {
        client: usize,
        req: u64,
    },
    Fault,
    Resume(NodeId),
    Heal,
    /// A lifecycle message between two names (slot ids).
    Lc {
        from: NodeId,
        to: NodeId,
        msg: LifecycleMessage,
    },
    /// An evicted slot starts again, empty, as a new incarnation.
    Restart(NodeId),
    /// Evict a slot; it restarts after the given ms.
    Evict(NodeId, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Up,
    Paused,
    Crashed,
}

struct Node {
    /// The code that runs in production, driven by the simulator.
    member: Member,
    state: NodeState,
    tick_ms: u64,
    /// Bumped when a pause ends, so the tick chain from before the pause dies.
    tick_gen: u64,
    held: Vec<Ev>,
    /// Requests the member has not answered: client, attempt, history slot.
    tokens: BTreeMap<Token, (usize, u64, usize)>,
    /// Writes forwarded here: the sender's slot, token and attempt.
    forwards: BTreeMap<Token, (NodeId, Token, u64)>,
    next_token: Token,
}

struct InFlight {
    req: u64,
    slot: usize,
    txn: Txn,
    deadline: u64,
}

struct Client {
    pid: u64,
    op: Option<InFlight>,
    leader_guess: Option<NodeId>,
    last_target: NodeId,
    seq: u64,
    last_seen: BTreeMap<String, String>,
    ok_after_heal: usize,
}

/// A failed run: why, and how to replay it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) reason: String,
    pub(crate) replay: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n  replay: {}", self.reason, self.replay)
    }
}

struct Sim {
    cfg: SimConfig,
    rng: SplitMix64,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    ids: Vec<NodeId>,
    net: Network,
    clients: Vec<Client>,
    history: Vec<Option<Operation<Txn, TxnResponse>>>,
    /// The epoch whose member answered each operation.
    history_epochs: Vec<Option<EpochId>>,
    /// The safety checks, per cluster epoch (terms restart with each).
    invariants: BTreeMap<EpochId, Invariants>,
    digest: DefaultHasher,
    next_req: u64,
    next_pid: u64,
    healed_at: Option<u64>,
    recovered_at: Option<u64>,
    /// Where each history slot's write applied and what it answered there:
    /// once per epoch (a write lost by a re-formation and retried with its
    /// request id applies again in the next epoch).
    applied: BTreeMap<usize, BTreeMap<EpochId, (Index, TxnResponse)>>,
    /// This run's nemesis is rolling isolation rather than the mixed one.
    rolling: bool,
    /// Take a snapshot once this many entries are applied since the last.
    compact_every: u64,
    snapshots_installed: u64,
    /// Per epoch, a digest of the KV state after each applied index (from
    /// whichever node applied it first), to check snapshots and exports
    /// against. Index 1 is the epoch's seed.
    state_digests: BTreeMap<EpochId, Vec<u64>>,
    leaderless_since: Option<u64>,
    leaderless_ms: Vec<u64>,
    /// The durable store of exports, shared by all nodes and surviving them.
    store: std::sync::Arc<MemorySnapshotStore>,
    /// The template of every incarnation's settings.
    settings: Settings,
    /// A leader exports this often (virtual ms).
    export_every: u64,
    last_export: BTreeMap<EpochId, u64>,
    /// Each epoch's seed state, for its linearizability check.
    seeds: BTreeMap<EpochId, KvState>,
    /// Acknowledged writes: (epoch, index).
    acknowledged: Vec<(EpochId, Index)>,
    epochs_from_export: u64,
    evictions: Evictions,
    promotions: u64,
    lost_acknowledged: u64,
    /// The last configuration applied in each epoch.
    configs: BTreeMap<EpochId, crate::raft::Membership>,
}

/// Runs one simulation; `Err` names the violated property and the replay command.
pub(crate) fn run(cfg: &SimConfig) -> Result<Report, Failure> {
    let mut sim = Sim::new(cfg.clone());
    let result = sim.run();
    if std::env::var_os("SIM_SAVE_HISTORY").is_some() {
        save_history(cfg, &sim.epoch_history());
    }
    result.map_err(|reason| {
        let saved = save_history(cfg, &sim.epoch_history());
        Failure {
            reason: format!(
                "seed {} ({} nodes) at {} ms: {reason}\n  history: {saved}",
                cfg.seed, cfg.nodes, sim.now
            ),
            replay: cfg.replay_command(),
        }
    })
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = SplitMix64::new(cfg.seed);
        let ids: Vec<NodeId> = (1..=cfg.nodes as NodeId).collect();
        // Small batches and windows split the log across messages, which
        // exposes more interleavings (Figure 8 of the Raft paper needs one).
        let max_batch_entries = rng.range(1, 9) as usize;
        let max_inflight = rng.range(1, 17) as usize;
        // Frequent snapshots in small chunks, so that compaction,
        // InstallSnapshot and restores happen in most runs.
        let compact_every = rng.range(2, 30);
        let snapshot_chunk_bytes = rng.range(16, 512) as usize;
        // Both protections are optional in Raft; runs without them see more
        // disruptive elections and more term churn.
        let pre_vote = rng.chance(0.5);
        let check_quorum = rng.chance(0.5);
        let mut rc = Config::new(0, Vec::new());
        rc.bugs = cfg.bugs;
        rc.max_batch_entries = max_batch_entries;
        rc.max_inflight = max_inflight;
        rc.snapshot_chunk_bytes = snapshot_chunk_bytes;
        // Sometimes a log tail behind snapshots, sometimes none.
        rc.retain_entries = [0, 0, 3, 20][rng.below(4) as usize];
        rc.pre_vote = pre_vote;
        rc.check_quorum = check_quorum;
        let fleet = ids.iter().map(|&id| (name_of(id), String::new())).collect();
        let settings = Settings::new("", fleet, rc);
        let export_every = rng.range(100, 1000);
        let nodes = ids
            .iter()
            .map(|&id| Node {
                member: new_member(
                    &settings,
                    id,
                    compact_every,
                    rng.next_u64(),
                    cfg.member_bugs,
                ),
                state: NodeState::Up,
                // Clock skew: each node's tick is 8–12 virtual ms.
                tick_ms: rng.range(TICK_MS - 2, TICK_MS + 3),
                tick_gen: 0,
                held: Vec::new(),
                tokens: BTreeMap::new(),
                forwards: BTreeMap::new(),
                next_token: 0,
            })
            .collect();
        let rolling = rng.chance(0.3);
        let clients = (0..cfg.clients)
            .map(|i| Client {
                pid: i as u64,
                op: None,
                leader_guess: None,
                last_target: i as NodeId % cfg.nodes as NodeId + 1,
                seq: 0,
                last_seen: BTreeMap::new(),
                ok_after_heal: 0,
            })
            .collect();
        Sim {
            next_pid: cfg.clients as u64,
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            ids,
            net: Network::new(),
            clients,
            history: Vec::new(),
            history_epochs: Vec::new(),
            invariants: BTreeMap::new(),
            digest: DefaultHasher::new(),
            next_req: 0,
            healed_at: None,
            recovered_at: None,
            applied: BTreeMap::new(),
            rolling,
            compact_every,
            snapshots_installed: 0,
            state_digests: BTreeMap::new(),
            leaderless_since: Some(0),
            leaderless_ms: Vec::new(),
            store: std::sync::Arc::default(),
            settings,
            export_every,
            last_export: BTreeMap::new(),
            seeds: BTreeMap::new(),
            acknowledged: Vec::new(),
            epochs_from_export: 0,
            evictions: Evictions::default(),
            promotions: 0,
            lost_acknowledged: 0,
            configs: BTreeMap::new(),
        }
    }

    /// The slot whose current incarnation is `id`.
    fn slot_of(&self, id: NodeId) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.member.id() == id)
            .map(|i| i as NodeId + 1)
    }

    fn schedule(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    fn run(&mut self) -> Result<Report, String> {
        for id in self.ids.clone() {
            let t = self.node(id).tick_ms;
            self.schedule(t, Ev::Tick(id, 0));
        }
        for c in 0..self.clients.len() {
            let d = self.rng.range(1, 50);
            self.schedule(d, Ev::ClientWake(c));
        }
        let first_fault = self.rng.range(100, 400);
        self.schedule(first_fault, Ev::Fault);
        self.schedule(self.cfg.fault_ms, Ev::Heal);
        let mut events = 0u64;
        while let Some(Reverse((time, seq))) = self.queue.pop() {
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            self.now = time;
            events += 1;
            if events > MAX_EVENTS {
                return Err("event budget exhausted".into());
            }
            self.trace(&ev);
            self.handle(ev)?;
            self.track_leader();
            if self.finished()? {
                break;
            }
        }
        self.resolve_pending();
        self.check_history()?;
        Ok(Report {
            trace_digest: self.digest.finish(),
            history: self.history.iter().flatten().cloned().collect(),
            epoch_history: self.epoch_history(),
            leaderless_ms: self.leaderless_ms.clone(),
            recovery_ms: self.recovered_at.unwrap_or(0) - self.healed_at.unwrap_or(0),
            events,
            snapshots_installed: self.snapshots_installed,
            epochs: self.seeds.len() as u64,
            epochs_from_export: self.epochs_from_export,
            evictions: self.evictions,
            promotions: self.promotions,
            lost_acknowledged: self.lost_acknowledged,
        })
    }

    fn trace(&mut self, ev: &Ev) {
        if self.cfg.verbose
            && (std::env::var_os("SIM_TICKS").is_some() || !matches!(ev, Ev::Tick(..)))
        {
            eprintln!("{:>6} {ev:?}", self.now);
        }
        self.now.hash(&mut self.digest);
        match ev {
            Ev::Tick(n, _) => (0u8, *n).hash(&mut self.digest),
            Ev::Deliver { msg: m, .. } => {
                (1u8, m.from, m.to, m.term, body_kind(&m.body)).hash(&mut self.digest)
            }
            Ev::ClientRequest {
                node, client, req, ..
            } => (2u8, *node, *client, *req).hash(&mut self.digest),
            Ev::ClientResponse { client, req, .. } => (3u8, *client, *req).hash(&mut self.digest),
            Ev::ClientWake(c) => (4u8, *c).hash(&mut self.digest),
            Ev::AttemptTimeout { client, req } => (11u8, *client, *req).hash(&mut self.digest),
            Ev::Forward {
                from,
                to,
                token,
                attempt,
                ..
            } => (12u8, *from, *to, *token, *attempt).hash(&mut self.digest),
            Ev::ForwardAnswer {
                to, token, attempt, ..
            } => (13u8, *to, *token, *attempt).hash(&mut self.digest),
            Ev::Fault => 5u8.hash(&mut self.digest),
            Ev::Resume(n) => (6u8, *n).hash(&mut self.digest),
            Ev::Heal => 7u8.hash(&mut self.digest),
            Ev::Lc { from, to, .. } => (8u8, *from, *to).hash(&mut self.digest),
            Ev::Restart(n) => (9u8, *n).hash(&mut self.digest),
            Ev::Evict(n, back) => (10u8, *n, *back).hash(&mut self.digest),
        }
    }

    fn handle(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Tick(id, generation) => {
                let node = self.node(id);
                if node.state == NodeState::Up && node.tick_gen == generation {
                    self.on_node(id, Input::Tick)?;
                    let t = self.node(id).tick_ms;
                    self.schedule(t, Ev::Tick(id, generation));
                }
            }
            Ev::Deliver { from, to, msg } => match self.node(to).state {
                NodeState::Up => self.on_node(
                    to,
                    Input::Peer {
                        from: name_of(from),
                        messages: vec![msg],
                        lifecycle: Vec::new(),
                    },
                )?,
                NodeState::Paused => self.node(to).held.push(Ev::Deliver { from, to, msg }),
                NodeState::Crashed => {}
            },
            Ev::Lc { from, to, msg } => match self.node(to).state {
                NodeState::Up => self.on_node(
                    to,
                    Input::Peer {
                        from: name_of(from),
                        messages: Vec::new(),
                        lifecycle: vec![msg],
                    },
                )?,
                NodeState::Paused => self.node(to).held.push(Ev::Lc { from, to, msg }),
                NodeState::Crashed => {}
            },
            Ev::Restart(id) => self.restart(id),
            Ev::Evict(id, back) => {
                if self.healed_at.is_none() {
                    self.evict(id, back);
                }
            }
            Ev::ClientRequest {
                node,
                client,
                req,
                slot,
                pid,
                txn,
            } => match self.node(node).state {
                NodeState::Up => self.request(node, client, req, slot, pid, txn)?,
                NodeState::Paused => self.node(node).held.push(Ev::ClientRequest {
                    node,
                    client,
                    req,
                    slot,
                    pid,
                    txn,
                }),
                NodeState::Crashed => {}
            },
            Ev::ClientResponse {
                client,
                req,
                answer,
            } => self.response(client, req, answer),
            Ev::ClientWake(c) => self.wake(c),
            Ev::Forward {
                from,
                to,
                token,
                attempt,
                request,
            } => match self.node(to).state {
                NodeState::Up => {
                    let node = self.node(to);
                    node.next_token += 1;
                    let t = node.next_token;
                    node.forwards.insert(t, (from, token, attempt));
                    self.on_node(to, Input::Write { token: t, request })?;
                }
                NodeState::Paused => self.node(to).held.push(Ev::Forward {
                    from,
                    to,
                    token,
                    attempt,
                    request,
                }),
                // The call times out at the sender.
                NodeState::Crashed => self.forward_failed(from, token, attempt),
            },
            Ev::ForwardAnswer {
                to,
                token,
                attempt,
                outcome,
            } => match self.node(to).state {
                NodeState::Up => self.on_node(
                    to,
                    Input::Forwarded {
                        token,
                        attempt,
                        outcome,
                    },
                )?,
                NodeState::Paused => self.node(to).held.push(Ev::ForwardAnswer {
                    to,
                    token,
                    attempt,
                    outcome,
                }),
                NodeState::Crashed => {}
            },
            Ev::AttemptTimeout { client, req } => {
                if self.clients[client]
                    .op
                    .as_ref()
                    .is_some_and(|op| op.req == req)
                {
                    // As a real client does: another endpoint, same request id.
                    self.clients[client].leader_guess = None;
                    self.response(client, req, Answer::Retry(None));
                }
            }
            Ev::Fault => self.fault(),
            Ev::Resume(id) => self.resume(id),
            Ev::Heal => self.heal(),
        }
        Ok(())
    }

    /// Hands `input` to node `id`'s member, lets it act, carries out its
    /// effects, then checks what it did: the invariants of its epoch, the
    /// states it applied, restored and exported.
    fn on_node(&mut self, id: NodeId, input: Input) -> Result<(), String> {
        let now = self.now;
        let node = self.node(id);
        let epoch_before = node.member.lifecycle().epoch();
        let (commit_before, role_before) = node
            .member
            .lifecycle()
            .raft()
            .map_or((0, Role::Follower), |r| (r.log().committed, r.role()));
        node.member.handle(input, now);
        node.member.act();
        let (applied, installed) = self.observe(id)?;
        self.carry_out(id)?;
        if let Some(epoch) = self.nodes[(id - 1) as usize].member.lifecycle().epoch() {
            let (commit_before, role_before) = if epoch_before == Some(epoch) {
                (commit_before, role_before)
            } else {
                (0, Role::Follower)
            };
            self.strike(id, commit_before, role_before);
            self.check_invariants(id, epoch, commit_before, role_before, &applied, installed)?;
            self.export_if_due(id, epoch)?;
        }
        Ok(())
    }

    fn check_invariants(
        &mut self,
        id: NodeId,
        epoch: EpochId,
        commit_before: Index,
        role_before: Role,
        applied: &[Entry],
        installed: Option<SnapshotMeta>,
    ) -> Result<(), String> {
        let Some(raft) = self.nodes[(id - 1) as usize].member.lifecycle().raft() else {
            return Ok(());
        };
        let all: Vec<&RaftNode> = self
            .nodes
            .iter()
            .filter(|n| {
                n.state != NodeState::Crashed && n.member.lifecycle().epoch() == Some(epoch)
            })
            .filter_map(|n| n.member.lifecycle().raft())
            .collect();
        self.invariants
            .entry(epoch)
            .or_default()
            .after_step(
                &Step {
                    node: raft,
                    commit_before,
                    role_before,
                    applied,
                    installed,
                },
                &all,
            )
            .map_err(|e| format!("epoch {epoch}: {e}"))
    }

    /// Checks what node `id`'s member recorded: epochs started, snapshots
    /// restored and entries applied, against what the others did at the
    /// same index. Returns the entries applied and the snapshot installed.
    fn observe(&mut self, id: NodeId) -> Result<(Vec<Entry>, Option<SnapshotMeta>), String> {
        let mut applied = Vec::new();
        let mut installed = None;
        for observed in self.node(id).member.take_observed() {
            let epoch = self.node(id).member.lifecycle().epoch();
            match observed {
                Observed::Started {
                    epoch,
                    seed,
                    source,
                } => self.start_epoch(id, epoch, seed, source)?,
                Observed::Discarded => {}
                Observed::Installed { meta, digest } => {
                    self.snapshots_installed += 1;
                    let Some(epoch) = epoch else { continue };
                    let digests = self.state_digests.entry(epoch).or_default();
                    if let Some(&known) = digests.get((meta.index - 1) as usize)
                        && known != digest
                    {
                        return Err(format!(
                            "node {id} restored a snapshot at index {} whose state differs from the state applied there",
                            meta.index
                        ));
                    }
                    installed = Some(meta);
                }
                Observed::Applied {
                    entry,
                    command,
                    result,
                    replayed,
                    digest,
                } => {
                    let Some(epoch) = epoch else { continue };
                    let digests = self.state_digests.entry(epoch).or_default();
                    let first = digests.len() as u64 == entry.index - 1;
                    if first {
                        digests.push(digest);
                    } else if digests
                        .get((entry.index - 1) as usize)
                        .is_some_and(|&known| known != digest)
                    {
                        return Err(format!(
                            "node {id} applied index {} of epoch {epoch} to another state than its peers (a write applied twice, or a lost answer table)",
                            entry.index
                        ));
                    }
                    if let (Some(cmd), Some(Ok(r)), false) = (&command, &result, replayed)
                        && let Some(rid) = cmd.request_id
                    {
                        self.applied
                            .entry(rid.seq as usize)
                            .or_default()
                            .entry(epoch)
                            .or_insert_with(|| (entry.index, r.clone()));
                    }
                    if let Payload::Config(c) = &entry.payload
                        && first
                    {
                        // First application of this entry: count a promotion.
                        let previous = self.configs.insert(epoch, c.clone());
                        if previous
                            .is_some_and(|p| c.voters.keys().any(|v| p.learners.contains_key(v)))
                        {
                            self.promotions += 1;
                        }
                    }
                    applied.push(entry);
                }
            }
        }
        Ok((applied, installed))
    }

    /// Carries out node `id`'s effects: messages onto the network, answers
    /// to the clients, exports into the store.
    fn carry_out(&mut self, id: NodeId) -> Result<(), String> {
        // Reads of the export store are answered at once, as a synchronous
        // read would be: a founder decides on the store as it is.
        let mut loaded = Vec::new();
        for effect in self.node(id).member.take_effects() {
            match effect {
                Effect::Send { to, message } => {
                    let Some(to) = slot_of_name(&to) else {
                        continue;
                    };
                    for delay in self.net.deliveries(id, to, &mut self.rng) {
                        let ev = match &message {
                            Outgoing::Raft(m) => Ev::Deliver {
                                from: id,
                                to,
                                msg: m.clone(),
                            },
                            Outgoing::Lifecycle(m) => Ev::Lc {
                                from: id,
                                to,
                                msg: m.clone(),
                            },
                        };
                        self.schedule(delay, ev);
                    }
                }
                Effect::Answer { token, result } => {
                    if let Some((origin, token, attempt)) = self.node(id).forwards.remove(&token) {
                        let outcome = match result {
                            Err(KvsError::NoLeader) => ForwardOutcome::NotTaken(KvsError::NoLeader),
                            other => ForwardOutcome::Answer(other),
                        };
                        match self.net.deliveries(id, origin, &mut self.rng).first() {
                            Some(&delay) => self.schedule(
                                delay,
                                Ev::ForwardAnswer {
                                    to: origin,
                                    token,
                                    attempt,
                                    outcome,
                                },
                            ),
                            // Lost on the way back: the call times out (the
                            // write may have run; its request id keeps it once).
                            None => self.forward_failed(origin, token, attempt),
                        }
                        continue;
                    }
                    let Some((client, req, slot)) = self.node(id).tokens.remove(&token) else {
                        continue;
                    };
                    // A write belongs to the epoch that applied it with this
                    // answer (a forwarded one may have applied in another
                    // epoch than this member's).
                    let applied = match &result {
                        Ok(r) => self.applied.get(&slot).and_then(|by_epoch| {
                            by_epoch
                                .iter()
                                .find(|(_, (_, answer))| answer == r)
                                .map(|(epoch, (index, _))| (*epoch, *index))
                        }),
                        Err(_) => None,
                    };
                    let epoch = applied
                        .map(|(epoch, _)| epoch)
                        .or_else(|| self.node(id).member.lifecycle().epoch());
                    let answer = match (result, epoch) {
                        (Ok(r), Some(epoch)) => {
                            if let Some(at) = applied {
                                self.acknowledged.push(at);
                            }
                            Answer::Ok(epoch, r)
                        }
                        _ => {
                            let leader = self
                                .node(id)
                                .member
                                .lifecycle()
                                .raft()
                                .and_then(|r| r.leader());
                            Answer::Retry(leader.and_then(|l| self.slot_of(l)))
                        }
                    };
                    let d = self.rng.range(1, 4);
                    self.schedule(
                        d,
                        Ev::ClientResponse {
                            client,
                            req,
                            answer,
                        },
                    );
                }
                Effect::Export { meta, image } => self.write_export(id, meta, &image)?,
                Effect::Exported { export, .. } => {
                    if let Some((meta, image)) = export {
                        self.write_export(id, meta, &image)?;
                    }
                }
                Effect::Transferred { .. } => {}
                Effect::Forward {
                    token,
                    attempt,
                    to,
                    request,
                } => {
                    let Some(to) = slot_of_name(&to) else {
                        continue;
                    };
                    // One call: at most one delivery, never a duplicate.
                    match self.net.deliveries(id, to, &mut self.rng).first() {
                        Some(&delay) => self.schedule(
                            delay,
                            Ev::Forward {
                                from: id,
                                to,
                                token,
                                attempt,
                                request,
                            },
                        ),
                        None => self.forward_failed(id, token, attempt),
                    }
                }
                Effect::LoadLatest(seq) => loaded.push(Input::LatestLoaded {
                    seq,
                    latest: self.store.latest().map_err(|e| e.to_string()),
                }),
                Effect::LoadExport(meta) => loaded.push(Input::ExportLoaded {
                    meta,
                    bytes: self.store.get(&meta).map_err(|e| e.to_string()),
                }),
                Effect::EncodeSnapshot { epoch, meta, image } => {
                    loaded.push(Input::SnapshotEncoded {
                        epoch,
                        meta,
                        bytes: image.encode(),
                    })
                }
            }
        }
        for input in loaded {
            self.on_node(id, input)?;
        }
        Ok(())
    }

    /// A node starts in `epoch`: as a founding member from `seed`, or as
    /// a joiner (no seed; a snapshot will come).
    fn start_epoch(
        &mut self,
        id: NodeId,
        epoch: EpochId,
        seed: Option<KvState>,
        source: Option<ExportMeta>,
    ) -> Result<(), String> {
        let Some(seed) = seed else {
            return Ok(());
        };
        let digest = state_digest(&seed);
        let founder = self.node(id).member.id() == epoch.founder;
        // Every member of an epoch starts from the same state.
        let digests = self.state_digests.entry(epoch).or_default();
        match digests.first() {
            Some(&known) if known != digest => {
                return Err(format!(
                    "epoch {epoch}: node {id} started from another state than its peers"
                ));
            }
            Some(_) => {}
            None => digests.push(digest),
        }
        if !founder {
            return Ok(());
        }
        // The founder: the source must be exactly the newest export, and the
        // export must be the state its epoch applied at that index.
        let newest = self.store.latest().ok().flatten().map(|(m, _)| m);
        if source != newest {
            return Err(format!(
                "epoch {epoch} formed from {source:?}, but the newest export is {newest:?}"
            ));
        }
        if let Some(src) = source {
            self.epochs_from_export += 1;
            if let Some(&applied) = self
                .state_digests
                .get(&src.epoch)
                .and_then(|d| d.get((src.index - 1) as usize))
                && applied != digest
            {
                return Err(format!(
                    "epoch {epoch} seeded from export {src:?} whose state differs from what epoch {} applied at index {}",
                    src.epoch, src.index
                ));
            }
        }
        // What re-formation lost: acknowledged writes after the source.
        let cut = source.map(|m| (m.epoch, m.index));
        let lost = self
            .acknowledged
            .iter()
            .filter(|&&(e, i)| e < epoch && cut.is_none_or(|c| (e, i) > c))
            .count() as u64;
        self.acknowledged.retain(|&(e, _)| e >= epoch);
        self.lost_acknowledged += lost;
        self.seeds.insert(epoch, seed);
        Ok(())
    }

    /// The leader's interval export, when its interval passed (the
    /// runtime's export timer, in virtual time).
    fn export_if_due(&mut self, id: NodeId, epoch: EpochId) -> Result<(), String> {
        let due = self
            .last_export
            .get(&epoch)
            .is_none_or(|&t| self.now >= t + self.export_every);
        if due && self.node(id).member.leadership().is_some() {
            self.last_export.insert(epoch, self.now);
            let now = self.now;
            self.node(id).member.handle(Input::ExportTick, now);
            self.carry_out(id)?;
        }
        Ok(())
    }

    /// Writes an export to the store, after checking that it is the state
    /// its epoch applied at its index.
    fn write_export(
        &mut self,
        id: NodeId,
        meta: ExportMeta,
        image: &StateImage,
    ) -> Result<(), String> {
        let data = image.encode();
        let mut sm = StateMachine::new(1000, &Limits::default());
        sm.restore(&data)
            .map_err(|e| format!("node {id}: export: {e}"))?;
        let digest = state_digest(sm.kv.state());
        if let Some(&known) = self
            .state_digests
            .get(&meta.epoch)
            .and_then(|d| d.get((meta.index.max(1) - 1) as usize))
            && known != digest
        {
            return Err(format!(
                "node {id} exports a state at index {} of epoch {} that differs from the state applied there",
                meta.index, meta.epoch
            ));
        }
        let _ = self.store.put(meta, &data);
        Ok(())
    }

    /// A forwarded write's call fails at its sender `to` after a timeout.
    fn forward_failed(&mut self, to: NodeId, token: Token, attempt: u64) {
        let timeout = self.rng.range(200, 400);
        self.schedule(
            timeout,
            Ev::ForwardAnswer {
                to,
                token,
                attempt,
                outcome: ForwardOutcome::NotTaken(KvsError::Unavailable(
                    "the leader did not answer".into(),
                )),
            },
        );
    }

    /// A client's request reaches node `id`: a write goes in with its
    /// request id (the client and the history slot), proposed there,
    /// forwarded to the leader or held for one; a read goes through ReadIndex.
    fn request(
        &mut self,
        id: NodeId,
        client: usize,
        req: u64,
        slot: usize,
        pid: u64,
        txn: Txn,
    ) -> Result<(), String> {
        let node = self.node(id);
        node.next_token += 1;
        let token = node.next_token;
        node.tokens.insert(token, (client, req, slot));
        let input = if txn.is_write() {
            Input::Write {
                token,
                request: TxnRequest {
                    request_id: Some(RequestId {
                        client: pid,
                        seq: slot as u64,
                    }),
                    txn,
                    forwarded: false,
                },
            }
        } else {
            Input::Read {
                token,
                txn,
                limit: usize::MAX,
            }
        };
        self.on_node(id, input)
    }

    // ---- clients ----

    fn wake(&mut self, c: usize) {
        let now = self.now;
        match &self.clients[c].op {
            Some(op) if now >= op.deadline => {
                let slot = op.slot;
                let is_write = op.txn.is_write();
                if is_write {
                    // Indeterminate: stays pending in the history; the client is a new process.
                    self.clients[c].pid = self.next_pid;
                    self.next_pid += 1;
                } else {
                    self.history[slot] = None;
                }
                self.clients[c].op = None;
                // The node may be gone: try the next one (clients rotate through their endpoints).
                self.clients[c].leader_guess = None;
                self.clients[c].last_target =
                    self.clients[c].last_target % self.ids.len() as NodeId + 1;
                let d = self.rng.range(1, 20);
                self.schedule(d, Ev::ClientWake(c));
            }
            Some(_) => {}
            None => {
                if !self.client_done(c) {
                    self.start_op(c);
                }
            }
        }
    }

    fn client_done(&self, c: usize) -> bool {
        self.healed_at.is_some() && self.clients[c].ok_after_heal >= self.cfg.ops_after_heal
    }

    fn start_op(&mut self, c: usize) {
        let txn = self.random_txn(c);
        self.next_req += 1;
        let req = self.next_req;
        let slot = self.history.len();
        self.history_epochs.push(None);
        self.history.push(Some(Operation {
            client: self.clients[c].pid,
            call: self.now,
            ret: None,
            input: txn.clone(),
            output: None,
        }));
        let deadline = self.now + self.cfg.op_timeout_ms;
        self.clients[c].op = Some(InFlight {
            req,
            slot,
            txn,
            deadline,
        });
        self.schedule(self.cfg.op_timeout_ms, Ev::ClientWake(c));
        self.send(c);
    }

    /// Sends the client's operation to its guess of the leader, or anywhere.
    fn send(&mut self, c: usize) {
        self.next_req += 1;
        let req = self.next_req;
        let Some(op) = self.clients[c].op.as_mut() else {
            return;
        };
        op.req = req;
        let d = self.rng.range(1, 4);
        self.schedule_request(c, d);
    }

    fn response(&mut self, c: usize, req: u64, answer: Answer) {
        let Some(op) = &self.clients[c].op else {
            return;
        };
        if op.req != req {
            return;
        }
        match answer {
            Answer::Ok(epoch, r) => {
                let slot = op.slot;
                if let Some(e) = self.history_epochs.get_mut(slot) {
                    *e = Some(epoch);
                }
                for result in &r.results {
                    if let crate::kv::OpResult::Get(Some(kv)) = result {
                        self.clients[c]
                            .last_seen
                            .insert(kv.key.clone(), kv.value.clone());
                    }
                }
                if let Some(Some(h)) = self.history.get_mut(slot) {
                    h.ret = Some(self.now);
                    h.output = Some(r);
                }
                self.clients[c].op = None;
                // The node that answered is worth asking again.
                self.clients[c].leader_guess = Some(self.clients[c].last_target);
                if self.healed_at.is_some() {
                    self.clients[c].ok_after_heal += 1;
                }
                let think = self.rng.range(10, 120);
                self.schedule(think, Ev::ClientWake(c));
            }
            Answer::Retry(leader) => {
                self.clients[c].leader_guess = leader;
                let backoff = self.rng.range(5, 30);
                self.next_req += 1;
                // Invalidate this attempt; `send` after the back-off uses a new id.
                if let Some(op) = self.clients[c].op.as_mut() {
                    op.req = self.next_req;
                }
                self.resend_later(c, backoff);
            }
        }
    }

    /// Sends the operation again after `delay`, unless that passes its deadline.
    fn resend_later(&mut self, c: usize, delay: u64) {
        let Some(op) = self.clients[c].op.as_ref() else {
            return;
        };
        if self.now + delay < op.deadline {
            self.schedule_request(c, delay);
        }
    }

    /// Schedules the client's current attempt to reach its target after `delay`.
    fn schedule_request(&mut self, c: usize, delay: u64) {
        let Some(op) = self.clients[c].op.as_ref() else {
            return;
        };
        let (req, slot, txn) = (op.req, op.slot, op.txn.clone());
        let pid = self.clients[c].pid;
        let target = self.target(c);
        self.schedule(
            delay,
            Ev::ClientRequest {
                node: target,
                client: c,
                req,
                slot,
                pid,
                txn,
            },
        );
        let patience = self.rng.range(150, 400);
        self.schedule(delay + patience, Ev::AttemptTimeout { client: c, req });
    }

    /// The node a client sends to: its guess of the leader, else the next endpoint in turn.
    fn target(&mut self, c: usize) -> NodeId {
        let n = self.ids.len() as NodeId;
        let client = &mut self.clients[c];
        let target = match client.leader_guess {
            Some(l) => l,
            None => client.last_target % n + 1,
        };
        client.last_target = target;
        target
    }

    fn random_txn(&mut self, c: usize) -> Txn {
        let key = KEYS[self.rng.below(KEYS.len() as u64) as usize].to_string();
        self.clients[c].seq += 1;
        let value = format!("c{c}-{}", self.clients[c].seq);
        match self.rng.below(100) {
            0..30 => Txn::single(Op::Put { key, value }),
            30..60 => Txn::single(Op::Get { key }),
            60..68 => Txn::single(Op::Delete { key }),
            68..85 => {
                let expected = self.clients[c]
                    .last_seen
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
                Txn {
                    compares: vec![Compare {
                        key: key.clone(),
                        op: CmpOp::Equal,
                        target: CompareTarget::Value(expected),
                    }],
                    success: vec![Op::Put {
                        key: key.clone(),
                        value,
                    }],
                    failure: vec![Op::Get { key }],
                }
            }
            85..93 => Txn {
                success: vec![
                    Op::Put {
                        key: "x".into(),
                        value: value.clone(),
                    },
                    Op::Put {
                        key: "y".into(),
                        value,
                    },
                ],
                ..Txn::default()
            },
            _ => Txn {
                success: vec![Op::Get { key: "x".into() }, Op::Get { key: "y".into() }],
                ..Txn::default()
            },
        }
    }

    // ---- faults ----

    fn fault(&mut self) {
        if self.healed_at.is_some() {
            return;
        }
        if self.rolling {
            return self.rolling_isolation();
        }
        let ids = self.ids.clone();
        let n = ids.len() as u64;
        match self.rng.below(100) {
            0..15 => {
                // Jepsen's classic: cut the leader off from everyone.
                if let Some(leader) = self.usable_leader() {
                    self.net.partition(&[leader], &ids);
                }
            }
            15..25 => {
                let size = self.rng.range(1, n);
                let mut side = ids.clone();
                for i in (1..side.len()).rev() {
                    side.swap(i, self.rng.below(i as u64 + 1) as usize);
                }
                side.truncate(size as usize);
                self.net.partition(&side, &ids);
            }
            25..35 => {
                let (a, b) = (self.pick(), self.pick());
                if a != b {
                    self.net.cut_one_way(a, b);
                }
            }
            35..45 => {
                // Asymmetric: one node can send but hears nothing.
                let deaf = self.pick();
                for &other in ids.iter().filter(|&&o| o != deaf) {
                    self.net.cut_one_way(other, deaf);
                }
            }
            45..60 => self.net.heal(),
            60..62 => {
                // Pause the leader: it wakes up believing it still leads.
                if let Some(leader) = self.usable_leader() {
                    self.node(leader).state = NodeState::Paused;
                    let d = self.rng.range(100, 800);
                    self.schedule(d, Ev::Resume(leader));
                }
            }
            62..77 => {
                let id = self.pick();
                if self.node(id).state == NodeState::Up {
                    self.node(id).state = NodeState::Paused;
                    let d = self.rng.range(50, 1000);
                    self.schedule(d, Ev::Resume(id));
                }
            }
            77..86 => self.evictions(),
            _ => {
                let drop = [0.0, 0.05, 0.2][self.rng.below(3) as usize];
                let duplicate = [0.0, 0.05][self.rng.below(2) as usize];
                let delay_ms = [(1, 3), (1, 20), (5, 50)][self.rng.below(3) as usize];
                self.net.faults = LinkFaults {
                    drop,
                    duplicate,
                    delay_ms,
                };
            }
        }
        let next = self.rng.range(50, 400);
        self.schedule(next, Ev::Fault);
    }

    /// The adversary's favourite moments: a node just became leader (its
    /// first entries have not left yet), or a leader just advanced its
    /// commit index (followers do not know yet). Sometimes cut it off right
    /// there (FoundationDB-style "buggify" of the fault schedule).
    fn strike(&mut self, id: NodeId, commit_before: Index, role_before: Role) {
        let Some(raft) = self.nodes[(id - 1) as usize].member.lifecycle().raft() else {
            return;
        };
        let leader = raft.role() == Role::Leader;
        let committed = leader && raft.log().committed > commit_before;
        let elected = leader && role_before != Role::Leader;
        let p = if elected {
            0.35
        } else if committed {
            0.05
        } else {
            0.0
        };
        if p > 0.0 && self.healed_at.is_none() && self.rng.chance(p) {
            let ids = self.ids.clone();
            self.net.partition(&[id], &ids);
        }
    }

    /// The other nemesis: every 100–300 ms a different random node is cut
    /// off (the previous one healed). Leaders keep changing while isolated
    /// leaders accept writes they cannot commit, leaving logs that conflict
    /// across terms, as in Figure 8 of the Raft paper.
    fn rolling_isolation(&mut self) {
        let ids = self.ids.clone();
        self.net.heal();
        let victim = self.pick();
        self.net.partition(&[victim], &ids);
        let next = self.rng.range(100, 300);
        self.schedule(next, Ev::Fault);
    }

    /// Spot evictions: processes die with their memory and come back
    /// empty. A minority, a majority, the whole fleet (sometimes after an
    /// eviction notice that makes the leader export), or churn: one node
    /// after another replaced.
    fn evictions(&mut self) {
        let n = self.ids.len() as u64;
        let mut order = self.ids.clone();
        for i in (1..order.len()).rev() {
            order.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        match self.rng.below(100) {
            0..35 => {
                self.evictions.minority += 1;
                let k = self.rng.range(1, n.div_ceil(2));
                for &id in &order[..k as usize] {
                    let back = self.rng.range(50, 800);
                    self.evict(id, back);
                }
            }
            35..55 => {
                self.evictions.majority += 1;
                let k = self.rng.range(n / 2 + 1, n);
                for &id in &order[..k as usize] {
                    let back = self.rng.range(50, 800);
                    self.evict(id, back);
                }
            }
            55..75 => {
                self.evictions.all += 1;
                if self.rng.chance(0.5)
                    && let Some(leader) = self.usable_leader()
                {
                    // The eviction notice: the leader exports at once.
                    let now = self.now;
                    self.node(leader)
                        .member
                        .handle(Input::ExportNow { token: 0 }, now);
                    let _ = self.carry_out(leader);
                }
                for &id in &order {
                    let back = self.rng.range(50, 1000);
                    self.evict(id, back);
                }
            }
            _ => {
                self.evictions.churn += 1;
                // Replace every node in turn, each back after a short while.
                for (i, &id) in order.iter().enumerate() {
                    let at = i as u64 * self.rng.range(150, 400);
                    let back = self.rng.range(5, 60);
                    self.schedule(at, Ev::Evict(id, back));
                }
            }
        }
    }

    /// Node `id` dies with its memory; an empty process replaces it after `back` ms.
    fn evict(&mut self, id: NodeId, back: u64) {
        if self.node(id).state == NodeState::Crashed {
            return;
        }
        let node = self.node(id);
        node.state = NodeState::Crashed;
        node.held.clear();
        node.tokens.clear();
        node.forwards.clear();
        self.schedule(back, Ev::Restart(id));
    }

    fn restart(&mut self, id: NodeId) {
        if self.node(id).state != NodeState::Crashed {
            return;
        }
        let seed = self.rng.next_u64();
        let member = new_member(
            &self.settings,
            id,
            self.compact_every,
            seed,
            self.cfg.member_bugs,
        );
        let node = self.node(id);
        node.member = member;
        node.state = NodeState::Up;
        node.tick_gen += 1;
        let (t, generation) = (node.tick_ms, node.tick_gen);
        self.schedule(t, Ev::Tick(id, generation));
    }

    fn pick(&mut self) -> NodeId {
        self.ids[self.rng.below(self.ids.len() as u64) as usize]
    }

    fn resume(&mut self, id: NodeId) {
        if self.node(id).state != NodeState::Paused {
            return;
        }
        self.node(id).state = NodeState::Up;
        for ev in std::mem::take(&mut self.node(id).held) {
            self.schedule(1, ev);
        }
        let node = self.node(id);
        node.tick_gen += 1;
        let (t, generation) = (node.tick_ms, node.tick_gen);
        self.schedule(t, Ev::Tick(id, generation));
    }

    fn heal(&mut self) {
        self.healed_at = Some(self.now);
        self.net.heal();
        self.net.faults = LinkFaults::calm();
        for id in self.ids.clone() {
            self.resume(id);
            self.restart(id);
        }
    }

    // ---- progress and verdicts ----

    /// A usable leader: up, leading the highest term among up nodes, with an
    /// entry of its term committed.
    fn usable_leader(&self) -> Option<NodeId> {
        let up: Vec<(NodeId, EpochId, &RaftNode)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state == NodeState::Up)
            .filter_map(|(i, n)| {
                let lc = n.member.lifecycle();
                Some((i as NodeId + 1, lc.epoch()?, lc.raft()?))
            })
            .collect();
        // The leader of the newest epoch that has one able to serve.
        up.iter()
            .filter(|(_, _, r)| {
                r.role() == Role::Leader && r.log().term(r.log().committed) == Some(r.term())
            })
            .filter(|(_, e, r)| {
                up.iter()
                    .all(|(_, e2, r2)| e2 != e || r2.term() <= r.term())
            })
            .max_by_key(|(_, e, _)| *e)
            .map(|(slot, _, _)| *slot)
    }

    fn track_leader(&mut self) {
        let has = self.usable_leader().is_some();
        match (has, self.leaderless_since) {
            (true, Some(since)) => {
                self.leaderless_ms.push(self.now - since);
                self.leaderless_since = None;
            }
            (false, None) => self.leaderless_since = Some(self.now),
            _ => {}
        }
        if has && self.healed_at.is_some() && self.recovered_at.is_none() {
            self.recovered_at = Some(self.now);
        }
    }

    fn finished(&self) -> Result<bool, String> {
        let Some(healed) = self.healed_at else {
            return Ok(false);
        };
        let all_done = (0..self.clients.len()).all(|c| self.client_done(c));
        if all_done && self.recovered_at.is_some() && self.converged() {
            return Ok(true);
        }
        if self.now > healed + self.cfg.liveness_ms {
            let done: Vec<usize> = self.clients.iter().map(|c| c.ok_after_heal).collect();
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    let lc = n.member.lifecycle();
                    let r = lc.report();
                    let raft = lc.raft().map(|raft| {
                        format!(
                            "{:?} term {} commit {} log from {} snapshot wanted {} held {:?} progress {:?} voters {:?} learners {:?}",
                            raft.role(),
                            raft.term(),
                            raft.log().committed,
                            raft.snapshot_index(),
                            raft.snapshot_wanted(),
                            raft.snapshot().map(|(m, b)| (m.index, b.len())),
                            raft.progress()
                                .iter()
                                .map(|(id, p)| format!(
                                    "{id:x}:{:?} match {} next {} snap {} sent {}",
                                    p.state, p.match_index, p.next_index, p.snapshot_index, p.probe_sent
                                ))
                                .collect::<Vec<_>>(),
                            raft.config()
                                .voters
                                .iter()
                                .map(|(id, i)| format!("{}={id:x}", i.name))
                                .collect::<Vec<_>>(),
                            raft.config()
                                .learners
                                .iter()
                                .map(|(id, i)| format!("{}={id:x}", i.name))
                                .collect::<Vec<_>>()
                        )
                    });
                    format!(
                        "{} {:?} id {:x} epoch {:?} voter {} leader {:?} promised {:?}: {raft:?}",
                        lc.name(),
                        n.state,
                        r.id,
                        r.epoch.map(|e| e.to_string()),
                        r.voter,
                        r.leader,
                        r.promised.map(|e| e.to_string())
                    )
                })
                .collect();
            return Err(format!(
                "liveness: {} ms after healing, leader={:?}, answers per client after healing={done:?} (want {} each); nodes:\n    {}",
                self.cfg.liveness_ms,
                self.usable_leader(),
                self.cfg.ops_after_heal,
                nodes.join("\n    ")
            ));
        }
        Ok(false)
    }

    /// Whether the fleet is whole again: every node up, in one epoch, a
    /// voter under its current incarnation with no other incarnation of any
    /// name left in the configuration, and level with the leader's commit.
    /// A restarted member that stays a learner (or behind) for ever would
    /// leave the cluster one failure from losing its quorum.
    fn converged(&self) -> bool {
        let Some(leader) = self.usable_leader() else {
            return false;
        };
        let Some(lr) = self.nodes[leader as usize - 1].member.lifecycle().raft() else {
            return false;
        };
        let config = lr.config();
        if !config.learners.is_empty() || config.voters.len() != self.nodes.len() {
            return false;
        }
        self.nodes.iter().all(|n| {
            let lc = n.member.lifecycle();
            n.state == NodeState::Up
                && lc.raft().is_some_and(|r| {
                    config.is_voter(lc.report().id) && r.log().committed >= lr.log().committed
                })
        })
    }

    /// Settles writes whose client gave up, from what the nodes applied: a
    /// write no node applied never took effect (it is dropped); one that was
    /// applied took effect before the end of the run, with the answer it got.
    /// The checker then judges every operation exactly, which keeps the
    /// search small; the checker's own tests cover open-ended operations.
    fn resolve_pending(&mut self) {
        let end = self.now;
        for (slot, op) in self.history.iter_mut().enumerate() {
            let Some(o) = op else { continue };
            if o.ret.is_some() {
                continue;
            }
            match self.applied.get(&slot).and_then(|e| e.iter().next()) {
                Some((epoch, (_, r))) => {
                    o.ret = Some(end);
                    o.output = Some(r.clone());
                    self.history_epochs[slot] = Some(*epoch);
                }
                None => *op = None,
            }
        }
    }

    /// The operations answered so far, each with its epoch, and each
    /// epoch's seed: a history any checker can judge on its own. A write
    /// that also applied in another epoch than the one that answered (lost
    /// by a re-formation, then retried) is in that epoch's history too, as
    /// an operation whose client never heard (it returns at the end).
    fn epoch_history(&self) -> EpochHistory {
        let mut operations = Vec::new();
        for (slot, (op, answered)) in self.history.iter().zip(&self.history_epochs).enumerate() {
            let Some(op) = op else { continue };
            if let Some(epoch) = answered {
                operations.push((*epoch, op.clone()));
            }
            for (epoch, (_, r)) in self.applied.get(&slot).into_iter().flatten() {
                if Some(*epoch) != *answered {
                    let unheard = Operation {
                        ret: Some(self.now),
                        output: Some(r.clone()),
                        ..op.clone()
                    };
                    operations.push((*epoch, unheard));
                }
            }
        }
        EpochHistory {
            epochs: self.seeds.iter().map(|(e, s)| (*e, s.clone())).collect(),
            operations,
        }
    }

    /// Linearizability within each epoch, from that epoch's seed state
    /// (re-formation may lose writes acknowledged after the newest export;
    /// `start_epoch` checks that bound).
    fn check_history(&self) -> Result<(), String> {
        self.epoch_history().check(self.cfg.checker_steps)
    }
}

fn state_digest(state: &crate::kv::KvState) -> u64 {
    let mut h = DefaultHasher::new();
    state.hash(&mut h);
    h.finish()
}

fn body_kind(body: &crate::raft::Body) -> u8 {
    use crate::raft::Body;
    match body {
        Body::PreVote { .. } => 0,
        Body::PreVoteResponse { .. } => 1,
        Body::RequestVote { .. } => 2,
        Body::RequestVoteResponse { .. } => 3,
        Body::AppendEntries { .. } => 4,
        Body::AppendEntriesResponse { .. } => 5,
        Body::Heartbeat { .. } => 6,
        Body::HeartbeatResponse { .. } => 7,
        Body::ReadIndex { .. } => 8,
        Body::ReadIndexResponse { .. } => 9,
        Body::TimeoutNow => 10,
        Body::InstallSnapshot { .. } => 11,
        Body::InstallSnapshotResponse { .. } => 12,
    }
}

/// Writes a run's history as JSON, with each operation's epoch and each
/// epoch's seed (for this or another checker); returns where, or why not.
fn save_history(cfg: &SimConfig, history: &EpochHistory) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim");
    let path = dir.join(format!(
        "{}-seed-{}-nodes-{}.json",
        cfg.label, cfg.seed, cfg.nodes
    ));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(history).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("not saved ({e})"),
    }
}

/// The digest of a history, to compare replays.
pub(crate) fn history_digest(history: &KvHistory) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(history)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

impl Report {
    pub(crate) fn digest(&self) -> (u64, u64) {
        (self.trace_digest, history_digest(&self.history))
    }
}

/// A new, empty member for slot `id`, recording what it does for the checks.
fn new_member(
    settings: &Settings,
    id: NodeId,
    compact_every: u64,
    seed: u64,
    bugs: MemberBugs,
) -> Member {
    let mut member = Member::new(MemberConfig {
        name: name_of(id),
        fleet: settings.fleet.clone(),
        raft: settings.raft.clone(),
        history_limit: 1000,
        limits: Limits::default(),
        snapshot_entries: compact_every,
        seed,
    });
    member.bugs = bugs;
    member.journal();
    member
}

/// The name of slot `id` (1-based).
fn name_of(id: NodeId) -> String {
    format!("n{id}")
}

/// The slot of a name.
fn slot_of_name(name: &str) -> Option<NodeId> {
    name.strip_prefix('n')?.parse().ok()
}

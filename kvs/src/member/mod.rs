//! One store member, sans I/O: the lifecycle and Raft cores, the state
//! machine, the proposals and reads waiting on the log, the clients'
//! requests held for a leader or forwarded to one (`clients`), and the
//! snapshot and export policies, as one value that takes [`Input`]s and
//! returns [`Effect`]s. The tokio runtime (`crate::node`) and the simulator
//! (`crate::sim`) both drive it and nothing else, so the simulator tests
//! the code that ships.
//!
//! ```text
//!  Input ──▶ handle ─┐   (as many as the driver likes)
//!                    ▼
//!                   act ──▶ Effects: Send (Raft and lifecycle messages, by name)
//!                                    Answer (writes, reads)
//!                                    Forward (a write to the leader)
//!                                    Export (state to write to the export store)
//!                                    LoadLatest / LoadExport (export store reads)
//!                                    Exported / Transferred (on-demand requests)
//! ```
//!
//! A driver hands a turn's inputs to [`Member::handle`], then calls
//! [`Member::act`] once (one Raft `Ready` for many inputs) and carries out
//! [`Member::take_effects`]. The member does no I/O: even the export store
//! is read through effects ([`Effect::LoadLatest`], [`Effect::LoadExport`])
//! whose answers come back as inputs, and a snapshot is encoded by the
//! driver off its loop ([`Effect::EncodeSnapshot`]).
//!
//! Invariants: a proposal is answered only when the entry at its index is
//! applied — with its result if the entry is the proposal (same term), else
//! as dropped; a proposal a snapshot covers is answered as dropped (the
//! client retries with the same request id, and the answer table in the
//! snapshot applies it at most once); a read is answered only once the
//! state machine has applied its read index; a snapshot's image is taken
//! only when the leader's Raft core wants one, at the end of a turn, when
//! the state is exactly at the applied index (one at a time, offered to the
//! core only in the epoch it was taken in); the log is cut as far as the
//! core allows, in steps, so a cut costs little per entry.

mod clients;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use crate::api::{
    KvsError, LogCommand, MemberStatus, MemoryUse, NodeStatus, Replication, TxnRequest,
};
use crate::kv::{Event, Limits, Txn, TxnResponse};
use crate::lifecycle::{Action, EpochId, Lifecycle, LifecycleMessage, Settings};
use crate::raft::{
    Config, Index, Message, NodeId, Payload, ProgressState, RaftError, Role, SnapshotMeta, Term,
};
use crate::snapshot_store::ExportMeta;
pub use state::MAX_KEPT_ANSWER_BYTES;
pub use state::StateImage;
pub(crate) use state::StateMachine;

/// The alarm [`NodeStatus::alarms`] raises while the store holds its quota.
pub const NOSPACE: &str = "NOSPACE";

/// How a member is set up.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// This member's name: its slot in the fleet.
    pub name: String,
    /// Every configured name and its address, this one included.
    pub fleet: BTreeMap<String, String>,
    /// The Raft settings (the id is the incarnation's, set here).
    pub raft: Config,
    /// Watch history, in events.
    pub history_limit: usize,
    /// Request limits.
    pub limits: Limits,
    /// Most entries the log keeps for a follower far behind (or as many as
    /// there are keys, if more): past that it is sent a snapshot.
    pub snapshot_entries: u64,
    /// Seeds the incarnation id and the lifecycle's choices.
    pub seed: u64,
}

/// The driver's handle on a request, returned with its answer.
pub type Token = u64;

/// What a member is given.
#[derive(Debug)]
pub enum Input {
    /// A tick of the member's clock.
    Tick,
    /// A peer's Raft and lifecycle messages.
    Peer {
        /// The peer's name.
        from: String,
        /// Raft messages, in order.
        messages: Vec<Message>,
        /// Lifecycle messages, in order.
        lifecycle: Vec<LifecycleMessage>,
    },
    /// A client's write (answered by [`Effect::Answer`]): proposed here
    /// when this member leads, else forwarded to the leader it knows
    /// ([`Effect::Forward`]), else held until a leader appears (for four
    /// election timeouts). A write forwarded by another member is proposed
    /// here or refused, never forwarded again.
    Write {
        /// The caller's handle.
        token: Token,
        /// The write, with its request id.
        request: TxnRequest,
    },
    /// The answer to [`Effect::Forward`].
    Forwarded {
        /// The write's handle.
        token: Token,
        /// Which forwarding of it this answers.
        attempt: u64,
        /// What came back.
        outcome: ForwardOutcome,
    },
    /// A linearizable read-only transaction whose answer may hold at most
    /// `limit` bytes of keys and values (answered by [`Effect::Answer`]);
    /// held like a write while there is no leader.
    Read {
        /// The caller's handle.
        token: Token,
        /// The transaction.
        txn: Txn,
        /// The most bytes of keys and values the answer may hold.
        limit: usize,
    },
    /// The leader's interval export: [`Effect::Export`] if this member
    /// leads and has applied something not exported yet.
    ExportTick,
    /// An eviction notice: export the applied state now, leader or not
    /// (answered by [`Effect::Exported`]).
    ExportNow {
        /// The caller's handle.
        token: Token,
    },
    /// An eviction notice on the leader: hand leadership to the most
    /// caught-up other voter (answered by [`Effect::Transferred`]).
    TransferAway {
        /// The caller's handle.
        token: Token,
    },
    /// The answer to [`Effect::LoadLatest`]: the export store's newest
    /// export, or why it could not be read.
    LatestLoaded {
        /// The read's number (from [`Effect::LoadLatest`]).
        seq: u64,
        /// The newest export, or why it could not be read.
        latest: Result<Option<(ExportMeta, Vec<u8>)>, String>,
    },
    /// The answer to [`Effect::EncodeSnapshot`]: the state at `meta` of
    /// `epoch`, encoded.
    SnapshotEncoded {
        /// The epoch it was taken in.
        epoch: EpochId,
        /// What it covers.
        meta: SnapshotMeta,
        /// The encoded state.
        bytes: Vec<u8>,
    },
    /// The answer to [`Effect::LoadExport`].
    ExportLoaded {
        /// The export asked for.
        meta: ExportMeta,
        /// Its bytes (`None`: the store no longer has it), or why it could
        /// not be read.
        bytes: Result<Option<Vec<u8>>, String>,
    },
}

/// What became of a write forwarded to the leader.
#[derive(Debug, Clone)]
pub enum ForwardOutcome {
    /// The leader's answer, to give the client.
    Answer(Result<TxnResponse, KvsError>),
    /// The leader did not take it (it no longer leads, or cannot be
    /// reached and the write certainly did not run, or carries a request
    /// id): it goes to the next leader.
    NotTaken(KvsError),
}

/// A message to a peer.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A Raft message.
    Raft(Message),
    /// A lifecycle message.
    Lifecycle(LifecycleMessage),
}

/// What a member asks its driver to do.
#[derive(Debug)]
pub enum Effect {
    /// Send `message` to the member named `to`.
    Send {
        /// The peer's name.
        to: String,
        /// The message.
        message: Outgoing,
    },
    /// Answer a proposal or a read.
    Answer {
        /// The request's handle.
        token: Token,
        /// The answer.
        result: Result<TxnResponse, KvsError>,
    },
    /// Write this export to the export store (off the driver's loop: it
    /// may be large).
    Export {
        /// What it is.
        meta: ExportMeta,
        /// The state.
        image: StateImage,
    },
    /// The answer to [`Input::ExportNow`]: the export to write (none when
    /// this member is in no cluster).
    Exported {
        /// The request's handle.
        token: Token,
        /// The export.
        export: Option<(ExportMeta, StateImage)>,
    },
    /// The answer to [`Input::TransferAway`]: the voter asked to take over.
    Transferred {
        /// The request's handle.
        token: Token,
        /// The heir, if this member led and had one.
        heir: Option<NodeId>,
    },
    /// Send this write to the leader named `to` and hand what comes back
    /// to [`Input::Forwarded`].
    Forward {
        /// The write's handle.
        token: Token,
        /// Which forwarding this is (a later one supersedes it).
        attempt: u64,
        /// The leader's name.
        to: String,
        /// The write, marked forwarded.
        request: TxnRequest,
    },
    /// Read the export store's newest export and hand it back as
    /// [`Input::LatestLoaded`] with this read's number (one at a time).
    LoadLatest(u64),
    /// Read this export and hand it back as [`Input::ExportLoaded`].
    LoadExport(ExportMeta),
    /// Encode `image` (the state at `meta` of `epoch`) off the driver's
    /// loop and hand it back as [`Input::SnapshotEncoded`]: encoding a large
    /// state takes long enough to delay heartbeats past an election timeout.
    EncodeSnapshot {
        /// The epoch it was taken in.
        epoch: EpochId,
        /// What it covers.
        meta: SnapshotMeta,
        /// The state.
        image: StateImage,
    },
}

/// This member leads: the epoch and term it leads in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The cluster epoch's number.
    pub epoch: u64,
    /// The Raft term.
    pub term: Term,
}

/// Bugs the simulator plants to show that its checks catch them.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MemberBugs {
    /// Answer a write when it is proposed, with what it would do to the
    /// state now, instead of when its entry applies.
    pub(crate) answer_before_apply: bool,
    /// Restore a snapshot without its answer table.
    pub(crate) forget_answers_on_restore: bool,
    /// Serve a read as soon as its read index is known, applied or not.
    pub(crate) read_before_applied: bool,
}

/// What a member did, for the simulator's checks (tests only).
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) enum Observed {
    /// Entered cluster `epoch` from `state` (a founder or a member of a new
    /// epoch; `None` for a joiner, which waits for a snapshot).
    Started {
        epoch: EpochId,
        /// The seed state, or `None` for a joiner.
        seed: Option<crate::kv::KvState>,
        source: Option<ExportMeta>,
    },
    /// Left its cluster; the state machine is empty again.
    Discarded,
    /// Restored a snapshot (its state's digest after).
    Installed {
        meta: crate::raft::SnapshotMeta,
        digest: u64,
    },
    /// Applied an entry (the state's digest after, and the command's
    /// answer; `replayed`: answered from the table, nothing changed).
    Applied {
        entry: crate::raft::Entry,
        command: Option<LogCommand>,
        result: Option<Result<TxnResponse, KvsError>>,
        replayed: bool,
        digest: u64,
    },
}

/// A read waiting for its index, and the most bytes its answer may hold.
#[derive(Debug)]
struct PendingRead {
    token: Token,
    txn: Txn,
    limit: usize,
}

/// See the module doc.
pub struct Member {
    lc: Lifecycle,
    sm: StateMachine,
    history_limit: usize,
    limits: Limits,
    snapshot_entries: u64,
    /// The Raft core's `retain_entries` (sets the step of log cuts).
    retain_entries: u64,
    /// The newest export written here or this epoch was formed from.
    last_export: Option<ExportMeta>,
    /// The names of incarnations heard from (a joiner must answer a leader
    /// its empty configuration does not list yet).
    heard: HashMap<NodeId, String>,
    proposals: BTreeMap<Index, (Term, Token)>,
    reads: HashMap<u64, PendingRead>,
    ready_reads: Vec<(Index, PendingRead)>,
    next_ctx: u64,
    /// A snapshot being encoded by the driver (no other is taken meanwhile).
    encoding: Option<(EpochId, Index)>,
    seen: (Term, Option<NodeId>),
    name: String,
    effects: Vec<Effect>,
    /// The driver's wall clock at the last input, in ms (stamps exports).
    now_ms: u64,
    /// Clients' requests held for a leader, or forwarded to one.
    waiting: clients::Waiting,
    #[cfg(test)]
    pub(crate) bugs: MemberBugs,
    #[cfg(test)]
    journal: Option<Vec<Observed>>,
}

impl Member {
    /// A new, empty incarnation that will look for its cluster.
    pub fn new(config: MemberConfig) -> Member {
        let election_tick = config.raft.election_tick;
        let retain_entries = config.raft.retain_entries;
        let settings = Settings::new(&config.name, config.fleet, config.raft);
        Member {
            lc: Lifecycle::new(settings, config.seed),
            sm: StateMachine::new(config.history_limit, &config.limits),
            history_limit: config.history_limit,
            limits: config.limits,
            snapshot_entries: config.snapshot_entries.max(1),
            retain_entries,
            last_export: None,
            heard: HashMap::new(),
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            next_ctx: 0,
            encoding: None,
            seen: (0, None),
            name: config.name,
            effects: Vec::new(),
            now_ms: 0,
            waiting: clients::Waiting::new(u64::from(election_tick) * 4),
            #[cfg(test)]
            bugs: MemberBugs::default(),
            #[cfg(test)]
            journal: None,
        }
    }

    /// This incarnation's id.
    pub fn id(&self) -> NodeId {
        self.lc.id()
    }

    /// The lifecycle core (its Raft node, epoch and reports).
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lc
    }

    /// The store's latest applied revision.
    pub fn revision(&self) -> i64 {
        self.sm.kv.state().revision()
    }

    /// The leader this member knows of and its address, once the
    /// configuration names it.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let raft = self.lc.raft()?;
        let leader = raft.leader()?;
        raft.config().info(leader).map(|i| (leader, i.addr.clone()))
    }

    /// Whether (and in which epoch and term) this member leads.
    pub fn leadership(&self) -> Option<Leadership> {
        self.lc
            .raft()
            .filter(|r| r.role() == Role::Leader)
            .map(|r| Leadership {
                epoch: self.lc.epoch().map_or(0, |e| e.number),
                term: r.term(),
            })
    }

    /// Events under `prefix` from revision `from`, and the revision to
    /// continue from.
    pub fn events(&self, prefix: &str, from: i64) -> Result<(Vec<Event>, i64), KvsError> {
        self.sm
            .kv
            .events_under(prefix, from)
            .map(|matching| (matching, self.sm.kv.state().revision() + 1))
            .map_err(KvsError::from)
    }

    /// What this member knows of itself and the cluster; `now_ms` is the
    /// wall clock, for the age of the last export.
    pub fn status(&self, now_ms: u64) -> NodeStatus {
        let raft = self.lc.raft();
        let members = raft.map_or_else(Vec::new, |r| {
            r.config()
                .members()
                .map(|(id, info)| MemberStatus {
                    id,
                    name: info.name.clone(),
                    voter: r.config().is_voter(id),
                    replication: (r.role() == Role::Leader)
                        .then(|| r.progress().get(&id))
                        .flatten()
                        .map(|p| Replication {
                            state: match p.state {
                                ProgressState::Probe => "probe",
                                ProgressState::Replicate => "replicate",
                                ProgressState::Snapshot => "snapshot",
                            }
                            .into(),
                            match_index: p.match_index,
                            next_index: p.next_index,
                            inflight: p.inflight.len(),
                            waiting: p.probe_sent,
                            recently_active: p.recent_active,
                        }),
                })
                .collect()
        });
        let state = self.sm.kv.state();
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
                .map(|m| now_ms.saturating_sub(m.taken_at_ms)),
            revision: state.revision(),
            keys: state.len(),
            bytes: state.bytes(),
            quota_bytes: self.limits.quota_bytes,
            alarms: if state.bytes() >= self.limits.quota_bytes {
                vec![NOSPACE.to_string()]
            } else {
                Vec::new()
            },
            memory: MemoryUse {
                log_entries: raft.map_or(0, |r| r.log().entries().len() as u64),
                log_bytes: raft.map_or(0, |r| {
                    r.log()
                        .entries()
                        .iter()
                        .map(|e| e.payload_bytes() as u64)
                        .sum()
                }),
                history_events: self.sm.kv.history_len() as u64,
                history_bytes: self.sm.kv.history_bytes() as u64,
                session_answers: self.sm.answers_kept() as u64,
                snapshot_bytes: raft.map_or(0, |r| r.snapshot_bytes_held() as u64),
                allocated_bytes: None,
                allocator_resident_bytes: None,
            },
        }
    }

    /// What the driver must do now.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Takes one input; `now_ms` (the driver's wall clock) stamps exports.
    pub fn handle(&mut self, input: Input, now_ms: u64) {
        self.now_ms = now_ms;
        match input {
            Input::Tick => {
                self.lc.tick();
                self.expire_waiting();
            }
            Input::LatestLoaded { seq, latest } => self.lc.latest_loaded(seq, latest),
            Input::ExportLoaded { meta, bytes } => self.lc.export_loaded(meta, bytes),
            Input::SnapshotEncoded { epoch, meta, bytes } => {
                if self.encoding == Some((epoch, meta.index)) {
                    self.encoding = None;
                }
                if self.lc.epoch() == Some(epoch)
                    && let Some(raft) = self.lc.raft_mut()
                {
                    raft.offer_snapshot(meta, bytes.into());
                }
            }
            Input::Peer {
                from,
                messages,
                lifecycle,
            } => {
                for m in lifecycle {
                    self.lc.receive(&from, m);
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
            Input::Write { token, request } => self.write(token, request),
            Input::Forwarded {
                token,
                attempt,
                outcome,
            } => self.forwarded(token, attempt, outcome),
            Input::Read { token, txn, limit } => self.client_read(token, txn, limit),
            Input::ExportTick => {
                if self.leadership().is_some()
                    && let Some((meta, image)) = self.export_data(false)
                {
                    self.effects.push(Effect::Export { meta, image });
                }
            }
            Input::ExportNow { token } => {
                let export = self.export_data(true);
                self.effects.push(Effect::Exported { token, export });
            }
            Input::TransferAway { token } => {
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
                self.effects.push(Effect::Transferred { token, heir });
            }
        }
    }

    fn answer(&mut self, token: Token, result: Result<TxnResponse, KvsError>) {
        self.effects.push(Effect::Answer { token, result });
    }

    /// Proposes `command` for `token` (answered when it applies); `false`
    /// when this member cannot propose now (not the leader).
    fn propose(&mut self, token: Token, command: &LogCommand) -> bool {
        let bytes = match serde_json::to_vec(command) {
            Ok(b) => b,
            Err(e) => {
                self.answer(token, Err(KvsError::InvalidArgument(e.to_string())));
                return true;
            }
        };
        let Some(raft) = self.lc.raft_mut() else {
            return false;
        };
        match raft.propose(bytes.into()) {
            Ok(index) => {
                let term = raft.term();
                #[cfg(test)]
                if self.bugs.answer_before_apply {
                    let mut scratch = StateMachine::new(self.history_limit, &self.limits);
                    let _ = scratch.restore(&self.sm.snapshot());
                    let result = scratch.apply(index, command);
                    self.answer(token, result);
                    return true;
                }
                self.proposals.insert(index, (term, token));
                true
            }
            Err(RaftError::NotLeader { .. } | RaftError::TransferInProgress) => false,
            Err(RaftError::TooManyPendingReads) => {
                self.answer(token, Err(KvsError::Unavailable("overloaded".into())));
                true
            }
        }
    }

    /// Starts a ReadIndex read for `token`; gives the read back when this
    /// member cannot start it now (no leader known).
    fn read_index(&mut self, token: Token, txn: Txn, limit: usize) -> Option<(Txn, usize)> {
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        match self.lc.raft_mut().map(|r| r.read_index(ctx)) {
            Some(Ok(())) => {
                self.reads.insert(ctx, PendingRead { token, txn, limit });
                None
            }
            None | Some(Err(RaftError::NotLeader { .. })) => Some((txn, limit)),
            Some(Err(e)) => {
                self.answer(token, Err(KvsError::Unavailable(e.to_string())));
                None
            }
        }
    }

    /// Carries out what the cores have ready: messages out, actions of the
    /// lifecycle, snapshots restored, entries applied, proposals and reads
    /// answered, the snapshot policy.
    pub fn act(&mut self) {
        let applied_before = self.lc.raft().map_or(0, |r| r.log().applied);
        for (to, m) in self.lc.take_outbox() {
            self.effects.push(Effect::Send {
                to,
                message: Outgoing::Lifecycle(m),
            });
        }
        for action in self.lc.take_actions() {
            self.on_action(action);
        }
        let Some(raft) = self.lc.raft_mut() else {
            self.log_changes();
            self.retry_waiting();
            return;
        };
        let ready = raft.take_ready();
        let config = raft.config().clone();
        for m in ready.messages {
            let to = config
                .info(m.to)
                .map(|i| i.name.clone())
                .or_else(|| self.heard.get(&m.to).cloned());
            if let Some(to) = to {
                self.effects.push(Effect::Send {
                    to,
                    message: Outgoing::Raft(m),
                });
            }
        }
        if let Some((meta, bytes)) = &ready.snapshot {
            self.restore(meta, bytes);
        }
        for entry in ready.committed {
            self.apply(entry);
        }
        let Some(raft) = self.lc.raft() else {
            return;
        };
        let applied = raft.log().applied;
        for rs in ready.read_states {
            if let Some(read) = self.reads.remove(&rs.ctx) {
                self.ready_reads.push((rs.index, read));
            }
        }
        for ctx in ready.dropped_reads {
            if let Some(read) = self.reads.remove(&ctx) {
                // The leader was lost meanwhile: wait for the next one.
                self.hold_read(read.token, read.txn, read.limit);
            }
        }
        #[cfg(test)]
        let applied = if self.bugs.read_before_applied {
            Index::MAX
        } else {
            applied
        };
        let (serve, wait): (Vec<_>, Vec<_>) =
            self.ready_reads.drain(..).partition(|r| r.0 <= applied);
        self.ready_reads = wait;
        for (_, read) in serve {
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
            self.answer(read.token, answer);
        }
        self.snapshot_and_compact(applied_before);
        self.log_changes();
        self.retry_waiting();
    }

    /// Here, at the end of a turn, the state is exactly at the applied
    /// index: the image for a snapshot the core wants is taken now. The
    /// log is then cut as far as the core allows, once that is a quarter
    /// of the retained tail past its start (a cut moves the tail), but
    /// never past what was applied before this turn: an entry stays in the
    /// log for at least the turn that commits it, so every entry is seen
    /// in some log after it commits (the simulator's checks compare them).
    fn snapshot_and_compact(&mut self, applied_before: Index) {
        let Some(epoch) = self.lc.epoch() else {
            return;
        };
        if self.encoding.is_none()
            && let Some(raft) = self.lc.raft()
            && raft.snapshot_wanted()
            && let Some(meta) = raft.snapshot_meta()
        {
            self.encoding = Some((epoch, meta.index));
            self.effects.push(Effect::EncodeSnapshot {
                epoch,
                meta,
                image: self.sm.image(),
            });
        }
        // A follower far behind holds back as many entries as the state
        // has keys (and at least `snapshot_entries`): a snapshot costs
        // encoding the whole state, so it is worth sending only once
        // replaying the log would cost as much.
        let max_entries = self.snapshot_entries.max(self.sm.kv.state().len() as u64);
        let step = (self.retain_entries / 4).max(1);
        if let Some(raft) = self.lc.raft_mut() {
            let to = raft.compactable(max_entries).min(applied_before);
            if to >= raft.snapshot_index() + step {
                raft.compact(to);
            }
        }
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::Start {
                epoch,
                state,
                source,
            } => {
                self.reset("joined another cluster");
                if let Some(bytes) = state.as_ref().filter(|b| !b.is_empty())
                    && let Err(e) = self.sm.restore(bytes)
                {
                    tracing::error!(%epoch, error = %e, "cannot restore the epoch's seed state");
                }
                if source.is_some() {
                    self.last_export = source;
                }
                tracing::info!(%epoch, incarnation = %format!("{:x}", self.lc.id()), ?source, "entered cluster");
                #[cfg(test)]
                self.observe(|sm| Observed::Started {
                    epoch,
                    seed: state.map(|_| sm.kv.state().clone()),
                    source,
                });
            }
            Action::Discard { epoch } => {
                self.reset("left the cluster");
                tracing::warn!(%epoch, incarnation = %format!("{:x}", self.lc.id()), "left a superseded cluster; starting over empty");
                #[cfg(test)]
                self.observe(|_| Observed::Discarded);
            }
            Action::Export => {
                // A founder asks for the newest state.
                if let Some((meta, image)) = self.export_data(true) {
                    self.effects.push(Effect::Export { meta, image });
                }
            }
            Action::LoadLatest(seq) => self.effects.push(Effect::LoadLatest(seq)),
            Action::LoadExport(meta) => self.effects.push(Effect::LoadExport(meta)),
        }
    }

    /// Replaces the state with the leader's snapshot; the proposals it
    /// covers are answered as dropped (retried by their clients).
    fn restore(&mut self, meta: &crate::raft::SnapshotMeta, bytes: &[u8]) {
        let restored = if bytes.is_empty() {
            self.sm = StateMachine::new(self.history_limit, &self.limits);
            Ok(())
        } else {
            self.sm.restore(bytes)
        };
        if let Err(e) = restored {
            tracing::error!(index = meta.index, error = %e, "cannot restore the leader's snapshot");
        }
        #[cfg(test)]
        if self.bugs.forget_answers_on_restore {
            self.sm.forget_sessions();
        }
        let covered: Vec<Index> = self
            .proposals
            .range(..=meta.index)
            .map(|(&i, _)| i)
            .collect();
        for index in covered {
            if let Some((_, token)) = self.proposals.remove(&index) {
                self.answer(token, Err(KvsError::Dropped));
            }
        }
        tracing::debug!(
            index = meta.index,
            term = meta.term,
            bytes = bytes.len(),
            "installed a snapshot from the leader"
        );
        #[cfg(test)]
        self.observe(|sm| Observed::Installed {
            meta: meta.clone(),
            digest: sm.digest(),
        });
    }

    fn apply(&mut self, entry: crate::raft::Entry) {
        let (command, result) = match &entry.payload {
            Payload::Command(bytes) => match serde_json::from_slice::<LogCommand>(bytes) {
                Ok(cmd) => {
                    let result = self.sm.apply(entry.index, &cmd);
                    (Some(cmd), Some(result))
                }
                Err(e) => {
                    tracing::error!(index = entry.index, error = %e, "undecodable log entry skipped");
                    (None, None)
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
                (None, None)
            }
            Payload::Noop => (None, None),
        };
        if let Some((term, token)) = self.proposals.remove(&entry.index) {
            let answer = match &result {
                Some(r) if term == entry.term => r.clone(),
                _ => Err(KvsError::Dropped),
            };
            self.answer(token, answer);
        }
        #[cfg(test)]
        self.observe(|sm| Observed::Applied {
            entry,
            replayed: command.is_some() && sm.replayed(),
            command,
            result,
            digest: sm.digest(),
        });
        #[cfg(not(test))]
        let _ = (command, entry);
    }

    /// Drops the state machine and fails everything waiting on it.
    fn reset(&mut self, why: &str) {
        self.sm = StateMachine::new(self.history_limit, &self.limits);
        for (_, (_, token)) in std::mem::take(&mut self.proposals) {
            self.answer(token, Err(KvsError::Unavailable(why.into())));
        }
        let reads: Vec<PendingRead> = self
            .reads
            .drain()
            .map(|(_, r)| r)
            .chain(self.ready_reads.drain(..).map(|(_, r)| r))
            .collect();
        // A read is served by whichever cluster this member is in next: it
        // waits for that cluster's leader, as a read that found none does.
        for read in reads {
            self.hold_read(read.token, read.txn, read.limit);
        }
        self.last_export = None;
        self.encoding = None;
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
            taken_at_ms: self.now_ms,
        };
        self.last_export = Some(meta);
        Some((meta, self.sm.image()))
    }

    fn log_changes(&mut self) {
        let raft = self.lc.raft();
        let now = (raft.map_or(0, |r| r.term()), raft.and_then(|r| r.leader()));
        if now != self.seen {
            self.seen = now;
            let role = raft.map(|r| r.role());
            tracing::info!(term = now.0, leader = ?now.1.map(|l| format!("{l:x}")), ?role, "raft state changed");
        }
    }
}

#[cfg(test)]
impl Member {
    /// Records what the member does from now on (see [`Observed`]).
    pub(crate) fn journal(&mut self) {
        self.journal = Some(Vec::new());
    }

    /// What was recorded since the last call.
    pub(crate) fn take_observed(&mut self) -> Vec<Observed> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn observe(&mut self, what: impl FnOnce(&StateMachine) -> Observed) {
        if self.journal.is_some() {
            let observed = what(&self.sm);
            if let Some(journal) = self.journal.as_mut() {
                journal.push(observed);
            }
        }
    }
}

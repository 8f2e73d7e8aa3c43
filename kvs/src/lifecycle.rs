//! A member's life: joining a live cluster after a restart, replacing the
//! previous incarnation, and re-forming the cluster (a new epoch) when the
//! whole fleet lost its memory. Pure and deterministic, like the Raft core:
//! the runtime and the simulator feed it ticks and messages and carry out
//! what it asks, reads of the export store included ([`Action::LoadLatest`],
//! [`Action::LoadExport`], answered through [`Lifecycle::latest_loaded`] and
//! [`Lifecycle::export_loaded`]): a founder decides on a read made after it
//! last looked, as if it had read the store itself at that moment.
//!
//! ```text
//!            probe peers ──▶ a live leader? ──yes──▶ Join ──▶ learner ──▶ caught up ──▶ voter
//!  start ─▶ (Idle, empty)         │ no                         (leader: remove the old
//!                                 ▼                             incarnation, then promote)
//!            a majority of the configured names empty, I am the lowest empty name
//!                                 ▼
//!            Prepare(epoch) ──▶ Promise × majority ──▶ source = newest of (export,
//!            surviving voters' applied state, exported on request) ──▶ Commit ──▶ new epoch
//! ```
//!
//! # Names, incarnations, epochs
//!
//! A *name* is a machine slot of the configured fleet (`n1`, `n2`, `n3`):
//! at most one process runs under a name at a time. Every process start is a
//! new *incarnation* with a fresh random [`NodeId`]; nothing survives a
//! restart, so a restarted process must never vote with a term or vote it
//! forgot: it rejoins as a learner and is promoted only after the leader has
//! removed its previous incarnation. An *epoch* ([`EpochId`]) is one Raft
//! cluster from its formation on; a new one forms only when no cluster is
//! live, seeded with the newest state that survived.
//!
//! # Why two live clusters at once are impossible
//!
//! Write N for the number of configured names (odd), and call a node
//! *empty* when it is not a voter of any cluster (a fresh incarnation, or a
//! learner not yet promoted). Three rules:
//!
//! 1. Every cluster's voters are incarnations of distinct configured names,
//!    and there are at least N − 1 of them: a cluster is formed with one
//!    voter per name (a never-started *placeholder* id for names that did not
//!    answer), joins come only from configured names, and the leader replaces
//!    an incarnation by removing the old one before promoting the new
//!    (`raft::membership` refuses two voters of one name).
//! 2. An empty node that *promises* epoch `e` never becomes a voter of any
//!    other cluster, except one it later promises with a higher [`EpochId`]
//!    or one it joins through a live leader once the promise lapsed (a
//!    cluster live after `e` formed is `e` or newer, by the count below).
//! 3. A cluster is formed only by a founder holding promises from a
//!    majority of names.
//!
//! Take cluster C, live (a quorum of its voters acting), and a founder F
//! that forms cluster D. F holds promises from a majority M of names whose
//! current incarnations are empty, so they are not voters of C, and the
//! incarnations of those names that C counts are dead (one process per
//! name). C's acting voters are therefore among the other N − |M| ≤ (N−1)/2
//! names, fewer than a quorum of any voter set of N − 1 or N members
//! ((N−1)/2 + 1 for N−1, (N+1)/2 for N). So C is not live once M promised, and can
//! never be again: by rule 2 none of M's incarnations joins it, and a
//! restarted incarnation of an M name is a new id that C could only add as a
//! learner, through a commit that needs a quorum C does not have. Founders
//! racing for the same epoch compete for the same majority of promises; a
//! loser's partial cluster is, by the same count, never live.
//!
//! What this does not protect against is outside the model: two processes
//! running under one name, or a durable store that loses an export.
//!
//! # What is lost
//!
//! A cluster formed after whole-fleet loss starts from the newest of the
//! exported snapshots and the applied states of surviving voters that answer
//! (a surviving voter asked for its state exports it first, so every member
//! reads the same bytes). Writes acknowledged after that state are lost; the
//! leader exports on an interval and on an eviction notice, which bounds the
//! loss by the interval.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::raft::{
    ConfChange, Config, Index, MemberInfo, Membership, NodeId, RaftNode, Role, SnapshotMeta,
    SplitMix64,
};
use crate::snapshot_store::ExportMeta;

pub use kvs_api::EpochId;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Its incarnation.
    pub id: NodeId,
    /// Its cluster, if it is in one (as a voter or a learner).
    pub epoch: Option<EpochId>,
    /// Whether it is a voter there.
    pub voter: bool,
    /// Its applied index there.
    pub applied: Index,
    /// The name of the leader it follows, if any.
    pub leader: Option<String>,
    /// The highest epoch it promised.
    pub promised: Option<EpochId>,
    /// The highest number of a formed epoch it has heard of.
    pub highest_epoch: u64,
}

impl Report {
    /// Whether the node is in no cluster's quorum (see the module doc).
    pub fn is_empty(&self) -> bool {
        !self.voter
    }
}

/// The messages of this protocol, addressed by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleMessage {
    /// Tell me about yourself.
    Probe,
    /// The answer to a probe or a prepare.
    Report(Report),
    /// Promise not to become a voter of any cluster but `epoch` (or higher).
    Prepare {
        /// The epoch being formed.
        epoch: EpochId,
    },
    /// The promise.
    Promise {
        /// The epoch promised.
        epoch: EpochId,
        /// The promiser's incarnation.
        id: NodeId,
    },
    /// Form `epoch` with `config`, from the export `source` (none: empty).
    Commit {
        /// The epoch.
        epoch: EpochId,
        /// Its first configuration: one voter per name.
        config: Membership,
        /// The state it starts from.
        source: Option<ExportMeta>,
    },
    /// Leader: add me as a learner, then promote me in place of my name's
    /// previous incarnation.
    Join {
        /// The joiner's incarnation.
        id: NodeId,
        /// Its name and address.
        info: MemberInfo,
    },
    /// A founder chose your applied state: export it now.
    ExportNow,
}

/// What the runtime must do, besides sending the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A cluster was joined or formed: the runtime resets its state machine
    /// to `state` (an export's bytes, empty for an empty store) before
    /// applying anything from [`Lifecycle::raft_mut`].
    Start {
        /// The cluster.
        epoch: EpochId,
        /// The state to start from; `None` for a joiner, which receives it
        /// by InstallSnapshot.
        state: Option<Vec<u8>>,
        /// Which export that state is.
        source: Option<ExportMeta>,
    },
    /// This incarnation ended (its cluster was superseded): the runtime
    /// drops its state; a new incarnation (see [`Lifecycle::id`]) starts empty.
    Discard {
        /// The epoch whose state was dropped.
        epoch: EpochId,
    },
    /// Export the applied state to the store now.
    Export,
    /// Read the newest export of the store and hand it, with this read's
    /// number, to [`Lifecycle::latest_loaded`] (the founder of a new epoch
    /// chooses its source from it).
    LoadLatest(u64),
    /// Read this export and hand it to [`Lifecycle::export_loaded`] (a
    /// member of a new epoch starts from it).
    LoadExport(ExportMeta),
}

/// The newest export as last read from the store.
#[derive(Debug, Clone)]
struct Stored {
    /// The export, or `None` for an empty store; `Err` if it could not be read.
    latest: Result<Option<(ExportMeta, Vec<u8>)>, String>,
    /// The number of the request it answers.
    seq: u64,
}

/// Settings of the lifecycle of one process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This process's name.
    pub name: String,
    /// Every configured name and its address (this one included).
    pub fleet: BTreeMap<String, String>,
    /// The Raft settings; `id` and `voters` are filled in here.
    pub raft: Config,
    /// Ticks between probes while not following a leader.
    pub probe_ticks: u64,
    /// Ticks a bootstrap round may take before it is abandoned.
    pub round_ticks: u64,
    /// Ticks without a leader after which a voter looks for a newer cluster.
    pub orphan_ticks: u64,
}

impl Settings {
    /// Defaults derived from the Raft election timeout.
    pub fn new(name: &str, fleet: BTreeMap<String, String>, raft: Config) -> Self {
        let election = u64::from(raft.election_tick);
        Settings {
            name: name.to_string(),
            fleet,
            raft,
            probe_ticks: election,
            round_ticks: 6 * election,
            orphan_ticks: 4 * election,
        }
    }

    fn majority(&self) -> usize {
        self.fleet.len() / 2 + 1
    }
}

/// A bootstrap round this node leads.
#[derive(Debug, Clone)]
struct Round {
    epoch: EpochId,
    promises: BTreeMap<String, NodeId>,
    started: u64,
}

/// The member's cluster, when it is in one.
#[derive(Debug)]
struct Joined {
    epoch: EpochId,
    raft: RaftNode,
    /// The tick this node last had a leader.
    led_at: u64,
    /// For a founding member: the epoch's first configuration and source,
    /// to repeat the commit to promisers that missed it.
    formation: Option<(Membership, Option<ExportMeta>)>,
}

/// One process's lifecycle. See the module doc.
#[derive(Debug)]
pub struct Lifecycle {
    settings: Settings,
    id: NodeId,
    rng: SplitMix64,
    now: u64,
    member: Option<Joined>,
    promised: Option<EpochId>,
    /// When the promise was made.
    promised_at: u64,
    /// The highest number of a formed epoch heard of.
    highest_epoch: u64,
    /// The highest number of an epoch promised, anywhere, heard of.
    highest_promise: u64,
    /// The latest report of each other name, with the tick it arrived.
    reports: BTreeMap<String, (u64, Report)>,
    round: Option<Round>,
    /// Leader: joiners by name (the newest incarnation per name).
    joins: BTreeMap<String, (NodeId, MemberInfo)>,
    last_probe: Option<u64>,
    outbox: Vec<(String, LifecycleMessage)>,
    actions: Vec<Action>,
    /// The store as last read ([`Action::LoadLatest`]); `None` before.
    stored: Option<Stored>,
    /// A read of the store is under way: its number, and the tick it was
    /// asked for at.
    loading: Option<(u64, u64)>,
    /// The number of the last read asked for.
    load_seq: u64,
    /// A round is at its decision: it acts on a read asked for after the
    /// read with this number (as if it read the store at that moment).
    decide_after: Option<u64>,
    /// A commit waiting for its source export to be read.
    pending_commit: Option<(EpochId, Membership, ExportMeta)>,
}

impl Lifecycle {
    /// A new incarnation named `settings.name`; `seed` drives its ids and timers.
    pub fn new(settings: Settings, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let id = fresh_id(&mut rng);
        Lifecycle {
            settings,
            id,
            rng,
            now: 0,
            member: None,
            promised: None,
            promised_at: 0,
            highest_epoch: 0,
            highest_promise: 0,
            reports: BTreeMap::new(),
            round: None,
            joins: BTreeMap::new(),
            last_probe: None,
            outbox: Vec::new(),
            actions: Vec::new(),
            stored: None,
            loading: None,
            load_seq: 0,
            decide_after: None,
            pending_commit: None,
        }
    }

    /// The answer to read `seq` ([`Action::LoadLatest`]): the store's
    /// newest export (`Err` naming why it could not be read). A round
    /// waiting for it goes on; an answer older than the last one is dropped.
    pub fn latest_loaded(
        &mut self,
        seq: u64,
        latest: Result<Option<(ExportMeta, Vec<u8>)>, String>,
    ) {
        if self.stored.as_ref().is_some_and(|s| s.seq >= seq) {
            return;
        }
        if self.loading.is_some_and(|(pending, _)| pending <= seq) {
            self.loading = None;
        }
        self.stored = Some(Stored { latest, seq });
        if self.round.is_none() && self.member.is_none() {
            self.consider();
        }
        self.drive_round();
    }

    /// The answer to [`Action::LoadExport`]: that export's bytes (`None`
    /// if the store no longer has it). A commit waiting for it goes on.
    pub fn export_loaded(&mut self, meta: ExportMeta, bytes: Result<Option<Vec<u8>>, String>) {
        let Some((epoch, config, source)) = self.pending_commit.take() else {
            return;
        };
        if source != meta {
            self.pending_commit = Some((epoch, config, source));
            return;
        }
        // Not readable: stay out; the cluster forms without us and we
        // join it as a learner.
        if let Ok(Some(bytes)) = bytes {
            self.start(epoch, config, Some(meta), bytes);
        }
    }

    /// Asks for a read of the store, unless one is under way (a read
    /// unanswered for a whole round is taken for lost and asked again).
    fn load_latest(&mut self) {
        let pending = self
            .loading
            .is_some_and(|(_, at)| self.now - at <= self.settings.round_ticks);
        if !pending {
            self.load_seq += 1;
            self.loading = Some((self.load_seq, self.now));
            self.actions.push(Action::LoadLatest(self.load_seq));
        }
    }

    /// This incarnation's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This process's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The cluster this node is in, if any.
    pub fn epoch(&self) -> Option<EpochId> {
        self.member.as_ref().map(|m| m.epoch)
    }

    /// The Raft node of the current cluster.
    pub fn raft(&self) -> Option<&RaftNode> {
        self.member.as_ref().map(|m| &m.raft)
    }

    /// The Raft node of the current cluster, to propose, read and step.
    pub fn raft_mut(&mut self) -> Option<&mut RaftNode> {
        self.member.as_mut().map(|m| &mut m.raft)
    }

    /// Messages to send, by destination name.
    pub fn take_outbox(&mut self) -> Vec<(String, LifecycleMessage)> {
        std::mem::take(&mut self.outbox)
    }

    /// What the runtime must do, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// What this node says about itself.
    pub fn report(&self) -> Report {
        let (epoch, voter, applied, leader) = match &self.member {
            Some(m) => (
                Some(m.epoch),
                m.raft.is_voter(),
                m.raft.log().applied,
                self.live_leader()
                    .and_then(|l| m.raft.config().info(l))
                    .map(|i| i.name.clone()),
            ),
            None => (None, false, 0, None),
        };
        Report {
            id: self.id,
            epoch,
            voter,
            applied,
            leader,
            promised: self.promised,
            highest_epoch: self.highest_epoch,
        }
    }

    fn send(&mut self, to: &str, m: LifecycleMessage) {
        self.outbox.push((to.to_string(), m));
    }

    fn others(&self) -> Vec<String> {
        self.settings
            .fleet
            .keys()
            .filter(|n| **n != self.settings.name)
            .cloned()
            .collect()
    }

    fn info(&self) -> MemberInfo {
        MemberInfo {
            name: self.settings.name.clone(),
            addr: self
                .settings
                .fleet
                .get(&self.settings.name)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Advances time by one tick: Raft's tick, probing, bootstrap rounds,
    /// and (on a leader) replacing incarnations.
    pub fn tick(&mut self) {
        self.now += 1;
        let now = self.now;
        if let Some(m) = &mut self.member {
            m.raft.tick();
        }
        // A promise for an epoch that did not form lapses, so the node can
        // join the cluster that did. Safe: joining takes a live leader, and
        // no cluster older than a formed epoch can have one (module doc).
        if self.member.is_none()
            && self.promised.is_some()
            && now - self.promised_at > self.settings.round_ticks
        {
            self.promised = None;
        }
        let has_leader = self.is_led();
        let (is_leader, joined, voter) = match &mut self.member {
            Some(m) => {
                if has_leader {
                    m.led_at = now;
                }
                (
                    m.raft.role() == Role::Leader,
                    m.raft.config().contains(self.id),
                    m.raft.is_voter(),
                )
            }
            None => (false, false, false),
        };
        if is_leader {
            self.reconcile_joins();
        }
        let orphaned = self
            .member
            .as_ref()
            .is_some_and(|m| now - m.led_at >= self.settings.orphan_ticks);
        // A cluster that never got going (no quorum of its founders came
        // up): a founding member that applied no command after the seed
        // (which is still in the store) gives up on it, so a new one can
        // form. It loses nothing a survivor could have offered: a survivor
        // offers its applied state, which here is the seed.
        let no_commands = |m: &Joined| {
            let applied = m.raft.log().applied;
            m.raft.snapshot_index() <= 1
                && m.raft.log().entries().iter().all(|e| {
                    e.index > applied || !matches!(e.payload, crate::raft::Payload::Command(_))
                })
        };
        // Voters of this cluster heard from lately (this one included): a
        // quorum of them means the cluster is alive, only slow (its leader's
        // heartbeats late), and giving up on it would throw away the
        // writes it is committing.
        let alive = |m: &Joined| {
            let config = m.raft.config();
            let others = self
                .reports_within(self.settings.orphan_ticks)
                .filter(|r| r.epoch == Some(m.epoch) && r.voter && config.is_voter(r.id))
                .count();
            1 + others >= config.quorum()
        };
        if let Some(m) = &self.member
            && orphaned
            && m.formation.is_some()
            && no_commands(m)
            && !alive(m)
        {
            let epoch = m.epoch;
            self.discard(epoch);
            return;
        }
        // Learners keep probing too: the leader they hear may have lost its
        // quorum (only its own report says), and then they count as empty.
        let probing = !voter || orphaned || !has_leader;
        let due = self
            .last_probe
            .is_none_or(|t| now - t >= self.settings.probe_ticks);
        if probing && due {
            self.last_probe = Some(now);
            for name in self.others() {
                self.send(&name, LifecycleMessage::Probe);
            }
            // Not in the configuration, or in our own copy of it but not led:
            // a member removed (as a stale learner, say) is never told, so it
            // asks again while it hears no leader. A leader that already has
            // it ignores the request.
            if self.member.is_some() && (!joined || (!voter && !has_leader)) {
                self.ask_to_join();
            }
            self.consider();
        }
        self.drive_round();
    }

    /// Handles a message from the node named `from`.
    pub fn receive(&mut self, from: &str, m: LifecycleMessage) {
        if !self.settings.fleet.contains_key(from) || from == self.settings.name {
            return;
        }
        match m {
            LifecycleMessage::Probe => {
                let r = self.report();
                self.send(from, LifecycleMessage::Report(r));
            }
            LifecycleMessage::Report(r) => {
                self.highest_epoch = self
                    .highest_epoch
                    .max(r.highest_epoch)
                    .max(r.epoch.map_or(0, |e| e.number));
                self.highest_promise = self.highest_promise.max(r.promised.map_or(0, |e| e.number));
                self.recommit(from, &r);
                self.reports.insert(from.to_string(), (self.now, r));
                self.consider();
            }
            LifecycleMessage::Prepare { epoch } => self.on_prepare(from, epoch),
            LifecycleMessage::Promise { epoch, id } => {
                if let Some(round) = &mut self.round
                    && round.epoch == epoch
                {
                    round.promises.insert(from.to_string(), id);
                }
                self.drive_round();
            }
            LifecycleMessage::Commit {
                epoch,
                config,
                source,
            } => self.on_commit(epoch, config, source),
            LifecycleMessage::Join { id, info } => {
                let leads = self
                    .member
                    .as_ref()
                    .is_some_and(|m| m.raft.role() == Role::Leader);
                if leads && info.name == from {
                    self.joins.insert(info.name.clone(), (id, info));
                    self.reconcile_joins();
                }
            }
            LifecycleMessage::ExportNow => {
                if self.member.as_ref().is_some_and(|m| m.raft.is_voter()) {
                    self.actions.push(Action::Export);
                }
            }
        }
    }

    /// A founding member repeats the commit to a promiser that missed it.
    fn recommit(&mut self, from: &str, r: &Report) {
        let Some(m) = &self.member else { return };
        let Some((config, source)) = &m.formation else {
            return;
        };
        if r.epoch.is_none() && r.promised == Some(m.epoch) && config.is_voter(r.id) {
            let commit = LifecycleMessage::Commit {
                epoch: m.epoch,
                config: config.clone(),
                source: *source,
            };
            self.send(from, commit);
        }
    }

    /// The reports heard within the last `ticks`.
    fn reports_within(&self, ticks: u64) -> impl Iterator<Item = &Report> {
        self.reports
            .values()
            .filter(move |(at, _)| self.now - at <= ticks)
            .map(|(_, r)| r)
    }

    /// Fresh reports (from the last two probe intervals) by name.
    fn fresh_reports(&self) -> BTreeMap<String, Report> {
        let horizon = 2 * self.settings.probe_ticks;
        self.reports
            .iter()
            .filter(|(_, (at, _))| self.now - at <= horizon)
            .map(|(n, (_, r))| (n.clone(), r.clone()))
            .collect()
    }

    /// Decides, from what the peers reported, whether to join a live
    /// cluster, leave a superseded one, or found a new one.
    fn consider(&mut self) {
        let reports = self.fresh_reports();
        // A live cluster: a peer that leads and heard from a quorum lately
        // (a follower's word is not enough: a leader cut off from its
        // quorum still heartbeats the followers it reaches).
        let live = reports
            .iter()
            .filter(|(name, r)| r.leader.as_ref() == Some(*name))
            .filter_map(|(name, r)| Some((r.epoch?, name.clone())))
            .max();
        // A newer epoch formed (live or not): ours was superseded when it
        // did (module doc), so unless we follow a live leader, start over
        // as a new, empty incarnation.
        let newest = reports.values().filter_map(|r| r.epoch).max();
        if let (Some(m), Some(newest)) = (&self.member, newest)
            && newest > m.epoch
            && !self.is_led()
        {
            let old = m.epoch;
            self.discard(old);
            return;
        }
        match (&self.member, live) {
            (None, Some((epoch, leader))) => return self.join(epoch, &leader),

            (Some(m), Some((epoch, _)))
                if epoch == m.epoch && !m.raft.config().contains(self.id) =>
            {
                return self.ask_to_join();
            }
            (_, Some(_)) => return,
            (_, None) => {}
        }
        if !self.report().is_empty() || self.round.is_some() {
            return;
        }
        let empty: BTreeSet<&String> = reports
            .iter()
            .filter(|(_, r)| r.is_empty())
            .map(|(n, _)| n)
            .chain(std::iter::once(&self.settings.name))
            .collect();
        let lowest = empty
            .iter()
            .next()
            .is_some_and(|n| **n == self.settings.name);
        if empty.len() < self.settings.majority() || !lowest {
            return;
        }
        // Found a new epoch, numbered above everything heard of (the store
        // as last read: the round checks a fresh read before it commits).
        let Some(Stored {
            latest: Ok(latest), ..
        }) = &self.stored
        else {
            return self.load_latest();
        };
        let stored = latest.as_ref().map_or(0, |(m, _)| m.epoch.number);
        self.load_latest();
        let number = self
            .highest_epoch
            .max(stored)
            .max(self.highest_promise)
            .max(self.promised.map_or(0, |p| p.number))
            + 1;
        // Rule 2: a founder (like a promiser) leaves any cluster it learns in.
        self.leave();
        self.renew_id();
        let epoch = EpochId {
            number,
            founder: self.id,
        };
        self.promised = Some(epoch);
        self.promised_at = self.now;
        self.decide_after = None;
        self.round = Some(Round {
            epoch,
            promises: BTreeMap::from([(self.settings.name.clone(), self.id)]),
            started: self.now,
        });
        for name in self.others() {
            self.send(&name, LifecycleMessage::Prepare { epoch });
        }
    }

    fn on_prepare(&mut self, from: &str, epoch: EpochId) {
        let report = self.report();
        // A learner may promise even while it hears from a leader: that
        // leader may have lost its quorum (the founder saw no live one).
        let acceptable = report.is_empty() && self.promised.is_none_or(|p| epoch >= p);
        if !acceptable {
            return self.send(from, LifecycleMessage::Report(report));
        }
        if self.promised != Some(epoch) {
            // Rule 2: a promise ends any learner membership and any round of ours.
            self.leave();
            self.renew_id();
            self.round = None;
            self.decide_after = None;
        }
        self.promised = Some(epoch);
        self.promised_at = self.now;
        self.highest_promise = self.highest_promise.max(epoch.number);
        self.send(from, LifecycleMessage::Promise { epoch, id: self.id });
    }

    /// Founder: once a majority promised, picks the source and commits.
    fn drive_round(&mut self) {
        let Some(round) = self.round.clone() else {
            return;
        };
        if self.promised != Some(round.epoch) || self.member.is_some() {
            self.round = None;
            self.decide_after = None;
            return;
        }
        if self.now - round.started > self.settings.round_ticks {
            self.round = None;
            self.decide_after = None;
            return;
        }
        // Wait a moment for every name, so fewer placeholders need replacing.
        let all = round.promises.len() == self.settings.fleet.len();
        let waited = self.now - round.started >= self.settings.probe_ticks;
        if round.promises.len() < self.settings.majority() || !(all || waited) {
            return;
        }
        // Decide on a read of the store asked for now, at the decision (a
        // read under way was asked for before it, so another follows).
        let after = *self.decide_after.get_or_insert(self.load_seq);
        let latest = match &self.stored {
            Some(stored) if stored.seq > after => stored.latest.clone(),
            _ => return self.load_latest(),
        };
        self.decide_after = None;
        let Ok(latest) = latest else {
            // The store is unreachable: forming now could lose its state.
            return;
        };
        let newest = latest.map(|(m, _)| m);
        // The new epoch must order after everything it descends from, or
        // stragglers of the older one would never give way to it.
        let seen = newest.map_or(0, |m| m.epoch.number).max(self.highest_epoch);
        if seen >= round.epoch.number {
            self.highest_epoch = seen;
            self.round = None;
            self.decide_after = None;
            return;
        }
        // A surviving voter whose applied state is newer than the newest export.
        let survivor = self
            .fresh_reports()
            .into_iter()
            .filter(|(_, r)| r.voter)
            .filter_map(|(n, r)| Some(((r.epoch?, r.applied), n)))
            .max();
        if let Some(((epoch, applied), name)) = survivor
            && newest.is_none_or(|m| (epoch, applied) > (m.epoch, m.index))
        {
            // Wait for its export; ask again every probe interval.
            if (self.now - round.started).is_multiple_of(self.settings.probe_ticks.max(1)) {
                self.send(&name, LifecycleMessage::ExportNow);
            }
            return;
        }
        let mut config = Membership::default();
        for (name, addr) in self.settings.fleet.clone() {
            // Names that did not promise get a placeholder voter, replaced
            // when the node returns (rule 1).
            let id = match round.promises.get(&name) {
                Some(&id) => id,
                None => fresh_id(&mut self.rng),
            };
            config.voters.insert(id, MemberInfo { name, addr });
        }
        for name in round.promises.keys() {
            if *name != self.settings.name {
                self.send(
                    name,
                    LifecycleMessage::Commit {
                        epoch: round.epoch,
                        config: config.clone(),
                        source: newest,
                    },
                );
            }
        }
        self.round = None;
        self.decide_after = None;
        self.on_commit(round.epoch, config, newest);
    }

    fn on_commit(&mut self, epoch: EpochId, config: Membership, source: Option<ExportMeta>) {
        if self.promised != Some(epoch) || self.member.is_some() || !config.is_voter(self.id) {
            return;
        }
        let Some(meta) = source else {
            return self.start(epoch, config, None, Vec::new());
        };
        // The source as last read, or read it now and go on when it comes.
        let known = self.stored.as_ref().and_then(|s| match &s.latest {
            Ok(Some((m, bytes))) if *m == meta => Some(bytes.clone()),
            _ => None,
        });
        match known {
            Some(bytes) => self.start(epoch, config, Some(meta), bytes),
            None => {
                self.pending_commit = Some((epoch, config, meta));
                self.actions.push(Action::LoadExport(meta));
            }
        }
    }

    /// Enters epoch `epoch` as a founding member, from `state`.
    fn start(
        &mut self,
        epoch: EpochId,
        config: Membership,
        source: Option<ExportMeta>,
        state: Vec<u8>,
    ) {
        if self.promised != Some(epoch) || self.member.is_some() || !config.is_voter(self.id) {
            return;
        }
        // Index 1 stands for the seed state, so a member that lacks it (a
        // later joiner) is sent it as a snapshot.
        let meta_config = config.clone();
        let meta = SnapshotMeta {
            index: 1,
            term: 0,
            config,
        };
        let raft = self.new_raft(meta);
        self.member = Some(Joined {
            epoch,
            raft,
            led_at: self.now,
            formation: Some((meta_config, source)),
        });
        self.highest_epoch = self.highest_epoch.max(epoch.number);
        self.actions.push(Action::Start {
            epoch,
            state: Some(state),
            source,
        });
    }

    fn new_raft(&mut self, meta: SnapshotMeta) -> RaftNode {
        let mut cfg = self.settings.raft.clone();
        cfg.id = self.id;
        cfg.voters = Vec::new();
        RaftNode::from_snapshot(cfg, self.rng.next_u64(), meta)
    }

    /// Joins the live cluster `epoch` led by `leader` as an empty learner.
    fn join(&mut self, epoch: EpochId, leader: &str) {
        if self.promised.is_some_and(|p| p > epoch) {
            return;
        }
        self.renew_id();
        let meta = SnapshotMeta {
            index: 0,
            term: 0,
            config: Membership::default(),
        };
        let raft = self.new_raft(meta);
        self.member = Some(Joined {
            epoch,
            raft,
            led_at: self.now,
            formation: None,
        });
        self.promised = None;
        self.round = None;
        self.decide_after = None;
        self.actions.push(Action::Start {
            epoch,
            state: None,
            source: None,
        });
        let info = self.info();
        self.send(leader, LifecycleMessage::Join { id: self.id, info });
    }

    /// Asks the leader (as reported by peers or followed) to add us.
    fn ask_to_join(&mut self) {
        let Some(m) = &self.member else { return };
        let leader = self
            .fresh_reports()
            .into_values()
            .filter(|r| r.epoch == Some(m.epoch))
            .find_map(|r| r.leader);
        if let Some(leader) = leader {
            let info = self.info();
            self.send(&leader, LifecycleMessage::Join { id: self.id, info });
        }
    }

    /// Ends this incarnation's cluster: a new id, no state, no promise.
    fn discard(&mut self, _epoch: EpochId) {
        self.promised = None;
        self.round = None;
        self.decide_after = None;
        self.leave();
    }

    /// Leaves the current cluster, if any, under a new id.
    fn leave(&mut self) {
        if let Some(m) = self.member.take() {
            self.joins.clear();
            self.renew_id();
            self.actions.push(Action::Discard { epoch: m.epoch });
        }
    }

    /// A new id for each attempt to enter a cluster (a promise, a
    /// founding, a join, a departure): an id offered once may sit in some
    /// cluster's configuration, so reusing it would let that cluster's
    /// messages reach the next one.
    fn renew_id(&mut self) {
        self.id = fresh_id(&mut self.rng);
    }

    /// The leader this node follows (or itself), if heard from within an
    /// election timeout (a learner never campaigns, so its `leader` alone
    /// would outlive a dead leader).
    fn live_leader(&self) -> Option<NodeId> {
        let raft = self.raft()?;
        if raft.role() == Role::Leader {
            return raft.leads_with_quorum().then_some(self.id);
        }
        let timeout = self.settings.raft.election_tick;
        raft.leader()
            .filter(|_| raft.ticks_since_leader() < timeout)
    }

    /// Whether this node follows (or is) a live leader right now.
    fn is_led(&self) -> bool {
        self.live_leader().is_some()
    }

    /// Leader: the next configuration change for the pending joins.
    fn reconcile_joins(&mut self) {
        let Some(m) = &mut self.member else { return };
        let config = m.raft.config().clone();
        self.joins.retain(|_, (id, _)| !config.contains(*id));
        let Some(change) = next_change(&config, &self.joins, |id| {
            m.raft
                .progress()
                .get(&id)
                .is_some_and(|p| p.match_index >= m.raft.log().committed)
        }) else {
            return;
        };
        if change == (ConfChange::Remove { id: self.id }) {
            // A leader about to remove itself hands leadership over first
            // (thesis §3.10); the new leader carries on with the joins.
            let heir = m
                .raft
                .progress()
                .iter()
                .filter(|(id, _)| **id != self.id && m.raft.config().is_voter(**id))
                .max_by_key(|(_, p)| p.match_index)
                .map(|(id, _)| *id);
            if let Some(heir) = heir {
                m.raft.transfer_leadership(heir);
            }
            return;
        }
        // Refused while another change is in flight; retried next tick.
        let _ = m.raft.propose_conf_change(&change);
    }
}

/// The next single-server change towards every incarnation that asked to
/// join being a voter in place of its name's older ones: stale learners of
/// the name go first, then the joiner is added as a learner; once a learner
/// is `caught_up`, the old voter of its name is removed, then it is
/// promoted. Learners are taken from the configuration, not from the join
/// requests, so a new leader carries on where the previous one stopped.
pub fn next_change(
    config: &Membership,
    joins: &BTreeMap<String, (NodeId, MemberInfo)>,
    caught_up: impl Fn(NodeId) -> bool,
) -> Option<ConfChange> {
    // Another member than `id` under `name`, among `members`.
    fn other_of<'a>(
        members: &'a BTreeMap<NodeId, MemberInfo>,
        name: &'a str,
        id: NodeId,
    ) -> Option<NodeId> {
        members
            .iter()
            .find(|(other, i)| **other != id && i.name == name)
            .map(|(other, _)| *other)
    }
    for (name, (id, info)) in joins {
        if config.contains(*id) {
            continue;
        }
        if let Some(stale) = other_of(&config.learners, name, *id) {
            return Some(ConfChange::Remove { id: stale });
        }
        return Some(ConfChange::AddLearner {
            id: *id,
            info: info.clone(),
        });
    }
    for (&id, info) in &config.learners {
        if !caught_up(id) {
            continue;
        }
        if let Some(old) = other_of(&config.voters, &info.name, id) {
            return Some(ConfChange::Remove { id: old });
        }
        return Some(ConfChange::Promote { id });
    }
    None
}

fn fresh_id(rng: &mut SplitMix64) -> NodeId {
    // Never 0, which means "none" in places.
    rng.next_u64().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(index: Index) -> Option<(ExportMeta, Vec<u8>)> {
        let epoch = EpochId {
            number: 1,
            founder: 7,
        };
        let meta = ExportMeta {
            epoch,
            index,
            term: 1,
            taken_at_ms: 0,
        };
        Some((meta, Vec::new()))
    }

    #[test]
    fn a_late_answer_to_an_older_read_of_the_store_is_dropped() {
        let fleet = BTreeMap::from([("n1".to_string(), String::new())]);
        let mut lc = Lifecycle::new(Settings::new("n1", fleet, Config::new(0, Vec::new())), 1);
        lc.load_latest();
        let first = lc.load_seq;
        // The first read is taken for lost; a second is asked for.
        lc.now += lc.settings.round_ticks + 1;
        lc.load_latest();
        let second = lc.load_seq;
        assert!(second > first);
        lc.latest_loaded(second, Ok(export(9)));
        lc.latest_loaded(first, Ok(export(3)));
        let stored = lc.stored.as_ref().expect("a read");
        assert_eq!(stored.seq, second);
        assert!(matches!(&stored.latest, Ok(Some((m, _))) if m.index == 9));
    }
}

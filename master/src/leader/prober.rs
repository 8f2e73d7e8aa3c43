//! The heartbeat prober (Borg style: the master asks, the worker answers).
//!
//! ```text
//!  each pass (after a change in the store, an answer, or a node falling due):
//!    snapshot ─▶ answers that came: CAS writes (pod statuses, node status, events), per node
//!            ─▶ per free node that is due, or whose desired pods changed:
//!                 delta vs what it acked ─▶ probe(fence, delta, events_after) ─▶ (answer, later)
//!            ─▶ silent nodes: NotReady (pods Unknown) after the grace, eviction after the timeout
//! ```
//!
//! Every node keeps its own schedule: it is probed a probe interval after
//! its last answer (sooner while pods it was given start), whatever the
//! other nodes do. No pass waits for an answer: a probe and then the
//! writes its answer calls for run as one node's task, and the node is not
//! probed again until both are done, so each probe is built from a
//! snapshot that holds what the last one wrote. A fleet whose answers are
//! slow (a thousand nodes on a busy machine) costs each node its own
//! answer time, never the slowest node's: rounds that waited for every
//! answer grew to tens of seconds, longer than the node-loss timeouts.
//!
//! What the prober knows of each node (last contact, acked version, what it
//! sent) lives only in the leader's memory: a new leader starts every node
//! with a fresh grace period and a full sync (`base_version: None`), so no
//! state has to survive a leader change. After any failed probe the next
//! one is a full sync too.
//!
//! Dead nodes cost no live node its probe: a node whose last probe failed
//! is *suspect*, and probed on a quarter of the slots, apart from the
//! others (a probe to a machine that is gone may wait out its timeout).

use crate::controllers::termination::{self, is_terminating};
// The loops' maps hash tens of thousands of names a pass: foldhash
// (seeded per process) instead of SipHash, a tenth of the leader's cpu.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::worker::{ProbeRequest, ProbeResponse, WorkerClient};
use api::{
    EventType, Fence, Kind, Node, NodeCondition, NodeConditionType, Pod, PodPhase, WorkerError,
};
use kvs::kv::{Op, Txn};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Context, Snapshot};
use crate::controllers::fnv1a;
use crate::controllers::nodes::{Health, disrupted, evictable, health};
use crate::events::{event, record};
use crate::store::{Stored, encode, key, unchanged};

/// What the leader remembers of one worker.
struct Peer {
    address: String,
    client: Option<WorkerClient>,
    last_contact_ms: u64,
    /// The version the worker holds, when known to match `sent`.
    acked: Option<u64>,
    /// Fingerprints of the pods it holds, by uid.
    sent: HashMap<String, u64>,
    events_after: u64,
    /// Last time its status was written (heartbeat), in ms.
    written_ms: u64,
    /// Until when pods it was just given are followed closely, in ms.
    follow_until_ms: u64,
    /// The wait before its next follow-up probe, in ms (doubles each time).
    follow_step_ms: u64,
    /// Probes unanswered in a row: a node that failed its last probe is
    /// suspect, and probed on slots of its own.
    failures: u32,
    /// When its last answer came, in ms (0: none yet), for the interval
    /// between answers (`mkube_probe_interval_seconds`).
    answered_ms: u64,
    /// When it is next probed even if nothing changed, in ms.
    due_ms: u64,
    /// [`signature`] of its pods when a probe built for it last carried
    /// nothing new (0: none since its last probe): until they change or it
    /// falls due, a pass need not build its probe again.
    idle_signature: u64,
}

impl Peer {
    fn new(address: String, now: u64) -> Peer {
        Peer {
            address,
            client: None,
            last_contact_ms: now,
            acked: None,
            sent: HashMap::new(),
            events_after: 0,
            written_ms: 0,
            follow_until_ms: 0,
            follow_step_ms: FOLLOW_FIRST_MS,
            failures: 0,
            answered_ms: 0,
            due_ms: 0,
            idle_signature: 0,
        }
    }
}

/// A probe's outcome: the node, what was sent, when it ended (ms), and the
/// answer (or the error, or the timeout).
struct Answer {
    node: String,
    req: ProbeRequest,
    at_ms: u64,
    answer: Result<Result<ProbeResponse, rpc::Error>, tokio::time::error::Elapsed>,
}

/// What one of the prober's tasks reports when it ends.
enum Done {
    /// A node's probe came back (or failed, or timed out).
    Answered(Box<Answer>),
    /// The writes a node's answer called for are done: the node is free.
    Written(String),
    /// The writes of a judgement of silent nodes are done.
    Judged,
}

/// The prober's tasks: probes, each node's writes, and the judgement of
/// silent nodes. A node with a task out (`busy`) is not probed again
/// until it ends.
struct Tasks {
    set: JoinSet<Done>,
    /// Which node each task is for (the judgement: none).
    of: HashMap<tokio::task::Id, String>,
    busy: HashSet<String>,
    /// Finished tasks a pass has not taken yet.
    done: Vec<Done>,
    /// Slots for probes of live nodes (resized with the fleet).
    live: Arc<Semaphore>,
    live_slots: usize,
    /// Slots for probes of suspect nodes: a quarter of the floor, enough
    /// to notice a node come back within an interval or two, never enough
    /// to starve the rest.
    suspect: Arc<Semaphore>,
    /// Slots for nodes' writes, so that a pass's answers share the
    /// store's pipeline rather than flood it.
    writes: Arc<Semaphore>,
    judging: bool,
}

/// Nodes writing at once (each its answer's few transactions in order).
const NODES_WRITING: usize = 64;

impl Tasks {
    fn new(floor: usize) -> Tasks {
        Tasks {
            set: JoinSet::new(),
            of: HashMap::new(),
            busy: HashSet::new(),
            done: Vec::new(),
            live: Arc::new(Semaphore::new(floor.max(1))),
            live_slots: floor.max(1),
            suspect: Arc::new(Semaphore::new((floor / 4).max(1))),
            writes: Arc::new(Semaphore::new(NODES_WRITING)),
            judging: false,
        }
    }

    /// Grows the live slots to `slots` (they never shrink: a probe holds
    /// its permit from the semaphore it started with).
    fn resize(&mut self, slots: usize) {
        if slots > self.live_slots {
            self.live.add_permits(slots - self.live_slots);
            self.live_slots = slots;
        }
    }

    /// The slots a node's probe waits for: a node that failed its last
    /// probe (`failures > 0`) may be gone, and its probe may hold its slot
    /// for the whole timeout, so it never takes one a live node needs.
    fn slots_for(&self, failures: u32) -> Arc<Semaphore> {
        if failures > 0 {
            self.suspect.clone()
        } else {
            self.live.clone()
        }
    }

    fn spawn(
        &mut self,
        node: Option<String>,
        task: impl std::future::Future<Output = Done> + Send + 'static,
    ) {
        let id = self.set.spawn(task).id();
        if let Some(node) = node {
            self.busy.insert(node.clone());
            self.of.insert(id, node);
        }
    }

    /// Waits for the next task to end and keeps what it reports for the
    /// next pass (never returns while none is out).
    async fn wait(&mut self) {
        if self.set.is_empty() {
            return std::future::pending().await;
        }
        if let Some(done) = self.set.join_next_with_id().await {
            self.ended(done);
        }
    }

    /// Every task that has ended, for a pass to take.
    fn take(&mut self) -> Vec<Done> {
        while let Some(done) = self.set.try_join_next_with_id() {
            self.ended(done);
        }
        std::mem::take(&mut self.done)
    }

    fn ended(&mut self, done: Result<(tokio::task::Id, Done), tokio::task::JoinError>) {
        match done {
            Ok((id, done)) => {
                self.of.remove(&id);
                self.done.push(done);
            }
            // A task that panicked (a bug): its node is free again.
            Err(e) => match self.of.remove(&e.id()) {
                Some(node) => {
                    self.busy.remove(&node);
                }
                None => self.judging = false,
            },
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Heartbeats are written at least this often even when nothing changed.
const HEARTBEAT_WRITE_MS: u64 = 10_000;
/// After a node is given new pods, it is probed again this soon while they
/// start (or, for pods that run to completion, run), so that Running (or
/// Succeeded) is seen within a fraction of a second rather than a probe
/// interval later; each follow-up waits twice as long as the one before,
/// up to [`FOLLOW_MAX_MS`]...
const FOLLOW_FIRST_MS: u64 = 50;
/// ...so that a pod that takes a while to start costs a few probes, not
/// one every 50 ms: each answer carries every pod of its node, and at
/// 1,000 nodes taking pods at once, decoding them was a sixth of the
/// leader's cpu...
const FOLLOW_MAX_MS: u64 = 400;
/// ...for at most this long (a pod in back-off is left to the interval).
const FOLLOW_FOR_MS: u64 = 5_000;

/// Fingerprints of the pods' specs, by uid, each valid while its pod's
/// revision is the one it was taken at: a round compares every pod of
/// every node with what its node holds, and hashing each pod's JSON every
/// round was a tenth of the leader's cpu at 3,000 pods.
#[derive(Default)]
struct Fingerprints(HashMap<String, (i64, u64)>);

impl Fingerprints {
    fn of(&mut self, p: &Stored<Pod>) -> u64 {
        let uid = &p.object.metadata.uid;
        match self.0.get(uid) {
            Some((rev, fp)) if *rev == p.mod_revision => *fp,
            _ => {
                let fp = fingerprint(&p.object);
                self.0.insert(uid.clone(), (p.mod_revision, fp));
                fp
            }
        }
    }

    /// Forgets the pods a snapshot no longer holds.
    fn keep(&mut self, snap: &Snapshot) {
        let held: HashSet<&str> = snap
            .pods
            .iter()
            .map(|p| p.object.metadata.uid.as_str())
            .collect();
        self.0.retain(|uid, _| held.contains(uid.as_str()));
    }
}

fn fingerprint(pod: &Pod) -> u64 {
    fnv1a(
        &serde_json::to_vec(&(&pod.metadata.uid, &pod.spec, &pod.metadata.labels))
            .unwrap_or_default(),
    )
}

/// The pods a probe carries: without status, as the worker wants them.
fn desired(pod: &Pod) -> Pod {
    let mut p = pod.clone();
    p.status = None;
    p.metadata.resource_version = None;
    p
}

/// The shortest time between two passes: answers and changes that come
/// meanwhile are taken together. A pass reads a snapshot and looks at
/// every node (a few ms at 30,000 pods); at a thousand nodes answers come
/// every few ms, and a pass for each made the steady leader's cpu three
/// times what rounds cost...
const PASS_SPACING: Duration = Duration::from_millis(100);
/// ...but while pods start on some node (it is followed), its next answer
/// and next probe are a pass apart each: passes come this often then.
const FOLLOW_PASS_SPACING: Duration = Duration::from_millis(20);

pub(super) async fn run(ctx: Context) {
    let mut state = State {
        peers: HashMap::new(),
        tasks: Tasks::new(ctx.config.probe_concurrency),
        fingerprints: Fingerprints::default(),
        next_judgement_ms: now_ms() + judgement_every(&ctx).as_millis() as u64,
        paused: false,
    };
    let mut seen_revision = 0;
    while ctx.still_leading() {
        let mut wake_ms = now_ms() + ctx.config.probe_interval.as_millis() as u64;
        match Snapshot::read(&ctx.store).await {
            Ok(snap) => {
                seen_revision = snap.revision;
                // Above the floor a worker reported (a cluster re-formed
                // from nothing), so that every worker follows this leader.
                let fence = Fence {
                    epoch: crate::store::fence_epoch(ctx.leadership.epoch, snap.fence_floor),
                    term: ctx.leadership.term,
                };
                wake_ms = pass(&ctx, fence, &snap, &mut state);
            }
            Err(e) => tracing::warn!(error = %e, "prober: reading the snapshot failed"),
        }
        let wait = Duration::from_millis(wake_ms.saturating_sub(now_ms()));
        tokio::select! {
            _ = state.tasks.wait() => {}
            _ = ctx.wait_for_change(seen_revision, wait) => {}
        }
        // Let answers and writes that come meanwhile settle into one pass.
        let now = now_ms();
        let following = state.peers.values().any(|p| now < p.follow_until_ms);
        tokio::time::sleep(if following {
            FOLLOW_PASS_SPACING
        } else {
            PASS_SPACING
        })
        .await;
    }
}

/// What the prober keeps from pass to pass.
struct State {
    peers: HashMap<String, Peer>,
    tasks: Tasks,
    fingerprints: Fingerprints,
    next_judgement_ms: u64,
    /// Whether evictions paused at the last judgement.
    paused: bool,
}

/// How often silent nodes are judged: node lifecycle goes on time, not
/// after any probe (a node cut off makes its probe wait out the timeout).
fn judgement_every(ctx: &Context) -> Duration {
    (ctx.config.probe_interval.min(ctx.config.probe_timeout) / 2).max(Duration::from_millis(100))
}

/// Probes in flight at once for a fleet of `nodes`: at least `floor`, and
/// one per eight nodes. A node waits for a slot as long as the probes
/// ahead of it take, about nodes / slots answer times: with a fixed 32
/// slots, a thousand nodes answering in 100 ms each waited 3 s, longer
/// than the interval. With a slot per eight nodes, eight answer times
/// whatever the fleet's size.
fn slots(floor: usize, nodes: usize) -> usize {
    floor.max(nodes / 8).max(1)
}

fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_millis() as u64 / 5;
    let j = if spread == 0 { 0 } else { now_ms() % spread };
    interval - Duration::from_millis(spread / 2) + Duration::from_millis(j)
}

/// One pass over a snapshot: takes the answers and writes that ended,
/// judges silent nodes when due, and probes every free node that is due
/// or whose desired pods changed. Returns when the next node falls due
/// (ms), for the caller to wake then at the latest.
fn pass(ctx: &Context, fence: Fence, snap: &Snapshot, state: &mut State) -> u64 {
    let State {
        peers,
        tasks,
        fingerprints,
        next_judgement_ms,
        paused,
    } = state;
    let now = now_ms();
    let mut by_node: HashMap<&str, Vec<&Stored<Pod>>> = HashMap::new();
    for p in &snap.pods {
        if let Some(n) = p.object.spec.node_name.as_deref() {
            by_node.entry(n).or_default().push(&**p);
        }
    }
    let nodes: HashMap<&str, &Stored<Node>> = snap
        .nodes
        .iter()
        .map(|n| (n.object.metadata.name.as_str(), &**n))
        .collect();
    peers.retain(|name, _| nodes.contains_key(name.as_str()));
    tasks.resize(slots(ctx.config.probe_concurrency, snap.nodes.len()));

    for done in tasks.take() {
        match done {
            Done::Answered(answer) => {
                let node = answer.node.clone();
                let writes = take_answer(ctx, *answer, &nodes, &by_node, peers);
                if writes.is_empty() || !ctx.still_leading() {
                    tasks.busy.remove(&node);
                    continue;
                }
                let (store, slots) = (ctx.store.clone(), tasks.writes.clone());
                let name = node.clone();
                tasks.spawn(Some(node), async move {
                    let _slot = slots.acquire_owned().await;
                    for txn in writes {
                        if let Err(e) = store.txn(txn).await {
                            tracing::debug!(error = %e, "a prober write failed; the next answer retries");
                        }
                    }
                    Done::Written(name)
                });
            }
            Done::Written(node) => {
                tasks.busy.remove(&node);
            }
            Done::Judged => tasks.judging = false,
        }
    }

    if now >= *next_judgement_ms && !tasks.judging && ctx.still_leading() {
        *next_judgement_ms = now + judgement_every(ctx).as_millis() as u64;
        fingerprints.keep(snap);
        let mut writes = lifecycle(ctx, snap, &by_node, peers, now, paused);
        // Terminating pods of a node that is gone have nobody to wait for.
        for (node, pods) in &by_node {
            if !nodes.contains_key(node) {
                writes.extend(
                    pods.iter()
                        .filter(|p| is_terminating(&p.object))
                        .map(|p| remove(p)),
                );
            }
        }
        if !writes.is_empty() {
            tasks.judging = true;
            let store = ctx.store.clone();
            tasks.spawn(None, async move {
                super::control::apply_txns(&store, writes).await;
                Done::Judged
            });
        }
    }

    let mut wake_ms = *next_judgement_ms;
    for node in &snap.nodes {
        let name = node.object.metadata.name.as_str();
        let Some(address) = node.object.status.as_ref().map(|s| s.address.as_str()) else {
            continue;
        };
        if tasks.busy.contains(name) {
            continue;
        }
        let peer = peers
            .entry(name.to_string())
            .or_insert_with(|| Peer::new(address.to_string(), now));
        // A client is made again when the address changes, or when due
        // for one that could not be made (at a probe interval, not at
        // every pass: each failure is logged).
        if peer.address != address || (peer.client.is_none() && now >= peer.due_ms) {
            peer.address = address.to_string();
            peer.client = worker_client(address, name, ctx);
            peer.acked = None;
            if peer.client.is_none() {
                // Not to be probed: silent by its own doing.
                peer.failures = peer.failures.max(1);
                peer.due_ms = now + ctx.config.probe_interval.as_millis() as u64;
            }
        }
        let pods = by_node.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let due = now >= peer.due_ms;
        // A node that failed its last probe is probed when due, not at
        // every change (its next probe is a full sync, always "changed").
        if peer.failures > 0 && !due {
            wake_ms = wake_ms.min(peer.due_ms);
            continue;
        }
        let signature = signature(pods);
        if !due && peer.acked.is_some() && peer.idle_signature == signature {
            wake_ms = wake_ms.min(peer.due_ms);
            continue;
        }
        let req = request(name, fence, snap.revision, pods, peer, fingerprints);
        let changed =
            req.base_version.is_none() || !req.upserts.is_empty() || !req.deletes.is_empty();
        if !(due || changed) {
            peer.idle_signature = signature;
            wake_ms = wake_ms.min(peer.due_ms);
            continue;
        }
        let Some(client) = peer.client.clone() else {
            continue;
        };
        peer.idle_signature = 0;
        let slots = tasks.slots_for(peer.failures);
        let (timeout, metrics, node) = (
            ctx.config.probe_timeout,
            ctx.metrics.clone(),
            name.to_string(),
        );
        tasks.spawn(Some(node.clone()), async move {
            let _slot = slots.acquire_owned().await;
            let sent = std::time::Instant::now();
            let answer = tokio::time::timeout(timeout, client.probe(&req)).await;
            if let (Some(metrics), Ok(Ok(_))) = (&metrics, &answer) {
                metrics.observe_probe(sent.elapsed());
            }
            Done::Answered(Box::new(Answer {
                node,
                req,
                at_ms: now_ms(),
                answer,
            }))
        });
    }
    wake_ms
}

/// A cheap summary of a node's pods (which, and at which revisions): when
/// it has not changed, neither has anything a probe would carry.
fn signature(pods: &[&Stored<Pod>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ pods.len() as u64;
    for p in pods {
        h = (h ^ p.mod_revision as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// Notes when `answer` came, if it is an answer, and how long after the
/// node's previous one.
fn observe_interval(ctx: &Context, peer: &mut Peer, answer: &Answer) {
    if !matches!(answer.answer, Ok(Ok(_))) {
        return;
    }
    if let (Some(metrics), true) = (&ctx.metrics, peer.answered_ms > 0) {
        metrics.observe_probe_interval(Duration::from_millis(
            answer.at_ms.saturating_sub(peer.answered_ms),
        ));
    }
    peer.answered_ms = answer.at_ms;
}

/// Takes one probe's outcome: what the leader knows of the node, when it
/// is probed next, and the writes the answer calls for.
fn take_answer(
    ctx: &Context,
    answer: Answer,
    nodes: &HashMap<&str, &Stored<Node>>,
    by_node: &HashMap<&str, Vec<&Stored<Pod>>>,
    peers: &mut HashMap<String, Peer>,
) -> Vec<Txn> {
    let Some(peer) = peers.get_mut(&answer.node) else {
        return Vec::new();
    };
    observe_interval(ctx, peer, &answer);
    let Answer {
        node: name,
        req,
        at_ms: now,
        answer,
    } = answer;
    let mut writes = Vec::new();
    // The next probe: an interval after this one's end, unless the answer
    // calls for one sooner.
    peer.due_ms = now + jittered(ctx.config.probe_interval).as_millis() as u64;
    match answer {
        Ok(Ok(resp)) => {
            peer.failures = 0;
            let pods = by_node.get(name.as_str());
            let node = nodes.get(name.as_str()).copied();
            answered(peer, &req, &resp, now);
            if !req.upserts.is_empty() {
                peer.follow_until_ms = now + FOLLOW_FOR_MS;
                peer.follow_step_ms = FOLLOW_FIRST_MS;
            }
            let follow = may_change_soon(pods, &resp) && now < peer.follow_until_ms;
            if req.more {
                // The next part goes at once.
                peer.due_ms = now;
            } else if follow {
                peer.due_ms = now + peer.follow_step_ms;
                peer.follow_step_ms = (peer.follow_step_ms * 2).min(FOLLOW_MAX_MS);
            }
            if resp.acked_version == req.version {
                writes.extend(terminated(pods, &resp, peer));
            }
            writes.extend(record_answer(node, pods, resp, peer, now));
        }
        Ok(Err(e)) => {
            peer.acked = None;
            peer.failures = peer.failures.saturating_add(1);
            match WorkerError::from_rpc(&e) {
                Some(WorkerError::StaleFence { seen, .. }) => {
                    tracing::warn!(node = %name, %seen, "the worker follows a newer leader; this one is deposed")
                }
                _ => tracing::debug!(node = %name, error = %e, "probe failed"),
            }
        }
        Err(_) => {
            peer.acked = None;
            peer.failures = peer.failures.saturating_add(1);
            tracing::debug!(node = %name, "probe timed out");
        }
    }
    writes
}

/// A client of node `name`'s worker at `address`: over TLS, the worker
/// must present `name`'s certificate.
fn worker_client(address: &str, name: &str, ctx: &Context) -> Option<WorkerClient> {
    let tls = match ctx
        .config
        .tls
        .as_ref()
        .map(|t| t.expecting_peer(name, pki::WORKERS))
    {
        None => None,
        Some(Ok(tls)) => Some(tls),
        Some(Err(e)) => {
            tracing::warn!(node = %name, error = %e, "cannot configure TLS towards a node");
            return None;
        }
    };
    let config = rpc::ClientConfig {
        token: ctx.config.token.clone(),
        tls,
        default_timeout: ctx.config.probe_timeout,
        max_connections: 2,
        ..Default::default()
    };
    match rpc::Client::new(address, config) {
        Ok(c) => Some(WorkerClient::new(c)),
        Err(e) => {
            tracing::warn!(%address, error = %e, "a node's address is unusable");
            None
        }
    }
}

/// Bytes of pods one probe carries at most: half the worker's body limit
/// (`rpc::server::DEFAULT_MAX_BODY_BYTES`), so that a node's pods never
/// make its probes too large to take, however many and however large
/// (one stored pod is at most 1.5 MiB).
pub const PROBE_POD_BYTES: usize = rpc::server::DEFAULT_MAX_BODY_BYTES / 2;

/// The probe for a node holding `pods`: a delta from what it acked, or the
/// whole set; either in parts of at most [`PROBE_POD_BYTES`] (at least one
/// pod each), `more` telling the worker that parts follow.
fn request(
    node: &str,
    fence: Fence,
    revision: i64,
    pods: &[&Stored<Pod>],
    peer: &Peer,
    fingerprints: &mut Fingerprints,
) -> ProbeRequest {
    let revision = revision.max(0) as u64;
    // A terminating pod is not desired: its uid goes as a delete, with the
    // grace its deletion set.
    let current: HashMap<&str, (u64, &Pod)> = pods
        .iter()
        .filter(|p| !is_terminating(&p.object))
        .map(|p| {
            (
                p.object.metadata.uid.as_str(),
                (fingerprints.of(p), &p.object),
            )
        })
        .collect();
    match peer.acked {
        Some(acked) => {
            let mut changed: Vec<&Pod> = current
                .values()
                .filter(|(fp, p)| peer.sent.get(&p.metadata.uid) != Some(fp))
                .map(|(_, p)| *p)
                .collect();
            changed.sort_by(|a, b| a.metadata.uid.cmp(&b.metadata.uid));
            let (upserts, more) = part(&changed);
            let deletes: Vec<String> = peer
                .sent
                .keys()
                .filter(|uid| !current.contains_key(uid.as_str()))
                .cloned()
                .collect();
            let delete_grace = pods
                .iter()
                .filter(|p| deletes.contains(&p.object.metadata.uid))
                .filter_map(|p| {
                    let grace = p.object.metadata.deletion_grace_period_seconds?;
                    Some((p.object.metadata.uid.clone(), grace))
                })
                .collect();
            let version = if upserts.is_empty() && deletes.is_empty() {
                acked
            } else {
                revision.max(acked + 1)
            };
            ProbeRequest {
                node: node.to_string(),
                fence,
                version,
                base_version: Some(acked),
                upserts,
                deletes,
                delete_grace,
                events_after: peer.events_after,
                more,
            }
        }
        None => {
            let mut all: Vec<&Pod> = current.values().map(|(_, p)| *p).collect();
            all.sort_by(|a, b| a.metadata.uid.cmp(&b.metadata.uid));
            let (upserts, more) = part(&all);
            ProbeRequest {
                node: node.to_string(),
                fence,
                version: revision,
                base_version: None,
                upserts,
                deletes: Vec::new(),
                delete_grace: Default::default(),
                events_after: peer.events_after,
                more,
            }
        }
    }
}

/// The first of `pods` that fit in [`PROBE_POD_BYTES`] (at least one), as
/// the worker wants them, and whether any are left for a later part.
fn part(pods: &[&Pod]) -> (Vec<Pod>, bool) {
    let mut bytes = 0;
    let mut out = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let d = desired(p);
        let size = serde_json::to_vec(&d).map_or(0, |v| v.len());
        if !out.is_empty() && bytes + size > PROBE_POD_BYTES {
            return (out, i < pods.len());
        }
        bytes += size;
        out.push(d);
    }
    (out, false)
}

/// Updates what the leader knows of a peer from its answer.
fn answered(peer: &mut Peer, req: &ProbeRequest, resp: &ProbeResponse, now: u64) {
    // The answer's own time when known (a slow round's start would make
    // every node it answered look silent for as long as the round took).
    peer.last_contact_ms = peer.last_contact_ms.max(now).max(peer.answered_ms);
    if resp.acked_version == req.version {
        match req.base_version {
            None => peer.sent.clear(),
            Some(_) => {
                for uid in &req.deletes {
                    peer.sent.remove(uid);
                }
            }
        }
        for p in &req.upserts {
            peer.sent.insert(p.metadata.uid.clone(), fingerprint(p));
        }
        peer.acked = Some(req.version);
    } else {
        // Restarted or out of step: the next probe sends everything.
        peer.acked = None;
    }
    let newest = resp.events.iter().map(|e| e.seq).max();
    match newest {
        Some(seq) => peer.events_after = seq,
        // A restarted worker numbers its events from 1 again.
        None if resp.acked_version == 0 => peer.events_after = 0,
        None => {}
    }
}

/// Whether a node's answer shows pods whose next change is worth seeing
/// at once: pods still starting, and pods that run to completion
/// (`restartPolicy` OnFailure or Never: a Job's next pod waits for this
/// one's end).
fn may_change_soon(pods: Option<&Vec<&Stored<Pod>>>, resp: &ProbeResponse) -> bool {
    resp.pods.iter().any(|r| match r.status.phase {
        PodPhase::Pending | PodPhase::Scheduled => true,
        PodPhase::Running => pods.into_iter().flatten().any(|p| {
            p.object.metadata.uid == r.uid
                && p.object.spec.restart_policy != api::RestartPolicy::Always
        }),
        _ => false,
    })
}

/// Removals of the node's terminating pods that its worker has let go:
/// the delete was taken and neither the pod nor its containers are left.
fn terminated(pods: Option<&Vec<&Stored<Pod>>>, resp: &ProbeResponse, peer: &Peer) -> Vec<Txn> {
    pods.into_iter()
        .flatten()
        .filter(|p| is_terminating(&p.object))
        .filter(|p| {
            let uid = &p.object.metadata.uid;
            termination::finished_terminating(
                !peer.sent.contains_key(uid),
                resp.pods.iter().any(|r| &r.uid == uid),
                resp.terminating.contains(uid),
            )
        })
        .map(|p| remove(p))
        .collect()
}

/// Removes a pod from the store if it is still as read.
fn remove(p: &Stored<Pod>) -> Txn {
    let k = key(
        Kind::Pod,
        &p.object.metadata.namespace,
        &p.object.metadata.name,
    );
    Txn {
        compares: vec![unchanged(k.clone(), p.mod_revision)],
        success: vec![Op::Delete { key: k }],
        failure: Vec::new(),
    }
}

/// The writes an answer calls for: pod statuses, the node's status, events.
fn record_answer(
    node: Option<&Stored<Node>>,
    pods: Option<&Vec<&Stored<Pod>>>,
    resp: ProbeResponse,
    peer: &mut Peer,
    now: u64,
) -> Vec<Txn> {
    let mut txns = Vec::new();
    let mut batch = StatusBatch::default();
    for report in resp.pods {
        let Some(stored) =
            pods.and_then(|ps| ps.iter().find(|p| p.object.metadata.uid == report.uid))
        else {
            continue;
        };
        if stored.object.status.as_ref() == Some(&report.status) {
            continue;
        }
        let mut pod = stored.object.clone();
        pod.status = Some(report.status);
        if let Some(full) = batch.add(&pod, stored.mod_revision) {
            txns.push(full);
        }
    }
    txns.extend(batch.finish());
    if let Some(stored) = node {
        let mut updated = Node::from_info(resp.node);
        updated.metadata = stored.object.metadata.clone();
        updated.metadata.resource_version = None;
        updated.spec = stored.object.spec.clone();
        let old = stored.object.status.clone();
        let heartbeat_due = now.saturating_sub(peer.written_ms) >= HEARTBEAT_WRITE_MS;
        let mut status_without_time = updated.status.clone();
        if let (Some(s), Some(o)) = (status_without_time.as_mut(), old.as_ref()) {
            s.last_heartbeat_time.clone_from(&o.last_heartbeat_time);
            s.usage = o.usage;
        }
        if status_without_time != old || heartbeat_due {
            if let Some(s) = updated.status.as_mut() {
                s.last_heartbeat_time = Some(crate::clock::now_rfc3339());
            }
            peer.written_ms = now;
            let became_ready = !stored.object.is_ready() && updated.is_ready();
            let extra = if became_ready {
                vec![event(
                    Kind::Node,
                    &updated.metadata,
                    EventType::Normal,
                    "NodeReady",
                    format!("Node {} is Ready", updated.metadata.name),
                    "prober",
                )]
            } else {
                Vec::new()
            };
            txns.push(cas(
                Kind::Node,
                &updated.metadata,
                stored.mod_revision,
                encode(&updated),
                extra,
            ));
        }
    }
    let events: Vec<Op> = resp.events.into_iter().map(|e| record(e.event)).collect();
    for chunk in events.chunks(100) {
        txns.push(Txn {
            compares: Vec::new(),
            success: chunk.to_vec(),
            failure: Vec::new(),
        });
    }
    txns
}

/// Pod statuses of one node written together: one transaction of
/// compare-and-puts for up to [`STATUSES_PER_TXN`] pods (or
/// [`STATUS_BATCH_BYTES`] of them), all or none. A transaction per pod
/// made a starting fleet of 30,000 pods 30,000 Raft entries behind 32
/// slots, and rounds took minutes; a batch that fails (another writer
/// changed one of its pods) is written again from the node's next answer.
#[derive(Default)]
struct StatusBatch {
    txn: Txn,
    bytes: usize,
}

/// Pods in one status transaction (two operations each, within the
/// store's 128 per transaction).
const STATUSES_PER_TXN: usize = 40;
/// Bytes of pods in one status transaction, beyond which it is closed
/// (a pod may be up to 1.5 MiB; most are a few KiB).
const STATUS_BATCH_BYTES: usize = 1 << 20;

impl StatusBatch {
    /// Adds `pod` (stored at `mod_revision`); returns the batch when full.
    fn add(&mut self, pod: &Pod, mod_revision: i64) -> Option<Txn> {
        let k = key(Kind::Pod, &pod.metadata.namespace, &pod.metadata.name);
        let value = encode(pod);
        self.bytes += k.len() + value.len();
        self.txn.compares.push(unchanged(k.clone(), mod_revision));
        self.txn.success.push(Op::Put { key: k, value });
        let full = self.txn.compares.len() >= STATUSES_PER_TXN || self.bytes >= STATUS_BATCH_BYTES;
        full.then(|| {
            self.bytes = 0;
            std::mem::take(&mut self.txn)
        })
    }

    /// What is left, if anything.
    fn finish(self) -> Option<Txn> {
        (!self.txn.compares.is_empty()).then_some(self.txn)
    }
}

fn cas(
    kind: Kind,
    meta: &api::ObjectMeta,
    mod_revision: i64,
    value: String,
    extra: Vec<Op>,
) -> Txn {
    let k = key(kind, &meta.namespace, &meta.name);
    let mut success = vec![Op::Put {
        key: k.clone(),
        value,
    }];
    success.extend(extra);
    Txn {
        compares: vec![unchanged(k, mod_revision)],
        success,
        failure: Vec::new(),
    }
}

/// NotReady and eviction for silent nodes: those whose last probe failed
/// and that have not answered for the grace (see
/// [`crate::controllers::nodes`]). Evictions pause while most of the
/// fleet is silent at once; `paused` says whether they were at the last
/// judgement, so that the change is logged once.
fn lifecycle(
    ctx: &Context,
    snap: &Snapshot,
    by_node: &HashMap<&str, Vec<&Stored<Pod>>>,
    peers: &HashMap<String, Peer>,
    now: u64,
    paused: &mut bool,
) -> Vec<Txn> {
    let silent: Vec<(&Stored<Node>, Health, u64)> = snap
        .nodes
        .iter()
        .filter_map(|node| {
            let peer = peers.get(node.object.metadata.name.as_str())?;
            if peer.failures == 0 {
                return None;
            }
            match health(peer.last_contact_ms, now, ctx.config.timeouts) {
                Health::Healthy => None,
                h => Some((&**node, h, now.saturating_sub(peer.last_contact_ms))),
            }
        })
        .collect();
    let disrupted = disrupted(silent.len(), snap.nodes.len());
    if disrupted != *paused {
        if disrupted {
            tracing::warn!(
                silent = silent.len(),
                nodes = snap.nodes.len(),
                "most of the fleet is silent at once: evictions pause (these masters may be the ones cut off or overloaded)"
            );
        } else {
            tracing::info!(
                silent = silent.len(),
                nodes = snap.nodes.len(),
                "evictions resume"
            );
        }
        *paused = disrupted;
    }
    let mut txns = Vec::new();
    for (node, health, silent_ms) in silent {
        let name = node.object.metadata.name.as_str();
        let pods = by_node.get(name).map(Vec::as_slice).unwrap_or(&[]);
        txns.extend(not_ready(node, pods, silent_ms));
        if health == Health::Evict && !disrupted {
            txns.extend(evictions(name, pods));
        }
    }
    txns
}

/// Deletes of the pods an unreachable node loses, each with its Event,
/// [`STATUSES_PER_TXN`] pods to a transaction (each pod compared: all or
/// none; what fails is retried at the next judgement).
fn evictions(node: &str, pods: &[&Stored<Pod>]) -> Vec<Txn> {
    let evicted: Vec<&Stored<Pod>> = evictable(node, pods.iter().map(|p| &p.object))
        .into_iter()
        .filter_map(|pod| {
            pods.iter()
                .copied()
                .find(|p| p.object.metadata.uid == pod.metadata.uid)
        })
        .collect();
    if evicted.is_empty() {
        return Vec::new();
    }
    tracing::info!(%node, pods = evicted.len(), "evicting pods from an unreachable node");
    evicted
        .chunks(STATUSES_PER_TXN)
        .map(|chunk| {
            let mut txn = Txn::default();
            for p in chunk {
                let pod = &p.object;
                let k = key(Kind::Pod, &pod.metadata.namespace, &pod.metadata.name);
                txn.compares.push(unchanged(k.clone(), p.mod_revision));
                txn.success.push(Op::Delete { key: k });
                txn.success.push(event(
                    Kind::Pod,
                    &pod.metadata,
                    EventType::Warning,
                    "NodeUnreachable",
                    format!("Evicting pod {} from unreachable node {node}", pod.key()),
                    "node-lifecycle",
                ));
            }
            txn
        })
        .collect()
}

/// The node NotReady and its pods Unknown, where they are not already.
fn not_ready(node: &Stored<Node>, pods: &[&Stored<Pod>], silent_ms: u64) -> Vec<Txn> {
    let mut txns = Vec::new();
    let mut batch = StatusBatch::default();
    let name = &node.object.metadata.name;
    if node.object.is_ready() {
        let mut n = node.object.clone();
        n.metadata.resource_version = None;
        if let Some(s) = n.status.as_mut() {
            s.conditions = vec![NodeCondition {
                type_: NodeConditionType::Ready,
                status: false,
                reason: "NodeUnreachable".into(),
                message: format!("no probe answered for {} s", silent_ms / 1000),
            }];
        }
        tracing::warn!(node = %name, silent_ms, "node is NotReady");
        let ev = event(
            Kind::Node,
            &n.metadata,
            EventType::Warning,
            "NodeNotReady",
            format!("Node {name} stopped answering probes"),
            "node-lifecycle",
        );
        txns.push(cas(
            Kind::Node,
            &n.metadata,
            node.mod_revision,
            encode(&n),
            vec![ev],
        ));
    }
    for p in pods {
        let phase = p.object.status.as_ref().map(|s| s.phase);
        if matches!(
            phase,
            Some(PodPhase::Unknown | PodPhase::Succeeded | PodPhase::Failed)
        ) {
            continue;
        }
        let mut pod = p.object.clone();
        let mut status = pod.status.clone().unwrap_or_default();
        status.phase = PodPhase::Unknown;
        status.reason = Some("NodeLost".into());
        status.message = Some(format!("node {name} is not answering probes"));
        for c in &mut status.container_statuses {
            c.ready = false;
        }
        pod.status = Some(status);
        if let Some(full) = batch.add(&pod, p.mod_revision) {
            txns.push(full);
        }
    }
    txns.extend(batch.finish());
    txns
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::worker::PodReport;
    use api::{Container, NodeInfo, PodSpec, PodStatus, Resources};

    fn large_pod(i: usize) -> Stored<Pod> {
        let mut c = Container::new("main", "busybox");
        c.args = vec!["a".repeat(1_400 * 1024)];
        let mut pod = Pod::new(
            format!("large-{i}"),
            PodSpec {
                containers: vec![c],
                node_name: Some("n1".into()),
                ..PodSpec::default()
            },
        );
        pod.metadata.uid = format!("uid-{i}");
        Stored {
            object: pod,
            mod_revision: 10 + i as i64,
        }
    }

    fn ack(version: u64) -> ProbeResponse {
        ProbeResponse {
            node: NodeInfo {
                name: "n1".into(),
                address: "n1:1".into(),
                host_ip: "10.0.0.1".into(),
                labels: Default::default(),
                capacity: Resources::default(),
                allocatable: Resources::default(),
                usage: Resources::default(),
                conditions: Vec::new(),
                runtime_version: "test".into(),
            },
            acked_version: version,
            pods: Vec::new(),
            terminating: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A node's changed pod statuses go in few transactions, each
    /// compare-and-put for every pod in it (all or none), never one per
    /// pod: 100 changed pods make 40 + 40 + 20; unchanged ones write nothing.
    #[test]
    fn a_node_s_pod_statuses_are_written_in_batches() {
        let stored: Vec<Stored<Pod>> = (0..101)
            .map(|i| {
                let mut pod = Pod::new(format!("p{i}"), PodSpec::default());
                pod.metadata.uid = format!("uid-{i}");
                pod.status = Some(PodStatus::default());
                Stored {
                    object: pod,
                    mod_revision: 100 + i as i64,
                }
            })
            .collect();
        let pods: Vec<&Stored<Pod>> = stored.iter().collect();
        let mut resp = ack(1);
        resp.pods = stored
            .iter()
            .enumerate()
            .map(|(i, s)| PodReport {
                namespace: s.object.metadata.namespace.clone(),
                name: s.object.metadata.name.clone(),
                uid: s.object.metadata.uid.clone(),
                status: PodStatus {
                    // The last one reports what the store holds already.
                    phase: if i == 100 {
                        PodPhase::default()
                    } else {
                        PodPhase::Running
                    },
                    ..PodStatus::default()
                },
            })
            .collect();
        let mut peer = Peer::new("n1:1".into(), 0);
        let txns = record_answer(None, Some(&pods), resp, &mut peer, 0);
        let sizes: Vec<(usize, usize)> = txns
            .iter()
            .map(|t| (t.compares.len(), t.success.len()))
            .collect();
        assert_eq!(sizes, [(40, 40), (40, 40), (20, 20)]);
        for (i, (compare, op)) in txns
            .iter()
            .flat_map(|t| t.compares.iter().zip(&t.success))
            .enumerate()
        {
            let k = key(Kind::Pod, "default", &format!("p{i}"));
            assert_eq!(compare, &unchanged(k.clone(), 100 + i as i64));
            let Op::Put { key: put, value } = op else {
                panic!("not a put: {op:?}");
            };
            assert_eq!(put, &k);
            assert!(value.contains("Running"), "{value}");
        }
    }

    /// The review's finding: a probe to a dead node held one of the 32
    /// shared slots for its whole timeout, so enough dead nodes left none
    /// for the live ones. More suspect nodes than there are slots, their
    /// probes hanging, leave every live slot free.
    #[tokio::test]
    async fn dead_nodes_waiting_out_their_timeouts_leave_the_live_nodes_their_slots() {
        let mut tasks = Tasks::new(32);
        for i in 0..100 {
            let slots = tasks.slots_for(1);
            tasks.spawn(Some(format!("dead-{i}")), async move {
                let _slot = slots.acquire_owned().await;
                // A machine that is gone: the answer never comes.
                std::future::pending::<Done>().await
            });
        }
        // Until the probes have taken what slots they can (each a task).
        let suspect = tasks.slots_for(1);
        for _ in 0..10_000 {
            if suspect.available_permits() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            suspect.available_permits(),
            0,
            "the dead nodes hold every suspect slot"
        );
        let live = tasks.slots_for(0);
        assert_eq!(live.available_permits(), 32, "no live slot is held");
        let permits: Vec<_> = (0..32).map(|_| live.clone().try_acquire_owned()).collect();
        assert!(
            permits.iter().all(Result::is_ok),
            "every live node gets a slot now"
        );
        tasks.set.abort_all();
    }

    /// A round lasts about nodes / slots answer times: the slots grow with
    /// the fleet, so that a thousand nodes' round is as short as 256's.
    #[test]
    fn a_larger_fleet_gets_more_probe_slots() {
        assert_eq!(slots(32, 3), 32);
        assert_eq!(slots(32, 256), 32);
        assert_eq!(slots(32, 1_000), 125);
        assert_eq!(slots(0, 0), 1, "never no slot at all");
    }

    /// Three pods of 1.4 MiB made every full sync larger than the worker's
    /// body limit: each part now holds what fits, and the parts together
    /// bring the node every pod, the last one saying so.
    #[test]
    fn a_node_s_pods_go_in_parts_that_fit_a_probe() {
        let stored: Vec<Stored<Pod>> = (0..3).map(large_pod).collect();
        let pods: Vec<&Stored<Pod>> = stored.iter().collect();
        let fence = Fence { epoch: 1, term: 1 };
        let mut peer = Peer::new("n1:1".into(), 0);
        let mut parts = Vec::new();
        loop {
            let req = request("n1", fence, 20, &pods, &peer, &mut Fingerprints::default());
            let body = serde_json::to_vec(&req).expect("encodes").len();
            assert!(body < rpc::server::DEFAULT_MAX_BODY_BYTES, "{body} bytes");
            answered(&mut peer, &req, &ack(req.version), 0);
            parts.push((req.base_version.is_none(), req.upserts.len(), req.more));
            if !req.more {
                break;
            }
        }
        assert_eq!(
            parts,
            [(true, 1, true), (false, 1, true), (false, 1, false)]
        );
        assert_eq!(peer.sent.len(), 3);
        let idle = request("n1", fence, 20, &pods, &peer, &mut Fingerprints::default());
        assert!(idle.upserts.is_empty() && !idle.more);
    }
}

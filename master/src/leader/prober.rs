//! The heartbeat prober (Borg style: the master asks, the worker answers).
//!
//! ```text
//!  every probe_interval (±10%), and at once when a node's desired pods change:
//!    snapshot ─▶ per node: desired pods ─▶ delta vs what it acked ─▶ probe(fence, delta, events_after)
//!            ◀─ node info, acked version, pod statuses, events ─┘
//!    ─▶ CAS writes: pod statuses, node status, events
//!    silent nodes: NotReady (pods Unknown) after the grace, eviction after the timeout
//! ```
//!
//! What the prober knows of each node (last contact, acked version, what it
//! sent) lives only in the leader's memory: a new leader starts every node
//! with a fresh grace period and a full sync (`base_version: None`), so no
//! state has to survive a leader change. After any failed probe the next
//! one is a full sync too.
//!
//! Dead nodes cost no live node its probe: a node whose last probe failed
//! is *suspect*, probed on a quarter of the slots apart from the others,
//! and no round waits for its answer (see `Suspects`).

use crate::controllers::termination::{self, is_terminating};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::worker::{ProbeRequest, ProbeResponse, WorkerClient};
use api::{
    EventType, Fence, Kind, Node, NodeCondition, NodeConditionType, Pod, PodPhase, WorkerError,
};
use kvs::kv::{Op, Txn};
use tokio::sync::Semaphore;

use super::{Context, Snapshot};
use crate::controllers::fnv1a;
use crate::controllers::nodes::{Health, evictable, health};
use crate::events::{event, record};
use crate::store::{Stored, encode, key, prefix, unchanged};

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
    /// Probes unanswered in a row: a node that failed its last probe is
    /// suspect, and probed apart from the others (see [`Suspects`]).
    failures: u32,
    /// When its last answer came, in ms (0: none yet), for the interval
    /// between answers (`mkube_probe_interval_seconds`).
    answered_ms: u64,
}

/// A probe's outcome: the node, what was sent, and the answer (or the
/// error, or the timeout).
type Answer = (
    String,
    ProbeRequest,
    Result<Result<ProbeResponse, rpc::Error>, tokio::time::error::Elapsed>,
);

/// Probes of suspect nodes (those whose last probe failed), kept apart so
/// that dead nodes cost no live node its probe: they run on slots of their
/// own, and a round does not wait for them (a probe to a machine that is
/// gone may wait out its whole timeout); their answers are taken by
/// whichever round is running when they come. A node with a probe out is
/// not probed again until it returns.
struct Suspects {
    set: tokio::task::JoinSet<Answer>,
    out: HashMap<tokio::task::Id, String>,
    limit: Arc<Semaphore>,
}

impl Suspects {
    fn new(concurrency: usize) -> Suspects {
        Suspects {
            set: tokio::task::JoinSet::new(),
            out: HashMap::new(),
            // A quarter of the slots: enough to notice a node come back
            // within an interval or two, never enough to starve the rest.
            limit: Arc::new(Semaphore::new((concurrency / 4).max(1))),
        }
    }

    fn is_out(&self, node: &str) -> bool {
        self.out.values().any(|n| n == node)
    }

    /// A finished probe, if one is (`None` when none is out).
    async fn next(&mut self) -> Option<Answer> {
        loop {
            match self.set.join_next_with_id().await? {
                Ok((id, answer)) => {
                    self.out.remove(&id);
                    return Some(answer);
                }
                Err(e) => {
                    self.out.remove(&e.id());
                }
            }
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
/// After a node is given new pods, it is probed this often while they
/// start (or, for pods that run to completion, run), so that Running (or
/// Succeeded) is seen within this long rather than a probe interval later...
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);
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

pub(super) async fn run(ctx: Context) {
    let mut peers: HashMap<String, Peer> = HashMap::new();
    let mut next_full = tokio::time::Instant::now();
    let mut seen_revision = 0;
    let mut follow: HashSet<String> = HashSet::new();
    let mut suspects = Suspects::new(ctx.config.probe_concurrency.max(1));
    let mut fingerprints = Fingerprints::default();
    while ctx.still_leading() {
        let full = tokio::time::Instant::now() >= next_full;
        if full {
            next_full = tokio::time::Instant::now() + jittered(ctx.config.probe_interval);
        }
        match Snapshot::read(&ctx.store).await {
            Ok(snap) => {
                seen_revision = snap.revision;
                // Above the floor a worker reported (a cluster re-formed
                // from nothing), so that every worker follows this leader.
                let fence = Fence {
                    epoch: crate::store::fence_epoch(ctx.leadership.epoch, snap.fence_floor),
                    term: ctx.leadership.term,
                };
                fingerprints.keep(&snap);
                let mut state = RoundState {
                    peers: &mut peers,
                    suspects: &mut suspects,
                    fingerprints: &mut fingerprints,
                };
                follow = round(&ctx, fence, &snap, &mut state, full, &follow).await;
            }
            Err(e) => tracing::warn!(error = %e, "prober: reading the snapshot failed"),
        }
        let mut wait = next_full.saturating_duration_since(tokio::time::Instant::now());
        if !follow.is_empty() {
            wait = wait.min(FOLLOW_INTERVAL);
        }
        ctx.wait_for_change(seen_revision, wait).await;
        // Let a burst of writes (a scale-up) settle into one round.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Probes in flight at once for a fleet of `nodes`: at least `floor`, and
/// one per eight nodes. A round waits for its slowest live answers, so its
/// length is about nodes / slots × the answer time: with a fixed 32 slots,
/// a thousand nodes answering in 100 ms each made a round of 3 s, longer
/// than the interval, and a slow fleet's rounds outlasted the node-loss
/// timeouts (every node judged NotReady at once). With a slot per eight
/// nodes, a round is eight answer times whatever the fleet's size.
fn slots(floor: usize, nodes: usize) -> usize {
    floor.max(nodes / 8).max(1)
}

fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_millis() as u64 / 5;
    let j = if spread == 0 { 0 } else { now_ms() % spread };
    interval - Duration::from_millis(spread / 2) + Duration::from_millis(j)
}

/// What the prober keeps from round to round.
struct RoundState<'a> {
    peers: &'a mut HashMap<String, Peer>,
    suspects: &'a mut Suspects,
    fingerprints: &'a mut Fingerprints,
}

/// One round: probes every node (`full`), else those whose pods changed
/// and those in `follow`; returns the nodes whose new pods are still
/// starting (to be followed closely). A suspect node's probe is not
/// waited for (see [`Suspects`]).
async fn round(
    ctx: &Context,
    fence: Fence,
    snap: &Snapshot,
    state: &mut RoundState<'_>,
    full: bool,
    follow: &HashSet<String>,
) -> HashSet<String> {
    let RoundState {
        peers,
        suspects,
        fingerprints,
    } = state;
    let started = std::time::Instant::now();
    let now = now_ms();
    let mut by_node: HashMap<&str, Vec<&Stored<Pod>>> = HashMap::new();
    for p in &snap.pods {
        if let Some(n) = p.object.spec.node_name.as_deref() {
            by_node.entry(n).or_default().push(&**p);
        }
    }
    let names: HashSet<&str> = snap
        .nodes
        .iter()
        .map(|n| n.object.metadata.name.as_str())
        .collect();
    peers.retain(|name, _| names.contains(name.as_str()));
    let limit = Arc::new(Semaphore::new(slots(
        ctx.config.probe_concurrency,
        snap.nodes.len(),
    )));
    let mut set = tokio::task::JoinSet::new();
    for node in &snap.nodes {
        let name = node.object.metadata.name.clone();
        let Some(address) = node.object.status.as_ref().map(|s| s.address.clone()) else {
            continue;
        };
        let peer = peers.entry(name.clone()).or_insert_with(|| Peer {
            address: address.clone(),
            client: None,
            last_contact_ms: now,
            acked: None,
            sent: HashMap::new(),
            events_after: 0,
            written_ms: 0,
            follow_until_ms: 0,
            failures: 0,
            answered_ms: 0,
        });
        if peer.address != address || peer.client.is_none() {
            peer.address = address.clone();
            peer.client = worker_client(&address, &name, ctx);
            peer.acked = None;
        }
        let pods = by_node.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let req = request(&name, fence, snap.revision, pods, peer, fingerprints);
        let changed =
            req.base_version.is_none() || !req.upserts.is_empty() || !req.deletes.is_empty();
        if !(full || changed || follow.contains(&name)) {
            continue;
        }
        let Some(client) = peer.client.clone() else {
            continue;
        };
        if suspects.is_out(&name) {
            continue;
        }
        let suspect = peer.failures > 0;
        let limit = if suspect {
            suspects.limit.clone()
        } else {
            limit.clone()
        };
        let timeout = ctx.config.probe_timeout;
        let metrics = ctx.metrics.clone();
        let probe = async move {
            let _permit = limit.acquire_owned().await;
            let sent = std::time::Instant::now();
            let answer = tokio::time::timeout(timeout, client.probe(&req)).await;
            if let (Some(metrics), Ok(Ok(_))) = (&metrics, &answer) {
                metrics.observe_probe(sent.elapsed());
            }
            (name.clone(), req, answer)
        };
        if suspect {
            let id = suspects.set.spawn(probe).id();
            suspects.out.insert(id, node.object.metadata.name.clone());
        } else {
            set.spawn(probe);
        }
    }
    let mut writes: Vec<Txn> = Vec::new();
    // Terminating pods of a node that is gone have nobody to wait for.
    for (node, pods) in &by_node {
        if !names.contains(node) {
            writes.extend(
                pods.iter()
                    .filter(|p| is_terminating(&p.object))
                    .map(|p| remove(p)),
            );
        }
    }
    let mut starting = HashSet::new();
    // Node lifecycle is judged on time, not after the slowest probe: a
    // node cut off makes its probe wait out the whole timeout, which must
    // not delay declaring it NotReady (and its pods no longer endpoints).
    let judge_at =
        tokio::time::Instant::now() + ctx.config.probe_interval.min(ctx.config.probe_timeout);
    let mut judged = !full;
    // Until every probe of a live node is back; suspects' answers are
    // taken as they come, not waited for.
    while !set.is_empty() {
        let answer = tokio::select! {
            joined = set.join_next() => joined.and_then(Result::ok),
            Some(answer) = suspects.next(), if !suspects.out.is_empty() => Some(answer),
            _ = tokio::time::sleep_until(judge_at), if !judged => {
                judged = true;
                let txns = lifecycle(ctx, snap, &by_node, peers, now_ms());
                if ctx.still_leading() {
                    for txn in txns {
                        if let Err(e) = ctx.store.txn(txn).await {
                            tracing::debug!(error = %e, "lifecycle write failed; the next round retries");
                        }
                    }
                }
                None
            }
        };
        if let Some(answer) = answer {
            observe_interval(ctx, peers, &answer);
            take_answer(
                answer,
                snap,
                &by_node,
                peers,
                now,
                &mut writes,
                &mut starting,
            );
        }
    }
    while let Some(Ok((id, answer))) = suspects.set.try_join_next_with_id() {
        suspects.out.remove(&id);
        observe_interval(ctx, peers, &answer);
        take_answer(
            answer,
            snap,
            &by_node,
            peers,
            now,
            &mut writes,
            &mut starting,
        );
    }
    if !judged {
        writes.extend(lifecycle(ctx, snap, &by_node, peers, now_ms()));
    }
    if !ctx.still_leading() {
        return HashSet::new();
    }
    let answered = started.elapsed();
    let written = Tally::of(&writes);
    super::control::apply_txns(&ctx.store, writes).await;
    let took = started.elapsed();
    if took > ctx.config.probe_interval {
        tracing::info!(
            probes_ms = answered.as_millis() as u64,
            writes_ms = (took - answered).as_millis() as u64,
            pod_writes = written.pods,
            node_writes = written.nodes,
            event_writes = written.events,
            other_writes = written.other,
            nodes = snap.nodes.len(),
            full,
            "prober: a round longer than the probe interval"
        );
    }
    starting
}

/// A round's writes by the kind of the first key each writes (for the
/// log of a slow round).
#[derive(Debug, Default)]
struct Tally {
    pods: usize,
    nodes: usize,
    events: usize,
    other: usize,
}

impl Tally {
    fn of(txns: &[Txn]) -> Tally {
        let (pods, nodes, events) = (
            prefix(Kind::Pod, None),
            prefix(Kind::Node, None),
            prefix(Kind::Event, None),
        );
        let mut t = Tally::default();
        for txn in txns {
            let key = match txn.success.first() {
                Some(Op::Put { key, .. } | Op::Delete { key }) => key.as_str(),
                _ => "",
            };
            if key.starts_with(&pods) {
                t.pods += 1;
            } else if key.starts_with(&nodes) {
                t.nodes += 1;
            } else if key.starts_with(&events) {
                t.events += 1;
            } else {
                t.other += 1;
            }
        }
        t
    }
}

/// Notes when `answer` came, if it is an answer, and how long after the
/// node's previous one.
fn observe_interval(ctx: &Context, peers: &mut HashMap<String, Peer>, answer: &Answer) {
    let (name, _, Ok(Ok(_))) = answer else {
        return;
    };
    let Some(peer) = peers.get_mut(name) else {
        return;
    };
    let at = now_ms();
    if let (Some(metrics), true) = (&ctx.metrics, peer.answered_ms > 0) {
        metrics.observe_probe_interval(Duration::from_millis(at.saturating_sub(peer.answered_ms)));
    }
    peer.answered_ms = at;
}

/// Takes one probe's outcome: what the leader knows of the node, the
/// writes it calls for, and whether the node's pods are worth following.
fn take_answer(
    (name, req, answer): Answer,
    snap: &Snapshot,
    by_node: &HashMap<&str, Vec<&Stored<Pod>>>,
    peers: &mut HashMap<String, Peer>,
    now: u64,
    writes: &mut Vec<Txn>,
    starting: &mut HashSet<String>,
) {
    let Some(peer) = peers.get_mut(&name) else {
        return;
    };
    match answer {
        Ok(Ok(resp)) => {
            peer.failures = 0;
            let node = snap
                .nodes
                .iter()
                .map(|n| &**n)
                .find(|n| n.object.metadata.name == name);
            answered(peer, &req, &resp, now);
            if !req.upserts.is_empty() {
                peer.follow_until_ms = now + FOLLOW_FOR_MS;
            }
            if req.more {
                // The next part goes at once.
                starting.insert(name.clone());
            }
            if may_change_soon(by_node.get(name.as_str()), &resp) && now < peer.follow_until_ms {
                starting.insert(name.clone());
            }
            if resp.acked_version == req.version {
                writes.extend(terminated(by_node.get(name.as_str()), &resp, peer));
            }
            writes.extend(record_answer(
                node,
                by_node.get(name.as_str()),
                resp,
                peer,
                now,
            ));
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

/// NotReady and eviction for silent nodes.
fn lifecycle(
    ctx: &Context,
    snap: &Snapshot,
    by_node: &HashMap<&str, Vec<&Stored<Pod>>>,
    peers: &HashMap<String, Peer>,
    now: u64,
) -> Vec<Txn> {
    let mut txns = Vec::new();
    for node in &snap.nodes {
        let name = node.object.metadata.name.as_str();
        let Some(peer) = peers.get(name) else {
            continue;
        };
        let pods = by_node.get(name).map(Vec::as_slice).unwrap_or(&[]);
        match health(peer.last_contact_ms, now, ctx.config.timeouts) {
            Health::Healthy => {}
            Health::NotReady => txns.extend(not_ready(node, pods, now - peer.last_contact_ms)),
            Health::Evict => {
                txns.extend(not_ready(node, pods, now - peer.last_contact_ms));
                for pod in evictable(name, pods.iter().map(|p| &p.object)) {
                    let Some(stored) = pods
                        .iter()
                        .find(|p| p.object.metadata.uid == pod.metadata.uid)
                    else {
                        continue;
                    };
                    let k = key(Kind::Pod, &pod.metadata.namespace, &pod.metadata.name);
                    let msg = format!("Evicting pod {} from unreachable node {name}", pod.key());
                    tracing::info!(pod = %pod.key(), node = %name, "evicting a pod from an unreachable node");
                    txns.push(Txn {
                        compares: vec![unchanged(k.clone(), stored.mod_revision)],
                        success: vec![
                            Op::Delete { key: k },
                            event(
                                Kind::Pod,
                                &pod.metadata,
                                EventType::Warning,
                                "NodeUnreachable",
                                msg,
                                "node-lifecycle",
                            ),
                        ],
                        failure: Vec::new(),
                    });
                }
            }
        }
    }
    txns
}

/// The node NotReady and its pods Unknown, where they are not already.
fn not_ready(node: &Stored<Node>, pods: &[&Stored<Pod>], silent_ms: u64) -> Vec<Txn> {
    let mut txns = Vec::new();
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
        txns.push(cas(
            Kind::Pod,
            &pod.metadata,
            p.mod_revision,
            encode(&pod),
            Vec::new(),
        ));
    }
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
        let mut peer = Peer {
            address: "n1:1".into(),
            client: None,
            last_contact_ms: 0,
            acked: None,
            sent: HashMap::new(),
            events_after: 0,
            written_ms: 0,
            follow_until_ms: 0,
            failures: 0,
            answered_ms: 0,
        };
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
        let mut peer = Peer {
            address: "n1:1".into(),
            client: None,
            last_contact_ms: 0,
            acked: None,
            sent: HashMap::new(),
            events_after: 0,
            written_ms: 0,
            follow_until_ms: 0,
            failures: 0,
            answered_ms: 0,
        };
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

//! The control loop: one pass reads a snapshot, asks the pure controllers
//! and the scheduler what to do, and writes their plans as compare-and-set
//! transactions; then it waits for the next change (or the resync period).
//!
//! A pass writes each key at most once, so that its transactions never
//! conflict with each other; a transaction that fails (the key moved since
//! the snapshot) is simply dropped: the next pass sees the new state and
//! decides again.

// The loops' maps hash tens of thousands of names a pass: foldhash
// (seeded per process) instead of SipHash, a tenth of the leader's cpu.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::time::{Duration, Instant, SystemTime};

use api::workloads::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION};
use api::{EventType, Kind, OwnerReference, Pod, PodPhase, PodStatus};
use kvs::kv::{Op, Txn};
use serde::Serialize;

use super::{Context, Snapshot};
use crate::clock::Clock;
use crate::controllers::deployment::{self, RsView};
use crate::controllers::disruption;
use crate::controllers::endpoints as endpoints_controller;
use crate::controllers::job as job_controller;
use crate::controllers::{
    fnv1a, gc, is_active, is_finished, is_ready, parse_time, pod_from_template, replicaset,
    termination,
};
use crate::events::{self, event_at};
use crate::scheduler::{Demand, NodeView, ScorePolicy, node_views_of, schedule};
use crate::store::{Stored, encode, key, unchanged};

/// Transactions in flight at once when a pass writes its plan.
const WRITES_IN_FLIGHT: usize = 32;
/// Pods bound in one transaction (three operations each: compare, put, event).
const BINDINGS_PER_TXN: usize = 40;
/// Pods one ReplicaSet creates or deletes in one pass (Kubernetes'
/// `burstReplicas`): a scale-up by thousands proceeds in steps, each pass a
/// bounded amount of work, so the leader never spends long on one object.
pub const BURST_REPLICAS: usize = 500;
/// Pods created or deleted in one pass, all ReplicaSets together.
pub const PASS_POD_BUDGET: usize = 4 * BURST_REPLICAS;
/// Pods the controllers keep starting at once, all ReplicaSets and Jobs
/// together: a pod counts from its creation until it runs, or for at most
/// [`STARTING_FOR`] (one that cannot start does not hold the window for
/// ever). Kubernetes bounds the same with its controller-manager's API
/// rate. A burst of 30,000 pods then waits as pods not yet made rather
/// than as Pending ones, so a pod's start (from its creation) measures
/// the cluster's start machinery, not the queue ahead of it, and the
/// prober and the workers are handed what they can start.
pub const STARTING_MAX: usize = 2_000;
/// See [`STARTING_MAX`].
const STARTING_FOR: Duration = Duration::from_secs(30);
/// How often old events are trimmed.
const TRIM_INTERVAL: Duration = Duration::from_secs(30);
const SOURCE: &str = "controller-manager";

/// What the scheduler remembers between passes: pods that fitted nowhere,
/// and the state of the nodes when they did not (retried when it changes).
#[derive(Debug, Default)]
pub struct SchedulerMemory {
    unschedulable: HashMap<String, u64>,
    /// When each unbound pod was first seen (for the scheduling latency).
    first_seen: HashMap<String, SystemTime>,
    /// When the pods bound since the last [`SchedulerMemory::take_latencies`]
    /// were first seen.
    bound_first_seen: Vec<SystemTime>,
    /// What each bound pod takes from its node.
    demands: Demands,
}

/// The [`Demand`] of every bound pod, by uid, each kept while its pod's
/// revision is the one it was worked out at: parsing every pod's
/// quantities and hashing its owner on every pass was a third of a pass
/// at 30,000 pods.
#[derive(Debug, Default)]
struct Demands {
    /// uid → (revision, the pass that last saw it, its demand).
    by_uid: HashMap<String, (i64, u64, Demand)>,
    pass: u64,
}

impl Demands {
    /// Brings the cache up to date with `pods` (the bound ones), and
    /// forgets pods no longer among them. Pods without a uid (written raw,
    /// not through the API) are left out: two of them written by one
    /// transaction would share the key; the pass works theirs out each time.
    fn refresh<'a>(&mut self, pods: impl Iterator<Item = &'a Stored<Pod>>) {
        self.pass += 1;
        let pass = self.pass;
        for p in pods {
            let uid = &p.object.metadata.uid;
            if uid.is_empty() {
                continue;
            }
            match self.by_uid.get_mut(uid) {
                Some(e) if e.0 == p.mod_revision => e.1 = pass,
                Some(e) => *e = (p.mod_revision, pass, Demand::of(&p.object)),
                None => {
                    let d = Demand::of(&p.object);
                    self.by_uid.insert(uid.clone(), (p.mod_revision, pass, d));
                }
            }
        }
        self.by_uid.retain(|_, e| e.1 == pass);
    }

    fn get(&self, uid: &str) -> Option<&Demand> {
        self.by_uid.get(uid).map(|(_, _, d)| d)
    }
}

impl SchedulerMemory {
    /// How long the pods bound since the last call waited, from the first
    /// pass that saw them unbound until `now` (call it once the bindings
    /// are written).
    pub fn take_latencies(&mut self, now: SystemTime) -> Vec<Duration> {
        self.bound_first_seen
            .drain(..)
            .map(|seen| now.duration_since(seen).unwrap_or_default())
            .collect()
    }
}

/// The writes of one pass, each key written once.
#[derive(Debug)]
pub struct Writes {
    /// The transactions.
    pub txns: Vec<Txn>,
    touched: HashSet<String>,
    /// Pods the controllers create this pass, with their events: the
    /// scheduler binds them before they are written, so that a new pod
    /// costs one write and one pass, not two.
    created: Vec<(Pod, Vec<Op>)>,
    /// The pass's time and ids.
    clock: Clock,
}

impl Writes {
    fn new(clock: Clock) -> Writes {
        Writes {
            txns: Vec::new(),
            touched: HashSet::new(),
            created: Vec::new(),
            clock,
        }
    }

    /// The pass's time and ids.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn claim(&mut self, key: &str) -> bool {
        self.touched.insert(key.to_string())
    }

    /// Writes `value` at `key` if it is still at `mod_revision`, with `extra` ops.
    fn put_if(&mut self, key: String, mod_revision: i64, value: String, extra: Vec<Op>) {
        if !self.claim(&key) {
            return;
        }
        let mut success = vec![Op::Put {
            key: key.clone(),
            value,
        }];
        success.extend(extra);
        self.txns.push(Txn {
            compares: vec![unchanged(key, mod_revision)],
            success,
            failure: Vec::new(),
        });
    }

    fn delete_if(&mut self, key: String, mod_revision: i64, extra: Vec<Op>) {
        if !self.claim(&key) {
            return;
        }
        let mut success = vec![Op::Delete { key: key.clone() }];
        success.extend(extra);
        self.txns.push(Txn {
            compares: vec![unchanged(key, mod_revision)],
            success,
            failure: Vec::new(),
        });
    }
}

impl Writes {
    /// Creates `pod` (bound by this pass's scheduler if it fits somewhere).
    fn create_pod(&mut self, pod: Pod, extra: Vec<Op>) {
        self.created.push((pod, extra));
    }

    /// Deletes a pod gracefully (see `controllers::termination`): marks it
    /// terminating if a node may run it, removes it otherwise.
    fn delete_pod(&mut self, stored: &Stored<Pod>, extra: Vec<Op>) {
        let (k, rev) = key_of(Kind::Pod, stored, &stored.object.metadata);
        match termination::delete(&stored.object, None, &self.clock.rfc3339()) {
            termination::Deletion::Now => self.delete_if(k, rev, extra),
            termination::Deletion::Terminate(pod) => self.put_if(k, rev, encode(&*pod), extra),
            termination::Deletion::Unchanged => {}
        }
    }
}

fn key_of<T>(kind: Kind, s: &Stored<T>, meta: &api::ObjectMeta) -> (String, i64) {
    (key(kind, &meta.namespace, &meta.name), s.mod_revision)
}

/// Runs passes until the leadership ends.
pub(super) async fn run(ctx: Context) {
    let mut memory = SchedulerMemory::default();
    let mut reported = std::collections::HashSet::new();
    let mut trimmed = Instant::now();
    let mut planned_on: Option<(std::sync::Arc<Snapshot>, Instant)> = None;
    while ctx.still_leading() {
        let snap = match Snapshot::read(&ctx.store).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control loop: reading the snapshot failed; retrying");
                ctx.wait_for_change(i64::MAX, Duration::from_millis(200))
                    .await;
                continue;
            }
        };
        // Heartbeats alone decide nothing new: the last pass stands until
        // something else changes or the resync (time-based decisions) is
        // due. At a thousand nodes, heartbeats come a hundred a second,
        // and a pass over 30,000 pods for each kept a core busy.
        if let Some((last, at)) = &planned_on {
            let resync_in = ctx.config.resync_interval.saturating_sub(at.elapsed());
            if !resync_in.is_zero() && !worth_a_pass(last, &snap) {
                ctx.wait_for_change(snap.revision, resync_in).await;
                continue;
            }
        }
        // Planning is pure cpu (at 30,000 pods, a large share of a core):
        // on the blocking pool, so that it never holds the runtime's
        // workers from Raft's messages and the API.
        let snap = std::sync::Arc::new(snap);
        planned_on = Some((std::sync::Arc::clone(&snap), Instant::now()));
        let policy = ctx.config.score_policy;
        let planned = tokio::task::spawn_blocking({
            let snap = std::sync::Arc::clone(&snap);
            move || {
                let writes = plan(&snap, policy, &mut memory, Clock::system());
                (writes, memory)
            }
        })
        .await;
        let Ok((mut writes, kept)) = planned else {
            tracing::error!("control loop: a pass panicked; starting over with an empty memory");
            memory = SchedulerMemory::default();
            ctx.wait_for_change(snap.revision, ctx.config.resync_interval)
                .await;
            continue;
        };
        memory = kept;
        let reports = super::unreadable::report(&snap.unreadable, &mut reported, SOURCE);
        if !reports.is_empty() {
            writes.txns.push(Txn {
                compares: Vec::new(),
                success: reports,
                failure: Vec::new(),
            });
        }
        if !ctx.still_leading() {
            return;
        }
        apply(&ctx.store, writes).await;
        let latencies = memory.take_latencies(SystemTime::now());
        if let Some(metrics) = &ctx.metrics {
            for l in latencies {
                metrics.observe_scheduling(l);
            }
        }
        if trimmed.elapsed() > TRIM_INTERVAL {
            events::trim(&ctx.store).await;
            trimmed = Instant::now();
        }
        ctx.wait_for_change(snap.revision, ctx.config.resync_interval)
            .await;
    }
}

/// Whether `next` holds anything a pass decides on that `last`, the
/// snapshot of the last pass, did not: an object of any kind but nodes
/// added, removed or changed (the watch cache shares unchanged objects,
/// so a pointer says it), a node changed in more than its heartbeat time
/// and usage, or a value that does not parse.
pub fn worth_a_pass(last: &Snapshot, next: &Snapshot) -> bool {
    fn same<T>(a: &[std::sync::Arc<Stored<T>>], b: &[std::sync::Arc<Stored<T>>]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| std::sync::Arc::ptr_eq(x, y))
    }
    let nodes_same = last.nodes.len() == next.nodes.len()
        && last
            .nodes
            .iter()
            .zip(&next.nodes)
            .all(|(a, b)| std::sync::Arc::ptr_eq(a, b) || only_heartbeat(&a.object, &b.object));
    !(nodes_same
        && same(&last.pods, &next.pods)
        && same(&last.replica_sets, &next.replica_sets)
        && same(&last.deployments, &next.deployments)
        && same(&last.services, &next.services)
        && same(&last.endpoints, &next.endpoints)
        && same(&last.jobs, &next.jobs)
        && same(&last.budgets, &next.budgets)
        && last.unreadable == next.unreadable
        && last.fence_floor == next.fence_floor)
}

/// Whether node `b` is node `a` with only a newer heartbeat: the same
/// object but for its resource version, heartbeat time and usage.
fn only_heartbeat(a: &api::Node, b: &api::Node) -> bool {
    let mut a = a.clone();
    a.metadata
        .resource_version
        .clone_from(&b.metadata.resource_version);
    if let (Some(sa), Some(sb)) = (a.status.as_mut(), b.status.as_ref()) {
        sa.last_heartbeat_time.clone_from(&sb.last_heartbeat_time);
        sa.usage = sb.usage;
    }
    &a == b
}

/// Writes a pass's transactions, a bounded number at a time; failures are
/// left to the next pass.
pub async fn apply(store: &crate::store::Store, writes: Writes) -> usize {
    apply_txns(store, writes.txns).await
}

/// Writes `txns`, [`WRITES_IN_FLIGHT`] at a time (each its own Raft
/// proposal, so that they share the leader's pipeline rather than wait on
/// each other's commits); returns how many succeeded. A failed one is
/// logged and left to the next round of whichever loop wrote it.
pub async fn apply_txns(store: &crate::store::Store, txns: Vec<Txn>) -> usize {
    let mut set = tokio::task::JoinSet::new();
    let mut applied = 0;
    for txn in txns {
        while set.len() >= WRITES_IN_FLIGHT {
            if let Some(Ok(true)) = set.join_next().await {
                applied += 1;
            }
        }
        let store = store.clone();
        set.spawn(async move {
            match store.txn(txn).await {
                Ok(r) => r.succeeded,
                Err(e) => {
                    tracing::debug!(error = %e, "a write failed; the next round retries");
                    false
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        if let Ok(true) = r {
            applied += 1;
        }
    }
    applied
}

/// Everything one pass decides, from one snapshot.
pub fn plan(
    snap: &Snapshot,
    policy: ScorePolicy,
    memory: &mut SchedulerMemory,
    clock: Clock,
) -> Writes {
    let now = clock.now();
    let mut w = Writes::new(clock);
    let pods = pods_by_owner(snap);
    let mut may_create = STARTING_MAX.saturating_sub(starting(snap, now));
    collect_garbage(snap, &mut w);
    deployments(snap, &pods, now, &mut w);
    replica_sets(snap, &pods, &mut may_create, &mut w);
    jobs(snap, &pods, now, &mut may_create, &mut w);
    schedule_pending(snap, policy, memory, now, &mut w);
    endpoints(snap, &mut w);
    disruption_budgets(snap, &mut w);
    w
}

/// The endpoints controller: every Service's Endpoints (same namespace and
/// name) written when they differ from what the pods say, and Endpoints
/// whose Service is gone deleted.
///
/// Pods are indexed once per pass by (namespace, label key, label value); a
/// Service looks only at the pods carrying its least common selector pair,
/// so a pass costs the pods' labels plus the Services' candidates, not
/// Services × pods.
fn endpoints(snap: &Snapshot, w: &mut Writes) {
    // Only the pairs some Service selects on are indexed (none without
    // Services): a pass over a fleet of batch pods costs a lookup a label.
    let mut by_label: HashMap<(&str, &str, &str), Vec<&Pod>> = HashMap::new();
    for svc in &snap.services {
        for (k, v) in &svc.object.spec.selector {
            let ns = svc.object.metadata.namespace.as_str();
            by_label.insert((ns, k.as_str(), v.as_str()), Vec::new());
        }
    }
    if !by_label.is_empty() {
        for p in &snap.pods {
            let m = &p.object.metadata;
            for (k, v) in &m.labels {
                if let Some(pods) =
                    by_label.get_mut(&(m.namespace.as_str(), k.as_str(), v.as_str()))
                {
                    pods.push(&p.object);
                }
            }
        }
    }
    let existing: HashMap<(&str, &str), &Stored<api::service::Endpoints>> = snap
        .endpoints
        .iter()
        .map(|e| {
            let m = &e.object.metadata;
            ((m.namespace.as_str(), m.name.as_str()), &**e)
        })
        .collect();
    let mut services = HashSet::new();
    for svc in &snap.services {
        let m = &svc.object.metadata;
        services.insert((m.namespace.as_str(), m.name.as_str()));
        let candidates = svc
            .object
            .spec
            .selector
            .iter()
            .map(|(k, v)| {
                by_label
                    .get(&(m.namespace.as_str(), k.as_str(), v.as_str()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|pods| pods.len())
            .unwrap_or_default();
        let subsets = endpoints_controller::subsets(&svc.object, candidates.iter().copied());
        let k = key(Kind::Endpoints, &m.namespace, &m.name);
        match existing.get(&(m.namespace.as_str(), m.name.as_str())) {
            None if snap.is_unreadable(Kind::Endpoints, &m.namespace, &m.name) => {}
            Some(stored) if stored.object.subsets == subsets => {}
            Some(stored) => {
                let mut e = stored.object.clone();
                e.subsets = subsets;
                e.metadata.resource_version = None;
                w.put_if(k, stored.mod_revision, encode(&e), Vec::new());
            }
            None => {
                let mut meta = api::ObjectMeta::named(&m.name);
                meta.namespace.clone_from(&m.namespace);
                meta.labels.clone_from(&m.labels);
                meta.uid = w.clock.uid();
                meta.creation_timestamp = Some(w.clock.rfc3339());
                let e = api::service::Endpoints {
                    api_version: "v1".into(),
                    kind: "Endpoints".into(),
                    metadata: meta,
                    subsets,
                };
                w.put_if(k, 0, encode(&e), Vec::new());
            }
        }
    }
    for e in &snap.endpoints {
        let m = &e.object.metadata;
        if !services.contains(&(m.namespace.as_str(), m.name.as_str()))
            && !snap.is_unreadable(Kind::Service, &m.namespace, &m.name)
        {
            let (k, rev) = key_of(Kind::Endpoints, e, m);
            w.delete_if(k, rev, Vec::new());
        }
    }
}

/// Whether `meta`'s controller is stored but unreadable: its children are
/// kept, not collected as orphans.
fn owner_unreadable(snap: &Snapshot, meta: &api::ObjectMeta) -> bool {
    meta.controller().is_some_and(|o| {
        Kind::parse(&o.kind).is_ok_and(|kind| snap.is_unreadable(kind, &meta.namespace, &o.name))
    })
}

fn collect_garbage(snap: &Snapshot, w: &mut Writes) {
    let live: HashSet<&str> = snap
        .deployments
        .iter()
        .map(|d| d.object.metadata.uid.as_str())
        .chain(
            snap.replica_sets
                .iter()
                .map(|r| r.object.metadata.uid.as_str()),
        )
        .chain(snap.jobs.iter().map(|j| j.object.metadata.uid.as_str()))
        .collect();
    for rs in &snap.replica_sets {
        if gc::is_orphan(&rs.object.metadata, &live) && !owner_unreadable(snap, &rs.object.metadata)
        {
            let (k, rev) = key_of(Kind::ReplicaSet, rs, &rs.object.metadata);
            w.delete_if(k, rev, Vec::new());
        }
    }
    for pod in &snap.pods {
        if gc::is_orphan(&pod.object.metadata, &live)
            && !owner_unreadable(snap, &pod.object.metadata)
        {
            w.delete_pod(pod, Vec::new());
        }
    }
}

/// Pods by the uid of their controller (built once per pass: every
/// controller below looks its pods up here rather than scanning them).
type PodsByOwner<'a> = HashMap<&'a str, Vec<&'a Pod>>;

fn pods_by_owner(snap: &Snapshot) -> PodsByOwner<'_> {
    let mut by: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in &snap.pods {
        if let Some(o) = p.object.metadata.controller() {
            by.entry(o.uid.as_str()).or_default().push(&p.object);
        }
    }
    by
}

fn deployments(snap: &Snapshot, pods: &PodsByOwner<'_>, now: SystemTime, w: &mut Writes) {
    let mut by_owner: HashMap<&str, Vec<&Stored<api::ReplicaSet>>> = HashMap::new();
    for r in &snap.replica_sets {
        if let Some(o) = r.object.metadata.controller() {
            by_owner.entry(o.uid.as_str()).or_default().push(r);
        }
    }
    for d in &snap.deployments {
        let dm = &d.object.metadata;
        let owned = by_owner.remove(dm.uid.as_str()).unwrap_or_default();
        let views: Vec<RsView<'_>> = owned
            .iter()
            .map(|r| {
                let of = pods.get(r.object.metadata.uid.as_str());
                let active = of.map_or(0, |ps| ps.iter().filter(|p| is_active(p)).count());
                let ready = of.map_or(0, |ps| {
                    ps.iter().filter(|p| is_active(p) && is_ready(p)).count()
                });
                RsView {
                    rs: &r.object,
                    pods: active as u32,
                    ready: ready as u32,
                }
            })
            .collect();
        let plan = deployment::reconcile(&d.object, &views, now);
        if let Some(mut rs) = plan.create {
            rs.metadata.uid = w.clock.uid();
            rs.metadata.creation_timestamp = Some(w.clock.rfc3339());
            rs.metadata.generation = 1;
            let msg = format!(
                "Scaled up replica set {} to {}",
                rs.metadata.name, rs.spec.replicas
            );
            let k = key(Kind::ReplicaSet, &rs.metadata.namespace, &rs.metadata.name);
            let ev = event_at(
                &w.clock,
                Kind::Deployment,
                dm,
                EventType::Normal,
                "ScalingReplicaSet",
                msg,
                SOURCE,
            );
            w.put_if(k, 0, encode(&rs), vec![ev]);
        }
        for u in plan.update {
            let Some(stored) = owned.iter().find(|r| r.object.metadata.name == u.name) else {
                continue;
            };
            let mut rs = stored.object.clone();
            let from = rs.spec.replicas;
            if from != u.replicas {
                rs.metadata.generation += 1;
            }
            rs.spec.replicas = u.replicas;
            rs.metadata
                .annotations
                .insert(REVISION_ANNOTATION.into(), u.revision.to_string());
            let mut extra = Vec::new();
            if from != u.replicas {
                let dir = if u.replicas > from { "up" } else { "down" };
                let msg = format!(
                    "Scaled {dir} replica set {} from {from} to {}",
                    u.name, u.replicas
                );
                extra.push(event_at(
                    &w.clock,
                    Kind::Deployment,
                    dm,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    msg,
                    SOURCE,
                ));
            }
            let (k, rev) = key_of(Kind::ReplicaSet, stored, &rs.metadata);
            w.put_if(k, rev, encode(&rs), extra);
        }
        for name in plan.delete {
            if let Some(stored) = owned.iter().find(|r| r.object.metadata.name == name) {
                let (k, rev) = key_of(Kind::ReplicaSet, stored, &stored.object.metadata);
                w.delete_if(k, rev, Vec::new());
            }
        }
        if let Some(status) = plan.status {
            let mut updated = d.object.clone();
            updated.status = Some(status);
            if let Some(revision) = views
                .iter()
                .find(|v| {
                    v.rs.metadata.labels.get(POD_TEMPLATE_HASH_LABEL)
                        == Some(&deployment::template_hash(&d.object.spec.template))
                })
                .map(|v| deployment::revision(v.rs))
            {
                updated
                    .metadata
                    .annotations
                    .insert(REVISION_ANNOTATION.into(), revision.to_string());
            }
            let (k, rev) = key_of(Kind::Deployment, d, dm);
            w.put_if(k, rev, encode(&updated), Vec::new());
        }
    }
}

/// Pods created in the last [`STARTING_FOR`] that do not run yet (see
/// [`STARTING_MAX`]).
fn starting(snap: &Snapshot, now: SystemTime) -> usize {
    snap.pods
        .iter()
        .map(|p| &p.object)
        .filter(|p| {
            is_active(p)
                && matches!(
                    p.status.as_ref().map(|s| s.phase),
                    None | Some(PodPhase::Pending | PodPhase::Scheduled)
                )
        })
        .filter(|p| {
            parse_time(p.metadata.creation_timestamp.as_deref()).is_some_and(|created| {
                now.duration_since(created)
                    .map_or(true, |age| age < STARTING_FOR)
            })
        })
        .count()
}

fn replica_sets(snap: &Snapshot, pods: &PodsByOwner<'_>, may_create: &mut usize, w: &mut Writes) {
    let stored_pods: HashMap<(&str, &str), &Stored<Pod>> = snap
        .pods
        .iter()
        .map(|p| {
            (
                (
                    p.object.metadata.namespace.as_str(),
                    p.object.metadata.name.as_str(),
                ),
                &**p,
            )
        })
        .collect();
    let mut budget = PASS_POD_BUDGET;
    for rs in &snap.replica_sets {
        let m = &rs.object.metadata;
        let owned = pods.get(m.uid.as_str()).cloned().unwrap_or_default();
        let plan = replicaset::reconcile(&rs.object, &owned);
        let creates = (plan.create as usize)
            .min(BURST_REPLICAS)
            .min(budget)
            .min(*may_create);
        budget -= creates;
        *may_create -= creates;
        let deletes = plan.delete.len().min(BURST_REPLICAS).min(budget);
        budget -= deletes;
        for _ in 0..creates {
            let owner = OwnerReference {
                kind: "ReplicaSet".into(),
                name: m.name.clone(),
                uid: m.uid.clone(),
                controller: true,
            };
            let mut pod = pod_from_template(
                &rs.object.spec.template,
                &m.namespace,
                format!("{}-{}", m.name, w.clock.suffix()),
                owner,
            );
            pod.metadata.uid = w.clock.uid();
            pod.metadata.creation_timestamp = Some(w.clock.rfc3339());
            pod.metadata.generation = 1;
            let msg = format!("Created pod: {}", pod.metadata.name);
            let ev = event_at(
                &w.clock,
                Kind::ReplicaSet,
                m,
                EventType::Normal,
                "SuccessfulCreate",
                msg,
                SOURCE,
            );
            w.create_pod(pod, vec![ev]);
        }
        for name in plan.delete.iter().take(deletes) {
            if let Some(p) = stored_pods.get(&(m.namespace.as_str(), name.as_str())) {
                let msg = format!("Deleted pod: {name}");
                let ev = event_at(
                    &w.clock,
                    Kind::ReplicaSet,
                    m,
                    EventType::Normal,
                    "SuccessfulDelete",
                    msg,
                    SOURCE,
                );
                w.delete_pod(p, vec![ev]);
            }
        }
        if let Some(status) = plan.status {
            let mut updated = rs.object.clone();
            updated.status = Some(status);
            let (k, rev) = key_of(Kind::ReplicaSet, rs, m);
            w.put_if(k, rev, encode(&updated), Vec::new());
        }
    }
}

/// Every PodDisruptionBudget's status, written when it changes.
fn disruption_budgets(snap: &Snapshot, w: &mut Writes) {
    for stored in &snap.budgets {
        let status = disruption::status(&stored.object, snap.pods.iter().map(|p| &p.object));
        if stored.object.status.as_ref() == Some(&status) {
            continue;
        }
        let mut updated = stored.object.clone();
        updated.status = Some(status);
        updated.metadata.resource_version = None;
        let (k, rev) = key_of(Kind::PodDisruptionBudget, stored, &stored.object.metadata);
        w.put_if(k, rev, encode(&updated), Vec::new());
    }
}

/// The Job controller: counts finished pods (status and marks in one
/// transaction), creates and deletes pods, deletes Jobs past their TTL.
fn jobs(
    snap: &Snapshot,
    pods: &PodsByOwner<'_>,
    now: SystemTime,
    may_create: &mut usize,
    w: &mut Writes,
) {
    let stored_pods: HashMap<&str, &Stored<Pod>> = snap
        .pods
        .iter()
        .map(|p| (p.object.metadata.uid.as_str(), &**p))
        .collect();
    let mut budget = PASS_POD_BUDGET;
    for stored in &snap.jobs {
        let job = &stored.object;
        let m = &job.metadata;
        let owned = pods.get(m.uid.as_str()).cloned().unwrap_or_default();
        let plan = job_controller::reconcile(job, &owned, now);
        let (job_key, job_rev) = key_of(Kind::Job, stored, m);
        if plan.delete_job {
            // Its pods follow through garbage collection.
            w.delete_if(job_key, job_rev, Vec::new());
            continue;
        }
        let events: Vec<Op> = plan
            .events
            .iter()
            .map(|(warning, reason, message)| {
                let kind = if *warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                event_at(
                    &w.clock,
                    Kind::Job,
                    m,
                    kind,
                    reason,
                    message.clone(),
                    SOURCE,
                )
            })
            .collect();
        if let Some(status) = plan.status {
            // The status and the marks on the pods it counts, at once.
            let mut updated = job.clone();
            updated.status = Some(status);
            updated.metadata.resource_version = None;
            let mut compares = vec![unchanged(job_key.clone(), job_rev)];
            let mut success = vec![Op::Put {
                key: job_key.clone(),
                value: encode(&updated),
            }];
            // Every pod the status counts is marked with it, or nothing is
            // written: a count without its mark would be counted again.
            let counted: Vec<(&Pod, &Stored<Pod>, &str)> = plan
                .count
                .iter()
                .filter_map(|(name, what)| {
                    let p = owned.iter().find(|p| &p.metadata.name == name)?;
                    let sp = stored_pods.get(p.metadata.uid.as_str())?;
                    Some((*p, *sp, *what))
                })
                .collect();
            let keys: Vec<String> = counted
                .iter()
                .map(|(p, _, _)| key(Kind::Pod, &p.metadata.namespace, &p.metadata.name))
                .collect();
            if counted.len() != plan.count.len() || keys.iter().any(|k| w.touched.contains(k)) {
                continue;
            }
            for (p, sp, what) in counted {
                let (k, rev) = key_of(Kind::Pod, sp, &p.metadata);
                w.claim(&k);
                let mut marked = p.clone();
                marked.metadata.resource_version = None;
                marked
                    .metadata
                    .annotations
                    .insert(job_controller::COUNTED_ANNOTATION.into(), what.into());
                compares.push(unchanged(k.clone(), rev));
                success.push(Op::Put {
                    key: k,
                    value: encode(&marked),
                });
            }
            success.extend(events);
            if w.claim(&job_key) {
                w.txns.push(Txn {
                    compares,
                    success,
                    failure: Vec::new(),
                });
            }
        }
        let creates = plan
            .create
            .len()
            .min(BURST_REPLICAS)
            .min(budget)
            .min(*may_create);
        budget -= creates;
        *may_create -= creates;
        for index in plan.create.iter().take(creates) {
            let owner = OwnerReference {
                kind: "Job".into(),
                name: m.name.clone(),
                uid: m.uid.clone(),
                controller: true,
            };
            let name = match index {
                Some(i) => format!("{}-{i}-{}", m.name, w.clock.suffix()),
                None => format!("{}-{}", m.name, w.clock.suffix()),
            };
            let mut pod = pod_from_template(&job.spec.template, &m.namespace, name, owner);
            if let Some(i) = index {
                job_controller::index_pod(&mut pod, *i);
            }
            pod.metadata.uid = w.clock.uid();
            pod.metadata.creation_timestamp = Some(w.clock.rfc3339());
            pod.metadata.generation = 1;
            w.create_pod(pod, Vec::new());
        }
        for (name, why) in &plan.delete {
            let Some(p) = owned.iter().find(|p| &p.metadata.name == name) else {
                continue;
            };
            if let Some(sp) = stored_pods.get(p.metadata.uid.as_str()) {
                let ev = event_at(
                    &w.clock,
                    Kind::Job,
                    m,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod {name}: {why}"),
                    SOURCE,
                );
                w.delete_pod(sp, vec![ev]);
            }
        }
    }
}

#[derive(Serialize)]
struct Fingerprint<'a> {
    name: &'a str,
    ready: bool,
    unschedulable: bool,
    allocatable: (u64, u64),
    requested: (u64, u64),
    ports: usize,
    labels: &'a std::collections::BTreeMap<String, String>,
}

/// A hash of what decides whether a pod fits somewhere.
fn nodes_fingerprint(views: &[NodeView]) -> u64 {
    let fp: Vec<Fingerprint<'_>> = views
        .iter()
        .map(|v| Fingerprint {
            name: &v.name,
            ready: v.ready,
            unschedulable: v.unschedulable,
            allocatable: (v.allocatable.cpu_millis, v.allocatable.memory_bytes),
            requested: (v.requested.cpu_millis, v.requested.memory_bytes),
            ports: v.host_ports.len(),
            labels: &v.labels,
        })
        .collect();
    fnv1a(&serde_json::to_vec(&fp).unwrap_or_default())
}

/// Binds `pod` to `node`: `Scheduled` there, counted on the node's view
/// for the rest of the pass; returns the `Scheduled` event.
fn bind(
    clock: &Clock,
    pod: &mut Pod,
    node: &str,
    views: &mut [NodeView],
    index: &HashMap<String, usize>,
) -> Op {
    pod.spec.node_name = Some(node.to_string());
    pod.status = Some(PodStatus {
        phase: PodPhase::Scheduled,
        ..PodStatus::default()
    });
    if let Some(i) = index.get(node) {
        views[*i].assume(pod);
    }
    event_at(
        clock,
        Kind::Pod,
        &pod.metadata,
        EventType::Normal,
        "Scheduled",
        format!("Successfully assigned {} to {node}", pod.key()),
        "scheduler",
    )
}

fn schedule_pending(
    snap: &Snapshot,
    policy: ScorePolicy,
    memory: &mut SchedulerMemory,
    now: SystemTime,
    w: &mut Writes,
) {
    let mut pending: Vec<&Stored<Pod>> = snap
        .pods
        .iter()
        .map(|p| &**p)
        .filter(|p| p.object.spec.node_name.is_none() && is_active(&p.object))
        .collect();
    pending.sort_by(|a, b| {
        let key = |p: &Stored<Pod>| (p.object.metadata.creation_timestamp.clone(), p.mod_revision);
        key(a).cmp(&key(b))
    });
    let live: HashSet<&str> = pending
        .iter()
        .map(|p| p.object.metadata.uid.as_str())
        .collect();
    memory
        .unschedulable
        .retain(|uid, _| live.contains(uid.as_str()));
    memory
        .first_seen
        .retain(|uid, _| live.contains(uid.as_str()));
    for uid in &live {
        memory.first_seen.entry((*uid).to_owned()).or_insert(now);
    }
    if pending.is_empty() && w.created.is_empty() {
        // Nothing to place: the nodes' views are not needed.
        return;
    }
    // Terminating pods hold their resources and host ports until the
    // worker reports their containers gone.
    let bound = || {
        snap.pods
            .iter()
            .filter(|p| p.object.spec.node_name.is_some() && !is_finished(&p.object))
    };
    memory.demands.refresh(bound().map(|p| &**p));
    let demands = &memory.demands;
    let uncached: Vec<(&str, Demand)> = bound()
        .filter(|p| p.object.metadata.uid.is_empty())
        .filter_map(|p| Some((p.object.spec.node_name.as_deref()?, Demand::of(&p.object))))
        .collect();
    let mut views = node_views_of(
        snap.nodes.iter().map(|n| &n.object),
        bound()
            .filter_map(|p| {
                let node = p.object.spec.node_name.as_deref()?;
                Some((node, demands.get(&p.object.metadata.uid)?))
            })
            .chain(uncached.iter().map(|(node, d)| (*node, d))),
    );
    let index: HashMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    let fingerprint = nodes_fingerprint(&views);
    let mut batch = Txn::default();
    for stored in pending {
        let pod = &stored.object;
        if memory.unschedulable.get(&pod.metadata.uid) == Some(&fingerprint) {
            continue;
        }
        let (k, rev) = key_of(Kind::Pod, stored, &pod.metadata);
        match schedule(pod, &views, policy) {
            Ok(binding) => {
                memory.unschedulable.remove(&pod.metadata.uid);
                if let Some(seen) = memory.first_seen.remove(&pod.metadata.uid) {
                    memory.bound_first_seen.push(seen);
                }
                let mut bound = pod.clone();
                let scheduled = bind(&w.clock, &mut bound, &binding.node, &mut views, &index);
                if !w.claim(&k) {
                    continue;
                }
                batch.compares.push(unchanged(k.clone(), rev));
                batch.success.push(Op::Put {
                    key: k,
                    value: encode(&bound),
                });
                batch.success.push(scheduled);
                if batch.compares.len() >= BINDINGS_PER_TXN {
                    w.txns.push(std::mem::take(&mut batch));
                }
            }
            Err(why) => {
                memory
                    .unschedulable
                    .insert(pod.metadata.uid.clone(), fingerprint);
                let mut updated = pod.clone();
                updated.status = Some(PodStatus {
                    phase: PodPhase::Pending,
                    reason: Some("Unschedulable".into()),
                    message: Some(why.to_string()),
                    ..PodStatus::default()
                });
                let ev = event_at(
                    &w.clock,
                    Kind::Pod,
                    &pod.metadata,
                    EventType::Warning,
                    "FailedScheduling",
                    why.to_string(),
                    "scheduler",
                );
                w.put_if(k, rev, encode(&updated), vec![ev]);
            }
        }
    }
    if !batch.compares.is_empty() {
        w.txns.push(batch);
    }
    // This pass's new pods, after the older pending ones.
    for (mut pod, mut extra) in std::mem::take(&mut w.created) {
        if let Ok(binding) = schedule(&pod, &views, policy) {
            extra.push(bind(&w.clock, &mut pod, &binding.node, &mut views, &index));
        }
        // One that fits nowhere is written unbound: the next pass says why.
        let k = key(Kind::Pod, &pod.metadata.namespace, &pod.metadata.name);
        w.put_if(k, 0, encode(&pod), extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Unreadable;
    use api::ReplicaSet;
    use api::service::{Endpoints, Service};
    use serde_json::json;
    use std::sync::Arc;

    /// Heartbeats alone are not worth a pass; anything else is: a pod
    /// written again, a node's readiness, a node added.
    #[test]
    fn only_changes_beyond_heartbeats_are_worth_a_pass() {
        let node: api::Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "resourceVersion": "3"},
            "spec": {},
            "status": {
                "address": "n1:1", "hostIp": "10.0.0.1",
                "capacity": {"cpuMillis": 1000, "memoryBytes": 1000},
                "allocatable": {"cpuMillis": 1000, "memoryBytes": 1000},
                "usage": {"cpuMillis": 1, "memoryBytes": 1},
                "conditions": [{"type": "Ready", "status": true, "reason": "Ready", "message": ""}],
                "runtimeVersion": "test",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z"
            }
        }))
        .expect("node");
        let last = Snapshot {
            pods: vec![stored(ready_pod(), 2)],
            nodes: vec![stored(node.clone(), 3)],
            ..Snapshot::default()
        };
        let same = Snapshot {
            revision: 9,
            ..last.clone()
        };
        assert!(!worth_a_pass(&last, &same), "nothing changed");

        let mut beat = node.clone();
        beat.metadata.resource_version = Some("9".into());
        if let Some(s) = beat.status.as_mut() {
            s.last_heartbeat_time = Some("2026-01-01T00:00:10Z".into());
            s.usage.cpu_millis = 500;
        }
        let heartbeat = Snapshot {
            nodes: vec![stored(beat.clone(), 9)],
            ..last.clone()
        };
        assert!(!worth_a_pass(&last, &heartbeat), "a heartbeat");

        let mut down = beat;
        if let Some(s) = down.status.as_mut() {
            s.conditions[0].status = false;
        }
        let not_ready = Snapshot {
            nodes: vec![stored(down, 10)],
            ..last.clone()
        };
        assert!(worth_a_pass(&last, &not_ready), "a node NotReady");

        let rewritten = Snapshot {
            pods: vec![stored(ready_pod(), 11)],
            ..last.clone()
        };
        assert!(worth_a_pass(&last, &rewritten), "a pod written again");

        let mut more = last.clone();
        more.nodes.push(stored(node, 12));
        assert!(worth_a_pass(&last, &more), "a node added");
    }

    fn stored<T>(object: T, mod_revision: i64) -> Arc<Stored<T>> {
        Arc::new(Stored {
            object,
            mod_revision,
        })
    }

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}
        }))
        .expect("service")
    }

    fn ready_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "default", "uid": "ua", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "busybox"}]},
            "status": {
                "phase": "Running", "hostIp": "10.0.0.1",
                "hostPorts": [{"container": "main", "containerPort": 80, "hostPort": 8080, "protocol": "TCP"}],
                "containerStatuses": [{"name": "main", "state": {"running": {"startedAt": "t"}}, "ready": true, "restartCount": 0, "image": "busybox"}]
            }
        }))
        .expect("pod")
    }

    /// The ops of the pass's transactions on `key`.
    fn ops_on<'a>(w: &'a Writes, key: &str) -> Vec<&'a Op> {
        w.txns
            .iter()
            .flat_map(|t| &t.success)
            .filter(|op| match op {
                Op::Put { key: k, .. } | Op::Delete { key: k } => k == key,
                _ => false,
            })
            .collect()
    }

    fn pass(snap: &Snapshot) -> Writes {
        plan(
            snap,
            ScorePolicy::Spread,
            &mut SchedulerMemory::default(),
            Clock::system(),
        )
    }

    #[test]
    fn a_service_gets_endpoints_once_and_loses_them_with_itself() {
        let key = "/registry/endpoints/default/web";
        let mut snap = Snapshot {
            revision: 5,
            pods: vec![stored(ready_pod(), 3)],
            services: vec![stored(service(), 4)],
            ..Snapshot::default()
        };
        let w = pass(&snap);
        let ops = ops_on(&w, key);
        let [Op::Put { value, .. }] = ops.as_slice() else {
            panic!("one put of the Endpoints: {ops:?}");
        };
        let written: Endpoints = serde_json::from_str(value).expect("endpoints");
        assert_eq!(written.subsets[0].addresses[0].ip, "10.0.0.1");
        assert_eq!(written.subsets[0].ports[0].port, 8080);
        assert!(!written.metadata.uid.is_empty());

        // Stored and unchanged: the next pass writes nothing.
        snap.endpoints = vec![stored(written.clone(), 6)];
        assert!(ops_on(&pass(&snap), key).is_empty());

        // The pod stops being ready: the Endpoints are rewritten.
        let mut not_ready = ready_pod();
        if let Some(s) = not_ready.status.as_mut() {
            s.container_statuses[0].ready = false;
        }
        snap.pods = vec![stored(not_ready, 7)];
        let w = pass(&snap);
        let ops = ops_on(&w, key);
        let [Op::Put { value, .. }] = ops.as_slice() else {
            panic!("one put: {ops:?}");
        };
        let rewritten: Endpoints = serde_json::from_str(value).expect("endpoints");
        assert!(rewritten.subsets[0].addresses.is_empty());
        assert_eq!(rewritten.subsets[0].not_ready_addresses.len(), 1);
        assert_eq!(rewritten.metadata.uid, written.metadata.uid, "same object");

        // The Service goes: so do its Endpoints.
        snap.services.clear();
        let w = pass(&snap);
        assert!(matches!(ops_on(&w, key).as_slice(), [Op::Delete { .. }]));
    }

    #[test]
    fn a_service_selects_by_every_pair_of_its_selector_in_its_own_namespace() {
        let mut narrow = service();
        narrow.metadata.name = "narrow".into();
        narrow.spec.selector.insert("tier".into(), "front".into());
        let mut other_ns = service();
        other_ns.metadata.namespace = "prod".into();
        let mut front = ready_pod();
        front.metadata.name = "b".into();
        front.metadata.uid = "ub".into();
        front.metadata.labels.insert("tier".into(), "front".into());
        let snap = Snapshot {
            revision: 5,
            pods: vec![stored(ready_pod(), 3), stored(front, 3)],
            services: vec![stored(service(), 4), stored(narrow, 4), stored(other_ns, 4)],
            ..Snapshot::default()
        };
        let w = pass(&snap);
        let pods_of = |key: &str| -> Vec<String> {
            let ops = ops_on(&w, key);
            let [Op::Put { value, .. }] = ops.as_slice() else {
                panic!("one put of {key}: {ops:?}");
            };
            let e: Endpoints = serde_json::from_str(value).expect("endpoints");
            e.subsets
                .iter()
                .flat_map(|s| &s.addresses)
                .map(|a| a.target_ref.name.clone())
                .collect()
        };
        assert_eq!(pods_of("/registry/endpoints/default/web"), ["a", "b"]);
        assert_eq!(pods_of("/registry/endpoints/default/narrow"), ["b"]);
        assert!(pods_of("/registry/endpoints/prod/web").is_empty());
    }

    /// An owner that is stored but unreadable is not a deleted one: its
    /// pods are kept, and a Service's Endpoints likewise.
    #[test]
    fn what_an_unreadable_object_owns_is_not_collected() {
        let mut pod = ready_pod();
        pod.metadata.owner_references.push(api::OwnerReference {
            kind: "ReplicaSet".into(),
            name: "web-1".into(),
            uid: "rs-uid".into(),
            controller: true,
        });
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"}, "subsets": []
        }))
        .expect("endpoints");
        let mut snap = Snapshot {
            revision: 5,
            pods: vec![stored(pod, 3)],
            endpoints: vec![stored(endpoints, 4)],
            ..Snapshot::default()
        };
        let (pod_key, ep_key) = (
            "/registry/pods/default/a",
            "/registry/endpoints/default/web",
        );
        let w = pass(&snap);
        assert_eq!(ops_on(&w, pod_key).len(), 1, "an orphan is collected");
        assert_eq!(
            ops_on(&w, ep_key).len(),
            1,
            "Endpoints without a Service go"
        );

        snap.unreadable = [
            "/registry/replicasets/default/web-1",
            "/registry/services/default/web",
        ]
        .map(|key| Unreadable {
            key: key.into(),
            error: "bad".into(),
        })
        .into();
        let w = pass(&snap);
        assert!(ops_on(&w, pod_key).is_empty());
        assert!(ops_on(&w, ep_key).is_empty());
    }

    /// A scale-up by thousands proceeds in bounded steps: one pass creates
    /// at most [`BURST_REPLICAS`] pods of one ReplicaSet and
    /// [`PASS_POD_BUDGET`] in all.
    #[test]
    fn a_pass_creates_a_bounded_number_of_pods() {
        let rs = |name: &str, replicas: u32| -> ReplicaSet {
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "c", "image": "i"}]}}
                }
            }))
            .expect("a ReplicaSet")
        };
        let created = |w: &Writes, name: &str| {
            w.txns
                .iter()
                .flat_map(|t| &t.success)
                .filter(|op| {
                    matches!(op, Op::Put { key, .. }
                        if key.starts_with(&format!("/registry/pods/default/{name}-")))
                })
                .count()
        };
        let one = Snapshot {
            replica_sets: vec![stored(rs("big", 4_000_000_000), 2)],
            ..Snapshot::default()
        };
        assert_eq!(created(&pass(&one), "big"), BURST_REPLICAS);
        let many = Snapshot {
            replica_sets: (0..6)
                .map(|i| stored(rs(&format!("rs{i}"), 1_000), 2))
                .collect(),
            ..Snapshot::default()
        };
        let w = pass(&many);
        let total: usize = (0..6).map(|i| created(&w, &format!("rs{i}"))).sum();
        assert_eq!(total, PASS_POD_BUDGET);
    }

    /// Pods written raw, without a uid, two in one transaction (so at one
    /// revision): each still counts for what it requests, not for what
    /// the other does.
    #[test]
    fn pods_without_a_uid_count_for_their_own_requests() {
        let node: api::Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {},
            "status": {
                "address": "n1:1", "hostIp": "10.0.0.1",
                "capacity": {"cpuMillis": 1000, "memoryBytes": 1_000_000_000u64},
                "allocatable": {"cpuMillis": 1000, "memoryBytes": 1_000_000_000u64},
                "usage": {"cpuMillis": 0, "memoryBytes": 0},
                "conditions": [{"type": "Ready", "status": true, "reason": "Ready", "message": ""}],
                "runtimeVersion": "test"
            }
        }))
        .expect("node");
        let pod = |name: &str, cpu: &str, node: Option<&str>| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": ""},
                "spec": {"nodeName": node, "containers": [
                    {"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}
                ]},
                "status": {"phase": "Running"}
            }))
            .expect("pod")
        };
        let mut waiting = pod("waiting", "500m", None);
        waiting.metadata.uid = "uw".into();
        waiting.status = None;
        let snap = Snapshot {
            nodes: vec![stored(node, 1)],
            pods: vec![
                stored(pod("small", "100m", Some("n1")), 5),
                stored(pod("large", "900m", Some("n1")), 5),
                stored(waiting, 6),
            ],
            ..Snapshot::default()
        };
        let w = pass(&snap);
        let ops = ops_on(&w, "/registry/pods/default/waiting");
        let [Op::Put { value, .. }] = ops.as_slice() else {
            panic!("one write of the waiting pod: {ops:?}");
        };
        assert!(value.contains("Insufficient cpu"), "{value}");
    }

    /// A burst is made as fast as the pods before it start: pods created
    /// lately that do not run yet hold the window; running ones, and ones
    /// too old to count (stuck), do not.
    #[test]
    fn pods_are_made_only_while_few_are_starting() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
            "spec": {
                "replicas": 500,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "i"}]}}
            }
        }))
        .expect("a ReplicaSet");
        let made = |others: Vec<Arc<Stored<Pod>>>| {
            let snap = Snapshot {
                replica_sets: vec![stored(rs.clone(), 2)],
                pods: others,
                ..Snapshot::default()
            };
            pass(&snap)
                .txns
                .iter()
                .flat_map(|t| &t.success)
                .filter(|op| {
                    matches!(op, Op::Put { key, .. } if key.starts_with("/registry/pods/default/web-"))
                })
                .count()
        };
        let others = |phase: PodPhase, age: Duration| -> Vec<Arc<Stored<Pod>>> {
            let created = humantime::format_rfc3339_seconds(SystemTime::now() - age).to_string();
            (0..STARTING_MAX - 100)
                .map(|i| {
                    let mut p = Pod::new(format!("batch-{i}"), api::PodSpec::default());
                    p.metadata.uid = format!("u{i}");
                    p.metadata.creation_timestamp = Some(created.clone());
                    p.status = Some(PodStatus {
                        phase,
                        ..PodStatus::default()
                    });
                    stored(p, 3)
                })
                .collect()
        };
        let now = Duration::ZERO;
        assert_eq!(
            made(others(PodPhase::Scheduled, now)),
            100,
            "the window is nearly full"
        );
        assert_eq!(made(others(PodPhase::Running, now)), 500, "they run");
        let stuck = STARTING_FOR + Duration::from_secs(1);
        assert_eq!(
            made(others(PodPhase::Pending, stuck)),
            500,
            "too old to hold the window"
        );
    }
}

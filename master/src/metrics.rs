//! What a master reports about itself and, on the leader, about the cluster.
//!
//! ```text
//! every master: own_points() = process CPU/memory + its own Raft figures ─┬─▶ Prometheus /metrics
//! leader, every interval (leader::collector):                             │
//!   figures of every master (Master.figures) + cluster_points(snapshot)  ─┴─▶ MetricsStore of every
//!   + annotations from Events                                                master (Master.record_metrics)
//! ```
//!
//! Followers answer with their own Raft figures rather than the leader's
//! view of them, so a member whose log diverges shows a diverging line.
//! The pure parts ([`master_points`], [`cluster_points`], [`annotations`])
//! are functions of their inputs; [`MasterMetrics`] holds the little state
//! (the CPU sampler, the latencies observed since the last collection, the
//! latest cluster figures).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::metrics::{self as m, Annotation, Point};
use api::{EventRecord, PodPhase};
use grafana_datasource::MetricsStore;
use kvs::api::NodeStatus;
use kvs::raft::Role;

use crate::snapshot::Snapshot;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The figures of one master from its own status and process.
pub fn master_points(
    status: &NodeStatus,
    process: Option<ProcessSample>,
    now_ms: i64,
) -> Vec<Point> {
    let tags = [("master", status.name.as_str())];
    let p = |metric: &str, value: f64| Point::new(metric, &tags, now_ms, value);
    let mut points = vec![
        p(m::RAFT_TERM, status.term as f64),
        p(m::RAFT_COMMIT_INDEX, status.commit_index as f64),
        p(m::RAFT_APPLIED_INDEX, status.applied_index as f64),
        p(m::RAFT_SNAPSHOT_INDEX, status.snapshot_index as f64),
        p(
            m::RAFT_LEADER,
            f64::from(u8::from(status.role == Role::Leader)),
        ),
        p(m::KV_KEYS, status.keys as f64),
        p(m::KV_BYTES, status.bytes as f64),
        p(m::KV_QUOTA_BYTES, status.quota_bytes as f64),
    ];
    for member in &status.members {
        let incarnation = member.id.to_string();
        points.push(Point::new(
            m::RAFT_MEMBER,
            &[
                ("master", status.name.as_str()),
                ("member", member.name.as_str()),
                ("incarnation", incarnation.as_str()),
                ("voter", if member.voter { "true" } else { "false" }),
            ],
            now_ms,
            1.0,
        ));
    }
    if let Some(epoch) = &status.epoch {
        points.push(p(m::CLUSTER_EPOCH, epoch.number as f64));
    }
    if let Some(age) = status.last_export_age_ms {
        points.push(p(m::SNAPSHOT_EXPORT_AGE, age as f64 / 1000.0));
    }
    if let Some(process) = process {
        if let Some(cores) = process.cpu_cores {
            points.push(p(m::MASTER_CPU, cores));
        }
        points.push(p(m::MASTER_MEMORY, process.rss_bytes as f64));
    }
    points
}

/// A summary of latencies observed over one collection interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// How many.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_s: f64,
    /// The largest, in seconds.
    pub max_s: f64,
}

impl Summary {
    /// Adds one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        self.count += 1;
        self.sum_s += s;
        self.max_s = self.max_s.max(s);
    }

    fn points(&self, metric: &str, now_ms: i64) -> Vec<Point> {
        if self.count == 0 {
            return Vec::new();
        }
        vec![
            Point::new(
                metric,
                &[("stat", "avg")],
                now_ms,
                self.sum_s / self.count as f64,
            ),
            Point::new(metric, &[("stat", "max")], now_ms, self.max_s),
        ]
    }
}

/// Durations observed over one collection interval, kept whole for their
/// quantiles (at most [`Samples::CAP`]; a larger interval keeps its first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    seconds: Vec<f64>,
}

impl Samples {
    /// The most kept per interval (a thousand nodes probed every 50 ms for
    /// 10 s is 200,000).
    pub const CAP: usize = 200_000;

    /// Adds one observation.
    pub fn observe(&mut self, d: Duration) {
        if self.seconds.len() < Self::CAP {
            self.seconds.push(d.as_secs_f64());
        }
    }

    /// The `q` quantile (0 ≤ q ≤ 1) by nearest rank; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied()
    }

    fn points(&self, metric: &str, now_ms: i64) -> Vec<Point> {
        [("p50", 0.5), ("p99", 0.99), ("max", 1.0)]
            .iter()
            .filter_map(|(stat, q)| {
                self.quantile(*q)
                    .map(|v| Point::new(metric, &[("stat", stat)], now_ms, v))
            })
            .collect()
    }
}

fn phase_name(phase: PodPhase) -> &'static str {
    match phase {
        PodPhase::Pending => "Pending",
        PodPhase::Scheduled => "Scheduled",
        PodPhase::Running => "Running",
        PodPhase::Succeeded => "Succeeded",
        PodPhase::Failed => "Failed",
        PodPhase::Unknown => "Unknown",
    }
}

/// The cluster's figures from one snapshot and the latencies of the interval.
/// Every phase and both readiness values get a point, zeros included, so a
/// graph drops to zero rather than stopping.
pub fn cluster_points(
    snap: &Snapshot,
    scheduling: Summary,
    probes: Summary,
    now_ms: i64,
) -> Vec<Point> {
    let mut phases: BTreeMap<&str, u64> = [
        PodPhase::Pending,
        PodPhase::Scheduled,
        PodPhase::Running,
        PodPhase::Succeeded,
        PodPhase::Failed,
        PodPhase::Unknown,
    ]
    .into_iter()
    .map(|p| (phase_name(p), 0))
    .collect();
    for pod in &snap.pods {
        let phase = pod
            .object
            .status
            .as_ref()
            .map(|s| s.phase)
            .unwrap_or_default();
        *phases.entry(phase_name(phase)).or_default() += 1;
    }
    let mut points: Vec<Point> = phases
        .into_iter()
        .map(|(phase, n)| Point::new(m::PODS, &[("phase", phase)], now_ms, n as f64))
        .collect();
    let ready = snap.nodes.iter().filter(|n| n.object.is_ready()).count();
    let not_ready = snap.nodes.len() - ready;
    points.push(Point::new(
        m::NODES,
        &[("status", "Ready")],
        now_ms,
        ready as f64,
    ));
    points.push(Point::new(
        m::NODES,
        &[("status", "NotReady")],
        now_ms,
        not_ready as f64,
    ));
    let (cpu_millis, memory): (u64, u64) = snap
        .nodes
        .iter()
        .filter_map(|n| n.object.status.as_ref())
        .fold((0, 0), |(c, mem), s| {
            (c + s.usage.cpu_millis, mem + s.usage.memory_bytes)
        });
    points.push(Point::new(
        m::PODS_CPU,
        &[],
        now_ms,
        cpu_millis as f64 / 1000.0,
    ));
    points.push(Point::new(m::PODS_MEMORY, &[], now_ms, memory as f64));
    points.push(Point::new(
        m::UNREADABLE_OBJECTS,
        &[],
        now_ms,
        snap.unreadable.len() as f64,
    ));
    points.extend(scheduling.points(m::SCHEDULING_LATENCY, now_ms));
    points.extend(probes.points(m::PROBE_RTT, now_ms));
    points
}

/// The Event reasons shown as annotations on the dashboard: node readiness,
/// evictions from unreachable nodes, and rollouts (a Deployment scaling its
/// ReplicaSets). Leader elections are annotated by the collector itself.
pub const ANNOTATED_REASONS: &[&str] = &[
    "NodeNotReady",
    "NodeReady",
    "NodeUnreachable",
    "ScalingReplicaSet",
];

/// Annotations for the events not in `seen` whose reason is annotated;
/// adds them to `seen`.
pub fn annotations(events: &[EventRecord], seen: &mut HashSet<String>) -> Vec<Annotation> {
    let mut out = Vec::new();
    for e in events {
        if !ANNOTATED_REASONS.contains(&e.reason.as_str()) || seen.contains(&e.metadata.name) {
            continue;
        }
        seen.insert(e.metadata.name.clone());
        let time_ms = humantime::parse_rfc3339_weak(&e.timestamp)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or_else(now_ms, |d| d.as_millis() as i64);
        out.push(Annotation {
            time_ms,
            title: e.reason.clone(),
            text: e.message.clone(),
            tags: vec![
                format!("kind:{}", e.involved_object.kind),
                format!("name:{}", e.involved_object.name),
            ],
        });
    }
    out.sort_by_key(|a| a.time_ms);
    out
}

/// CPU and memory of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// CPU used since the previous sample, in cores; `None` on the first.
    pub cpu_cores: Option<f64>,
    /// Resident memory.
    pub rss_bytes: u64,
}

/// Samples this process' CPU time and memory from `/proc/self`.
#[derive(Debug, Default)]
pub struct ProcessSampler {
    last: Option<(Instant, f64)>,
}

/// Linux reports CPU time in clock ticks of 1/100 s on every architecture
/// mkube runs on (`USER_HZ`, fixed by the kernel ABI).
const TICKS_PER_SECOND: f64 = 100.0;

impl ProcessSampler {
    /// The next sample; `None` where `/proc` cannot be read.
    pub fn sample(&mut self) -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let cpu_s = (utime + stime) / TICKS_PER_SECOND;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())?;
        let now = Instant::now();
        let cpu_cores = self.last.and_then(|(at, before)| {
            let wall = now.duration_since(at).as_secs_f64();
            (wall > 0.0).then(|| ((cpu_s - before) / wall).max(0.0))
        });
        self.last = Some((now, cpu_s));
        Some(ProcessSample {
            cpu_cores,
            rss_bytes: rss_kib * 1024,
        })
    }
}

/// What the collector of the current leadership leaves for the Prometheus page.
#[derive(Debug, Default)]
struct Shared {
    sampler: ProcessSampler,
    scheduling: Summary,
    probes: Summary,
    probe_intervals: Samples,
    cluster: Vec<Point>,
}

/// One master's metrics state (see the module doc).
pub struct MasterMetrics {
    name: String,
    node: kvs::node::Node,
    store: Arc<dyn MetricsStore>,
    masters: BTreeMap<String, String>,
    shared: Mutex<Shared>,
}

impl MasterMetrics {
    /// Metrics of the master running `node`, written to `store`; `masters`
    /// (name → address) are every master, this one included.
    pub fn new(
        name: String,
        node: kvs::node::Node,
        store: Arc<dyn MetricsStore>,
        masters: BTreeMap<String, String>,
    ) -> Arc<MasterMetrics> {
        Arc::new(MasterMetrics {
            name,
            node,
            store,
            masters,
            shared: Mutex::new(Shared::default()),
        })
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This master's store of points.
    pub fn store(&self) -> &Arc<dyn MetricsStore> {
        &self.store
    }

    /// Every master, name → address.
    pub fn masters(&self) -> &BTreeMap<String, String> {
        &self.masters
    }

    /// This master's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A scheduler binding took `d` from first sight of the pod.
    pub fn observe_scheduling(&self, d: Duration) {
        self.shared().scheduling.observe(d);
    }

    /// A probe took `d` to answer.
    pub fn observe_probe(&self, d: Duration) {
        self.shared().probes.observe(d);
    }

    /// A node answered a probe `d` after its previous answered one.
    pub fn observe_probe_interval(&self, d: Duration) {
        self.shared().probe_intervals.observe(d);
    }

    /// The probe intervals since the last call as points of
    /// `mkube_probe_interval_seconds`, reset.
    pub fn take_probe_intervals(&self, now_ms: i64) -> Vec<Point> {
        std::mem::take(&mut self.shared().probe_intervals).points(m::PROBE_INTERVAL, now_ms)
    }

    /// The latencies since the last call, reset.
    pub fn take_latencies(&self) -> (Summary, Summary) {
        let mut s = self.shared();
        (
            std::mem::take(&mut s.scheduling),
            std::mem::take(&mut s.probes),
        )
    }

    /// Keeps the leader's latest cluster figures for the Prometheus page
    /// (an empty list when leadership ends).
    pub fn set_cluster_points(&self, points: Vec<Point>) {
        self.shared().cluster = points;
    }

    /// This master's own figures, now.
    pub async fn own_points(&self) -> Vec<Point> {
        let status = match self.node.status().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: no status of the store member");
                return Vec::new();
            }
        };
        let process = self.shared().sampler.sample();
        master_points(&status, process, now_ms())
    }

    /// The Prometheus text of this master: its own figures and, on the
    /// leader, the cluster's.
    pub async fn exposition(&self) -> String {
        let mut points = self.own_points().await;
        points.extend(self.shared().cluster.iter().cloned());
        m::exposition(&points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::node::{NodeCondition, NodeConditionType, NodeInfo, Resources};
    use api::{Event, EventType, Node};

    use crate::store::Stored;
    use std::sync::Arc;

    fn pod(name: &str, phase: Option<PodPhase>) -> Arc<Stored<api::Pod>> {
        Arc::new(Stored {
            object: crate::controllers::replicaset::tests::pod(name, None, phase),
            mod_revision: 1,
        })
    }

    fn node(name: &str, ready: bool, cpu_millis: u64, memory_bytes: u64) -> Arc<Stored<Node>> {
        let n = Node::from_info(NodeInfo {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            host_ip: "127.0.0.1".into(),
            labels: BTreeMap::new(),
            capacity: Resources::default(),
            allocatable: Resources::default(),
            usage: Resources {
                cpu_millis,
                memory_bytes,
            },
            conditions: vec![NodeCondition {
                type_: NodeConditionType::Ready,
                status: ready,
                reason: String::new(),
                message: String::new(),
            }],
            runtime_version: String::new(),
        });
        Arc::new(Stored {
            object: n,
            mod_revision: 1,
        })
    }

    fn value(points: &[Point], metric: &str, tag: Option<(&str, &str)>) -> Option<f64> {
        points
            .iter()
            .find(|p| {
                p.metric == metric
                    && tag.is_none_or(|(k, v)| p.tags.get(k).map(String::as_str) == Some(v))
            })
            .map(|p| p.value)
    }

    #[test]
    fn cluster_points_count_phases_nodes_and_usage_with_zeros() {
        let snap = Snapshot {
            revision: 9,
            pods: vec![
                pod("a", Some(PodPhase::Running)),
                pod("b", Some(PodPhase::Running)),
                pod("c", None),
                pod("d", Some(PodPhase::Unknown)),
            ],
            replica_sets: vec![],
            deployments: vec![],
            nodes: vec![
                node("w1", true, 1500, 1 << 20),
                node("w2", false, 500, 1 << 20),
            ],
            ..Snapshot::default()
        };
        let mut sched = Summary::default();
        sched.observe(Duration::from_millis(10));
        sched.observe(Duration::from_millis(30));
        let points = cluster_points(&snap, sched, Summary::default(), 42);
        assert_eq!(
            value(&points, m::PODS, Some(("phase", "Running"))),
            Some(2.0)
        );
        assert_eq!(
            value(&points, m::PODS, Some(("phase", "Pending"))),
            Some(1.0),
            "no status is Pending"
        );
        assert_eq!(
            value(&points, m::PODS, Some(("phase", "Unknown"))),
            Some(1.0)
        );
        assert_eq!(
            value(&points, m::PODS, Some(("phase", "Failed"))),
            Some(0.0),
            "zeros are written"
        );
        assert_eq!(
            value(&points, m::NODES, Some(("status", "Ready"))),
            Some(1.0)
        );
        assert_eq!(
            value(&points, m::NODES, Some(("status", "NotReady"))),
            Some(1.0)
        );
        assert_eq!(value(&points, m::PODS_CPU, None), Some(2.0));
        assert_eq!(
            value(&points, m::PODS_MEMORY, None),
            Some(2.0 * (1 << 20) as f64)
        );
        let avg = value(&points, m::SCHEDULING_LATENCY, Some(("stat", "avg"))).unwrap_or_default();
        assert!((avg - 0.02).abs() < 1e-9, "{avg}");
        assert_eq!(
            value(&points, m::SCHEDULING_LATENCY, Some(("stat", "max"))),
            Some(0.03)
        );
        assert_eq!(
            value(&points, m::PROBE_RTT, None),
            None,
            "no probes, no point"
        );
        assert!(
            points
                .iter()
                .all(|p| p.time_ms == 42 && m::info(&p.metric).is_some())
        );
    }

    #[test]
    fn master_points_report_raft_figures_members_and_process() {
        use kvs::api::MemberStatus;
        use kvs::lifecycle::EpochId;
        let status = NodeStatus {
            id: 7,
            name: "m1".into(),
            epoch: Some(EpochId {
                number: 2,
                founder: 7,
            }),
            voter: true,
            role: Role::Leader,
            term: 5,
            leader: Some(7),
            commit_index: 40,
            applied_index: 39,
            snapshot_index: 30,
            members: vec![
                MemberStatus {
                    id: 7,
                    name: "m1".into(),
                    voter: true,
                    replication: None,
                },
                MemberStatus {
                    id: 9,
                    name: "m2".into(),
                    voter: false,
                    replication: None,
                },
            ],
            last_export: None,
            last_export_age_ms: Some(1500),
            revision: 12,
            keys: 3,
            bytes: 300,
            quota_bytes: 1 << 30,
            alarms: Vec::new(),
            memory: Default::default(),
        };
        let process = ProcessSample {
            cpu_cores: Some(0.25),
            rss_bytes: 1 << 20,
        };
        let points = master_points(&status, Some(process), 9);
        let tag = Some(("master", "m1"));
        assert_eq!(value(&points, m::RAFT_TERM, tag), Some(5.0));
        assert_eq!(value(&points, m::RAFT_COMMIT_INDEX, tag), Some(40.0));
        assert_eq!(value(&points, m::RAFT_APPLIED_INDEX, tag), Some(39.0));
        assert_eq!(value(&points, m::RAFT_SNAPSHOT_INDEX, tag), Some(30.0));
        assert_eq!(value(&points, m::RAFT_LEADER, tag), Some(1.0));
        assert_eq!(value(&points, m::CLUSTER_EPOCH, tag), Some(2.0));
        assert_eq!(value(&points, m::SNAPSHOT_EXPORT_AGE, tag), Some(1.5));
        assert_eq!(value(&points, m::KV_KEYS, tag), Some(3.0));
        assert_eq!(value(&points, m::MASTER_CPU, tag), Some(0.25));
        assert_eq!(
            value(&points, m::MASTER_MEMORY, tag),
            Some((1 << 20) as f64)
        );
        let learner = points
            .iter()
            .find(|p| {
                p.metric == m::RAFT_MEMBER && p.tags.get("member").map(String::as_str) == Some("m2")
            })
            .expect("m2 listed");
        assert_eq!(
            learner.tags.get("incarnation").map(String::as_str),
            Some("9")
        );
        assert_eq!(learner.tags.get("voter").map(String::as_str), Some("false"));
        assert!(
            points
                .iter()
                .all(|p| m::info(&p.metric).is_some() && p.time_ms == 9)
        );
    }

    #[test]
    fn annotations_come_once_per_event_of_an_annotated_reason() {
        let event = |name: &str, reason: &str| {
            let e = Event {
                kind: "Node".into(),
                namespace: String::new(),
                name: "w1".into(),
                uid: "u".into(),
                reason: reason.into(),
                message: format!("{reason} happened"),
                type_: EventType::Normal,
                source: "prober".into(),
                timestamp: "2026-11-30T01:00:00Z".into(),
            };
            EventRecord::new(e, name.into())
        };
        let events = vec![event("w1.a", "NodeNotReady"), event("p.b", "Scheduled")];
        let mut seen = HashSet::new();
        let notes = annotations(&events, &mut seen);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].title, "NodeNotReady");
        assert_eq!(notes[0].text, "NodeNotReady happened");
        assert_eq!(notes[0].time_ms, 1_796_000_400_000);
        assert_eq!(
            notes[0].tags,
            vec!["kind:Node".to_owned(), "name:w1".to_owned()]
        );
        assert!(
            annotations(&events, &mut seen).is_empty(),
            "each event once"
        );
    }

    #[test]
    fn the_process_sampler_reads_proc() {
        let mut s = ProcessSampler::default();
        let first = s.sample().expect("/proc/self is readable on Linux");
        assert!(first.cpu_cores.is_none());
        assert!(first.rss_bytes > 1 << 20, "{first:?}");
        let second = s.sample().expect("second sample");
        assert!(second.cpu_cores.is_some_and(|c| c >= 0.0));
    }
}

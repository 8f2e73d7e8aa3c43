//! The figures mkube reports about itself: one vocabulary for the metrics
//! store (Grafana) and the Prometheus pages of masters and workers.
//!
//! A [`Point`] is one sample of one series: a metric name from [`CATALOGUE`],
//! its tags (Prometheus calls them labels), a time in Unix milliseconds and a
//! value. The collector on the leader writes points to the `MetricsStore`;
//! every master and worker renders its current points as Prometheus text
//! ([`exposition`]). Both read names from [`CATALOGUE`] only, so a dashboard
//! can be checked against it and a Prometheus query names the same series as
//! a Grafana panel.
//!
//! Invariants: every name in [`CATALOGUE`] is a valid Prometheus metric name,
//! unique, and starts with `mkube_`; tag keys are valid label names.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// Tags of a series, sorted by key.
pub type Tags = BTreeMap<String, String>;

/// One sample of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// The metric, a name from [`CATALOGUE`].
    pub metric: String,
    /// The series' tags.
    #[serde(default)]
    pub tags: Tags,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// The value.
    pub value: f64,
}

impl Point {
    /// A point of `metric` with the tags `tags`.
    pub fn new(metric: &str, tags: &[(&str, &str)], time_ms: i64, value: f64) -> Point {
        Point {
            metric: metric.to_owned(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            time_ms,
            value,
        }
    }
}

/// Something that happened in the cluster, shown as a marker on the graphs:
/// a leader change, an eviction, a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotation {
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// A short title: the event's reason (`LeaderElected`, `Evicted`).
    pub title: String,
    /// What happened, in a sentence.
    pub text: String,
    /// Tags to filter on (`kind:Deployment`, `node:w1`).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricInfo {
    /// Its name.
    pub name: &'static str,
    /// What it measures (Prometheus' HELP).
    pub help: &'static str,
    /// Who reports it.
    pub source: Source,
}

/// Who reports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Every master, about itself (tag `master`).
    Master,
    /// The leader, about the cluster.
    Cluster,
    /// Every worker, about itself (tag `node`).
    Worker,
}

macro_rules! catalogue {
    ($($(#[$doc:meta])* $const:ident = $name:literal, $source:ident, $help:literal;)*) => {
        $( $(#[$doc])* pub const $const: &str = $name; )*
        /// Every metric mkube reports.
        pub const CATALOGUE: &[MetricInfo] = &[
            $( MetricInfo { name: $name, help: $help, source: Source::$source }, )*
        ];
    };
}

catalogue! {
    /// CPU used by a master process, in cores (CPU seconds per second).
    MASTER_CPU = "mkube_master_cpu_cores", Master, "CPU used by the master process, in cores";
    /// Resident memory of a master process.
    MASTER_MEMORY = "mkube_master_memory_bytes", Master, "Resident memory of the master process";
    /// A master's Raft term.
    RAFT_TERM = "mkube_raft_term", Master, "The master's current Raft term";
    /// A master's commit index.
    RAFT_COMMIT_INDEX = "mkube_raft_commit_index", Master, "The master's Raft commit index";
    /// A master's applied index.
    RAFT_APPLIED_INDEX = "mkube_raft_applied_index", Master, "The master's Raft applied index";
    /// The index a master's latest snapshot covers.
    RAFT_SNAPSHOT_INDEX = "mkube_raft_snapshot_index", Master, "The index the master's latest snapshot covers";
    /// 1 on the leader, else 0.
    RAFT_LEADER = "mkube_raft_is_leader", Master, "1 if the master is the Raft leader, else 0";
    /// The number of the cluster epoch a master is in.
    CLUSTER_EPOCH = "mkube_cluster_epoch", Master, "The number of the cluster epoch the master is in";
    /// One point (value 1) per member of the configuration as a master sees
    /// it (tags `member`, `incarnation`, `voter`).
    RAFT_MEMBER = "mkube_raft_member", Master, "1 for each member of the Raft configuration as the master sees it, with its incarnation and whether it votes";
    /// Keys in a master's store.
    KV_KEYS = "mkube_kv_keys", Master, "Keys in the master's store";
    /// Bytes of keys and values in a master's store.
    KV_BYTES = "mkube_kv_bytes", Master, "Bytes of keys and values in the master's store";
    /// A master's store quota (`--quota-bytes`); writes that put are
    /// refused (alarm NOSPACE) once `mkube_kv_bytes` reaches it.
    KV_QUOTA_BYTES = "mkube_kv_quota_bytes", Master, "The store's quota of bytes; writes are refused (NOSPACE) at it";
    /// Age of the newest snapshot export a master knows of.
    SNAPSHOT_EXPORT_AGE = "mkube_snapshot_export_age_seconds", Master, "Age of the newest snapshot export the master knows of";
    /// Pods by phase (tag `phase`).
    PODS = "mkube_pods", Cluster, "Pods by phase";
    /// Nodes by readiness (tag `status`: Ready, NotReady).
    NODES = "mkube_nodes", Cluster, "Nodes by readiness";
    /// CPU used by all pods, in cores.
    PODS_CPU = "mkube_pods_cpu_cores", Cluster, "CPU used by all pods, in cores";
    /// Memory used by all pods.
    PODS_MEMORY = "mkube_pods_memory_bytes", Cluster, "Memory used by all pods";
    /// Time from a pod's creation to its binding (tag `stat`: avg, max),
    /// over the pods bound since the last collection.
    SCHEDULING_LATENCY = "mkube_scheduling_latency_seconds", Cluster, "Time from a pod's creation to its binding to a node";
    /// Round-trip time of the leader's probes (tag `stat`: avg, max).
    PROBE_RTT = "mkube_probe_rtt_seconds", Cluster, "Round-trip time of the leader's probes of the workers";
    /// Time between two answered probes of the same node (tag `stat`: p50,
    /// p99, max), over the answers since the last collection: every node
    /// is probed within its interval when p99 stays near it.
    PROBE_INTERVAL = "mkube_probe_interval_seconds", Cluster, "Time between two answered probes of the same node";
    /// Stored objects that do not parse and are skipped by every loop
    /// (a Warning event `UnreadableObject` names each key).
    UNREADABLE_OBJECTS = "mkube_unreadable_objects", Cluster, "Stored objects that do not parse as their kind (skipped until deleted)";
    /// Pods a worker runs, by phase (tags `node`, `phase`).
    WORKER_PODS = "mkube_worker_pods", Worker, "Pods the worker runs, by phase";
    /// CPU used by a worker's pods, in cores.
    WORKER_PODS_CPU = "mkube_worker_pods_cpu_cores", Worker, "CPU used by the worker's pods, in cores";
    /// Memory used by a worker's pods.
    WORKER_PODS_MEMORY = "mkube_worker_pods_memory_bytes", Worker, "Memory used by the worker's pods";
    /// 1 when the worker's container runtime answers, else 0.
    WORKER_RUNTIME_UP = "mkube_worker_runtime_up", Worker, "1 if the worker's container runtime answers, else 0";
}

/// The catalogue entry of `name`.
pub fn info(name: &str) -> Option<&'static MetricInfo> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// One gauge per label set.
type GaugeFamily = Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>;

/// The Prometheus content type of [`exposition`]'s text.
pub const EXPOSITION_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `points` as Prometheus/OpenMetrics text, one gauge family per
/// metric (with the catalogue's help), one sample per series. Points of
/// names outside the catalogue are skipped; of two points of one series the
/// later one in `points` wins.
pub fn exposition(points: &[Point]) -> String {
    let mut registry = Registry::default();
    let mut families: BTreeMap<&str, GaugeFamily> = BTreeMap::new();
    for point in points {
        let Some(info) = info(&point.metric) else {
            continue;
        };
        let family = families.entry(info.name).or_insert_with(|| {
            let family = Family::default();
            registry.register(info.name, info.help, family.clone());
            family
        });
        let labels: Vec<(String, String)> = point
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        family.get_or_create(&labels).set(point.value);
    }
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_valid_prometheus_names() {
        let mut seen = std::collections::BTreeSet::new();
        for m in CATALOGUE {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("mkube_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn exposition_renders_each_series_once_with_help_and_labels() {
        let points = vec![
            Point::new(RAFT_TERM, &[("master", "m1")], 1, 3.0),
            Point::new(RAFT_TERM, &[("master", "m2")], 1, 3.0),
            Point::new(RAFT_TERM, &[("master", "m1")], 2, 4.0),
            Point::new("not_ours", &[], 1, 1.0),
        ];
        let text = exposition(&points);
        assert!(
            text.contains("# HELP mkube_raft_term The master's current Raft term"),
            "{text}"
        );
        assert!(text.contains("# TYPE mkube_raft_term gauge"), "{text}");
        assert!(
            text.contains("mkube_raft_term{master=\"m1\"} 4.0"),
            "{text}"
        );
        assert!(
            text.contains("mkube_raft_term{master=\"m2\"} 3.0"),
            "{text}"
        );
        assert!(!text.contains("not_ours"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

//! The scale scenario: three masters and a fleet of hollow nodes
//! (`mkube-hollow`: real workers over a simulated container runtime),
//! Deployments created through the API until every pod runs, then a slice
//! of the fleet lost at once. Shared by the CI-sized test
//! (`tests/tests/scale.rs`) and `scripts/bench scale`, which differ only
//! in size.
//!
//! What it measures, from outside the masters as a user sees them: time
//! until all pods run; pod start latency (the pod's creation timestamp to
//! the moment a watch of the pods shows it Running, as Kubernetes' density
//! test observes it through an informer); API latency of creates, gets and
//! lists during the ramp; the leader's cpu
//! seconds and peak RSS; the store's size. What it checks: every pod of
//! the lost nodes runs elsewhere again, and no live node is ever judged
//! NotReady meanwhile (dead nodes cost no live node its probe).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use api::master::{ListRequest, MasterClient, ObjectRequest, WriteRequest};
use api::{Node, Pod, PodPhase};
use serde_json::{Value, json};

use crate::cluster::{Cluster, Timing};
use crate::masters::Masters;

/// How large a run is.
#[derive(Debug, Clone)]
pub struct ScaleSpec {
    /// Hollow nodes in all.
    pub nodes: usize,
    /// Of those, how many are lost at once (a process of their own).
    pub lost: usize,
    /// Deployments created.
    pub deployments: usize,
    /// Replicas of each.
    pub replicas: usize,
    /// Creates in flight at once during the ramp.
    pub create_concurrency: usize,
    /// The masters' timing.
    pub timing: Timing,
    /// How long any one phase may take before the run fails.
    pub phase_deadline: Duration,
    /// How often pods and nodes are listed (a list of every pod costs the
    /// masters; its latency is the list call's figure).
    pub poll: Duration,
    /// More flags for the masters.
    pub master_args: Vec<String>,
}

/// What a run measured (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    /// From the first create to every pod Running.
    pub all_running: Duration,
    /// Pod start latency, p50 and p99.
    pub pod_start_p50: Duration,
    /// See `pod_start_p50`.
    pub pod_start_p99: Duration,
    /// API latency p99 during the ramp, by call (`create`, `get`, `list`).
    pub api_p99: BTreeMap<&'static str, Duration>,
    /// The leader's cpu seconds from the fleet's start to the end of the run.
    pub leader_cpu_s: f64,
    /// Wall-clock seconds over which `leader_cpu_s` was spent.
    pub wall_s: f64,
    /// The leader's peak RSS in bytes.
    pub leader_peak_rss: u64,
    /// The store's size in bytes and keys at the end.
    pub store_bytes: u64,
    /// See `store_bytes`.
    pub store_keys: usize,
    /// From the loss to every Deployment whole again off the lost nodes.
    pub recovered_after_loss: Duration,
    /// Live nodes judged NotReady at any poll after the loss (must be none).
    pub live_nodes_not_ready: Vec<String>,
    /// The leader's cpu seconds per node per second of the steady phase
    /// (every pod running, before the loss), on the master leading then.
    pub steady_cpu_per_node_s: f64,
    /// Whether leadership moved during the ramp (`leader_cpu_s` and the
    /// peak RSS are then the first leader's).
    pub leader_changed: bool,
    /// The worst p99 of the time between two answered probes of a node,
    /// over the metrics collections after the ramp (steady phase and
    /// loss): near the probe interval when every live node is probed on
    /// time. `None` if no collection reported it.
    pub probe_interval_p99: Option<Duration>,
    /// Creates that failed and were retried (each a miss of the API SLO).
    pub create_retries: usize,
}

fn deployment(name: &str, replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "scale": "yes"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "main", "image": "hollow",
                        "command": ["serve"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}
                    }]
                }
            }
        }
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// cpu seconds (user + system) of a process so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak RSS (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    crate::cluster::status_bytes(pid, "VmHWM:")
}

fn created_ms(pod: &Pod) -> Option<u64> {
    let t = pod.metadata.creation_timestamp.as_deref()?;
    let ts: jiff::Timestamp = t.parse().ok()?;
    u64::try_from(ts.as_millisecond()).ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A list of every pod is sampled once per this many polls.
const LIST_EVERY: u32 = 5;

/// How often the watch's view is checked for the end of a phase.
const WATCH_CHECK: Duration = Duration::from_millis(100);

/// Latencies of API calls, by call.
#[derive(Default, Clone)]
struct Latencies(Arc<Mutex<HashMap<&'static str, Vec<Duration>>>>);

impl Latencies {
    fn record(&self, call: &'static str, took: Duration) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(call).or_default().push(took);
        }
    }

    fn p99(&self) -> BTreeMap<&'static str, Duration> {
        let Ok(m) = self.0.lock() else {
            return BTreeMap::new();
        };
        m.iter()
            .map(|(call, v)| {
                let mut v = v.clone();
                v.sort();
                (*call, percentile(&v, 0.99))
            })
            .collect()
    }
}

async fn list_pods(client: &MasterClient) -> Result<Vec<Pod>> {
    let list = client
        .list(&ListRequest {
            kind: "pods".into(),
            label_selector: Some("scale=yes".into()),
            ..Default::default()
        })
        .await?;
    list.items
        .into_iter()
        .map(|v| serde_json::from_value(v).context("a pod"))
        .collect()
}

async fn list_nodes(client: &MasterClient) -> Result<Vec<Node>> {
    let list = client
        .list(&ListRequest {
            kind: "nodes".into(),
            ..Default::default()
        })
        .await?;
    list.items
        .into_iter()
        .map(|v| serde_json::from_value(v).context("a node"))
        .collect()
}

/// The scale pods as a watch shows them: a list, then every change after
/// it, from one master. A pod's start is dated when the event that shows
/// it Running arrives, not at the next poll (a list of 30,000 pods takes
/// seconds on a busy machine, and dating by lists counted that time into
/// every start). A watch that fails (its revision compacted, the master
/// gone) lists again; pods first seen Running in that list are dated then.
#[derive(Clone, Default)]
struct PodWatch(Arc<Mutex<Watched>>);

#[derive(Default)]
struct Watched {
    /// namespace/name → the node of a pod that runs (`None`: not Running).
    pods: HashMap<String, Option<String>>,
    /// uid → creation to first seen Running.
    started: HashMap<String, Duration>,
}

impl PodWatch {
    /// Starts following the pods through `client` until `stop`.
    fn start(client: MasterClient, stop: Arc<std::sync::atomic::AtomicBool>) -> PodWatch {
        let watch = PodWatch::default();
        tokio::spawn(watch.clone().follow(client, stop));
        watch
    }

    async fn follow(self, client: MasterClient, stop: Arc<std::sync::atomic::AtomicBool>) {
        use api::master::{WatchEventType, WatchRequest};
        use std::sync::atomic::Ordering;
        while !stop.load(Ordering::Relaxed) {
            let Ok(list) = client
                .list(&ListRequest {
                    kind: "pods".into(),
                    label_selector: Some("scale=yes".into()),
                    ..Default::default()
                })
                .await
            else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            if let Ok(mut w) = self.0.lock() {
                w.pods.clear();
                for item in &list.items {
                    w.saw(item, now_ms());
                }
            }
            let mut from = list.resource_version;
            while !stop.load(Ordering::Relaxed) {
                let Ok(changes) = client
                    .watch(&WatchRequest {
                        kind: "pods".into(),
                        namespace: None,
                        label_selector: Some("scale=yes".into()),
                        resource_version: from.clone(),
                        wait_ms: Some(1_000),
                    })
                    .await
                else {
                    break;
                };
                let at = now_ms();
                if let Ok(mut w) = self.0.lock() {
                    for e in &changes.events {
                        match e.type_ {
                            WatchEventType::Deleted => w.gone(&e.object),
                            _ => w.saw(&e.object, at),
                        }
                    }
                }
                from = changes.resource_version;
            }
        }
    }

    /// Pods Running on nodes other than `off`.
    fn running_off(&self, off: &HashSet<String>) -> usize {
        self.0.lock().map_or(0, |w| {
            w.pods
                .values()
                .filter(|n| n.as_ref().is_some_and(|n| !off.contains(n)))
                .count()
        })
    }

    /// Every start seen, sorted.
    fn starts(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .0
            .lock()
            .map(|w| w.started.values().copied().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Watched {
    fn saw(&mut self, object: &Value, at_ms: u64) {
        let Ok(pod) = serde_json::from_value::<Pod>(object.clone()) else {
            return;
        };
        let running = is_running(&pod);
        if running && let Some(created) = created_ms(&pod) {
            self.started
                .entry(pod.metadata.uid.clone())
                .or_insert(Duration::from_millis(at_ms.saturating_sub(created)));
        }
        let node = pod.spec.node_name.clone().filter(|_| running);
        self.pods.insert(pod.key(), node);
    }

    fn gone(&mut self, object: &Value) {
        let meta = &object["metadata"];
        if let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) {
            self.pods.remove(&format!("{ns}/{name}"));
        }
    }
}

fn is_running(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .is_some_and(|s| s.phase == PodPhase::Running)
}

/// Runs the scenario of `spec` (see the module doc).
pub async fn run(spec: &ScaleSpec) -> Result<ScaleReport> {
    let mut c = Cluster::start_with(3, 0, spec.timing.clone(), &spec.master_args).await?;
    let kept = spec.nodes - spec.lost;
    c.add_hollows(0, kept, &[])?;
    let lost_proc = c.add_hollows(kept, spec.lost, &[])?;
    let lost_names: HashSet<String> = (kept..spec.nodes).map(|i| c.hollow_name(i)).collect();
    let nodes = spec.nodes;
    c.wait_for(
        spec.phase_deadline,
        &format!("{nodes} hollow nodes Ready"),
        |c| async move { Ok((c.ready_nodes().await?.len() == nodes).then_some(())) },
    )
    .await?;
    let leader = c
        .leader()
        .await
        .context("no leader after the fleet came up")?;
    let pid = c.master_pid(leader).context("the leader's process")?;
    let (cpu0, wall0) = (cpu_seconds(pid), Instant::now());
    let client = c.client(leader)?;
    // Watching happens on another master, as a dashboard behind a load
    // balancer would: the watch of the pods that dates their starts, a
    // get each poll and a list of every pod every fifth (and once at the
    // end). Every master serves linearizable reads from its own watch
    // cache; sent to the leader, two lists of 30,000 pods a second were a
    // sixth of its cpu, taken from the loops the run measures.
    let reader = c.client((leader + 1) % c.master_addrs.len())?;
    let stop_watch = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = PodWatch::start(reader.clone(), stop_watch.clone());

    // The ramp: creates, and gets and lists alongside them.
    let latencies = Latencies::default();
    let ramp_start = Instant::now();
    let ramp_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poll = spec.poll;
    let sample = |call: &'static str| {
        let (client, latencies, done) = (reader.clone(), latencies.clone(), ramp_done.clone());
        async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match call {
                    "get" => client
                        .get(&ObjectRequest {
                            kind: "deployments".into(),
                            namespace: None,
                            name: "scale-0000".into(),
                            resource_version: None,
                            grace_period_seconds: None,
                        })
                        .await
                        .is_ok(),
                    _ => list_pods(&client).await.is_ok(),
                };
                if ok {
                    latencies.record(call, t.elapsed());
                }
                // A list of every pod is sampled less often: the watch
                // dates the starts, and a list of 30,000 pods a second
                // kept the master serving it busy for most of that second.
                tokio::time::sleep(if call == "get" {
                    poll
                } else {
                    LIST_EVERY * poll
                })
                .await;
            }
        }
    };
    let samplers = [tokio::spawn(sample("get")), tokio::spawn(sample("list"))];
    let names: Vec<String> = (0..spec.deployments)
        .map(|i| format!("scale-{i:04}"))
        .collect();
    let mut create_retries = 0;
    for chunk in names.chunks(spec.create_concurrency.max(1)) {
        let mut calls = tokio::task::JoinSet::new();
        for name in chunk {
            let (client, latencies) = (client.clone(), latencies.clone());
            let object = deployment(name, spec.replicas);
            calls.spawn(async move {
                // A client retries a call that failed (as kubectl and
                // client-go do); each failure counts.
                let mut retries = 0;
                loop {
                    let t = Instant::now();
                    let answer = client
                        .apply(&WriteRequest {
                            object: object.clone(),
                        })
                        .await;
                    latencies.record("create", t.elapsed());
                    match answer {
                        Ok(_) => return anyhow::Ok(retries),
                        Err(e) if retries >= 10 => return Err(e.into()),
                        Err(_) => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
        while let Some(done) = calls.join_next().await {
            create_retries += done??;
        }
    }

    // Until every pod runs, as the watch shows them.
    let total = spec.deployments * spec.replicas;
    let nowhere = HashSet::new();
    loop {
        let running = watch.running_off(&nowhere);
        if running >= total {
            break;
        }
        if ramp_start.elapsed() > spec.phase_deadline {
            bail!(
                "{running} of {total} pods Running after {:?}\n{}",
                spec.phase_deadline,
                c.logs()
            );
        }
        tokio::time::sleep(WATCH_CHECK).await;
    }
    let all_running = ramp_start.elapsed();
    let ramp_end_ms = now_ms();
    ramp_done.store(true, std::sync::atomic::Ordering::Relaxed);
    for sampler in samplers {
        let _ = sampler.await;
    }
    // And a list of every pod once they all run (a short ramp may have
    // seen only lists of none).
    let t = Instant::now();
    if list_pods(&reader).await.is_ok() {
        latencies.record("list", t.elapsed());
    }
    let starts = watch.starts();

    // The steady phase: every pod running, the prober at its interval,
    // measured on whichever master leads now.
    let leader_after_ramp = c.leader().await;
    let steady_pid = leader_after_ramp
        .and_then(|l| c.master_pid(l))
        .unwrap_or(pid);
    // Measured once the ramp's tail (the last writes, Events, the control
    // passes they wake) has settled, over ten probe intervals.
    let interval = Duration::from_millis(spec.timing.probe_interval_ms);
    tokio::time::sleep(5 * interval).await;
    let (cpu1, wall1) = (cpu_seconds(steady_pid), Instant::now());
    tokio::time::sleep(10 * interval).await;
    let steady_cpu = cpu_seconds(steady_pid) - cpu1;
    let steady_cpu_per_node_s = steady_cpu / wall1.elapsed().as_secs_f64() / spec.nodes as f64;

    // The loss: a slice of the fleet at once, silent (not refusing).
    c.freeze_hollows(lost_proc)?;
    let lost_at = Instant::now();
    // Nodes listed each poll: no live one may ever be NotReady.
    let not_ready: Arc<Mutex<HashSet<String>>> = Arc::default();
    let recovered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let nodes_checker = tokio::spawn({
        let (reader, not_ready, done) = (reader.clone(), not_ready.clone(), recovered.clone());
        let lost = lost_names.clone();
        async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let (Ok(nodes), Ok(mut seen)) = (list_nodes(&reader).await, not_ready.lock()) {
                    seen.extend(
                        nodes
                            .iter()
                            .filter(|n| !lost.contains(&n.metadata.name) && !n.is_ready())
                            .map(|n| n.metadata.name.clone()),
                    );
                }
                tokio::time::sleep(poll).await;
            }
        }
    });
    while watch.running_off(&lost_names) < total {
        if lost_at.elapsed() > spec.phase_deadline {
            bail!(
                "the lost nodes' pods are not running elsewhere after {:?}\n{}",
                spec.phase_deadline,
                c.logs()
            );
        }
        tokio::time::sleep(WATCH_CHECK).await;
    }
    let recovered_after_loss = lost_at.elapsed();
    stop_watch.store(true, std::sync::atomic::Ordering::Relaxed);
    recovered.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = nodes_checker.await;
    c.kill_hollows(lost_proc);
    // One more collection, so that the loss is in the metrics.
    let collection = Duration::from_millis(spec.timing.metrics_interval_ms);
    tokio::time::sleep(collection).await;
    let probe_interval_p99 =
        worst_probe_interval_p99(&c, ramp_end_ms + collection.as_millis() as u64, now_ms()).await?;
    let status = c.kv_status(leader).await?;
    let mut live_nodes_not_ready: Vec<String> = not_ready
        .lock()
        .map(|seen| seen.iter().cloned().collect())
        .unwrap_or_default();
    live_nodes_not_ready.sort();
    Ok(ScaleReport {
        all_running,
        pod_start_p50: percentile(&starts, 0.50),
        pod_start_p99: percentile(&starts, 0.99),
        api_p99: latencies.p99(),
        leader_cpu_s: cpu_seconds(pid) - cpu0,
        wall_s: wall0.elapsed().as_secs_f64(),
        leader_peak_rss: peak_rss(pid),
        store_bytes: status.bytes,
        store_keys: status.keys,
        recovered_after_loss,
        live_nodes_not_ready,
        steady_cpu_per_node_s,
        leader_changed: leader_after_ramp != Some(leader),
        probe_interval_p99,
        create_retries,
    })
}

/// The largest p99 of `mkube_probe_interval_seconds` collected between
/// `from_ms` and `to_ms`, read from a master's metrics database (the
/// collector writes every master's).
async fn worst_probe_interval_p99(
    c: &Cluster,
    from_ms: u64,
    to_ms: u64,
) -> Result<Option<Duration>> {
    use grafana_datasource::{Aggregation, MetricsStore, SeriesQuery, SqliteStore, TagFilter};
    let path = c.dir().join("metrics-m0.db");
    let store = SqliteStore::open(&path, Duration::from_secs(86_400))
        .with_context(|| format!("opening {}", path.display()))?;
    let series = store
        .query(&SeriesQuery {
            metric: api::metrics::PROBE_INTERVAL.into(),
            from_ms: from_ms as i64,
            to_ms: to_ms as i64,
            filters: vec![TagFilter::Equal("stat".into(), "p99".into())],
            step_ms: None,
            aggregation: Aggregation::Max,
        })
        .await?;
    Ok(series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter_map(|(_, v)| Duration::try_from_secs_f64(*v).ok())
        .max())
}

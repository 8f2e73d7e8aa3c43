//! What the agent answers the master: applying a probe's desired pods
//! (fenced, versioned deltas), the node and pod statuses, events, and the
//! lookups behind logs and exec.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use api::metrics::Point;
use api::node::{NodeCondition, NodeConditionType, NodeInfo, Resources};
use api::validation::validate_pod;
use api::worker::{
    ExecRequest, ExecResponse, LogsRequest, LogsResponse, PodReport, ProbeRequest, ProbeResponse,
    WorkerError,
};

use super::{Agent, State};
use crate::model::Slot;
use crate::runtime::{LogQuery, now_ms};
use crate::status::{SlotView, pod_status};

/// Bytes of log or exec output in one answer at most.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Events in one probe answer at most.
pub const MAX_EVENTS_PER_PROBE: usize = 500;

impl Agent {
    /// Handles a master's probe: fencing, then the desired-state delta, then
    /// the report.
    pub fn probe(&self, req: ProbeRequest) -> Result<ProbeResponse, WorkerError> {
        let node = self.inner.config.node.clone();
        if req.node != node {
            return Err(WorkerError::InvalidArgument(format!(
                "this probe is for node {:?}; this is node {node:?} (was the node registered at another's address?)",
                req.node
            )));
        }
        let mut problems = Vec::new();
        for pod in &req.upserts {
            if pod.metadata.uid.is_empty() {
                problems.push(format!("pod {}: metadata.uid is required", pod.key()));
            }
            if pod.spec.node_name.as_deref() != Some(node.as_str()) {
                problems.push(format!(
                    "pod {}: spec.nodeName is {:?}, not this node ({node})",
                    pod.key(),
                    pod.spec.node_name
                ));
            }
            if let Err(e) = validate_pod(pod) {
                problems.push(format!("pod {}: {e}", pod.key()));
            }
        }
        let mut state = self.state();
        if req.fence < state.fence {
            return Err(WorkerError::StaleFence {
                seen: state.fence,
                got: req.fence,
            });
        }
        if !problems.is_empty() {
            return Err(WorkerError::InvalidArgument(problems.join("; ")));
        }
        state.fence = req.fence;
        state.probes_received += 1;
        let applies = match req.base_version {
            None => {
                state.desired = req
                    .upserts
                    .into_iter()
                    .map(|p| (p.metadata.uid.clone(), p))
                    .collect();
                true
            }
            Some(base) if state.synced && base == state.version => {
                for uid in &req.deletes {
                    state.desired.remove(uid);
                    if let Some(grace) = req.delete_grace.get(uid) {
                        state.delete_grace.insert(uid.clone(), *grace);
                    }
                }
                for pod in req.upserts {
                    state.desired.insert(pod.metadata.uid.clone(), pod);
                }
                true
            }
            Some(_) => false,
        };
        if applies {
            state.version = req.version;
            state.synced = true;
            // A whole set in parts is whole at its last part; a delta in
            // parts never made the set partial.
            state.partial = match req.base_version {
                None => req.more,
                Some(_) => state.partial && req.more,
            };
        }
        let response = self.report(&state, req.events_after);
        drop(state);
        if applies {
            self.wake();
        }
        Ok(response)
    }

    fn report(&self, state: &State, events_after: u64) -> ProbeResponse {
        let config = &self.inner.config;
        let now = now_ms();
        let pods = state
            .desired
            .values()
            .map(|pod| {
                let mut views = BTreeMap::new();
                for c in &pod.spec.containers {
                    let slot = Slot {
                        uid: pod.metadata.uid.clone(),
                        container: c.name.clone(),
                    };
                    let observed = state
                        .observed
                        .iter()
                        .filter(|o| o.node == config.node && o.slot.as_ref() == Some(&slot))
                        .max_by_key(|o| o.is_running());
                    let view = SlotView {
                        observed,
                        details: observed.and_then(|o| state.details.get(&o.id)),
                        record: state.records.get(&slot),
                    };
                    views.insert(slot, view);
                }
                let start = state.start_times.get(&pod.metadata.uid).cloned();
                PodReport {
                    namespace: pod.metadata.namespace.clone(),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                    status: pod_status(pod, &views, &config.host_ip, start, config.backoff, now),
                }
            })
            .collect();
        // Deleted pods whose containers are still here (stopping).
        let terminating: Vec<String> = state
            .observed
            .iter()
            .filter(|o| o.node == config.node)
            .filter_map(|o| o.slot.as_ref().map(|s| s.uid.clone()))
            .filter(|uid| !state.desired.contains_key(uid))
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        let events = state
            .events
            .iter()
            .filter(|e| e.seq > events_after)
            .take(MAX_EVENTS_PER_PROBE)
            .cloned()
            .collect();
        ProbeResponse {
            node: self.node_info(state),
            acked_version: state.version,
            pods,
            terminating,
            events,
        }
    }

    /// The node as it sees itself now.
    pub(crate) fn node_info(&self, state: &State) -> NodeInfo {
        let config = &self.inner.config;
        let machine = &self.inner.machine;
        let capacity = Resources {
            cpu_millis: machine.cpus * 1_000,
            memory_bytes: machine.memory_bytes,
        };
        let allocatable = Resources {
            cpu_millis: capacity
                .cpu_millis
                .saturating_sub(config.reserved.cpu_millis),
            memory_bytes: capacity
                .memory_bytes
                .saturating_sub(config.reserved.memory_bytes),
        };
        let ready = match &state.runtime_error {
            None => NodeCondition {
                type_: NodeConditionType::Ready,
                status: true,
                reason: "WorkerReady".into(),
                message: format!("{} answers", machine.version),
            },
            Some(e) => NodeCondition {
                type_: NodeConditionType::Ready,
                status: false,
                reason: "DockerUnreachable".into(),
                message: e.clone(),
            },
        };
        NodeInfo {
            name: config.node.clone(),
            address: config.address.clone(),
            host_ip: config.host_ip.clone(),
            labels: config.labels.clone(),
            capacity,
            allocatable,
            usage: state.usage,
            conditions: vec![ready],
            runtime_version: machine.version.clone(),
        }
    }

    /// The node as it sees itself now (for registration).
    pub fn describe_node(&self) -> NodeInfo {
        let state = self.state();
        self.node_info(&state)
    }

    /// This node's figures now (its Prometheus page): pods by phase, what
    /// they use, and whether the runtime answers.
    pub fn figures(&self) -> Vec<Point> {
        use api::metrics as m;
        let state = self.state();
        let report = self.report(&state, u64::MAX);
        let node = self.inner.config.node.as_str();
        let now = now_ms() as i64;
        let mut phases: BTreeMap<String, u64> = [
            "Pending",
            "Scheduled",
            "Running",
            "Succeeded",
            "Failed",
            "Unknown",
        ]
        .into_iter()
        .map(|p| (p.to_owned(), 0))
        .collect();
        for pod in &report.pods {
            let phase = serde_json::to_value(pod.status.phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "Unknown".into());
            *phases.entry(phase).or_default() += 1;
        }
        let mut points: Vec<Point> = phases
            .iter()
            .map(|(phase, n)| {
                Point::new(
                    m::WORKER_PODS,
                    &[("node", node), ("phase", phase)],
                    now,
                    *n as f64,
                )
            })
            .collect();
        let tags = [("node", node)];
        points.push(Point::new(
            m::WORKER_PODS_CPU,
            &tags,
            now,
            state.usage.cpu_millis as f64 / 1000.0,
        ));
        points.push(Point::new(
            m::WORKER_PODS_MEMORY,
            &tags,
            now,
            state.usage.memory_bytes as f64,
        ));
        points.push(Point::new(
            m::WORKER_RUNTIME_UP,
            &tags,
            now,
            f64::from(u8::from(state.runtime_error.is_none())),
        ));
        points
    }

    /// Containers of this node's pods that run now.
    pub fn running_containers(&self) -> usize {
        let state = self.state();
        state
            .observed
            .iter()
            .filter(|o| o.node == self.inner.config.node && o.slot.is_some() && o.is_running())
            .count()
    }

    /// Empties the desired set (an eviction with no master to drain through):
    /// the next round stops every pod within its grace period.
    pub fn forget_desired(&self) {
        let mut state = self.state();
        state.desired.clear();
        state.synced = false;
        drop(state);
        self.wake();
    }

    /// How many probes have been accepted.
    pub fn probes_received(&self) -> u64 {
        self.state().probes_received
    }

    /// The highest fence this worker has followed (reported when it
    /// registers, so that a cluster re-formed from nothing fences above it).
    pub fn fence(&self) -> api::worker::Fence {
        self.state().fence
    }

    /// The Docker id of a pod's container on this node.
    fn container_id(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
    ) -> Result<String, WorkerError> {
        let state = self.state();
        let Some(p) = state
            .desired
            .values()
            .find(|p| p.metadata.namespace == namespace && p.metadata.name == pod)
        else {
            return Err(WorkerError::NotFound(format!(
                "pod {namespace}/{pod} is not on node {}",
                self.inner.config.node
            )));
        };
        let names: Vec<&str> = p.spec.containers.iter().map(|c| c.name.as_str()).collect();
        let name = match (container, names.as_slice()) {
            (Some(c), _) if names.contains(&c) => c.to_string(),
            (Some(c), _) => {
                return Err(WorkerError::NotFound(format!(
                    "pod {namespace}/{pod} has no container {c:?}; it has {}",
                    names.join(", ")
                )));
            }
            (None, [only]) => only.to_string(),
            (None, _) => {
                return Err(WorkerError::InvalidArgument(format!(
                    "pod {namespace}/{pod} has containers {}; name one",
                    names.join(", ")
                )));
            }
        };
        let slot = Slot {
            uid: p.metadata.uid.clone(),
            container: name.clone(),
        };
        state
            .observed
            .iter()
            .filter(|o| o.node == self.inner.config.node && o.slot.as_ref() == Some(&slot))
            .max_by_key(|o| o.is_running())
            .map(|o| o.id.clone())
            .ok_or_else(|| {
                WorkerError::NotFound(format!(
                    "container {name} of pod {namespace}/{pod} has not been created yet"
                ))
            })
    }

    /// A container's output; see [`LogsRequest`] for following.
    pub async fn logs(&self, req: LogsRequest) -> Result<LogsResponse, WorkerError> {
        let id = self.container_id(&req.namespace, &req.pod, req.container.as_deref())?;
        let cursor = req.cursor.as_deref().map(parse_cursor).transpose()?;
        let following = req.follow && cursor.is_some();
        let since = match (cursor, req.since_seconds) {
            (Some((secs, _)), _) => secs,
            (None, Some(s)) => now_ms() / 1_000 - s.min(now_ms() / 1_000),
            (None, None) => 0,
        };
        let query = LogQuery {
            tail: if cursor.is_some() {
                None
            } else {
                req.tail_lines
            },
            since_unix_s: i32::try_from(since).unwrap_or(i32::MAX),
            follow: following,
            wait: Duration::from_millis(req.wait_ms.unwrap_or(10_000).min(60_000)),
            return_on_first: true,
            max_bytes: MAX_OUTPUT_BYTES,
        };
        let (raw, truncated) = self
            .inner
            .runtime
            .logs(&id, query)
            .await
            .map_err(unavailable)?;
        let mut lines = Vec::new();
        let mut last = req.cursor.clone();
        for line in raw {
            let (stamp, text) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let Ok(at) = parse_cursor(stamp) else {
                continue;
            };
            if cursor.is_some_and(|c| at <= c) {
                continue; // already sent
            }
            last = Some(stamp.to_string());
            lines.push(text.to_string());
        }
        Ok(LogsResponse {
            lines,
            cursor: last,
            truncated,
        })
    }

    /// Runs a command in a pod's container.
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, WorkerError> {
        if req.command.is_empty() {
            return Err(WorkerError::InvalidArgument("command: required".into()));
        }
        let id = self.container_id(&req.namespace, &req.pod, req.container.as_deref())?;
        let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(30_000).clamp(1, 600_000));
        let (exit_code, stdout, stderr) = self
            .inner
            .runtime
            .exec(&id, req.command, timeout, MAX_OUTPUT_BYTES)
            .await
            .map_err(unavailable)?;
        Ok(ExecResponse {
            exit_code,
            stdout,
            stderr,
        })
    }
}

fn unavailable(e: crate::runtime::RuntimeError) -> WorkerError {
    match e {
        crate::runtime::RuntimeError::NotFound(m) => WorkerError::NotFound(m),
        other => WorkerError::Unavailable(other.to_string()),
    }
}

/// A log cursor (Docker's RFC 3339 timestamp) as (seconds, nanoseconds).
fn parse_cursor(text: &str) -> Result<(u64, u32), WorkerError> {
    let t = humantime::parse_rfc3339_weak(text).map_err(|_| {
        WorkerError::InvalidArgument(format!(
            "cursor {text:?} is not a timestamp from an earlier answer"
        ))
    })?;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok((d.as_secs(), d.subsec_nanos()))
}

//! The agent: the loop that applies the reconciler's plans to Docker, and
//! the shared state that the `Worker` service reads and writes.
//!
//! ```text
//!  probe (desired pods) ──▶ State ◀── operation results, liveness verdicts
//!                             │ wake
//!                             ▼
//!   every sync interval ─▶ round: list + inspect ─▶ reconcile ─▶ spawn operations
//!                                                                 (bounded, one per slot)
//! ```
//!
//! Invariants:
//! * One operation at a time per container and per slot (`busy_*`), so the
//!   reconciler's "one container per slot" holds while operations run.
//! * At most `max_parallel_ops` Docker operations run at once.
//! * The loop also runs on its own schedule, so a container killed or
//!   removed behind the worker's back is noticed within one sync interval.
//! * Nothing is stopped before the first desired set arrives (fail-static):
//!   when every master is unreachable, pods keep running as they are.
//!   Nor while a desired set sent in parts (`ProbeRequest::more`) is still
//!   arriving: the pods of its later parts are not missing.

mod actions;
mod probes;
mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use api::event::{Event, EventType};
use api::node::Resources;
use api::pod::Pod;
use api::worker::{Fence, SequencedEvent};
use tokio::sync::{Notify, Semaphore};

use crate::model::{Observed, RunState, Slot};
use crate::reconcile::{Backoff, Inputs, Plan, reconcile};
use crate::runtime::{Details, MachineInfo, Runtime, Sample, now_ms, now_rfc3339};
use crate::status::SlotRecord;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How many events a worker keeps for masters to collect.
pub const EVENT_RING: usize = 1_000;

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's name (the `mkube.node` label of its containers).
    pub node: String,
    /// Where masters reach this worker's RPC server.
    pub address: String,
    /// The address at which pods' host ports answer.
    pub host_ip: String,
    /// The node's labels.
    pub labels: BTreeMap<String, String>,
    /// Restart back-off.
    pub backoff: Backoff,
    /// How often a round runs when nothing wakes it.
    pub sync_interval: Duration,
    /// Docker operations in flight at most.
    pub max_parallel_ops: usize,
    /// The network mode of each pod's first container: `None` for Docker's
    /// default bridge with host ports published, or `container:<worker>` to
    /// put pods in the worker's own network namespace (local clusters).
    pub pod_network: Option<String>,
    /// Publish host ports on this address only (several workers on one
    /// machine, each with its own address); all addresses when `None`.
    pub publish_ip: Option<String>,
    /// cpu and memory kept back from pods.
    pub reserved: Resources,
    /// How often container stats are sampled.
    pub stats_interval: Duration,
    /// The resolver pods get (kubelet's `--cluster-dns`): the masters' DNS
    /// servers. Empty: pods use Docker's default (the host's resolver).
    pub cluster_dns: Vec<String>,
    /// The cluster domain, for pods' search path.
    pub cluster_domain: String,
}

/// Everything the loop and the service share.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub fence: Fence,
    pub version: u64,
    pub synced: bool,
    /// A sync in parts is still arriving (`ProbeRequest::more`): the
    /// desired set is not whole, so no container is removed for lacking a pod.
    pub partial: bool,
    /// Desired pods by uid.
    pub desired: BTreeMap<String, Pod>,
    pub records: BTreeMap<Slot, SlotRecord>,
    pub busy_ids: BTreeSet<String>,
    pub busy_slots: BTreeSet<Slot>,
    /// Operations finished so far: the clock of `finished_ids` and
    /// `finished_slots`.
    pub ops_finished: u64,
    /// Containers and slots whose last operation finished at that count. A
    /// round that began observing before then may have seen them
    /// mid-operation (a container listed as created between its create and
    /// its start), so it leaves them alone as if still busy.
    pub finished_ids: HashMap<String, u64>,
    pub finished_slots: HashMap<Slot, u64>,
    pub observed: Vec<Observed>,
    pub details: HashMap<String, Details>,
    /// Inspections by container id, valid while the listed state is unchanged.
    pub inspected: HashMap<String, (String, Observed, Details)>,
    pub events: VecDeque<SequencedEvent>,
    pub next_event_seq: u64,
    /// Set while Docker does not answer.
    pub runtime_error: Option<String>,
    pub usage: Resources,
    pub samples: HashMap<String, (u64, Sample)>,
    /// When each pod was first seen running (RFC 3339).
    pub start_times: HashMap<String, String>,
    pub probes_received: u64,
    pub rounds: u64,
    /// Grace of deleted pods whose deletion set one, by uid (kept while
    /// their containers are).
    pub delete_grace: BTreeMap<String, u64>,
}

impl State {
    /// An operation on container `id` and/or `slot` finished: neither is
    /// busy any more, and rounds that began observing before now treat them
    /// as busy still (see `finished_ids`).
    pub fn finish(&mut self, id: Option<&str>, slot: Option<&Slot>) {
        self.ops_finished += 1;
        if let Some(id) = id {
            self.busy_ids.remove(id);
            self.finished_ids.insert(id.to_string(), self.ops_finished);
        }
        if let Some(slot) = slot {
            self.busy_slots.remove(slot);
            self.finished_slots.insert(slot.clone(), self.ops_finished);
        }
    }

    /// What a round whose observation began at `since` (an `ops_finished`
    /// count) must leave alone: the busy containers and slots, and those
    /// whose operation finished after `since`. Forgets what finished
    /// earlier, which no later round can have seen mid-operation (rounds
    /// run one after another).
    pub fn busy_since(&mut self, since: u64) -> (BTreeSet<String>, BTreeSet<Slot>) {
        self.finished_ids.retain(|_, at| *at > since);
        self.finished_slots.retain(|_, at| *at > since);
        let ids = self
            .busy_ids
            .iter()
            .chain(self.finished_ids.keys())
            .cloned()
            .collect();
        let slots = self
            .busy_slots
            .iter()
            .chain(self.finished_slots.keys())
            .cloned()
            .collect();
        (ids, slots)
    }
}

/// The node agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: AgentConfig,
    pub runtime: Runtime,
    pub machine: MachineInfo,
    pub state: Mutex<State>,
    pub wake: Notify,
    pub ops: Semaphore,
}

impl Agent {
    /// An agent on a connected runtime.
    pub async fn new(
        config: AgentConfig,
        runtime: Runtime,
    ) -> Result<Agent, crate::runtime::RuntimeError> {
        let machine = runtime.machine().await?;
        let ops = Semaphore::new(config.max_parallel_ops.max(1));
        Ok(Agent {
            inner: Arc::new(Inner {
                config,
                runtime,
                machine,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                ops,
            }),
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written
        // in a way later rounds would trip over: every field is rebuilt or
        // checked by the next round, so a poisoned lock is used as is.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent's settings.
    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    /// Runs rounds until `shutdown` resolves. Pods are left running on exit.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_stats = 0u64;
        // Exits wake the loop at once; should the event stream fail, the
        // sync interval still notices them.
        let watcher = tokio::spawn({
            let agent = self.clone();
            async move {
                loop {
                    let wake = || agent.wake();
                    let wake: &(dyn Fn() + Send + Sync) = &wake;
                    let node = &agent.inner.config.node;
                    if let Err(e) = agent.inner.runtime.watch_exits(node, wake).await {
                        tracing::debug!(error = %e, "container events: the stream failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        let _stop_watcher = AbortOnDrop(watcher);
        loop {
            self.round().await;
            let now = now_ms();
            if now.saturating_sub(last_stats) >= millis(self.inner.config.stats_interval) {
                last_stats = now;
                let agent = self.clone();
                tokio::spawn(async move { agent.sample_stats().await });
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.inner.config.sync_interval) => {}
                _ = self.inner.wake.notified() => {}
            }
        }
    }

    /// One round: observe, decide, dispatch.
    pub(crate) async fn round(&self) {
        let since = self.state().ops_finished;
        let observed = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                let message = e.to_string();
                let mut state = self.state();
                if state.runtime_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, "the container runtime does not answer; node is NotReady");
                }
                state.runtime_error = Some(message);
                return;
            }
        };
        let plan = {
            let mut state = self.state();
            if state.runtime_error.take().is_some() {
                tracing::info!("the container runtime answers again; node is Ready");
            }
            state.rounds += 1;
            state.observed = observed.iter().map(|(o, _)| o.clone()).collect();
            state.details = observed.into_iter().map(|(o, d)| (o.id, d)).collect();
            self.forget_gone_slots(&mut state);
            let desired: Vec<Pod> = state.desired.values().cloned().collect();
            let memory: BTreeMap<Slot, _> = state
                .records
                .iter()
                .map(|(s, r)| (s.clone(), r.memory.clone()))
                .collect();
            let (busy_ids, busy_slots) = state.busy_since(since);
            let plan = reconcile(&Inputs {
                node: &self.inner.config.node,
                desired: &desired,
                synced: state.synced && !state.partial,
                observed: &state.observed,
                memory: &memory,
                busy_ids: &busy_ids,
                busy_slots: &busy_slots,
                backoff: self.inner.config.backoff,
                now_ms: now_ms(),
                delete_grace: &state.delete_grace,
            });
            (plan, desired)
        };
        self.dispatch(plan.0, plan.1);
        self.start_liveness_probes();
    }

    /// Lists our containers and inspects those whose state changed.
    async fn observe(&self) -> Result<Vec<(Observed, Details)>, crate::runtime::RuntimeError> {
        let listed = self.inner.runtime.list(&self.inner.config.node).await?;
        let mut out = Vec::with_capacity(listed.len());
        let mut fresh = HashMap::new();
        for (id, labels, coarse) in listed {
            let cached = self
                .state()
                .inspected
                .get(&id)
                .filter(|(s, _, _)| *s == coarse)
                .cloned();
            let (observed, details) = match cached {
                Some((_, o, d)) => (o, d),
                None => match self.inner.runtime.inspect(&id, &labels).await {
                    Ok((observed, mut details)) => {
                        if matches!(observed.state, RunState::Exited { .. }) {
                            // Read once per exit; kept in the status, the
                            // output outlives the container.
                            details.output = self
                                .inner
                                .runtime
                                .output_tail(&id, api::pod::TERMINATION_MESSAGE_BYTES)
                                .await
                                .ok()
                                .filter(|t| !t.is_empty());
                        }
                        (observed, details)
                    }
                    Err(crate::runtime::RuntimeError::NotFound(_)) => continue, // removed meanwhile
                    Err(e) => return Err(e),
                },
            };
            fresh.insert(id.clone(), (coarse, observed.clone(), details.clone()));
            out.push((observed, details));
        }
        self.state().inspected = fresh;
        Ok(out)
    }

    /// Drops records of slots that are neither desired nor have a container.
    fn forget_gone_slots(&self, state: &mut State) {
        let State {
            records,
            desired,
            observed,
            busy_slots,
            ..
        } = state;
        records.retain(|slot, _| {
            desired.contains_key(&slot.uid)
                || busy_slots.contains(slot)
                || observed.iter().any(|o| o.slot.as_ref() == Some(slot))
        });
        let uids: BTreeSet<String> = records.keys().map(|s| s.uid.clone()).collect();
        state
            .start_times
            .retain(|uid, _| uids.contains(uid) || state.desired.contains_key(uid));
        let present: BTreeSet<&str> = state
            .observed
            .iter()
            .filter_map(|o| o.slot.as_ref().map(|s| s.uid.as_str()))
            .collect();
        state
            .delete_grace
            .retain(|uid, _| present.contains(uid.as_str()));
    }

    /// Records an event about a pod.
    pub(crate) fn event(
        &self,
        state: &mut State,
        pod: (&str, &str, &str),
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        let (namespace, name, uid) = pod;
        state.next_event_seq += 1;
        let event = Event {
            kind: "Pod".into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            reason: reason.into(),
            message,
            type_,
            source: format!("worker/{}", self.inner.config.node),
            timestamp: now_rfc3339(),
        };
        state.events.push_back(SequencedEvent {
            seq: state.next_event_seq,
            event,
        });
        while state.events.len() > EVENT_RING {
            state.events.pop_front();
        }
    }

    /// Wakes the loop for a round now.
    pub(crate) fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// How many rounds have run (for tests that wait on the loop).
    pub fn rounds(&self) -> u64 {
        self.state().rounds
    }

    fn dispatch(&self, plan: Plan, desired: Vec<Pod>) {
        actions::dispatch(self, plan, desired);
    }

    fn start_liveness_probes(&self) {
        probes::start_due(self);
    }

    /// Samples every running container of this node and updates the usage.
    async fn sample_stats(&self) {
        let running: Vec<String> = self
            .state()
            .observed
            .iter()
            .filter(|o| o.node == self.inner.config.node && o.is_running())
            .map(|o| o.id.clone())
            .collect();
        let mut samples = HashMap::new();
        for id in running {
            if let Ok(s) = self.inner.runtime.sample(&id).await {
                samples.insert(id, (now_ms(), s));
            }
        }
        let mut state = self.state();
        let mut usage = Resources::default();
        for (id, (at, s)) in &samples {
            usage.memory_bytes = usage.memory_bytes.saturating_add(s.memory_bytes);
            if let Some((prev_at, prev)) = state.samples.get(id)
                && *at > *prev_at
            {
                let cpu_ns = s.cpu_total_ns.saturating_sub(prev.cpu_total_ns);
                usage.cpu_millis = usage
                    .cpu_millis
                    .saturating_add(cpu_ns / 1_000 / (at - prev_at).max(1));
            }
        }
        state.samples = samples;
        state.usage = usage;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(uid: &str) -> Slot {
        Slot {
            uid: uid.into(),
            container: "c".into(),
        }
    }

    #[test]
    fn a_round_leaves_alone_what_finished_while_it_observed() {
        let mut state = State::default();
        state.busy_slots.insert(slot("a"));
        state.busy_slots.insert(slot("b"));
        state.busy_ids.insert("old".into());
        // Round 1 starts observing; meanwhile "a" is created (as "x") and
        // the stop of "old" finishes.
        let since = state.ops_finished;
        state.finish(Some("x"), Some(&slot("a")));
        state.finish(Some("old"), None);
        let (ids, slots) = state.busy_since(since);
        assert_eq!(ids, ["old".to_string(), "x".to_string()].into());
        assert_eq!(slots, [slot("a"), slot("b")].into());
        // Round 2 observes after both finished: only "b" is still busy.
        let since = state.ops_finished;
        let (ids, slots) = state.busy_since(since);
        assert!(ids.is_empty(), "{ids:?}");
        assert_eq!(slots, [slot("b")].into());
        assert!(state.finished_ids.is_empty() && state.finished_slots.is_empty());
    }
}

//! The pure reconciler: `reconcile(desired, observed, now) -> Plan`.
//!
//! ```text
//!  desired pods ─┐
//!  observed ─────┼─▶ reconcile ─▶ Plan { create, start, stop, remove, keep, backoff }
//!  slot memory ──┤                        │
//!  now, config ──┘              agent applies it with bollard, updates memory
//! ```
//!
//! No I/O, no clock: the caller passes `now_ms` and what it remembers per
//! slot (restart count, liveness verdict, retry time after a failed
//! operation) and which containers and slots have an operation in flight.
//!
//! Invariants (property-tested below):
//! * Only containers whose node label is this node ever appear in a plan.
//! * A slot never gets a create while any container of that slot exists, and
//!   never more than one create or start per round: at most one container
//!   per slot runs.
//! * Busy slots and containers (an operation in flight) are left alone.
//! * Before the first desired set arrives (`synced == false`) nothing is
//!   stopped or removed: a restarted worker adopts its containers instead of
//!   killing them ("fail-static").
//! * Applying plans converges: from any observed state, desired pods whose
//!   containers keep running end up with exactly one running container per
//!   slot and no other container of this node remains.

use std::collections::{BTreeMap, BTreeSet};

use api::pod::{Pod, RestartPolicy};

use crate::model::{Observed, RunState, Slot, spec_hash};

/// The grace period for containers that carry none (not created by a
/// worker of this version).
pub const UNKNOWN_GRACE_SECONDS: u64 = 10;

/// Exponential back-off between restarts of a crashing container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second restart (the first is immediate); kubelet: 10 s.
    pub initial_ms: u64,
    /// The cap; kubelet: 5 min. A container that ran twice this long
    /// before exiting restarts at once again.
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 10_000,
            max_ms: 300_000,
        }
    }
}

impl Backoff {
    /// The delay before restarting a container that has restarted
    /// `restart_count` times and ran `ran_ms` before its last exit.
    pub fn delay_ms(&self, restart_count: u32, ran_ms: u64) -> u64 {
        if restart_count == 0 || ran_ms >= self.max_ms.saturating_mul(2) {
            return 0;
        }
        let doublings = (restart_count - 1).min(32);
        self.initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms)
    }
}

/// What the agent remembers about a slot between rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMemory {
    /// Restarts so far (not counting the first start).
    pub restart_count: u32,
    /// The liveness probe has failed `failureThreshold` times in a row.
    pub liveness_failed: bool,
    /// An operation failed (pull, create, start): do not retry before this.
    pub retry_at_ms: u64,
}

/// Everything a round looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// This node's name.
    pub node: &'a str,
    /// The pods bound to this node, each with a uid.
    pub desired: &'a [Pod],
    /// Whether `desired` has been received since the worker started.
    pub synced: bool,
    /// Every container with an mkube node label, of any node.
    pub observed: &'a [Observed],
    /// Per-slot memory.
    pub memory: &'a BTreeMap<Slot, SlotMemory>,
    /// Containers with an operation in flight.
    pub busy_ids: &'a BTreeSet<String>,
    /// Slots with an operation in flight.
    pub busy_slots: &'a BTreeSet<Slot>,
    /// Restart back-off.
    pub backoff: Backoff,
    /// The current time.
    pub now_ms: u64,
    /// Grace of deleted pods whose deletion set one, by uid: it replaces the
    /// grace their containers' labels carry.
    pub delete_grace: &'a BTreeMap<String, u64>,
}

/// Create and start a slot's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// The slot.
    pub slot: Slot,
    /// Index of the pod in `desired`.
    pub pod: usize,
    /// Index of the container in the pod's spec.
    pub container: usize,
    /// For containers after the first: the running first container whose
    /// network namespace this one joins.
    pub join_network_of: Option<String>,
}

/// Stop a container: SIGTERM, SIGKILL after the grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The container.
    pub id: String,
    /// Its slot, if it has one.
    pub slot: Option<Slot>,
    /// Seconds between SIGTERM and SIGKILL.
    pub grace_seconds: u64,
    /// Why.
    pub reason: StopReason,
    /// Remove it once stopped.
    pub remove: bool,
}

/// Why a container is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its pod is no longer bound to this node.
    PodDeleted,
    /// Its liveness probe failed.
    LivenessFailed,
    /// Its spec changed (it will be re-created).
    SpecChanged,
    /// The pod's first container restarted: the network it joined is gone.
    SandboxChanged,
    /// A second container of the same slot.
    Duplicate,
}

/// The decisions of one round, in named buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Containers to create and start.
    pub create: Vec<Create>,
    /// Exited or created containers to start again (a restart).
    pub start: Vec<(String, Slot)>,
    /// Running containers to stop.
    pub stop: Vec<Stop>,
    /// Stopped containers to remove.
    pub remove: Vec<String>,
    /// Containers left as they are.
    pub keep: Vec<String>,
    /// Slots waiting for their back-off or retry time to pass, and until when.
    pub backoff: Vec<(Slot, u64)>,
}

impl Plan {
    /// Whether the round changes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.start.is_empty()
            && self.stop.is_empty()
            && self.remove.is_empty()
    }
}

/// Decides one round. See the module doc for the invariants.
pub fn reconcile(inputs: &Inputs<'_>) -> Plan {
    let mut plan = Plan::default();
    let ours: Vec<&Observed> = inputs
        .observed
        .iter()
        .filter(|o| o.node == inputs.node)
        .collect();
    let mut by_slot: BTreeMap<&Slot, Vec<&Observed>> = BTreeMap::new();
    let mut unowned: Vec<&Observed> = Vec::new();
    for o in &ours {
        match &o.slot {
            Some(slot) => by_slot.entry(slot).or_default().push(o),
            None => unowned.push(o),
        }
    }
    let mut wanted: BTreeSet<Slot> = BTreeSet::new();
    for (p, pod) in inputs.desired.iter().enumerate() {
        for (i, c) in pod.spec.containers.iter().enumerate() {
            let slot = Slot {
                uid: pod.metadata.uid.clone(),
                container: c.name.clone(),
            };
            wanted.insert(slot.clone());
            let existing = by_slot.remove(&slot).unwrap_or_default();
            reconcile_slot(inputs, &mut plan, (p, pod), i, slot, &existing, &ours);
        }
    }
    if inputs.synced {
        let leftovers = by_slot.into_values().flatten().chain(unowned);
        for o in leftovers {
            if !inputs.busy_ids.contains(&o.id)
                && !o
                    .slot
                    .as_ref()
                    .is_some_and(|s| inputs.busy_slots.contains(s))
            {
                let grace = o
                    .slot
                    .as_ref()
                    .and_then(|s| inputs.delete_grace.get(&s.uid).copied())
                    .or(o.grace_seconds)
                    .unwrap_or(UNKNOWN_GRACE_SECONDS);
                retire(&mut plan, o, grace, StopReason::PodDeleted);
            }
        }
    } else {
        plan.keep.extend(
            by_slot
                .into_values()
                .flatten()
                .chain(unowned)
                .map(|o| o.id.clone()),
        );
    }
    plan
}

/// Stops (and removes) a running container, or removes a stopped one.
fn retire(plan: &mut Plan, o: &Observed, grace_seconds: u64, reason: StopReason) {
    match o.state {
        RunState::Running { .. } => plan.stop.push(Stop {
            id: o.id.clone(),
            slot: o.slot.clone(),
            grace_seconds,
            reason,
            remove: true,
        }),
        RunState::Other(_) => plan.keep.push(o.id.clone()),
        _ => plan.remove.push(o.id.clone()),
    }
}

fn reconcile_slot(
    inputs: &Inputs<'_>,
    plan: &mut Plan,
    (p, pod): (usize, &Pod),
    index: usize,
    slot: Slot,
    existing: &[&Observed],
    ours: &[&Observed],
) {
    if inputs.busy_slots.contains(&slot) || existing.iter().any(|o| inputs.busy_ids.contains(&o.id))
    {
        plan.keep.extend(existing.iter().map(|o| o.id.clone()));
        return;
    }
    let grace = pod.spec.grace_period_seconds();
    let hash = spec_hash(pod, index);
    let (current, stale): (Vec<&Observed>, Vec<&Observed>) =
        existing.iter().partition(|o| o.spec_hash == hash);
    for o in &stale {
        retire(plan, o, grace, StopReason::SpecChanged);
    }
    // Keep the most advanced container of the slot; any other is a duplicate.
    let mut current = current;
    current.sort_by_key(|o| std::cmp::Reverse(rank(o)));
    for o in current.iter().skip(1) {
        retire(plan, o, grace, StopReason::Duplicate);
    }
    let memory = inputs.memory.get(&slot).cloned().unwrap_or_default();
    let sandbox = sandbox_of(pod, index, ours);
    if !stale.is_empty() && !current.first().is_some_and(|o| o.is_running()) {
        // Start or create only once the stale container is gone.
        plan.keep
            .extend(current.iter().take(1).map(|o| o.id.clone()));
        return;
    }
    let Some(o) = current.first() else {
        if inputs.now_ms < memory.retry_at_ms {
            plan.backoff.push((slot, memory.retry_at_ms));
            return;
        }
        match sandbox {
            Sandbox::Own => plan.create.push(Create {
                slot,
                pod: p,
                container: index,
                join_network_of: None,
            }),
            Sandbox::Join { id, .. } => plan.create.push(Create {
                slot,
                pod: p,
                container: index,
                join_network_of: Some(id),
            }),
            Sandbox::NotRunning => {} // wait for the first container
        }
        return;
    };
    match &o.state {
        RunState::Running { started_at_ms } => {
            if let Sandbox::Join {
                started_at_ms: sandbox_started,
                ..
            } = sandbox
                && sandbox_started > *started_at_ms
            {
                plan.stop
                    .push(stop(o, slot, grace, StopReason::SandboxChanged, true));
            } else if matches!(sandbox, Sandbox::NotRunning) {
                plan.stop
                    .push(stop(o, slot, grace, StopReason::SandboxChanged, true));
            } else if memory.liveness_failed {
                plan.stop
                    .push(stop(o, slot, grace, StopReason::LivenessFailed, false));
            } else {
                plan.keep.push(o.id.clone());
            }
        }
        RunState::Created => restart_when_due(inputs, plan, o, slot, &memory, sandbox, 0),
        RunState::Exited {
            exit_code,
            started_at_ms,
            finished_at_ms,
            ..
        } => {
            if !will_restart(pod.spec.restart_policy, *exit_code, memory.liveness_failed) {
                plan.keep.push(o.id.clone());
                return;
            }
            let ran_ms = finished_at_ms.saturating_sub(*started_at_ms);
            let due = finished_at_ms
                .saturating_add(inputs.backoff.delay_ms(memory.restart_count, ran_ms));
            restart_when_due(inputs, plan, o, slot, &memory, sandbox, due);
        }
        RunState::Other(_) => plan.keep.push(o.id.clone()),
    }
}

/// Whether a container that exited with `exit_code` is restarted: by its
/// pod's policy, or because its liveness probe killed it (unless `Never`).
pub fn will_restart(policy: RestartPolicy, exit_code: i64, liveness_failed: bool) -> bool {
    policy.restarts(exit_code) || (liveness_failed && policy != RestartPolicy::Never)
}

fn stop(o: &Observed, slot: Slot, grace_seconds: u64, reason: StopReason, remove: bool) -> Stop {
    Stop {
        id: o.id.clone(),
        slot: Some(slot),
        grace_seconds,
        reason,
        remove,
    }
}

fn restart_when_due(
    inputs: &Inputs<'_>,
    plan: &mut Plan,
    o: &Observed,
    slot: Slot,
    memory: &SlotMemory,
    sandbox: Sandbox,
    due_ms: u64,
) {
    let due_ms = due_ms.max(memory.retry_at_ms);
    if inputs.now_ms < due_ms {
        plan.backoff.push((slot, due_ms));
        plan.keep.push(o.id.clone());
    } else if let Sandbox::Join { .. } = sandbox {
        // It joined a network that may be gone: re-create rather than restart.
        plan.remove.push(o.id.clone());
    } else if let Sandbox::NotRunning = sandbox {
        plan.keep.push(o.id.clone());
    } else {
        plan.start.push((o.id.clone(), slot));
    }
}

/// Orders a slot's containers: running first, then the most recent.
fn rank(o: &Observed) -> (u8, u64) {
    match o.state {
        RunState::Running { started_at_ms } => (3, started_at_ms),
        RunState::Exited { finished_at_ms, .. } => (2, finished_at_ms),
        RunState::Created => (1, 0),
        RunState::Other(_) => (0, 0),
    }
}

/// Whose network a pod's container lives in.
enum Sandbox {
    /// The first container: it holds the pod's network.
    Own,
    /// A later container: joins the running first container.
    Join { id: String, started_at_ms: u64 },
    /// A later container whose first container is not running.
    NotRunning,
}

fn sandbox_of(pod: &Pod, index: usize, ours: &[&Observed]) -> Sandbox {
    if index == 0 {
        return Sandbox::Own;
    }
    let Some(first) = pod.spec.containers.first() else {
        return Sandbox::NotRunning;
    };
    let hash = spec_hash(pod, 0);
    ours.iter()
        .filter(|o| {
            o.slot
                .as_ref()
                .is_some_and(|s| s.uid == pod.metadata.uid && s.container == first.name)
                && o.spec_hash == hash
        })
        .find_map(|o| match o.state {
            RunState::Running { started_at_ms } => Some(Sandbox::Join {
                id: o.id.clone(),
                started_at_ms,
            }),
            _ => None,
        })
        .unwrap_or(Sandbox::NotRunning)
}

#[cfg(test)]
mod tests;

//! Unit tests of single decisions, then properties over random worlds.

use std::collections::{BTreeMap, BTreeSet};

use api::pod::{Container, Pod, PodSpec, RestartPolicy};
use proptest::prelude::*;

use super::*;
use crate::model::{Observed, RunState, Slot, spec_hash};

const NODE: &str = "n1";
const BACKOFF: Backoff = Backoff {
    initial_ms: 200,
    max_ms: 1_000,
};

fn pod(uid: &str, containers: usize, policy: RestartPolicy) -> Pod {
    let containers = (0..containers)
        .map(|i| Container::new(format!("c{i}"), "busybox"))
        .collect();
    let mut p = Pod::new(
        format!("pod-{uid}"),
        PodSpec {
            containers,
            restart_policy: policy,
            termination_grace_period_seconds: Some(7),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            node_name: Some(NODE.into()),
        },
    );
    p.metadata.uid = uid.into();
    p
}

fn observed(id: &str, node: &str, pod: &Pod, index: usize, state: RunState) -> Observed {
    Observed {
        id: id.into(),
        node: node.into(),
        pod: pod.key(),
        slot: Some(Slot {
            uid: pod.metadata.uid.clone(),
            container: format!("c{index}"),
        }),
        spec_hash: spec_hash(pod, index),
        grace_seconds: Some(pod.spec.grace_period_seconds()),
        state,
    }
}

#[derive(Debug, Clone)]
struct World {
    desired: Vec<Pod>,
    observed: Vec<Observed>,
    memory: BTreeMap<Slot, SlotMemory>,
    synced: bool,
    now_ms: u64,
}

impl World {
    fn new(desired: Vec<Pod>, observed: Vec<Observed>) -> Self {
        World {
            desired,
            observed,
            memory: BTreeMap::new(),
            synced: true,
            now_ms: 10_000,
        }
    }

    fn plan(&self) -> Plan {
        let (busy_ids, busy_slots) = (BTreeSet::new(), BTreeSet::new());
        reconcile(&Inputs {
            node: NODE,
            desired: &self.desired,
            synced: self.synced,
            observed: &self.observed,
            memory: &self.memory,
            busy_ids: &busy_ids,
            busy_slots: &busy_slots,
            backoff: BACKOFF,
            now_ms: self.now_ms,
            delete_grace: &BTreeMap::new(),
        })
    }

    /// Applies a plan the way Docker would, instantly; started containers keep running.
    fn apply(&mut self, plan: &Plan, next_id: &mut u64) {
        let now = self.now_ms;
        for s in &plan.stop {
            if let Some(o) = self.observed.iter_mut().find(|o| o.id == s.id) {
                let started = match o.state {
                    RunState::Running { started_at_ms } => started_at_ms,
                    _ => now,
                };
                o.state = RunState::Exited {
                    exit_code: 143,
                    started_at_ms: started,
                    finished_at_ms: now,
                    oom_killed: false,
                };
            }
            if s.remove {
                self.observed.retain(|o| o.id != s.id);
            }
            if let Some(slot) = &s.slot
                && let Some(m) = self.memory.get_mut(slot)
            {
                m.liveness_failed = false;
            }
        }
        for id in &plan.remove {
            self.observed.retain(|o| &o.id != id);
        }
        for (id, slot) in &plan.start {
            if let Some(o) = self.observed.iter_mut().find(|o| &o.id == id) {
                o.state = RunState::Running { started_at_ms: now };
            }
            self.memory.entry(slot.clone()).or_default().restart_count += 1;
        }
        for c in &plan.create {
            *next_id += 1;
            let pod = &self.desired[c.pod];
            self.observed.push(observed(
                &format!("new{next_id}"),
                NODE,
                pod,
                c.container,
                RunState::Running { started_at_ms: now },
            ));
        }
    }
}

fn slots_touched(plan: &Plan) -> Vec<String> {
    let mut ids: Vec<String> = plan.stop.iter().map(|s| s.id.clone()).collect();
    ids.extend(plan.remove.iter().cloned());
    ids.extend(plan.start.iter().map(|(id, _)| id.clone()));
    ids
}

#[test]
fn a_new_pod_creates_its_first_container_then_the_others_join_its_network() {
    let p = pod("u1", 2, RestartPolicy::Always);
    let mut w = World::new(vec![p.clone()], vec![]);
    let plan = w.plan();
    assert_eq!(
        plan.create,
        vec![Create {
            slot: Slot {
                uid: "u1".into(),
                container: "c0".into()
            },
            pod: 0,
            container: 0,
            join_network_of: None
        }]
    );
    w.observed.push(observed(
        "a",
        NODE,
        &p,
        0,
        RunState::Running { started_at_ms: 1 },
    ));
    let plan = w.plan();
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].join_network_of.as_deref(), Some("a"));
    assert_eq!(plan.keep, vec!["a".to_string()]);
}

#[test]
fn a_failed_container_restarts_at_once_then_with_doubling_back_off() {
    let p = pod("u1", 1, RestartPolicy::OnFailure);
    let slot = Slot {
        uid: "u1".into(),
        container: "c0".into(),
    };
    let exited = RunState::Exited {
        exit_code: 1,
        started_at_ms: 9_000,
        finished_at_ms: 9_900,
        oom_killed: false,
    };
    let mut w = World::new(vec![p.clone()], vec![observed("a", NODE, &p, 0, exited)]);
    assert_eq!(w.plan().start, vec![("a".to_string(), slot.clone())]);
    w.memory.insert(
        slot.clone(),
        SlotMemory {
            restart_count: 3,
            ..Default::default()
        },
    );
    let plan = w.plan();
    assert!(plan.start.is_empty());
    assert_eq!(plan.backoff, vec![(slot.clone(), 9_900 + 800)]);
    w.now_ms = 10_700;
    assert_eq!(w.plan().start.len(), 1);
    w.memory.insert(
        slot.clone(),
        SlotMemory {
            restart_count: 30,
            ..Default::default()
        },
    );
    assert_eq!(
        w.plan().backoff,
        vec![(slot, 9_900 + 1_000)],
        "capped at max"
    );
}

#[test]
fn exit_codes_meet_the_restart_policy() {
    for (policy, code, restarts) in [
        (RestartPolicy::Never, 1, false),
        (RestartPolicy::Never, 0, false),
        (RestartPolicy::OnFailure, 0, false),
        (RestartPolicy::OnFailure, 2, true),
        (RestartPolicy::Always, 0, true),
    ] {
        let p = pod("u1", 1, policy);
        let exited = RunState::Exited {
            exit_code: code,
            started_at_ms: 1,
            finished_at_ms: 2,
            oom_killed: false,
        };
        let w = World::new(vec![p.clone()], vec![observed("a", NODE, &p, 0, exited)]);
        let plan = w.plan();
        assert_eq!(!plan.start.is_empty(), restarts, "{policy:?} exit {code}");
        assert!(plan.create.is_empty() && plan.remove.is_empty());
    }
}

#[test]
fn a_deleted_pod_is_stopped_with_its_grace_period_and_removed() {
    let p = pod("u1", 1, RestartPolicy::Always);
    let gone = pod("u2", 1, RestartPolicy::Always);
    let exited = RunState::Exited {
        exit_code: 0,
        started_at_ms: 1,
        finished_at_ms: 2,
        oom_killed: false,
    };
    let w = World::new(
        vec![p.clone()],
        vec![
            observed("a", NODE, &p, 0, RunState::Running { started_at_ms: 1 }),
            observed("b", NODE, &gone, 0, RunState::Running { started_at_ms: 1 }),
            observed("c", NODE, &gone, 0, exited),
        ],
    );
    let plan = w.plan();
    assert_eq!(
        plan.stop,
        vec![Stop {
            id: "b".into(),
            slot: Some(Slot {
                uid: "u2".into(),
                container: "c0".into()
            }),
            grace_seconds: 7,
            reason: StopReason::PodDeleted,
            remove: true
        }]
    );
    assert_eq!(plan.remove, vec!["c".to_string()]);
}

#[test]
fn before_the_first_desired_set_nothing_is_removed() {
    let gone = pod("u2", 1, RestartPolicy::Always);
    let mut w = World::new(
        vec![],
        vec![observed(
            "b",
            NODE,
            &gone,
            0,
            RunState::Running { started_at_ms: 1 },
        )],
    );
    w.synced = false;
    let plan = w.plan();
    assert!(plan.is_empty());
    assert_eq!(plan.keep, vec!["b".to_string()]);
}

#[test]
fn another_nodes_containers_are_never_touched() {
    let p = pod("u1", 1, RestartPolicy::Always);
    let w = World::new(
        vec![p.clone()],
        vec![observed(
            "x",
            "n2",
            &p,
            0,
            RunState::Running { started_at_ms: 1 },
        )],
    );
    let plan = w.plan();
    assert_eq!(
        plan.create.len(),
        1,
        "the other node's container is not ours"
    );
    assert!(slots_touched(&plan).is_empty() && !plan.keep.contains(&"x".to_string()));
}

#[test]
fn a_failed_liveness_probe_stops_the_container_for_a_restart() {
    let p = pod("u1", 1, RestartPolicy::Always);
    let slot = Slot {
        uid: "u1".into(),
        container: "c0".into(),
    };
    let mut w = World::new(
        vec![p.clone()],
        vec![observed(
            "a",
            NODE,
            &p,
            0,
            RunState::Running { started_at_ms: 1 },
        )],
    );
    w.memory.insert(
        slot.clone(),
        SlotMemory {
            liveness_failed: true,
            ..Default::default()
        },
    );
    let plan = w.plan();
    assert_eq!(plan.stop.len(), 1);
    assert_eq!(
        (plan.stop[0].reason, plan.stop[0].remove),
        (StopReason::LivenessFailed, false)
    );
}

#[test]
fn a_changed_spec_replaces_the_container_in_two_rounds() {
    let p = pod("u1", 1, RestartPolicy::Always);
    let mut old = observed("a", NODE, &p, 0, RunState::Running { started_at_ms: 1 });
    old.spec_hash = "0000".into();
    let w = World::new(vec![p], vec![old]);
    let plan = w.plan();
    assert_eq!(plan.stop.len(), 1);
    assert_eq!(plan.stop[0].reason, StopReason::SpecChanged);
    assert!(plan.create.is_empty(), "never two containers for one slot");
}

#[test]
fn busy_slots_are_left_alone() {
    let p = pod("u1", 1, RestartPolicy::Always);
    let w = World::new(vec![p], vec![]);
    let busy_slots = BTreeSet::from([Slot {
        uid: "u1".into(),
        container: "c0".into(),
    }]);
    let plan = reconcile(&Inputs {
        node: NODE,
        desired: &w.desired,
        synced: true,
        observed: &w.observed,
        memory: &w.memory,
        busy_ids: &BTreeSet::new(),
        busy_slots: &busy_slots,
        backoff: BACKOFF,
        now_ms: 0,
        delete_grace: &BTreeMap::new(),
    });
    assert!(plan.is_empty());
}

// ---- properties -----------------------------------------------------------

fn arb_state(with_other: bool) -> impl Strategy<Value = RunState> {
    let base = prop_oneof![
        Just(RunState::Created),
        (0u64..20_000).prop_map(|t| RunState::Running { started_at_ms: t }),
        (-1i64..3, 0u64..10_000, 0u64..10_000).prop_map(|(code, a, b)| RunState::Exited {
            exit_code: code,
            started_at_ms: a.min(b),
            finished_at_ms: a.max(b),
            oom_killed: false
        }),
    ];
    if with_other {
        prop_oneof![4 => base, 1 => Just(RunState::Other("paused".into()))].boxed()
    } else {
        base.boxed()
    }
}

fn arb_policy() -> impl Strategy<Value = RestartPolicy> {
    prop_oneof![
        Just(RestartPolicy::Always),
        Just(RestartPolicy::OnFailure),
        Just(RestartPolicy::Never)
    ]
}

/// A random world: pods u0..u4 (some desired), containers of them on n1/n2,
/// with right or stale hashes, plus labelled containers without a slot.
fn arb_world(with_other: bool) -> impl Strategy<Value = World> {
    let pods = proptest::collection::vec((1usize..4, arb_policy(), any::<bool>()), 1..5);
    let containers = proptest::collection::vec(
        (
            0usize..5,
            0usize..3,
            any::<bool>(),
            0u8..10,
            arb_state(with_other),
        ),
        0..12,
    );
    let memory = proptest::collection::vec(
        (0usize..5, 0usize..3, 0u32..6, any::<bool>(), 0u64..20_000),
        0..6,
    );
    (pods, containers, memory, any::<bool>()).prop_map(|(pods, containers, memory, synced)| {
        let all: Vec<(Pod, bool)> = pods
            .iter()
            .enumerate()
            .map(|(i, (n, policy, desired))| (pod(&format!("u{i}"), *n, *policy), *desired))
            .collect();
        let mut observed = Vec::new();
        for (k, (p, c, other_node, hash_roll, state)) in containers.into_iter().enumerate() {
            let Some((pod, _)) = all.get(p) else { continue };
            let index = c.min(pod.spec.containers.len() - 1);
            let node = if other_node { "n2" } else { NODE };
            let mut o = observed_with(&format!("o{k}"), node, pod, index, state);
            match hash_roll {
                0 => o.spec_hash = "stale".into(),
                1 => o.slot = None,
                _ => {}
            }
            observed.push(o);
        }
        let mut mem = BTreeMap::new();
        for (p, c, restarts, failed, retry) in memory {
            mem.insert(
                Slot {
                    uid: format!("u{p}"),
                    container: format!("c{c}"),
                },
                SlotMemory {
                    restart_count: restarts,
                    liveness_failed: failed,
                    retry_at_ms: retry,
                },
            );
        }
        let desired = all
            .into_iter()
            .filter(|(_, d)| *d)
            .map(|(p, _)| p)
            .collect();
        World {
            desired,
            observed,
            memory: mem,
            synced,
            now_ms: 10_000,
        }
    })
}

fn observed_with(id: &str, node: &str, pod: &Pod, index: usize, state: RunState) -> Observed {
    observed(id, node, pod, index, state)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_touches_a_container_of_another_node(w in arb_world(true)) {
        let plan = w.plan();
        let foreign: BTreeSet<&str> = w.observed.iter().filter(|o| o.node != NODE).map(|o| o.id.as_str()).collect();
        for id in slots_touched(&plan) {
            prop_assert!(!foreign.contains(id.as_str()), "touched {id}");
        }
        for c in &plan.create {
            if let Some(net) = &c.join_network_of {
                prop_assert!(!foreign.contains(net.as_str()), "joined another node's network");
            }
        }
    }

    #[test]
    fn never_starts_two_containers_for_one_slot(w in arb_world(true)) {
        let plan = w.plan();
        let mut started: BTreeMap<Slot, usize> = BTreeMap::new();
        for c in &plan.create {
            *started.entry(c.slot.clone()).or_default() += 1;
            let exists = w.observed.iter().any(|o| o.node == NODE && o.slot.as_ref() == Some(&c.slot));
            prop_assert!(!exists, "created {:?} while a container of it exists", c.slot);
        }
        for (id, slot) in &plan.start {
            *started.entry(slot.clone()).or_default() += 1;
            let running = w.observed.iter().any(|o| o.node == NODE && o.slot.as_ref() == Some(slot) && o.is_running() && &o.id != id);
            prop_assert!(!running, "started {id} while {slot:?} already runs");
        }
        prop_assert!(started.values().all(|n| *n == 1), "{started:?}");
    }

    #[test]
    fn converges_to_the_desired_state(mut w in arb_world(false)) {
        w.synced = true;
        let mut next_id = 0;
        let mut steps = 0;
        loop {
            let plan = w.plan();
            if plan.is_empty() && plan.backoff.is_empty() {
                break;
            }
            prop_assert!(steps < 8, "no convergence after {steps} rounds: {plan:?}");
            w.apply(&plan, &mut next_id);
            w.now_ms += BACKOFF.max_ms + 20_000;
            steps += 1;
        }
        let wanted: BTreeSet<Slot> = w.desired.iter().flat_map(|p| {
            p.spec.containers.iter().map(|c| Slot { uid: p.metadata.uid.clone(), container: c.name.clone() })
        }).collect();
        let ours: Vec<&Observed> = w.observed.iter().filter(|o| o.node == NODE).collect();
        for o in &ours {
            prop_assert!(o.slot.as_ref().is_some_and(|s| wanted.contains(s)), "leftover {o:?}");
        }
        for p in &w.desired {
            for (i, c) in p.spec.containers.iter().enumerate() {
                let slot = Slot { uid: p.metadata.uid.clone(), container: c.name.clone() };
                let mine: Vec<&&Observed> = ours.iter().filter(|o| o.slot.as_ref() == Some(&slot)).collect();
                let first_runs = i == 0 || ours.iter().any(|o| o.slot.as_ref().is_some_and(|s| s.uid == slot.uid && s.container == "c0") && o.is_running());
                if p.spec.restart_policy == RestartPolicy::Always && first_runs {
                    prop_assert_eq!(mine.len(), 1, "slot {:?}", slot);
                    prop_assert!(mine[0].is_running(), "{:?} not running", mine[0]);
                } else {
                    prop_assert!(mine.len() <= 1, "slot {:?} has {}", slot, mine.len());
                }
            }
        }
    }
}

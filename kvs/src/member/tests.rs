//! Members driven together without a network: a queue between them that
//! the test can cut, lane by lane.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;
use crate::lifecycle::EpochId;

/// Three members and what is on its way between them.
struct Fleet {
    members: BTreeMap<String, Member>,
    queue: VecDeque<(String, String, Outgoing)>,
    /// Members that neither tick nor receive (a stopped process).
    stopped: BTreeSet<String>,
    /// Raft messages are lost (lifecycle messages still arrive).
    raft_cut: bool,
    now_ms: u64,
}

impl Fleet {
    fn new() -> Fleet {
        let names: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
        let fleet: BTreeMap<String, String> =
            names.iter().map(|n| (n.clone(), String::new())).collect();
        let members = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let member = Member::new(MemberConfig {
                    name: name.clone(),
                    fleet: fleet.clone(),
                    raft: Config::new(0, Vec::new()),
                    history_limit: 100,
                    limits: Limits::default(),
                    snapshot_entries: 1000,
                    seed: 7 + i as u64,
                });
                (name.clone(), member)
            })
            .collect();
        Fleet {
            members,
            queue: VecDeque::new(),
            stopped: BTreeSet::new(),
            raft_cut: false,
            now_ms: 0,
        }
    }

    /// One tick of every running member, then everything sent delivered.
    fn tick(&mut self) {
        self.now_ms += 10;
        let names: Vec<String> = self.members.keys().cloned().collect();
        for name in &names {
            if !self.stopped.contains(name) {
                self.input(name, Input::Tick);
            }
        }
        while let Some((from, to, message)) = self.queue.pop_front() {
            let lost = self.stopped.contains(&to)
                || (self.raft_cut && matches!(message, Outgoing::Raft(_)));
            if lost {
                continue;
            }
            let (messages, lifecycle) = match message {
                Outgoing::Raft(m) => (vec![m], Vec::new()),
                Outgoing::Lifecycle(m) => (Vec::new(), vec![m]),
            };
            self.input(
                &to,
                Input::Peer {
                    from,
                    messages,
                    lifecycle,
                },
            );
        }
    }

    /// Hands `input` to `name` and carries out what it asks (the export
    /// store is empty and every write to it succeeds).
    fn input(&mut self, name: &str, input: Input) {
        let mut next = VecDeque::from([input]);
        while let Some(input) = next.pop_front() {
            let Some(member) = self.members.get_mut(name) else {
                return;
            };
            member.handle(input, self.now_ms);
            member.act();
            for effect in member.take_effects() {
                match effect {
                    Effect::Send { to, message } => {
                        self.queue.push_back((name.to_string(), to, message))
                    }
                    Effect::LoadLatest(seq) => next.push_back(Input::LatestLoaded {
                        seq,
                        latest: Ok(None),
                    }),
                    Effect::EncodeSnapshot {
                        epoch,
                        index,
                        image,
                    } => next.push_back(Input::SnapshotEncoded {
                        epoch,
                        index,
                        bytes: image.encode(),
                    }),
                    _ => {}
                }
            }
        }
    }

    fn epoch(&self, name: &str) -> Option<EpochId> {
        self.members[name].lifecycle().epoch()
    }

    fn leader(&self) -> Option<String> {
        self.members
            .iter()
            .filter(|(n, _)| !self.stopped.contains(*n))
            .find(|(_, m)| {
                m.lifecycle()
                    .raft()
                    .is_some_and(|r| r.role() == Role::Leader && r.leads_with_quorum())
            })
            .map(|(n, _)| n.clone())
    }

    /// Ticks until `done` holds, for at most `ticks`.
    fn tick_until(&mut self, ticks: u64, what: &str, done: impl Fn(&Fleet) -> bool) {
        for _ in 0..ticks {
            if done(self) {
                return;
            }
            self.tick();
        }
        assert!(done(self), "not within {ticks} ticks: {what}");
    }
}

/// A founding cluster that has committed nothing yet, whose leader's
/// heartbeats stop arriving for a while (in CI: queued behind megabytes of
/// entries) but whose members still answer each other's probes, is alive:
/// its members keep it rather than start over empty.
#[test]
fn a_slow_founding_cluster_is_not_given_up() {
    let mut fleet = Fleet::new();
    fleet.tick_until(2_000, "a cluster forms and elects a leader", |f| {
        f.leader().is_some() && (1..=3).all(|i| f.epoch(&format!("n{i}")).is_some())
    });
    let epoch = fleet.epoch("n1");
    let leader = fleet.leader().unwrap_or_default();
    // One follower stops; the other and the leader stop hearing each
    // other's Raft messages, but not their lifecycle messages.
    let stopped = fleet
        .members
        .keys()
        .find(|n| **n != leader)
        .cloned()
        .unwrap_or_default();
    fleet.stopped.insert(stopped.clone());
    fleet.raft_cut = true;
    let orphan_ticks = 4 * u64::from(Config::new(0, Vec::new()).election_tick);
    for _ in 0..4 * orphan_ticks {
        fleet.tick();
        for name in fleet.members.keys().filter(|n| **n != stopped) {
            assert_eq!(fleet.epoch(name), epoch, "{name} left its cluster");
        }
    }
    // Once the Raft messages flow again, the same cluster leads on.
    fleet.raft_cut = false;
    fleet.tick_until(2_000, "a leader again", |f| f.leader().is_some());
    assert_eq!(fleet.epoch(&leader), epoch);
}

/// The leader's status says how its log reaches each member, so that a
/// member that stops catching up shows where; a follower's says nothing
/// of the kind (it does not know).
#[test]
fn the_leader_s_status_shows_each_member_s_replication() {
    let mut fleet = Fleet::new();
    fleet.tick_until(2_000, "a cluster forms and elects a leader", |f| {
        f.leader().is_some() && (1..=3).all(|i| f.epoch(&format!("n{i}")).is_some())
    });
    let leader = fleet.leader().unwrap_or_default();
    // Heartbeats answered: every member streams, level with the leader.
    fleet.tick_until(200, "every member replicating", |f| {
        f.members[&leader].status(f.now_ms).members.iter().all(|m| {
            m.replication
                .as_ref()
                .is_some_and(|r| r.state == "replicate")
        })
    });
    let status = fleet.members[&leader].status(fleet.now_ms);
    for m in &status.members {
        let r = m.replication.as_ref().expect("the leader knows");
        assert_eq!(r.match_index, status.commit_index, "{}", m.name);
        assert!(r.next_index > r.match_index);
    }
    for (name, member) in &fleet.members {
        if *name != leader {
            let s = member.status(fleet.now_ms);
            assert!(s.members.iter().all(|m| m.replication.is_none()), "{name}");
        }
    }
}

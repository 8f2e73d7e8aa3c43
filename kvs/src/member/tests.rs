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
    /// Restart this member empty instead of delivering it the Nth
    /// snapshot chunk (counted from when this is set).
    restart_at_chunk: Option<(String, usize)>,
    /// Members restarted so far (seeds the new incarnations).
    restarts: u64,
    /// Changes every member's configuration (restarted ones' too).
    adjust: Box<dyn Fn(&mut MemberConfig)>,
    now_ms: u64,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet::with(|_| {})
    }

    /// Three members whose configuration `adjust` changes.
    fn with(adjust: impl Fn(&mut MemberConfig) + 'static) -> Fleet {
        let mut fleet = Fleet {
            members: BTreeMap::new(),
            queue: VecDeque::new(),
            stopped: BTreeSet::new(),
            raft_cut: false,
            restart_at_chunk: None,
            restarts: 0,
            adjust: Box::new(adjust),
            now_ms: 0,
        };
        for i in 1..=3 {
            let name = format!("n{i}");
            let config = fleet.config(&name, 7 + i);
            fleet.members.insert(name, Member::new(config));
        }
        fleet
    }

    fn config(&self, name: &str, seed: u64) -> MemberConfig {
        let mut config = MemberConfig {
            name: name.to_string(),
            fleet: (1..=3).map(|i| (format!("n{i}"), String::new())).collect(),
            raft: Config::new(0, Vec::new()),
            history_limit: 100,
            limits: Limits::default(),
            snapshot_entries: 1000,
            seed,
        };
        (self.adjust)(&mut config);
        config
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
            let chunk = matches!(&message, Outgoing::Raft(m) if matches!(m.body, crate::raft::Body::InstallSnapshot { .. }));
            if chunk
                && let Some((victim, left)) = &mut self.restart_at_chunk
                && *victim == to
            {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    // The process dies with the chunk unread and comes back
                    // empty, as a new incarnation.
                    self.restart_at_chunk = None;
                    self.restarts += 1;
                    let config = self.config(&to, 1000 + self.restarts);
                    self.members.insert(to.clone(), Member::new(config));
                    continue;
                }
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
                    Effect::EncodeSnapshot { epoch, meta, image } => {
                        next.push_back(Input::SnapshotEncoded {
                            epoch,
                            meta,
                            bytes: image.encode(),
                        })
                    }
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

/// A follower restarted empty while the leader sends it a snapshot (the
/// old incarnation took some chunks and died): the new incarnation is sent
/// the snapshot from its start, installs it whole, and becomes a voter
/// holding exactly the leader's state.
#[test]
fn a_member_restarted_empty_mid_snapshot_installs_it_whole() {
    let mut fleet = Fleet::with(|c| {
        c.raft.snapshot_chunk_bytes = 256;
        c.raft.retain_entries = 0;
        c.snapshot_entries = 10;
    });
    fleet.tick_until(2_000, "a cluster forms and elects a leader", |f| {
        f.leader().is_some() && (1..=3).all(|i| f.epoch(&format!("n{i}")).is_some())
    });
    let leader = fleet.leader().unwrap_or_default();
    let victim = fleet
        .members
        .keys()
        .find(|n| **n != leader)
        .cloned()
        .unwrap_or_default();
    fleet.stopped.insert(victim.clone());
    for seq in 1..=300u64 {
        let request = TxnRequest {
            txn: Txn::single(crate::kv::Op::Put {
                key: format!("k{:03}", seq % 200),
                value: format!("value {seq}"),
            }),
            request_id: Some(crate::api::RequestId { client: 1, seq }),
            forwarded: false,
        };
        fleet.input(
            &leader,
            Input::Write {
                token: seq,
                request,
            },
        );
        fleet.tick();
    }
    let victim_applied = fleet.members[&victim]
        .lifecycle()
        .raft()
        .map_or(0, |r| r.log().applied);
    assert!(
        fleet.members[&leader]
            .lifecycle()
            .raft()
            .is_some_and(|r| r.snapshot_index() > victim_applied + 100),
        "the leader's log no longer reaches back to what the stopped member holds"
    );
    // Back, it is sent a snapshot of about 40 chunks; it dies at the fifth.
    fleet.restart_at_chunk = Some((victim.clone(), 5));
    fleet.stopped.remove(&victim);
    let old_id = fleet.members[&victim].id();
    fleet.tick_until(2_000, "the member is restarted mid-transfer", |f| {
        f.members[&victim].id() != old_id
    });
    fleet.tick_until(
        4_000,
        "the new incarnation is a voter level with the leader",
        |f| {
            let (Some(l), Some(v)) = (
                f.members[&leader].lifecycle().raft(),
                f.members[&victim].lifecycle().raft(),
            ) else {
                return false;
            };
            v.is_voter() && v.log().applied == l.log().applied
        },
    );
    let (l, v) = (&fleet.members[&leader], &fleet.members[&victim]);
    assert_eq!(
        v.sm.kv.state(),
        l.sm.kv.state(),
        "the same keys, values and revision"
    );
    assert_eq!(v.sm.kv.state().len(), 200);
    assert!(
        v.lifecycle()
            .raft()
            .is_some_and(|r| r.snapshot_index() > victim_applied),
        "it was brought up by a snapshot, not the log"
    );
}

//! Clients' requests on their way to a leader: a write is proposed when
//! this member leads, forwarded to the leader it knows otherwise, and held
//! while there is none; a read is started once a leader is known.
//!
//! Invariants: a held request is answered within `wait_ticks` (with the
//! last refusal, or `NoLeader`) unless it is out with a leader; a write
//! with a request id that is out with a leader is sent to the next leader
//! as soon as one appears (the old one may never answer; the id applies
//! it at most once), and the old leader's late answer is ignored (each
//! forwarding has its own attempt number); a write without a request id
//! is never sent twice; a write forwarded to this member is proposed or
//! refused, never forwarded again.

use std::collections::BTreeMap;

use super::{Effect, ForwardOutcome, Member, Token};
use crate::api::{KvsError, LogCommand, TxnRequest};
use crate::kv::Txn;
use crate::raft::NodeId;

/// A request held here.
#[derive(Debug)]
enum Held {
    Write(TxnRequest),
    Read(Txn, usize),
}

#[derive(Debug)]
struct Entry {
    held: Held,
    /// The tick after which it is answered with `last_error`.
    deadline: u64,
    /// The leader that did not take it (not asked again until another
    /// appears).
    unreached: Option<NodeId>,
    /// Out with this leader, as this attempt.
    forwarded: Option<(NodeId, u64)>,
    last_error: KvsError,
}

/// The requests held by one member.
#[derive(Debug)]
pub(super) struct Waiting {
    entries: BTreeMap<Token, Entry>,
    ticks: u64,
    wait_ticks: u64,
    next_attempt: u64,
    /// The leader seen when they were last tried, and whether its name
    /// was known then (a joiner learns its leader before the
    /// configuration that names it).
    tried_with: Option<(NodeId, bool)>,
}

impl Waiting {
    pub(super) fn new(wait_ticks: u64) -> Waiting {
        Waiting {
            entries: BTreeMap::new(),
            ticks: 0,
            wait_ticks: wait_ticks.max(1),
            next_attempt: 0,
            tried_with: None,
        }
    }
}

impl Member {
    /// A client's write (see [`super::Input::Write`]).
    pub(super) fn write(&mut self, token: Token, request: TxnRequest) {
        if request.forwarded {
            let command = LogCommand {
                request_id: request.request_id,
                txn: request.txn,
            };
            if !self.propose(token, &command) {
                self.answer(token, Err(KvsError::NoLeader));
            }
            return;
        }
        let deadline = self.waiting.ticks + self.waiting.wait_ticks;
        self.waiting.entries.insert(
            token,
            Entry {
                held: Held::Write(request),
                deadline,
                unreached: None,
                forwarded: None,
                last_error: KvsError::NoLeader,
            },
        );
        self.try_entry(token);
    }

    /// A client's read (see [`super::Input::Read`]).
    pub(super) fn client_read(&mut self, token: Token, txn: Txn, limit: usize) {
        if let Some((txn, limit)) = self.read_index(token, txn, limit) {
            self.hold_read(token, txn, limit);
        }
    }

    /// Holds a read until a leader is known.
    pub(super) fn hold_read(&mut self, token: Token, txn: Txn, limit: usize) {
        let deadline = self.waiting.ticks + self.waiting.wait_ticks;
        self.waiting.entries.insert(
            token,
            Entry {
                held: Held::Read(txn, limit),
                deadline,
                unreached: None,
                forwarded: None,
                last_error: KvsError::NoLeader,
            },
        );
    }

    /// What came back from a leader (see [`super::Input::Forwarded`]).
    pub(super) fn forwarded(&mut self, token: Token, attempt: u64, outcome: ForwardOutcome) {
        let Some(entry) = self.waiting.entries.get_mut(&token) else {
            return;
        };
        let Some((leader, current)) = entry.forwarded else {
            return;
        };
        if current != attempt {
            return;
        }
        match outcome {
            ForwardOutcome::Answer(result) => {
                self.waiting.entries.remove(&token);
                self.answer(token, result);
            }
            ForwardOutcome::NotTaken(error) => {
                entry.forwarded = None;
                entry.unreached = Some(leader);
                entry.last_error = error;
                self.try_entry(token);
            }
        }
    }

    /// Proposes, forwards or starts held requests when the leader changed
    /// since they were last tried; sends writes out with a deposed leader
    /// to the new one.
    pub(super) fn retry_waiting(&mut self) {
        let seen = self
            .lc
            .raft()
            .and_then(|r| r.leader().map(|l| (l, r.config().info(l).is_some())));
        if seen == self.waiting.tried_with || self.waiting.entries.is_empty() {
            self.waiting.tried_with = seen;
            return;
        }
        self.waiting.tried_with = seen;
        let leader = seen.map(|(l, _)| l);
        let tokens: Vec<Token> = self.waiting.entries.keys().copied().collect();
        for token in tokens {
            if let Some(entry) = self.waiting.entries.get_mut(&token) {
                let superseded = matches!(
                    (&entry.held, entry.forwarded),
                    (Held::Write(r), Some((old, _))) if r.request_id.is_some() && Some(old) != leader
                );
                if superseded {
                    entry.forwarded = None;
                }
                if entry.forwarded.is_none() {
                    self.try_entry(token);
                }
            }
        }
    }

    /// Counts a tick; answers held requests whose wait is over.
    pub(super) fn expire_waiting(&mut self) {
        self.waiting.ticks += 1;
        let now = self.waiting.ticks;
        let expired: Vec<Token> = self
            .waiting
            .entries
            .iter()
            .filter(|(_, e)| e.forwarded.is_none() && e.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(entry) = self.waiting.entries.remove(&token) {
                self.answer(token, Err(entry.last_error));
            }
        }
    }

    /// Tries one held request: propose or start it here, or forward it.
    fn try_entry(&mut self, token: Token) {
        let Some(mut entry) = self.waiting.entries.remove(&token) else {
            return;
        };
        match entry.held {
            Held::Read(txn, limit) => {
                if let Some((txn, limit)) = self.read_index(token, txn, limit) {
                    entry.held = Held::Read(txn, limit);
                    self.waiting.entries.insert(token, entry);
                }
            }
            Held::Write(request) => {
                let command = LogCommand {
                    request_id: request.request_id,
                    txn: request.txn.clone(),
                };
                if self.propose(token, &command) {
                    return;
                }
                let leader = self.lc.raft().and_then(|raft| {
                    let id = raft.leader()?;
                    let name = raft.config().info(id)?.name.clone();
                    (id != raft.id() && Some(id) != entry.unreached).then_some((id, name))
                });
                if let Some((id, name)) = leader {
                    self.waiting.next_attempt += 1;
                    let attempt = self.waiting.next_attempt;
                    entry.forwarded = Some((id, attempt));
                    self.effects.push(Effect::Forward {
                        token,
                        attempt,
                        to: name,
                        request: TxnRequest {
                            forwarded: true,
                            ..request.clone()
                        },
                    });
                }
                entry.held = Held::Write(request);
                self.waiting.entries.insert(token, entry);
            }
        }
    }
}

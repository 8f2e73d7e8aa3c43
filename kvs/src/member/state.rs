//! The replicated state machine of a running member: the KV store plus the
//! table of client sessions that makes retried writes apply at most once.
//!
//! Invariants: applying is a pure function of the state and the log entry,
//! so all members hold equal sessions too; a write whose request id was
//! applied before returns its first answer instead of applying again; the
//! table is bounded (per client and in clients), evicting by log position,
//! which every member agrees on, and keeps answers of at most
//! [`MAX_KEPT_ANSWER_BYTES`] (a larger one is remembered as applied, not
//! kept); a write that puts is refused while the store holds its quota
//! (decided on the applied state, so every member decides alike).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{KvsError, LogCommand, RequestId};
use crate::kv::{KvImage, KvStore, Limits, Op, OpResult, TxnResponse};
use crate::raft::Index;

/// Largest answer kept for a retry, in bytes of keys and values read.
pub const MAX_KEPT_ANSWER_BYTES: usize = 64 * 1024;

/// Most remembered writes per client.
const MAX_SEQS_PER_CLIENT: usize = 4096;
/// Most remembered clients.
const MAX_CLIENTS: usize = 10_000;

/// An answer kept for a retry. Most writes only put, and their answer is
/// a revision and a `Put` per operation: kept as that, not as a response
/// with a list of results (which would cost a heap allocation each). It
/// encodes as the whole [`TxnResponse`], so snapshots and exports read the
/// same either way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "TxnResponse", from = "TxnResponse")]
enum Kept {
    /// `succeeded`, `puts` times `OpResult::Put`, at `revision`.
    Puts {
        succeeded: bool,
        puts: u32,
        revision: i64,
    },
    /// Anything else.
    Whole(Box<TxnResponse>),
}

impl From<TxnResponse> for Kept {
    fn from(answer: TxnResponse) -> Kept {
        let only_puts = answer.results.iter().all(|r| *r == OpResult::Put);
        match u32::try_from(answer.results.len()) {
            Ok(puts) if only_puts => Kept::Puts {
                succeeded: answer.succeeded,
                puts,
                revision: answer.revision,
            },
            _ => Kept::Whole(Box::new(answer)),
        }
    }
}

impl From<Kept> for TxnResponse {
    fn from(kept: Kept) -> TxnResponse {
        match kept {
            Kept::Puts {
                succeeded,
                puts,
                revision,
            } => TxnResponse {
                succeeded,
                results: vec![OpResult::Put; puts as usize],
                revision,
            },
            Kept::Whole(answer) => *answer,
        }
    }
}

impl Kept {
    fn revision(&self) -> i64 {
        match self {
            Kept::Puts { revision, .. } => *revision,
            Kept::Whole(answer) => answer.revision,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Session {
    answers: BTreeMap<u64, Kept>,
    /// Writes whose answer was too large to keep (kept in `answers` without results).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    too_large: BTreeSet<u64>,
    last_index: Index,
}

/// A copy of the state machine, as snapshots and exports hold it.
#[derive(Debug, serde::Serialize)]
pub struct StateImage {
    kv: KvImage,
    sessions: BTreeMap<u64, Session>,
}

impl StateImage {
    /// The snapshot bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[derive(serde::Deserialize)]
struct OwnedImage {
    kv: KvImage,
    sessions: BTreeMap<u64, Session>,
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct StateMachine {
    pub(crate) kv: KvStore,
    sessions: BTreeMap<u64, Session>,
    quota_bytes: u64,
    /// The last [`StateMachine::apply`] answered from the table: a retry
    /// of a write that had applied, which changed nothing.
    replayed: bool,
}

impl StateMachine {
    pub(crate) fn new(history_limit: usize, limits: &Limits) -> Self {
        StateMachine {
            kv: KvStore::new(history_limit).with_history_bytes(limits.max_history_bytes),
            sessions: BTreeMap::new(),
            quota_bytes: limits.quota_bytes,
            replayed: false,
        }
    }

    /// `NoSpace` if the store holds its quota (a write that only deletes
    /// is always let through: it is how room is made).
    pub(crate) fn check_quota(&self, cmd: &LogCommand) -> Result<(), KvsError> {
        let used = self.kv.state().bytes();
        let puts = cmd
            .txn
            .success
            .iter()
            .chain(&cmd.txn.failure)
            .any(|op| matches!(op, Op::Put { .. }));
        if puts && used >= self.quota_bytes {
            return Err(KvsError::NoSpace {
                used,
                quota: self.quota_bytes,
            });
        }
        Ok(())
    }

    /// The whole state as bytes, as a Raft snapshot holds it: keys and
    /// revision, and the sessions (so a write retried after a snapshot still
    /// applies once). The member encodes [`StateMachine::image`] off its
    /// loop instead; this is for tests.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        self.image().encode()
    }

    /// A copy of the whole state, to encode off the Raft loop (encoding a
    /// large store takes long enough to delay heartbeats).
    pub(crate) fn image(&self) -> StateImage {
        StateImage {
            kv: self.kv.image(),
            sessions: self.sessions.clone(),
        }
    }

    /// Answers kept for retried writes, over all clients.
    pub(crate) fn answers_kept(&self) -> usize {
        self.sessions.values().map(|s| s.answers.len()).sum()
    }

    /// Replaces the state with a snapshot's.
    pub(crate) fn restore(&mut self, bytes: &[u8]) -> Result<(), KvsError> {
        let image: OwnedImage = serde_json::from_slice(bytes)
            .map_err(|e| KvsError::Unavailable(format!("snapshot does not decode: {e}")))?;
        self.kv.restore(image.kv);
        self.sessions = image.sessions;
        Ok(())
    }

    /// Applies one committed command at `index`.
    pub(crate) fn apply(
        &mut self,
        index: Index,
        cmd: &LogCommand,
    ) -> Result<TxnResponse, KvsError> {
        self.replayed = false;
        let Some(RequestId { client, seq }) = cmd.request_id else {
            self.check_quota(cmd)?;
            return Ok(self.kv.apply(&cmd.txn));
        };
        if let Some(session) = self.sessions.get(&client) {
            if let Some(answer) = session.answers.get(&seq) {
                self.replayed = true;
                if session.too_large.contains(&seq) {
                    return Err(KvsError::TooLarge(format!(
                        "request {client}/{seq} applied at revision {}; its answer was too large to keep for a retry: read the keys again",
                        answer.revision()
                    )));
                }
                return Ok(answer.clone().into());
            }
            let forgotten = session.answers.len() >= MAX_SEQS_PER_CLIENT
                && session
                    .answers
                    .keys()
                    .next()
                    .is_some_and(|&oldest| seq < oldest);
            if forgotten {
                return Err(KvsError::InvalidArgument(format!(
                    "request {client}/{seq} is too old to tell whether it already applied"
                )));
            }
        }
        self.check_quota(cmd)?;
        let answer = self.kv.apply(&cmd.txn);
        let session = self.sessions.entry(client).or_default();
        if read_bytes(&answer) > MAX_KEPT_ANSWER_BYTES {
            let summary = TxnResponse {
                results: Vec::new(),
                ..answer.clone()
            };
            session.answers.insert(seq, summary.into());
            session.too_large.insert(seq);
        } else {
            session.answers.insert(seq, answer.clone().into());
        }
        session.last_index = index;
        while session.answers.len() > MAX_SEQS_PER_CLIENT {
            if let Some((oldest, _)) = session.answers.pop_first() {
                session.too_large.remove(&oldest);
            }
        }
        if self.sessions.len() > MAX_CLIENTS {
            let idle = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_index)
                .map(|(&c, _)| c);
            if let Some(c) = idle {
                self.sessions.remove(&c);
            }
        }
        Ok(answer)
    }
}

#[cfg(test)]
impl StateMachine {
    /// Whether the last write was answered from the table (see `replayed`).
    pub(crate) fn replayed(&self) -> bool {
        self.replayed
    }

    /// Forgets every client's answers (a planted bug: see `MemberBugs`).
    pub(crate) fn forget_sessions(&mut self) {
        self.sessions.clear();
    }

    /// A digest of the keys and revision: members that applied the same
    /// entries hold equal digests.
    pub(crate) fn digest(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        self.kv.state().hash(&mut h);
        h.finish()
    }
}

/// Bytes of keys and values an answer carries.
pub(crate) fn read_bytes(answer: &TxnResponse) -> usize {
    answer
        .results
        .iter()
        .map(|r| match r {
            OpResult::Get(Some(kv)) => kv.key.len() + kv.value.len(),
            OpResult::Range { kvs, .. } => kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Op, Txn};

    #[test]
    fn a_retried_write_applies_once() {
        let mut sm = StateMachine::new(100, &Limits::default());
        let cmd = |seq, v: &str| LogCommand {
            request_id: Some(RequestId { client: 7, seq }),
            txn: Txn::single(Op::Put {
                key: "k".into(),
                value: v.into(),
            }),
        };
        let first = sm.apply(1, &cmd(1, "a")).unwrap();
        let retry = sm.apply(2, &cmd(1, "a")).unwrap();
        assert_eq!(first, retry);
        assert_eq!(sm.kv.state().revision(), 1, "the retry did not write again");
        // Concurrent writes of one client may apply out of order.
        sm.apply(3, &cmd(3, "c")).unwrap();
        sm.apply(4, &cmd(2, "b")).unwrap();
        assert_eq!(sm.kv.state().revision(), 3);

        // The sessions travel in snapshots: a retry after a restore still applies once.
        let mut other = StateMachine::new(100, &Limits::default());
        other.restore(&sm.snapshot()).unwrap();
        assert_eq!(other.apply(5, &cmd(1, "a")).unwrap(), first);
        assert_eq!(other.kv.state().revision(), 3);
    }

    fn write(seq: u64, txn: Txn) -> LogCommand {
        LogCommand {
            request_id: Some(RequestId { client: 9, seq }),
            txn,
        }
    }

    #[test]
    fn a_full_store_refuses_puts_and_takes_deletes() {
        let limits = Limits {
            quota_bytes: 10,
            ..Limits::default()
        };
        let mut sm = StateMachine::new(100, &limits);
        let put = |key: &str| {
            Txn::single(Op::Put {
                key: key.into(),
                value: "123456789".into(),
            })
        };
        sm.apply(1, &write(1, put("a"))).expect("fits");
        let full = sm.apply(2, &write(2, put("b"))).unwrap_err();
        assert_eq!(
            full,
            KvsError::NoSpace {
                used: 10,
                quota: 10
            }
        );
        assert!(full.to_string().contains("--quota-bytes"), "{full}");
        sm.apply(3, &write(3, Txn::single(Op::Delete { key: "a".into() })))
            .expect("a delete makes room");
        sm.apply(4, &write(2, put("b")))
            .expect("the refused write, retried");
    }

    #[test]
    fn a_large_answer_is_not_kept_for_retries() {
        let mut sm = StateMachine::new(100, &Limits::default());
        let big = "x".repeat(MAX_KEPT_ANSWER_BYTES + 1);
        sm.apply(
            1,
            &write(
                1,
                Txn::single(Op::Put {
                    key: "big".into(),
                    value: big,
                }),
            ),
        )
        .expect("put");
        let read_back = Txn {
            success: vec![
                Op::Put {
                    key: "k".into(),
                    value: "v".into(),
                },
                Op::Get { key: "big".into() },
            ],
            ..Txn::default()
        };
        let first = sm.apply(2, &write(2, read_back.clone())).expect("applied");
        assert_eq!(first.results.len(), 2);
        let retry = sm.apply(3, &write(2, read_back)).unwrap_err();
        assert!(matches!(retry, KvsError::TooLarge(_)), "{retry}");
        assert!(
            retry.to_string().contains("applied at revision 2"),
            "{retry}"
        );
    }
}

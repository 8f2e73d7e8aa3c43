//! The replicated state machine of a running member: the KV store plus the
//! table of client sessions that makes retried writes apply at most once.
//!
//! Invariants: applying is a pure function of the state and the log entry,
//! so all members hold equal sessions too; a write whose request id was
//! applied before returns its first answer instead of applying again; the
//! table is bounded (per client and in clients), evicting by log position,
//! which every member agrees on.

use std::collections::BTreeMap;

use crate::api::{KvsError, LogCommand, RequestId};
use crate::kv::{KvImage, KvStore, TxnResponse};
use crate::raft::Index;

/// Most remembered writes per client.
const MAX_SEQS_PER_CLIENT: usize = 4096;
/// Most remembered clients.
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Session {
    answers: BTreeMap<u64, TxnResponse>,
    last_index: Index,
}

#[derive(serde::Serialize)]
struct Image<'a> {
    kv: KvImage,
    sessions: &'a BTreeMap<u64, Session>,
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
}

impl StateMachine {
    pub(crate) fn new(history_limit: usize) -> Self {
        StateMachine {
            kv: KvStore::new(history_limit),
            sessions: BTreeMap::new(),
        }
    }

    /// The whole state as bytes, for a Raft snapshot: keys and revision, and
    /// the sessions (so a write retried after a snapshot still applies once).
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let image = Image {
            kv: self.kv.image(),
            sessions: &self.sessions,
        };
        serde_json::to_vec(&image).unwrap_or_default()
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
        let Some(RequestId { client, seq }) = cmd.request_id else {
            return Ok(self.kv.apply(&cmd.txn));
        };
        if let Some(session) = self.sessions.get(&client) {
            if let Some(answer) = session.answers.get(&seq) {
                return Ok(answer.clone());
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
        let answer = self.kv.apply(&cmd.txn);
        let session = self.sessions.entry(client).or_default();
        session.answers.insert(seq, answer.clone());
        session.last_index = index;
        while session.answers.len() > MAX_SEQS_PER_CLIENT {
            session.answers.pop_first();
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
mod tests {
    use super::*;
    use crate::kv::{Op, Txn};

    #[test]
    fn a_retried_write_applies_once() {
        let mut sm = StateMachine::new(100);
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
        let mut other = StateMachine::new(100);
        other.restore(&sm.snapshot()).unwrap();
        assert_eq!(other.apply(5, &cmd(1, "a")).unwrap(), first);
        assert_eq!(other.kv.state().revision(), 3);
    }
}

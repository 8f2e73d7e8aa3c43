//! The in-memory Raft log.
//!
//! Invariants: entries are contiguous from index `offset + 1`; their terms
//! never decrease; entries at or below `committed` are never removed or
//! replaced (Raft §5.4: committed entries are durable in the cluster, and here
//! "durable" means held by a quorum's memory). `offset` is where the last
//! snapshot cut the log (0 without one). The configuration in effect is the
//! one of the last `Config` entry in the log, else the snapshot's
//! (thesis §4.1): `configs` tracks every config entry above `offset`.

use super::membership::Membership;
use super::types::{Entry, Index, Payload, RejectHint, Term};

/// See the module doc.
#[derive(Debug, Default, Clone)]
pub struct RaftLog {
    entries: Vec<Entry>,
    offset: Index,
    offset_term: Term,
    /// The configuration as of `offset`.
    offset_config: Membership,
    /// Config entries above `offset`, by index.
    configs: Vec<(Index, Membership)>,
    /// The highest index known to be committed.
    pub committed: Index,
    /// The highest index handed to the runtime to apply.
    pub applied: Index,
}

/// How an append from the leader fitted the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The entries follow `prev`: the log matches the leader's up to `last_new`.
    Matched {
        /// `prev_log_index + entries.len()`.
        last_new: Index,
    },
    /// `prev` is missing or has another term.
    Rejected(RejectHint),
}

impl RaftLog {
    /// The last index a snapshot covers (0 without one); entries start after it.
    pub fn snapshot_index(&self) -> Index {
        self.offset
    }

    /// The term of the entry at [`RaftLog::snapshot_index`].
    pub fn snapshot_term(&self) -> Term {
        self.offset_term
    }

    /// A log starting after a snapshot at `index`/`term` with `config`
    /// (a node seeded with a cluster's initial state).
    pub fn from_snapshot(index: Index, term: Term, config: Membership) -> Self {
        RaftLog {
            offset: index,
            offset_term: term,
            offset_config: config,
            committed: index,
            applied: index,
            ..RaftLog::default()
        }
    }

    /// The configuration in effect: the last one in the log, committed or not.
    pub fn config(&self) -> &Membership {
        self.configs.last().map_or(&self.offset_config, |(_, c)| c)
    }

    /// The index of the entry that set [`RaftLog::config`] (the snapshot's
    /// index if the log holds none).
    pub fn config_index(&self) -> Index {
        self.configs.last().map_or(self.offset, |(i, _)| *i)
    }

    /// The configuration as of `index` (which must not be below the snapshot).
    pub fn config_at(&self, index: Index) -> &Membership {
        self.configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.offset_config, |(_, c)| c)
    }

    fn truncate_from(&mut self, index: Index) {
        self.entries.truncate((index - self.offset - 1) as usize);
        self.configs.retain(|(i, _)| *i < index);
    }

    fn push_entry(&mut self, entry: Entry) {
        if let Payload::Config(c) = &entry.payload {
            self.configs.push((entry.index, c.clone()));
        }
        self.entries.push(entry);
    }

    /// Drops the entries up to `index` (at most `applied`), which a snapshot
    /// of the state machine now covers. Returns whether anything was dropped.
    pub fn compact(&mut self, index: Index) -> bool {
        if index <= self.offset || index > self.applied {
            return false;
        }
        let Some(term) = self.term(index) else {
            return false;
        };
        self.offset_config = self.config_at(index).clone();
        self.configs.retain(|(i, _)| *i > index);
        self.entries.drain(..(index - self.offset) as usize);
        self.offset = index;
        self.offset_term = term;
        true
    }

    /// Moves the log to a snapshot's position (Raft §7): entries after it
    /// are kept if the log holds the snapshot's last entry, else all go.
    /// The snapshot is committed and, once installed, applied.
    pub fn restore(&mut self, index: Index, term: Term, config: Membership) {
        if self.term(index) == Some(term) && index >= self.offset {
            self.entries.drain(..(index - self.offset) as usize);
            self.configs.retain(|(i, _)| *i > index);
        } else {
            self.entries.clear();
            self.configs.clear();
        }
        self.offset_config = config;
        self.offset = index;
        self.offset_term = term;
        self.committed = self.committed.max(index);
        self.applied = index;
    }

    /// The last index (0 if empty).
    pub fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index
    }

    /// The term of the last entry (0 if empty).
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    /// The term of the entry at `index`, if the log has it (0 for index 0).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        if index < self.offset || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.offset - 1) as usize].term)
    }

    /// The entry at `index`.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.offset || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.offset - 1) as usize])
    }

    /// Entries `from..=to`, at most `max` of them.
    pub fn slice(&self, from: Index, to: Index, max: usize) -> Vec<Entry> {
        self.slice_bytes(from, to, max, usize::MAX)
    }

    /// Entries `from..=to`, at most `max` of them and, past the first, at
    /// most `max_bytes` of command payload in all (one message stays within
    /// the peers' body limit however large the commands are).
    pub fn slice_bytes(&self, from: Index, to: Index, max: usize, max_bytes: usize) -> Vec<Entry> {
        if from > to || from <= self.offset {
            return Vec::new();
        }
        let start = (from - self.offset - 1) as usize;
        let end =
            ((to.min(self.last_index()) - self.offset) as usize).min(start.saturating_add(max));
        let Some(entries) = self.entries.get(start..end) else {
            return Vec::new();
        };
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for e in entries {
            bytes = bytes.saturating_add(e.payload_bytes());
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// Every entry, for checkers and tests.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether a candidate's log is at least as up-to-date as ours (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// A leader appends its own new entry.
    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.push_entry(entry);
    }

    /// A follower receives entries after `prev` (Raft §5.3): conflicting
    /// suffixes are removed, entries already present are kept, so duplicated
    /// or reordered messages change nothing.
    pub fn append_after(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
    ) -> AppendOutcome {
        match self.term(prev_index) {
            Some(t) if t == prev_term => {}
            Some(t) => {
                // Skip back to the first entry of the conflicting term.
                let mut first = prev_index;
                while first > self.offset + 1 && self.term(first - 1) == Some(t) {
                    first -= 1;
                }
                return AppendOutcome::Rejected(RejectHint {
                    conflict_term: Some(t),
                    conflict_index: first,
                });
            }
            None => {
                return AppendOutcome::Rejected(RejectHint {
                    conflict_term: None,
                    conflict_index: self.last_index() + 1,
                });
            }
        }
        for entry in entries {
            match self.term(entry.index) {
                Some(t) if t == entry.term => continue,
                Some(_) => {
                    assert!(
                        entry.index > self.committed,
                        "Raft §5.4 violated: the leader overwrites committed index {} (committed {})",
                        entry.index,
                        self.committed
                    );
                    self.truncate_from(entry.index);
                    self.push_entry(entry.clone());
                }
                None => self.push_entry(entry.clone()),
            }
        }
        AppendOutcome::Matched {
            last_new: prev_index + entries.len() as Index,
        }
    }

    /// The last index whose term is at most `term`, searching down from
    /// `from` (the leader's side of the fast back-off).
    pub fn last_index_of_term(&self, term: Term, from: Index) -> Option<Index> {
        let mut i = from.min(self.last_index());
        while i > self.offset {
            match self.term(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                _ => i -= 1,
            }
        }
        None
    }

    /// Raises the commit index (never lowers it).
    pub fn commit_to(&mut self, index: Index) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Entries committed but not yet handed out; marks them handed out.
    pub fn take_committed(&mut self, up_to: Index) -> Vec<Entry> {
        let up_to = up_to.min(self.last_index());
        if up_to <= self.applied {
            return Vec::new();
        }
        let out = self.slice(self.applied + 1, up_to, usize::MAX);
        self.applied = up_to;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Payload;

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            payload: Payload::Noop,
        }
    }

    fn log_of(terms: &[Term]) -> RaftLog {
        let mut log = RaftLog::default();
        for (i, t) in terms.iter().enumerate() {
            log.push(e(i as Index + 1, *t));
        }
        log
    }

    #[test]
    fn append_is_idempotent_and_truncates_conflicts() {
        let mut log = log_of(&[1, 1, 2]);
        assert_eq!(
            log.append_after(1, 1, &[e(2, 1), e(3, 2)]),
            AppendOutcome::Matched { last_new: 3 }
        );
        assert_eq!(log.last_index(), 3, "duplicates change nothing");
        assert_eq!(
            log.append_after(2, 1, &[e(3, 3), e(4, 3)]),
            AppendOutcome::Matched { last_new: 4 }
        );
        assert_eq!(
            log.entries().iter().map(|e| e.term).collect::<Vec<_>>(),
            vec![1, 1, 3, 3]
        );
        // A stale, shorter append does not truncate the newer suffix (Raft §5.3).
        assert_eq!(
            log.append_after(1, 1, &[e(2, 1)]),
            AppendOutcome::Matched { last_new: 2 }
        );
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn rejection_hints_skip_whole_terms() {
        let mut log = log_of(&[1, 2, 2, 2]);
        assert_eq!(
            log.append_after(4, 3, &[]),
            AppendOutcome::Rejected(RejectHint {
                conflict_term: Some(2),
                conflict_index: 2
            })
        );
        assert_eq!(
            log.append_after(9, 3, &[]),
            AppendOutcome::Rejected(RejectHint {
                conflict_term: None,
                conflict_index: 5
            })
        );
        assert_eq!(log.last_index_of_term(2, 9), Some(4));
        assert_eq!(log.last_index_of_term(3, 9), None);
    }

    #[test]
    #[should_panic(expected = "overwrites committed")]
    fn committed_entries_are_never_replaced() {
        let mut log = log_of(&[1, 1]);
        log.commit_to(2);
        log.append_after(1, 1, &[e(2, 2)]);
    }

    #[test]
    fn up_to_date_compares_term_then_length() {
        let log = log_of(&[1, 2]);
        assert!(log.is_up_to_date(1, 3));
        assert!(log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(1, 2));
        assert!(!log.is_up_to_date(5, 1));
    }
}

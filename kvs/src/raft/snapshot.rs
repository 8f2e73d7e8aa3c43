//! Snapshots and log compaction (Raft §7).
//!
//! ```text
//! runtime: compactable(max) ─▶ compact(index) ─▶ log drops ≤ index (no bytes kept)
//! leader: follower's next_index ≤ log start ─▶ snapshot_wanted()
//!         runtime: image of the state at `applied` ─▶ offer_snapshot(meta, bytes)
//!         ─▶ InstallSnapshot chunks, one in flight ─▶ bytes dropped when no transfer needs them
//! follower: chunks in order ─▶ whole ─▶ log moves to the snapshot ─▶ Ready.snapshot
//! ```
//!
//! Everything is in memory, so the state machine itself is the snapshot:
//! the log is cut as soon as every follower holds it (but for a short
//! tail; one far behind or gone holds back a bounded number of entries),
//! and snapshot bytes exist only while a follower is being sent one, as
//! etcd's leader streams its database rather than keeping a copy of it.
//!
//! Invariants: a snapshot covers only applied (so committed) entries; the
//! leader sends only a snapshot the log still continues (its index at or
//! after the log's start), and within that bound never cuts the log past
//! one a follower is installing, so a transfer, once begun, finishes with
//! the same snapshot; a follower installs a snapshot only if it is ahead of its
//! commit index, and keeps the log entries after it when they match
//! (Raft §7); chunks are taken only in order, so a lost or duplicated
//! chunk costs a retry, never a torn snapshot; an unanswered chunk is
//! sent again only after an election timeout, not on every heartbeat;
//! one follower's transfer never holds up another's replication.

use bytes::{Bytes, BytesMut};

use super::types::{Body, Index, NodeId, SnapshotMeta};
use super::{ProgressState, RaftNode, Role};

impl RaftNode {
    /// Drops the log up to `index` (at most `applied`: the state machine
    /// holds what it covers). Returns whether anything was dropped.
    pub fn compact(&mut self, index: Index) -> bool {
        self.log.compact(index)
    }

    /// How far the log may be cut now ([`RaftNode::compact`]): the applied
    /// entries but for the last `retain_entries`; on a leader, no further
    /// than what each follower holds, nor past a snapshot one of them is
    /// installing, nor while a snapshot is wanted. A follower far behind (or
    /// gone) holds back at most `max_entries` entries: past that it is sent
    /// a snapshot.
    pub fn compactable(&self, max_entries: Index) -> Index {
        let applied = self.log.applied;
        let mut keep_from = applied.saturating_sub(self.cfg.retain_entries);
        if self.role == Role::Leader {
            if self.snapshot_wanted {
                return self.log.snapshot_index();
            }
            for (id, pr) in &self.progress {
                if *id == self.cfg.id {
                    continue;
                }
                let needs = match pr.state {
                    ProgressState::Snapshot => pr.snapshot_index,
                    _ => pr.match_index,
                };
                keep_from = keep_from.min(needs);
            }
            keep_from = keep_from.max(applied.saturating_sub(max_entries));
        }
        keep_from.max(self.log.snapshot_index())
    }

    /// The index the log starts after (entries up to it are compacted).
    pub fn snapshot_index(&self) -> Index {
        self.log.snapshot_index()
    }

    /// Leader: whether a follower needs a snapshot and none is held; the
    /// runtime answers with [`RaftNode::offer_snapshot`] of the state at
    /// [`RaftNode::snapshot_meta`].
    pub fn snapshot_wanted(&self) -> bool {
        self.role == Role::Leader && self.snapshot_wanted
    }

    /// What a snapshot of the state machine as applied now covers.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        let index = self.log.applied;
        Some(SnapshotMeta {
            index,
            term: self.log.term(index)?,
            config: self.log.config_at(index).clone(),
        })
    }

    /// The runtime's snapshot of the state at `meta` (from
    /// [`RaftNode::snapshot_meta`]): sent to the followers that wait for
    /// one. Ignored unless wanted and the log still continues it.
    pub fn offer_snapshot(&mut self, meta: SnapshotMeta, data: Bytes) -> bool {
        if !self.snapshot_wanted()
            || meta.index < self.log.snapshot_index()
            || meta.index > self.log.applied
            || self.log.term(meta.index) != Some(meta.term)
        {
            return false;
        }
        self.snapshot_wanted = false;
        self.snapshot = Some((meta, data));
        let waiting: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, pr)| pr.state == ProgressState::Snapshot && pr.snapshot_index == 0)
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            self.send_snapshot_chunk(id);
        }
        true
    }

    /// Bytes of snapshots held: the one being sent, and one being received.
    pub fn snapshot_bytes_held(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |(_, b)| b.len())
            + self.incoming.as_ref().map_or(0, |(_, b)| b.len())
    }

    /// The snapshot held for sending, if any.
    pub fn snapshot(&self) -> Option<&(SnapshotMeta, Bytes)> {
        self.snapshot.as_ref()
    }

    /// Leader, each tick: an unanswered chunk may be sent again after an
    /// election timeout; the snapshot's bytes go once no transfer needs them.
    pub(super) fn tick_snapshots(&mut self) {
        let limit = self.cfg.election_tick;
        let mut sending = false;
        for pr in self.progress.values_mut() {
            if pr.state != ProgressState::Snapshot {
                continue;
            }
            sending = true;
            if pr.probe_sent {
                pr.chunk_ticks += 1;
                if pr.chunk_ticks >= limit {
                    pr.probe_sent = false;
                }
            }
        }
        if !sending {
            self.snapshot = None;
        }
    }

    /// Leader: sends the next chunk of the snapshot to `to`, or, with no
    /// snapshot the log continues, marks `to` as waiting for one.
    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let start = self.log.snapshot_index();
        let held = self
            .snapshot
            .as_ref()
            .filter(|(meta, _)| meta.index >= start)
            .cloned();
        let chunk = self.cfg.snapshot_chunk_bytes.max(1) as u64;
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        let Some((meta, data)) = held else {
            // Waiting: nothing is in flight, but nothing may be sent either
            // until the snapshot is offered.
            pr.state = ProgressState::Snapshot;
            pr.snapshot_index = 0;
            pr.snapshot_offset = 0;
            pr.probe_sent = true;
            pr.chunk_ticks = 0;
            pr.inflight.clear();
            self.snapshot = None;
            self.snapshot_wanted = true;
            return;
        };
        if pr.state != ProgressState::Snapshot || pr.snapshot_index != meta.index {
            pr.state = ProgressState::Snapshot;
            pr.snapshot_index = meta.index;
            pr.snapshot_offset = 0;
            pr.probe_sent = false;
            pr.inflight.clear();
        }
        if pr.probe_sent {
            return;
        }
        let start = pr.snapshot_offset.min(data.len() as u64);
        let end = (start + chunk).min(data.len() as u64);
        pr.probe_sent = true;
        pr.chunk_ticks = 0;
        self.send(
            to,
            Body::InstallSnapshot {
                meta,
                offset: start,
                data: data.slice(start as usize..end as usize),
                done: end == data.len() as u64,
            },
        );
    }

    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: &Bytes,
        done: bool,
    ) {
        self.follow(from);
        if meta.index <= self.log.committed {
            // Already have all of it.
            self.incoming = None;
            let next_offset = offset + data.len() as u64;
            return self.send(
                from,
                Body::InstallSnapshotResponse {
                    index: meta.index,
                    offset,
                    next_offset,
                    installed: true,
                },
            );
        }
        if offset == 0 {
            self.incoming = Some((meta.clone(), BytesMut::new()));
        }
        let held = match &mut self.incoming {
            Some((m, buf)) if *m == meta && buf.len() as u64 == offset => {
                buf.extend_from_slice(data);
                buf.len() as u64
            }
            Some((m, buf)) if *m == meta => buf.len() as u64,
            _ => 0,
        };
        let complete = done && held == offset + data.len() as u64;
        if complete && let Some((meta, buf)) = self.incoming.take() {
            let bytes = buf.freeze();
            self.log.restore(meta.index, meta.term, meta.config.clone());
            self.ready_snapshot = Some((meta, bytes));
        }
        self.send(
            from,
            Body::InstallSnapshotResponse {
                index: meta.index,
                offset,
                next_offset: held,
                installed: complete,
            },
        );
    }

    pub(super) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        index: Index,
        offset: u64,
        next_offset: u64,
        installed: bool,
    ) {
        if self.role != super::Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if pr.state != ProgressState::Snapshot || pr.snapshot_index != index {
            return;
        }
        // Only the answer to the chunk in flight moves the transfer on: a
        // duplicate or a late answer would send a second copy of a chunk,
        // and each copy's answer another, without end.
        if !installed && (!pr.probe_sent || offset != pr.snapshot_offset) {
            return;
        }
        pr.probe_sent = false;
        if installed {
            pr.state = ProgressState::Probe;
            pr.next_index = index + 1;
            pr.acknowledge(index);
            self.maybe_commit();
            self.send_append(from);
        } else {
            pr.snapshot_offset = next_offset;
            self.send_snapshot_chunk(from);
        }
    }
}

//! Snapshots and log compaction (Raft §7).
//!
//! ```text
//! runtime: state machine at `applied` ─▶ compact(index, bytes) ─▶ log drops ≤ index
//! leader: follower's next_index ≤ snapshot index ─▶ InstallSnapshot chunks, one in flight
//! follower: chunks in order ─▶ whole ─▶ log moves to the snapshot ─▶ Ready.snapshot
//! ```
//!
//! Invariants: a snapshot covers only applied (so committed) entries; a
//! follower installs a snapshot only if it is ahead of its commit index, and
//! keeps the log entries after it when they match (Raft §7); chunks are taken
//! only in order, so a lost or duplicated chunk costs a retry, never a torn
//! snapshot; one follower's transfer never holds up another's replication.

use bytes::{Bytes, BytesMut};

use super::types::{Body, Index, NodeId, SnapshotMeta};
use super::{ProgressState, RaftNode};

impl RaftNode {
    /// The runtime took a snapshot of the state machine after applying
    /// `index`: keep it (to send to followers) and drop the log it covers,
    /// but for the last `retain_entries`.
    pub fn compact(&mut self, index: Index, data: Bytes) -> bool {
        let Some(term) = self.log.term(index) else {
            return false;
        };
        if index <= self.snapshot_index() || index > self.log.applied {
            return false;
        }
        let config = self.log.config_at(index).clone();
        let cut = index.saturating_sub(self.cfg.retain_entries);
        if cut > self.log.snapshot_index() {
            self.log.compact(cut);
        }
        self.snapshot = Some((
            SnapshotMeta {
                index,
                term,
                config,
            },
            data,
        ));
        true
    }

    /// The index the latest snapshot covers (the log may reach further back).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot
            .as_ref()
            .map_or(self.log.snapshot_index(), |(m, _)| m.index)
            .max(self.log.snapshot_index())
    }

    /// The latest snapshot this node holds.
    pub fn snapshot(&self) -> Option<&(SnapshotMeta, Bytes)> {
        self.snapshot.as_ref()
    }

    /// Leader: sends the next chunk of the snapshot to `to`.
    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some((meta, data)) = self.snapshot.clone() else {
            return;
        };
        let chunk = self.cfg.snapshot_chunk_bytes.max(1) as u64;
        let Some(pr) = self.progress.get_mut(&to) else {
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
            self.snapshot = Some((meta.clone(), bytes.clone()));
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

//! Durable snapshot exports: what survives when every member is evicted.
//!
//! The leader exports its latest snapshot on an interval and on demand (an
//! eviction notice). When a whole fleet comes back empty, the newest export
//! is the state a new cluster epoch starts from (`crate::lifecycle`), so the writes lost
//! are at most those after the last export.
//!
//! [`SnapshotStore`] is the contract; [`FileSnapshotStore`] keeps exports in
//! a local directory (the Azure Cosmos DB store is `cloud::exports`,
//! beside the other Azure clients);
//! [`MemorySnapshotStore`] keeps them in memory, for tests and for members
//! run without durable storage (which then cannot survive whole-fleet loss).
//!
//! Invariants an implementation must keep: `put` is atomic (a reader sees a
//! whole export or none, never a torn one, even if the writer dies midway);
//! `latest` returns the export with the highest `(epoch, index)`; exports of
//! lower `(epoch, index)` than the newest may be pruned, never the newest.

use std::path::{Path, PathBuf};

use crate::lifecycle::EpochId;
use crate::raft::Index;

pub use kvs_api::ExportMeta;

/// Why an export could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage failed.
    #[error("snapshot store I/O at {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A remote store (Azure Cosmos DB) failed or refused.
    #[error("snapshot store {store}: {reason}")]
    Remote {
        /// Which store and item.
        store: String,
        /// Why.
        reason: String,
    },
    /// A stored export is damaged.
    #[error("snapshot export {path} is damaged: {reason}")]
    Corrupt {
        /// Which.
        path: PathBuf,
        /// How.
        reason: String,
    },
}

/// Durable storage for snapshot exports (see the module doc for the contract).
pub trait SnapshotStore: Send + Sync {
    /// Stores an export atomically.
    fn put(&self, meta: ExportMeta, data: &[u8]) -> Result<(), StoreError>;
    /// The newest export, if any.
    fn latest(&self) -> Result<Option<(ExportMeta, Vec<u8>)>, StoreError>;
    /// The export `meta` names, if it is still stored.
    fn get(&self, meta: &ExportMeta) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every stored export's meta, newest first (what [`SignedSnapshotStore`]
    /// walks to find the newest one it can trust).
    fn list(&self) -> Result<Vec<ExportMeta>, StoreError>;
}

pub use crate::signed_store::SignedSnapshotStore;

/// Exports in memory (see the module doc), the newest few: by default
/// three, as the members' file stores keep (a member without an export
/// directory would otherwise hold a copy of its state for every export it
/// ever took).
#[derive(Debug)]
pub struct MemorySnapshotStore {
    exports: std::sync::Mutex<std::collections::BTreeMap<ExportMeta, Vec<u8>>>,
    keep: usize,
}

impl Default for MemorySnapshotStore {
    fn default() -> Self {
        MemorySnapshotStore::keeping(3)
    }
}

impl MemorySnapshotStore {
    /// A store keeping the newest `keep` exports (at least one).
    pub fn keeping(keep: usize) -> Self {
        MemorySnapshotStore {
            exports: Default::default(),
            keep: keep.max(1),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut std::collections::BTreeMap<ExportMeta, Vec<u8>>) -> T,
    ) -> T {
        let mut guard = match self.exports.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

impl SnapshotStore for MemorySnapshotStore {
    fn put(&self, meta: ExportMeta, data: &[u8]) -> Result<(), StoreError> {
        self.with(|e| {
            e.insert(meta, data.to_vec());
            while e.len() > self.keep {
                e.pop_first();
            }
        });
        Ok(())
    }

    fn latest(&self) -> Result<Option<(ExportMeta, Vec<u8>)>, StoreError> {
        Ok(self.with(|e| e.iter().next_back().map(|(m, d)| (*m, d.clone()))))
    }

    fn get(&self, meta: &ExportMeta) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(|e| e.get(meta).cloned()))
    }

    fn list(&self) -> Result<Vec<ExportMeta>, StoreError> {
        Ok(self.with(|e| e.keys().rev().copied().collect()))
    }
}

/// An export found on disk: its (epoch, index) and path.
type Listed = ((EpochId, Index), PathBuf);

/// Exports as files in one directory: `<epoch>-<founder>-<index>.snap`, each a JSON
/// header line then the snapshot bytes, written to a temporary name and
/// renamed into place (atomic on POSIX file systems). Keeps the newest `keep`.
#[derive(Debug, Clone)]
pub struct FileSnapshotStore {
    dir: PathBuf,
    keep: usize,
}

impl FileSnapshotStore {
    /// A store in `dir` (created if missing) keeping the newest `keep` exports.
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Result<Self, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(FileSnapshotStore {
            dir,
            keep: keep.max(1),
        })
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Every export's (epoch, index) and path, oldest first.
    fn files(&self) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(Self::io(&self.dir))? {
            let path = entry.map_err(Self::io(&self.dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".snap") else {
                continue;
            };
            let mut parts = stem.split('-').map(str::parse::<u64>);
            if let (Some(Ok(number)), Some(Ok(founder)), Some(Ok(index)), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                out.push(((EpochId { number, founder }, index), path));
            }
        }
        out.sort();
        Ok(out)
    }
}

impl SnapshotStore for FileSnapshotStore {
    fn put(&self, meta: ExportMeta, data: &[u8]) -> Result<(), StoreError> {
        let name = Self::file_name(&meta);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut contents = serde_json::to_vec(&meta).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        contents.push(b'\n');
        contents.extend_from_slice(data);
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(Self::io(&tmp))?;
            file.write_all(&contents).map_err(Self::io(&tmp))?;
            file.sync_all().map_err(Self::io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(Self::io(&path))?;
        let all = self.files()?;
        for (_, old) in all.iter().take(all.len().saturating_sub(self.keep)) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }

    fn latest(&self) -> Result<Option<(ExportMeta, Vec<u8>)>, StoreError> {
        let Some((_, path)) = self.files()?.pop() else {
            return Ok(None);
        };
        Self::read(&path).map(Some)
    }

    fn get(&self, meta: &ExportMeta) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.dir.join(Self::file_name(meta));
        if !path.exists() {
            return Ok(None);
        }
        let (found, data) = Self::read(&path)?;
        if found != *meta {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("header says {found:?}, expected {meta:?}"),
            });
        }
        Ok(Some(data))
    }

    fn list(&self) -> Result<Vec<ExportMeta>, StoreError> {
        let mut out = Vec::new();
        for (_, path) in self.files()?.into_iter().rev() {
            match Self::header(&path) {
                Ok(meta) => out.push(meta),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an export whose header does not parse")
                }
            }
        }
        Ok(out)
    }
}

impl FileSnapshotStore {
    /// An export file's header line only.
    fn header(path: &Path) -> Result<ExportMeta, StoreError> {
        use std::io::{BufRead, Read};
        let file = std::fs::File::open(path).map_err(Self::io(path))?;
        let mut line = Vec::new();
        std::io::BufReader::new(file)
            .take(4096)
            .read_until(b'\n', &mut line)
            .map_err(Self::io(path))?;
        serde_json::from_slice(line.strip_suffix(b"\n").unwrap_or(&line)).map_err(|e| {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("header: {e}"),
            }
        })
    }

    fn file_name(meta: &ExportMeta) -> String {
        format!(
            "{:020}-{:020}-{:020}.snap",
            meta.epoch.number, meta.epoch.founder, meta.index
        )
    }

    fn read(path: &Path) -> Result<(ExportMeta, Vec<u8>), StoreError> {
        let path = path.to_path_buf();
        let contents = std::fs::read(&path).map_err(Self::io(&path))?;
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let newline = contents
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| corrupt("no header line".into()))?;
        let meta: ExportMeta =
            serde_json::from_slice(&contents[..newline]).map_err(|e| corrupt(e.to_string()))?;
        Ok((meta, contents[newline + 1..].to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(epoch: u64, index: Index) -> ExportMeta {
        ExportMeta {
            epoch: EpochId {
                number: epoch,
                founder: 7,
            },
            index,
            term: 1,
            taken_at_ms: 0,
        }
    }

    fn store() -> (FileSnapshotStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "kvs-store-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        (FileSnapshotStore::new(&dir, 2).unwrap(), dir)
    }

    #[test]
    fn latest_is_the_highest_epoch_then_index_and_old_ones_are_pruned() {
        let (store, dir) = store();
        assert!(store.latest().unwrap().is_none());
        store.put(meta(1, 50), b"one-fifty").unwrap();
        store.put(meta(1, 9), b"one-nine").unwrap();
        store.put(meta(2, 3), b"two-three").unwrap();
        let (m, data) = store.latest().unwrap().unwrap();
        assert_eq!(
            (m.epoch.number, m.index, data.as_slice()),
            (2, 3, &b"two-three"[..])
        );
        assert_eq!(
            store.list().unwrap().len(),
            2,
            "only the newest two are kept"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A member without an export directory exports every 30 s for as
    /// long as it runs: its memory holds the newest few, not all of them.
    #[test]
    fn the_memory_store_keeps_only_the_newest_exports() {
        let store = MemorySnapshotStore::default();
        for index in 1..=10 {
            store.put(meta(1, index), b"state").unwrap();
        }
        let kept: Vec<Index> = store.list().unwrap().iter().map(|m| m.index).collect();
        assert_eq!(kept, [10, 9, 8]);
        assert_eq!(store.latest().unwrap().map(|(m, _)| m.index), Some(10));
    }

    #[test]
    fn a_torn_write_is_never_seen() {
        let (store, dir) = store();
        store.put(meta(1, 1), b"whole").unwrap();
        assert_eq!(store.get(&meta(1, 1)).unwrap().unwrap(), b"whole");
        assert!(store.get(&meta(1, 2)).unwrap().is_none());
        // A writer that died before its rename leaves only a temporary file.
        let torn = FileSnapshotStore::file_name(&meta(1, 2));
        std::fs::write(dir.join(format!(".{torn}.tmp")), b"to").unwrap();
        let (m, data) = store.latest().unwrap().unwrap();
        assert_eq!((m.index, data.as_slice()), (1, &b"whole"[..]));
        // A damaged export is reported as such, with its path.
        std::fs::write(
            dir.join(FileSnapshotStore::file_name(&meta(9, 9))),
            b"garbage",
        )
        .unwrap();
        let err = store.latest().unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains(".snap"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! The kvs `SnapshotStore` in Azure Cosmos DB: where the leader's exports
//! survive the loss of every VM at once, without a disk of our own.
//!
//! One container, partition key path `/pk`:
//!
//! | item | `pk` | `id` |
//! |---|---|---|
//! | a manifest (the export's `ExportMeta`, size, chunk count, checksum) | `manifest` | `<epoch>-<founder>-<index>` (zero-padded) |
//! | a chunk of the export (≤ 1 MiB of bytes, base64) | `export|<epoch>-<founder>-<index>` | `<n>` |
//!
//! Atomicity (the trait's contract: a reader sees a whole export or none):
//! the chunks are written first, the manifest last; a reader starts from a
//! manifest, so chunks of a writer that died midway are never read, and it
//! checks size and FNV-1a checksum of what it reassembles, so a damaged
//! export is reported as damaged rather than used. `latest` orders
//! manifests by `(epoch, index)`. After a write, manifests beyond the newest
//! [`KEEP`] are deleted (then their chunks), never the newest.
//!
//! The trait is synchronous: kvs calls `put`, `latest` and `get` on tokio's
//! blocking pool (the member asks for reads as effects, never on its loop),
//! and they block on the SDK; called from a worker thread of a
//! multi-threaded runtime instead, a call runs under `block_in_place`.
//! `latest` answers from a one-second cache, so that a member looking for
//! its cluster, which reads the store as often as every tick, does not
//! query the account each time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::{CosmosError, FeedScope, Query, TransactionalBatch};
use base64::Engine;
use futures_util::TryStreamExt;
use kvs::lifecycle::EpochId;
use kvs::snapshot_store::{ExportMeta, SnapshotStore, StoreError};
use serde::{Deserialize, Serialize};

use crate::CloudError;
use crate::cosmos::{CosmosAccount, fnv1a, open_container};

/// Exports kept.
pub const KEEP: usize = 3;
/// Bytes of an export per chunk item (Cosmos items hold at most 2 MB).
const CHUNK_BYTES: usize = 1 << 20;
const MANIFEST_PK: &str = "manifest";
const CACHE_FOR: Duration = Duration::from_secs(1);

/// Exports in a Cosmos DB container (see the module doc).
pub struct CosmosSnapshotStore {
    container: ContainerClient,
    runtime: tokio::runtime::Handle,
    cache: Mutex<Option<(Instant, Option<Manifest>)>>,
    cache_for: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    id: String,
    pk: String,
    meta: ExportMeta,
    bytes: usize,
    chunks: usize,
    fnv1a: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    id: String,
    pk: String,
    n: usize,
    data: String,
}

fn remote(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Remote {
        store: format!("Cosmos DB ({what})"),
        reason: e.to_string(),
    }
}

fn key(epoch: EpochId, index: u64) -> String {
    format!("{:020}-{:020}-{:020}", epoch.number, epoch.founder, index)
}

impl CosmosSnapshotStore {
    /// Opens container `name` of `account` (partition key path `/pk`) as
    /// the export store.
    pub async fn open(account: &CosmosAccount, name: &str) -> Result<Self, CloudError> {
        let container = open_container(account, name).await?;
        CosmosSnapshotStore::new(container).map_err(|e| CloudError::Cosmos {
            what: format!("opening the export store {}/{name}", account.database),
            reason: e.to_string(),
        })
    }

    /// A store over `container`; must be created inside a tokio runtime
    /// (whose handle the blocking calls use).
    pub fn new(container: ContainerClient) -> Result<CosmosSnapshotStore, StoreError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| remote("setup", format!("needs a tokio runtime: {e}")))?;
        Ok(CosmosSnapshotStore {
            container,
            runtime,
            cache: Mutex::new(None),
            cache_for: CACHE_FOR,
        })
    }

    /// How long `latest` may answer from its cache (default one second;
    /// zero reads the account every time).
    pub fn with_cache_for(mut self, cache_for: Duration) -> Self {
        self.cache_for = cache_for;
        self
    }

    /// Runs `f` to completion from synchronous code, on a blocking-pool
    /// thread or a worker thread of a multi-threaded runtime.
    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(f)),
            Err(_) => self.runtime.block_on(f),
        }
    }

    async fn query<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        pk: &str,
    ) -> Result<Vec<T>, CosmosError> {
        let mut items = self
            .container
            .query_items::<T>(
                Query::from("SELECT * FROM c"),
                FeedScope::partition(pk.to_owned()),
                None,
            )
            .await?;
        let mut out = Vec::new();
        while let Some(item) = items.try_next().await? {
            out.push(item);
        }
        Ok(out)
    }

    async fn manifests(&self) -> Result<Vec<Manifest>, StoreError> {
        let mut all: Vec<Manifest> = self
            .query(MANIFEST_PK)
            .await
            .map_err(|e| remote("listing exports", e))?;
        all.sort_by_key(|m| m.meta);
        Ok(all)
    }

    async fn read(&self, manifest: &Manifest) -> Result<Vec<u8>, StoreError> {
        let pk = format!("export|{}", manifest.id);
        let mut chunks: Vec<Chunk> = self
            .query(&pk)
            .await
            .map_err(|e| remote(&format!("reading export {}", manifest.id), e))?;
        chunks.sort_by_key(|c| c.n);
        let damaged = |reason: String| StoreError::Corrupt {
            path: format!("cosmos:{pk}").into(),
            reason,
        };
        if chunks.len() != manifest.chunks || chunks.iter().enumerate().any(|(i, c)| c.n != i) {
            return Err(damaged(format!(
                "{} of {} chunks present",
                chunks.len(),
                manifest.chunks
            )));
        }
        let mut data = Vec::with_capacity(manifest.bytes);
        for c in chunks {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(c.data.as_bytes())
                .map_err(|e| damaged(format!("chunk {} is not base64: {e}", c.n)))?;
            data.extend_from_slice(&bytes);
        }
        if data.len() != manifest.bytes || format!("{:016x}", fnv1a(&data)) != manifest.fnv1a {
            return Err(damaged(format!(
                "{} bytes with checksum {:016x}; the manifest says {} bytes, {}",
                data.len(),
                fnv1a(&data),
                manifest.bytes,
                manifest.fnv1a
            )));
        }
        Ok(data)
    }

    async fn put_async(&self, meta: ExportMeta, data: &[u8]) -> Result<(), StoreError> {
        let id = key(meta.epoch, meta.index);
        let pk = format!("export|{id}");
        let pieces: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(CHUNK_BYTES).collect()
        };
        // Chunks first (one item per call: a batch holds at most 2 MB).
        for (n, piece) in pieces.iter().enumerate() {
            let chunk = Chunk {
                id: n.to_string(),
                pk: pk.clone(),
                n,
                data: base64::engine::general_purpose::STANDARD.encode(piece),
            };
            self.container
                .upsert_item(pk.clone(), &chunk.id.clone(), &chunk, None)
                .await
                .map_err(|e| remote(&format!("writing chunk {n} of export {id}"), e))?;
        }
        // The manifest last: from now on the export exists.
        let manifest = Manifest {
            id: id.clone(),
            pk: MANIFEST_PK.into(),
            meta,
            bytes: data.len(),
            chunks: pieces.len(),
            fnv1a: format!("{:016x}", fnv1a(data)),
        };
        self.container
            .upsert_item(MANIFEST_PK, &id, &manifest, None)
            .await
            .map_err(|e| remote(&format!("writing the manifest of export {id}"), e))?;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = None;
        }
        // Prune: manifests first, so that a pruned export is never half-listed.
        let all = self.manifests().await?;
        for old in all.iter().take(all.len().saturating_sub(KEEP)) {
            if let Err(e) = self.container.delete_item(MANIFEST_PK, &old.id, None).await {
                tracing::debug!(export = %old.id, error = %e, "pruning an export's manifest failed");
                continue;
            }
            let chunk_pk = format!("export|{}", old.id);
            let mut batch = TransactionalBatch::new(chunk_pk.clone());
            for n in 0..old.chunks {
                batch = batch.delete_item(n.to_string(), None);
            }
            if let Err(e) = self
                .container
                .execute_transactional_batch(batch, None)
                .await
            {
                tracing::debug!(export = %old.id, error = %e, "pruning an export's chunks failed");
            }
        }
        Ok(())
    }
}

impl SnapshotStore for CosmosSnapshotStore {
    fn put(&self, meta: ExportMeta, data: &[u8]) -> Result<(), StoreError> {
        self.block(self.put_async(meta, data))
    }

    fn latest(&self) -> Result<Option<(ExportMeta, Vec<u8>)>, StoreError> {
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|(at, _)| at.elapsed() < self.cache_for);
        let newest = match cached {
            Some((_, newest)) => newest,
            None => {
                let newest = self.block(self.manifests())?.pop();
                if let Ok(mut cache) = self.cache.lock() {
                    *cache = Some((Instant::now(), newest.clone()));
                }
                newest
            }
        };
        match newest {
            None => Ok(None),
            Some(manifest) => {
                let data = self.block(self.read(&manifest))?;
                Ok(Some((manifest.meta, data)))
            }
        }
    }

    fn get(&self, meta: &ExportMeta) -> Result<Option<Vec<u8>>, StoreError> {
        let id = key(meta.epoch, meta.index);
        let manifests = self.block(self.manifests())?;
        match manifests.into_iter().find(|m| m.id == id) {
            None => Ok(None),
            Some(m) if m.meta != *meta => Err(StoreError::Corrupt {
                path: format!("cosmos:manifest/{id}").into(),
                reason: format!("it names {:?}, expected {meta:?}", m.meta),
            }),
            Some(m) => self.block(self.read(&m)).map(Some),
        }
    }

    fn list(&self) -> Result<Vec<ExportMeta>, StoreError> {
        let manifests = self.block(self.manifests())?;
        Ok(manifests.into_iter().rev().map(|m| m.meta).collect())
    }
}

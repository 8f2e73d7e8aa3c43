//! Exports signed by the masters: a whole-fleet recovery trusts an export
//! only if it carries a MAC made with a key that only masters hold.
//!
//! An export is the state a new epoch starts from, so whoever can write the
//! export store (a blob container, a shared directory) could otherwise
//! decide the cluster's state. [`SignedSnapshotStore`] wraps any
//! [`SnapshotStore`]: `put` appends an HMAC-SHA256 tag over the export's
//! meta and bytes; `get` returns the bytes only if the tag verifies, and
//! refuses the export naming it otherwise; `latest` walks the exports newest
//! first and returns the newest one that verifies, logging every one it
//! refuses.
//!
//! Invariants: no bytes reach the caller unverified; a tag binds the bytes
//! to their meta (an export renamed to a higher epoch or index fails); the
//! comparison is constant-time.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::snapshot_store::{ExportMeta, SnapshotStore, StoreError};

/// What follows the snapshot bytes: this marker, then the tag in base64.
const TRAILER: &[u8] = b"\nmkube-export-mac-v1:";
/// Base64 characters of an HMAC-SHA256 tag (32 bytes, padded).
const TAG_B64: usize = 44;

/// A [`SnapshotStore`] whose exports carry a MAC (see the module doc).
pub struct SignedSnapshotStore {
    inner: Arc<dyn SnapshotStore>,
    key: [u8; 32],
    /// Exports already reported as refused (each is logged once).
    reported: std::sync::Mutex<std::collections::BTreeSet<ExportMeta>>,
}

impl std::fmt::Debug for SignedSnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedSnapshotStore(key hidden)")
    }
}

impl SignedSnapshotStore {
    /// Signs into and verifies from `inner` with a key derived from
    /// `secret` (the cluster CA's private key, which only masters hold).
    pub fn new(inner: Arc<dyn SnapshotStore>, secret: &[u8]) -> SignedSnapshotStore {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"mkube export MAC key v1")
            .expect("HMAC takes a key of any length");
        mac.update(secret);
        SignedSnapshotStore {
            inner,
            key: mac.finalize().into_bytes().into(),
            reported: Default::default(),
        }
    }

    fn mac(&self, meta: &ExportMeta, data: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(
            format!(
                "{}:{}:{}:{}:{}\n",
                meta.epoch.number, meta.epoch.founder, meta.index, meta.term, meta.taken_at_ms
            )
            .as_bytes(),
        );
        mac.update(data);
        mac
    }

    /// The snapshot bytes of a stored export, if its tag verifies.
    fn verify(&self, meta: &ExportMeta, stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let refused = |reason: &str| StoreError::Corrupt {
            path: format!(
                "epoch {}.{} index {}",
                meta.epoch.number, meta.epoch.founder, meta.index
            )
            .into(),
            reason: format!(
                "{reason}; refused (forged, corrupted, or not written by this cluster's masters)"
            ),
        };
        let Some(at) = stored.len().checked_sub(TRAILER.len() + TAG_B64) else {
            return Err(refused("it carries no MAC (too short)"));
        };
        if &stored[at..at + TRAILER.len()] != TRAILER {
            return Err(refused("it carries no MAC"));
        }
        let tag = BASE64
            .decode(&stored[at + TRAILER.len()..])
            .map_err(|_| refused("its MAC is not base64"))?;
        self.mac(meta, &stored[..at])
            .verify_slice(&tag)
            .map_err(|_| refused("its MAC does not match its contents"))?;
        let mut data = stored;
        data.truncate(at);
        Ok(data)
    }
}

impl SnapshotStore for SignedSnapshotStore {
    fn put(&self, meta: ExportMeta, data: &[u8]) -> Result<(), StoreError> {
        let tag = self.mac(&meta, data).finalize().into_bytes();
        let mut signed = Vec::with_capacity(data.len() + TRAILER.len() + TAG_B64);
        signed.extend_from_slice(data);
        signed.extend_from_slice(TRAILER);
        signed.extend_from_slice(BASE64.encode(tag).as_bytes());
        self.inner.put(meta, &signed)
    }

    fn latest(&self) -> Result<Option<(ExportMeta, Vec<u8>)>, StoreError> {
        let mut refused = None;
        for meta in self.inner.list()? {
            match self.get(&meta) {
                Ok(Some(data)) => return Ok(Some((meta, data))),
                Ok(None) => {}
                Err(e) => {
                    let new = self
                        .reported
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(meta);
                    if new {
                        tracing::error!(error = %e, "an export was refused; trying an older one");
                    }
                    refused.get_or_insert(e);
                }
            }
        }
        // Exports exist but none can be trusted: forming an empty cluster
        // would lose the state, so the caller is told, not given nothing.
        match refused {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    fn get(&self, meta: &ExportMeta) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner
            .get(meta)?
            .map(|stored| self.verify(meta, stored))
            .transpose()
    }

    fn list(&self) -> Result<Vec<ExportMeta>, StoreError> {
        self.inner.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::EpochId;
    use crate::snapshot_store::MemorySnapshotStore;

    fn meta(index: u64) -> ExportMeta {
        ExportMeta {
            epoch: EpochId {
                number: 1,
                founder: 7,
            },
            index,
            term: 2,
            taken_at_ms: 0,
        }
    }

    #[test]
    fn the_newest_export_that_verifies_is_the_latest() {
        let raw = Arc::new(MemorySnapshotStore::keeping(10));
        let signed = SignedSnapshotStore::new(raw.clone(), b"ca key");
        signed.put(meta(10), b"state at 10").unwrap();
        assert_eq!(signed.get(&meta(10)).unwrap().unwrap(), b"state at 10");
        // A forged export (no MAC, or a MAC made with another key) and a
        // corrupted one (a byte flipped) are newer, and refused.
        raw.put(meta(20), b"forged state").unwrap();
        SignedSnapshotStore::new(raw.clone(), b"another key")
            .put(meta(30), b"forged state")
            .unwrap();
        signed.put(meta(40), b"state at 40").unwrap();
        let mut corrupt = raw.get(&meta(40)).unwrap().unwrap();
        corrupt[3] ^= 1;
        raw.put(meta(40), &corrupt).unwrap();
        // The same bytes under another meta fail too.
        let moved = raw.get(&meta(10)).unwrap().unwrap();
        raw.put(meta(50), &moved).unwrap();
        for (index, why) in [
            (20, "it carries no MAC"),
            (30, "its MAC does not match"),
            (40, "its MAC does not match"),
            (50, "its MAC does not match"),
        ] {
            let e = signed.get(&meta(index)).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(&format!("index {index}")),
                "{e}"
            );
        }
        let (m, data) = signed.latest().unwrap().unwrap();
        assert_eq!((m.index, data.as_slice()), (10, &b"state at 10"[..]));
    }

    #[test]
    fn only_untrusted_exports_is_an_error_not_an_empty_store() {
        let raw = Arc::new(MemorySnapshotStore::default());
        let signed = SignedSnapshotStore::new(raw.clone(), b"ca key");
        assert!(signed.latest().unwrap().is_none());
        raw.put(meta(1), b"forged").unwrap();
        let e = signed.latest().unwrap_err().to_string();
        assert!(e.contains("refused"), "{e}");
    }
}

//! The kvs export store on the SDK's Cosmos DB emulator: the
//! `SnapshotStore` contract (whole exports or none, the newest wins, old
//! ones pruned).

use cloud::exports::{CosmosSnapshotStore, KEEP};
use kvs::lifecycle::EpochId;
use kvs::snapshot_store::{ExportMeta, SnapshotStore};

fn meta(epoch: u64, index: u64) -> ExportMeta {
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

/// Bytes that differ at every position (so a misordered chunk shows).
fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_the_newest_export_and_old_ones_are_pruned() {
    let (container, _) = cloud::emulator::container("exports", Vec::new(), None).await;
    let store = std::sync::Arc::new(CosmosSnapshotStore::new(container).expect("store"));
    // latest/get from the event loop (block_in_place), put from the
    // blocking pool, as kvs calls them.
    assert!(store.latest().expect("empty").is_none());
    let big = bytes(3 * (1 << 20) + 12_345);
    for (m, data) in [
        (meta(1, 50), b"one-fifty".to_vec()),
        (meta(1, 9), b"one-nine".to_vec()),
        (meta(2, 3), big.clone()),
    ] {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.put(m, &data))
            .await
            .expect("join")
            .expect("put");
    }
    let (m, data) = store.latest().expect("latest").expect("an export");
    assert_eq!((m.epoch.number, m.index), (2, 3));
    assert!(
        data == big,
        "a 3 MiB export comes back whole, in order ({} bytes)",
        data.len()
    );
    assert_eq!(
        store.get(&meta(1, 9)).expect("get").as_deref(),
        Some(&b"one-nine"[..])
    );
    // More than KEEP exports: the oldest go, the newest stays.
    for i in 0..KEEP as u64 {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.put(meta(3, i), b"later"))
            .await
            .expect("join")
            .expect("put");
    }
    assert!(store.get(&meta(1, 9)).expect("get").is_none(), "pruned");
    assert!(store.get(&meta(2, 3)).expect("get").is_none(), "pruned");
    let (m, _) = store.latest().expect("latest").expect("an export");
    assert_eq!((m.epoch.number, m.index), (3, KEEP as u64 - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_or_damaged_export_is_never_used() {
    let (container, _) = cloud::emulator::container("exports", Vec::new(), None).await;
    let store = std::sync::Arc::new(
        CosmosSnapshotStore::new(container.clone())
            .expect("store")
            .with_cache_for(std::time::Duration::ZERO),
    );
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.put(meta(1, 1), b"whole"))
        .await
        .expect("join")
        .expect("put");
    // A writer that died after its chunks, before its manifest.
    let torn = format!("{:020}-{:020}-{:020}", 5, 7, 5);
    container
        .upsert_item(
            format!("export|{torn}"),
            "0",
            serde_json::json!({"id": "0", "pk": format!("export|{torn}"), "n": 0, "data": "dG9ybg=="}),
            None,
        )
        .await
        .expect("a stray chunk");
    let (m, data) = store.latest().expect("latest").expect("an export");
    assert_eq!(
        (m.index, data.as_slice()),
        (1, &b"whole"[..]),
        "the torn export is invisible"
    );
    // A manifest whose chunks do not add up is reported, not used.
    let damaged = format!("{:020}-{:020}-{:020}", 9, 7, 9);
    container
        .upsert_item(
            "manifest",
            &damaged,
            serde_json::json!({
                "id": damaged, "pk": "manifest", "meta": meta(9, 9),
                "bytes": 5, "chunks": 1, "fnv1a": "0000000000000000"
            }),
            None,
        )
        .await
        .expect("a bad manifest");
    container
        .upsert_item(
            format!("export|{damaged}"),
            "0",
            serde_json::json!({"id": "0", "pk": format!("export|{damaged}"), "n": 0, "data": "aGVsbG8="}),
            None,
        )
        .await
        .expect("its chunk");
    let err = store.latest().expect_err("damaged").to_string();
    assert!(err.contains("damaged") && err.contains("checksum"), "{err}");
}

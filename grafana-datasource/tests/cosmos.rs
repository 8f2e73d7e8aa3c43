//! The Cosmos DB store against the same conformance checks as the embedded
//! one: offline through the SDK's in-memory emulator (its real routing,
//! retry and query code), and against a real account when
//! `MKUBE_COSMOS_ENDPOINT`, `MKUBE_COSMOS_KEY`, `MKUBE_COSMOS_DATABASE` and
//! `MKUBE_COSMOS_CONTAINER` are set (the container must exist with
//! partition key path `/pk`).
//!
//! All emulator glue is in [`emulated_store`]: the emulator is internal to
//! the SDK and unstable, pinned to exact versions in `[dev-dependencies]`.

use std::time::Duration;

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::options::{OperationOptionsBuilder, Region, ThrottlingRetryOptionsBuilder};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClientBuilder, CosmosRuntimeBuilder, RoutingStrategy,
};
use std::sync::Arc;

use azure_data_cosmos_driver::fault_injection::{
    FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder,
    FaultInjectionRule, FaultInjectionRuleBuilder, FaultOperationType,
};
use azure_data_cosmos_driver::in_memory_emulator::{
    InMemoryEmulatorHttpClient, VirtualAccountConfig, VirtualRegion,
};
use grafana_datasource::store::conformance;
use grafana_datasource::{CosmosAuth, CosmosConfig, CosmosStore, MetricsStore};

const GATEWAY: &str = "https://eastus.emulator.local";
const DATABASE: &str = "mkube";
const CONTAINER: &str = "metrics";

/// Counts the requests that reach the emulator.
#[derive(Debug, Default)]
struct Requests(std::sync::atomic::AtomicUsize);

impl azure_data_cosmos_driver::in_memory_emulator::RequestObserver for Requests {
    fn on_request(&self, _request: &azure_core::http::Request) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A fresh emulated account holding the `mkube/metrics` container, as the
/// deployment templates create it, with `faults` applied to the requests on
/// their way to the emulator, and a counter of the requests.
async fn emulated_container(
    faults: Vec<Arc<FaultInjectionRule>>,
    sdk_throttle_retries: Option<u32>,
) -> (ContainerClient, Arc<Requests>) {
    let config = VirtualAccountConfig::new(vec![VirtualRegion::new(
        "East US",
        azure_core::http::Url::parse(GATEWAY).expect("url"),
    )])
    .expect("emulator config");
    let requests = Arc::new(Requests::default());
    let emulator =
        Arc::new(InMemoryEmulatorHttpClient::new(config).with_request_observer(requests.clone()));
    let store = emulator.store();
    store.create_database(DATABASE);
    let pk =
        serde_json::from_value(serde_json::json!({"paths": ["/pk"], "kind": "Hash", "version": 2}))
            .expect("partition key definition");
    store.create_container(DATABASE, CONTAINER, pk);
    let account = AccountReference::with_authentication_key(
        GATEWAY.parse::<AccountEndpoint>().expect("endpoint"),
        azure_core::credentials::Secret::new("dGVzdGtleQ=="),
    );
    let mut builder = CosmosClientBuilder::new().with_runtime(
        CosmosRuntimeBuilder::from(emulator.runtime_builder_with_fault_rules(faults))
            .build()
            .await
            .expect("runtime"),
    );
    if let Some(retries) = sdk_throttle_retries {
        builder = builder.with_default_operation_options(
            OperationOptionsBuilder::new()
                .with_throttling_retry_options(
                    ThrottlingRetryOptionsBuilder::new()
                        .with_max_retry_count(retries)
                        .build(),
                )
                .build(),
        );
    }
    let client = builder
        .build(account, RoutingStrategy::ProximityTo(Region::EAST_US))
        .await
        .expect("client");
    let container = client
        .database_client(DATABASE)
        .container_client(CONTAINER, None)
        .await
        .expect("container");
    (container, requests)
}

/// The metrics store over [`emulated_container`].
async fn emulated_store(
    faults: Vec<Arc<FaultInjectionRule>>,
    sdk_throttle_retries: Option<u32>,
) -> (CosmosStore, Arc<Requests>) {
    let (container, requests) = emulated_container(faults, sdk_throttle_retries).await;
    (
        CosmosStore::from_container(container, Duration::from_secs(14 * 86_400)),
        requests,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cosmos_store_conforms_on_the_emulator() {
    let (store, _) = emulated_store(Vec::new(), None).await;
    conformance::run(&store).await;
}

fn throttle_batches(times: u32) -> Arc<FaultInjectionRule> {
    Arc::new(
        FaultInjectionRuleBuilder::new(
            "throttle-batches",
            FaultInjectionResultBuilder::new()
                .with_error(FaultInjectionErrorType::TooManyRequests)
                .build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new()
                .with_operation_type(FaultOperationType::BatchItem)
                .build(),
        )
        .with_hit_limit(times)
        .build(),
    )
}

fn points(n: i64) -> Vec<api::metrics::Point> {
    let now = jiff_now_ms();
    (0..n)
        .map(|i| {
            api::metrics::Point::new(
                "mkube_pods",
                &[("phase", "Running")],
                now - i * 1000,
                i as f64,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_batches_are_retried_until_they_land() {
    // With the SDK's own throttle retries off, the next 3 batch requests are
    // answered 429: the store waits and sends them again.
    let throttle = throttle_batches(3);
    let (store, requests) = emulated_store(vec![throttle.clone()], Some(0)).await;
    let before = requests.0.load(std::sync::atomic::Ordering::SeqCst);
    store
        .write(&points(600))
        .await
        .expect("the batches land despite 429s");
    let sent = requests.0.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(throttle.hit_count(), 3, "every injected 429 was met");
    assert!(
        sent >= 7,
        "{sent} requests reached the emulator for 7 batches"
    );
    let now = jiff_now_ms();
    let series = store
        .query(&grafana_datasource::SeriesQuery {
            metric: "mkube_pods".into(),
            from_ms: now - 700_000,
            to_ms: now,
            filters: vec![],
            step_ms: None,
            aggregation: grafana_datasource::Aggregation::Avg,
        })
        .await
        .expect("query");
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].points.len(), 600, "every point stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_throttled_past_its_retries_says_so() {
    let (store, _) = emulated_store(vec![throttle_batches(100)], Some(0)).await;
    let err = store.write(&points(10)).await.expect_err("still throttled");
    assert!(
        matches!(err, grafana_datasource::StoreError::Unavailable(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("RU/s are exhausted"), "{err}");
}

fn jiff_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opt-in: the same checks against a real account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cosmos_store_conforms_on_a_real_account_when_configured() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(endpoint), Some(key), Some(database), Some(container)) = (
        var("MKUBE_COSMOS_ENDPOINT"),
        var("MKUBE_COSMOS_KEY"),
        var("MKUBE_COSMOS_DATABASE"),
        var("MKUBE_COSMOS_CONTAINER"),
    ) else {
        eprintln!("MKUBE_COSMOS_* not set: the real-account check is skipped");
        return;
    };
    let store = CosmosStore::connect(&CosmosConfig {
        endpoint,
        region: var("MKUBE_COSMOS_REGION").unwrap_or_else(|| "westeurope".into()),
        database,
        container,
        auth: CosmosAuth::Key(key),
        retention: Duration::from_secs(86_400),
    })
    .await
    .expect("connecting to the real account");
    // A real container may hold earlier runs' items; conformance needs an
    // empty one, so only a fresh container passes.
    conformance::run(&store).await;
}

mod exports {
    //! The kvs export store on the emulator: the `SnapshotStore` contract.

    use grafana_datasource::cosmos_exports::{CosmosSnapshotStore, KEEP};
    use kvs::lifecycle::EpochId;
    use kvs::snapshot_store::{ExportMeta, SnapshotStore};

    use super::emulated_container;

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
        let (container, _) = emulated_container(Vec::new(), None).await;
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
        let (container, _) = emulated_container(Vec::new(), None).await;
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
}

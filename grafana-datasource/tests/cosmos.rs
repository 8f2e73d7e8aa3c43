//! The Cosmos DB store against the same conformance checks as the embedded
//! one: offline through the SDK's in-memory emulator (its real routing,
//! retry and query code), and against a real account when
//! `MKUBE_COSMOS_ENDPOINT`, `MKUBE_COSMOS_KEY`, `MKUBE_COSMOS_DATABASE` and
//! `MKUBE_COSMOS_CONTAINER` are set (the container must exist with
//! partition key path `/pk`).
//!
//! The emulator glue is `cloud::emulator`'s.

use std::time::Duration;

use std::sync::Arc;

use cloud::emulator::Requests;
use cloud::emulator::fault_injection::{
    FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder,
    FaultInjectionRule, FaultInjectionRuleBuilder, FaultOperationType,
};
use grafana_datasource::store::conformance;
use grafana_datasource::{CosmosAuth, CosmosConfig, CosmosStore, MetricsStore};

/// The metrics store over [`emulated_container`].
async fn emulated_store(
    faults: Vec<Arc<FaultInjectionRule>>,
    sdk_throttle_retries: Option<u32>,
) -> (CosmosStore, Arc<Requests>) {
    let (container, requests) =
        cloud::emulator::container("metrics", faults, sdk_throttle_retries).await;
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

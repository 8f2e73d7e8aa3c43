//! A Cosmos DB container on the SDK's in-memory emulator (its real routing,
//! retry and query code), with fault injection: the one place that knows
//! the emulator, which is internal to the SDK and unstable (pinned to exact
//! versions, behind this crate's `emulator` feature, for tests only).

use std::sync::Arc;

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::options::{OperationOptionsBuilder, Region, ThrottlingRetryOptionsBuilder};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClientBuilder, CosmosRuntimeBuilder, RoutingStrategy,
};
pub use azure_data_cosmos_driver::fault_injection;
use azure_data_cosmos_driver::fault_injection::FaultInjectionRule;
use azure_data_cosmos_driver::in_memory_emulator::{
    InMemoryEmulatorHttpClient, VirtualAccountConfig, VirtualRegion,
};

const GATEWAY: &str = "https://eastus.emulator.local";
/// The database the container is in.
pub const DATABASE: &str = "mkube";

/// Counts the requests that reach the emulator.
#[derive(Debug, Default)]
pub struct Requests(pub std::sync::atomic::AtomicUsize);

impl azure_data_cosmos_driver::in_memory_emulator::RequestObserver for Requests {
    fn on_request(&self, _request: &azure_core::http::Request) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A fresh emulated account holding the container `mkube/NAME` (partition
/// key path `/pk`), as the deployment templates create it, with `faults` applied to the requests on
/// their way to the emulator, and a counter of the requests.
pub async fn container(
    name: &str,
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
    store.create_container(DATABASE, name, pk);
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
        .container_client(name, None)
        .await
        .expect("container");
    (container, requests)
}

//! Every decoder a user reaches, fed what proptest makes of it: no input
//! panics, and every refusal names what it refuses (a field by its path,
//! a selector term, a quantity).
//!
//! - RPC bodies of every `Master` and `Kv` method, through the generated
//!   server adapters (the code a request meets first);
//! - manifests at the API (`Object::parse`, validation and the API's bounds);
//! - label selectors and resource quantities.
//!
//! mkctl's YAML and JSON reading of manifest files has its own property in
//! `cli/src/manifest.rs`.

use std::sync::Arc;

use api::master::*;
use api::worker::{ExecRequest, ExecResponse, LogsRequest, LogsResponse};
use kvs::api::*;
use master::objects::{ApiLimits, Object};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Every method answers this once its body decoded.
const DECODED: &str = "decoded";

struct StubMaster;

fn stub<T>() -> Result<T, MasterError> {
    Err(MasterError::Unavailable(DECODED.into()))
}

impl Master for StubMaster {
    async fn join(&self, _: JoinRequest) -> Result<JoinResponse, MasterError> {
        stub()
    }
    async fn bootstrap(
        &self,
        _: api::master::BootstrapRequest,
    ) -> Result<api::master::CertificateResponse, MasterError> {
        stub()
    }
    async fn renew(
        &self,
        _: api::master::RenewRequest,
    ) -> Result<api::master::CertificateResponse, MasterError> {
        stub()
    }
    async fn review_access(
        &self,
        _: api::master::AccessReviewRequest,
    ) -> Result<api::master::AccessReviewResponse, MasterError> {
        stub()
    }
    async fn create(&self, _: WriteRequest) -> Result<WriteResponse, MasterError> {
        stub()
    }
    async fn apply(&self, _: WriteRequest) -> Result<WriteResponse, MasterError> {
        stub()
    }
    async fn get(&self, _: ObjectRequest) -> Result<ObjectResponse, MasterError> {
        stub()
    }
    async fn list(&self, _: ListRequest) -> Result<ListResponse, MasterError> {
        stub()
    }
    async fn delete(&self, _: ObjectRequest) -> Result<ObjectResponse, MasterError> {
        stub()
    }
    async fn watch(
        &self,
        _: api::master::WatchRequest,
    ) -> Result<api::master::WatchResponse, MasterError> {
        stub()
    }
    async fn rollback(&self, _: RollbackRequest) -> Result<WriteResponse, MasterError> {
        stub()
    }
    async fn drain(&self, _: DrainRequest) -> Result<DrainResponse, MasterError> {
        stub()
    }
    async fn logs(&self, _: LogsRequest) -> Result<LogsResponse, MasterError> {
        stub()
    }
    async fn exec(&self, _: ExecRequest) -> Result<ExecResponse, MasterError> {
        stub()
    }
    async fn figures(&self, _: FiguresRequest) -> Result<FiguresResponse, MasterError> {
        stub()
    }
    async fn prepare_eviction(
        &self,
        _: PrepareEvictionRequest,
    ) -> Result<PrepareEvictionResponse, MasterError> {
        stub()
    }
    async fn record_metrics(
        &self,
        _: RecordMetricsRequest,
    ) -> Result<RecordMetricsResponse, MasterError> {
        stub()
    }
}

struct StubKv;

fn kv_stub<T>() -> Result<T, KvsError> {
    Err(KvsError::Unavailable(DECODED.into()))
}

impl Kv for StubKv {
    async fn txn(&self, _: TxnRequest) -> Result<kvs::kv::TxnResponse, KvsError> {
        kv_stub()
    }
    async fn put(&self, _: PutRequest) -> Result<PutResponse, KvsError> {
        kv_stub()
    }
    async fn get(&self, _: GetRequest) -> Result<GetResponse, KvsError> {
        kv_stub()
    }
    async fn range(&self, _: RangeRequest) -> Result<RangeResponse, KvsError> {
        kv_stub()
    }
    async fn delete(&self, _: DeleteRequest) -> Result<DeleteResponse, KvsError> {
        kv_stub()
    }
    async fn watch(&self, _: kvs::api::WatchRequest) -> Result<kvs::api::WatchResponse, KvsError> {
        kv_stub()
    }
    async fn status(&self, _: Empty) -> Result<NodeStatus, KvsError> {
        kv_stub()
    }
}

fn services() -> Vec<Arc<dyn rpc::Service>> {
    vec![
        Arc::new(MasterServer::new(StubMaster)),
        Arc::new(KvServer::new(StubKv)),
    ]
}

/// Field names of the requests, so that generated bodies reach past the
/// first level; and a few that exist nowhere.
const FIELDS: &[&str] = &[
    "key",
    "value",
    "prefix",
    "limit",
    "request_id",
    "client",
    "seq",
    "forwarded",
    "txn",
    "compares",
    "success",
    "failure",
    "target",
    "op",
    "Put",
    "Get",
    "Range",
    "Delete",
    "DeleteRange",
    "Value",
    "ModRevision",
    "Version",
    "CreateRevision",
    "Equal",
    "Greater",
    "from_revision",
    "wait_ms",
    "kind",
    "namespace",
    "name",
    "object",
    "labelSelector",
    "nodeName",
    "resourceVersion",
    "waitMs",
    "toRevision",
    "node",
    "force",
    "pod",
    "container",
    "tailLines",
    "follow",
    "command",
    "timeoutMs",
    "points",
    "annotations",
    "address",
    "hostIp",
    "labels",
    "capacity",
    "allocatable",
    "usage",
    "conditions",
    "runtimeVersion",
    "cpuMillis",
    "memoryBytes",
    "metric",
    "tags",
    "timeMs",
    "title",
    "text",
    "metadata",
    "spec",
    "apiVersion",
    "replicas",
    "containers",
    "image",
    "zz",
    "",
];

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(FIELDS).prop_map(str::to_string),
        1 => "[a-zA-Z_]{1,8}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e20f64..1e20).prop_map(|f| json!(f)),
        "[a-zA-Z0-9/._%-]{0,12}".prop_map(Value::String),
        field().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(field(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whether a refusal names what it refuses: a field by its path, or the
/// body as a whole (not JSON, or not the request's shape at its top).
fn names_a_field(message: &str) -> bool {
    message.contains(": field `") || message.contains(": the body: ")
}

fn call(runtime: &tokio::runtime::Runtime, body: Vec<u8>) -> Result<(), TestCaseError> {
    for service in services() {
        for method in service.methods() {
            let Some(call) = service.call(method, body.clone().into()) else {
                return Err(TestCaseError::fail(format!(
                    "{method} is listed but not served"
                )));
            };
            let Err(status) = runtime.block_on(call) else {
                continue;
            };
            if status.code == rpc::Code::InvalidArgument {
                prop_assert!(
                    names_a_field(&status.message),
                    "{}/{method}: {}",
                    service.name(),
                    status.message
                );
            } else {
                prop_assert!(
                    status.message.contains(DECODED),
                    "{}/{method}: {:?} {}",
                    service.name(),
                    status.code,
                    status.message
                );
            }
        }
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any JSON body, to every method of `Master` and `Kv`.
    #[test]
    fn rpc_bodies_decode_or_name_the_field(body in json_value()) {
        let bytes = serde_json::to_vec(&body).expect("encodes");
        call(&runtime(), bytes)?;
    }

    /// Any bytes at all.
    #[test]
    fn rpc_bytes_decode_or_name_the_body(body in prop::collection::vec(any::<u8>(), 0..64)) {
        call(&runtime(), body)?;
    }
}

/// A valid manifest of each kind the API takes from users.
fn manifests() -> Vec<Value> {
    let template = json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1"],
                 "ports": [{"containerPort": 80, "hostPort": 8080}],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    });
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                        "template": template.clone()}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template.clone()}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
               "spec": template["spec"].clone()}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}),
    ]
}

/// Every JSON pointer of `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A valid manifest with one of its parts replaced by `with`.
fn mutated(which: usize, at: usize, with: Value) -> Value {
    let all = manifests();
    let mut m = all[which % all.len()].clone();
    let mut paths = Vec::new();
    pointers(&m, String::new(), &mut paths);
    let path = &paths[1 + at % (paths.len() - 1)];
    if let Some(slot) = m.pointer_mut(path) {
        *slot = with;
    }
    m
}

fn check_manifest(value: Value) -> Result<(), TestCaseError> {
    let outcome = Object::parse(value).and_then(|o| {
        o.validate()?;
        o.check_limits(&ApiLimits::default())
    });
    match outcome {
        Ok(()) => {}
        Err(MasterError::Invalid { errors, .. }) => {
            prop_assert!(!errors.errors.is_empty());
            for e in &errors.errors {
                prop_assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?}");
            }
        }
        Err(MasterError::InvalidArgument(m)) => {
            let about = m.contains('`')
                || m.contains("kind")
                || ["metadata", "spec", "apiVersion", "status"]
                    .iter()
                    .any(|f| m.contains(&format!(": {f}")));
            prop_assert!(about, "{m}");
        }
        Err(other) => prop_assert!(false, "{other}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A valid manifest with any part replaced by anything.
    #[test]
    fn manifests_with_any_part_replaced_parse_or_name_the_field(
        which in 0usize..4, at in any::<usize>(), with in json_value()
    ) {
        check_manifest(mutated(which, at, with))?;
    }

    /// Manifests made up from scratch, of every kind and of none.
    #[test]
    fn made_up_manifests_parse_or_name_the_field(
        kind in proptest::sample::select(&["Pod", "Deployment", "ReplicaSet", "Service", "Node", "Event", "Endpoints", "Secret", ""][..]),
        metadata in json_value(),
        spec in json_value(),
    ) {
        check_manifest(json!({"apiVersion": "v1", "kind": kind, "metadata": metadata, "spec": spec}))?;
    }

    /// Label selectors in kubectl's syntax: parsed, or refused naming the term.
    #[test]
    fn selectors_parse_or_name_the_term(text in "[a-z=!,() .in-]{0,40}") {
        if let Err(e) = api::LabelSelector::parse(&text) {
            prop_assert!(e.contains("selector") || e.contains('"'), "{e}");
        }
    }

    /// Quantities: parsed exactly (formatting round-trips), or refused
    /// quoting the text; in a manifest, refused naming the field.
    #[test]
    fn quantities_parse_or_name_the_field(cpu in "[0-9.m]{0,24}", memory in "[0-9.KMGTiki]{0,24}") {
        use api::quantity::*;
        if let Ok(m) = parse_cpu_millis(&cpu) {
            prop_assert_eq!(parse_cpu_millis(&format_cpu_millis(m)), Ok(m));
        }
        if let Ok(b) = parse_memory_bytes(&memory) {
            prop_assert_eq!(parse_memory_bytes(&format_memory_bytes(b)), Ok(b));
        }
        let mut pod = manifests()[2].clone();
        pod["spec"]["containers"][0]["resources"]["requests"] = json!({"cpu": cpu, "memory": memory});
        if let Err(MasterError::Invalid { errors, .. }) =
            Object::parse(pod).and_then(|o| o.validate())
        {
            for e in errors.errors {
                prop_assert!(e.field.starts_with("spec.containers[0].resources.requests."), "{e:?}");
            }
        }
    }
}

//! The `Master` API in-process, over a one-member kvs: first called
//! directly (no sockets between the test and the service), then through
//! [`master::run::run`], the very assembly `mkube-master` runs, over its
//! listener and until its shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::master::{
    ListRequest, Master, MasterClient, MasterError, ObjectRequest, Outcome, WriteRequest,
};
use kvs::node::{KvService, Node, NodeConfig};
use kvs::snapshot_store::{MemorySnapshotStore, SnapshotStore};
use master::leader::LeaderConfig;
use master::run::{MasterConfig, MemberSettings, run};
use master::service::MasterService;
use master::store::Store;
use serde_json::{Value, json};

const TICK: Duration = Duration::from_millis(10);
const ELECTION_TICKS: u32 = 10;

/// A fleet of one: this master at `addr` (a single member sends nothing).
fn fleet(addr: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("m1".to_string(), addr.to_string())])
}

/// A member of a fleet of one, exporting to `exports`, leading.
async fn leading_member(exports: Arc<MemorySnapshotStore>) -> Node {
    let node = Node::start(NodeConfig {
        name: "m1".into(),
        fleet: fleet("127.0.0.1:9"),
        token: None,
        tls: None,
        tick: TICK,
        election_ticks: ELECTION_TICKS,
        history_limit: 1_000,
        limits: kvs::kv::Limits::default(),
        snapshot_entries: 1_000,
        store: exports,
        export_interval: Duration::from_secs(60),
    })
    .expect("a member");
    let mut leadership = node.leadership();
    tokio::time::timeout(
        Duration::from_secs(20),
        leadership.wait_for(|l| l.is_some()),
    )
    .await
    .expect("a member of a fleet of one leads within 20 s")
    .expect("the member runs");
    node
}

fn deployment(name: &str, replicas: u32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]}
            }
        }
    })
}

fn object(kind: &str, name: &str) -> ObjectRequest {
    ObjectRequest {
        kind: kind.into(),
        namespace: Some("default".into()),
        name: name.into(),
        resource_version: None,
        grace_period_seconds: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_creates_applies_reads_and_refuses_in_process() {
    let node = leading_member(Arc::default()).await;
    let api = MasterService::new(
        Store::new(Arc::new(KvService::local(node))),
        Vec::new(),
        None,
    );

    let created = api
        .create(WriteRequest {
            object: deployment("web", 2, "nginx:1"),
        })
        .await
        .expect("created");
    assert_eq!(created.outcome, Outcome::Created);
    let version = created.object["metadata"]["resourceVersion"]
        .as_str()
        .expect("a stored object carries its version")
        .to_string();
    assert!(
        created.object["metadata"]["uid"].is_string(),
        "{}",
        created.object
    );

    // Created twice: AlreadyExists, naming the object.
    let again = api
        .create(WriteRequest {
            object: deployment("web", 2, "nginx:1"),
        })
        .await
        .expect_err("exists");
    assert!(
        matches!(&again, MasterError::AlreadyExists { name, .. } if name == "web"),
        "{again:?}"
    );

    // Applied unchanged, then changed.
    let same = api
        .apply(WriteRequest {
            object: deployment("web", 2, "nginx:1"),
        })
        .await
        .expect("applied");
    assert_eq!(same.outcome, Outcome::Unchanged);
    let scaled = api
        .apply(WriteRequest {
            object: deployment("web", 3, "nginx:1"),
        })
        .await
        .expect("applied");
    assert_eq!(scaled.outcome, Outcome::Configured);
    let got = api.get(object("deployments", "web")).await.expect("read");
    assert_eq!(got.object["spec"]["replicas"], 3);

    // A bad object is refused with every bad field named, and nothing is stored.
    let bad = api
        .create(WriteRequest {
            object: deployment("Bad_Name", 0, ""),
        })
        .await
        .expect_err("invalid");
    let message = bad.to_string();
    assert!(
        matches!(bad, MasterError::Invalid { .. }),
        "{bad:?}: {message}"
    );
    assert!(
        message.contains("metadata.name") && message.contains("image"),
        "{message}"
    );
    let listed = api
        .list(ListRequest {
            kind: "deployments".into(),
            namespace: None,
            label_selector: None,
            node_name: None,
        })
        .await
        .expect("listed");
    let names: Vec<&str> = listed
        .items
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["web"]);

    // A delete at a stale version conflicts; at the stored one it goes.
    let stale = api
        .delete(ObjectRequest {
            resource_version: Some(version),
            ..object("deployments", "web")
        })
        .await
        .expect_err("stale");
    assert!(matches!(stale, MasterError::Conflict { .. }), "{stale:?}");
    let current = scaled.object["metadata"]["resourceVersion"]
        .as_str()
        .expect("version")
        .to_string();
    api.delete(ObjectRequest {
        resource_version: Some(current),
        ..object("deployments", "web")
    })
    .await
    .expect("deleted");
    let gone = api
        .get(object("deployments", "web"))
        .await
        .expect_err("gone");
    assert!(matches!(gone, MasterError::NotFound { .. }), "{gone:?}");
}

/// Lists and snapshots come from the watch cache, yet never miss a write
/// that was acknowledged before they were asked: each read waits for the
/// cache to hold a linearizable revision (whether the cache follows the
/// writes or lists again when it falls behind the watch history, which
/// holds 1,000 events here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_snapshots_see_every_acknowledged_write() {
    let node = leading_member(Arc::default()).await;
    let store = Store::new(Arc::new(KvService::local(node)));
    let api = MasterService::new(store.clone(), Vec::new(), None);
    let list = |kind: &str| ListRequest {
        kind: kind.into(),
        namespace: None,
        label_selector: None,
        node_name: None,
    };
    for round in 0..3u32 {
        // Round 1 writes past the history between two reads.
        let writes = if round == 1 { 1_100 } else { 5 };
        for i in 0..writes {
            api.apply(WriteRequest {
                object: deployment(&format!("d{i}"), round + 1, "nginx:1"),
            })
            .await
            .expect("applied");
        }
        let listed = api.list(list("Deployment")).await.expect("listed");
        let replicas: Vec<u64> = listed
            .items
            .iter()
            .filter(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with('d'))
            })
            .filter(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .and_then(|n| n[1..].parse::<u32>().ok())
                    .is_some_and(|i| i < writes)
            })
            .map(|d| d["spec"]["replicas"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(
            replicas.len(),
            writes as usize,
            "round {round}: every object listed"
        );
        assert!(
            replicas.iter().all(|r| *r == u64::from(round + 1)),
            "round {round}: the list holds every write: {replicas:?}"
        );
        let snap = master::leader::Snapshot::read(&store)
            .await
            .expect("a snapshot");
        assert!(snap.revision >= listed.resource_version.parse::<i64>().unwrap_or(i64::MAX));
        assert!(
            snap.deployments
                .iter()
                .filter(|d| d.object.metadata.name == "d0")
                .all(|d| d.object.spec.replicas == round + 1),
            "round {round}: the snapshot holds the last write"
        );
    }
    api.delete(object("Deployment", "d0"))
        .await
        .expect("deleted");
    let listed = api.list(list("Deployment")).await.expect("listed");
    assert!(
        listed.items.iter().all(|d| d["metadata"]["name"] != "d0"),
        "a delete is seen by the next list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_run_in_process_serves_controls_and_exports_when_stopped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("address").to_string();
    let exports = Arc::new(MemorySnapshotStore::default());
    let metrics_db = std::env::temp_dir().join(format!(
        "mkube-master-run-test-{}-{}.db",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let metrics_store = Arc::new(
        grafana_datasource::SqliteStore::open(&metrics_db, Duration::from_secs(3600))
            .expect("a metrics store"),
    );
    let config = MasterConfig {
        name: "m1".into(),
        fleet: fleet(&addr),
        security: None,
        token: None,
        ca: None,
        exports: exports.clone(),
        member: MemberSettings {
            tick: TICK,
            election_ticks: ELECTION_TICKS,
            limits: kvs::kv::Limits::default(),
            snapshot_entries: 1_000,
            export_interval: Duration::from_secs(60),
        },
        metrics_store,
        listener_limits: pki::member::ListenerFlags {
            max_connections: 64,
            max_connections_per_ip: 64,
            max_member_connections: 64,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
        },
        api_limits: master::objects::ApiLimits::default(),
        worker_cert_validity: Duration::from_secs(3600),
        local_node: "m1".into(),
        leader: LeaderConfig {
            resync_interval: Duration::from_millis(100),
            ..LeaderConfig::default()
        },
        vms: None,
        dns: None,
        grafana: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let master = tokio::spawn(run(config, listener, async move {
        let _ = stopped.await;
    }));

    let client =
        MasterClient::new(rpc::Client::new(&addr, rpc::ClientConfig::default()).expect("a client"));
    // The member elects itself; until then writes may be refused as unavailable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .create(&WriteRequest {
                object: deployment("web", 2, "nginx:1"),
            })
            .await
        {
            Ok(r) => {
                assert_eq!(r.outcome, Outcome::Created);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no master took the Deployment within 30 s: {e}"),
        }
    }
    // The leader loops run: the Deployment's ReplicaSet makes two pods
    // (Pending, as there is no node).
    let pods = loop {
        let listed = client
            .list(&ListRequest {
                kind: "pods".into(),
                namespace: Some("default".into()),
                label_selector: Some("app=web".into()),
                node_name: None,
            })
            .await
            .expect("listed");
        if listed.items.len() == 2 || Instant::now() > deadline {
            break listed.items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pods.len(), 2, "the controllers made the replicas: {pods:?}");

    // Stopped, the master exports its state before closing its listener.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), master)
        .await
        .expect("the master stops within 20 s")
        .expect("its task")
        .expect("it served until stopped");
    let (meta, _) = exports
        .latest()
        .expect("the export store")
        .expect("an export written when stopping");
    assert!(meta.index > 0, "{meta:?}");
    let _ = std::fs::remove_file(&metrics_db);
}

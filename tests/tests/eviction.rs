//! A Spot eviction notice, end to end on a local cluster of processes: an
//! Azure instance metadata service stand-in serves the documented Scheduled
//! Events JSON; the worker on the "evicted VM" (whose master leads) must get
//! its node cordoned, its pods running elsewhere, leadership moved, a fresh
//! export written and the event acknowledged, all within the 30 s Azure
//! gives; a worker of another VM must ignore the event.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use api::master::{ListRequest, ObjectRequest, WriteRequest};
use api::{Node, Pod, PodPhase};
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tests::cluster::{Cluster, Timing, running_containers};
use tests::images::BUSYBOX;
use tests::masters::{Masters, kv_status_at};

/// What the stand-in serves and what it was sent.
#[derive(Default)]
struct Imds {
    document: Mutex<Value>,
    acks: Mutex<Vec<(Instant, Value)>>,
}

type Shared = State<Arc<Imds>>;

async fn events(State(imds): Shared, headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        // IMDS refuses requests without the header (they could come through a proxy).
        return (axum::http::StatusCode::BAD_REQUEST, "Bad Request").into_response();
    }
    let doc = imds.document.lock().map(|d| d.clone()).unwrap_or_default();
    axum::Json(doc).into_response()
}

async fn start_requests(State(imds): Shared, body: axum::body::Bytes) -> &'static str {
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut acks) = imds.acks.lock() {
        acks.push((Instant::now(), value));
    }
    ""
}

async fn start_imds(imds: Arc<Imds>) -> Result<String> {
    let app = axum::Router::new()
        .route(
            "/metadata/scheduledevents",
            get(events).post(start_requests),
        )
        .with_state(imds);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn pods(c: &Cluster) -> Result<Vec<Pod>> {
    let list = c
        .any_client()
        .await?
        .list(&ListRequest {
            kind: "pods".into(),
            namespace: Some("default".into()),
            label_selector: Some("app=spot".into()),
            node_name: None,
        })
        .await?;
    list.items
        .into_iter()
        .map(|v| serde_json::from_value(v).context("a pod"))
        .collect()
}

fn running_on(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for p in pods {
        if p.status
            .as_ref()
            .is_some_and(|s| s.phase == PodPhase::Running)
        {
            *by.entry(p.spec.node_name.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    by
}

async fn node(c: &Cluster, name: &str) -> Result<Node> {
    let answer = c
        .any_client()
        .await?
        .get(&ObjectRequest {
            kind: "nodes".into(),
            namespace: None,
            name: name.into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await?;
    Ok(serde_json::from_value(answer.object)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempt_notice_drains_the_node_moves_leadership_exports_and_acknowledges() -> Result<()>
{
    let imds = Arc::new(Imds::default());
    *imds.document.lock().map_err(|_| anyhow::anyhow!("lock"))? =
        json!({"DocumentIncarnation": 1, "Events": []});
    let imds_url = start_imds(imds.clone()).await?;

    // Worker 1 is the node on the leader's VM: every master names it as its
    // local node, the only one whose worker may call its prepare_eviction.
    let local_node = ["--local-node".to_owned(), "w1-{id}".to_owned()];
    let mut c = Cluster::start_with(3, 1, Timing::default(), &local_node).await?;
    let leader = c.leader().await.context("a leader")?;
    let leader_addr = c.master_addr(leader);
    let flags = |vm: &str, local_master: Option<&str>| {
        let mut f = vec![
            "--scheduled-events-url".to_owned(),
            imds_url.clone(),
            "--vm-name".to_owned(),
            vm.to_owned(),
            "--eviction-stop-budget-ms".to_owned(),
            "15000".to_owned(),
        ];
        if let Some(m) = local_master {
            f.extend(["--local-master".to_owned(), m.to_owned()]);
        }
        f
    };
    // Worker 1 shares a VM with the leading master; worker 2 is another VM.
    c.add_worker_with(1, &flags("vm-evicted", Some(&leader_addr)))?;
    c.add_worker_with(2, &flags("vm-bystander", None))?;
    let evicted = c.worker_name(1);
    let bystander = c.worker_name(2);
    c.wait_for(
        Duration::from_secs(30),
        "three Ready nodes",
        |c| async move { Ok((c.ready_nodes().await?.len() == 3).then_some(())) },
    )
    .await?;

    c.any_client()
        .await?
        .apply(&WriteRequest {
            object: json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "spot"},
                "spec": {
                    "replicas": 6,
                    "selector": {"matchLabels": {"app": "spot"}},
                    "template": {
                        "metadata": {"labels": {"app": "spot"}},
                        "spec": {
                            "terminationGracePeriodSeconds": 2,
                            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]
                        }
                    }
                }
            }),
        })
        .await?;
    let ev = evicted.clone();
    c.wait_for(
        Duration::from_secs(60),
        "6 pods running, some on the VM to be evicted",
        |c| {
            let ev = ev.clone();
            async move {
                let by = running_on(&pods(c).await?);
                Ok(
                    (by.values().sum::<usize>() == 6 && by.get(&ev).copied().unwrap_or(0) > 0)
                        .then_some(()),
                )
            }
        },
    )
    .await?;

    // The notice: a Preempt for vm-evicted, and a Freeze for the bystander.
    let published = Instant::now();
    let published_ms = now_ms();
    // Azure gives a Preempt 30 s: NotBefore is then (the worker acks before).
    let not_before = jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(
        &(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30)),
    )?;
    *imds.document.lock().map_err(|_| anyhow::anyhow!("lock"))? = json!({
        "DocumentIncarnation": 2,
        "Events": [
            {"EventId": "EVICT-1", "EventType": "Preempt", "ResourceType": "VirtualMachine",
             "Resources": ["vm-evicted"], "EventStatus": "Scheduled",
             "NotBefore": not_before, "Description": "", "EventSource": "Platform",
             "DurationInSeconds": -1},
            {"EventId": "FREEZE-2", "EventType": "Freeze", "ResourceType": "VirtualMachine",
             "Resources": ["vm-bystander"], "EventStatus": "Scheduled", "NotBefore": "",
             "Description": "", "EventSource": "Platform", "DurationInSeconds": 5}
        ]
    });

    let acked = imds.clone();
    let acked_at = c
        .wait_for(Duration::from_secs(30), "the eviction acknowledged", |_| {
            let acked = acked.clone();
            async move {
                let acks = acked.acks.lock().map_err(|_| anyhow::anyhow!("lock"))?;
                Ok(acks.first().map(|(at, _)| *at))
            }
        })
        .await?;
    let ev = evicted.clone();
    c.wait_for(
        Duration::from_secs(30).saturating_sub(published.elapsed()),
        "every pod running off the evicted node",
        |c| {
            let ev = ev.clone();
            async move {
                let by = running_on(&pods(c).await?);
                Ok((by.values().sum::<usize>() == 6 && !by.contains_key(&ev)).then_some(()))
            }
        },
    )
    .await?;
    let within = published.elapsed();

    // Cordoned; containers stopped; the other node untouched.
    assert!(
        node(&c, &evicted).await?.spec.unschedulable,
        "the evicted node is cordoned"
    );
    assert!(
        !node(&c, &bystander).await?.spec.unschedulable,
        "the bystander is not"
    );
    assert_eq!(
        running_containers(&evicted)?,
        0,
        "the evicted node's containers stopped"
    );
    // One acknowledgement, of the Preempt, in the documented shape.
    let acks = imds
        .acks
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .clone();
    assert_eq!(acks.len(), 1, "only the evicted VM acknowledges: {acks:?}");
    assert_eq!(
        acks[0].1,
        json!({"StartRequests": [{"EventId": "EVICT-1"}]})
    );
    // Leadership moved away from the evicted VM's master, which exported first.
    let now_leader = c.leader().await.context("a leader after the eviction")?;
    assert_ne!(now_leader, leader, "leadership moved off the evicted VM");
    let status = kv_status_at(&leader_addr, c.credentials()).await?;
    let export = status.last_export.context("an export")?;
    if export.taken_at_ms < published_ms {
        bail!(
            "the newest export ({}) predates the notice ({published_ms})",
            export.taken_at_ms
        );
    }
    let ack_after = acked_at.duration_since(published);
    assert!(
        ack_after < Duration::from_secs(30),
        "acknowledged after {ack_after:?}"
    );
    assert!(
        within < Duration::from_secs(30),
        "replaced after {within:?}"
    );
    eprintln!("acknowledged {ack_after:?} after the notice; pods replaced within {within:?}");
    Ok(())
}

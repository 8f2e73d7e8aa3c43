//! No request can stop the cluster: a real process cluster (three masters,
//! one worker) takes abusive requests one after another while a canary
//! keeps scaling a Deployment and writing keys. Every canary operation must
//! succeed, no master may exit, panic or grow past [`RSS_BOUND`], and each
//! abusive request must get an error that names the problem.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use api::master::{MasterError, ObjectRequest, WriteRequest};
use api::{Pod, PodPhase};
use kvs::api::{DeleteRequest, GetRequest, KvClient, KvsError, PutRequest, TxnRequest};
use kvs::kv::{Op, Txn};
use serde_json::json;
use tests::canary::{Canary, canary_deployment};
use tests::cluster::{Cluster, Timing, master_error};
use tests::images::BUSYBOX;
use tests::masters::{Masters, kv_client_at};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The most resident memory a master may hold at any point of the test.
const RSS_BOUND: u64 = 512 << 20;
/// The store quota of the test cluster's masters.
const QUOTA_BYTES: u64 = 24 << 20;

fn kv_client(c: &Cluster, i: usize) -> Result<KvClient> {
    kv_client_at(
        &c.master_addr(i),
        &c.admin_credentials()?,
        Duration::from_secs(10),
    )
}

/// Fails if a master exited, panicked or holds more than [`RSS_BOUND`].
fn healthy(c: &mut Cluster, case: &str) -> Result<()> {
    for h in c.master_health() {
        eprintln!("after {case}: {} holds {} MiB", h.name, h.rss_bytes >> 20);
        ensure!(h.alive, "after {case}: master {} is not running", h.name);
        ensure!(!h.panicked, "after {case}: master {} panicked", h.name);
        ensure!(
            h.rss_bytes < RSS_BOUND,
            "after {case}: master {} holds {} MiB (bound {} MiB)",
            h.name,
            h.rss_bytes >> 20,
            RSS_BOUND >> 20
        );
    }
    Ok(())
}

/// One value that is not an object, written through the raw `Kv` API at a
/// pod's key, stopped the control loop and the prober (every snapshot read
/// failed). It must cost only itself: skipped, named, reported, deletable.
async fn poison_value(c: &Cluster) -> Result<()> {
    let key = "/registry/pods/default/poison";
    kv_client(c, 0)?
        .put(&PutRequest {
            key: key.into(),
            value: "\"not an object\"".into(),
            request_id: None,
        })
        .await?;
    let client = c.any_client().await?;
    let list = c.list_all("pods", None).await?;
    ensure!(
        list.unreadable.iter().any(|u| u.key == key),
        "list names the unreadable key: {:?}",
        list.unreadable
    );
    let get = ObjectRequest {
        kind: "pods".into(),
        namespace: Some("default".into()),
        name: "poison".into(),
        resource_version: None,
        grace_period_seconds: None,
    };
    match client.get(&get).await {
        Err(e) => match master_error(&e) {
            Some(MasterError::Unreadable { key: k, .. }) if k == key => {}
            _ => bail!("get of the poison: {e}"),
        },
        Ok(o) => bail!("get of the poison answered {}", o.object),
    }
    c.wait_for(
        Duration::from_secs(30),
        "a Warning event naming the unreadable key",
        |c| async move {
            let events = c.list_all("events", None).await?;
            Ok(events
                .items
                .iter()
                .any(|e| {
                    e["reason"] == "UnreadableObject"
                        && e["message"].as_str().is_some_and(|m| m.contains(key))
                })
                .then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// The poison is deleted by name, and no longer listed.
async fn poison_deleted(c: &Cluster) -> Result<()> {
    let client = c.any_client().await?;
    client
        .delete(&ObjectRequest {
            kind: "pods".into(),
            namespace: Some("default".into()),
            name: "poison".into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await
        .context("deleting the poison by name")?;
    let list = c.list_all("pods", None).await?;
    ensure!(list.unreadable.is_empty(), "{:?}", list.unreadable);
    Ok(())
}

/// 5,000 connections from one address (127.0.0.2: another machine as far
/// as the masters can tell) that never send a request: half silent, half
/// trickling a byte now and then. Before, each held one of the 4,096 slots
/// for ever and Raft, probes and users waited behind them. Now the address
/// gets its share, the rest are held unread and reset later (and logged),
/// and the share is closed by the handshake and header timeouts.
async fn connection_flood(c: &Cluster) -> Result<Flood> {
    let to: std::net::SocketAddr = c.master_addr(0).parse()?;
    let mut streams = Vec::new();
    for _ in 0..5_000 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.2:0".parse()?)?;
        // Past the share, connections are held and then reset (and past
        // the tarpit's room, reset at once): the flood's own failures.
        if let Ok(stream) = socket.connect(to).await {
            streams.push(stream);
        }
    }
    let half = streams.len() / 2;
    let trickling: Vec<TcpStream> = streams.split_off(half);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let trickler = tokio::spawn(async move {
        let mut open = trickling;
        while !s.load(Ordering::Relaxed) && !open.is_empty() {
            let mut still = Vec::with_capacity(open.len());
            for mut t in open {
                if t.write_all(&[0x16]).await.is_ok() {
                    still.push(t);
                }
            }
            open = still;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(Flood {
        _idle: streams,
        stop,
        trickler,
    })
}

/// The flood's connections, held until dropped.
struct Flood {
    _idle: Vec<TcpStream>,
    stop: Arc<AtomicBool>,
    trickler: tokio::task::JoinHandle<()>,
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.trickler.abort();
    }
}

/// The flood was turned away with a reason in the master's log.
fn flood_refused(c: &Cluster) -> Result<()> {
    let log = std::fs::read_to_string(c.dir().join("master-0.log"))?;
    ensure!(
        log.contains("refusing connections") && log.contains("its address holds its share"),
        "master 0 logs no refusal naming the address share"
    );
    Ok(())
}

/// `replicas` far beyond any cluster: refused, naming the field and the
/// flag that bounds it (the ReplicaSet controller used to create every
/// missing pod in one pass).
async fn huge_replicas(c: &Cluster) -> Result<()> {
    let client = c.any_client().await?;
    for replicas in [4_000_000_000u32, 1_000_000] {
        let mut d = canary_deployment(replicas);
        d["metadata"]["name"] = json!("huge");
        match client.apply(&WriteRequest { object: d }).await {
            Err(e) => match master_error(&e) {
                Some(MasterError::Invalid { errors, .. })
                    if errors.errors.iter().any(|f| {
                        f.field == "spec.replicas" && f.reason.contains("--max-replicas")
                    }) => {}
                _ => bail!("replicas {replicas}: {e}"),
            },
            Ok(_) => bail!("replicas {replicas} was accepted"),
        }
    }
    Ok(())
}

/// Quantities whose sums overflow `u64` (a panic in debug builds, a wrap
/// that made the pod "fit" in release): the pod stays Pending as fitting
/// nowhere; a limit that overflows Docker's nano-CPUs is refused by name.
async fn overflowing_quantities(c: &Cluster) -> Result<()> {
    let client = c.any_client().await?;
    let container = |name: &str| {
        json!({"name": name, "image": BUSYBOX, "command": ["sleep", "3600"],
               "resources": {"requests": {"cpu": "9223372036854775808m"}}})
    };
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "overflow"},
        "spec": {"containers": [container("a"), container("b")]}
    });
    client.apply(&WriteRequest { object: pod }).await?;
    c.wait_for(
        Duration::from_secs(30),
        "the overflowing pod Pending as unschedulable",
        |c| async move {
            let got = c
                .any_client()
                .await?
                .get(&ObjectRequest {
                    kind: "pods".into(),
                    namespace: Some("default".into()),
                    name: "overflow".into(),
                    resource_version: None,
                    grace_period_seconds: None,
                })
                .await?;
            let pod: Pod = serde_json::from_value(got.object)?;
            let status = pod.status.unwrap_or_default();
            let unschedulable = status.phase == PodPhase::Pending
                && status
                    .message
                    .is_some_and(|m| m.contains("Insufficient cpu"));
            Ok(unschedulable.then_some(()))
        },
    )
    .await?;
    client
        .delete(&ObjectRequest {
            kind: "pods".into(),
            namespace: Some("default".into()),
            name: "overflow".into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await?;
    Ok(())
}

/// One `Kv.txn` of 128 `Range ""` reads (each the whole store): the member
/// stops gathering at the answer limit and refuses, naming it, instead of
/// building 128 copies of the store; with a write beside the ranges, the
/// transaction is refused before it reaches the log (its answer would have
/// been kept on every member for retries).
async fn ranges_in_one_txn(c: &Cluster) -> Result<()> {
    let kv = kv_client(c, 0)?;
    for i in 0..4 {
        kv.put(&PutRequest {
            key: format!("/abuse/bulk/{i}"),
            value: "x".repeat(1 << 20),
            request_id: None,
        })
        .await?;
    }
    let range = Op::Range {
        prefix: String::new(),
        limit: 0,
    };
    let read = TxnRequest {
        txn: Txn {
            compares: Vec::new(),
            success: vec![range.clone(); 128],
            failure: Vec::new(),
        },
        request_id: None,
        forwarded: false,
    };
    let e = kv
        .txn(&read)
        .await
        .err()
        .context("128 full ranges were answered")?;
    ensure!(
        matches!(KvsError::from_rpc(&e), Some(KvsError::TooLarge(m)) if m.contains("--max-response-bytes")),
        "128 ranges: {e}"
    );
    let mut write = read.clone();
    write.txn.success[0] = Op::Put {
        key: "/abuse/k".into(),
        value: "v".into(),
    };
    let e = kv
        .txn(&write)
        .await
        .err()
        .context("a write with ranges was taken")?;
    ensure!(
        matches!(KvsError::from_rpc(&e), Some(KvsError::InvalidArgument(m)) if m.contains("cannot also range")),
        "a write with 127 ranges: {e}"
    );
    kv.delete(&DeleteRequest {
        key: "/abuse/".into(),
        prefix: true,
        request_id: None,
    })
    .await?;
    Ok(())
}

/// Filling the store to its quota (`--quota-bytes`, small here): further
/// puts are refused with NOSPACE naming the flag, deletes still go
/// through, `Kv.status` (what `mkctl cluster status` shows) raises the
/// alarm, and writes come back once room is made.
async fn store_quota(c: &Cluster, canary: &Canary) -> Result<()> {
    canary.pause().await;
    let kv = kv_client(c, 0)?;
    let put = |i: usize| PutRequest {
        key: format!("/abuse/fill/{i}"),
        value: "x".repeat(1_400 * 1024),
        request_id: None,
    };
    let mut refused = None;
    'fill: for i in 0..(2 * QUOTA_BYTES / (1_400 * 1024)) as usize {
        // A leadership change under load is retried, as a client does; the
        // first other refusal is the one the quota must give.
        for _ in 0..5 {
            match kv.put(&put(i)).await {
                Ok(_) => continue 'fill,
                Err(e)
                    if matches!(
                        KvsError::from_rpc(&e),
                        Some(KvsError::Dropped | KvsError::NoLeader | KvsError::Unavailable(_))
                    ) => {}
                Err(e) => {
                    refused = Some(e);
                    break 'fill;
                }
            }
        }
        bail!("put {i} kept meeting leadership changes");
    }
    let e = refused.context("the store never filled")?;
    ensure!(
        matches!(KvsError::from_rpc(&e), Some(KvsError::NoSpace { .. }))
            && e.to_string().contains("--quota-bytes"),
        "a put into a full store: {e}"
    );
    let status = kv.status(&kvs::api::Empty {}).await?;
    ensure!(status.alarms == ["NOSPACE"], "alarms: {:?}", status.alarms);
    kv.delete(&DeleteRequest {
        key: "/abuse/fill/".into(),
        prefix: true,
        request_id: None,
    })
    .await
    .context("a delete in a full store")?;
    kv.put(&put(0)).await.context("a put once room was made")?;
    kv.delete(&DeleteRequest {
        key: "/abuse/".into(),
        prefix: true,
        request_id: None,
    })
    .await?;
    canary.resume();
    Ok(())
}

/// Three pods of 1.4 MiB each (long arguments) on the one node: a full
/// sync carrying them (4.2 MiB) was more than the worker's 4 MiB body
/// limit, so every probe failed, the node went NotReady and its pods were
/// evicted. They must run, and after the worker is frozen past its grace
/// (so that the leader falls back to a full sync) the node must be Ready
/// again.
async fn large_pods_on_one_node(c: &mut Cluster) -> Result<()> {
    let client = c.any_client().await?;
    let args: Vec<String> = (0..20)
        .map(|i| format!("{i}{}", "a".repeat(70 * 1024)))
        .collect();
    for i in 0..3 {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("large-{i}"), "labels": {"abuse": "large"}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": BUSYBOX,
                                "command": ["sh", "-c", "sleep 3600"], "args": args}]
            }
        });
        let write = WriteRequest { object: pod };
        unavailable_retried(|| client.apply(&write)).await?;
    }
    c.wait_for(
        Duration::from_secs(60),
        "three large pods Running",
        |c| async move {
            let list = c.list_all("pods", Some("abuse=large")).await?;
            let running = list
                .items
                .into_iter()
                .map(serde_json::from_value::<Pod>)
                .filter(|p| {
                    p.as_ref().is_ok_and(|p| {
                        p.status
                            .as_ref()
                            .is_some_and(|s| s.phase == PodPhase::Running)
                    })
                })
                .count();
            Ok((running == 3).then_some(()))
        },
    )
    .await?;
    c.freeze_worker(0, true)?;
    let frozen = c
        .wait_for(
            Duration::from_secs(30),
            "the frozen node NotReady",
            |c| async move { Ok(c.ready_nodes().await?.is_empty().then_some(())) },
        )
        .await;
    c.freeze_worker(0, false)?;
    frozen?;
    // A rejoin makes the node look Ready; only an answered probe (a full
    // sync, the leader having lost track) moves its heartbeat past now.
    let thawed = jiff::Timestamp::now();
    c.wait_for(
        Duration::from_secs(30),
        "a probe answered after the thaw (a full sync of the large pods)",
        |c| async move {
            let nodes = c.list_all("nodes", None).await?;
            let answered = nodes.items.into_iter().any(|n| {
                serde_json::from_value::<api::Node>(n).is_ok_and(|n| {
                    n.is_ready()
                        && n.status
                            .and_then(|s| s.last_heartbeat_time)
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .is_some_and(|t| t > thawed)
                })
            });
            Ok(answered.then_some(()))
        },
    )
    .await?;
    for i in 0..3 {
        let req = ObjectRequest {
            kind: "pods".into(),
            namespace: Some("default".into()),
            name: format!("large-{i}"),
            resource_version: None,
            grace_period_seconds: None,
        };
        unavailable_retried(|| client.delete(&req)).await?;
    }
    Ok(())
}

/// Runs `call` again while the cluster answers Unavailable (no leader
/// known, a write dropped by a leadership change), as a client does: 1.4 MiB
/// writes in a debug build can cost a loaded leader its term. Any other
/// answer, or a tenth Unavailable, ends it.
async fn unavailable_retried<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, rpc::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if e.code() == rpc::Code::Unavailable && attempt < 9 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
            }
            other => return Ok(other?),
        }
    }
}

/// 256 callers hammering one master with writes and reads for 10 s. Raft
/// messages have their own queue in the store's loop, taken before client
/// requests, so the flood does not cost the leader its term; the callers
/// are served or told why not.
async fn client_flood(c: &Cluster) -> Result<()> {
    let leader = c.leader().await.context("no leader")?;
    let term = c.kv_status(leader).await?.term;
    let admin = c.admin_credentials()?;
    let config = rpc::ClientConfig {
        token: Some(admin.token.clone()),
        tls: admin.tls.clone(),
        max_connections: 16,
        default_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let kv = KvClient::new(rpc::Client::new(&c.master_addr(leader), config)?);
    let until = Instant::now() + Duration::from_secs(10);
    let mut set = tokio::task::JoinSet::new();
    for caller in 0..256 {
        let kv = kv.clone();
        set.spawn(async move {
            let (mut ok, mut unclear) = (0u64, Vec::new());
            let mut i = 0u64;
            while Instant::now() < until {
                i += 1;
                let put = kv
                    .put(&PutRequest {
                        key: format!("/abuse/flood/{caller}/{}", i % 16),
                        value: "v".repeat(1024),
                        request_id: None,
                    })
                    .await;
                let get = kv
                    .get(&GetRequest {
                        key: format!("/abuse/flood/{caller}/0"),
                    })
                    .await;
                for r in [put.map(|_| ()), get.map(|_| ())] {
                    match r {
                        Ok(()) => ok += 1,
                        Err(e) if KvsError::from_rpc(&e).is_some() => {}
                        Err(e) => unclear.push(e.to_string()),
                    }
                }
            }
            (ok, unclear)
        });
    }
    let (mut ok, mut unclear) = (0, Vec::new());
    while let Some(r) = set.join_next().await {
        let (o, u) = r?;
        ok += o;
        unclear.extend(u);
    }
    eprintln!("client flood: {ok} calls served");
    ensure!(
        unclear.is_empty(),
        "answers without a reason: {:?}",
        &unclear[..unclear.len().min(5)]
    );
    let after = c.kv_status(leader).await?;
    ensure!(
        after.term == term && after.role == kvs::raft::Role::Leader,
        "the flood cost the leader its term ({term} -> {}, {:?})",
        after.term,
        after.role
    );
    kv.delete(&DeleteRequest {
        key: "/abuse/".into(),
        prefix: true,
        request_id: None,
    })
    .await?;
    Ok(())
}

/// After a case: it succeeded, the canary is still served, the masters are healthy.
async fn after(c: &mut Cluster, canary: &Canary, case: &str, outcome: Result<()>) -> Result<()> {
    outcome.with_context(|| format!("{case}\n{}", c.logs()))?;
    canary.still_served(case).await.with_context(|| c.logs())?;
    healthy(c, case)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_requests_do_not_stop_the_cluster() -> Result<()> {
    let quota = QUOTA_BYTES.to_string();
    let mut c =
        Cluster::start_with(3, 1, Timing::default(), &["--quota-bytes".into(), quota]).await?;
    let canary = Canary::start(&c);
    canary.still_served("start-up").await?;

    let r = poison_value(&c).await;
    after(&mut c, &canary, "a poison value", r).await?;
    let r = poison_deleted(&c).await;
    after(&mut c, &canary, "deleting the poison", r).await?;

    let flood = connection_flood(&c).await?;
    let r = flood_refused(&c);
    after(&mut c, &canary, "5,000 idle and trickling connections", r).await?;
    drop(flood);

    let r = huge_replicas(&c).await;
    after(&mut c, &canary, "replicas: 4000000000 and 1000000", r).await?;
    let r = overflowing_quantities(&c).await;
    after(&mut c, &canary, "overflowing quantities", r).await?;
    let r = large_pods_on_one_node(&mut c).await;
    after(&mut c, &canary, "three 1.4 MiB pods on one node", r).await?;
    let r = ranges_in_one_txn(&c).await;
    after(&mut c, &canary, "a txn of 128 full-store ranges", r).await?;
    let r = client_flood(&c).await;
    after(&mut c, &canary, "a flood of 256 callers", r).await?;
    let r = store_quota(&c, &canary).await;
    canary.resume();
    after(&mut c, &canary, "a full store", r).await?;

    canary.stop().await;
    Ok(())
}

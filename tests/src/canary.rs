//! A canary: a background client that keeps using a cluster as a
//! well-behaved user would, and records every operation that fails, so
//! that a test can run something else (abuse, faults) and then assert that
//! the users of the cluster noticed nothing.
//!
//! Each round is a new client (new connections, as a new `mkctl` would
//! be) of master 0 for the API, scaling the Deployment `canary` between 1
//! and 2 replicas until they run, and of master 1 for keys, writing and
//! reading back five keys under `/canary/`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use api::master::{ListRequest, MasterClient, WriteRequest};
use api::{Pod, PodPhase};
use kvs::api::{GetRequest, KvClient, PutRequest};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::images::BUSYBOX;
use crate::masters::{Masters, client_at, kv_client_at};

/// Longest a canary operation may take before it counts as failed.
pub const CANARY_DEADLINE: Duration = Duration::from_secs(60);

/// The canary's Deployment with `replicas`.
pub fn canary_deployment(replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "canary"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "canary"}},
            "template": {
                "metadata": {"labels": {"app": "canary"}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]
                }
            }
        }
    })
}

/// What the canary did: every operation's outcome, in order.
#[derive(Default)]
struct CanaryLog {
    failures: Mutex<Vec<String>>,
    /// Completed scale cycles (scaled and seen converge).
    scales: AtomicU64,
    /// Completed key writes (written and read back).
    writes: AtomicU64,
}

/// A background client that keeps using the cluster as a well-behaved
/// user would: each round is a new client (new connections, as a new
/// `mkctl` would be) of master 0 for the API and master 1 for keys.
pub struct Canary {
    log: Arc<CanaryLog>,
    stop: Arc<AtomicBool>,
    /// While set, the canary makes no new operation (a full store refuses
    /// every writer by design, the canary included).
    paused: Arc<AtomicBool>,
    /// Operations in progress (0 or 1).
    busy: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Canary {
    /// Starts the canary on `c` (it needs a Ready node for its pods).
    pub fn start(c: &Cluster) -> Canary {
        let log = Arc::new(CanaryLog::default());
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let (l, s, p, b) = (log.clone(), stop.clone(), paused.clone(), busy.clone());
        let (api, keys) = (c.master_addr(0), c.master_addr(1));
        // The API as a user; raw keys as the admin (users may not write them).
        let creds = c.credentials().clone();
        let admin = c.admin_credentials();
        let task = tokio::spawn(async move {
            let mut replicas = 1;
            let mut seq = 0u64;
            while !s.load(Ordering::Relaxed) {
                if p.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                b.fetch_add(1, Ordering::SeqCst);
                if p.load(Ordering::SeqCst) {
                    b.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                replicas = 3 - replicas;
                let clients = client_at(&api, &creds).and_then(|m| {
                    let admin = admin.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
                    Ok((m, kv_client_at(&keys, admin, Duration::from_secs(10))?))
                });
                let (master, kv) = match clients {
                    Ok(c) => c,
                    Err(e) => {
                        fail(&l, format!("clients: {e:#}"));
                        b.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                };
                match tokio::time::timeout(CANARY_DEADLINE, scale(&master, replicas)).await {
                    Ok(Ok(())) => {
                        l.scales.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => fail(&l, format!("scale to {replicas}: {e:#}")),
                    Err(_) => fail(&l, format!("scale to {replicas}: not done in 60 s")),
                }
                for _ in 0..5 {
                    seq += 1;
                    match tokio::time::timeout(CANARY_DEADLINE, write(&kv, seq)).await {
                        Ok(Ok(())) => {
                            l.writes.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => fail(&l, format!("write {seq}: {e:#}")),
                        Err(_) => fail(&l, format!("write {seq}: not done in 60 s")),
                    }
                }
                b.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Canary {
            log,
            stop,
            paused,
            busy,
            task,
        }
    }

    /// Stops the canary between operations; returns once none is running.
    pub async fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        while self.busy.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets a paused canary go on.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Waits until the canary completes a scale cycle and a write that
    /// started after this call: the cluster still serves after `case`.
    pub async fn still_served(&self, case: &str) -> Result<()> {
        let (scales, writes) = (
            self.log.scales.load(Ordering::Relaxed),
            self.log.writes.load(Ordering::Relaxed),
        );
        let deadline = Instant::now() + 3 * CANARY_DEADLINE;
        while self.log.scales.load(Ordering::Relaxed) < scales + 2
            || self.log.writes.load(Ordering::Relaxed) < writes + 2
        {
            self.failed(case)?;
            if Instant::now() > deadline {
                bail!("after {case}: the canary made no progress in 180 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.failed(case)
    }

    /// Fails, naming `case`, if any canary operation failed so far.
    pub fn failed(&self, case: &str) -> Result<()> {
        let failures = self
            .log
            .failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        ensure!(
            failures.is_empty(),
            "during {case}, canary operations failed: {failures:#?}"
        );
        Ok(())
    }

    /// Stops the canary after its current operation.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.task).await;
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fail(log: &CanaryLog, what: String) {
    eprintln!("canary: {what}");
    if let Ok(mut f) = log.failures.lock() {
        f.push(what);
    }
}

async fn scale(master: &MasterClient, replicas: u32) -> Result<()> {
    master
        .apply(&WriteRequest {
            object: canary_deployment(replicas),
        })
        .await
        .context("apply")?;
    loop {
        let list = master
            .list(&ListRequest {
                kind: "pods".into(),
                namespace: Some("default".into()),
                label_selector: Some("app=canary".into()),
                node_name: None,
            })
            .await
            .context("list")?;
        let pods: Vec<Pod> = list
            .items
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()?;
        let running = pods
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.phase == PodPhase::Running)
            })
            .count();
        if pods.len() == replicas as usize && running == replicas as usize {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write(kv: &KvClient, seq: u64) -> Result<()> {
    let key = format!("/canary/{seq}");
    let value = format!("value {seq}");
    kv.put(&PutRequest {
        key: key.clone(),
        value: value.clone(),
        request_id: None,
    })
    .await
    .context("put")?;
    let got = kv.get(&GetRequest { key }).await.context("get")?;
    ensure!(
        got.kv.map(|kv| kv.value) == Some(value),
        "read back another value"
    );
    Ok(())
}

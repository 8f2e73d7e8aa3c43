//! Fences only go up for real leaders, and no worker is left refusing the
//! live one: when every master is lost together with the exports, the
//! cluster re-forms from nothing at a low (epoch, term), while its worker
//! remembers the fence of the old cluster. The worker reports that fence
//! when it registers again, and the new leader fences above it, so the
//! worker follows it and runs its pods.

use std::time::Duration;

use anyhow::{Context, Result};
use api::master::{ObjectRequest, WriteRequest};
use serde_json::json;
use tests::cluster::{Cluster, Timing};
use tests::images::BUSYBOX;
use tests::masters::Masters;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_re_formed_without_exports_fences_above_what_its_worker_followed() -> Result<()> {
    let mut c = Cluster::start(3, 1, Timing::default()).await?;
    // Raise the old cluster's term above what a re-formed one starts at:
    // three leaders killed and restarted.
    for _ in 0..3 {
        let leader = c.leader().await.context("a leader")?;
        let term = c.kv_status(leader).await?.term;
        c.kill_master(leader);
        c.wait_for(
            Duration::from_secs(30),
            "a new leader at a higher term",
            |c| async move {
                let Some(l) = c.leader().await else {
                    return Ok(None);
                };
                Ok((c.kv_status(l).await?.term > term).then_some(()))
            },
        )
        .await?;
        c.start_master(leader)?;
        c.wait_for(
            Duration::from_secs(30),
            "the restarted master a voter again",
            |c| async move { Ok(c.settled().await.then_some(())) },
        )
        .await?;
    }
    let leader = c.leader().await.context("a leader")?;
    let old_term = c.kv_status(leader).await?.term;
    // The worker has followed that leader (its node is Ready and probed).
    c.wait_for(
        Duration::from_secs(30),
        "the worker probed by the new leader",
        |c| async move { Ok((c.ready_nodes().await?.len() == 1).then_some(())) },
    )
    .await?;

    // Every master and every export lost.
    for i in 0..3 {
        c.kill_master(i);
    }
    let exports = c.dir().join("exports");
    for entry in std::fs::read_dir(&exports)? {
        std::fs::remove_file(entry?.path())?;
    }
    for i in 0..3 {
        c.start_master(i)?;
    }
    c.wait_for(
        Duration::from_secs(60),
        "a leader of the re-formed cluster",
        |c| async move { Ok(c.leader().await.map(|_| ())) },
    )
    .await?;
    let leader = c.leader().await.context("a leader")?;
    let new = c.kv_status(leader).await?;
    eprintln!(
        "old term {old_term}; re-formed at epoch {:?} term {}",
        new.epoch, new.term
    );

    // A pod runs on the worker: it follows the new leader.
    c.any_client()
        .await?
        .apply(&WriteRequest {
            object: json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after"},
                "spec": {"containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}
            }),
        })
        .await?;
    c.wait_for(
        Duration::from_secs(60),
        "the pod Running on the worker",
        |c| async move {
            let pod = c
                .any_client()
                .await?
                .get(&ObjectRequest {
                    kind: "pods".into(),
                    namespace: None,
                    name: "after".into(),
                    resource_version: None,
                    grace_period_seconds: None,
                })
                .await?;
            Ok((pod.object["status"]["phase"] == "Running").then_some(()))
        },
    )
    .await
    .with_context(|| c.logs())?;
    Ok(())
}

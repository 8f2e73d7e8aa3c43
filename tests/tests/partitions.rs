//! Partitions of a cluster whose masters and workers are containers on a
//! private Docker network: a worker host cut off and reconnected, and the
//! leader master cut off from the other two.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use api::master::{ListRequest, MasterClient, ObjectRequest, WriteRequest};
use api::{Pod, PodPhase};
use serde_json::{Value, json};
use tests::cluster::{Timing, running_containers};
use tests::images::BUSYBOX;
use tests::masters::Masters;
use tests::netcluster::{NetCluster, docker};

fn deployment(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]
                }
            }
        }
    })
}

async fn pods(client: &MasterClient, app: &str) -> Result<Vec<Pod>> {
    let list = client
        .list(&ListRequest {
            kind: "pods".into(),
            label_selector: Some(format!("app={app}")),
            ..Default::default()
        })
        .await?;
    list.items
        .into_iter()
        .map(|v| serde_json::from_value(v).context("a pod"))
        .collect()
}

fn running_off(ps: &[Pod], n: usize, avoid: Option<&str>) -> bool {
    ps.len() == n
        && ps.iter().all(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.phase == PodPhase::Running)
                && avoid.is_none_or(|a| p.spec.node_name.as_deref() != Some(a))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_the_network_is_replaced_and_loses_its_duplicates_on_return() -> Result<()>
{
    let timing = Timing::default();
    let budget = Duration::from_millis(timing.node_grace_ms + timing.eviction_timeout_ms)
        + Duration::from_secs(30);
    let c = NetCluster::start(3, 2, timing).await?;
    let client = c.any_client().await?;
    client
        .apply(&WriteRequest {
            object: deployment("cut", 4),
        })
        .await?;
    c.wait_for(
        Duration::from_secs(60),
        "four pods running",
        |c| async move {
            let ps = pods(&c.any_client().await?, "cut").await?;
            Ok(running_off(&ps, 4, None).then_some(()))
        },
    )
    .await?;
    let node = c.worker_name(0);
    let before = running_containers(&node)?;
    assert_eq!(before, 2, "two pods on each worker");

    c.disconnect(&c.worker_container(0))?;
    let avoid = node.clone();
    c.wait_for(budget, "four pods running on the other worker", |c| {
        let avoid = avoid.clone();
        async move {
            let ps = pods(&c.any_client().await?, "cut").await?;
            Ok(running_off(&ps, 4, Some(&avoid)).then_some(()))
        }
    })
    .await?;
    assert_eq!(
        running_containers(&node)?,
        2,
        "the cut-off node's containers still run"
    );

    c.connect(&c.worker_container(0), &c.worker_ip(0))?;
    c.wait_for(
        Duration::from_secs(40),
        "the duplicates on the returning node removed",
        |_| {
            let node = node.clone();
            async move { Ok((running_containers(&node)? == 0).then_some(())) }
        },
    )
    .await?;
    let final_pods = pods(&client, "cut").await?;
    let uids: HashSet<String> = final_pods.iter().map(|p| p.metadata.uid.clone()).collect();
    assert_eq!(uids.len(), 4);
    let other = running_containers(&c.worker_name(1))?;
    assert_eq!(other, 4, "exactly the desired four containers run");
    c.wait_for(
        Duration::from_secs(30),
        "the returning node Ready again",
        |c| {
            let node = c.worker_name(0);
            async move { Ok(c.ready_nodes().await?.contains(&node).then_some(())) }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_steps_down_and_writes_made_meanwhile_survive_the_heal() -> Result<()>
{
    let c = NetCluster::start(3, 0, Timing::default()).await?;
    let old = c.leader().await.context("a leader")?;
    let old_container = c.master_container(old);
    c.client(old)?
        .apply(&WriteRequest {
            object: deployment("before", 0),
        })
        .await?;

    // A second network the test can still reach the old leader on, which
    // the other masters do not use.
    let admin = format!("{}-admin", c.network);
    docker(&["network", "create", &admin])?;
    let _cleanup = NetworkGuard(admin.clone(), old_container.clone());
    docker(&["network", "connect", &admin, &old_container])?;
    let inspect = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{admin}\").IPAddress}}}}"),
        &old_container,
    ])?;
    let old_admin = format!("{inspect}:7000");

    c.disconnect(&old_container)?;
    let new = c
        .wait_for(
            Duration::from_secs(30),
            "a new leader among the other two",
            |c| async move { Ok(c.leader().await.filter(|l| *l != old)) },
        )
        .await?;
    // Check-quorum: the cut-off leader notices it hears from no majority.
    c.wait_for(
        Duration::from_secs(30),
        "the old leader stepping down",
        |c| {
            let addr = old_admin.clone();
            async move {
                let s = c.kv_status_via(old, &addr).await?;
                Ok((s.role != kvs::raft::Role::Leader).then_some(s.role))
            }
        },
    )
    .await?;
    c.client(new)?
        .apply(&WriteRequest {
            object: deployment("during", 0),
        })
        .await?;

    c.connect(&old_container, &c.master_ip(old))?;
    let new_term = c.kv_status(new).await?.term;
    c.wait_for(
        Duration::from_secs(30),
        "the old leader following and caught up",
        |c| async move {
            let s = c.kv_status(old).await?;
            let l = c.leader().await.context("a leader")?;
            let leader = c.kv_status(l).await?;
            Ok((s.role == kvs::raft::Role::Follower
                && s.term >= new_term
                && s.applied_index >= leader.commit_index.saturating_sub(5))
            .then_some(()))
        },
    )
    .await?;
    let through_old = c.client(old)?;
    let mut found = BTreeMap::new();
    for name in ["before", "during"] {
        let got = through_old
            .get(&ObjectRequest {
                kind: "deploy".into(),
                namespace: None,
                name: name.into(),
                resource_version: None,
                grace_period_seconds: None,
            })
            .await;
        found.insert(name, got.is_ok());
    }
    assert_eq!(
        found,
        BTreeMap::from([("before", true), ("during", true)]),
        "both writes survive the heal"
    );
    Ok(())
}

/// Removes a network (first detaching the container put on it).
struct NetworkGuard(String, String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let _ = docker(&["network", "disconnect", "-f", &self.0, &self.1]);
        let _ = docker(&["network", "rm", &self.0]);
    }
}

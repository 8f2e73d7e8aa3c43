//! The control plane end to end: three `mkube-master` processes and two
//! `mkube-worker` processes on the real Docker daemon. Deployments come up
//! spread, roll out within their bounds, survive the loss of the leader
//! master and of a worker, and go away when deleted; bad requests are
//! refused with errors that name the object and the field, writing nothing.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::master::{
    DrainRequest, ListRequest, MasterClient, MasterError, ObjectRequest, RollbackRequest,
    WatchEventType, WatchRequest, WriteRequest,
};
use api::{Pod, PodPhase};
use serde_json::{Value, json};
use tests::cluster::{Cluster, Timing, master_error, running_containers};
use tests::images::BUSYBOX;
use tests::masters::Masters;

fn deployment(name: &str, replicas: u32, image: &str, surge: u32, unavailable: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}]
                }
            }
        }
    })
}

async fn pods(client: &MasterClient, app: &str) -> Result<Vec<Pod>> {
    let list = client
        .list(&ListRequest {
            kind: "pods".into(),
            namespace: Some("default".into()),
            label_selector: Some(format!("app={app}")),
            node_name: None,
        })
        .await?;
    list.items
        .into_iter()
        .map(|v| serde_json::from_value(v).context("a pod"))
        .collect()
}

fn running(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.phase == PodPhase::Running)
        })
        .collect()
}

fn image_of(p: &Pod) -> &str {
    &p.spec.containers[0].image
}

/// Waits until `app` has exactly `n` pods, all Running with `image`; returns them.
async fn wait_running(
    c: &Cluster,
    app: &str,
    n: usize,
    image: &str,
    within: Duration,
) -> Result<Vec<Pod>> {
    c.wait_for(
        within,
        &format!("{n} running pods of {app} ({image})"),
        |c| async move {
            let client = c.any_client().await?;
            let ps = pods(&client, app).await?;
            let ok =
                ps.len() == n && running(&ps).len() == n && ps.iter().all(|p| image_of(p) == image);
            Ok(ok.then_some(ps))
        },
    )
    .await
}

fn per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for p in pods {
        *by.entry(p.spec.node_name.clone().unwrap_or_default())
            .or_default() += 1;
    }
    by
}

/// Docker containers of this cluster's nodes running a pod of `app`, by pod uid.
fn containers_of(pods_uids: &HashSet<String>) -> Result<usize> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "--filter",
            "label=mkube.uid",
            "--format",
            "{{.Label \"mkube.uid\"}}",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    Ok(text.lines().filter(|uid| pods_uids.contains(*uid)).count())
}

fn second_image() -> Result<String> {
    let image = "mkube-test/busybox:rollout";
    let status = std::process::Command::new("docker")
        .args(["tag", BUSYBOX, image])
        .status()?;
    if !status.success() {
        bail!("docker tag {BUSYBOX} {image} failed");
    }
    Ok(image.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_spread_roll_out_survive_the_leader_and_go_away() -> Result<()> {
    let mut c = Cluster::start(3, 2, Timing::default()).await?;
    let client = c.any_client().await?;

    // Six replicas come up, three on each worker.
    client
        .apply(&WriteRequest {
            object: deployment("web", 6, BUSYBOX, 1, 1),
        })
        .await?;
    let up = wait_running(&c, "web", 6, BUSYBOX, Duration::from_secs(60)).await?;
    let spread = per_node(&up);
    assert_eq!(spread.len(), 2, "pods on both workers: {spread:?}");
    assert!(spread.values().all(|n| *n == 3), "3 and 3: {spread:?}");

    // An image change rolls out within maxSurge 1 / maxUnavailable 1:
    // never more than 7 pods, never fewer than 5 running. As in Kubernetes,
    // the bounds are on active pods: a Terminating pod (its containers
    // stopping) counts for neither.
    let v2 = second_image()?;
    client
        .apply(&WriteRequest {
            object: deployment("web", 6, &v2, 1, 1),
        })
        .await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut most, mut fewest_running) = (0, usize::MAX);
    loop {
        let ps = pods(&client, "web").await?;
        let live: Vec<Pod> = ps
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        let active = live
            .iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().map(|s| s.phase),
                    Some(PodPhase::Succeeded | PodPhase::Failed)
                )
            })
            .count();
        most = most.max(active);
        fewest_running = fewest_running.min(running(&live).len());
        if ps.len() == 6 && running(&ps).len() == 6 && ps.iter().all(|p| image_of(p) == v2) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the rollout did not finish: {:#?}\n{}",
                per_node(&ps),
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        most <= 7,
        "at most replicas + maxSurge = 7 pods, saw {most}"
    );
    assert!(
        fewest_running >= 5,
        "at least replicas - maxUnavailable = 5 running, saw {fewest_running}"
    );

    // Killing the leader moves the loops: no pod lost, none duplicated, and
    // the new leader acts (a scale to 8 happens).
    let leader = c.leader().await.context("a leader")?;
    let before: HashSet<String> = pods(&client, "web")
        .await?
        .into_iter()
        .map(|p| p.metadata.uid)
        .collect();
    c.kill_master(leader);
    c.wait_for(Duration::from_secs(30), "a new leader", |c| async move {
        Ok(c.leader().await.filter(|l| *l != leader))
    })
    .await?;
    let client = c.any_client().await?;
    let after = wait_running(&c, "web", 6, &v2, Duration::from_secs(30)).await?;
    let after_uids: HashSet<String> = after.iter().map(|p| p.metadata.uid.clone()).collect();
    assert_eq!(
        before, after_uids,
        "the same six pods after the leader change"
    );
    client
        .apply(&WriteRequest {
            object: deployment("web", 8, &v2, 1, 1),
        })
        .await?;
    let scaled = wait_running(&c, "web", 8, &v2, Duration::from_secs(60)).await?;
    let uids: HashSet<String> = scaled.iter().map(|p| p.metadata.uid.clone()).collect();
    c.wait_for(Duration::from_secs(30), "one container per pod", |_| {
        let uids = uids.clone();
        async move { Ok((containers_of(&uids)? == 8).then_some(())) }
    })
    .await?;
    c.start_master(leader)?;

    // Rollback: the previous template (v1) rolls out again.
    client
        .rollback(&RollbackRequest {
            namespace: None,
            name: "web".into(),
            to_revision: None,
        })
        .await?;
    wait_running(&c, "web", 8, BUSYBOX, Duration::from_secs(90)).await?;

    // Drain: the node is cordoned and its pods move to the other one.
    let drained = c.worker_name(0);
    let evicted = client
        .drain(&DrainRequest {
            node: drained.clone(),
            force: false,
            disable_eviction: false,
        })
        .await?
        .evicted;
    assert!(!evicted.is_empty(), "the drained node had pods");
    let moved = wait_running_off(&c, "web", 8, &drained, Duration::from_secs(60)).await?;
    let node: api::Node = serde_json::from_value(
        client
            .get(&ObjectRequest {
                kind: "no".into(),
                namespace: None,
                name: drained.clone(),
                resource_version: None,
                grace_period_seconds: None,
            })
            .await?
            .object,
    )?;
    assert!(node.spec.unschedulable, "a drained node is cordoned");
    let uids: HashSet<String> = moved.iter().map(|p| p.metadata.uid.clone()).collect();

    // Deleting the Deployment removes its ReplicaSets, pods and containers.
    client
        .delete(&ObjectRequest {
            kind: "deploy".into(),
            namespace: None,
            name: "web".into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await?;
    c.wait_for(
        Duration::from_secs(60),
        "no pods and no containers left",
        |c| {
            let uids = uids.clone();
            async move {
                let client = c.any_client().await?;
                let left = pods(&client, "web").await?.len() + containers_of(&uids)?;
                let rss = client
                    .list(&ListRequest {
                        kind: "rs".into(),
                        ..Default::default()
                    })
                    .await?
                    .items
                    .len();
                Ok((left == 0 && rss == 0).then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}

/// Waits until `app` has `n` running pods, none on `avoid`.
async fn wait_running_off(
    c: &Cluster,
    app: &str,
    n: usize,
    avoid: &str,
    within: Duration,
) -> Result<Vec<Pod>> {
    c.wait_for(
        within,
        &format!("{n} running pods of {app}, none on {avoid}"),
        |c| async move {
            let client = c.any_client().await?;
            let ps = pods(&client, app).await?;
            let ok = ps.len() == n
                && running(&ps).len() == n
                && ps
                    .iter()
                    .all(|p| p.spec.node_name.as_deref() != Some(avoid));
            Ok(ok.then_some(ps))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_worker_has_its_pods_replaced_and_a_returning_one_loses_its_duplicates() -> Result<()>
{
    let timing = Timing::default();
    let budget = Duration::from_millis(timing.node_grace_ms + timing.eviction_timeout_ms)
        + Duration::from_secs(20);
    let mut c = Cluster::start(3, 3, timing).await?;
    let client = c.any_client().await?;
    client
        .apply(&WriteRequest {
            object: deployment("lost", 6, BUSYBOX, 1, 1),
        })
        .await?;
    let up = wait_running(&c, "lost", 6, BUSYBOX, Duration::from_secs(60)).await?;
    let all: HashSet<String> = up.iter().map(|p| p.metadata.uid.clone()).collect();

    // A silent node (its worker frozen, its containers running on): its
    // pods are replaced elsewhere; when it answers again, the worker is
    // told to drop them, and exactly six containers run.
    let silent = c.worker_name(0);
    assert_eq!(per_node(&up).get(&silent), Some(&2), "{:?}", per_node(&up));
    c.freeze_worker(0, true)?;
    let frozen_at = Instant::now();
    wait_running_off(&c, "lost", 6, &silent, budget).await?;
    eprintln!(
        "replaced a silent node's pods in {:?} (budget {budget:?})",
        frozen_at.elapsed()
    );
    assert_eq!(
        running_containers(&silent)?,
        2,
        "the silent node's containers still run"
    );
    c.freeze_worker(0, false)?;
    c.wait_for(
        Duration::from_secs(30),
        "the returning node's duplicates removed",
        |_| {
            let silent = silent.clone();
            async move { Ok((running_containers(&silent)? == 0).then_some(())) }
        },
    )
    .await?;
    let now: HashSet<String> = pods(&client, "lost")
        .await?
        .into_iter()
        .map(|p| p.metadata.uid)
        .collect();
    c.wait_for(
        Duration::from_secs(30),
        "six containers for six pods",
        |_| {
            let now = now.clone();
            async move { Ok((containers_of(&now)? == 6).then_some(())) }
        },
    )
    .await?;
    let evicted: HashSet<String> = all.difference(&now).cloned().collect();
    assert_eq!(evicted.len(), 2, "the silent node's two pods were replaced");
    assert_eq!(
        containers_of(&evicted)?,
        0,
        "no container of an evicted pod runs"
    );

    // A worker killed with its containers: its pods come back on the others
    // within grace + eviction timeout + start time.
    c.wait_for(Duration::from_secs(30), "the returned node Ready", |c| {
        let silent = silent.clone();
        async move { Ok(c.ready_nodes().await?.contains(&silent).then_some(())) }
    })
    .await?;
    let placed = pods(&client, "lost").await?;
    let victim = per_node(&placed)
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(node, _)| node)
        .context("a node with pods")?;
    let index = (0..3)
        .find(|i| c.worker_name(*i) == victim)
        .context("the victim's index")?;
    let killed_at = Instant::now();
    c.kill_worker(index);
    let replaced = wait_running_off(&c, "lost", 6, &victim, budget).await?;
    let took = killed_at.elapsed();
    eprintln!("replaced a killed node's pods in {took:?} (budget {budget:?})");
    assert_eq!(per_node(&replaced).values().sum::<usize>(), 6);
    let node = client
        .get(&ObjectRequest {
            kind: "node".into(),
            namespace: None,
            name: victim,
            resource_version: None,
            grace_period_seconds: None,
        })
        .await?;
    let node: api::Node = serde_json::from_value(node.object)?;
    assert!(!node.is_ready(), "the lost node is NotReady");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_object_and_field_and_write_nothing_and_watch_sees_changes()
-> Result<()> {
    let c = Cluster::start(1, 1, Timing::default()).await?;
    let client = c.any_client().await?;
    let invalid = |e: &rpc::Error| {
        master_error(e)
            .map(|m| m.to_string())
            .unwrap_or_else(|| e.to_string())
    };

    let e = client
        .apply(&WriteRequest {
            object: json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}}),
        })
        .await
        .expect_err("unknown kind");
    assert!(invalid(&e).contains("\"Widget\""), "{}", invalid(&e));

    let mut negative = deployment("neg", 1, BUSYBOX, 1, 0);
    negative["spec"]["replicas"] = json!(-2);
    let e = client
        .apply(&WriteRequest { object: negative })
        .await
        .expect_err("negative");
    assert!(invalid(&e).contains("spec.replicas"), "{}", invalid(&e));

    let mut no_image = deployment("noimg", 1, BUSYBOX, 1, 0);
    no_image["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .context("container")?
        .remove("image");
    let e = client
        .apply(&WriteRequest { object: no_image })
        .await
        .expect_err("missing");
    let text = invalid(&e);
    assert!(text.contains("noimg") && text.contains("image"), "{text}");

    let mut typo = deployment("typo", 1, BUSYBOX, 1, 0);
    typo["spec"]["replica"] = json!(3);
    let e = client
        .apply(&WriteRequest { object: typo })
        .await
        .expect_err("unknown field");
    assert!(invalid(&e).contains("`replica`"), "{}", invalid(&e));

    // Nothing of those was written.
    for kind in ["deploy", "rs", "pods"] {
        let list = client
            .list(&ListRequest {
                kind: kind.into(),
                ..Default::default()
            })
            .await?;
        assert!(list.items.is_empty(), "{kind}: {:?}", list.items);
    }

    // A stale resourceVersion is a conflict that names the object.
    let first = client
        .apply(&WriteRequest {
            object: deployment("cas", 0, BUSYBOX, 1, 0),
        })
        .await?;
    let version = first.object["metadata"]["resourceVersion"].clone();
    client
        .apply(&WriteRequest {
            object: deployment("cas", 1, BUSYBOX, 1, 0),
        })
        .await?;
    let mut stale = deployment("cas", 2, BUSYBOX, 1, 0);
    stale["metadata"]["resourceVersion"] = version;
    let e = client
        .apply(&WriteRequest { object: stale })
        .await
        .expect_err("stale");
    assert!(
        matches!(master_error(&e), Some(MasterError::Conflict { .. })),
        "{e}"
    );
    assert!(invalid(&e).contains("\"cas\""), "{}", invalid(&e));

    // Deleting something absent is NotFound, naming it.
    let e = client
        .delete(&ObjectRequest {
            kind: "po".into(),
            namespace: None,
            name: "ghost".into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await
        .expect_err("absent");
    assert!(
        matches!(master_error(&e), Some(MasterError::NotFound { .. })),
        "{e}"
    );
    assert!(invalid(&e).contains("\"ghost\""), "{}", invalid(&e));

    // A pod that fits no node stays Pending with the scheduler's reasons.
    let huge = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge"},
        "spec": {"containers": [{"name": "c", "image": BUSYBOX, "resources": {"requests": {"cpu": "1000"}}}]}});
    client.create(&WriteRequest { object: huge }).await?;
    let message = c
        .wait_for(
            Duration::from_secs(20),
            "the pod reported unschedulable",
            |c| async move {
                let client = c.any_client().await?;
                let got = client
                    .get(&ObjectRequest {
                        kind: "pod".into(),
                        namespace: None,
                        name: "huge".into(),
                        resource_version: None,
                        grace_period_seconds: None,
                    })
                    .await?;
                let pod: Pod = serde_json::from_value(got.object)?;
                Ok(pod
                    .status
                    .and_then(|s| s.message)
                    .filter(|m| m.contains("Insufficient cpu")))
            },
        )
        .await?;
    assert!(message.starts_with("0/1 nodes are available"), "{message}");
    let events = client
        .list(&ListRequest {
            kind: "events".into(),
            ..Default::default()
        })
        .await?;
    assert!(
        events
            .items
            .iter()
            .any(|e| e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == "huge"),
        "a FailedScheduling event: {:?}",
        events.items
    );

    // A watch from a list's version sees what happens after it.
    let listed = client
        .list(&ListRequest {
            kind: "pods".into(),
            ..Default::default()
        })
        .await?;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "watched"},
        "spec": {"containers": [{"name": "c", "image": BUSYBOX, "command": ["sleep", "60"]}]}});
    client.create(&WriteRequest { object: pod }).await?;
    let seen = client
        .watch(&WatchRequest {
            kind: "po".into(),
            resource_version: listed.resource_version,
            wait_ms: Some(5_000),
            ..Default::default()
        })
        .await?;
    assert!(
        seen.events
            .iter()
            .any(|e| e.type_ == WatchEventType::Added && e.object["metadata"]["name"] == "watched"),
        "{:?}",
        seen.events
    );
    let e = client
        .watch(&WatchRequest {
            kind: "po".into(),
            resource_version: "yesterday".into(),
            ..Default::default()
        })
        .await
        .expect_err("not a version");
    assert!(invalid(&e).contains("\"yesterday\""), "{}", invalid(&e));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_restarted_empty_rejoin_and_a_whole_control_plane_comes_back() -> Result<()> {
    let mut c = Cluster::start(3, 2, Timing::default()).await?;
    let client = c.any_client().await?;
    client
        .apply(&WriteRequest {
            object: deployment("keep", 4, BUSYBOX, 1, 1),
        })
        .await?;
    let up = wait_running(&c, "keep", 4, BUSYBOX, Duration::from_secs(60)).await?;
    let uids: HashSet<String> = up.iter().map(|p| p.metadata.uid.clone()).collect();
    let settled = c
        .kv_status(c.leader().await.context("a leader")?)
        .await?
        .applied_index;

    // One master killed and started again with empty memory: it rejoins as
    // a new incarnation and catches up with the leader.
    let leader = c.leader().await.context("a leader")?;
    let follower = (leader + 1) % 3;
    c.kill_master(follower);
    c.start_master(follower)?;
    c.wait_for(
        Duration::from_secs(30),
        "the restarted master caught up as a voter",
        |c| async move {
            let mine = c.kv_status(follower).await?;
            let Some(l) = c.leader().await else {
                return Ok(None);
            };
            let theirs = c.kv_status(l).await?;
            let voter = theirs.members.iter().any(|m| m.id == mine.id && m.voter);
            Ok(
                (voter && mine.applied_index >= theirs.commit_index.saturating_sub(5))
                    .then_some(()),
            )
        },
    )
    .await?;

    // Every master killed at once (after an export has caught the
    // Deployment) and started again: the cluster re-forms from the newest
    // export and the same pods run on, none duplicated, none lost.
    c.wait_for_export(settled, Duration::from_secs(30)).await?;
    for i in 0..3 {
        c.kill_master(i);
    }
    for i in 0..3 {
        c.start_master(i)?;
    }
    c.wait_for(
        Duration::from_secs(60),
        "a leader of a new epoch",
        |c| async move { Ok(c.leader().await.map(|_| ())) },
    )
    .await?;
    let back = wait_running(&c, "keep", 4, BUSYBOX, Duration::from_secs(60)).await?;
    let back_uids: HashSet<String> = back.iter().map(|p| p.metadata.uid.clone()).collect();
    assert_eq!(
        uids, back_uids,
        "the same four pods after the whole control plane restarted"
    );
    c.wait_for(Duration::from_secs(30), "one container per pod", |_| {
        let uids = uids.clone();
        async move { Ok((containers_of(&uids)? == 4).then_some(())) }
    })
    .await?;
    // And it acts again.
    let client = c.any_client().await?;
    client
        .apply(&WriteRequest {
            object: deployment("keep", 5, BUSYBOX, 1, 1),
        })
        .await?;
    wait_running(&c, "keep", 5, BUSYBOX, Duration::from_secs(60)).await?;
    Ok(())
}

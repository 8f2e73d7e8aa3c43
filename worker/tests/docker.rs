//! The worker against the real Docker daemon, with images built locally.
//! Each test starts its own `mkube-worker` process with a node name of its
//! own, so tests on one daemon do not interfere (which is itself a property
//! under test).

mod support;

use std::time::{Duration, Instant};

use api::pod::{ContainerState, ExecAction, PodPhase, Probe, RestartPolicy};
use api::worker::{ExecRequest, Fence, LogsRequest, ProbeRequest, WorkerError};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn running_id(r: &api::worker::ProbeResponse, name: &str) -> Option<String> {
    let pod = report(r, name)?;
    let c = pod.status.container_statuses.first()?;
    matches!(c.state, ContainerState::Running { .. })
        .then(|| c.container_id.clone())
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_with_its_host_port_env_and_command() -> anyhow::Result<()> {
    let node = node_name("runs");
    let mut w = WorkerProc::start(&node, &[]).await?;
    let port = free_port()?;
    let web = with_port(
        pod(&node, "web", &["httpd", "-f", "-p", "8080", "-h", "/www"]),
        8080,
        port,
    );
    let hello = with_env(
        pod(
            &node,
            "hello",
            &["sh", "-c", "echo greeting=$GREETING; exec sleep 3600"],
        ),
        "GREETING",
        "hi-mkube",
    );
    w.set_pods(&[web, hello]).await?;
    w.wait_for(WAIT, "both pods Running", |r| {
        (report(r, "web")?.status.phase == PodPhase::Running
            && report(r, "hello")?.status.phase == PodPhase::Running)
            .then_some(())
    })
    .await?;
    let r = w.poll().await?;
    let web = report(&r, "web").expect("reported");
    assert_eq!(web.status.host_ports[0].host_port, port);
    assert!(r.node.is_ready(), "{:?}", r.node.conditions);
    assert!(r.node.capacity.cpu_millis >= 1000 && r.node.capacity.memory_bytes > 0);

    // The host port answers.
    let body = http_get(port).await?;
    assert_eq!(body.trim(), "ok");

    // env and command took effect: the container's output says so.
    let deadline = Instant::now() + WAIT;
    loop {
        let req = LogsRequest {
            namespace: "default".into(),
            pod: "hello".into(),
            container: None,
            tail_lines: Some(10),
            since_seconds: None,
            follow: false,
            cursor: None,
            wait_ms: None,
        };
        let logs = w.client.logs(&req).await?;
        if logs.lines.iter().any(|l| l == "greeting=hi-mkube") {
            break;
        }
        assert!(Instant::now() < deadline, "no greeting in {:?}", logs.lines);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // exec runs in the container.
    let out = w
        .client
        .exec(&ExecRequest {
            namespace: "default".into(),
            pod: "hello".into(),
            container: None,
            command: vec!["sh".into(), "-c".into(), "echo $GREETING; exit 3".into()],
            timeout_ms: None,
        })
        .await?;
    assert_eq!((out.exit_code, out.stdout.trim()), (3, "hi-mkube"));

    // Every container has the safe defaults: no privilege escalation, a
    // process limit, rotated logs.
    let id = running_id(&w.poll().await?, "hello").expect("a container id");
    let id = id.trim_start_matches("docker://");
    let inspected = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{json .HostConfig}}", id])
        .output()?;
    let host: serde_json::Value = serde_json::from_slice(&inspected.stdout)?;
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges"])
    );
    assert_eq!(host["PidsLimit"], worker::docker::POD_PIDS_LIMIT);
    assert_eq!(host["LogConfig"]["Type"], "json-file");
    assert_eq!(
        host["LogConfig"]["Config"]["max-size"],
        worker::docker::LOG_MAX_SIZE
    );
    assert_eq!(
        host["LogConfig"]["Config"]["max-file"],
        worker::docker::LOG_MAX_FILES.to_string()
    );
    Ok(())
}

async fn http_get(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    anyhow::ensure!(
        buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200"),
        "answer: {buf}"
    );
    Ok(buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_container_restarts_with_growing_back_off_under_on_failure() -> anyhow::Result<()>
{
    let node = node_name("backoff");
    let mut w = WorkerProc::start(&node, &[]).await?;
    let mut p = pod(&node, "crash", &["sh", "-c", "exit 1"]);
    p.spec.restart_policy = RestartPolicy::OnFailure;
    w.set_pods(&[p]).await?;
    let r = w
        .wait_for(WAIT, "four restarts", |r| {
            let c = report(r, "crash")?
                .status
                .container_statuses
                .first()?
                .clone();
            (c.restart_count >= 4).then_some(r.clone())
        })
        .await?;
    // The starts' events: restarts 2, 3 and 4 wait 200, 400 and 800 ms after the exit.
    let starts: Vec<u64> = r
        .events
        .iter()
        .filter(|e| e.event.name == "crash" && e.event.reason == "Started")
        .filter_map(|e| humantime::parse_rfc3339_weak(&e.event.timestamp).ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .collect();
    assert!(starts.len() >= 5, "{starts:?}");
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[1] >= 200 && gaps[2] >= 400 && gaps[3] >= 800,
        "gaps between starts {gaps:?}"
    );
    assert!(gaps[3] > gaps[1], "back-off grows: {gaps:?}");
    let c = &report(&r, "crash")
        .expect("reported")
        .status
        .container_statuses[0];
    assert!(
        matches!(
            &c.last_state,
            Some(ContainerState::Terminated { exit_code: 1, .. })
        ),
        "{:?}",
        c.last_state
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_leaves_a_failed_container_failed_with_its_exit_code() -> anyhow::Result<()> {
    let node = node_name("never");
    let mut w = WorkerProc::start(&node, &[]).await?;
    let mut p = pod(&node, "once", &["sh", "-c", "exit 3"]);
    p.spec.restart_policy = RestartPolicy::Never;
    w.set_pods(&[p]).await?;
    let status = w
        .wait_for(WAIT, "Failed", |r| {
            let s = &report(r, "once")?.status;
            (s.phase == PodPhase::Failed).then(|| s.clone())
        })
        .await?;
    let c = &status.container_statuses[0];
    assert!(
        matches!(c.state, ContainerState::Terminated { exit_code: 3, .. }),
        "{:?}",
        c.state
    );
    assert_eq!(c.restart_count, 0);
    Ok(())
}

/// Many pods created at once start once each: a round that listed a
/// container between its create and its start (state "created") must not
/// start it again as a restart (seen in the demo: `RESTARTS 1` on a pod a
/// second old).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_created_together_start_once_each() -> anyhow::Result<()> {
    let node = node_name("together");
    let mut w = WorkerProc::start(&node, &[]).await?;
    let names: Vec<String> = (0..16).map(|i| format!("p{i}")).collect();
    let pods: Vec<_> = names
        .iter()
        .map(|n| pod(&node, n, &["sleep", "3600"]))
        .collect();
    w.set_pods(&pods).await?;
    let r = w
        .wait_for(WAIT, "every pod Running", |r| {
            names
                .iter()
                .all(|n| report(r, n).is_some_and(|p| p.status.phase == PodPhase::Running))
                .then(|| r.clone())
        })
        .await?;
    let restarted: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.event.message.starts_with("restarted"))
        .map(|e| format!("{}: {}", e.event.name, e.event.message))
        .collect();
    assert!(restarted.is_empty(), "{restarted:?}");
    for n in &names {
        let c = &report(&r, n).expect("reported").status.container_statuses[0];
        assert_eq!(c.restart_count, 0, "{n}: {c:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_container() -> anyhow::Result<()> {
    let node = node_name("liveness");
    let mut w = WorkerProc::start(&node, &[]).await?;
    // Healthy for a second after each start, then not.
    let mut p = pod(
        &node,
        "sick",
        &[
            "sh",
            "-c",
            "touch /tmp/healthy; sleep 1; rm /tmp/healthy; exec sleep 3600",
        ],
    );
    p.spec.termination_grace_period_seconds = Some(1);
    p.spec.containers[0].liveness_probe = Some(Probe {
        exec: Some(ExecAction {
            command: vec!["test".into(), "-f".into(), "/tmp/healthy".into()],
        }),
        http_get: None,
        tcp_socket: None,
        initial_delay_seconds: 0,
        period_seconds: 1,
        timeout_seconds: 2,
        failure_threshold: 2,
        success_threshold: 1,
    });
    w.set_pods(&[p]).await?;
    let r = w
        .wait_for(WAIT, "a liveness restart", |r| {
            let c = report(r, "sick")?
                .status
                .container_statuses
                .first()?
                .clone();
            (c.restart_count >= 1 && matches!(c.state, ContainerState::Running { .. }))
                .then(|| r.clone())
        })
        .await?;
    assert!(
        r.events.iter().any(|e| e.event.reason == "Unhealthy"),
        "no Unhealthy event"
    );
    assert!(
        r.events
            .iter()
            .any(|e| e.event.reason == "Killing" && e.event.message.contains("liveness"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_probe_gates_ready_and_pods_get_the_cluster_resolver() -> anyhow::Result<()> {
    let node = node_name("readiness");
    let mut w = WorkerProc::start(
        &node,
        &[
            "--cluster-dns",
            "10.96.0.10,10.96.0.11",
            "--cluster-domain",
            "example.internal",
        ],
    )
    .await?;
    let mut p = pod(&node, "gated", &["sleep", "3600"]);
    p.spec.termination_grace_period_seconds = Some(1);
    p.spec.containers[0].readiness_probe = Some(Probe {
        exec: Some(ExecAction {
            command: vec!["test".into(), "-f".into(), "/tmp/ready".into()],
        }),
        http_get: None,
        tcp_socket: None,
        initial_delay_seconds: 0,
        period_seconds: 1,
        timeout_seconds: 2,
        failure_threshold: 1,
        success_threshold: 1,
    });
    w.set_pods(&[p]).await?;
    let ready = |r: &api::worker::ProbeResponse| {
        report(r, "gated")
            .and_then(|p| p.status.container_statuses.first().cloned())
            .map(|c| (c.ready, c.restart_count, c.state))
    };
    // Running, probed, failing: not ready.
    let r = w
        .wait_for(WAIT, "a failed readiness probe", |r| {
            r.events
                .iter()
                .any(|e| e.event.message.contains("readiness probe of container"))
                .then(|| r.clone())
        })
        .await?;
    let (is_ready, _, state) = ready(&r).expect("reported");
    assert!(matches!(state, ContainerState::Running { .. }), "{state:?}");
    assert!(!is_ready, "ready before the probe ever succeeded");
    let exec = |command: &str| ExecRequest {
        namespace: "default".into(),
        pod: "gated".into(),
        container: None,
        command: vec!["sh".into(), "-c".into(), command.into()],
        timeout_ms: None,
    };
    w.client.exec(&exec("touch /tmp/ready")).await?;
    w.wait_for(WAIT, "ready once the probe succeeds", |r| {
        ready(r).filter(|(ready, _, _)| *ready).map(|_| ())
    })
    .await?;
    w.client.exec(&exec("rm /tmp/ready")).await?;
    let r = w
        .wait_for(WAIT, "not ready once it fails again", |r| {
            ready(r).filter(|(ready, _, _)| !*ready).map(|c| c.1)
        })
        .await?;
    assert_eq!(r, 0, "a readiness failure never restarts the container");

    // The resolver is the cluster's, with Kubernetes' search path.
    let out = w.client.exec(&exec("cat /etc/resolv.conf")).await?;
    let conf = out.stdout;
    for line in [
        "nameserver 10.96.0.10",
        "nameserver 10.96.0.11",
        "search default.svc.example.internal svc.example.internal example.internal",
        "options ndots:5",
    ] {
        assert!(
            conf.lines().any(|l| l.trim() == line),
            "{line:?} not in {conf}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_stops_it_with_sigterm_within_its_grace_period() -> anyhow::Result<()> {
    let node = node_name("delete");
    let mut w = WorkerProc::start(&node, &[]).await?;
    let mut p = pod(
        &node,
        "graceful",
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; while true; do sleep 1; done",
        ],
    );
    p.spec.termination_grace_period_seconds = Some(10);
    let uid = p.metadata.uid.clone();
    w.set_pods(&[p]).await?;
    w.wait_for(WAIT, "Running", |r| running_id(r, "graceful"))
        .await?;
    // Watch the daemon for the container's death before asking for it.
    let mut events = tokio::process::Command::new("docker")
        .args([
            "events",
            "--filter",
            &format!("label=mkube.uid={uid}"),
            "--filter",
            "event=die",
            "--format",
            "{{.Actor.Attributes.exitCode}}",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = events.stdout.take().expect("piped");
    tokio::time::sleep(Duration::from_millis(300)).await; // let `docker events` subscribe
    let asked = Instant::now();
    w.set_pods(&[]).await?;
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let code = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await??;
    let took = asked.elapsed();
    assert_eq!(
        code.as_deref(),
        Some("42"),
        "the process saw SIGTERM and exited by its trap"
    );
    assert!(
        took < Duration::from_secs(10),
        "stopped after {took:?}, beyond the 10 s grace period"
    );
    let deadline = Instant::now() + WAIT;
    while !docker(&["ps", "-aq", "--filter", &format!("label=mkube.uid={uid}")])?.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stopped container was not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(w.poll().await?.pods.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_removed_behind_the_workers_back_is_recreated() -> anyhow::Result<()> {
    let node = node_name("recreate");
    let mut w = WorkerProc::start(&node, &[]).await?;
    w.set_pods(&[pod(&node, "phoenix", &["sleep", "3600"])])
        .await?;
    let first = w
        .wait_for(WAIT, "Running", |r| running_id(r, "phoenix"))
        .await?;
    docker(&["rm", "-f", first.trim_start_matches("docker://")])?;
    let second = w
        .wait_for(WAIT, "Running again", |r| {
            running_id(r, "phoenix").filter(|id| *id != first)
        })
        .await?;
    assert_ne!(first, second);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_containers_are_untouched_and_unknown_mkube_ones_are_collected()
-> anyhow::Result<()> {
    let node = node_name("foreign");
    let image = tests::images::ensure_busybox()?;
    let foreign = docker(&[
        "run",
        "-d",
        "--name",
        &format!("foreign-{}", std::process::id()),
        image,
        "sleep",
        "3600",
    ])?;
    let stray = docker(&[
        "run",
        "-d",
        "--label",
        &format!("mkube.node={node}"),
        "--label",
        "mkube.uid=stray",
        "--label",
        "mkube.container=x",
        "--label",
        "mkube.grace=1",
        image,
        "sleep",
        "3600",
    ])?;
    let mut w = WorkerProc::start(&node, &[]).await?;
    w.set_pods(&[]).await?;
    let deadline = Instant::now() + WAIT;
    while !docker(&["ps", "-aq", "--filter", &format!("id={stray}")])?.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the unknown mkube container of this node was not collected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = docker(&["inspect", "-f", "{{.State.Running}}", &foreign]);
    let _ = docker(&["rm", "-f", &foreign]);
    assert_eq!(state?, "true", "the foreign container was touched");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_daemon_do_not_interfere() -> anyhow::Result<()> {
    let (na, nb) = (node_name("two-a"), node_name("two-b"));
    let mut a = WorkerProc::start(&na, &[]).await?;
    let mut b = WorkerProc::start(&nb, &[]).await?;
    a.set_pods(&[pod(&na, "pa", &["sleep", "3600"])]).await?;
    b.set_pods(&[pod(&nb, "pb", &["sleep", "3600"])]).await?;
    a.wait_for(WAIT, "pa Running", |r| running_id(r, "pa"))
        .await?;
    let pb = b
        .wait_for(WAIT, "pb Running", |r| running_id(r, "pb"))
        .await?;
    // a's pods go; b's stays exactly as it was.
    a.set_pods(&[]).await?;
    let deadline = Instant::now() + WAIT;
    while !docker(&["ps", "-aq", "--filter", &format!("label=mkube.node={na}")])?.is_empty() {
        assert!(Instant::now() < deadline, "a's pod was not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running_id(&b.poll().await?, "pb"), Some(pb));
    Ok(())
}

/// Running containers of the pod with `uid`.
fn running_of(uid: &str) -> anyhow::Result<usize> {
    let out = docker(&["ps", "-q", "--filter", &format!("label=mkube.uid={uid}")])?;
    Ok(out.lines().count())
}

/// A whole desired set sent in parts (`more`): until the last part, the
/// worker keeps the containers of pods it has not been sent yet; a whole
/// set in one part still removes what it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_set_in_parts_removes_nothing_until_its_last_part() -> anyhow::Result<()> {
    let node = node_name("parts");
    let mut w = WorkerProc::start(&node, &[]).await?;
    let a = support::pod(&node, "part-a", &["sleep", "3600"]);
    let b = support::pod(&node, "part-b", &["sleep", "3600"]);
    let v = w.set_pods(&[a.clone(), b.clone()]).await?.acked_version;
    w.wait_for(WAIT, "both pods Running", |r| {
        (report(r, "part-a")?.status.phase == PodPhase::Running
            && report(r, "part-b")?.status.phase == PodPhase::Running)
            .then_some(())
    })
    .await?;
    let probe = |version, base_version, upserts: Vec<api::Pod>, more| ProbeRequest {
        node: node.clone(),
        fence: w.fence,
        version,
        base_version,
        upserts,
        deletes: vec![],
        delete_grace: Default::default(),
        events_after: 0,
        more,
    };
    // The first part of a new whole set (a leader that lost track), holding a only.
    w.client
        .probe(&probe(v + 1, None, vec![a.clone()], true))
        .await?;
    // Over many of the worker's rounds (200 ms each), and past b's stop
    // grace (2 s), b keeps running.
    for _ in 0..40 {
        w.client
            .probe(&probe(v + 1, Some(v + 1), vec![], true))
            .await?;
        assert_eq!(
            running_of(&b.metadata.uid)?,
            1,
            "b was removed before the last part"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last part brings b: both stay.
    let last = w
        .client
        .probe(&probe(v + 2, Some(v + 1), vec![b.clone()], false))
        .await?;
    assert_eq!(last.acked_version, v + 2);
    assert!(report(&last, "part-b").is_some());
    // A whole set in one part without b removes it.
    w.client
        .probe(&probe(v + 3, None, vec![a.clone()], false))
        .await?;
    let deadline = Instant::now() + WAIT;
    while running_of(&b.metadata.uid)? > 0 {
        assert!(Instant::now() < deadline, "b was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running_of(&a.metadata.uid)?, 1);
    Ok(())
}

/// A probe names the node it is for, and a worker refuses one for another
/// node: an empty full sync meant for node B (re-registered at this
/// worker's address) would otherwise remove every pod here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_for_another_node_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let node = node_name("named");
    let mut w = WorkerProc::start(&node, &[]).await?;
    let pod = support::pod(&node, "keep", &["sleep", "3600"]);
    let before = w.set_pods(std::slice::from_ref(&pod)).await?.acked_version;
    let req = ProbeRequest {
        node: "another-node".into(),
        fence: w.fence,
        version: 99,
        base_version: None,
        upserts: vec![],
        deletes: vec![],
        delete_grace: Default::default(),
        events_after: 0,
        more: false,
    };
    let err = w
        .client
        .probe(&req)
        .await
        .expect_err("a probe for another node was taken");
    let refusal = WorkerError::from_rpc(&err);
    assert!(
        matches!(&refusal, Some(WorkerError::InvalidArgument(m)) if m.contains("another-node") && m.contains(&node)),
        "{err}"
    );
    let answer = w.poll().await?;
    assert_eq!(answer.acked_version, before, "the desired set is as it was");
    assert_eq!(answer.pods.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_term_probe_is_refused() -> anyhow::Result<()> {
    let node = node_name("fence");
    let mut w = WorkerProc::start(&node, &[]).await?;
    w.fence = Fence { epoch: 2, term: 7 };
    w.set_pods(&[]).await?;
    for stale in [Fence { epoch: 2, term: 6 }, Fence { epoch: 1, term: 99 }] {
        let req = ProbeRequest {
            node: node.clone(),
            fence: stale,
            version: 9,
            base_version: None,
            upserts: vec![],
            deletes: vec![],
            delete_grace: Default::default(),
            events_after: 0,
            more: false,
        };
        let err = w
            .client
            .probe(&req)
            .await
            .expect_err("a stale probe was accepted");
        assert_eq!(
            WorkerError::from_rpc(&err),
            Some(WorkerError::StaleFence {
                seen: Fence { epoch: 2, term: 7 },
                got: stale
            })
        );
    }
    // A newer term is accepted.
    w.fence = Fence { epoch: 2, term: 8 };
    w.set_pods(&[]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_adopts_its_pods_while_masters_are_unreachable() -> anyhow::Result<()> {
    let node = node_name("failstatic");
    let dead_master = format!("127.0.0.1:{}", free_port()?);
    let args = ["--masters", dead_master.as_str()];
    let mut w = WorkerProc::start(&node, &args).await?;
    let p = pod(&node, "steady", &["sleep", "3600"]);
    w.set_pods(std::slice::from_ref(&p)).await?;
    let id = w
        .wait_for(WAIT, "Running", |r| running_id(r, "steady"))
        .await?;
    w.kill().await;
    // A new worker process for the node, still with no master to talk to.
    let mut w2 = WorkerProc::start(&node, &args).await?;
    w2.set_pods(std::slice::from_ref(&p)).await?;
    let again = w2
        .wait_for(WAIT, "Running", |r| running_id(r, "steady"))
        .await?;
    assert_eq!(
        again, id,
        "the pod's container was replaced instead of adopted"
    );
    drop(w);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_probes_get_errors_that_name_the_problem() -> anyhow::Result<()> {
    let node = node_name("bad");
    let mut w = WorkerProc::start(&node, &[]).await?;
    let mut elsewhere = pod("other-node", "lost", &["true"]);
    elsewhere.spec.containers[0].image = String::new();
    let err = w.set_pods(&[elsewhere]).await.expect_err("accepted");
    let text = err.to_string();
    assert!(
        text.contains("spec.nodeName") && text.contains("spec.containers[0].image: required"),
        "{text}"
    );
    // A missing Docker daemon is a clear start-up error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mkube-worker"))
        .args([
            "--name",
            "x",
            "--insecure",
            "--pod-isolation",
            "off",
            "--docker-host",
            "unix:///nonexistent/docker.sock",
        ])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Docker daemon at unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
    // A wrong token is refused.
    let client = api::worker::WorkerClient::new(rpc::Client::new(
        &w.addr,
        rpc::ClientConfig {
            token: Some("wrong".into()),
            ..Default::default()
        },
    )?);
    let err = client
        .probe(&ProbeRequest {
            node: node.clone(),
            fence: w.fence,
            version: 1,
            base_version: None,
            upserts: vec![],
            deletes: vec![],
            delete_grace: Default::default(),
            events_after: 0,
            more: false,
        })
        .await
        .expect_err("accepted");
    assert_eq!(
        err.status().map(|s| s.code),
        Some(rpc::Code::Unauthenticated)
    );
    Ok(())
}

/// A unix-socket proxy to the real daemon that the test can cut.
async fn docker_proxy(path: std::path::PathBuf) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    Ok(tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            conns.spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::UnixStream::connect("/var/run/docker.sock").await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_daemon_makes_the_node_not_ready_and_pods_survive() -> anyhow::Result<()> {
    let node = node_name("notready");
    let sock = std::env::temp_dir().join(format!("mkube-docker-proxy-{}.sock", std::process::id()));
    let proxy = docker_proxy(sock.clone()).await?;
    let host = format!("unix://{}", sock.display());
    let mut w = WorkerProc::start(&node, &["--docker-host", &host]).await?;
    w.set_pods(&[pod(&node, "calm", &["sleep", "3600"])])
        .await?;
    let id = w
        .wait_for(WAIT, "Running", |r| running_id(r, "calm"))
        .await?;
    // Cut the daemon off.
    proxy.abort();
    let _ = proxy.await;
    std::fs::remove_file(&sock)?;
    let condition = w
        .wait_for(WAIT, "NotReady", |r| {
            (!r.node.is_ready()).then(|| r.node.conditions[0].clone())
        })
        .await?;
    assert_eq!(condition.reason, "DockerUnreachable");
    assert!(
        condition.message.contains("cannot reach the Docker daemon"),
        "{}",
        condition.message
    );
    // Reconnect: Ready again, and the pod's container is the same one.
    let proxy = docker_proxy(sock.clone()).await?;
    w.wait_for(WAIT, "Ready", |r| r.node.is_ready().then_some(()))
        .await?;
    assert_eq!(running_id(&w.poll().await?, "calm"), Some(id));
    proxy.abort();
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_logs_continues_after_the_cursor_without_repeats() -> anyhow::Result<()> {
    let node = node_name("follow");
    let mut w = WorkerProc::start(&node, &[]).await?;
    let p = pod(
        &node,
        "ticker",
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo line-$i; sleep 1; done",
        ],
    );
    w.set_pods(&[p]).await?;
    w.wait_for(WAIT, "Running", |r| running_id(r, "ticker"))
        .await?;
    let ask = |cursor: Option<String>| LogsRequest {
        namespace: "default".into(),
        pod: "ticker".into(),
        container: Some("main".into()),
        tail_lines: None,
        since_seconds: None,
        follow: true,
        cursor,
        wait_ms: Some(5_000),
    };
    let number = |l: &String| l.strip_prefix("line-").and_then(|n| n.parse::<u64>().ok());
    let mut seen: Vec<u64> = Vec::new();
    let mut cursor = None;
    while seen.len() < 3 {
        let answer = w.client.logs(&ask(cursor.clone())).await?;
        seen.extend(answer.lines.iter().filter_map(number));
        cursor = answer.cursor.or(cursor);
    }
    let expected: Vec<u64> = (seen[0]..seen[0] + seen.len() as u64).collect();
    assert_eq!(
        seen, expected,
        "lines across long-polls are consecutive, none repeated"
    );
    // An unknown container is named in the error.
    let mut bad = ask(None);
    bad.container = Some("nope".into());
    let err = w.client.logs(&bad).await.expect_err("accepted");
    assert!(
        matches!(WorkerError::from_rpc(&err), Some(WorkerError::NotFound(m)) if m.contains("no container \"nope\""))
    );
    Ok(())
}

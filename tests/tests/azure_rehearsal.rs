//! The Azure deployment, rehearsed end to end (`tests::rehearsal`): three
//! master+worker VMs and one worker-only VM, booted by cloud-init from
//! `deploy/azure/cloud-init.yaml` with the template's custom data, against
//! doubles of IMDS, Key Vault, ARM, Blob storage and Cosmos DB.
//!
//! 1. An operator with only IPv6 to the VMs writes the context as deploy.sh
//!    does, runs `mkctl cluster status` and deploys the demo.
//! 2. A `Preempt` of the leader's VM: its worker acknowledges, leadership
//!    moves, an export is written and the pods run elsewhere before
//!    `NotBefore`; the VM is deallocated; the new leader starts it through
//!    ARM and it rejoins as a new incarnation. Each step's time is printed.
//! 3. Every VM evicted at once: the revival runbook, executed, starts them;
//!    the fleet re-forms from the newest export with its Deployment and
//!    Service, and the demo answers the operator again.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use api::{Pod, PodPhase};
use tests::masters::Masters;
use tests::rehearsal::{CLOUD_INIT, CustomData, PLACEHOLDERS, Rehearsal};

const CONTEXT: &str = "azure-rehearsal";
const DEMO: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  replicas: 2
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
      - name: httpd
        image: mkube-test/busybox:2
        command: [httpd, -f, -p, '8080', -h, /www]
        ports:
        - {name: http, containerPort: 8080, hostPort: 8080}
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: hello
spec:
  selector: {app: hello}
  ports:
  - {name: http, port: 80, targetPort: http}
";

/// The rehearsal's user data is the template's: the placeholders it fills
/// are exactly those of cloud-init.yaml and of main.bicep's `customData`, in
/// the same order, and none is left.
#[test]
fn the_rehearsal_fills_the_placeholders_the_template_fills() {
    let bicep = include_str!("../../deploy/azure/main.bicep");
    let start = bicep.find("customData:").expect("customData in main.bicep");
    let end = start + bicep[start..].find("linuxConfiguration").expect("end");
    let template: Vec<&str> = bicep[start..end]
        .split('\'')
        .filter(|s| s.starts_with("__") && s.ends_with("__"))
        .collect();
    assert_eq!(
        template, PLACEHOLDERS,
        "main.bicep's customData replaces these"
    );
    let mut in_file: Vec<&str> = CLOUD_INIT
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_uppercase() || c == '_')))
        .filter(|s| s.len() > 4 && s.starts_with("__") && s.ends_with("__"))
        .collect();
    in_file.sort_unstable();
    in_file.dedup();
    let mut expected: Vec<&str> = PLACEHOLDERS.to_vec();
    expected.sort_unstable();
    assert_eq!(in_file, expected, "cloud-init.yaml's placeholders");
    let data = CustomData {
        cluster: "mkube",
        masters: 3,
        binaries_url: "https://x.blob.core.windows.net/mkube/mkube.tar.gz?sig=s",
        vault: "kv-x",
        cosmos: "https://mkube-x.documents.azure.com:443/",
        region: "japaneast",
        subscription: "s",
        resource_group: "rg",
    };
    for i in 0..4 {
        let text = data.render(CLOUD_INIT, i);
        assert!(
            !text
                .lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("__")),
            "VM {i}: a placeholder is left"
        );
        // The template's expressions, for the values that vary by VM.
        assert!(text.contains(&format!("MKUBE_IP=10.42.0.{}", 10 + i)));
        assert!(text.contains(
            "MKUBE_MASTERS=mkube-0=10.42.0.10:7000,mkube-1=10.42.0.11:7000,mkube-2=10.42.0.12:7000"
        ));
        let extra = if i < 3 {
            format!(
                "MKUBE_WORKER_EXTRA=--local-master 10.42.0.{}:7000\n",
                10 + i
            )
        } else {
            "MKUBE_WORKER_EXTRA=\n".into()
        };
        assert!(text.contains(&extra), "VM {i}: {extra}");
    }
    assert!(bicep.contains("'__IP__', '10.42.0.${10 + i}'"));
    assert!(bicep.contains(
        "'__WORKER_EXTRA__', i < masterCount ? '--local-master 10.42.0.${10 + i}:7000' : ''"
    ));
}

fn step(started: Instant, what: &str) {
    eprintln!(
        "[rehearsal +{:>6.1}s] {what}",
        started.elapsed().as_secs_f64()
    );
}

async fn pods(r: &Rehearsal) -> Result<Vec<Pod>> {
    let list = r.list_all("pods", Some("app=hello")).await?;
    list.items
        .into_iter()
        .map(|v| serde_json::from_value(v).context("a pod"))
        .collect()
}

fn running_on(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.phase == PodPhase::Running)
        })
        .filter_map(|p| p.spec.node_name.clone())
        .collect()
}

/// Waits until the demo answers the operator at the public IPv6 address of
/// a VM that runs one of its pods (statuses restored from an export may be
/// stale for a moment: the answer is what counts).
async fn demo_answers(r: &Rehearsal, what: &str) -> Result<()> {
    r.wait_for(Duration::from_secs(120), what, |r| async move {
        let placed = running_on(&pods(r).await?);
        for i in 0..r.vm_count() {
            if !placed.contains(&r.vm(i)) {
                continue;
            }
            let url = format!("http://[{}]:8080/", r.public_ip(i));
            if let Ok(answer) = r.operator(&["curl", "-sf", "-m", "5", &url])
                && answer.trim() == "ok"
            {
                return Ok(Some(()));
            }
        }
        Ok(None)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_rehearsed_serves_the_operator_and_survives_an_eviction() -> Result<()> {
    let started = Instant::now();
    let r = Rehearsal::start(3, 1).await?;
    step(started, "4 VMs booting (cloud-init)");

    // Every node registers: cloud-init installed the binaries from the blob,
    // the masters read their secrets from Key Vault and formed a cluster.
    r.wait_for(Duration::from_secs(300), "4 nodes Ready", |r| async move {
        let ready = r.ready_nodes().await?;
        Ok((ready.len() == 4 && r.settled().await).then_some(()))
    })
    .await?;
    step(started, "3 masters settled, 4 nodes Ready");
    for i in 0..r.vm_count() {
        let vm = r.vm(i);
        r.wait_for(Duration::from_secs(60), "the VM's Docker", |r| {
            let vm = vm.clone();
            async move { Ok(r.load_demo_image(&vm).ok()) }
        })
        .await?;
    }

    // Grafana's part that can run here: its unit fetched the CA and the
    // viewer token from Key Vault (no Grafana image can be pulled here, so
    // the container itself does not start).
    let token = r.on_vm(&r.vm(0), &["cat", "/run/mkube-grafana/token"])?;
    assert_eq!(
        token.trim(),
        r.pki().token("viewer")?,
        "Grafana gets the viewer token"
    );
    let mode = r.on_vm(&r.vm(0), &["stat", "-c", "%a", "/run/mkube-grafana/token"])?;
    assert_eq!(mode.trim(), "600");

    // 1. The operator, with only IPv6 to the VMs.
    let v4 = r.operator(&["ip", "-4", "addr", "show"])?;
    if v4.contains("inet ")
        && !v4
            .lines()
            .all(|l| !l.contains("inet ") || l.contains("127.0.0.1"))
    {
        bail!("the operator has IPv4 addresses: {v4}");
    }
    let ips: Vec<String> = (0..3).map(|i| r.public_ip(i)).collect();
    let mut args = vec!["/root/deploy/write-context.sh", CONTEXT, "/root/pki"];
    args.extend(ips.iter().map(String::as_str));
    r.operator(&args)?;
    let status = r.operator(&["mkctl", "--context", CONTEXT, "cluster", "status"])?;
    eprintln!("{status}");
    for i in 0..3 {
        assert!(
            status.contains(&format!("mkube-{i}")),
            "cluster status names mkube-{i}"
        );
    }
    r.operator(&[
        "sh",
        "-c",
        &format!("cat > /root/hello.yaml <<'EOF'\n{DEMO}EOF"),
    ])?;
    r.operator(&[
        "mkctl",
        "--context",
        CONTEXT,
        "apply",
        "-f",
        "/root/hello.yaml",
    ])?;
    r.wait_for(
        Duration::from_secs(120),
        "2 hello pods Running",
        |r| async move { Ok((running_on(&pods(r).await?).len() == 2).then_some(())) },
    )
    .await?;
    step(started, "the demo runs, deployed by the operator over IPv6");
    demo_answers(&r, "the demo answers the operator over IPv6").await?;

    // 2. A Preempt of the leader's VM.
    let leader = r.leader().await.context("a leader")?;
    let vm = r.vm(leader);
    let before = r.kv_status(leader).await?;
    let not_before = SystemTime::now() + Duration::from_secs(30);
    let deadline = Instant::now() + Duration::from_secs(30);
    let event = r.azure.preempt(&vm, not_before);
    step(started, &format!("Preempt {event} of the leader's VM {vm}"));
    let mut acked = false;
    let mut moved = false;
    let mut elsewhere = false;
    let mut exported = false;
    while Instant::now() < deadline && !(acked && moved && elsewhere && exported) {
        if !exported
            && let Ok(s) = r.kv_status(leader).await
            && s.last_export.as_ref().map(|e| e.index)
                > before.last_export.as_ref().map(|e| e.index)
        {
            exported = true;
            step(
                started,
                &format!(
                    "{vm}'s master exported the state at index {:?}",
                    s.last_export.map(|e| e.index)
                ),
            );
        }
        if !acked && r.azure.acknowledged(&event).is_some() {
            acked = true;
            step(started, "the worker acknowledged the event");
        }
        if !moved
            && let Some(l) = r.leader().await
            && l != leader
        {
            moved = true;
            step(started, &format!("leadership moved to {}", r.vm(l)));
        }
        if !elsewhere {
            let on = running_on(&pods(&r).await.unwrap_or_default());
            if on.len() == 2 && !on.contains(&vm) {
                elsewhere = true;
                step(started, &format!("the demo's pods run on {on:?}"));
            }
        }
        let evicted = r.azure.run_evictions();
        if !evicted.is_empty() {
            step(started, &format!("evicted: {evicted:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(acked, "the worker acknowledged before NotBefore");
    assert!(moved, "leadership moved before NotBefore");
    assert!(elsewhere, "the pods ran elsewhere before NotBefore");
    assert!(exported, "an export was written before NotBefore");
    while !r.azure.run_evictions().contains(&vm)
        && r.azure.power(&vm) != Some(tests::rehearsal::azure::Power::Deallocated)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    step(started, &format!("{vm} deallocated"));

    // The new leader's peer revival starts it through ARM.
    r.wait_for(
        Duration::from_secs(240),
        "the VM started again by the leader",
        |r| {
            let vm = vm.clone();
            async move {
                Ok(r.azure
                    .log()
                    .iter()
                    .any(|(_, line)| {
                        line.starts_with(&format!("{vm}: PowerState/running (ARM start by mkube-"))
                    })
                    .then_some(()))
            }
        },
    )
    .await?;
    step(
        started,
        &format!("{vm} started through ARM by the new leader"),
    );
    r.wait_for(
        Duration::from_secs(240),
        "the VM's master rejoins",
        |r| async move {
            let status = r.kv_status(leader).await;
            Ok(status.ok().filter(|s| s.id != before.id).map(|_| ()))
        },
    )
    .await?;
    r.wait_for(Duration::from_secs(120), "settled again", |r| async move {
        Ok(r.settled().await.then_some(()))
    })
    .await?;
    step(started, &format!("{vm} rejoined as a new incarnation"));

    // 3. Every VM evicted at once; the runbook starts them.
    let leader = r.leader().await.context("a leader")?;
    let written = r.kv_status(leader).await?.commit_index;
    r.wait_for_export(written, Duration::from_secs(90)).await?;
    step(started, &format!("an export covers index {written}"));
    let all: Vec<String> = (0..r.vm_count()).map(|i| r.vm(i)).collect();
    std::thread::scope(|s| {
        for vm in &all {
            let azure = &r.azure;
            s.spawn(move || azure.evict(vm));
        }
    });
    step(started, "every VM evicted");
    assert!(r.leader().await.is_none(), "no master is left");
    let output = r.run_runbook()?;
    eprintln!("{output}");
    for vm in &all {
        assert!(
            output.contains(&format!("starting {vm} (deallocated)")),
            "the runbook starts {vm}"
        );
    }
    step(started, "the runbook started every VM");
    r.wait_for(
        Duration::from_secs(300),
        "the fleet re-formed with 4 nodes Ready",
        |r| async move {
            let ready = r.ready_nodes().await?;
            Ok((ready.len() == 4 && r.settled().await).then_some(()))
        },
    )
    .await?;
    step(
        started,
        "the fleet re-formed: 3 masters settled, 4 nodes Ready",
    );
    let deployments = r.list_all("deployments", None).await?;
    let services = r.list_all("services", None).await?;
    assert!(
        deployments
            .items
            .iter()
            .any(|d| d["metadata"]["name"] == "hello"),
        "the Deployment came back from the export"
    );
    assert!(
        services
            .items
            .iter()
            .any(|d| d["metadata"]["name"] == "hello"),
        "the Service came back from the export"
    );
    for i in 0..r.vm_count() {
        let vm = r.vm(i);
        r.wait_for(Duration::from_secs(60), "the VM's Docker", |r| {
            let vm = vm.clone();
            async move { Ok(r.load_demo_image(&vm).ok()) }
        })
        .await?;
    }
    r.wait_for(
        Duration::from_secs(180),
        "2 hello pods Running again",
        |r| async move { Ok((running_on(&pods(r).await?).len() == 2).then_some(())) },
    )
    .await?;
    demo_answers(&r, "the demo answers the operator again").await?;
    step(started, "the demo answers the operator again");
    Ok(())
}

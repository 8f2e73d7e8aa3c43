//! Pods cannot reach what belongs to the machine: a metadata server at
//! 169.254.169.254 on the worker's host and the worker's member port are
//! refused to a pod, while the same pod still reaches a Service's endpoint
//! and a server outside the cluster. Then the worker's rules are removed
//! and the same pod reaches both, which shows the refusals were the rules'.
//!
//! The worker runs on this host with its pods on Docker's bridge, as on a
//! VM (the containerised cluster's pods share their worker container's
//! network namespace, where no rule can separate a pod from its worker).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use api::master::WriteRequest;
use api::worker::{ExecRequest, ExecResponse};
use serde_json::json;
use tests::cluster::{Cluster, Timing};
use tests::images::BUSYBOX;
use tests::masters::Masters;
use tokio::io::AsyncWriteExt;

const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The host side of Docker's default bridge, where pods reach the host.
fn bridge_gateway() -> Result<Ipv4Addr> {
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if text.is_empty() {
        // Older daemons leave the gateway out of IPAM: docker0's address.
        return Ok(Ipv4Addr::new(172, 17, 0, 1));
    }
    Ok(text.parse()?)
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The metadata address on this host's loopback interface, removed on drop
/// with the worker's iptables rules.
struct HostSetup {
    comment: String,
}

impl HostSetup {
    fn new(node: &str) -> Result<HostSetup> {
        let address = format!("{METADATA}/32");
        let _ = run("ip", &["addr", "del", &address, "dev", "lo"]);
        run("ip", &["addr", "add", &address, "dev", "lo"])?;
        // Rules an earlier run left behind (a killed test) would make the
        // control at the end fail: none may be there at the start.
        remove_rules("mkube-pod-isolation:")?;
        Ok(HostSetup {
            comment: format!("mkube-pod-isolation:{node}"),
        })
    }

    /// Deletes the worker's rules (those carrying its comment).
    fn remove_rules(&self) -> Result<usize> {
        remove_rules(&self.comment)
    }
}

/// Deletes the rules whose comment contains `comment`.
fn remove_rules(comment: &str) -> Result<usize> {
    let mut removed = 0;
    for chain in ["INPUT", "DOCKER-USER"] {
        for line in run("iptables", &["-w", "5", "-S", chain])?.lines() {
            let Some(rule) = line.strip_prefix("-A ").filter(|r| r.contains(comment)) else {
                continue;
            };
            // The comment has no spaces: unquoting it is all -S needs.
            let unquoted = rule.replace('"', "");
            let mut args = vec!["-w", "5", "-D"];
            args.extend(unquoted.split_whitespace());
            run("iptables", &args)?;
            removed += 1;
        }
    }
    Ok(removed)
}

impl Drop for HostSetup {
    fn drop(&mut self) {
        let _ = self.remove_rules();
        let _ = run(
            "ip",
            &["addr", "del", &format!("{METADATA}/32"), "dev", "lo"],
        );
    }
}

/// A TCP server that writes `greeting` to whoever connects.
async fn greeter(addr: SocketAddr, greeting: &'static str) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(greeting.as_bytes()).await;
        }
    });
    Ok(bound)
}

async fn exec(c: &Cluster, script: &str) -> Result<ExecResponse> {
    Ok(c.any_client()
        .await?
        .exec(&ExecRequest {
            namespace: "default".into(),
            pod: "client".into(),
            container: None,
            command: vec!["sh".into(), "-c".into(), script.into()],
            timeout_ms: Some(20_000),
        })
        .await?)
}

/// What the client pod gets from `host:port` with nc: the greeting, or
/// the failure.
async fn reach(c: &Cluster, host: impl std::fmt::Display, port: u16) -> Result<(bool, String)> {
    let r = exec(
        c,
        &format!("nc -w 3 {host} {port} </dev/null 2>&1; echo \" exit=$?\""),
    )
    .await?;
    Ok((r.stdout.trim_end().ends_with("exit=0"), r.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_cannot_reach_the_metadata_address_or_member_ports_but_reach_services_and_the_outside()
-> Result<()> {
    let gateway = bridge_gateway()?;
    let mut c = Cluster::start(1, 0, Timing::default()).await?;
    let node = c.worker_name(0);
    let host = HostSetup::new(&node)?;
    let metadata = greeter(SocketAddr::new(IpAddr::V4(METADATA), 80), "metadata\n").await?;
    let outside = greeter(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        "outside\n",
    )
    .await?;
    // The worker listens where pods could reach it, as on a VM.
    let port = tests::clusters::free_port()?;
    let flags: Vec<String> = [
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--advertise",
        &format!("127.0.0.1:{port}"),
        "--host-ip",
        &gateway.to_string(),
        "--publish-ip",
        &gateway.to_string(),
        "--pod-isolation",
        "on",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.add_worker_with(0, &flags)?;
    c.wait_for(
        Duration::from_secs(30),
        "the worker Ready",
        |c| async move { Ok((c.ready_nodes().await?.len() == 1).then_some(())) },
    )
    .await?;

    // A web Service and a client pod.
    let web_port = tests::clusters::free_port()?;
    let client = c.any_client().await?;
    for object in [
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "main", "image": BUSYBOX,
                "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                "ports": [{"name": "http", "containerPort": 8080, "hostPort": web_port}]}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
            "spec": {"containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}}),
    ] {
        client.apply(&WriteRequest { object }).await?;
    }
    let endpoint = c
        .wait_for(
            Duration::from_secs(60),
            "the web Service's endpoint and the client Running",
            |c| async move {
                let client = c.any_client().await?;
                let ep = client
                    .get(&api::master::ObjectRequest {
                        kind: "endpoints".into(),
                        namespace: None,
                        name: "web".into(),
                        resource_version: None,
                        grace_period_seconds: None,
                    })
                    .await
                    .ok();
                let address = ep.and_then(|e| {
                    let subset = e.object["subsets"].get(0)?.clone();
                    let ip = subset["addresses"].get(0)?["ip"].as_str()?.to_owned();
                    let port = subset["ports"].get(0)?["port"].as_u64()?;
                    Some((ip, port as u16))
                });
                let running = client
                    .get(&api::master::ObjectRequest {
                        kind: "pods".into(),
                        namespace: None,
                        name: "client".into(),
                        resource_version: None,
                        grace_period_seconds: None,
                    })
                    .await?
                    .object["status"]["phase"]
                    == "Running";
                Ok(address.filter(|_| running))
            },
        )
        .await?;

    // Refused: the metadata address, the worker's member port.
    let (ok, out) = reach(&c, METADATA, metadata.port()).await?;
    ensure!(!ok, "a pod reached the metadata server: {out}");
    let (ok, out) = reach(&c, gateway, port).await?;
    ensure!(!ok, "a pod reached the worker's member port: {out}");
    // Served: the Service's endpoint and a server outside the cluster.
    // (busybox-static's wget crashes resolving even an address: nc speaks
    // the HTTP.)
    let web = exec(
        &c,
        &format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} {}",
            endpoint.0, endpoint.1
        ),
    )
    .await?;
    ensure!(
        web.exit_code == 0
            && web.stdout.starts_with("HTTP/1.")
            && web.stdout.trim_end().ends_with("ok"),
        "the pod did not reach the Service at {endpoint:?}: {web:?}"
    );
    let (ok, out) = reach(&c, gateway, outside.port()).await?;
    ensure!(
        ok && out.contains("outside"),
        "the pod did not reach the outside: {out}"
    );

    // Without the worker's rules the same pod reaches both: the refusals
    // were the rules'.
    let removed = host.remove_rules().context("removing the worker's rules")?;
    ensure!(removed == 4, "the worker installed {removed} rules, not 4");
    let (ok, out) = reach(&c, METADATA, metadata.port()).await?;
    ensure!(
        ok && out.contains("metadata"),
        "control: no route to the metadata server: {out}"
    );
    let (ok, out) = reach(&c, gateway, port).await?;
    ensure!(ok, "control: the member port is unreachable anyway: {out}");
    Ok(())
}

//! Security of a running cluster over real sockets: who may speak Raft and
//! probe workers, and what crosses loopback in clear text (a `tshark`
//! capture).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::master::{ListRequest, WriteRequest};
use api::worker::{LogsRequest, WorkerClient};
use kvs::api::{MessageBatch, RaftPeerClient};
use serde_json::json;
use tests::cluster::{Cluster, Timing};
use tests::images::BUSYBOX;
use tests::masters::Masters;

fn client_config(token: String, tls: rpc::ClientTls) -> rpc::ClientConfig {
    rpc::ClientConfig {
        token: Some(token),
        tls: Some(tls),
        default_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn raft(c: &Cluster, token: &str, identity: Option<rpc::Identity>) -> Result<RaftPeerClient> {
    let tls = c.pki().client_tls(identity)?;
    let client = rpc::Client::new(&c.master_addrs[0], client_config(token.into(), tls))?;
    Ok(RaftPeerClient::new(client))
}

fn batch() -> MessageBatch {
    MessageBatch {
        from: "intruder".into(),
        messages: Vec::new(),
        lifecycle: Vec::new(),
    }
}

/// The refusal of a call, which must be `PermissionDenied` naming `why`.
fn assert_denied<T: std::fmt::Debug>(result: Result<T, rpc::Error>, why: &str) {
    match result {
        Err(e) => {
            assert_eq!(e.code(), rpc::Code::PermissionDenied, "{e}");
            assert!(e.to_string().contains(why), "{e}");
        }
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_masters_speak_raft_and_only_masters_call_workers() -> Result<()> {
    let c = Cluster::start(1, 1, Timing::default()).await?;
    let pki = c.pki();
    let join = pki.token("join")?;
    let member = pki.token("member")?;
    let worker = c.worker_name(0);

    // A worker's join token, no certificate: no Raft.
    let r = raft(&c, &join, None)?.deliver(&batch()).await;
    assert_denied(r, "requires a client certificate of mkube:masters");
    // A worker's own certificate (mkube:workers), even with the member token.
    let r = raft(&c, &member, Some(pki.worker_identity(&worker)?))?
        .deliver(&batch())
        .await;
    assert_denied(r, "is in [\"mkube:workers\"]");
    // A master's certificate does not make a join token a member's.
    let r = raft(&c, &join, Some(pki.identity("m0")?))?
        .deliver(&batch())
        .await;
    assert_denied(r, "a join token may not call /RaftPeer/deliver");
    // Users may not speak Raft either.
    let r = raft(&c, &pki.token("user")?, None)?.deliver(&batch()).await;
    assert_denied(r, "requires a client certificate");

    // The worker answers only masters: a user (the CA, the user token) is
    // refused, and so is the member token without a masters' certificate.
    let nodes = c
        .any_client()
        .await?
        .list(&ListRequest {
            kind: "nodes".into(),
            ..Default::default()
        })
        .await?;
    let node: api::Node = serde_json::from_value(nodes.items[0].clone())?;
    let address = node.status.context("node status")?.address;
    let logs: LogsRequest = serde_json::from_value(json!({"namespace": "default", "pod": "x"}))?;
    let as_user = WorkerClient::new(rpc::Client::new(
        &address,
        client_config(pki.token("user")?, pki.client_tls(None)?),
    )?);
    assert_denied(as_user.logs(&logs).await, "requires a client certificate");
    let as_member_without_cert = WorkerClient::new(rpc::Client::new(
        &address,
        client_config(member.clone(), pki.client_tls(None)?),
    )?);
    assert_denied(
        as_member_without_cert.logs(&logs).await,
        "requires a client certificate of mkube:masters",
    );
    // With a master's certificate and the member token the call is served
    // (the pod does not exist: NotFound, not a refusal).
    let as_master = WorkerClient::new(rpc::Client::new(
        &address,
        rpc::ClientConfig {
            token: Some(member),
            tls: Some(pki.client_tls(Some(pki.identity("m0")?))?),
            ..Default::default()
        },
    )?);
    let e = as_master.logs(&logs).await.expect_err("no such pod");
    assert_eq!(e.code(), rpc::Code::NotFound, "{e}");
    Ok(())
}

/// Stops the capture (SIGINT, so that tshark finishes the file) on drop.
struct Capture(Child);

impl Capture {
    /// Captures loopback TCP into `file`; returns once tshark captures.
    fn start(file: &Path) -> Result<Capture> {
        let log = file.with_extension("log");
        let child = Command::new("tshark")
            .args(["-i", "lo", "-f", "tcp", "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting tshark (Debian's `tshark` package)")?;
        let capture = Capture(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Capturing on")
        {
            if Instant::now() > deadline {
                bail!(
                    "tshark did not start capturing: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(capture)
    }

    fn stop(&mut self) -> Result<()> {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.0.kill();
                bail!("tshark did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// How many packets of the capture match a tshark display filter.
fn count(file: &Path, filter: &str) -> Result<usize> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", filter])
        .output()?;
    if !out.status.success() {
        bail!("tshark -r: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_manifest_crosses_loopback_in_clear_text() -> Result<()> {
    let c = Cluster::start(3, 1, Timing::default()).await?;
    let pcap = c.dir().join("loopback.pcapng");
    let mut capture = Capture::start(&pcap)?;

    // The real traffic: a manifest with a marker, through a follower (which
    // forwards it to the leader), scheduled, and run by the worker; Raft,
    // probes and metrics flow meanwhile.
    let marker = format!("secret-marker-{}", std::process::id());
    let leader = c.leader().await.context("a leader")?;
    let follower = (0..3).find(|&i| i != leader).context("a follower")?;
    c.client(follower)?
        .apply(&WriteRequest {
            object: json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "marked", "labels": {"marker": marker}},
                "spec": {"containers": [{
                    "name": "main", "image": BUSYBOX, "command": ["sleep", "3600"],
                    "env": [{"name": "MARKER", "value": marker}]
                }]}
            }),
        })
        .await?;
    c.wait_for(
        Duration::from_secs(60),
        "the marked pod Running",
        |c| async move {
            let list = c
                .any_client()
                .await?
                .list(&ListRequest {
                    kind: "pods".into(),
                    ..Default::default()
                })
                .await?;
            Ok(list
                .items
                .iter()
                .any(|p| p["status"]["phase"] == "Running")
                .then_some(()))
        },
    )
    .await?;
    // The control, last (the capture has surely started by now): a request
    // in clear text, which the capture must show.
    let canary = format!("canary-{}", std::process::id());
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf)?;
        s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
    });
    let mut plain = std::net::TcpStream::connect(addr)?;
    plain.write_all(
        format!("GET / HTTP/1.1\r\nauthorization: Bearer {canary}\r\n\r\n").as_bytes(),
    )?;
    let mut answer = [0u8; 64];
    let _ = plain.read(&mut answer)?;
    let _ = server.join();
    // dumpcap writes packets out as it goes; give it until the control
    // request is in the file (or 10 s) before stopping it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !contains(&std::fs::read(&pcap)?, &canary) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    capture.stop()?;

    let bytes = std::fs::read(&pcap)?;
    let hellos = count(&pcap, "tls.handshake.type == 1")?;
    let records = count(&pcap, "tls.app_data")?;
    let seen = format!(
        "{} bytes, {hellos} ClientHellos, {records} application data records ({})",
        bytes.len(),
        pcap.display()
    );
    assert!(
        contains(&bytes, &canary),
        "the capture sees clear text on loopback (control): {seen}"
    );
    assert!(
        hellos >= 3 && records >= 20,
        "TLS traffic was captured: {seen}"
    );
    let pki = c.pki();
    for (what, secret) in [
        ("the user token", pki.token("user")?),
        ("the member token", pki.token("member")?),
        ("the join token", pki.token("join")?),
        ("the manifest's marker", marker.clone()),
        ("the manifest's image", BUSYBOX.to_string()),
    ] {
        assert!(
            !contains(&bytes, &secret),
            "{what} crossed loopback in clear text ({})",
            pcap.display()
        );
    }
    // Other tests may run beside this one (Prometheus' plain HTTP, say):
    // only this cluster's ports and the control's are counted.
    let ports: Vec<String> = c
        .master_addrs
        .iter()
        .chain(&c.grafana_addrs)
        .filter_map(|a| a.rsplit_once(':').map(|(_, p)| p.to_string()))
        .collect();
    assert_eq!(
        count(
            &pcap,
            &format!("http.request && tcp.dstport == {}", addr.port())
        )?,
        1,
        "the control request is plain HTTP"
    );
    assert_eq!(
        count(
            &pcap,
            &format!("http.request && tcp.dstport in {{{}}}", ports.join(", "))
        )?,
        0,
        "no request to the cluster is plain HTTP"
    );
    eprintln!(
        "capture: {} bytes, {hellos} TLS ClientHellos, {records} application data records, no token or manifest in clear text",
        bytes.len()
    );
    Ok(())
}

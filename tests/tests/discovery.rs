//! Service discovery end to end: Services, the endpoints controller,
//! readiness probes and the masters' DNS server, on real processes and the
//! real Docker daemon; DNS is asked with Debian's `dig` and with raw
//! packets, as a client on the network would.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::master::{MasterClient, ObjectRequest, WriteRequest};
use api::worker::ExecRequest;
use serde_json::{Value, json};
use tests::cluster::{Cluster, Timing};
use tests::clusters::free_port;
use tests::images::BUSYBOX;
use tests::masters::Masters;
use tests::netcluster::NetCluster;

const DOMAIN: &str = "cluster.local";

/// A busybox web server pod labelled `app`, its port 8080 on `host_port`,
/// ready only while `/tmp/ready` exists when `gated`.
fn web_pod(name: &str, app: &str, host_port: u16, gated: bool) -> Value {
    let mut container = json!({
        "name": "main", "image": BUSYBOX,
        "command": ["sh", "-c", "exec httpd -f -p 8080 -h /www"],
        "ports": [{"name": "http", "containerPort": 8080, "hostPort": host_port}]
    });
    if gated {
        container["readinessProbe"] = json!({
            "exec": {"command": ["test", "-f", "/tmp/ready"]},
            "periodSeconds": 1, "failureThreshold": 1
        });
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]}
    })
}

fn service(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]
        }
    })
}

/// `dig` against `server` (HOST:PORT) with `args`; its whole output.
fn dig(server: &str, args: &[&str]) -> Result<String> {
    let (host, port) = server.rsplit_once(':').context("HOST:PORT")?;
    let out = Command::new("dig")
        .arg(format!("@{host}"))
        .args(["-p", port, "+tries=1", "+time=2"])
        .args(args)
        .output()
        .context("running dig (apt-get install bind9-dnsutils)")?;
    if !out.status.success() {
        bail!(
            "dig {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// dig's `status:` and whether the `aa` flag is set.
fn status(output: &str) -> (String, bool) {
    let status = output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_string();
    let aa = output
        .lines()
        .find(|l| l.contains(";; flags:"))
        .is_some_and(|l| l.split(';').nth(2).is_some_and(|f| f.contains(" aa")));
    (status, aa)
}

/// The answer section's records as (type, data), from `+noall +answer`.
fn answers(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| (f[3].to_string(), f[4..].join(" ")))
        })
        .collect()
}

/// SRV answers as (port, target).
fn srv(server: &str, name: &str, tcp: bool) -> Result<BTreeSet<(u16, String)>> {
    let mut args = vec!["+noall", "+answer", name, "SRV"];
    if tcp {
        args.push("+tcp");
    }
    let out = dig(server, &args)?;
    let mut set = BTreeSet::new();
    for (t, data) in answers(&out) {
        if t != "SRV" {
            bail!("a {t} record in an SRV answer: {out}");
        }
        let f: Vec<&str> = data.split_whitespace().collect();
        let (Some(port), Some(target)) = (f.get(2), f.get(3)) else {
            bail!("SRV data {data:?}");
        };
        set.insert((port.parse()?, target.to_string()));
    }
    Ok(set)
}

/// Waits until `name`'s SRV answer (over UDP) is exactly `want`.
async fn wait_srv(
    c: &Cluster,
    dns: &str,
    name: &str,
    want: &BTreeSet<(u16, String)>,
    within: Duration,
) -> Result<()> {
    c.wait_for(
        within,
        &format!("the SRV records {want:?}"),
        |_| async move { Ok((srv(dns, name, false)? == *want).then_some(())) },
    )
    .await
}

async fn exec(client: &MasterClient, pod: &str, command: &str) -> Result<String> {
    let out = client
        .exec(&ExecRequest {
            namespace: "default".into(),
            pod: pod.into(),
            container: None,
            command: vec!["sh".into(), "-c".into(), command.into()],
            timeout_ms: None,
        })
        .await?;
    if out.exit_code != 0 {
        bail!("{command:?} exited {}: {}", out.exit_code, out.stderr);
    }
    Ok(out.stdout)
}

/// A DNS query as bytes: `id`, opcode, one question (`qdcount` claimed).
fn packet(id: u16, opcode: u8, qdcount: u16, name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(id.to_be_bytes());
    p.push((opcode & 0xf) << 3 | 1); // RD
    p.push(0);
    p.extend(qdcount.to_be_bytes());
    p.extend([0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend(label.as_bytes());
    }
    p.push(0);
    p.extend(qtype.to_be_bytes());
    p.extend(qclass.to_be_bytes());
    p
}

/// Sends `bytes` over UDP; the answer's (id, rcode), or `None` when none
/// comes within a second.
async fn ask_raw(server: &str, bytes: &[u8]) -> Result<Option<(u16, u8)>> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(bytes, server).await?;
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
        Err(_) => Ok(None),
        Ok(n) => {
            let n = n?;
            if n < 12 {
                bail!("a {n}-byte answer");
            }
            Ok(Some((u16::from_be_bytes([buf[0], buf[1]]), buf[3] & 0xf)))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_finds_ready_endpoints_and_the_server_survives_malformed_packets() -> Result<()> {
    // An upstream for names outside the cluster domain: a DNS server of
    // its own (our server, for another domain), on a real socket.
    let upstream_zone = dns::Zone::build(
        &dns::ZoneConfig {
            domain: "upstream.test".into(),
            ttl: 30,
        },
        &[serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "prod"},
            "subsets": [{"addresses": [{"ip": "192.0.2.7", "nodeName": "x",
                "targetRef": {"kind": "Pod", "namespace": "prod", "name": "db-0", "uid": "u"}}],
                "ports": [{"name": "pg", "port": 5432}]}]
        }))?],
    )?;
    let upstream = dns::DnsServer::bind(
        "127.0.0.1:0".parse()?,
        dns::ZoneHandle::new(upstream_zone),
        None,
    )
    .await?;
    let upstream_addr = upstream.local_addr().to_string();
    tokio::spawn(upstream.serve(std::future::pending()));
    let c = Cluster::start_with(
        1,
        1,
        Timing::default(),
        &["--dns-forward".into(), upstream_addr],
    )
    .await?;
    let client = c.client(0)?;
    let dns = c.dns_addrs[0].clone();
    let (p1, p2, p3) = (free_port()?, free_port()?, free_port()?);
    client
        .create(&WriteRequest {
            object: service("web", "web"),
        })
        .await?;
    for (name, port, gated) in [
        ("web-a", p1, false),
        ("web-b", p2, false),
        ("web-c", p3, true),
    ] {
        client
            .create(&WriteRequest {
                object: web_pod(name, "web", port, gated),
            })
            .await?;
    }
    let fqdn = format!("web.default.svc.{DOMAIN}");
    let srv_name = format!("_http._tcp.{fqdn}");
    let target = format!("127-0-0-1.{fqdn}.");
    // The two ungated pods become endpoints; the gated one never passed its
    // readiness probe and is not one.
    let want: BTreeSet<(u16, String)> = [(p1, target.clone()), (p2, target.clone())].into();
    wait_srv(&c, &dns, &srv_name, &want, Duration::from_secs(60)).await?;
    assert_eq!(srv(&dns, &srv_name, true)?, want, "the same over TCP");
    let endpoints = client
        .get(&ObjectRequest {
            kind: "endpoints".into(),
            namespace: Some("default".into()),
            name: "web".into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await?
        .object;
    let not_ready: Vec<&str> = endpoints["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["notReadyAddresses"].as_array().into_iter().flatten())
        .filter_map(|a| a["targetRef"]["name"].as_str())
        .collect();
    assert_eq!(not_ready, ["web-c"], "{endpoints}");

    // A, with the aa flag and the short TTL; the SRV target resolves.
    let out = dig(&dns, &[&fqdn, "A"])?;
    assert_eq!(status(&out), ("NOERROR".into(), true), "{out}");
    let a = answers(&dig(&dns, &["+noall", "+answer", &fqdn, "A"])?);
    assert_eq!(a, [("A".to_string(), "127.0.0.1".to_string())]);
    let ttl = dig(&dns, &["+noall", "+answer", &target, "A"])?;
    let fields: Vec<&str> = ttl.split_whitespace().collect();
    assert_eq!(fields[1..], ["5", "IN", "A", "127.0.0.1"], "{ttl}");

    // Ready: the gated pod's probe passes and it is answered.
    let ready_at = Instant::now();
    exec(&client, "web-c", "touch /tmp/ready").await?;
    let with_c: BTreeSet<(u16, String)> =
        want.iter().cloned().chain([(p3, target.clone())]).collect();
    wait_srv(&c, &dns, &srv_name, &with_c, Duration::from_secs(30)).await?;
    println!(
        "readiness file touched -> in DNS: {:?} (probe period 1 s, master probes every 500 ms)",
        ready_at.elapsed()
    );
    // Gone: a deleted pod leaves the answer.
    let gone_at = Instant::now();
    client
        .delete(&ObjectRequest {
            kind: "pods".into(),
            namespace: Some("default".into()),
            name: "web-a".into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await?;
    let without_a: BTreeSet<(u16, String)> = [(p2, target.clone()), (p3, target.clone())].into();
    wait_srv(&c, &dns, &srv_name, &without_a, Duration::from_secs(30)).await?;
    println!("pod deleted -> out of DNS: {:?}", gone_at.elapsed());

    // Names that do not exist: NXDOMAIN with the SOA; names that exist
    // without records: NOERROR and nothing; other zones: REFUSED.
    for (name, qtype, want) in [
        (format!("nope.default.svc.{DOMAIN}"), "A", "NXDOMAIN"),
        (format!("_https._tcp.{fqdn}"), "SRV", "NXDOMAIN"),
        (fqdn.clone(), "AAAA", "NOERROR"),
        (format!("svc.{DOMAIN}"), "A", "NOERROR"),
    ] {
        let out = dig(&dns, &[&name, qtype])?;
        assert_eq!(status(&out).0, want, "{name} {qtype}: {out}");
        if want != "REFUSED" {
            assert!(
                out.contains("ANSWER: 0") && out.contains("AUTHORITY: 1") && out.contains("SOA"),
                "{name} {qtype}: {out}"
            );
        }
    }
    let version = dig(&dns, &["version.bind", "TXT", "CH"])?;
    assert_eq!(status(&version).0, "REFUSED", "{version}");

    // Other names go upstream when the client asks for recursion (not
    // authoritative, recursion available), else they are refused.
    let out = dig(&dns, &["db.prod.svc.upstream.test", "A"])?;
    assert_eq!(status(&out), ("NOERROR".into(), false), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(";; flags:") && l.contains(" ra")),
        "{out}"
    );
    let a = answers(&dig(
        &dns,
        &["+noall", "+answer", "db.prod.svc.upstream.test", "A"],
    )?);
    assert_eq!(a, [("A".to_string(), "192.0.2.7".to_string())]);
    let out = dig(&dns, &["nope.prod.svc.upstream.test", "A"])?;
    assert_eq!(status(&out).0, "NXDOMAIN", "{out}");
    assert!(
        out.contains("upstream.test.") && out.contains("SOA"),
        "the upstream's SOA: {out}"
    );
    let out = dig(&dns, &["+norec", "db.prod.svc.upstream.test", "A"])?;
    assert_eq!(status(&out).0, "REFUSED", "{out}");

    // Malformed and unusual packets, by hand.
    let good = packet(7, 0, 1, &fqdn, 1, 1);
    assert_eq!(ask_raw(&dns, &good).await?, Some((7, 0)));
    let mut truncated = good.clone();
    truncated.truncate(20);
    assert_eq!(ask_raw(&dns, &truncated).await?, Some((7, 1)), "FORMERR");
    let mut two = packet(8, 0, 2, &fqdn, 1, 1);
    two.extend_from_slice(&good[12..]);
    assert_eq!(
        ask_raw(&dns, &two).await?,
        Some((8, 1)),
        "two questions: FORMERR"
    );
    let none = packet(9, 0, 0, &fqdn, 1, 1);
    assert_eq!(
        ask_raw(&dns, &none[..12]).await?,
        Some((9, 1)),
        "no question: FORMERR"
    );
    let update = packet(10, 5, 1, &fqdn, 1, 1);
    assert_eq!(
        ask_raw(&dns, &update).await?,
        Some((10, 4)),
        "UPDATE: NOTIMP"
    );
    let mut response = good.clone();
    response[2] |= 0x80;
    assert_eq!(
        ask_raw(&dns, &response).await?,
        None,
        "responses are not answered"
    );
    assert_eq!(
        ask_raw(&dns, &[1, 2, 3]).await?,
        None,
        "shorter than a header"
    );
    let mut lying = good.clone();
    lying[4..12].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let r = ask_raw(&dns, &lying).await?;
    assert_eq!(r, Some((7, 1)), "counts beyond the packet: FORMERR");
    // A compression pointer to itself.
    let mut looped = good[..12].to_vec();
    looped.extend([0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(
        ask_raw(&dns, &looped).await?,
        Some((7, 1)),
        "a pointer loop: FORMERR"
    );
    // Noise: a thousand pseudo-random packets, then the server still answers.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..1000usize {
        let len = 1 + i % 300;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        socket.send_to(&bytes, &dns).await?;
    }
    // A TCP stream that ends mid-message.
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(&dns).await?;
        tcp.write_all(&[0, 200, 1, 2, 3]).await?;
    }
    // The flood may have overflowed the socket's buffer (UDP drops, by
    // design): the server answers again within a few tries.
    let mut answered = None;
    for _ in 0..5 {
        answered = ask_raw(&dns, &good).await?;
        if answered.is_some() {
            break;
        }
    }
    assert_eq!(answered, Some((7, 0)), "still answering");
    assert_eq!(srv(&dns, &srv_name, true)?, without_a);

    // Deleting the Service deletes its Endpoints and its names.
    client
        .delete(&ObjectRequest {
            kind: "services".into(),
            namespace: Some("default".into()),
            name: "web".into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await?;
    c.wait_for(Duration::from_secs(30), "the name gone", |_| {
        let (dns, fqdn) = (dns.clone(), fqdn.clone());
        async move { Ok((status(&dig(&dns, &[&fqdn, "A"])?).0 == "NXDOMAIN").then_some(())) }
    })
    .await?;
    let gone = client
        .get(&ObjectRequest {
            kind: "endpoints".into(),
            namespace: Some("default".into()),
            name: "web".into(),
            resource_version: None,
            grace_period_seconds: None,
        })
        .await;
    assert!(gone.is_err(), "the Endpoints outlived their Service");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_endpoints_refuse_bad_input_by_field() -> Result<()> {
    let c = Cluster::start(1, 0, Timing::default()).await?;
    let client = c.client(0)?;
    let bad = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "9web"},
        "spec": {"ports": [{"port": 80}, {"port": 80}]}
    });
    let e = client
        .create(&WriteRequest { object: bad })
        .await
        .expect_err("invalid");
    let text = e.to_string();
    for field in [
        "metadata.name",
        "spec.selector",
        "spec.ports[0].name",
        "spec.ports[1].port",
    ] {
        assert!(text.contains(field), "{field} not named in {text}");
    }
    let mut unknown = service("web", "web");
    unknown["spec"]["clusterIP"] = json!("10.0.0.1");
    let e = client
        .create(&WriteRequest { object: unknown })
        .await
        .expect_err("unknown field");
    assert!(e.to_string().contains("clusterIP"), "{e}");
    let hand_written = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "web"},
        "subsets": []
    });
    let e = client
        .create(&WriteRequest {
            object: hand_written,
        })
        .await
        .expect_err("endpoints are the controller's");
    assert!(e.to_string().contains("endpoints controller"), "{e}");
    let listed = client
        .list(&api::master::ListRequest {
            kind: "services".into(),
            namespace: Some("default".into()),
            ..Default::default()
        })
        .await?;
    assert!(listed.items.is_empty(), "a refused Service was stored");
    Ok(())
}

/// The addresses busybox `nslookup NAME` printed for the name (not the server's).
fn nslookup_addresses(output: &str) -> BTreeSet<String> {
    output
        .split("Name:")
        .skip(1)
        .flat_map(|block| {
            block
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_finds_a_service_by_name_and_fails_over_when_a_node_is_cut_off() -> Result<()> {
    let timing = Timing::default();
    let (grace_ms, probe_ms) = (timing.node_grace_ms, timing.probe_interval_ms);
    let c = NetCluster::start_with(3, 3, timing, |i| {
        Some(if i == 0 { "role=client" } else { "role=server" }.to_string())
    })
    .await?;
    let client = c.any_client().await?;
    client
        .create(&WriteRequest {
            object: service("web", "web"),
        })
        .await?;
    // Two replicas on the two server nodes, each serving an id of its own,
    // ready once httpd answers.
    let web = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {"role": "server"},
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "main", "image": BUSYBOX,
                        "command": ["sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
                        "ports": [{"name": "http", "containerPort": 8080, "hostPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
                    }]
                }
            }
        }
    });
    client.create(&WriteRequest { object: web }).await?;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "nodeSelector": {"role": "client"},
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]
        }
    });
    client.create(&WriteRequest { object: pod }).await?;
    let servers: BTreeSet<String> = [c.worker_ip(1), c.worker_ip(2)].into();
    // The client resolves both replicas' nodes by a real DNS query.
    let lookup = |name: &'static str| {
        let client = client.clone();
        async move {
            let out = exec(&client, "client", &format!("nslookup {name} || true")).await?;
            Ok::<_, anyhow::Error>(nslookup_addresses(&out))
        }
    };
    c.wait_for(Duration::from_secs(90), "both replicas in DNS", |_| {
        let (lookup, servers) = (lookup, servers.clone());
        async move {
            Ok((lookup("web.default.svc.cluster.local").await.ok() == Some(servers)).then_some(()))
        }
    })
    .await?;
    // The replicas' ids, by node address.
    let pods = client
        .list(&api::master::ListRequest {
            kind: "pods".into(),
            namespace: Some("default".into()),
            label_selector: Some("app=web".into()),
            node_name: None,
        })
        .await?;
    let mut ids = std::collections::BTreeMap::new();
    for item in pods.items {
        let p: api::Pod = serde_json::from_value(item)?;
        let ip = p.status.and_then(|s| s.host_ip).context("a host IP")?;
        let id = exec(&client, &p.metadata.name, "cat /tmp/www/index.html").await?;
        ids.insert(id.trim().to_string(), ip);
    }
    assert_eq!(ids.len(), 2, "{ids:?}");
    // The client reaches a replica by name (busybox wget, glibc's resolver
    // with the pod's search path; without -T, which crashes this busybox).
    let fetch = |name: &'static str| {
        let client = client.clone();
        async move {
            let out = exec(
                &client,
                "client",
                &format!("wget -q -O - http://{name}:8080/"),
            )
            .await?;
            Ok::<_, anyhow::Error>(out.trim().to_string())
        }
    };
    let first = fetch("web.default.svc.cluster.local").await?;
    let first_ip = ids.get(&first).cloned().context("an id of a replica")?;
    let short = fetch("web").await?;
    assert!(ids.contains_key(&short), "{short:?} via the search path");
    // nslookup exits 1 when any of its queries fails (here: the AAAA-less
    // side queries); the answer is what counts.
    let srv = exec(
        &client,
        "client",
        "nslookup -type=SRV _http._tcp.web.default.svc.cluster.local || true",
    )
    .await?;
    assert!(
        srv.lines().filter(|l| l.contains(" 8080 ")).count() == 2,
        "two SRV records with the host port: {srv}"
    );

    // Cut off the node of the replica that answered.
    let node = (1..3)
        .find(|i| c.worker_ip(*i) == first_ip)
        .context("the node of the replica")?;
    let cut = Instant::now();
    c.disconnect(&c.worker_container(node))?;
    let remaining: BTreeSet<String> = servers
        .iter()
        .filter(|ip| **ip != first_ip)
        .cloned()
        .collect();
    c.wait_for(
        Duration::from_secs(30),
        "the cut-off node out of DNS",
        |_| {
            let (lookup, remaining) = (lookup, remaining.clone());
            async move {
                Ok(
                    (lookup("web.default.svc.cluster.local").await.ok() == Some(remaining))
                        .then_some(()),
                )
            }
        },
    )
    .await?;
    let gone_after = cut.elapsed();
    println!(
        "node cut off -> out of DNS after {gone_after:?} (grace {grace_ms} ms, probes every {probe_ms} ms)"
    );
    // The grace period, a probe round, the pass that writes the Endpoints
    // and the watch that rebuilds the zone; generous for a loaded machine.
    assert!(
        gone_after < Duration::from_millis(grace_ms + 2 * probe_ms + 10_000),
        "{gone_after:?}"
    );
    let second = fetch("web.default.svc.cluster.local").await?;
    assert_ne!(second, first, "the client reached the cut-off replica");
    assert!(ids.contains_key(&second), "{second:?}");
    Ok(())
}

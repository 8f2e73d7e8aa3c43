//! Who may call what, on a real cluster: every identity (no token, each
//! role's token, a worker's certificate, a viewer's certificate, the member
//! token with and without a masters' certificate) against every path of the
//! `Master`, `Kv`, `RaftPeer` and `Worker` services and the metrics pages
//! and datasource. Each answer is asserted: allowed (the call passed
//! authorization, whatever the handler then said about the request) or
//! refused with `PermissionDenied`/`Unauthenticated` naming what was
//! needed. The README's access table is this matrix, and the test checks
//! that it is.
//!
//! Then the node-bound cases (NodeRestriction): what a join token and a
//! worker's certificate cannot do to another node.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use api::master::{DrainRequest, JoinRequest, ListRequest, MasterClient};
use api::worker::{Fence, ProbeRequest, WorkerClient};
use serde_json::{Value, json};
use tests::cluster::{Cluster, Timing};
use tests::masters::Masters;

/// The identities of the matrix, in its column order.
const WHO: [&str; 9] = [
    "none",
    "viewer",
    "user",
    "admin",
    "join",
    "worker",
    "viewer-cert",
    "member",
    "masters",
];

/// What each identity presents.
struct Identity {
    token: Option<String>,
    tls: rpc::ClientTls,
    /// For plain HTTP (the pages, the datasource): the certificate and key.
    pem: Option<(Vec<u8>, Vec<u8>)>,
}

fn identity(c: &Cluster, who: &str) -> Result<Identity> {
    let pki = c.pki();
    let worker = c.worker_name(0);
    let worker_dir = pki
        .dir()
        .parent()
        .context("pki dir")?
        .join(format!("node-{worker}"));
    let (token, cert): (
        Option<String>,
        Option<(std::path::PathBuf, std::path::PathBuf)>,
    ) = match who {
        "none" => (None, None),
        "viewer" | "user" | "admin" | "join" => (Some(pki.token(who)?), None),
        "worker" => (
            Some(pki.token("join")?),
            Some((
                worker_dir.join(format!("{worker}.crt")),
                worker_dir.join(format!("{worker}.key")),
            )),
        ),
        "viewer-cert" => {
            pki.issue_into(c.dir(), "grafana", pki::VIEWERS, &["grafana"])?;
            (
                None,
                Some((c.dir().join("grafana.crt"), c.dir().join("grafana.key"))),
            )
        }
        "member" => (Some(pki.token("member")?), None),
        "masters" => (
            Some(pki.token("member")?),
            Some((pki.dir().join("m0.crt"), pki.dir().join("m0.key"))),
        ),
        other => bail!("unknown identity {other}"),
    };
    let (tls, pem) = match cert {
        Some((crt, key)) => (
            pki.client_tls(Some(rpc::Identity::from_files(&crt, &key)?))?,
            Some((std::fs::read(&crt)?, std::fs::read(&key)?)),
        ),
        None => (pki.client_tls(None)?, None),
    };
    Ok(Identity { token, tls, pem })
}

/// What a call got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Through authorization (any answer but a refusal).
    Allowed,
    /// Refused, with the refusal's words.
    Refused(String),
}

/// Calls `path` with `body` as `who`, over the wire.
async fn call(address: &str, who: &Identity, path: &'static str, body: &Value) -> Result<Answer> {
    let (service, name) = path
        .trim_start_matches('/')
        .split_once('/')
        .context("path")?;
    let method: &'static rpc::Method = Box::leak(Box::new(rpc::Method {
        service: Box::leak(service.to_owned().into_boxed_str()),
        name: Box::leak(name.to_owned().into_boxed_str()),
        path,
    }));
    let client = rpc::Client::new(
        address,
        rpc::ClientConfig {
            token: who.token.clone(),
            tls: Some(who.tls.clone()),
            default_timeout: Duration::from_secs(15),
            ..Default::default()
        },
    )?;
    let result = rpc::Transport::call(
        &client,
        method,
        serde_json::to_vec(body)?.into(),
        &rpc::CallOptions::default(),
    )
    .await;
    Ok(match result {
        Ok(_) => Answer::Allowed,
        Err(e)
            if matches!(
                e.code(),
                rpc::Code::PermissionDenied | rpc::Code::Unauthenticated
            ) =>
        {
            Answer::Refused(e.to_string())
        }
        Err(e) if e.status().is_some() => Answer::Allowed,
        Err(e) => bail!("{path} as {:?}: no answer: {e}", who.token.is_some()),
    })
}

/// GETs or POSTs `url` as `who` (the pages and the datasource).
async fn http(url: &str, who: &Identity, post: bool, ca: &[u8]) -> Result<Answer> {
    let mut builder =
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(ca)?]);
    if let Some((crt, key)) = &who.pem {
        let mut pem = crt.clone();
        pem.extend_from_slice(key);
        builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
    }
    let client = builder.build()?;
    let mut request = if post {
        client.post(url).json(&json!({}))
    } else {
        client.get(url)
    };
    if let Some(t) = &who.token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok(match status {
        401 | 403 => Answer::Refused(text),
        200..=299 => Answer::Allowed,
        other => bail!("{url}: unexpected status {other}: {text}"),
    })
}

/// One row of the matrix: a path, what to send, who is let through.
struct Case {
    path: &'static str,
    body: Value,
    allowed: &'static [&'static str],
}

const READERS: &[&str] = &["viewer", "user", "admin", "masters"];
const USERS: &[&str] = &["user", "admin", "masters"];
const ADMINS: &[&str] = &["admin", "masters"];
const MASTERS: &[&str] = &["masters"];

fn master_cases(worker: &str, csr: &str) -> Vec<Case> {
    let case = |path, body, allowed| Case {
        path,
        body,
        allowed,
    };
    let ghost = json!({"node": {
        "name": "ghost", "address": "127.0.0.1:9", "hostIp": "127.0.0.1",
        "capacity": {"cpuMillis": 1000, "memoryBytes": 1000000},
        "allocatable": {"cpuMillis": 1000, "memoryBytes": 1000000},
        "usage": {"cpuMillis": 0, "memoryBytes": 0},
        "conditions": [], "runtimeVersion": "none"}});
    vec![
        case("/Master/get", json!({"kind": "pods", "name": "x"}), READERS),
        case("/Master/list", json!({"kind": "pods"}), READERS),
        case("/Master/watch", json!({}), READERS),
        case("/Master/create", json!({}), USERS),
        case("/Master/apply", json!({}), USERS),
        case(
            "/Master/delete",
            json!({"kind": "pods", "name": "x"}),
            USERS,
        ),
        case("/Master/rollback", json!({}), USERS),
        case("/Master/logs", json!({}), USERS),
        case("/Master/exec", json!({}), USERS),
        case("/Master/drain", json!({"node": "ghost"}), USERS),
        case("/Master/join", ghost, ADMINS),
        case(
            "/Master/bootstrap",
            json!({"node": worker, "csr": csr, "hosts": ["127.0.0.1"]}),
            &["admin"],
        ),
        case(
            "/Master/renew",
            json!({"csr": csr, "hosts": ["127.0.0.1"]}),
            &["worker"],
        ),
        case(
            "/Master/review_access",
            json!({"verb": "get", "kind": "pods"}),
            &["viewer", "user", "admin", "join", "worker", "masters"],
        ),
        case("/Master/prepare_eviction", json!({}), ADMINS),
        case("/Master/figures", json!({}), MASTERS),
        case("/Master/record_metrics", json!({"points": []}), MASTERS),
        case("/Kv/get", json!({"key": "/authz"}), USERS),
        case("/Kv/range", json!({"prefix": "/authz/", "limit": 1}), USERS),
        case("/Kv/watch", json!({}), USERS),
        case("/Kv/status", json!({}), READERS),
        case("/Kv/put", json!({"key": "/authz/k", "value": "v"}), ADMINS),
        case("/Kv/delete", json!({"key": "/authz/k"}), ADMINS),
        case("/Kv/txn", json!({}), ADMINS),
        case(
            "/RaftPeer/deliver",
            json!({"from": "m0", "messages": [], "lifecycle": []}),
            MASTERS,
        ),
    ]
}

fn worker_cases() -> Vec<Case> {
    vec![
        Case {
            path: "/Worker/probe",
            body: json!({}),
            allowed: MASTERS,
        },
        Case {
            path: "/Worker/logs",
            body: json!({}),
            allowed: MASTERS,
        },
        Case {
            path: "/Worker/exec",
            body: json!({}),
            allowed: MASTERS,
        },
    ]
}

/// The matrix as the README shows it.
fn table(rows: &[(String, Vec<bool>)]) -> String {
    let mut out = format!(
        "| path | {} |\n|---|{}\n",
        WHO.join(" | "),
        "---|".repeat(WHO.len())
    );
    for (path, allowed) in rows {
        let cells: Vec<&str> = allowed.iter().map(|a| if *a { "✓" } else { "·" }).collect();
        out.push_str(&format!("| `{path}` | {} |\n", cells.join(" | ")));
    }
    out
}

async fn node_address(c: &Cluster, name: &str) -> Result<String> {
    let nodes = c
        .any_client()
        .await?
        .list(&ListRequest {
            kind: "nodes".into(),
            ..Default::default()
        })
        .await?;
    for n in nodes.items {
        let node: api::Node = serde_json::from_value(n)?;
        if node.metadata.name == name {
            return Ok(node.status.context("status")?.address);
        }
    }
    bail!("node {name} is not registered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identity_against_every_path() -> Result<()> {
    let c = Cluster::start(1, 1, Timing::default()).await?;
    let ca = std::fs::read(c.pki().ca_file())?;
    let who: BTreeMap<&str, Identity> = WHO
        .iter()
        .map(|w| Ok((*w, identity(&c, w)?)))
        .collect::<Result<_>>()?;
    let worker = c.worker_name(0);
    let worker_address = node_address(&c, &worker).await?;
    let csr = pki::KeyRequest::generate("anyone")?.csr_pem;
    let master = c.master_addrs[0].clone();

    let mut rows: Vec<(String, Vec<bool>)> = Vec::new();
    let mut wrong = Vec::new();
    let mut check = |path: String, expected: &[&str], answers: Vec<(&str, Answer)>| {
        let mut allowed = Vec::new();
        for (w, answer) in answers {
            let expect = expected.contains(&w);
            match (&answer, expect) {
                (Answer::Allowed, true) => {}
                (Answer::Refused(why), false) => {
                    // A refusal names what was needed (a role, a
                    // certificate, a token) or the node it was for.
                    let named = ["token", "certificate", "node", "role"]
                        .iter()
                        .any(|n| why.contains(n));
                    if !named {
                        wrong.push(format!("{path} as {w}: refused without naming why: {why}"));
                    }
                }
                (a, e) => wrong.push(format!("{path} as {w}: expected allowed={e}, got {a:?}")),
            }
            allowed.push(answer == Answer::Allowed);
        }
        rows.push((path, allowed));
    };

    for case in master_cases(&worker, &csr) {
        let mut answers = Vec::new();
        for w in WHO {
            answers.push((w, call(&master, &who[w], case.path, &case.body).await?));
        }
        check(case.path.to_string(), case.allowed, answers);
    }
    for case in worker_cases() {
        let mut answers = Vec::new();
        for w in WHO {
            answers.push((
                w,
                call(&worker_address, &who[w], case.path, &case.body).await?,
            ));
        }
        check(format!("worker {}", case.path), case.allowed, answers);
    }
    let pages = [
        (
            format!("https://{master}/metrics"),
            false,
            "master GET /metrics",
            READERS,
        ),
        (
            format!("https://{}/metrics", c.grafana_addrs[0]),
            true,
            "Grafana datasource POST /metrics",
            READERS,
        ),
        (
            format!("https://{worker_address}/metrics"),
            false,
            "worker GET /metrics",
            &["viewer-cert", "masters"][..],
        ),
    ];
    for (url, post, name, expected) in pages {
        let mut answers = Vec::new();
        for w in WHO {
            answers.push((w, http(&url, &who[w], post, &ca).await?));
        }
        check(name.to_string(), expected, answers);
    }
    let table = table(&rows);
    eprintln!("{table}");
    ensure!(wrong.is_empty(), "{}\n{table}", wrong.join("\n"));
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    ensure!(
        readme.contains(&table),
        "README.md's access table is not this matrix; put it there:\n{table}"
    );
    Ok(())
}

/// `r` is a `PermissionDenied` whose message contains `why`.
fn denied<T>(r: Result<T, rpc::Error>, why: &str) -> Result<()> {
    match r {
        Err(e) if e.code() == rpc::Code::PermissionDenied && e.to_string().contains(why) => Ok(()),
        Err(e) => bail!("refused, but not for {why:?}: {e}"),
        Ok(_) => bail!("accepted; expected a refusal for {why:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_or_a_workers_certificate_cannot_act_for_another_node() -> Result<()> {
    let c = Cluster::start(1, 2, Timing::default()).await?;
    let (a, b) = (c.worker_name(0), c.worker_name(1));
    let b_address = node_address(&c, &b).await?;
    let master = &c.master_addrs[0];
    let join_only = identity(&c, "join")?;
    let worker_a = identity(&c, "worker")?;
    let client = |who: &Identity| -> Result<MasterClient> {
        Ok(MasterClient::new(rpc::Client::new(
            master,
            rpc::ClientConfig {
                token: who.token.clone(),
                tls: Some(who.tls.clone()),
                default_timeout: Duration::from_secs(10),
                ..Default::default()
            },
        )?))
    };
    let b_node = {
        let nodes = c
            .any_client()
            .await?
            .list(&ListRequest {
                kind: "nodes".into(),
                ..Default::default()
            })
            .await?;
        nodes
            .items
            .into_iter()
            .map(serde_json::from_value::<api::Node>)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .find(|n| n.metadata.name == b)
            .context("node b")?
    };
    let mut b_info = api::NodeInfo {
        name: b.clone(),
        address: "127.0.0.1:9".into(),
        host_ip: "127.0.0.1".into(),
        labels: Default::default(),
        capacity: Default::default(),
        allocatable: Default::default(),
        usage: Default::default(),
        conditions: Vec::new(),
        runtime_version: "none".into(),
    };
    b_info.capacity = b_node.status.as_ref().context("status")?.capacity;
    let csr = pki::KeyRequest::generate(&b)?.csr_pem;

    // A join token alone: no certificate for a live node's name, no
    // re-registration of one, no drain, no Raft.
    let as_join = client(&join_only)?;
    denied(
        as_join
            .bootstrap(&api::master::BootstrapRequest {
                node: b.clone(),
                csr: csr.clone(),
                hosts: vec!["127.0.0.1".into()],
            })
            .await,
        "is registered and Ready",
    )?;
    denied(
        as_join
            .join(&JoinRequest {
                node: b_info.clone(),
                fence: None,
            })
            .await,
        "a join token alone may not register",
    )?;
    denied(
        as_join
            .drain(&DrainRequest {
                node: b.clone(),
                force: true,
                disable_eviction: false,
            })
            .await,
        "a join token alone may not drain",
    )?;
    denied(
        as_join
            .prepare_eviction(&api::master::PrepareEvictionRequest {})
            .await,
        "a join token alone may not prepare an eviction",
    )?;
    let raft = kvs::api::RaftPeerClient::new(rpc::Client::new(
        master,
        rpc::ClientConfig {
            token: join_only.token.clone(),
            tls: Some(join_only.tls.clone()),
            ..Default::default()
        },
    )?);
    denied(
        raft.deliver(&kvs::api::MessageBatch {
            from: "m0".into(),
            messages: Vec::new(),
            lifecycle: Vec::new(),
        })
        .await,
        "requires a client certificate of mkube:masters",
    )?;
    // A masters' certificate is not to be had: whatever a bootstrap asks
    // for, the certificate is a worker's; and not for the masters' name.
    denied(
        as_join
            .bootstrap(&api::master::BootstrapRequest {
                node: "fresh".into(),
                csr: csr.clone(),
                hosts: vec![pki::MASTERS_SERVER_NAME.into()],
            })
            .await,
        "masters' name",
    )?;
    let fresh = as_join
        .bootstrap(&api::master::BootstrapRequest {
            node: "fresh".into(),
            csr: pki::KeyRequest::generate("m9")?.csr_pem,
            hosts: vec!["127.0.0.1".into()],
        })
        .await?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(fresh.certificate.as_bytes())?;
    let subject = pem.parse_x509()?.subject().to_string();
    ensure!(
        subject.contains("CN=fresh") && subject.contains("O=mkube:workers"),
        "{subject}"
    );

    // Worker A's certificate acts for A only.
    let as_a = client(&worker_a)?;
    denied(
        as_a.join(&JoinRequest {
            node: b_info.clone(),
            fence: None,
        })
        .await,
        &format!("node {a:?} may not register node {b:?}"),
    )?;
    denied(
        as_a.drain(&DrainRequest {
            node: b.clone(),
            force: true,
            disable_eviction: false,
        })
        .await,
        &format!("node {a:?} may not drain node {b:?}"),
    )?;
    denied(
        as_a.prepare_eviction(&api::master::PrepareEvictionRequest {})
            .await,
        "is not on this master's machine",
    )?;

    // A probe for node B sent to worker A is refused (with the masters'
    // certificate: the worker checks the name, not only the caller).
    let masters = identity(&c, "masters")?;
    let a_address = node_address(&c, &a).await?;
    let to_a = WorkerClient::new(rpc::Client::new(
        &a_address,
        rpc::ClientConfig {
            token: masters.token.clone(),
            tls: Some(masters.tls.clone()),
            ..Default::default()
        },
    )?);
    let probe = to_a
        .probe(&ProbeRequest {
            node: b.clone(),
            fence: Fence {
                epoch: u64::MAX,
                term: u64::MAX,
            },
            version: 1,
            base_version: None,
            upserts: Vec::new(),
            deletes: Vec::new(),
            delete_grace: Default::default(),
            events_after: 0,
            more: false,
        })
        .await;
    let e = probe.expect_err("worker A answered a probe for node B");
    ensure!(e.to_string().contains("this probe is for node"), "{e}");

    // And a master calling B's address checks that B answers: a client
    // expecting A's certificate is refused by B's.
    let expecting_a = masters.tls.expecting_peer(&a, pki::WORKERS)?;
    let wrong_peer = WorkerClient::new(rpc::Client::new(
        &b_address,
        rpc::ClientConfig {
            token: masters.token.clone(),
            tls: Some(expecting_a),
            ..Default::default()
        },
    )?);
    let e = wrong_peer
        .logs(&serde_json::from_value(
            json!({"namespace": "default", "pod": "x"}),
        )?)
        .await
        .expect_err("B's certificate is not A's");
    ensure!(e.to_string().contains("not of"), "{e}");

    // A worker's certificate names an address a master may share (on Azure a
    // master's VM runs a worker): clients of the masters (mkctl, workers,
    // masters) check the masters' group too. Worker A's listener, dialled as
    // if it were a master, passes the CA and name check alone, and fails
    // the group check.
    let plain = MasterClient::new(rpc::Client::new(
        &a_address,
        rpc::ClientConfig {
            token: join_only.token.clone(),
            tls: Some(c.pki().client_tls(None)?),
            ..Default::default()
        },
    )?);
    let e = plain
        .review_access(&api::master::AccessReviewRequest {
            verb: "get".into(),
            kind: "pods".into(),
        })
        .await
        .expect_err("a worker serves no Master API");
    ensure!(e.status().is_some(), "the handshake itself passed: {e}");
    let as_client_of_masters = MasterClient::new(rpc::Client::new(
        &a_address,
        rpc::ClientConfig {
            token: join_only.token.clone(),
            tls: Some(c.pki().client_tls(None)?.expecting_group(pki::MASTERS)?),
            ..Default::default()
        },
    )?);
    let e = as_client_of_masters
        .review_access(&api::master::AccessReviewRequest {
            verb: "get".into(),
            kind: "pods".into(),
        })
        .await
        .expect_err("a worker is not a master");
    ensure!(
        e.status().is_none() && e.to_string().contains("not of a member in mkube:masters"),
        "{e}"
    );

    // Nothing changed: B is still Ready at its address, uncordoned.
    let still = node_address(&c, &b).await?;
    ensure!(still == b_address, "B moved to {still}");
    Ok(())
}

/// Applies a sleeping busybox pod `name` and waits until it is Running.
async fn run_pod(c: &Cluster, name: &'static str) -> Result<()> {
    c.any_client()
        .await?
        .apply(&api::master::WriteRequest {
            object: json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name},
                "spec": {"containers": [{"name": "main", "image": tests::images::BUSYBOX, "command": ["sleep", "3600"]}]}
            }),
        })
        .await?;
    c.wait_for(
        Duration::from_secs(60),
        &format!("pod `{name}` Running"),
        |c| async move {
            Ok(pod_phases(c)
                .await?
                .contains(&(name.into(), "Running".into()))
                .then_some(()))
        },
    )
    .await
}

/// Every pod: (name, phase).
async fn pod_phases(c: &Cluster) -> Result<Vec<(String, String)>> {
    let pods = c
        .any_client()
        .await?
        .list(&ListRequest {
            kind: "pods".into(),
            ..Default::default()
        })
        .await?;
    Ok(pods
        .items
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["status"]["phase"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_only_the_ca_and_the_join_token_bootstraps_runs_pods_and_renews() -> Result<()>
{
    const VALIDITY_S: u64 = 12;
    let flags = [
        "--worker-cert-validity-s".to_owned(),
        VALIDITY_S.to_string(),
    ];
    let mut c = Cluster::start_with(1, 0, Timing::default(), &flags).await?;
    c.add_worker(0)?;
    let worker = c.worker_name(0);
    let pki = c.pki();
    let dir = pki
        .dir()
        .parent()
        .context("pki dir")?
        .join(format!("node-{worker}"));
    c.wait_for(
        Duration::from_secs(30),
        "the bootstrapped worker Ready",
        |c| async move { Ok((c.ready_nodes().await?.len() == 1).then_some(())) },
    )
    .await?;
    let crt = dir.join(format!("{worker}.crt"));
    let first = std::fs::read_to_string(&crt)?;
    let first_expiry = pki::not_after(&first)?;

    // Nothing on the worker holds the CA key or the member token: not its
    // files, not its command line, not its environment.
    let ca_key = std::fs::read_to_string(pki.dir().join("ca.key"))?;
    let ca_key_body: String = ca_key.lines().filter(|l| !l.starts_with("-----")).collect();
    let member = pki.token("member")?;
    let mut files: Vec<String> = Vec::new();
    for entry in walk(&dir)? {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        let flat: String = text.lines().collect();
        ensure!(
            !flat.contains(&ca_key_body) && !text.contains(&member),
            "{} holds a master's secret",
            entry.display()
        );
        files.push(entry.strip_prefix(&dir)?.display().to_string());
    }
    let mut expected = vec![
        "ca.crt".to_string(),
        format!("{worker}.crt"),
        format!("{worker}.key"),
        "tokens/join".to_string(),
    ];
    files.sort();
    expected.sort();
    ensure!(files == expected, "the worker's directory holds {files:?}");
    let pid = c.worker_pid(0).context("worker pid")?;
    for what in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{what}"))?;
        let text = String::from_utf8_lossy(&bytes);
        ensure!(
            !text.contains(&member) && !text.contains("ca.key"),
            "the worker's {what} names a master's secret: {text}"
        );
    }

    // It runs pods.
    run_pod(&c, "before").await?;

    // It renews before the first certificate expires, without a restart,
    // and after that certificate has expired new connections are served
    // with the renewed one.
    c.wait_for(
        Duration::from_secs(VALIDITY_S * 2),
        "the worker's certificate renewed",
        |_| {
            let (crt, first) = (crt.clone(), first.clone());
            async move { Ok((std::fs::read_to_string(&crt)? != first).then_some(())) }
        },
    )
    .await?;
    while std::time::SystemTime::now() < first_expiry + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        c.worker_pid(0) == Some(pid) && std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the worker restarted"
    );
    let masters = identity(&c, "masters")?;
    let address = node_address(&c, &worker).await?;
    let fresh = WorkerClient::new(rpc::Client::new(
        &address,
        rpc::ClientConfig {
            token: masters.token.clone(),
            tls: Some(masters.tls.expecting_peer(&worker, pki::WORKERS)?),
            ..Default::default()
        },
    )?);
    let e = fresh
        .logs(&serde_json::from_value(
            json!({"namespace": "default", "pod": "nope"}),
        )?)
        .await
        .expect_err("no such pod");
    ensure!(
        e.code() == rpc::Code::NotFound,
        "a new connection after the first certificate expired: {e}"
    );
    run_pod(&c, "after").await?;
    ensure!(
        c.ready_nodes().await?.len() == 1,
        "the node is no longer Ready"
    );
    Ok(())
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

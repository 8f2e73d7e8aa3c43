//! `mkube-local up|down`: a local mkube cluster on this machine, for
//! people (`scripts/demo` runs `up`; `scripts/demo down` tears it down).
//!
//! `up` starts three masters (127.0.0.1:7000-7002) and two workers as
//! background processes, each worker its own node with its own loopback
//! address (127.0.0.11, 127.0.0.12) on which it publishes its pods' host
//! ports; everything speaks TLS with a cluster CA created in the state
//! directory's `pki/` on the first `up` (mkube-pki's layout: the CA, a
//! certificate per member, role tokens, keys 0600); builds the demo image
//! locally (nothing is pulled); gives each worker a directory of its own
//! holding only the CA certificate and the join token (it has a master sign
//! its certificate); writes an mkctl context `mkube-local` (the CA and the
//! admin token) and a Prometheus configuration reading the viewer token;
//! deploys `hello`, two busybox httpd replicas
//! on host port 8080; waits until both answer HTTP; and prints how to use
//! and remove it all. Running it again finds the running cluster and only
//! re-applies the demo. `down` stops the processes and removes the
//! containers of its nodes, the image if `up` built it, the context and
//! its state directory (`$MKUBE_LOCAL_DIR`, default `~/.mkube/local`):
//! nothing it did not create.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::master::{ListRequest, MasterClient};
use serde::{Deserialize, Serialize};
use tests::images::{BUSYBOX, ensure_busybox, image_exists};

const MASTERS: [&str; 3] = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"];
const WORKERS: [(&str, &str, &str); 2] = [
    ("local-w1", "127.0.0.1:10251", "127.0.0.11"),
    ("local-w2", "127.0.0.1:10252", "127.0.0.12"),
];
const CONTEXT: &str = "mkube-local";
/// Master `i` serves the Grafana JSON datasource on this port + `i`.
const GRAFANA_PORT: usize = 3100;
/// Master `i` answers DNS on 127.0.0.1:(DNS_PORT + i), UDP and TCP.
const DNS_PORT: usize = 5300;

/// What `up` created, for `down`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    pids: Vec<u32>,
    built_image: bool,
}

fn state_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("MKUBE_LOCAL_DIR") {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME").context("HOME is not set (or set MKUBE_LOCAL_DIR)")?;
    Ok(PathBuf::from(home).join(".mkube").join("local"))
}

fn read_state(dir: &Path) -> Result<Option<State>> {
    match std::fs::read_to_string(dir.join("state.json")) {
        Ok(t) => Ok(Some(serde_json::from_str(&t).context("state.json")?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn bin(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it (scripts/demo does)",
            path.display()
        );
    }
    Ok(path)
}

/// The cluster's PKI directory: created on the first `up` (CA, tokens, a
/// certificate for every master and worker), reused afterwards.
fn security(dir: &Path) -> Result<PathBuf> {
    let pki_dir = dir.join("pki");
    let ca = if pki_dir.join("ca.crt").exists() {
        pki::Ca::load(&pki_dir)?
    } else {
        let ca = pki::Ca::generate("mkube-local")?;
        ca.write(&pki_dir)?;
        ca
    };
    pki::init_tokens(&pki_dir)?;
    for (i, _) in MASTERS.iter().enumerate() {
        let name = format!("m{i}");
        if !pki_dir.join(format!("{name}.crt")).exists() {
            let hosts = vec!["127.0.0.1".into(), "localhost".into(), name.clone()];
            ca.issue(&pki::Request::new(&name, pki::MASTERS, hosts))?
                .write(&pki_dir, &name)?;
        }
    }
    // Prometheus' certificate, for the workers' /metrics (which take no
    // token); it scrapes the masters with the viewer token.
    if !pki_dir.join("prometheus.crt").exists() {
        ca.issue(&pki::Request::new(
            "prometheus",
            pki::VIEWERS,
            vec!["prometheus".into()],
        ))?
        .write(&pki_dir, "prometheus")?;
    }
    Ok(pki_dir)
}

/// A worker's own directory, as on a worker VM: the CA certificate and the
/// join token only; the worker has a master sign its certificate into it.
fn worker_dir(dir: &Path, pki_dir: &Path, name: &str) -> Result<PathBuf> {
    let node_dir = dir.join(format!("node-{name}"));
    std::fs::create_dir_all(node_dir.join("tokens"))?;
    std::fs::copy(pki_dir.join("ca.crt"), node_dir.join("ca.crt"))?;
    let join = std::fs::read_to_string(pki::token_path(pki_dir, "join")?)?;
    pki::write_secret(&node_dir.join("tokens").join("join"), &join)?;
    Ok(node_dir)
}

/// Prometheus' scrape configuration: the masters with the viewer token,
/// the workers with the viewer certificate; no secret in the file itself.
fn prometheus_config(dir: &Path, pki_dir: &Path) -> Result<PathBuf> {
    let quoted = |a: &[&str]| {
        a.iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let workers: Vec<&str> = WORKERS.iter().map(|(_, listen, _)| *listen).collect();
    let ca = pki_dir.join("ca.crt");
    let config = format!(
        "# Written by scripts/demo: prometheus --config.file=THIS
scrape_configs:
  - job_name: mkube-masters
    scheme: https
    tls_config: {{ca_file: '{ca}'}}
    authorization: {{credentials_file: '{viewer}'}}
    static_configs: [{{targets: [{masters}]}}]
  - job_name: mkube-workers
    scheme: https
    tls_config: {{ca_file: '{ca}', cert_file: '{crt}', key_file: '{key}'}}
    static_configs: [{{targets: [{workers}]}}]
",
        ca = ca.display(),
        viewer = pki::token_path(pki_dir, "viewer")?.display(),
        masters = quoted(&MASTERS),
        workers = quoted(&workers),
        crt = pki_dir.join("prometheus.crt").display(),
        key = pki_dir.join("prometheus.key").display(),
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// What this program calls the masters with: the CA and the user token.
struct Creds {
    token: String,
    tls: rpc::ClientTls,
}

fn creds(pki_dir: &Path) -> Result<Creds> {
    let token = pki::read_tokens(&pki::token_path(pki_dir, "user")?)?
        .into_iter()
        .next()
        .context("the user token file is empty")?;
    let roots = rpc::Roots::from_file(&pki_dir.join("ca.crt"))?;
    Ok(Creds {
        token,
        tls: rpc::ClientTls::new(&roots, None)?,
    })
}

/// Starts `bin` detached from this process (its own process group), logging to `log`.
fn spawn(bin: &Path, args: &[&str], log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args(args)
        .env_remove("MKUBE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(child.id())
}

fn client(addr: &str, creds: &Creds) -> Result<MasterClient> {
    let config = rpc::ClientConfig {
        token: Some(creds.token.clone()),
        tls: Some(creds.tls.clone()),
        default_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    Ok(MasterClient::new(rpc::Client::new(addr, config)?))
}

async fn ready_nodes(creds: &Creds) -> usize {
    for addr in MASTERS {
        let Ok(c) = client(addr, creds) else { continue };
        if let Ok(list) = c
            .list(&ListRequest {
                kind: "nodes".into(),
                ..Default::default()
            })
            .await
        {
            return list
                .items
                .into_iter()
                .filter_map(|v| serde_json::from_value::<api::Node>(v).ok())
                .filter(|n| n.is_ready())
                .count();
        }
    }
    0
}

async fn wait<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    check: impl Fn() -> F,
) -> Result<()> {
    let deadline = Instant::now() + within;
    while !check().await {
        if Instant::now() > deadline {
            bail!(
                "{what} did not happen within {within:?}; see the logs in {}",
                state_dir()?.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

fn http_ok(host: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("{host}:8080").parse().expect("an address"),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut body = String::new();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
        && s.read_to_string(&mut body).is_ok()
        && body.ends_with("ok\n")
}

fn mkctl(args: &[&str]) -> Result<()> {
    let status = Command::new(bin("mkctl")?).args(args).status()?;
    if !status.success() {
        bail!("mkctl {} failed", args.join(" "));
    }
    Ok(())
}

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

async fn up() -> Result<()> {
    let dir = state_dir()?;
    std::fs::create_dir_all(&dir)?;
    let pki_dir = security(&dir)?;
    let pki_arg = pki_dir.display().to_string();
    let creds = std::sync::Arc::new(creds(&pki_dir)?);
    let mut state = read_state(&dir)?.unwrap_or_default();
    if !state.pids.is_empty() && state.pids.iter().all(|p| alive(*p)) {
        println!("the local cluster is already running");
    } else {
        for p in state.pids.drain(..) {
            let _ = Command::new("kill").arg(p.to_string()).status();
        }
        for addr in MASTERS.iter().chain(WORKERS.iter().map(|(_, a, _)| a)) {
            if TcpStream::connect(addr).is_ok() {
                bail!(
                    "{addr} is already in use; is another cluster running? (scripts/demo down stops ours)"
                );
            }
        }
        state.built_image = !image_exists(BUSYBOX)?;
        ensure_busybox()?;
        let peers: Vec<String> = MASTERS
            .iter()
            .enumerate()
            .map(|(i, a)| format!("m{i}={a}"))
            .collect();
        let exports = dir.join("exports").display().to_string();
        for (i, addr) in MASTERS.iter().enumerate() {
            let name = format!("m{i}");
            let metrics_db = dir.join(format!("metrics-{name}.db")).display().to_string();
            let grafana = format!("127.0.0.1:{}", GRAFANA_PORT + i);
            let dns = format!("127.0.0.1:{}", DNS_PORT + i);
            let args = [
                "--name",
                &name,
                "--listen",
                addr,
                "--peers",
                &peers.join(","),
                "--export-dir",
                &exports,
                "--metrics-db",
                &metrics_db,
                "--grafana-listen",
                &grafana,
                "--dns-listen",
                &dns,
                "--pki-dir",
                &pki_arg,
            ];
            state.pids.push(spawn(
                &bin("mkube-master")?,
                &args,
                &dir.join(format!("{name}.log")),
            )?);
        }
        let masters = MASTERS.join(",");
        for (name, listen, ip) in WORKERS {
            let node_dir = worker_dir(&dir, &pki_dir, name)?.display().to_string();
            let args = [
                "--name",
                name,
                "--listen",
                listen,
                "--host-ip",
                ip,
                "--publish-ip",
                ip,
                "--masters",
                &masters,
                "--pki-dir",
                &node_dir,
                // The demo leaves the host's firewall as it found it (its
                // listeners are on loopback, out of pods' reach anyway).
                "--pod-isolation",
                "off",
            ];
            state.pids.push(spawn(
                &bin("mkube-worker")?,
                &args,
                &dir.join(format!("{name}.log")),
            )?);
        }
        std::fs::write(dir.join("state.json"), serde_json::to_string(&state)?)?;
        wait(
            "both workers becoming Ready nodes",
            Duration::from_secs(60),
            || {
                let creds = std::sync::Arc::clone(&creds);
                async move { ready_nodes(&creds).await == WORKERS.len() }
            },
        )
        .await?;
    }
    mkctl(&[
        "config",
        "set-context",
        CONTEXT,
        "--servers",
        &MASTERS.join(","),
        "--token-file",
        &pki::token_path(&pki_dir, "admin")?.display().to_string(),
        "--certificate-authority",
        &pki_dir.join("ca.crt").display().to_string(),
    ])?;
    let prometheus = prometheus_config(&dir, &pki_dir)?;
    let demo = dir.join("hello.yaml");
    std::fs::write(&demo, DEMO)?;
    mkctl(&["apply", "-f", &demo.display().to_string()])?;
    wait(
        "the demo answering HTTP on both workers",
        Duration::from_secs(90),
        || async { WORKERS.iter().all(|(_, _, ip)| http_ok(ip)) },
    )
    .await?;
    println!(
        "
mkube is up: 3 masters ({}), 2 workers ({}), mkctl context {CONTEXT:?}.
The demo Deployment \"hello\" answers on every worker:
    curl http://127.0.0.11:8080/   curl http://127.0.0.12:8080/
and its Service \"hello\" by name from every master's DNS server:
    target/release/mkctl get endpoints hello
    dig @127.0.0.1 -p {DNS_PORT} +short SRV _http._tcp.hello.default.svc.cluster.local
Everything speaks TLS with the cluster CA {ca} and role tokens in {tokens}/:
the context {CONTEXT:?} holds the admin token; give Grafana and Prometheus the
viewer token ({tokens}/viewer), which can read but not change anything.
Metrics: Grafana's JSON datasource at https://127.0.0.1:{GRAFANA_PORT} (deploy/grafana/);
Prometheus text at https://127.0.0.1:7000/metrics, scraped with
    prometheus --config.file={prometheus}
Try:
    target/release/mkctl get pods -o wide
    target/release/mkctl scale deploy/hello --replicas 3   # the third pod stays Unschedulable:
                                                           # each worker has one host port 8080
    target/release/mkctl cluster status
Logs are in {}. Remove everything with: scripts/demo down",
        MASTERS.join(", "),
        WORKERS
            .iter()
            .map(|(n, _, ip)| format!("{n} at {ip}"))
            .collect::<Vec<_>>()
            .join(", "),
        dir.display(),
        ca = pki_dir.join("ca.crt").display(),
        tokens = pki_dir.join("tokens").display(),
        prometheus = prometheus.display(),
    );
    Ok(())
}

fn down() -> Result<()> {
    let dir = state_dir()?;
    let Some(state) = read_state(&dir)? else {
        println!("no local cluster (nothing in {})", dir.display());
        return Ok(());
    };
    for p in &state.pids {
        if alive(*p) {
            let _ = Command::new("kill").arg(p.to_string()).status();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in &state.pids {
        if alive(*p) {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
    }
    for (name, _, _) in WORKERS {
        tests::cluster::remove_node_containers(name);
    }
    if state.built_image {
        let _ = Command::new("docker")
            .args(["rmi", BUSYBOX])
            .stdout(Stdio::null())
            .status();
    }
    let _ = Command::new(bin("mkctl")?)
        .args(["config", "delete-context", CONTEXT])
        .stdout(Stdio::null())
        .status();
    std::fs::remove_dir_all(&dir)?;
    println!("the local cluster is gone");
    Ok(())
}

fn main() -> Result<()> {
    let action = std::env::args().nth(1).unwrap_or_default();
    tests::block_on(async move {
        match action.as_str() {
            "up" => up().await,
            "down" => down(),
            _ => bail!("usage: mkube-local up|down"),
        }
    })
}

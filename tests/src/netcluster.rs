//! A whole mkube cluster as containers on a private Docker network: each
//! master and each worker is its own host with its own address, so that
//! `docker network disconnect` cuts one off as a real partition would
//! (a worker's pods share its network namespace and are cut off with it).
//!
//! The containers run an image of the workspace's own binaries
//! ([`crate::images::ensure_mkube_image`]); workers drive the host's Docker
//! daemon through its socket. Every name carries the cluster's id, and
//! dropping the cluster removes its containers, its pods' containers and
//! its networks, nothing else.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::master::MasterClient;

use crate::cluster::{Timing, bin_dir, remove_node_containers};
use crate::masters::{Masters, client_at};
use crate::testpki::{Credentials, TestPki};

const MASTER_PORT: u16 = 7000;
const WORKER_PORT: u16 = 10250;
const DNS_PORT: u16 = 53;

/// Runs the docker CLI; its stdout, trimmed.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Masters and workers as containers.
pub struct NetCluster {
    id: String,
    /// The private network.
    pub network: String,
    prefix: String,
    image: String,
    dir: std::path::PathBuf,
    masters: usize,
    workers: usize,
    timing: Timing,
    pki: TestPki,
    creds: Credentials,
    worker_labels: Vec<Option<String>>,
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for i in 0..self.workers {
            let _ = docker(&["rm", "-f", &self.worker_container(i)]);
            remove_node_containers(&self.worker_name(i));
        }
        for i in 0..self.masters {
            let _ = docker(&["rm", "-f", &self.master_container(i)]);
        }
        let _ = docker(&["network", "rm", &self.network]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pseudo_random() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (nanos ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0x2545_F491_4F6C_DD1D)
}

impl NetCluster {
    /// Starts `masters` masters and `workers` workers on a new network;
    /// returns once a leader leads and every worker is a Ready node.
    pub async fn start(masters: usize, workers: usize, timing: Timing) -> Result<NetCluster> {
        NetCluster::start_with(masters, workers, timing, |_| None).await
    }

    /// [`NetCluster::start`], worker `i` with the node labels `labels(i)`
    /// (`k=v,k2=v2`).
    pub async fn start_with(
        masters: usize,
        workers: usize,
        timing: Timing,
        labels: impl Fn(usize) -> Option<String>,
    ) -> Result<NetCluster> {
        crate::images::ensure_busybox()?;
        let image =
            crate::images::ensure_mkube_image(&bin_dir()?, &["mkube-master", "mkube-worker"])?;
        let id = format!("{:06x}", pseudo_random() & 0xff_ffff);
        let network = format!("mkube-e2e-{id}");
        // A /24 of our own (a fixed address per container needs a subnet).
        let mut prefix = None;
        for attempt in 0..20u64 {
            let r = pseudo_random().wrapping_add(attempt.wrapping_mul(7919));
            let p = format!("10.{}.{}", 200 + r % 50, (r >> 8) % 250);
            if docker(&[
                "network",
                "create",
                "--subnet",
                &format!("{p}.0/24"),
                &network,
            ])
            .is_ok()
            {
                prefix = Some(p);
                break;
            }
        }
        let prefix = prefix.context("no free private subnet for the cluster's network")?;
        let dir = std::env::temp_dir().join(format!("mkube-netcluster-{id}"));
        std::fs::create_dir_all(dir.join("exports"))?;
        let pki = TestPki::create(&dir.join("pki"))?;
        let creds = pki.user()?;
        let c = NetCluster {
            pki,
            creds,
            id,
            network,
            prefix,
            image,
            dir,
            masters,
            workers,
            timing,
            worker_labels: (0..workers).map(labels).collect(),
        };
        for i in 0..masters {
            c.start_master(i)?;
        }
        c.wait_for(
            Duration::from_secs(30),
            "every master a voter under one leader",
            |c| async move { Ok(c.settled().await.then_some(())) },
        )
        .await?;
        for i in 0..workers {
            c.start_worker(i)?;
        }
        c.wait_for(
            Duration::from_secs(40),
            "every worker Ready",
            |c| async move { Ok((c.ready_nodes().await?.len() == workers).then_some(())) },
        )
        .await?;
        Ok(c)
    }

    /// Master `i`'s container.
    pub fn master_container(&self, i: usize) -> String {
        format!("mkube-e2e-{}-m{i}", self.id)
    }

    /// Worker `i`'s container.
    pub fn worker_container(&self, i: usize) -> String {
        format!("mkube-e2e-{}-w{i}", self.id)
    }

    /// Worker `i`'s node name.
    pub fn worker_name(&self, i: usize) -> String {
        format!("w{i}-{}", self.id)
    }

    /// Master `i`'s address on the network.
    pub fn master_ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }

    /// Worker `i`'s address on the network (its pods' host ports answer there).
    pub fn worker_ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 50 + i)
    }

    fn run_container(
        &self,
        name: &str,
        ip: &str,
        extra: &[&str],
        command: &[String],
    ) -> Result<()> {
        let _ = docker(&["rm", "-f", name]);
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            &self.network,
            "--ip",
            ip,
            "--label",
            "mkube-e2e=1",
            "-e",
            "RUST_LOG=info,hickory_server=warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.image.clone());
        args.extend(command.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&refs)?;
        Ok(())
    }

    /// (Re)starts master `i` as a new, empty incarnation.
    pub fn start_master(&self, i: usize) -> Result<()> {
        let peers: Vec<String> = (0..self.masters)
            .map(|j| format!("m{j}={}", self.master_addr(j)))
            .collect();
        let t = &self.timing;
        let exports = format!("{}:/exports", self.dir.join("exports").display());
        let pki = format!("{}:/pki:ro", self.pki.dir().display());
        let name = format!("m{i}");
        self.pki
            .issue(&name, pki::MASTERS, &[&self.master_ip(i), &name])?;
        let command: Vec<String> = [
            "/bin/mkube-master",
            "--name",
            &format!("m{i}"),
            "--listen",
            &format!("0.0.0.0:{MASTER_PORT}"),
            "--advertise",
            &self.master_addr(i),
            "--peers",
            &peers.join(","),
            "--export-dir",
            "/exports",
            "--export-interval-s",
            "2",
            "--probe-interval-ms",
            &t.probe_interval_ms.to_string(),
            "--node-grace-ms",
            &t.node_grace_ms.to_string(),
            "--eviction-timeout-ms",
            &t.eviction_timeout_ms.to_string(),
            "--resync-ms",
            "1000",
            "--dns-listen",
            &format!("0.0.0.0:{DNS_PORT}"),
            "--pki-dir",
            "/pki",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.run_container(
            &self.master_container(i),
            &self.master_ip(i),
            &["-v", &exports, "-v", &pki],
            &command,
        )
    }

    /// Starts worker `i`; its pods join its network namespace.
    pub fn start_worker(&self, i: usize) -> Result<()> {
        let masters: Vec<String> = (0..self.masters).map(|j| self.master_addr(j)).collect();
        let ip = self.worker_ip(i);
        let pki_dir = self.pki.worker_dir(&self.worker_name(i))?;
        let command: Vec<String> = [
            "/bin/mkube-worker",
            "--name",
            &self.worker_name(i),
            "--listen",
            &format!("0.0.0.0:{WORKER_PORT}"),
            "--advertise",
            &format!("{ip}:{WORKER_PORT}"),
            "--host-ip",
            &ip,
            "--pod-network",
            &format!("container:{}", self.worker_container(i)),
            "--masters",
            &masters.join(","),
            "--sync-interval-ms",
            "200",
            "--backoff-initial-ms",
            "200",
            "--stats-interval-ms",
            "1000",
            "--rejoin-after-ms",
            "2000",
            "--pki-dir",
            "/node-pki",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut command = command;
        if let Some(labels) = self.worker_labels.get(i).cloned().flatten() {
            command.extend(["--labels".to_string(), labels]);
        }
        // The worker's pods share its network namespace, and with it its
        // resolver (Docker refuses a resolver of their own there): the
        // masters, as a VM's resolver would be, with Kubernetes' search path.
        let mut extra: Vec<String> = vec![
            "-v".into(),
            format!("{}:/node-pki", pki_dir.display()),
            "-v".into(),
            "/var/run/docker.sock:/var/run/docker.sock".into(),
        ];
        for j in 0..self.masters {
            extra.extend(["--dns".into(), self.master_ip(j)]);
        }
        for search in [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ] {
            extra.extend(["--dns-search".into(), search.into()]);
        }
        extra.extend(["--dns-option".into(), "ndots:5".into()]);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.run_container(&self.worker_container(i), &ip, &extra, &command)
    }

    /// Cuts `container` off the cluster's network.
    pub fn disconnect(&self, container: &str) -> Result<()> {
        docker(&["network", "disconnect", &self.network, container]).map(|_| ())
    }

    /// Puts `container` back on the network at `ip`.
    pub fn connect(&self, container: &str, ip: &str) -> Result<()> {
        docker(&["network", "connect", "--ip", ip, &self.network, container]).map(|_| ())
    }

    /// The cluster's PKI (CA, tokens).
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// Every master's address, comma-separated (as `mkctl --servers` takes them).
    pub fn servers(&self) -> String {
        let addrs: Vec<String> = (0..self.masters).map(|i| self.master_addr(i)).collect();
        addrs.join(",")
    }

    /// The cluster's scratch directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// A `Master` client of the address `addr`.
    pub fn client_at(&self, addr: &str) -> Result<MasterClient> {
        client_at(addr, &self.creds)
    }

    /// The store's view of master `i` reached at `addr`, an address of
    /// another network than the one its certificate names.
    pub async fn kv_status_via(&self, i: usize, addr: &str) -> Result<kvs::api::NodeStatus> {
        let config = rpc::ClientConfig {
            token: Some(self.creds.token.clone()),
            tls: self.creds.tls.clone(),
            server_name: Some(format!("m{i}")),
            default_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        let kv = kvs::api::KvClient::new(rpc::Client::new(addr, config)?);
        Ok(kv.status(&kvs::api::Empty {}).await?)
    }
}

impl Masters for NetCluster {
    fn master_count(&self) -> usize {
        self.masters
    }

    fn master_addr(&self, i: usize) -> String {
        format!("{}:{MASTER_PORT}", self.master_ip(i))
    }

    fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// The last lines of every container's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        let names = (0..self.masters)
            .map(|i| self.master_container(i))
            .chain((0..self.workers).map(|i| self.worker_container(i)));
        for name in names {
            let text = Command::new("docker")
                .args(["logs", "--tail", "60", &name])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stderr).to_string())
                .unwrap_or_default();
            out.push_str(&format!("----- {name}\n{text}\n"));
        }
        out
    }
}

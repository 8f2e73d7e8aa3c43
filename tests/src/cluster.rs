//! A whole mkube cluster as processes on loopback: masters (`mkube-master`)
//! and workers (`mkube-worker`, each its own node on the real Docker
//! daemon), for end-to-end tests and benchmarks.
//!
//! Every cluster speaks TLS with a CA of its own and role tokens (see
//! [`crate::testpki`]); the tests call it as a user would (the CA and the
//! user token).
//!
//! Every process logs to a file in the cluster's directory; [`Cluster::logs`]
//! gathers them so that a failing test can print what the cluster did.
//! Dropping the cluster kills the processes and removes the containers of
//! its nodes (and nothing else: every name carries the cluster's id).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::master::MasterError;

use crate::clusters::free_port;
use crate::masters::Masters;
use crate::testpki::{Credentials, TestPki};

/// Where the workspace's binaries are (`target/<profile>`).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the test binary has no directory")?;
    // Integration tests run from target/<profile>/deps; benchmarks from target/<profile>.
    let dir = if dir.ends_with("deps") {
        dir.parent().context("no target directory")?
    } else {
        dir
    };
    Ok(dir.to_path_buf())
}

/// The workspace binary `name`, or why it cannot be run (not built yet).
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is not built; build the workspace first (cargo build --workspace, or run the tests with --workspace)",
            path.display()
        );
    }
    Ok(path)
}

/// Timing of a test cluster (fast, so that tests finish quickly).
#[derive(Debug, Clone)]
pub struct Timing {
    /// Probe interval, in ms.
    pub probe_interval_ms: u64,
    /// Grace before NotReady, in ms.
    pub node_grace_ms: u64,
    /// Silence before eviction, in ms.
    pub eviction_timeout_ms: u64,
    /// Time between metric collections, in ms.
    pub metrics_interval_ms: u64,
    /// Time between the leader's exports of the store, in s.
    pub export_interval_s: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            probe_interval_ms: 500,
            node_grace_ms: 3_000,
            eviction_timeout_ms: 6_000,
            metrics_interval_ms: 1_000,
            export_interval_s: 2,
        }
    }
}

struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Masters and workers of one cluster.
pub struct Cluster {
    id: String,
    dir: PathBuf,
    masters: Vec<Proc>,
    /// The masters' addresses, by index.
    pub master_addrs: Vec<String>,
    /// Where each master serves the Grafana JSON datasource API, by index.
    pub grafana_addrs: Vec<String>,
    /// Each master's DNS address (UDP and TCP).
    pub dns_addrs: Vec<String>,
    workers: Vec<Proc>,
    /// `mkube-hollow` processes, each a slice of hollow nodes.
    hollows: Vec<Proc>,
    timing: Timing,
    pki: TestPki,
    creds: Credentials,
    /// Flags every master gets after the usual ones.
    master_extra: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self
            .masters
            .iter_mut()
            .chain(self.workers.iter_mut())
            .chain(self.hollows.iter_mut())
        {
            p.kill();
        }
        for w in &self.workers {
            remove_node_containers(&w.name);
        }
    }
}

/// Removes every container of node `name`.
pub fn remove_node_containers(name: &str) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=mkube.node={name}")])
        .output();
    if let Ok(out) = out {
        let ids = String::from_utf8_lossy(&out.stdout).to_string();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// How many containers of node `name` are running.
pub fn running_containers(name: &str) -> Result<usize> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=mkube.node={name}")])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    Command::new(bin)
        .args(args)
        .env_remove("MKUBE_TOKEN")
        .env("RUST_LOG", "info,hickory_server=warn")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

impl Cluster {
    /// Starts `masters` masters and `workers` workers; returns once a
    /// leader is elected and every worker is a Ready node.
    pub async fn start(masters: usize, workers: usize, timing: Timing) -> Result<Cluster> {
        Cluster::start_with(masters, workers, timing, &[]).await
    }

    /// [`Cluster::start`], every master with `master_extra` flags after the
    /// usual ones (also when restarted); `{id}` in them is the cluster's id,
    /// so that a flag can name a worker (`w1-{id}` is worker 1).
    pub async fn start_with(
        masters: usize,
        workers: usize,
        timing: Timing,
        master_extra: &[String],
    ) -> Result<Cluster> {
        crate::images::ensure_busybox()?;
        let id = format!("{}-{}", std::process::id(), free_port()?);
        let dir = std::env::temp_dir().join(format!("mkube-e2e-{id}"));
        std::fs::create_dir_all(&dir)?;
        let master_addrs: Vec<String> = (0..masters)
            .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
            .collect::<Result<_>>()?;
        let grafana_addrs: Vec<String> = (0..masters)
            .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
            .collect::<Result<_>>()?;
        let dns_addrs: Vec<String> = (0..masters)
            .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
            .collect::<Result<_>>()?;
        let pki = TestPki::create(&dir.join("pki"))?;
        for i in 0..masters {
            pki.issue(
                &format!("m{i}"),
                pki::MASTERS,
                &["127.0.0.1", &format!("m{i}")],
            )?;
        }
        let creds = pki.user()?;
        let mut cluster = Cluster {
            id,
            dir,
            pki,
            creds,
            masters: Vec::new(),
            master_addrs,
            master_extra: master_extra.to_vec(),
            grafana_addrs,
            dns_addrs,
            workers: Vec::new(),
            hollows: Vec::new(),
            timing,
        };
        for i in 0..masters {
            let log = cluster.dir.join(format!("master-{i}.log"));
            cluster.masters.push(Proc {
                name: format!("m{i}"),
                child: None,
                log,
            });
            cluster.start_master(i)?;
        }
        cluster
            .wait_for(
                Duration::from_secs(30),
                "every master a voter under one leader",
                |c| async move { Ok(c.settled().await.then_some(())) },
            )
            .await?;
        for i in 0..workers {
            cluster.add_worker(i)?;
        }
        cluster
            .wait_for(
                Duration::from_secs(30),
                "every worker Ready",
                |c| async move {
                    let nodes = c.ready_nodes().await.unwrap_or_default();
                    Ok((nodes.len() == workers).then_some(()))
                },
            )
            .await?;
        Ok(cluster)
    }

    /// A unique name for worker `i` of this cluster.
    pub fn worker_name(&self, i: usize) -> String {
        format!("w{i}-{}", self.id)
    }

    /// The admin's credentials (raw store writes), for tests that need them.
    pub fn admin_credentials(&self) -> Result<Credentials> {
        self.pki.role("admin")
    }

    /// The cluster's CA, certificates and tokens.
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The directory holding the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (Re)starts master `i` (empty, as a new incarnation).
    pub fn start_master(&mut self, i: usize) -> Result<()> {
        let peers: Vec<String> = self
            .master_addrs
            .iter()
            .enumerate()
            .map(|(j, a)| format!("m{j}={a}"))
            .collect();
        let t = &self.timing;
        let args: Vec<String> = [
            "--name",
            &format!("m{i}"),
            "--listen",
            &self.master_addrs[i],
            "--peers",
            &peers.join(","),
            "--export-dir",
            &self.dir.join("exports").display().to_string(),
            "--export-interval-s",
            &t.export_interval_s.to_string(),
            "--probe-interval-ms",
            &t.probe_interval_ms.to_string(),
            "--node-grace-ms",
            &t.node_grace_ms.to_string(),
            "--eviction-timeout-ms",
            &t.eviction_timeout_ms.to_string(),
            "--resync-ms",
            "1000",
            "--metrics-db",
            &self
                .dir
                .join(format!("metrics-m{i}.db"))
                .display()
                .to_string(),
            "--metrics-interval-ms",
            &t.metrics_interval_ms.to_string(),
            "--grafana-listen",
            &self.grafana_addrs[i],
            "--dns-listen",
            &self.dns_addrs[i],
            "--pki-dir",
            &self.pki.dir().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut args = args;
        args.extend(
            self.master_extra
                .iter()
                .map(|a| a.replace("{id}", &self.id)),
        );
        let child = spawn(&binary("mkube-master")?, &args, &self.masters[i].log)?;
        self.masters[i].child = Some(child);
        Ok(())
    }

    /// Kills master `i` with SIGKILL.
    pub fn kill_master(&mut self, i: usize) {
        self.masters[i].kill();
    }

    /// Starts worker `i` (a new node) registered with every master.
    pub fn add_worker(&mut self, i: usize) -> Result<()> {
        self.add_worker_with(i, &[])
    }

    /// Starts worker `i` with `extra` flags (`--flag value` pairs or bare
    /// flags) after the usual ones; a flag in `extra` replaces the usual
    /// one of that name (`--listen`, `--host-ip`, `--pod-isolation`).
    pub fn add_worker_with(&mut self, i: usize, extra: &[String]) -> Result<()> {
        let name = self.worker_name(i);
        let pki_dir = self.pki.worker_dir(&name)?;
        let log = self.dir.join(format!("worker-{i}.log"));
        let masters = self.master_addrs.join(",");
        let pki_arg = pki_dir.display().to_string();
        let usual: [(&str, &str); 10] = [
            ("--name", &name),
            ("--listen", "127.0.0.1:0"),
            ("--host-ip", "127.0.0.1"),
            ("--masters", &masters),
            ("--sync-interval-ms", "200"),
            ("--backoff-initial-ms", "200"),
            ("--stats-interval-ms", "1000"),
            ("--rejoin-after-ms", "2000"),
            ("--pki-dir", &pki_arg),
            // Host firewall rules only where a test asks for them.
            ("--pod-isolation", "off"),
        ];
        let mut args: Vec<String> = Vec::new();
        for (flag, value) in usual {
            if !extra.iter().any(|a| a == flag) {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args.extend(extra.iter().cloned());
        let child = spawn(&binary("mkube-worker")?, &args, &log)?;
        let proc = Proc {
            name,
            child: Some(child),
            log,
        };
        if i < self.workers.len() {
            self.workers[i] = proc;
        } else {
            self.workers.push(proc);
        }
        Ok(())
    }

    /// The name of hollow node `i` of this cluster.
    pub fn hollow_name(&self, i: usize) -> String {
        format!("h{}-{i:04}", self.id)
    }

    /// Starts an `mkube-hollow` process running hollow nodes `first` to
    /// `first + count - 1` (see [`Cluster::hollow_name`]), each with its
    /// own listener and certificate, over a simulated container runtime;
    /// returns the process's index for [`Cluster::kill_hollows`].
    pub fn add_hollows(&mut self, first: usize, count: usize, extra: &[&str]) -> Result<usize> {
        let index = self.hollows.len();
        let pki_dir = self.pki.worker_dir(&format!("hollow-{}", self.id))?;
        let log = self.dir.join(format!("hollow-{index}.log"));
        let mut args: Vec<String> = [
            "--count",
            &count.to_string(),
            "--first",
            &first.to_string(),
            "--prefix",
            &format!("h{}", self.id),
            "--masters",
            &self.master_addrs.join(","),
            "--pki-dir",
            &pki_dir.display().to_string(),
            // A hollow container changes only through the agent's own
            // operations and its scripted exit, both of which wake the
            // loop: the periodic round looks for drift that cannot happen
            // (the kubelet's own full sync is once a minute). At 500 ms,
            // 900 nodes' rounds were a whole core.
            "--sync-interval-ms",
            "5000",
            "--stats-interval-ms",
            "5000",
            // Unprobed for as long as the masters' grace: a shorter wait
            // makes a whole fleet re-register at once whenever the masters
            // are slow, which slows them more.
            "--rejoin-after-ms",
            &self.timing.node_grace_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn(&binary("mkube-hollow")?, &args, &log)?;
        self.hollows.push(Proc {
            name: format!("hollow-{index}"),
            child: Some(child),
            log,
        });
        Ok(index)
    }

    /// Freezes (`SIGSTOP`) `mkube-hollow` process `index`: all its nodes
    /// go silent at once, their connections open but unanswered, as when
    /// machines vanish from the network (probes to them wait out their
    /// timeout rather than being refused).
    pub fn freeze_hollows(&mut self, index: usize) -> Result<()> {
        let pid = self
            .hollows
            .get(index)
            .and_then(|p| p.child.as_ref())
            .context("no such hollow process")?
            .id();
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -STOP {pid} failed");
        }
        Ok(())
    }

    /// Kills `mkube-hollow` process `index` with SIGKILL: all its nodes
    /// are lost at once.
    pub fn kill_hollows(&mut self, index: usize) {
        if let Some(p) = self.hollows.get_mut(index) {
            p.kill();
        }
    }

    /// Master `i`'s process id, while it runs.
    pub fn master_pid(&self, i: usize) -> Option<u32> {
        self.masters.get(i)?.child.as_ref().map(Child::id)
    }

    /// Worker `i`'s process id, while it runs.
    pub fn worker_pid(&self, i: usize) -> Option<u32> {
        self.workers.get(i)?.child.as_ref().map(Child::id)
    }

    /// Kills worker `i`'s process and removes its containers: the node is gone.
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].kill();
        remove_node_containers(&self.workers[i].name);
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) worker `i`'s process: the
    /// node goes silent while its containers keep running, as behind a
    /// network partition.
    pub fn freeze_worker(&mut self, i: usize, frozen: bool) -> Result<()> {
        let pid = self.workers[i]
            .child
            .as_ref()
            .context("the worker is not running")?
            .id();
        let signal = if frozen { "STOP" } else { "CONT" };
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {pid}")])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }
}

/// What a test may ask of a member process's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcHealth {
    /// The process's name (`m0`, or a worker's node name).
    pub name: String,
    /// Whether it is still running (not exited or killed by itself).
    pub alive: bool,
    /// Its resident memory, in bytes (0 when it is not running).
    pub rss_bytes: u64,
    /// Whether its log shows a panic.
    pub panicked: bool,
}

impl Cluster {
    /// The health of every master process the test did not kill.
    pub fn master_health(&mut self) -> Vec<ProcHealth> {
        self.masters
            .iter_mut()
            .filter_map(|p| {
                let child = p.child.as_mut()?;
                let alive = matches!(child.try_wait(), Ok(None));
                let rss_bytes = if alive { rss_of(child.id()) } else { 0 };
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                Some(ProcHealth {
                    name: p.name.clone(),
                    alive,
                    rss_bytes,
                    panicked: log.contains("panicked at"),
                })
            })
            .collect()
    }
}

/// A process's resident memory (`VmRSS`), in bytes; 0 if unknown.
pub fn rss_of(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// A size in kB from a process's `/proc/PID/status` line `field`, in
/// bytes; 0 if unknown.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl Masters for Cluster {
    fn master_count(&self) -> usize {
        self.masters.len()
    }

    fn master_addr(&self, i: usize) -> String {
        self.master_addrs[i].clone()
    }

    fn running(&self, i: usize) -> bool {
        self.masters[i].child.is_some()
    }

    fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Every process's log, for a failing test to print.
    fn logs(&self) -> String {
        let mut out = String::new();
        for p in self
            .masters
            .iter()
            .chain(&self.workers)
            .chain(&self.hollows)
        {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            out.push_str(&format!(
                "----- {} ({})\n{}\n",
                p.name,
                p.log.display(),
                tail.join("\n")
            ));
        }
        out
    }
}

/// The master error inside an RPC error, for assertions.
pub fn master_error(e: &rpc::Error) -> Option<MasterError> {
    MasterError::from_rpc(e)
}

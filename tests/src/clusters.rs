//! Starting the clusters the benchmarks compare: kvs members and etcd
//! members as child processes on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::testpki::{Credentials, TestPki};

/// The token of kvs clusters started with `KVS_INSECURE=1`.
pub const TOKEN: &str = "bench-token";

/// Child processes, killed on drop, and the commands that started them
/// (a killed member can be started again the same way).
pub struct Procs {
    children: Vec<Option<Child>>,
    commands: Vec<Command>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn new() -> Procs {
        Procs {
            children: Vec::new(),
            commands: Vec::new(),
        }
    }

    /// Starts `command` as the next member.
    fn spawn(&mut self, mut command: Command) -> std::io::Result<()> {
        let child = command.spawn()?;
        self.children.push(Some(child));
        self.commands.push(command);
        Ok(())
    }

    /// `kill -9` of member `i`; waits until it is gone.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.children.get_mut(i).and_then(Option::take) {
            child.kill().context("kill -9")?;
            child.wait().context("waiting for a killed member")?;
        }
        Ok(())
    }

    /// Starts member `i` again with the command it was first started with.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        anyhow::ensure!(
            self.children.get(i).is_some_and(Option::is_none),
            "member {i} is running or does not exist"
        );
        self.children[i] = Some(self.commands[i].spawn().context("restarting a member")?);
        Ok(())
    }

    /// Resident memory of all the processes, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.rss_kib_each().iter().sum()
    }

    /// CPU time (user + system) the running processes have used, in
    /// seconds (Linux reports it in USER_HZ, 100 a second).
    pub fn cpu_seconds(&self) -> f64 {
        self.children
            .iter()
            .flatten()
            .filter_map(|c| {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.id())).ok()?;
                // Fields after the command name (which may hold spaces): state is
                // the first, utime and stime the 12th and 13th.
                let rest = stat.get(stat.rfind(')')? + 2..)?;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks: u64 =
                    fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
                Some(ticks as f64 / 100.0)
            })
            .sum()
    }

    /// Each member's resident memory in KiB, in the order they were started
    /// (0 for one that is not running).
    pub fn rss_kib_each(&self) -> Vec<u64> {
        self.children
            .iter()
            .map(|c| {
                c.as_ref()
                    .and_then(|c| std::fs::read_to_string(format!("/proc/{}/status", c.id())).ok())
                    .and_then(|s| {
                        s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                            l.split_whitespace()
                                .nth(1)
                                .and_then(|n| n.parse::<u64>().ok())
                        })
                    })
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// A new directory for one benchmark run's cluster data,
/// `mkube-bench-NAME-PID`, on tmpfs (`/dev/shm`) where there is one (etcd
/// fsyncs; a benchmark measures the store, not the disk), else in the
/// temporary directory.
pub fn scratch_dir(name: &str) -> Result<PathBuf> {
    let root = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = root.join(format!("mkube-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Ports handed out come from below Linux's ephemeral range (32768–60999):
/// a port the kernel picked for `bind(0)` is released before the process
/// under test binds it, and meanwhile any outgoing connection of a busy
/// machine may take it as its local port (seen in CI: a master's
/// `--grafana-listen` port "already in use"). Ports below the range are
/// never given to outgoing connections.
const PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A loopback port free right now for TCP and UDP, each call in a process
/// a different one (a random start per process, then a fixed stride).
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(u64::MAX);
    let span = u64::from(PORTS.end - PORTS.start);
    if NEXT.load(Ordering::Relaxed) == u64::MAX {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        let seed = (nanos ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9)) % span;
        let _ = NEXT.compare_exchange(u64::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        // 7919 is prime and does not divide the span: every port is visited.
        let n = NEXT.fetch_add(7919, Ordering::Relaxed) % span;
        let port = PORTS.start + n as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port in {PORTS:?}")
}

/// Three kvs members (`KVS_NODE` or kvs-node next to this binary), extra
/// `args` for each, speaking TLS with a CA of their own in `dir/pki`
/// (`KVS_INSECURE=1`: plain HTTP, to measure what TLS costs). Returns the
/// processes, their addresses and the admin's credentials (a bare store's
/// clients write raw keys, which only admins may).
pub fn start_kvs(dir: &Path, args: &[&str]) -> Result<(Procs, Vec<String>, Credentials)> {
    let insecure = std::env::var("KVS_INSECURE").is_ok_and(|v| v == "1");
    let pki_dir = dir.join("pki");
    let _ = std::fs::remove_dir_all(&pki_dir);
    let pki = TestPki::create(&pki_dir)?;
    for i in 0..3 {
        pki.issue(&format!("n{i}"), pki::MASTERS, &["127.0.0.1"])?;
    }
    let (security, creds): (Vec<String>, Credentials) = if insecure {
        let creds = Credentials {
            token: TOKEN.into(),
            tls: None,
        };
        (
            vec!["--insecure".into(), "--token".into(), TOKEN.into()],
            creds,
        )
    } else {
        (
            vec!["--pki-dir".into(), pki_dir.display().to_string()],
            pki.role("admin")?,
        )
    };
    let bin = match std::env::var_os("KVS_NODE") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?.with_file_name("kvs-node"),
    };
    let addrs: Vec<String> = (0..3)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_>>()?;
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("n{i}={a}"))
        .collect();
    let mut procs = Procs::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut command = Command::new(&bin);
        command
            .args([
                "--name",
                &format!("n{i}"),
                "--listen",
                addr,
                "--peers",
                &peers.join(","),
            ])
            .args(args)
            .args(&security)
            .env_remove("KVS_TOKEN")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null());
        procs
            .spawn(command)
            .with_context(|| format!("starting {}", bin.display()))?;
    }
    Ok((procs, addrs, creds))
}

/// Three etcd members (`ETCD` or etcd on PATH) with data under `dir`, extra `args` for each.
pub fn start_etcd(dir: &Path, args: &[&str]) -> Result<(Procs, Vec<String>)> {
    let bin = std::env::var("ETCD").unwrap_or_else(|_| "etcd".into());
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
    let cluster: Vec<String> = peer_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}"))
        .collect();
    let mut procs = Procs::new();
    for i in 0..3 {
        let data = dir.join(format!("e{i}"));
        let client = format!("http://127.0.0.1:{}", client_ports[i]);
        let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
        let mut command = Command::new(&bin);
        command
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-state",
                "new",
            ])
            .args([
                "--initial-cluster-token",
                "mkube-bench",
                "--log-level",
                "error",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        procs
            .spawn(command)
            .with_context(|| format!("starting {bin} (install Debian's etcd-server)"))?;
    }
    Ok((
        procs,
        client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect(),
    ))
}

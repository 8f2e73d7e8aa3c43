//! `scripts/bench overload`: a canary's put latency on a 3-member cluster
//! while 5,000 connections from another address are held open at its
//! leader, half silent and half trickling a byte every 500 ms — kvs (TLS,
//! as it runs) against etcd 3.4 (Debian's etcd-server, data on tmpfs), in
//! the same run, under the same attacker.
//!
//! The canary is one caller writing one key after another through a client
//! of the leader (kvs: `KvsClient`, which finds it; etcd: a client of the
//! leader's URL alone), `PUTS` puts unloaded and then `PUTS` puts under
//! attack. The attacker connects from 127.0.0.2 (another machine as far as
//! the servers can tell) and keeps 5,000 connections: a silent one or a
//! trickling one the server closes is opened again a second later. It runs
//! as a process of its own at the lowest priority (`nice -n 19`), standing
//! for the other machine it would be: its own work (reconnecting what a
//! server closes) is not the server's and must not slow the canary. The
//! trickle is the start of what each server expects: a TLS record header
//! announcing a 16 KiB ClientHello for kvs, an HTTP request head for etcd.
//! The p99 under attack is compared (lower is better); the unloaded p99 of
//! both is printed for reference.
//!
//! Environment: `PUTS` (per phase, default 3,000), `CONNECTIONS` (default
//! 5,000), `KVS_NODE` (default: next to this binary), `ETCD` (default:
//! etcd on PATH).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use kvs::client::{KvsClient, KvsClientConfig};
use kvs::raft::Role;
use tests::clusters::{scratch_dir, start_etcd, start_kvs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// What the trickling half sends, a byte at a time.
#[derive(Clone, Copy)]
enum Protocol {
    Tls,
    Http,
}

impl Protocol {
    fn preamble(self) -> Vec<u8> {
        match self {
            // A handshake record of 16 KiB: the server waits for all of it.
            Protocol::Tls => {
                let mut b = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01];
                b.extend(std::iter::repeat_n(0u8, 16 * 1024));
                b
            }
            Protocol::Http => {
                let mut b = b"POST /v3/kv/put HTTP/1.1\r\nHost: etcd\r\nX-Slow: ".to_vec();
                b.extend(std::iter::repeat_n(b'a', 16 * 1024));
                b
            }
        }
    }
}

/// Keeps `n` connections to `target` open from 127.0.0.2 until `stop`;
/// counts the connections the server closed.
async fn attack(
    target: std::net::SocketAddr,
    n: usize,
    protocol: Protocol,
    stop: Arc<AtomicBool>,
    closed: Arc<AtomicU64>,
) {
    let preamble = Arc::new(protocol.preamble());
    let mut set = tokio::task::JoinSet::new();
    for slot in 0..n {
        let (stop, closed, preamble) = (stop.clone(), closed.clone(), preamble.clone());
        set.spawn(async move {
            let trickle = slot % 2 == 1;
            while !stop.load(Ordering::Relaxed) {
                let Ok(socket) = TcpSocket::new_v4() else {
                    return;
                };
                if socket.bind(([127, 0, 0, 2], 0).into()).is_err() {
                    return;
                }
                let Ok(mut stream) = socket.connect(target).await else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let mut sent = 0;
                let mut buf = [0u8; 256];
                let mut server_closed = false;
                while !stop.load(Ordering::Relaxed) {
                    let wait = tokio::time::sleep(Duration::from_millis(500));
                    tokio::select! {
                        read = stream.read(&mut buf) => match read {
                            Ok(0) | Err(_) => {
                                server_closed = true;
                                break;
                            }
                            Ok(_) => {}
                        },
                        () = wait => {
                            if trickle && sent < preamble.len() {
                                if stream.write_all(&preamble[sent..sent + 1]).await.is_err() {
                                    server_closed = true;
                                    break;
                                }
                                sent += 1;
                            }
                        }
                    }
                }
                if server_closed {
                    closed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// A system under test: how to put, and where its leader listens.
enum System {
    Kvs(KvsClient),
    Etcd(Box<etcd_client::Client>),
}

impl System {
    async fn put(&mut self, key: &str) -> Result<()> {
        match self {
            System::Kvs(c) => {
                c.put(key, "v").await?;
            }
            System::Etcd(c) => {
                c.kv_client().put(key, "v", None).await?;
            }
        }
        Ok(())
    }
}

/// `puts` sequential puts; their latencies.
async fn canary(system: &mut System, puts: u64, tag: &str) -> Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..puts {
        let t = Instant::now();
        system
            .put(&format!("/canary/{tag}/{}", i % 100))
            .await
            .with_context(|| format!("put {i} ({tag})"))?;
        hist.record(t.elapsed().as_micros() as u64)?;
    }
    Ok(hist)
}

/// The canary unloaded, then under attack at `target`: (unloaded, attacked).
async fn measure(
    system: &mut System,
    target: std::net::SocketAddr,
    protocol: Protocol,
    puts: u64,
    connections: usize,
    name: &str,
) -> Result<(Histogram<u64>, Histogram<u64>)> {
    canary(system, puts / 10, "warm-up").await?;
    let quiet = canary(system, puts, "quiet").await?;
    let mut attacker = std::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(std::env::current_exe()?)
        .env("ATTACK_TARGET", target.to_string())
        .env(
            "ATTACK_PROTOCOL",
            match protocol {
                Protocol::Tls => "tls",
                Protocol::Http => "http",
            },
        )
        .env("CONNECTIONS", connections.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the attacker")?;
    // Let the connections pile up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attacked = canary(system, puts, "attacked").await;
    drop(attacker.stdin.take());
    let output = attacker.wait_with_output()?;
    println!("{name}: {}", String::from_utf8_lossy(&output.stdout).trim());
    Ok((quiet, attacked?))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn run() -> Result<()> {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let puts = env("PUTS", 3_000);
    let connections = env("CONNECTIONS", 5_000) as usize;
    let dir = scratch_dir("overload")?;
    let (kvs_procs, kvs_addrs, creds) = start_kvs(&dir, &[])?;
    let (etcd_procs, etcd_addrs) = start_etcd(&dir, &[])?;
    let _procs = (kvs_procs, etcd_procs);

    let kvs = KvsClient::new(
        &kvs_addrs,
        KvsClientConfig {
            token: Some(creds.token.clone()),
            tls: creds.tls.clone(),
            ..Default::default()
        },
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let kvs_leader = loop {
        let mut leader = None;
        for i in 0..3 {
            if kvs.status_of(i).await.is_ok_and(|s| s.role == Role::Leader) {
                leader = Some(i);
            }
        }
        match leader {
            Some(l) if kvs.put("/ready", "v").await.is_ok() => break l,
            _ if Instant::now() > deadline => bail!("kvs: no leader in 30 s"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let urls: Vec<String> = etcd_addrs.iter().map(|a| format!("http://{a}")).collect();
    let etcd_leader = loop {
        let mut found = None;
        for (i, url) in urls.iter().enumerate() {
            if let Ok(mut c) = etcd_client::Client::connect([url], None).await
                && let Ok(s) = c.status().await
                && s.header().is_some_and(|h| h.member_id() == s.leader())
            {
                found = Some(i);
            }
        }
        match found {
            Some(l) => break l,
            None if Instant::now() > deadline => bail!("etcd: no leader in 30 s"),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let etcd = etcd_client::Client::connect([&urls[etcd_leader]], None).await?;

    println!(
        "one caller's puts ({puts} per phase) at the leader of 3 members, then with {connections} connections from 127.0.0.2 held open at it (half silent, half trickling)"
    );
    let mut ours = System::Kvs(kvs);
    let (kq, ka) = measure(
        &mut ours,
        kvs_addrs[kvs_leader].parse()?,
        Protocol::Tls,
        puts,
        connections,
        "kvs",
    )
    .await?;
    let mut peer = System::Etcd(Box::new(etcd));
    let (eq, ea) = measure(
        &mut peer,
        etcd_addrs[etcd_leader].parse()?,
        Protocol::Http,
        puts,
        connections,
        "etcd",
    )
    .await?;
    for (name, quiet, attacked) in [("kvs", &kq, &ka), ("etcd", &eq, &ea)] {
        println!(
            "{name:<4}: unloaded p50={:.2} ms p99={:.2} ms | attacked p50={:.2} ms p99={:.2} ms",
            ms(quiet.value_at_quantile(0.5)),
            ms(quiet.value_at_quantile(0.99)),
            ms(attacked.value_at_quantile(0.5)),
            ms(attacked.value_at_quantile(0.99)),
        );
    }
    let (o, p) = (ka.value_at_quantile(0.99), ea.value_at_quantile(0.99));
    println!(
        "overload: ours={:.2} ms peer={:.2} ms ratio={:.2}",
        ms(o),
        ms(p),
        o as f64 / p.max(1) as f64
    );
    Ok(())
}

/// The attacker's process: attacks until its stdin closes.
async fn attacker(target: &str) -> Result<()> {
    let target: std::net::SocketAddr = target.parse()?;
    let protocol = match std::env::var("ATTACK_PROTOCOL").as_deref() {
        Ok("tls") => Protocol::Tls,
        _ => Protocol::Http,
    };
    let connections = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(attack(
        target,
        connections,
        protocol,
        stop.clone(),
        closed.clone(),
    ));
    // Until the parent closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest)
    })
    .await??;
    stop.store(true, Ordering::Relaxed);
    task.abort();
    println!(
        "the server closed {} attacking connections",
        closed.load(Ordering::Relaxed)
    );
    Ok(())
}

fn main() -> Result<()> {
    match std::env::var("ATTACK_TARGET") {
        Ok(target) => tests::block_on(attacker(&target)),
        Err(_) => tests::block_on(run()),
    }
}

//! `scripts/bench failover`: how long writes stop when the leader of a
//! 3-member cluster is killed (`kill -9`) under a steady write load — kvs
//! against etcd (Debian's etcd-server, data on tmpfs), in the same run,
//! both with a 50 ms heartbeat and a 500 ms election timeout (kvs-node's
//! defaults: `--tick-ms 50 --election-ticks 10`; etcd with
//! `--heartbeat-interval 50 --election-timeout 500 --pre-vote`, since kvs
//! runs pre-vote too).
//!
//! A round: four writers keep writing through a client of all three
//! members; the leader is killed; a probe then writes, each attempt given
//! 100 ms and the next sent at once, until one is acknowledged. Fail-over
//! is the time from the kill to that acknowledgement. The killed member is
//! started again (kvs: empty, it rejoins as a new incarnation; etcd: from
//! its data dir) and the next round waits until all three agree on a
//! leader again. Rounds alternate between the two systems; the medians are
//! compared (lower is better).
//!
//! The attempt timeout matters to etcd: a write a follower forwarded to the
//! leader just killed is lost there, and the client only learns it when the
//! attempt times out (with 1 s attempts etcd's fail-over is ~1 s every
//! round). A kvs member sends such a write again to the next leader itself.
//! Short attempts measure the elections.
//!
//! Environment: `ROUNDS` (per system, default 10), `ATTEMPT_MS` (default
//! 100), `KVS_NODE` (default: next to this binary), `ETCD` (default: etcd
//! on PATH).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kvs::api::NodeStatus;
use kvs::client::{KvsClient, KvsClientConfig};
use kvs::raft::Role;
use tests::clusters::{Procs, scratch_dir, start_etcd, start_kvs};

const HEARTBEAT_MS: u64 = 50;
const ELECTION_MS: u64 = 500;
/// Each write attempt (probe and load), unless `ATTEMPT_MS` says otherwise.
const ATTEMPT_MS: u64 = 100;
/// How long a cluster may take to settle or to fail over before the run fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// One of the clusters under test: its processes and its clients.
struct Cluster {
    procs: Procs,
    clients: Clients,
    /// The timeout of each write attempt.
    attempt: Duration,
}

enum Clients {
    Kvs(KvsClient),
    Etcd {
        /// A client of all three members.
        all: Box<etcd_client::Client>,
        /// A client of each member alone (for their status).
        members: Vec<etcd_client::Client>,
    },
}

impl Clients {
    fn name(&self) -> &'static str {
        match self {
            Clients::Kvs(_) => "kvs",
            Clients::Etcd { .. } => "etcd",
        }
    }

    async fn put(&self, key: &str) -> Result<()> {
        match self {
            Clients::Kvs(client) => {
                client.put(key, "v").await?;
            }
            Clients::Etcd { all, .. } => {
                all.kv_client().put(key, "v", None).await?;
            }
        }
        Ok(())
    }

    /// The leading member, once all three agree on it.
    async fn settled_leader(&self) -> Option<usize> {
        match self {
            Clients::Kvs(client) => {
                let mut statuses: Vec<NodeStatus> = Vec::new();
                for i in 0..3 {
                    statuses.push(client.status_of(i).await.ok()?);
                }
                let leader = statuses.iter().position(|s| s.role == Role::Leader)?;
                let id = statuses[leader].id;
                let voters = statuses[leader].members.iter().filter(|m| m.voter).count();
                (voters == 3
                    && statuses
                        .iter()
                        .all(|s| s.voter && s.leader == Some(id) && s.epoch == statuses[0].epoch))
                .then_some(leader)
            }
            Clients::Etcd { members, .. } => {
                let mut views = Vec::new();
                for m in members {
                    let status = m.clone().status().await.ok()?;
                    let me = status.header()?.member_id();
                    views.push((me, status.leader()));
                }
                let leader = views[0].1;
                (leader != 0 && views.iter().all(|v| v.1 == leader))
                    .then(|| views.iter().position(|v| v.0 == leader))
                    .flatten()
            }
        }
    }
}

/// Waits until the cluster agrees on a leader.
async fn settle(clients: &Clients) -> Result<usize> {
    let start = Instant::now();
    loop {
        if let Some(leader) = clients.settled_leader().await {
            return Ok(leader);
        }
        if start.elapsed() > DEADLINE {
            bail!("{}: no settled leader after {DEADLINE:?}", clients.name());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Four writers until `stop`, counting acknowledged writes.
async fn load(clients: &Clients, attempt: Duration, stop: &AtomicBool, acked: &AtomicU64) {
    let writer = |w: usize| async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let key = format!("/load/{w}/{}", i % 100);
            match tokio::time::timeout(attempt, clients.put(&key)).await {
                Ok(Ok(())) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                // Writes fail while there is no leader: not what is measured.
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    futures_util::future::join_all((0..4).map(writer)).await;
}

/// Kills the leader once the load is under way, then writes until a write
/// is acknowledged: the time from the kill to that acknowledgement.
async fn kill_and_probe(
    procs: &mut Procs,
    clients: &Clients,
    attempt: Duration,
    leader: usize,
    n: usize,
    acked: &AtomicU64,
) -> Result<Duration> {
    let start = Instant::now();
    while acked.load(Ordering::Relaxed) < 200 {
        if start.elapsed() > DEADLINE {
            bail!("{}: the load did not get going", clients.name());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    procs.kill(leader)?;
    let killed = Instant::now();
    loop {
        let answer = tokio::time::timeout(attempt, clients.put(&format!("/probe/{n}"))).await;
        if let Ok(Ok(())) = answer {
            return Ok(killed.elapsed());
        }
        if killed.elapsed() > DEADLINE {
            bail!(
                "{}: no write acknowledged {DEADLINE:?} after the kill",
                clients.name()
            );
        }
    }
}

/// One kill of the leader: the fail-over as a client sees it.
async fn round(cluster: &mut Cluster, n: usize) -> Result<Duration> {
    let Cluster {
        procs,
        clients,
        attempt,
    } = cluster;
    let attempt = *attempt;
    let leader = settle(clients).await?;
    let stop = AtomicBool::new(false);
    let acked = AtomicU64::new(0);
    let probe = async {
        let result = kill_and_probe(procs, clients, attempt, leader, n, &acked).await;
        stop.store(true, Ordering::Relaxed);
        result
    };
    let ((), failover) = tokio::join!(load(clients, attempt, &stop, &acked), probe);
    let failover = failover?;
    procs.restart(leader)?;
    Ok(failover)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn run() -> Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(1);
    let attempt = Duration::from_millis(
        std::env::var("ATTEMPT_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(ATTEMPT_MS)
            .max(1),
    );
    let dir = scratch_dir("failover")?;

    let tick = HEARTBEAT_MS.to_string();
    let election_ticks = (ELECTION_MS / HEARTBEAT_MS).to_string();
    let (kvs_procs, kvs_addrs, creds) = start_kvs(
        &dir,
        &["--tick-ms", &tick, "--election-ticks", &election_ticks],
    )?;
    let (etcd_procs, etcd_addrs) = start_etcd(
        &dir,
        &[
            "--heartbeat-interval",
            &tick,
            "--election-timeout",
            &ELECTION_MS.to_string(),
            "--pre-vote",
        ],
    )?;
    let kvs = KvsClient::new(
        &kvs_addrs,
        KvsClientConfig {
            token: Some(creds.token.clone()),
            tls: creds.tls.clone(),
            timeout: attempt,
            ..Default::default()
        },
    )?;
    let etcd_options = || {
        etcd_client::ConnectOptions::new()
            .with_timeout(attempt)
            .with_connect_timeout(attempt)
    };
    let urls: Vec<String> = etcd_addrs.iter().map(|a| format!("http://{a}")).collect();
    let etcd = etcd_client::Client::connect(&urls, Some(etcd_options()))
        .await
        .context("connecting to etcd")?;
    let mut etcd_members = Vec::new();
    for url in &urls {
        etcd_members.push(etcd_client::Client::connect([url], Some(etcd_options())).await?);
    }
    let mut clusters = [
        Cluster {
            procs: kvs_procs,
            clients: Clients::Kvs(kvs),
            attempt,
        },
        Cluster {
            procs: etcd_procs,
            clients: Clients::Etcd {
                all: Box::new(etcd),
                members: etcd_members,
            },
            attempt,
        },
    ];
    println!(
        "kill -9 of the leader under 4 writers, 3 members each, heartbeat {HEARTBEAT_MS} ms, election timeout {ELECTION_MS} ms, write attempts of {attempt:?}, {rounds} rounds each"
    );
    let mut results: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for n in 0..rounds {
        for (s, cluster) in clusters.iter_mut().enumerate() {
            let failover = round(cluster, n).await?;
            println!(
                "round {n}: {:<4} {:>7.1} ms",
                cluster.clients.name(),
                ms(failover)
            );
            results[s].push(failover);
        }
    }
    let [ours, peer] = results.map(median);
    // The members first: a live etcd would write into its data dir again.
    drop(clusters);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "failover: ours={:.1} ms peer={:.1} ms ratio={:.2}",
        ms(ours),
        ms(peer),
        ms(ours) / ms(peer)
    );
    Ok(())
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

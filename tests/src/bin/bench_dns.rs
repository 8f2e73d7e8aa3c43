//! `scripts/bench dns`: the masters' DNS server against dnsmasq serving
//! the same records, both loaded by dnsperf (Debian's, from DNS-OARC) over
//! UDP on loopback, in one run.
//!
//! Records: 100 Services of 3 ready endpoints each (three node addresses,
//! host ports 30000+): ours builds its zone from the Endpoints objects, as a
//! master does; dnsmasq gets the same A records (`--host-record`, service
//! names and SRV targets) and SRV records (`--srv-host`). Queries: every
//! service name (A) and every SRV name, shuffled, 200 in all.
//!
//! Each system answers in 3 alternating rounds of 10 s (dnsperf: 1 thread,
//! 20 clients, 200 queries outstanding); the median round counts. dnsmasq
//! is single-threaded by design; ours runs on a tokio runtime of 2 worker
//! threads (this machine's cores), shared with dnsperf's load. Every answer
//! must be NOERROR, and a dig of one name must give the same records from
//! both, or the run fails.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::service::Endpoints;
use serde_json::json;
use tests::clusters::free_port;

const SERVICES: usize = 100;
const ENDPOINTS: usize = 3;
const ROUNDS: usize = 3;
const SECONDS: u64 = 10;
const DOMAIN: &str = "cluster.local";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip(e: usize) -> String {
    format!("10.0.{}.{}", e / 200, 10 + e % 200)
}

fn endpoints() -> Vec<Endpoints> {
    (0..SERVICES)
        .map(|s| {
            let addresses: Vec<_> = (0..ENDPOINTS)
                .map(|e| {
                    json!({"ip": ip((s + e) % 50), "nodeName": format!("n{}", (s + e) % 50),
                        "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("web{s}-{e}"), "uid": format!("u{s}-{e}")}})
                })
                .collect();
            serde_json::from_value(json!({
                "metadata": {"name": format!("web{s}"), "namespace": "default"},
                "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": 30000 + s, "protocol": "TCP"}]}]
            }))
            .expect("endpoints")
        })
        .collect()
}

/// dnsmasq's flags for the same records.
fn dnsmasq_records() -> Vec<String> {
    let mut args = Vec::new();
    for s in 0..SERVICES {
        let service = format!("web{s}.default.svc.{DOMAIN}");
        let addresses: BTreeSet<String> = (0..ENDPOINTS).map(|e| ip((s + e) % 50)).collect();
        for a in &addresses {
            args.push(format!("--host-record={service},{a}"));
            let target = format!("{}.{service}", a.replace('.', "-"));
            args.push(format!("--host-record={target},{a}"));
            let weight = 100 / ENDPOINTS;
            args.push(format!(
                "--srv-host=_http._tcp.{service},{target},{},0,{weight}",
                30000 + s
            ));
        }
    }
    args
}

fn queries() -> String {
    let mut lines = Vec::new();
    for s in 0..SERVICES {
        lines.push(format!("web{s}.default.svc.{DOMAIN} A"));
        lines.push(format!("_http._tcp.web{s}.default.svc.{DOMAIN} SRV"));
    }
    // A fixed shuffle, so both systems see the same order.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..lines.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lines.swap(i, (x % (i as u64 + 1)) as usize);
    }
    lines.join("\n") + "\n"
}

/// The sorted answer records of a dig, TTLs left out.
fn dig(port: u16, name: &str, qtype: &str) -> Result<Vec<String>> {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+noall",
            "+answer",
            "+tries=3",
            "+time=2",
        ])
        .args([name, qtype])
        .output()
        .context("running dig (apt-get install bind9-dnsutils)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut records: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mut kept = vec![f[0]];
            kept.extend(f.iter().skip(2));
            kept.join(" ")
        })
        .collect();
    records.sort();
    Ok(records)
}

struct Round {
    qps: f64,
    latency_ms: f64,
}

fn dnsperf(port: u16, queries: &std::path::Path) -> Result<Round> {
    let out = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string()])
        .args(["-d", &queries.display().to_string()])
        .args([
            "-l",
            &SECONDS.to_string(),
            "-T",
            "1",
            "-c",
            "20",
            "-q",
            "200",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running dnsperf (apt-get install dnsperf)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |key: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .with_context(|| format!("no {key:?} in dnsperf's output:\n{text}"))?;
        line.split(':')
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .context("a value")?
            .parse::<f64>()
            .with_context(|| format!("{line:?}"))
    };
    let codes = text
        .lines()
        .find(|l| l.trim_start().starts_with("Response codes:"))
        .unwrap_or("");
    if !codes.contains("NOERROR")
        || codes.contains("SERVFAIL")
        || codes.contains("NXDOMAIN")
        || codes.contains("REFUSED")
    {
        bail!("not every answer was NOERROR: {codes}\n{text}");
    }
    let lost = field("Queries lost")?;
    let sent = field("Queries sent")?;
    if lost > sent * 0.001 {
        bail!("{lost} of {sent} queries lost:\n{text}");
    }
    Ok(Round {
        qps: field("Queries per second")?,
        latency_ms: field("Average Latency (s)")? * 1000.0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let endpoints = endpoints();
    let zone = dns::Zone::build(&dns::ZoneConfig::default(), &endpoints)?;
    let ours_port = free_port()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = runtime.block_on(dns::DnsServer::bind(
        format!("127.0.0.1:{ours_port}").parse()?,
        dns::ZoneHandle::new(zone),
        None,
    ))?;
    runtime.spawn(server.serve(std::future::pending()));

    let peer_port = free_port()?;
    let _dnsmasq = Kill(
        Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--no-negcache",
                "--log-facility=/dev/null",
            ])
            .arg(format!("--port={peer_port}"))
            .args(dnsmasq_records())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting dnsmasq (apt-get install dnsmasq-base)")?,
    );
    // Both answer, and answer the same.
    for (name, qtype) in [
        (format!("web7.default.svc.{DOMAIN}"), "A"),
        (format!("_http._tcp.web7.default.svc.{DOMAIN}"), "SRV"),
    ] {
        let mut ours = Vec::new();
        let mut peer = Vec::new();
        for _ in 0..50 {
            ours = dig(ours_port, &name, qtype)?;
            peer = dig(peer_port, &name, qtype)?;
            if !ours.is_empty() && !peer.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if ours.is_empty() || ours != peer {
            bail!("the two servers differ on {name} {qtype}:\nours: {ours:#?}\npeer: {peer:#?}");
        }
    }
    let dir = std::env::temp_dir().join(format!("mkube-bench-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("queries.txt");
    std::fs::write(&file, queries())?;
    println!(
        "dns: {SERVICES} Services x {ENDPOINTS} endpoints; dnsperf 1 thread, 20 clients, 200 outstanding, UDP, {ROUNDS} rounds of {SECONDS} s each"
    );
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let o = dnsperf(ours_port, &file)?;
        let p = dnsperf(peer_port, &file)?;
        println!(
            "round {}: ours {:.0} q/s ({:.3} ms avg)   dnsmasq {:.0} q/s ({:.3} ms avg)",
            round + 1,
            o.qps,
            o.latency_ms,
            p.qps,
            p.latency_ms
        );
        ours.push(o.qps);
        peer.push(p.qps);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (o, p) = (median(ours), median(peer));
    println!(
        "dns: ours={o:.0} queries/s peer={p:.0} queries/s ratio={:.2}",
        o / p
    );
    Ok(())
}

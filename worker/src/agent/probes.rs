//! Liveness and readiness probes: exec, HTTP GET and TCP, run from the
//! worker against running containers on each probe's period.
//!
//! Liveness: `failureThreshold` failures in a row mark the slot
//! `liveness_failed`; the reconciler then stops the container and the
//! restart policy brings it back. Readiness: a container with a readiness
//! probe is not ready from its start until the probe succeeds
//! (`successThreshold` times in a row), and stops being ready after
//! `failureThreshold` failures in a row; it is never restarted for it. The
//! status reports `ready`, which the masters' endpoints controller reads.

use std::time::Duration;

use api::event::EventType;
use api::pod::Probe;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use super::Agent;
use crate::model::Slot;
use crate::runtime::now_ms;
use crate::status::{ProbeTrack, SlotRecord};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }

    fn track(self, record: &mut SlotRecord) -> &mut ProbeTrack {
        match self {
            ProbeKind::Liveness => &mut record.liveness,
            ProbeKind::Readiness => &mut record.readiness,
        }
    }
}

/// Where and what to probe.
struct Target {
    kind: ProbeKind,
    slot: Slot,
    container_id: String,
    ip: String,
    probe: Probe,
    pod: (String, String, String),
}

/// Starts every probe that is due.
pub(super) fn start_due(agent: &Agent) {
    let now = now_ms();
    let mut targets = Vec::new();
    {
        let mut state = agent.state();
        let node = agent.inner.config.node.clone();
        let mut due = Vec::new();
        for pod in state.desired.values() {
            let first = pod
                .spec
                .containers
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            for c in &pod.spec.containers {
                let probes = [
                    (ProbeKind::Liveness, &c.liveness_probe),
                    (ProbeKind::Readiness, &c.readiness_probe),
                ];
                if probes.iter().all(|(_, p)| p.is_none()) {
                    continue;
                }
                let slot = Slot {
                    uid: pod.metadata.uid.clone(),
                    container: c.name.clone(),
                };
                let running = |name: &str| {
                    state.observed.iter().find(|o| {
                        o.node == node
                            && o.is_running()
                            && o.slot
                                .as_ref()
                                .is_some_and(|s| s.uid == slot.uid && s.container == name)
                    })
                };
                let Some(container) = running(&c.name) else {
                    continue;
                };
                let ip = running(&first)
                    .and_then(|o| state.details.get(&o.id))
                    .and_then(|d| d.ip.clone())
                    .unwrap_or_else(|| "127.0.0.1".to_string());
                for (kind, probe) in probes {
                    let Some(probe) = probe else {
                        continue;
                    };
                    due.push(Target {
                        kind,
                        slot: slot.clone(),
                        container_id: container.id.clone(),
                        ip: ip.clone(),
                        probe: probe.clone(),
                        pod: (
                            pod.metadata.namespace.clone(),
                            pod.metadata.name.clone(),
                            pod.metadata.uid.clone(),
                        ),
                    });
                }
            }
        }
        for t in due {
            let record = state.records.entry(t.slot.clone()).or_default();
            if record.memory.liveness_failed {
                continue;
            }
            let track = t.kind.track(record);
            if track.in_flight || now < track.next_at_ms {
                continue;
            }
            track.in_flight = true;
            targets.push(t);
        }
    }
    for t in targets {
        let agent = agent.clone();
        tokio::spawn(async move {
            let outcome = run(&agent, &t).await;
            agent.record_probe(t, outcome);
        });
    }
}

/// Runs one probe; `Err` says why it failed.
async fn run(agent: &Agent, t: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(t.probe.timeout_seconds.max(1)));
    let attempt = async {
        if let Some(exec) = &t.probe.exec {
            let (code, _, stderr) = agent
                .inner
                .runtime
                .exec(&t.container_id, exec.command.clone(), timeout, 4096)
                .await
                .map_err(|e| e.to_string())?;
            return if code == 0 {
                Ok(())
            } else {
                Err(format!("exec exited {code}: {}", stderr.trim()))
            };
        }
        if let Some(http) = &t.probe.http_get {
            return http_get(&t.ip, http.port, &http.path).await;
        }
        if let Some(tcp) = &t.probe.tcp_socket {
            return tokio::net::TcpStream::connect((t.ip.as_str(), tcp.port))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

async fn http_get(ip: &str, port: u16, path: &str) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, format!("{ip}:{port}"))
        .header(http::header::USER_AGENT, "mkube-worker/probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP GET {path} answered {status}"))
    }
}

impl Agent {
    fn record_probe(&self, t: Target, outcome: Result<(), String>) {
        let now = now_ms();
        let mut state = self.state();
        let still_running = state
            .observed
            .iter()
            .any(|o| o.id == t.container_id && o.is_running());
        let record = state.records.entry(t.slot.clone()).or_default();
        let was_ready = record.probed_ready;
        let track = t.kind.track(record);
        track.in_flight = false;
        track.next_at_ms = now + u64::from(t.probe.period_seconds.max(1)) * 1_000;
        if !still_running {
            return;
        }
        let why = match outcome {
            Ok(()) => {
                track.failures = 0;
                track.successes = track.successes.saturating_add(1);
                if t.kind == ProbeKind::Readiness
                    && !was_ready
                    && track.successes >= t.probe.success_threshold.max(1)
                {
                    record.probed_ready = true;
                    drop(state);
                    // The status changed: report it without waiting for the next sync.
                    self.wake();
                }
                return;
            }
            Err(why) => why,
        };
        track.successes = 0;
        track.failures = track.failures.saturating_add(1);
        let failures = track.failures;
        let failed = failures >= t.probe.failure_threshold.max(1);
        let mut changed = false;
        match t.kind {
            ProbeKind::Liveness if failed => {
                record.memory.liveness_failed = true;
                changed = true;
            }
            ProbeKind::Readiness if failed && was_ready => {
                record.probed_ready = false;
                changed = true;
            }
            _ => {}
        }
        // A readiness probe that keeps failing before the container was
        // ever ready is reported once per threshold, not every period.
        let report = t.kind == ProbeKind::Liveness || failures == t.probe.failure_threshold.max(1);
        if report {
            let (ns, name, uid) = &t.pod;
            let message = format!(
                "{} probe of container {} failed ({failures} in a row): {why}",
                t.kind.name(),
                t.slot.container
            );
            self.event(
                &mut state,
                (ns, name, uid),
                EventType::Warning,
                "Unhealthy",
                message,
            );
        }
        if changed {
            drop(state);
            self.wake();
        }
    }
}

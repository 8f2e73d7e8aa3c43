//! Liveness probes: exec, HTTP GET and TCP, run from the worker against
//! running containers on each probe's period. `failureThreshold` failures in
//! a row mark the slot `liveness_failed`; the reconciler then stops the
//! container and the restart policy brings it back.

use std::time::Duration;

use api::event::EventType;
use api::pod::Probe;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use super::Agent;
use crate::docker::now_ms;
use crate::model::Slot;

/// Where and what to probe.
struct Target {
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
                let Some(probe) = &c.liveness_probe else {
                    continue;
                };
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
                let pod_ref = (
                    pod.metadata.namespace.clone(),
                    pod.metadata.name.clone(),
                    pod.metadata.uid.clone(),
                );
                due.push(Target {
                    slot,
                    container_id: container.id.clone(),
                    ip,
                    probe: probe.clone(),
                    pod: pod_ref,
                });
            }
        }
        for t in due {
            let record = state.records.entry(t.slot.clone()).or_default();
            if record.probing || now < record.next_probe_at_ms || record.memory.liveness_failed {
                continue;
            }
            record.probing = true;
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
        record.probing = false;
        record.next_probe_at_ms = now + u64::from(t.probe.period_seconds.max(1)) * 1_000;
        if !still_running {
            return;
        }
        match outcome {
            Ok(()) => record.liveness_failures = 0,
            Err(why) => {
                record.liveness_failures += 1;
                let failures = record.liveness_failures;
                let failed = failures >= t.probe.failure_threshold.max(1);
                if failed {
                    record.memory.liveness_failed = true;
                }
                let (ns, name, uid) = &t.pod;
                let message = format!(
                    "liveness probe of container {} failed ({failures} in a row): {why}",
                    t.slot.container
                );
                self.event(
                    &mut state,
                    (ns, name, uid),
                    EventType::Warning,
                    "Unhealthy",
                    message,
                );
                if failed {
                    drop(state);
                    self.wake();
                }
            }
        }
    }
}

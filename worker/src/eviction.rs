//! Spot eviction notices: Azure Scheduled Events, polled from the instance
//! metadata service (IMDS) once a second.
//!
//! ```text
//! GET /metadata/scheduledevents?api-version=2020-07-01  (Metadata: true)
//!   └─ a Preempt naming this VM, not handled yet
//!        ├─ Master.drain(this node, force)      cordon + pods rescheduled elsewhere
//!        ├─ Master.prepare_eviction on the master of this VM, if any
//!        │                                       leadership handed over + export
//!        ├─ wait until this node's containers have stopped (the drain's deletes
//!        │  reach the agent through probes; each stops within its grace period)
//!        └─ POST /metadata/scheduledevents  {"StartRequests":[{"EventId":…}]}
//! ```
//!
//! Azure gives a Preempt at least 30 s (`NotBefore`); every step is bounded
//! so that the acknowledgement goes out [`ACK_MARGIN`] before then at the
//! latest, however late the notice was seen ([`ack_deadline`]), and a step that fails
//! (no master answers) does not hold the others back: the worker still stops
//! its containers and acknowledges. Events for other VMs (scheduled events
//! go to every VM of a scale or availability set) and other event types are
//! ignored. [`preempt_for`] is the pure decision; [`run`] does the I/O.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use api::master::{DrainRequest, MasterClient, PrepareEvictionRequest};
use serde::{Deserialize, Serialize};

use crate::agent::Agent;

/// The Scheduled Events document (only the fields mkube reads; Azure may
/// add others, which are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduledEvents {
    /// Changes whenever the set of events changes.
    #[serde(default)]
    pub document_incarnation: u64,
    /// The pending events.
    #[serde(default)]
    pub events: Vec<ScheduledEvent>,
}

/// One scheduled event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduledEvent {
    /// Its id, acknowledged by a StartRequest.
    pub event_id: String,
    /// `Preempt`, `Freeze`, `Reboot`, `Redeploy` or `Terminate`.
    pub event_type: String,
    /// The VMs it applies to.
    #[serde(default)]
    pub resources: Vec<String>,
    /// `Scheduled` or `Started`.
    #[serde(default)]
    pub event_status: String,
    /// When it may start (RFC 1123), or empty once started.
    #[serde(default)]
    pub not_before: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StartRequests<'a> {
    start_requests: Vec<StartRequest<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StartRequest<'a> {
    event_id: &'a str,
}

/// The Preempt of `doc` that names `vm` and was not handled yet.
pub fn preempt_for<'a>(
    doc: &'a ScheduledEvents,
    vm: &str,
    handled: &HashSet<String>,
) -> Option<&'a ScheduledEvent> {
    doc.events.iter().find(|e| {
        e.event_type == "Preempt"
            && e.resources.iter().any(|r| r.eq_ignore_ascii_case(vm))
            && !handled.contains(&e.event_id)
    })
}

/// How long before `NotBefore` the acknowledgement goes out at the latest.
pub const ACK_MARGIN: Duration = Duration::from_secs(2);

/// How long after the notice the acknowledgement may wait for the node's
/// containers: the stop budget, but never past `ACK_MARGIN` before the
/// event's `NotBefore` (RFC 1123, when Azure may evict anyway); an event
/// without one has started, so nothing is waited for. Pure: `now` is given.
pub fn ack_deadline(
    now: std::time::SystemTime,
    not_before: &str,
    stop_budget: Duration,
) -> Duration {
    if not_before.trim().is_empty() {
        return Duration::ZERO;
    }
    let Ok(at) = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(not_before.trim())
    else {
        return stop_budget;
    };
    let Ok(now) = jiff::Timestamp::try_from(now) else {
        return stop_budget;
    };
    let left = Duration::try_from(at.duration_since(now)).unwrap_or_default();
    stop_budget.min(left.saturating_sub(ACK_MARGIN))
}

/// Settings of the handler.
#[derive(Debug, Clone)]
pub struct EvictionConfig {
    /// The metadata service, `http://169.254.169.254` on Azure.
    pub imds: String,
    /// This VM's name as Scheduled Events write it.
    pub vm: String,
    /// This node's name.
    pub node: String,
    /// The masters (for the drain).
    pub masters: Vec<String>,
    /// The master on this VM, if one runs here.
    pub local_master: Option<String>,
    /// The cluster token.
    pub token: Option<String>,
    /// TLS towards the masters; `None` speaks plain HTTP.
    pub tls: Option<rpc::ClientTls>,
    /// Time between polls (Azure allows at most 5 a second).
    pub poll_interval: Duration,
    /// How long the node's containers may take to stop before the ack.
    pub stop_budget: Duration,
}

/// Polls and handles eviction notices until `shutdown`.
pub async fn run(
    agent: Agent,
    config: EvictionConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "scheduled events: cannot build an HTTP client; eviction notices are ignored");
            return shutdown.await;
        }
    };
    let url = format!(
        "{}/metadata/scheduledevents?api-version=2020-07-01",
        config.imds.trim_end_matches('/')
    );
    tracing::info!(%url, vm = %config.vm, "watching for Spot eviction notices");
    let mut handled = HashSet::new();
    let mut warned = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
        let doc = match fetch(&http, &url).await {
            Ok(d) => {
                warned = false;
                d
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(%url, error = %e, "scheduled events unavailable; retrying every poll");
                    warned = true;
                }
                continue;
            }
        };
        let Some(event) = preempt_for(&doc, &config.vm, &handled).cloned() else {
            continue;
        };
        handled.insert(event.event_id.clone());
        handle(&agent, &config, &http, &url, &event).await;
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<ScheduledEvents, String> {
    let response = http
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| format!("unexpected document: {e}"))
}

fn client(address: &str, config: &EvictionConfig, timeout: Duration) -> Option<MasterClient> {
    let config = rpc::ClientConfig {
        token: config.token.clone(),
        tls: config.tls.clone(),
        default_timeout: timeout,
        ..Default::default()
    };
    rpc::Client::new(address, config)
        .ok()
        .map(MasterClient::new)
}

async fn handle(
    agent: &Agent,
    config: &EvictionConfig,
    http: &reqwest::Client,
    url: &str,
    event: &ScheduledEvent,
) {
    let started = Instant::now();
    let budget = ack_deadline(
        std::time::SystemTime::now(),
        &event.not_before,
        config.stop_budget,
    );
    let deadline = started + budget;
    // Every step is bounded by what is left before the acknowledgement
    // (a second at least, so that a late notice still tries each once).
    let left = |cap: Duration| {
        deadline
            .saturating_duration_since(Instant::now())
            .min(cap)
            .max(Duration::from_secs(1))
    };
    tracing::warn!(event = %event.event_id, not_before = %event.not_before, ?budget, "Spot eviction notice for this VM: draining");
    // 1. Cordon and reschedule: any master will do (followers forward writes).
    let mut drained = false;
    for address in &config.masters {
        let Some(master) = client(address, config, left(Duration::from_secs(5))) else {
            continue;
        };
        match master
            .drain(&DrainRequest {
                node: config.node.clone(),
                force: true,
                disable_eviction: true,
            })
            .await
        {
            Ok(answer) => {
                tracing::info!(master = %address, evicted = answer.evicted.len(), "drained: pods are rescheduled elsewhere");
                drained = true;
                break;
            }
            Err(e) => {
                tracing::warn!(master = %address, error = %e, "drain failed; trying the next master")
            }
        }
    }
    // 2. The master on this VM hands leadership over and exports.
    if let Some(address) = &config.local_master
        && let Some(master) = client(address, config, left(Duration::from_secs(12)))
    {
        match master.prepare_eviction(&PrepareEvictionRequest {}).await {
            Ok(a) => {
                tracing::info!(leadership_moved = a.leadership_moved, exported_index = ?a.exported_index, "the local master is ready for the eviction")
            }
            Err(e) => {
                tracing::warn!(master = %address, error = %e, "the local master could not prepare")
            }
        }
    }
    // 3. Containers stop as the drain's deletes arrive; without a master, stop them here.
    if !drained {
        agent.forget_desired();
    }
    while agent.running_containers() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = agent.running_containers();
    if left > 0 {
        tracing::warn!(left, "containers still running at the acknowledgement");
    }
    // 4. Acknowledge: the eviction may proceed.
    let body = StartRequests {
        start_requests: vec![StartRequest {
            event_id: &event.event_id,
        }],
    };
    match http
        .post(url)
        .header("Metadata", "true")
        .json(&body)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            tracing::warn!(event = %event.event_id, elapsed_ms = started.elapsed().as_millis() as u64, "eviction acknowledged")
        }
        Ok(r) => tracing::error!(status = %r.status(), "the acknowledgement was refused"),
        Err(e) => tracing::error!(error = %e, "the acknowledgement failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> ScheduledEvents {
        serde_json::from_str(
            r#"{"DocumentIncarnation": 3, "Events": [
                {"EventId": "a", "EventType": "Freeze", "ResourceType": "VirtualMachine",
                 "Resources": ["vm-1"], "EventStatus": "Scheduled", "NotBefore": "", "Description": "",
                 "EventSource": "Platform", "DurationInSeconds": 5},
                {"EventId": "b", "EventType": "Preempt", "ResourceType": "VirtualMachine",
                 "Resources": ["vm-2"], "EventStatus": "Scheduled",
                 "NotBefore": "Mon, 30 Nov 2026 02:00:30 GMT", "Description": "", "EventSource": "Platform",
                 "DurationInSeconds": -1},
                {"EventId": "c", "EventType": "Preempt", "ResourceType": "VirtualMachine",
                 "Resources": ["VM-1"], "EventStatus": "Scheduled",
                 "NotBefore": "Mon, 30 Nov 2026 02:00:30 GMT"}
            ]}"#,
        )
        .expect("the documented shape parses, extra fields and all")
    }

    #[test]
    fn only_a_preempt_naming_this_vm_counts_once() {
        let d = doc();
        let mut handled = HashSet::new();
        let e = preempt_for(&d, "vm-1", &handled).expect("the Preempt for vm-1");
        assert_eq!(
            e.event_id, "c",
            "the Freeze is not an eviction; names compare case-insensitively"
        );
        handled.insert("c".to_owned());
        assert!(preempt_for(&d, "vm-1", &handled).is_none(), "handled once");
        assert!(
            preempt_for(&d, "vm-3", &HashSet::new()).is_none(),
            "other VMs' events are ignored"
        );
        assert_eq!(d.document_incarnation, 3);
        assert!(preempt_for(&ScheduledEvents::default(), "vm-1", &HashSet::new()).is_none());
    }

    #[test]
    fn the_acknowledgement_goes_out_before_not_before() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let at = |secs: u64| {
            jiff::fmt::rfc2822::DateTimePrinter::new()
                .timestamp_to_rfc9110_string(
                    &jiff::Timestamp::try_from(now + Duration::from_secs(secs)).expect("a time"),
                )
                .expect("printable")
        };
        let budget = Duration::from_secs(20);
        // Plenty of time: the stop budget.
        assert_eq!(ack_deadline(now, &at(60), budget), budget);
        // NotBefore is near: the ack goes out a margin before it.
        assert_eq!(
            ack_deadline(now, &at(10), budget),
            Duration::from_secs(10) - ACK_MARGIN
        );
        assert_eq!(ack_deadline(now, &at(1), budget), Duration::ZERO);
        // Started (empty NotBefore): no waiting.
        assert_eq!(ack_deadline(now, "", budget), Duration::ZERO);
        // Unreadable: the budget, as before.
        assert_eq!(ack_deadline(now, "soon", budget), budget);
    }

    #[test]
    fn the_acknowledgement_has_the_documented_shape() {
        let body = StartRequests {
            start_requests: vec![StartRequest { event_id: "c" }],
        };
        assert_eq!(
            serde_json::to_string(&body).expect("json"),
            r#"{"StartRequests":[{"EventId":"c"}]}"#
        );
    }
}

//! Peer revival (leader only): starts the deallocated VMs of nodes that went
//! silent, through ARM (`cloud::vms`), as `controllers::revival` decides.

use std::time::Duration;

use api::{EventType, Kind};
use cloud::vms::PowerState;

use super::{Context, Snapshot};
use crate::controllers::revival::{Backoffs, NodeHealth, RevivalTiming, due};
use crate::events::event;
use crate::metrics::now_ms;

/// Time between looks at the nodes.
const INTERVAL: Duration = Duration::from_secs(15);
const SOURCE: &str = "peer-revival";

/// Runs until the leadership ends (the caller aborts it then).
pub(super) async fn run(ctx: Context) {
    let Some(vms) = ctx.vms.clone() else {
        return;
    };
    let timing = RevivalTiming::default();
    let mut backoffs = Backoffs::default();
    while ctx.still_leading() {
        tokio::time::sleep(INTERVAL).await;
        let Ok(snap) = Snapshot::read(&ctx.store).await else {
            continue;
        };
        let nodes: Vec<NodeHealth> = snap
            .nodes
            .iter()
            .map(|n| NodeHealth {
                name: n.object.metadata.name.clone(),
                ready: n.object.is_ready(),
                silent_since_ms: n
                    .object
                    .status
                    .as_ref()
                    .and_then(|s| s.last_heartbeat_time.as_deref())
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64),
            })
            .collect();
        let now = now_ms() as u64;
        for vm in due(&nodes, &mut backoffs, now, timing) {
            backoffs.attempted(&vm, now, timing);
            let (type_, reason, message) = match vms.power_state(&vm).await {
                Ok(state) if state.needs_start() => match vms.start(&vm).await {
                    Ok(()) => (
                        EventType::Normal,
                        "VMStarting",
                        format!("VM {vm} was {state:?}; starting it"),
                    ),
                    Err(e) => (
                        EventType::Warning,
                        "VMStartFailed",
                        format!("starting VM {vm} failed: {e}"),
                    ),
                },
                Ok(PowerState::Running) => {
                    tracing::info!(%vm, "a silent node's VM is running; nothing to start");
                    continue;
                }
                Ok(state) => {
                    tracing::info!(%vm, ?state, "a silent node's VM is neither running nor stopped; looking again later");
                    continue;
                }
                Err(e) => (
                    EventType::Warning,
                    "VMStateUnknown",
                    format!("reading VM {vm}: {e}"),
                ),
            };
            tracing::warn!(%vm, reason, "{message}");
            if let Some(node) = snap.nodes.iter().find(|n| n.object.metadata.name == vm) {
                let op = event(
                    Kind::Node,
                    &node.object.metadata,
                    type_,
                    reason,
                    message,
                    SOURCE,
                );
                let _ = ctx
                    .store
                    .txn(kvs::kv::Txn {
                        compares: Vec::new(),
                        success: vec![op],
                        failure: Vec::new(),
                    })
                    .await;
            }
        }
    }
}

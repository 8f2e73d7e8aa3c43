//! Pod status from what the worker sees: a pure function of the pod, its
//! containers as observed, and what the agent remembers per slot.
//!
//! Phases follow Kubernetes: `Running` while any container runs or is
//! backing off to restart; `Succeeded`/`Failed` once every container has
//! exited for good; `Pending` before that.

use std::collections::BTreeMap;

use api::pod::{ContainerState, ContainerStatus, HostPort, Pod, PodPhase, PodStatus};

use crate::model::{Observed, RunState, Slot};
use crate::reconcile::{Backoff, SlotMemory, will_restart};
use crate::runtime::Details;

/// What the agent remembers about a slot, beyond what the reconciler reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotRecord {
    /// What the reconciler reads.
    pub memory: SlotMemory,
    /// Why the container is not running, when an operation failed
    /// (`ErrImagePull`, `CreateContainerError`) and the message.
    pub waiting: Option<(String, String)>,
    /// How the previous run ended.
    pub last_state: Option<ContainerState>,
    /// The slot has had a container started (later starts are restarts).
    pub started_once: bool,
    /// The liveness probe's progress.
    pub liveness: ProbeTrack,
    /// The readiness probe's progress.
    pub readiness: ProbeTrack,
    /// The readiness probe's verdict for the running container: false from
    /// its start until the probe first succeeds.
    pub probed_ready: bool,
    /// Consecutive failed operations (pull, create, start), for their back-off.
    pub failures: u32,
}

/// Where one of a container's probes stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeTrack {
    /// Consecutive failures.
    pub failures: u32,
    /// Consecutive successes.
    pub successes: u32,
    /// When the next probe is due (ms since the epoch).
    pub next_at_ms: u64,
    /// A probe is in flight.
    pub in_flight: bool,
}

/// One slot as the status sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotView<'a> {
    /// Its container, if one exists.
    pub observed: Option<&'a Observed>,
    /// That container's details.
    pub details: Option<&'a Details>,
    /// The agent's record.
    pub record: Option<&'a SlotRecord>,
}

/// The status of `pod` given each slot's view (by container name).
pub fn pod_status(
    pod: &Pod,
    views: &BTreeMap<Slot, SlotView<'_>>,
    host_ip: &str,
    start_time: Option<String>,
    backoff: Backoff,
    now_ms: u64,
) -> PodStatus {
    let mut statuses = Vec::new();
    for c in &pod.spec.containers {
        let slot = Slot {
            uid: pod.metadata.uid.clone(),
            container: c.name.clone(),
        };
        let view = views.get(&slot).copied().unwrap_or_default();
        statuses.push(container_status(
            pod, &c.name, &c.image, view, backoff, now_ms,
        ));
    }
    let host_ports = pod
        .spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().map(move |p| (c, p)))
        .filter_map(|(c, p)| {
            p.host_port.map(|h| HostPort {
                container: c.name.clone(),
                container_port: p.container_port,
                host_port: h,
                protocol: p.protocol,
            })
        })
        .collect();
    let (phase, reason) = phase(&statuses);
    PodStatus {
        phase,
        reason,
        message: None,
        host_ip: Some(host_ip.to_string()),
        host_ports,
        start_time,
        container_statuses: statuses,
    }
}

fn container_status(
    pod: &Pod,
    name: &str,
    image: &str,
    view: SlotView<'_>,
    backoff: Backoff,
    now_ms: u64,
) -> ContainerStatus {
    let record = view.record.cloned().unwrap_or_default();
    let details = view.details.cloned().unwrap_or_default();
    let waiting = |reason: &str, message: Option<String>| ContainerState::Waiting {
        reason: reason.into(),
        message,
    };
    let mut last_state = record.last_state.clone();
    let state = match view.observed.map(|o| &o.state) {
        Some(RunState::Running { .. }) => ContainerState::Running {
            started_at: details.started_at.clone().unwrap_or_default(),
        },
        Some(RunState::Exited {
            exit_code,
            started_at_ms,
            finished_at_ms,
            oom_killed,
        }) => {
            let terminated = ContainerState::Terminated {
                exit_code: *exit_code,
                reason: termination_reason(*exit_code, *oom_killed).into(),
                started_at: details.started_at.clone(),
                finished_at: details.finished_at.clone(),
                message: details.output.clone(),
            };
            if will_restart(
                pod.spec.restart_policy,
                *exit_code,
                record.memory.liveness_failed,
            ) {
                let ran = finished_at_ms.saturating_sub(*started_at_ms);
                let due = finished_at_ms
                    .saturating_add(backoff.delay_ms(record.memory.restart_count, ran));
                last_state = Some(terminated);
                let message = (due > now_ms).then(|| {
                    format!(
                        "back-off {}ms restarting failed container {name} of pod {}",
                        due - now_ms,
                        pod.key()
                    )
                });
                match &record.waiting {
                    Some((reason, message)) => waiting(reason, Some(message.clone())),
                    None => waiting("CrashLoopBackOff", message),
                }
            } else {
                terminated
            }
        }
        Some(RunState::Created) | None => match &record.waiting {
            Some((reason, message)) => waiting(reason, Some(message.clone())),
            None => waiting("ContainerCreating", None),
        },
        Some(RunState::Other(s)) => waiting(
            "ContainerCreating",
            Some(format!("the runtime reports it {s}")),
        ),
    };
    let has_readiness_probe = pod
        .spec
        .containers
        .iter()
        .any(|c| c.name == name && c.readiness_probe.is_some());
    let ready = matches!(state, ContainerState::Running { .. })
        && !record.memory.liveness_failed
        && (!has_readiness_probe || record.probed_ready);
    ContainerStatus {
        name: name.into(),
        state,
        last_state,
        ready,
        restart_count: record.memory.restart_count,
        image: image.into(),
        container_id: view.observed.map(|o| format!("docker://{}", o.id)),
    }
}

fn termination_reason(exit_code: i64, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

fn phase(statuses: &[ContainerStatus]) -> (PodPhase, Option<String>) {
    let running = statuses.iter().any(|s| {
        matches!(s.state, ContainerState::Running { .. })
            || matches!(&s.state, ContainerState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
    });
    if running {
        return (PodPhase::Running, None);
    }
    let codes: Option<Vec<i64>> = statuses
        .iter()
        .map(|s| match s.state {
            ContainerState::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        })
        .collect();
    match codes {
        Some(codes) if !codes.is_empty() && codes.iter().all(|c| *c == 0) => {
            (PodPhase::Succeeded, None)
        }
        Some(codes) if !codes.is_empty() => (PodPhase::Failed, Some("Error".into())),
        _ => {
            let reason = statuses.iter().find_map(|s| match &s.state {
                ContainerState::Waiting { reason, .. } if reason != "ContainerCreating" => {
                    Some(reason.clone())
                }
                _ => None,
            });
            (PodPhase::Pending, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::pod::{Container, PodSpec, RestartPolicy};

    fn pod(policy: RestartPolicy) -> Pod {
        let c = Container::new("app", "img");
        let mut p = Pod::new(
            "p",
            PodSpec {
                containers: vec![c],
                restart_policy: policy,
                termination_grace_period_seconds: None,
                node_selector: BTreeMap::new(),
                tolerations: Vec::new(),
                node_name: None,
            },
        );
        p.metadata.uid = "u".into();
        p
    }

    fn status_with(
        policy: RestartPolicy,
        state: Option<RunState>,
        record: SlotRecord,
    ) -> PodStatus {
        let p = pod(policy);
        let observed = state.map(|s| Observed {
            id: "x".into(),
            node: "n".into(),
            pod: "default/p".into(),
            slot: None,
            spec_hash: String::new(),
            grace_seconds: None,
            state: s,
        });
        let slot = Slot {
            uid: "u".into(),
            container: "app".into(),
        };
        let views = BTreeMap::from([(
            slot,
            SlotView {
                observed: observed.as_ref(),
                details: None,
                record: Some(&record),
            },
        )]);
        pod_status(&p, &views, "10.0.0.1", None, Backoff::default(), 1_000)
    }

    #[test]
    fn phases_follow_the_containers() {
        let exited = |code| {
            Some(RunState::Exited {
                exit_code: code,
                started_at_ms: 0,
                finished_at_ms: 900,
                oom_killed: false,
            })
        };
        let s = status_with(
            RestartPolicy::Always,
            Some(RunState::Running { started_at_ms: 1 }),
            SlotRecord::default(),
        );
        assert_eq!(s.phase, PodPhase::Running);
        assert!(s.container_statuses[0].ready);
        let s = status_with(RestartPolicy::Never, exited(3), SlotRecord::default());
        assert_eq!(s.phase, PodPhase::Failed);
        assert!(matches!(
            s.container_statuses[0].state,
            ContainerState::Terminated { exit_code: 3, .. }
        ));
        assert_eq!(
            status_with(RestartPolicy::OnFailure, exited(0), SlotRecord::default()).phase,
            PodPhase::Succeeded
        );
        let s = status_with(RestartPolicy::OnFailure, exited(1), SlotRecord::default());
        assert_eq!(s.phase, PodPhase::Running, "backing off counts as running");
        let record = SlotRecord {
            waiting: Some(("ErrImagePull".into(), "no registry".into())),
            ..Default::default()
        };
        let s = status_with(RestartPolicy::Always, None, record);
        assert_eq!(
            (s.phase, s.reason.as_deref()),
            (PodPhase::Pending, Some("ErrImagePull"))
        );
    }
}

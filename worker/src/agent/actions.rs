//! Applying a plan: one spawned task per operation, bounded by the agent's
//! semaphore, each marking its container and slot busy until it finishes
//! (and for a round that was observing meanwhile: `State::finish`) and
//! then recording the outcome (restart counts, events, retry times).

use api::event::EventType;
use api::pod::{ContainerState, Pod};
use api::quantity::{parse_cpu_millis, parse_memory_bytes};

use super::{Agent, State};
use crate::model::{RunState, Slot, container_name, labels_for};
use crate::reconcile::{Create, Plan, Stop, StopReason};
use crate::runtime::{CreateSpec, PodDns, RuntimeError, now_ms};
use crate::status::ProbeTrack;

/// Spawns the plan's operations.
pub(super) fn dispatch(agent: &Agent, plan: Plan, desired: Vec<Pod>) {
    let mut state = agent.state();
    for c in plan.create {
        let Some(pod) = desired.get(c.pod).cloned() else {
            continue;
        };
        state.busy_slots.insert(c.slot.clone());
        let agent = agent.clone();
        tokio::spawn(async move { agent.create(pod, c).await });
    }
    for (id, slot) in plan.start {
        state.busy_ids.insert(id.clone());
        state.busy_slots.insert(slot.clone());
        let agent = agent.clone();
        tokio::spawn(async move { agent.start(id, slot).await });
    }
    for stop in plan.stop {
        state.busy_ids.insert(stop.id.clone());
        if let Some(slot) = &stop.slot {
            state.busy_slots.insert(slot.clone());
        }
        let agent = agent.clone();
        tokio::spawn(async move { agent.stop(stop).await });
    }
    for id in plan.remove {
        state.busy_ids.insert(id.clone());
        let agent = agent.clone();
        tokio::spawn(async move { agent.remove(id).await });
    }
}

fn pod_ref(pod: &Pod) -> (&str, &str, &str) {
    (
        &pod.metadata.namespace,
        &pod.metadata.name,
        &pod.metadata.uid,
    )
}

impl Agent {
    async fn create(&self, pod: Pod, c: Create) {
        let result = {
            let _permit = self.inner.ops.acquire().await;
            self.create_container(&pod, &c).await
        };
        let now = now_ms();
        let mut state = self.state();
        let created = result.as_ref().ok().map(|(id, _)| id.as_str());
        state.finish(created, Some(&c.slot));
        let name = &c.slot.container;
        match result {
            Ok((id, pulled)) => {
                if pulled {
                    let image = pod
                        .spec
                        .containers
                        .get(c.container)
                        .map(|c| c.image.clone())
                        .unwrap_or_default();
                    self.event(
                        &mut state,
                        pod_ref(&pod),
                        EventType::Normal,
                        "Pulled",
                        format!("pulled image {image}"),
                    );
                }
                self.started(&mut state, &pod, &c.slot, now);
                state
                    .start_times
                    .entry(pod.metadata.uid.clone())
                    .or_insert_with(crate::runtime::now_rfc3339);
                self.event(
                    &mut state,
                    pod_ref(&pod),
                    EventType::Normal,
                    "Started",
                    format!("started container {name} ({})", short(&id)),
                );
            }
            Err(e) => {
                let reason = match e {
                    RuntimeError::ImagePull { .. } => "ErrImagePull",
                    _ => "CreateContainerError",
                };
                self.failed(&mut state, &c.slot, reason, &e, now);
                self.event(
                    &mut state,
                    pod_ref(&pod),
                    EventType::Warning,
                    "Failed",
                    format!("container {name}: {e}"),
                );
            }
        }
        drop(state);
        self.wake();
    }

    async fn create_container(
        &self,
        pod: &Pod,
        c: &Create,
    ) -> Result<(String, bool), RuntimeError> {
        let spec = pod.spec.containers.get(c.container).ok_or_else(|| {
            RuntimeError::NotFound(format!("container {} of {}", c.slot.container, pod.key()))
        })?;
        let pulled = self.inner.runtime.ensure_image(&spec.image).await?;
        let config = &self.inner.config;
        // Docker refuses a resolver for a container that joins another's
        // network namespace: such pods use the namespace owner's.
        let own_network = c.join_network_of.is_none()
            && config
                .pod_network
                .as_ref()
                .is_none_or(|m| !m.starts_with("container:") && m != "host");
        let dns = (own_network && !config.cluster_dns.is_empty()).then(|| {
            PodDns::cluster_first(
                &config.cluster_dns,
                &config.cluster_domain,
                &pod.metadata.namespace,
            )
        });
        let (network_mode, ports) = match &c.join_network_of {
            Some(first) => (Some(format!("container:{first}")), Vec::new()),
            None if config.pod_network.is_some() => (config.pod_network.clone(), Vec::new()),
            None => {
                let ports = pod
                    .spec
                    .containers
                    .iter()
                    .flat_map(|c| &c.ports)
                    .filter_map(|p| {
                        p.host_port
                            .map(|h| (p.container_port, h, p.protocol.docker_name()))
                    })
                    .collect();
                (None, ports)
            }
        };
        let limits = &spec.resources.limits;
        let create = CreateSpec {
            name: container_name(&config.node, pod, spec),
            image: spec.image.clone(),
            entrypoint: spec.command.clone(),
            cmd: spec.args.clone(),
            env: spec
                .env
                .iter()
                .map(|e| format!("{}={}", e.name, e.value))
                .collect(),
            labels: labels_for(&config.node, pod, c.container, spec),
            ports,
            network_mode,
            publish_ip: config.publish_ip.clone(),
            nano_cpus: nano_cpus(limits.cpu.as_deref()),
            memory_bytes: limits
                .memory
                .as_deref()
                .and_then(|q| parse_memory_bytes(q).ok())
                .and_then(|b| i64::try_from(b).ok()),
            stop_timeout_seconds: pod.spec.grace_period_seconds(),
            dns,
        };
        let id = self.inner.runtime.create_and_start(&create).await?;
        Ok((id, pulled))
    }

    async fn start(&self, id: String, slot: Slot) {
        let result = {
            let _permit = self.inner.ops.acquire().await;
            self.inner.runtime.start(&id).await
        };
        let now = now_ms();
        let mut state = self.state();
        state.finish(Some(&id), Some(&slot));
        state.inspected.remove(&id);
        let pod = state.desired.get(&slot.uid).cloned();
        let previous = state
            .observed
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.state.clone());
        let details = state.details.get(&id).cloned().unwrap_or_default();
        let Some(pod) = pod else { return };
        match result {
            Ok(()) => {
                if let Some(RunState::Exited {
                    exit_code,
                    oom_killed,
                    ..
                }) = previous
                {
                    let reason = if oom_killed {
                        "OOMKilled"
                    } else if exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    };
                    let last = ContainerState::Terminated {
                        exit_code,
                        reason: reason.into(),
                        started_at: details.started_at,
                        finished_at: details.finished_at,
                        message: None,
                    };
                    state.records.entry(slot.clone()).or_default().last_state = Some(last);
                }
                self.started(&mut state, &pod, &slot, now);
                let count = state
                    .records
                    .get(&slot)
                    .map(|r| r.memory.restart_count)
                    .unwrap_or(0);
                self.event(
                    &mut state,
                    pod_ref(&pod),
                    EventType::Normal,
                    "Started",
                    format!("restarted container {} (restart {count})", slot.container),
                );
            }
            Err(e) => {
                self.failed(&mut state, &slot, "RunContainerError", &e, now);
                self.event(
                    &mut state,
                    pod_ref(&pod),
                    EventType::Warning,
                    "Failed",
                    format!("container {}: {e}", slot.container),
                );
            }
        }
        drop(state);
        self.wake();
    }

    /// Records a successful start of a slot's container.
    fn started(&self, state: &mut State, pod: &Pod, slot: &Slot, now: u64) {
        let container = pod
            .spec
            .containers
            .iter()
            .find(|c| c.name == slot.container);
        let delay_ms = |probe: Option<&api::pod::Probe>| {
            probe.map_or(0, |p| u64::from(p.initial_delay_seconds) * 1_000)
        };
        let liveness_delay = delay_ms(container.and_then(|c| c.liveness_probe.as_ref()));
        let readiness_delay = delay_ms(container.and_then(|c| c.readiness_probe.as_ref()));
        let record = state.records.entry(slot.clone()).or_default();
        if record.started_once {
            record.memory.restart_count += 1;
        }
        record.started_once = true;
        record.waiting = None;
        record.failures = 0;
        record.memory.retry_at_ms = 0;
        record.memory.liveness_failed = false;
        record.liveness = ProbeTrack {
            next_at_ms: now + liveness_delay,
            ..ProbeTrack::default()
        };
        record.readiness = ProbeTrack {
            next_at_ms: now + readiness_delay,
            ..ProbeTrack::default()
        };
        record.probed_ready = false;
    }

    /// Records a failed operation: the reason shows in the container's
    /// waiting state and the next attempt backs off.
    fn failed(&self, state: &mut State, slot: &Slot, reason: &str, e: &RuntimeError, now: u64) {
        let backoff = self.inner.config.backoff;
        let record = state.records.entry(slot.clone()).or_default();
        record.failures += 1;
        record.waiting = Some((reason.to_string(), e.to_string()));
        record.memory.retry_at_ms =
            now + backoff.delay_ms(record.failures, 0).max(backoff.initial_ms);
    }

    async fn stop(&self, stop: Stop) {
        let result = {
            let _permit = self.inner.ops.acquire().await;
            let stopped = self.inner.runtime.stop(&stop.id, stop.grace_seconds).await;
            match stopped {
                Ok(()) if stop.remove => self.inner.runtime.remove(&stop.id).await,
                other => other,
            }
        };
        let mut state = self.state();
        state.finish(Some(&stop.id), stop.slot.as_ref());
        state.inspected.remove(&stop.id);
        let observed = state.observed.iter().find(|o| o.id == stop.id).cloned();
        if let Some(o) = observed {
            let (namespace, name) = o.pod.split_once('/').unwrap_or(("", &o.pod));
            let (namespace, name) = (namespace.to_string(), name.to_string());
            let uid = o.slot.as_ref().map(|s| s.uid.clone()).unwrap_or_default();
            let container = o
                .slot
                .as_ref()
                .map(|s| s.container.clone())
                .unwrap_or_default();
            let why = match stop.reason {
                StopReason::PodDeleted => "its pod was deleted",
                StopReason::LivenessFailed => "it failed its liveness probe",
                StopReason::SpecChanged => "its spec changed",
                StopReason::SandboxChanged => "the pod's first container restarted",
                StopReason::Duplicate => "another container of the same slot exists",
            };
            let (type_, reason, message) = match &result {
                Ok(()) => (
                    EventType::Normal,
                    "Killing",
                    format!("stopped container {container} because {why}"),
                ),
                Err(e) => (
                    EventType::Warning,
                    "FailedKill",
                    format!("stopping container {container}: {e}"),
                ),
            };
            self.event(
                &mut state,
                (&namespace, &name, &uid),
                type_,
                reason,
                message,
            );
        }
        drop(state);
        self.wake();
    }

    async fn remove(&self, id: String) {
        let result = {
            let _permit = self.inner.ops.acquire().await;
            self.inner.runtime.remove(&id).await
        };
        if let Err(e) = result {
            tracing::warn!(container = %id, error = %e, "removing a container failed");
        }
        let mut state = self.state();
        state.finish(Some(&id), None);
        state.inspected.remove(&id);
        drop(state);
        self.wake();
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Docker's `NanoCpus` for a cpu limit; `None` (no limit) for none, or for
/// one too large for Docker to take (a product that would overflow).
fn nano_cpus(limit: Option<&str>) -> Option<i64> {
    limit
        .and_then(|q| parse_cpu_millis(q).ok())
        .and_then(|m| m.checked_mul(1_000_000))
        .and_then(|n| i64::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::nano_cpus;

    /// A user-given limit times 10⁶ overflowed `u64` (a panic in debug
    /// builds): it is no limit Docker can take, so none.
    #[test]
    fn cpu_limits_become_nano_cpus_without_overflow() {
        assert_eq!(nano_cpus(Some("500m")), Some(500_000_000));
        assert_eq!(nano_cpus(None), None);
        assert_eq!(nano_cpus(Some("18446744073709551m")), None);
        assert_eq!(nano_cpus(Some("10000000000000000m")), None);
    }
}

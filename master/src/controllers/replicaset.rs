//! The ReplicaSet controller's decision: given a ReplicaSet and the pods it
//! controls, how many to create, which to delete, and its status.
//!
//! Finished pods (Succeeded, Failed) are not replicas: they are deleted and
//! replaced. Terminating pods are not replicas either, and are left to go. When there are too many, the least useful go first:
//! unscheduled, then not yet running, then Unknown (on a silent node), then
//! not ready, then the newest (Kubernetes' ranking, simplified).

use api::workloads::{ReplicaSet, ReplicaSetStatus};
use api::{Pod, PodPhase};

use super::termination::is_terminating;
use super::{is_active, is_ready};

/// What to do for one ReplicaSet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods to create from the template.
    pub create: u32,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The status to write, when it differs from the stored one.
    pub status: Option<ReplicaSetStatus>,
}

/// Lower ranks are deleted first.
fn rank(pod: &Pod) -> (u8, std::cmp::Reverse<(Option<String>, String)>) {
    let class = if pod.spec.node_name.is_none() {
        0
    } else {
        match pod.status.as_ref().map(|s| s.phase) {
            None | Some(PodPhase::Pending | PodPhase::Scheduled) => 1,
            Some(PodPhase::Unknown) => 2,
            _ if !is_ready(pod) => 3,
            _ => 4,
        }
    };
    (
        class,
        std::cmp::Reverse((
            pod.metadata.creation_timestamp.clone(),
            pod.metadata.name.clone(),
        )),
    )
}

/// The plan for `rs`, whose controlled pods are `pods`.
pub fn reconcile(rs: &ReplicaSet, pods: &[&Pod]) -> Plan {
    let want = rs.spec.replicas as usize;
    let mut plan = Plan::default();
    // Terminating pods are neither replicas nor to delete: they are going.
    let (mut active, finished): (Vec<&Pod>, Vec<&Pod>) = pods
        .iter()
        .copied()
        .filter(|p| !is_terminating(p))
        .partition(|p| is_active(p));
    plan.delete
        .extend(finished.iter().map(|p| p.metadata.name.clone()));
    if active.len() < want {
        plan.create = (want - active.len()) as u32;
    } else if active.len() > want {
        active.sort_by_key(|p| rank(p));
        let extra = active.len() - want;
        plan.delete
            .extend(active.drain(..extra).map(|p| p.metadata.name.clone()));
    }
    let ready = active.iter().filter(|p| is_ready(p)).count() as u32;
    let status = ReplicaSetStatus {
        replicas: active.len() as u32,
        ready_replicas: ready,
        available_replicas: ready,
        observed_generation: rs.metadata.generation,
    };
    if rs.status.as_ref() != Some(&status) {
        plan.status = Some(status);
    }
    plan
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use api::workloads::{PodTemplateSpec, ReplicaSetSpec, TemplateMeta};
    use api::{Container, ContainerState, ContainerStatus, LabelSelector, ObjectMeta, PodSpec};

    pub(crate) fn rs(replicas: u32) -> ReplicaSet {
        ReplicaSet {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            metadata: ObjectMeta::named("rs"),
            spec: ReplicaSetSpec {
                replicas,
                selector: LabelSelector::default(),
                template: PodTemplateSpec {
                    metadata: TemplateMeta::default(),
                    spec: PodSpec {
                        containers: vec![Container::new("c", "img")],
                        ..PodSpec::default()
                    },
                },
            },
            status: None,
        }
    }

    pub(crate) fn pod(name: &str, node: Option<&str>, phase: Option<PodPhase>) -> Pod {
        let mut p = Pod::new(
            name,
            PodSpec {
                containers: vec![Container::new("c", "img")],
                node_name: node.map(str::to_string),
                ..PodSpec::default()
            },
        );
        p.status = phase.map(|phase| api::PodStatus {
            phase,
            container_statuses: vec![ContainerStatus {
                name: "c".into(),
                state: ContainerState::Waiting {
                    reason: String::new(),
                    message: None,
                },
                last_state: None,
                ready: phase == PodPhase::Running,
                restart_count: 0,
                image: "img".into(),
                container_id: None,
            }],
            ..api::PodStatus::default()
        });
        p
    }

    #[test]
    fn creates_the_missing_and_replaces_the_finished() {
        let done = pod("a", Some("n"), Some(PodPhase::Failed));
        let running = pod("b", Some("n"), Some(PodPhase::Running));
        let plan = reconcile(&rs(3), &[&done, &running]);
        assert_eq!(plan.create, 2);
        assert_eq!(plan.delete, vec!["a".to_string()]);
        let status = plan.status.expect("status");
        assert_eq!((status.replicas, status.ready_replicas), (1, 1));
    }

    #[test]
    fn deletes_the_least_useful_first() {
        let ready = pod("ready", Some("n"), Some(PodPhase::Running));
        let unknown = pod("unknown", Some("n"), Some(PodPhase::Unknown));
        let pending = pod("pending", Some("n"), Some(PodPhase::Pending));
        let unscheduled = pod("unscheduled", None, None);
        let all = [&ready, &unknown, &pending, &unscheduled];
        assert_eq!(
            reconcile(&rs(1), &all).delete,
            vec!["unscheduled", "pending", "unknown"]
        );
        assert_eq!(
            reconcile(&rs(4), &all),
            Plan {
                status: reconcile(&rs(4), &all).status,
                ..Plan::default()
            }
        );
    }

    #[test]
    fn running_twice_on_the_same_state_decides_the_same() {
        let mut set = rs(2);
        let a = pod("a", Some("n"), Some(PodPhase::Running));
        let b = pod("b", Some("n"), Some(PodPhase::Running));
        let first = reconcile(&set, &[&a, &b]);
        set.status = first.status.clone();
        assert_eq!(reconcile(&set, &[&a, &b]), Plan::default());
    }
}

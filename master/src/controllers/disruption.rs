//! PodDisruptionBudgets: what a budget allows now, and which of a node's
//! pods a drain may evict without breaking one.
//!
//! A budget selects pods in its namespace. Of those not finished and not
//! terminating (`expectedPods`), the ready ones are healthy; the bound
//! (`minAvailable`, or `expectedPods - maxUnavailable`, percentages rounded
//! up) is how many must stay healthy, and `disruptionsAllowed` is the
//! healthy pods above it. Evicting a pod that is not ready costs no budget
//! (Kubernetes' rule: it is not available anyway).
//!
//! A drain evicts, one budget unit at a time, the pods every budget
//! covering them allows; the rest are blocked, each with the budget that
//! blocks it. Replacements elsewhere become ready, the budgets allow
//! more, and the next call evicts more: `mkctl drain` calls until nothing
//! is blocked. A Spot `Preempt` cannot wait: it evicts everything and
//! reports the budgets it broke ([`broken`]).

use std::collections::HashMap;

use api::Pod;
use api::batch::{PodDisruptionBudget, PodDisruptionBudgetStatus};

use super::termination::is_terminating;
use super::{is_finished, is_ready};

/// Whether `pdb` covers `pod`.
pub fn covers(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    pdb.metadata.namespace == pod.metadata.namespace
        && !pdb.spec.selector.is_empty()
        && pdb.spec.selector.matches(&pod.metadata.labels)
}

/// The status of `pdb` given every pod (of any namespace).
pub fn status<'a>(
    pdb: &PodDisruptionBudget,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> PodDisruptionBudgetStatus {
    let mut expected = 0u32;
    let mut healthy = 0u32;
    for p in pods {
        if covers(pdb, p) && !is_finished(p) && !is_terminating(p) {
            expected += 1;
            healthy += u32::from(is_ready(p));
        }
    }
    // Validation refuses bad bounds; one stored anyway is read as "keep all".
    let desired = match (&pdb.spec.min_available, &pdb.spec.max_unavailable) {
        (Some(min), _) => min.resolve(expected, true).unwrap_or(expected),
        (None, Some(max)) => expected.saturating_sub(max.resolve(expected, true).unwrap_or(0)),
        (None, None) => expected,
    };
    PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: healthy.saturating_sub(desired),
    }
}

/// The pods of a node a drain evicts: not those already terminating (on
/// their way), nor finished ones, which hold nothing and keep their record
/// (exit codes, a Job's results) until their owner goes.
pub fn drain_candidates<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<&'a Pod> {
    pods.into_iter()
        .filter(|p| !is_terminating(p) && !is_finished(p))
        .collect()
}

/// A pod a drain may not evict yet, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// `namespace/name` of the budget.
    pub budget: String,
    /// A sentence for the user.
    pub message: String,
}

/// Of `candidates` (a node's pods, in order), those a drain may evict now
/// and those `budgets` block, given every pod of the cluster.
pub fn plan_drain<'a>(
    candidates: &[&'a Pod],
    all: &[&Pod],
    budgets: &[&PodDisruptionBudget],
) -> (Vec<&'a Pod>, Vec<Blocked>) {
    let mut allowed: HashMap<usize, PodDisruptionBudgetStatus> = budgets
        .iter()
        .enumerate()
        .map(|(i, b)| (i, status(b, all.iter().copied())))
        .collect();
    let mut evict = Vec::new();
    let mut blocked = Vec::new();
    for pod in candidates {
        let covering: Vec<usize> = budgets
            .iter()
            .enumerate()
            .filter(|(_, b)| covers(b, pod))
            .map(|(i, _)| i)
            .collect();
        let costs = is_ready(pod) && !is_terminating(pod) && !is_finished(pod);
        let blocker = covering
            .iter()
            .copied()
            .find(|i| costs && allowed.get(i).is_some_and(|s| s.disruptions_allowed == 0));
        match blocker {
            Some(i) => {
                let b = budgets[i];
                let s = &allowed[&i];
                blocked.push(Blocked {
                    pod: pod.key(),
                    budget: format!("{}/{}", b.metadata.namespace, b.metadata.name),
                    message: format!(
                        "evicting pod {} would violate PodDisruptionBudget {}/{}: it needs {} healthy pods and {} of {} are",
                        pod.key(),
                        b.metadata.namespace,
                        b.metadata.name,
                        s.desired_healthy,
                        s.current_healthy,
                        s.expected_pods
                    ),
                });
            }
            None => {
                if costs {
                    for i in covering {
                        if let Some(s) = allowed.get_mut(&i) {
                            s.disruptions_allowed = s.disruptions_allowed.saturating_sub(1);
                            s.current_healthy = s.current_healthy.saturating_sub(1);
                        }
                    }
                }
                evict.push(*pod);
            }
        }
    }
    (evict, blocked)
}

/// The budgets that evicting all of `evicted` at once breaks, each with a
/// sentence (for the events a Spot eviction records).
pub fn broken(
    evicted: &[&Pod],
    all: &[&Pod],
    budgets: &[&PodDisruptionBudget],
) -> Vec<(usize, String)> {
    budgets
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let s = status(b, all.iter().copied());
            let lost = evicted
                .iter()
                .filter(|p| covers(b, p) && is_ready(p) && !is_terminating(p))
                .count() as u32;
            (lost > s.disruptions_allowed).then(|| {
                (
                    i,
                    format!(
                        "a Spot eviction took {lost} healthy pods at once; the budget allowed {} (it needs {} healthy pods, {} are left)",
                        s.disruptions_allowed,
                        s.desired_healthy,
                        s.current_healthy.saturating_sub(lost)
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::replicaset::tests::pod;
    use api::batch::PodDisruptionBudgetSpec;
    use api::workloads::IntOrPercent;
    use api::{LabelSelector, ObjectMeta, PodPhase};

    fn pdb(min: Option<u32>, max: Option<&str>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            api_version: "policy/v1".into(),
            kind: "PodDisruptionBudget".into(),
            metadata: ObjectMeta::named("web"),
            spec: PodDisruptionBudgetSpec {
                selector: LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                },
                min_available: min.map(IntOrPercent::Int),
                max_unavailable: max.map(|m| IntOrPercent::Percent(m.into())),
            },
            status: None,
        }
    }

    fn web(name: &str, node: &str, ready: bool) -> Pod {
        let phase = if ready {
            PodPhase::Running
        } else {
            PodPhase::Pending
        };
        let mut p = pod(name, Some(node), Some(phase));
        p.metadata.labels.insert("app".into(), "web".into());
        p
    }

    /// Three ready pods of `app: web`, two of them on n1.
    fn three_ready() -> [Pod; 3] {
        [
            web("a", "n1", true),
            web("b", "n1", true),
            web("c", "n2", true),
        ]
    }

    #[test]
    fn a_budget_allows_the_healthy_pods_above_its_bound() {
        let pods = three_ready();
        let s = status(&pdb(Some(2), None), &pods);
        assert_eq!(
            (s.expected_pods, s.current_healthy, s.disruptions_allowed),
            (3, 3, 1)
        );
        // maxUnavailable 34% of 3 rounds up to 2: one must stay.
        let s = status(&pdb(None, Some("34%")), &pods);
        assert_eq!((s.desired_healthy, s.disruptions_allowed), (1, 2));
    }

    #[test]
    fn a_drain_evicts_what_the_budget_allows_and_names_it_for_the_rest() {
        let pods = three_ready();
        let all: Vec<&Pod> = pods.iter().collect();
        let budget = pdb(Some(2), None);
        let (evict, blocked) = plan_drain(&all[..2], &all, &[&budget]);
        assert_eq!(evict.len(), 1);
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].budget, "default/web");
        assert!(
            blocked[0]
                .message
                .contains("needs 2 healthy pods and 2 of 3"),
            "{}",
            blocked[0].message
        );
        // A pod that is not ready costs nothing.
        let unready = [
            web("a", "n1", false),
            web("b", "n1", true),
            web("c", "n2", true),
        ];
        let all: Vec<&Pod> = unready.iter().collect();
        let (evict, blocked) = plan_drain(&all[..1], &all, &[&budget]);
        assert_eq!((evict.len(), blocked.len()), (1, 0));
    }

    #[test]
    fn a_drain_leaves_finished_and_terminating_pods() {
        let running = web("a", "n1", true);
        let done = pod("done", Some("n1"), Some(PodPhase::Succeeded));
        let mut going = web("b", "n1", true);
        going.metadata.deletion_timestamp = Some("t".into());
        let names: Vec<&str> = drain_candidates([&running, &done, &going])
            .iter()
            .map(|p| p.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn a_spot_eviction_reports_the_budgets_it_breaks() {
        let pods = three_ready();
        let all: Vec<&Pod> = pods.iter().collect();
        let budget = pdb(Some(2), None);
        let broke = broken(&all[..2], &all, &[&budget]);
        assert_eq!(broke.len(), 1);
        assert!(broke[0].1.contains("took 2 healthy pods"), "{}", broke[0].1);
        assert!(broken(&all[..1], &all, &[&budget]).is_empty());
    }
}

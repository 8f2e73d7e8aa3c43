//! Graceful deletion of pods, as Kubernetes does it: deleting a pod that a
//! node may be running marks it (`metadata.deletionTimestamp`,
//! `deletionGracePeriodSeconds`) instead of removing it. The pod is then
//! `Terminating`: no longer a replica, no longer an endpoint, but still
//! holding its node's resources and host ports, so nothing new lands on
//! them. The leader's prober sends its uid to the worker as a delete (with
//! the grace), and removes the pod from the store once the worker has
//! taken the delete and reports none of its containers left.
//!
//! Invariants: a pod that no node runs (unscheduled, or finished) is
//! removed at once; a terminating pod stays terminating (a second delete
//! can only shorten its grace); grace 0 removes at once, whatever runs.

use api::Pod;

use super::is_finished;

/// What deleting a pod does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// Remove it from the store now.
    Now,
    /// Store this, the pod marked as terminating.
    Terminate(Box<Pod>),
    /// Nothing: it is already terminating with no longer a grace.
    Unchanged,
}

/// Whether `pod` is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// What deleting `pod` at `now` (RFC 3339) does, with `grace` seconds
/// (`None`: the pod's `terminationGracePeriodSeconds`).
pub fn delete(pod: &Pod, grace: Option<u64>, now: &str) -> Deletion {
    if grace == Some(0) || pod.spec.node_name.is_none() || is_finished(pod) {
        return Deletion::Now;
    }
    let grace = grace.unwrap_or_else(|| pod.spec.grace_period_seconds());
    if is_terminating(pod) {
        // A second delete may shorten the grace, never lengthen it.
        let current = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(u64::MAX);
        if grace >= current {
            return Deletion::Unchanged;
        }
    }
    let mut marked = pod.clone();
    if marked.metadata.deletion_timestamp.is_none() {
        marked.metadata.deletion_timestamp = Some(now.to_owned());
    }
    marked.metadata.deletion_grace_period_seconds = Some(grace);
    Deletion::Terminate(Box::new(marked))
}

/// Whether a terminating pod may leave the store, from its node's last
/// answer: the worker has taken the delete (`delivered`) and reports
/// neither the pod nor its containers (`reported`, `stopping`).
pub fn finished_terminating(delivered: bool, reported: bool, stopping: bool) -> bool {
    delivered && !reported && !stopping
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{PodPhase, PodStatus};
    use proptest::prelude::*;

    fn pod(node: Option<&str>) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }))
        .expect("pod");
        p.spec.node_name = node.map(str::to_owned);
        p
    }

    #[test]
    fn an_unscheduled_or_finished_pod_goes_at_once() {
        assert_eq!(delete(&pod(None), None, "t"), Deletion::Now);
        let mut done = pod(Some("n"));
        done.status = Some(PodStatus {
            phase: PodPhase::Succeeded,
            ..Default::default()
        });
        assert_eq!(delete(&done, None, "t"), Deletion::Now);
    }

    #[test]
    fn a_scheduled_pod_terminates_with_its_own_grace() {
        let mut p = pod(Some("n"));
        p.spec.termination_grace_period_seconds = Some(7);
        let Deletion::Terminate(marked) = delete(&p, None, "2026-12-06T00:00:00Z") else {
            panic!("not terminating");
        };
        assert!(is_terminating(&marked));
        assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(7));
        assert_eq!(
            marked.metadata.deletion_timestamp.as_deref(),
            Some("2026-12-06T00:00:00Z")
        );
        assert!(!super::super::is_active(&marked), "no longer a replica");
    }

    #[test]
    fn grace_zero_removes_at_once() {
        assert_eq!(delete(&pod(Some("n")), Some(0), "t"), Deletion::Now);
    }

    proptest! {
        /// Deleting again never lengthens the grace nor moves the time.
        #[test]
        fn a_second_delete_only_shortens(first in 1u64..100, second in proptest::option::of(1u64..100)) {
            let Deletion::Terminate(once) = delete(&pod(Some("n")), Some(first), "t1") else {
                panic!("first delete");
            };
            match delete(&once, second, "t2") {
                Deletion::Terminate(twice) => {
                    let g = twice.metadata.deletion_grace_period_seconds.unwrap_or(0);
                    prop_assert!(g < first);
                    prop_assert_eq!(twice.metadata.deletion_timestamp.as_deref(), Some("t1"));
                }
                Deletion::Unchanged => prop_assert!(second.unwrap_or(30) >= first),
                Deletion::Now => prop_assert!(false, "a second delete with grace removed the pod"),
            }
        }
    }

    #[test]
    fn a_terminating_pod_goes_when_its_containers_are_gone() {
        assert!(finished_terminating(true, false, false));
        assert!(
            !finished_terminating(false, false, false),
            "the delete not yet taken"
        );
        assert!(
            !finished_terminating(true, false, true),
            "containers still stopping"
        );
        assert!(!finished_terminating(true, true, false), "still reported");
    }
}

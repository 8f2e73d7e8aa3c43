//! Node lifecycle, decided from the time of the last answered probe: a
//! node silent for the grace period is NotReady (its pods Unknown); silent
//! for the eviction timeout, its controller-owned pods are deleted so that
//! their controllers replace them elsewhere. When it answers again, the
//! prober sends it its whole desired set, which no longer holds the evicted
//! pods, and the worker removes them: no duplicates survive the heal.
//!
//! Silence is the node's own doing only once a probe of it has failed:
//! a node the masters were too busy to ask is not judged (the prober
//! passes [`health`] only nodes whose last probe failed). And when most
//! of a large fleet goes silent together, evictions pause
//! ([`disrupted`]): the masters are then more likely cut off or
//! overloaded than the machines gone, and moving every pod onto the few
//! nodes left would make it worse (Kubernetes' full and partial
//! disruption modes).

use api::Pod;

/// What a node's silence means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Answered within the grace period.
    Healthy,
    /// Silent longer than the grace period.
    NotReady,
    /// Silent longer than the eviction timeout: evict its controlled pods.
    Evict,
}

/// Timing of the node lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Silence before NotReady, in milliseconds.
    pub grace_ms: u64,
    /// Silence before eviction, in milliseconds.
    pub eviction_ms: u64,
}

/// The health of a node last heard from at `last_contact_ms`.
pub fn health(last_contact_ms: u64, now_ms: u64, t: Timeouts) -> Health {
    let silent = now_ms.saturating_sub(last_contact_ms);
    if silent >= t.eviction_ms.max(t.grace_ms) {
        Health::Evict
    } else if silent >= t.grace_ms {
        Health::NotReady
    } else {
        Health::Healthy
    }
}

/// Percent of the fleet silent at once beyond which evictions pause
/// (Kubernetes' `--unhealthy-zone-threshold`, 55 %).
pub const DISRUPTION_PERCENT: usize = 55;

/// Whether evictions pause with `silent` of `total` nodes silent past the
/// grace: more than [`DISRUPTION_PERCENT`] of them, and more than one (a
/// one-node fleet that loses its node has nothing to spare either way).
pub fn disrupted(silent: usize, total: usize) -> bool {
    silent > 1 && silent * 100 > total * DISRUPTION_PERCENT
}

/// The pods an evicted node loses: those a controller will replace, and
/// those already being deleted (nobody is left to confirm their end).
/// Other standalone pods stay (Unknown) until the node returns or a user
/// deletes them; so do finished pods, which hold nothing and whose status
/// (exit codes, a Job's output) is the record of their work.
pub fn evictable<'a>(node: &str, pods: impl IntoIterator<Item = &'a Pod>) -> Vec<&'a Pod> {
    pods.into_iter()
        .filter(|p| {
            p.spec.node_name.as_deref() == Some(node)
                && (super::termination::is_terminating(p)
                    || (p.metadata.controller().is_some() && !super::is_finished(p)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_turns_into_not_ready_then_eviction() {
        let t = Timeouts {
            grace_ms: 5_000,
            eviction_ms: 10_000,
        };
        assert_eq!(health(1_000, 5_999, t), Health::Healthy);
        assert_eq!(health(1_000, 6_000, t), Health::NotReady);
        assert_eq!(health(1_000, 11_000, t), Health::Evict);
        // A clock that went backwards is not silence.
        assert_eq!(health(9_000, 1_000, t), Health::Healthy);
    }

    /// A tenth of a fleet lost is evicted; most of it at once is not
    /// (the masters are the likelier fault); one node of two is.
    #[test]
    fn evictions_pause_when_most_of_the_fleet_goes_silent_together() {
        assert!(!disrupted(100, 1_000));
        assert!(!disrupted(550, 1_000));
        assert!(disrupted(551, 1_000));
        assert!(disrupted(1_000, 1_000));
        assert!(!disrupted(1, 2), "one node of two");
        assert!(!disrupted(1, 1), "a lone node");
        assert!(disrupted(2, 3));
    }

    #[test]
    fn a_lost_node_keeps_its_finished_pods_and_loses_the_replaceable_ones() {
        use crate::controllers::replicaset::tests::pod;
        let owner = api::OwnerReference {
            kind: "Job".into(),
            name: "j".into(),
            uid: "u".into(),
            controller: true,
        };
        let mut running = pod("running", Some("n"), Some(api::PodPhase::Running));
        running.metadata.owner_references.push(owner.clone());
        let mut done = pod("done", Some("n"), Some(api::PodPhase::Succeeded));
        done.metadata.owner_references.push(owner);
        let alone = pod("alone", Some("n"), Some(api::PodPhase::Running));
        let names: Vec<&str> = evictable("n", [&running, &done, &alone])
            .iter()
            .map(|p| p.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["running"]);
    }
}

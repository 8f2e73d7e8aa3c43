//! Peer revival: which NotReady nodes' VMs to look at and start, with
//! back-off (pure; the leader's `leader::revival` loop does the ARM calls).
//!
//! A Spot VM evicted with policy Deallocate stays deallocated until someone
//! starts it. The leader checks the VM of every node that has been NotReady
//! for at least `after_ms` and starts it when ARM says it is deallocated or
//! stopped; a VM it tried is not tried again before its back-off passes
//! (doubling from `initial_ms` to `max_ms`: Spot capacity may simply be
//! missing), and a node seen Ready again forgets its back-off. The hourly
//! Automation runbook stays the safety net for when no master is left.

use std::collections::BTreeMap;

/// Back-off settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevivalTiming {
    /// A node must have been NotReady this long before its VM is looked at.
    pub after_ms: u64,
    /// The first wait after an attempt.
    pub initial_ms: u64,
    /// The longest wait.
    pub max_ms: u64,
}

impl Default for RevivalTiming {
    fn default() -> Self {
        RevivalTiming {
            after_ms: 30_000,
            initial_ms: 60_000,
            max_ms: 900_000,
        }
    }
}

/// What the leader knows of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    /// The node (and VM) name.
    pub name: String,
    /// Whether it is Ready.
    pub ready: bool,
    /// Since when it has been silent, in Unix ms (its last heartbeat).
    pub silent_since_ms: u64,
}

/// Attempts per VM: when the next may happen, and the current wait.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Backoffs {
    next: BTreeMap<String, (u64, u64)>,
}

impl Backoffs {
    /// Records an attempt on `vm` at `now_ms`.
    pub fn attempted(&mut self, vm: &str, now_ms: u64, timing: RevivalTiming) {
        let wait = match self.next.get(vm) {
            Some((_, wait)) => (wait.saturating_mul(2)).min(timing.max_ms),
            None => timing.initial_ms,
        };
        self.next
            .insert(vm.to_owned(), (now_ms.saturating_add(wait), wait));
    }
}

/// The VMs to look at now; forgets the back-off of nodes that are Ready.
pub fn due(
    nodes: &[NodeHealth],
    backoffs: &mut Backoffs,
    now_ms: u64,
    timing: RevivalTiming,
) -> Vec<String> {
    for n in nodes.iter().filter(|n| n.ready) {
        backoffs.next.remove(&n.name);
    }
    backoffs
        .next
        .retain(|vm, _| nodes.iter().any(|n| &n.name == vm));
    nodes
        .iter()
        .filter(|n| !n.ready && now_ms.saturating_sub(n.silent_since_ms) >= timing.after_ms)
        .filter(|n| {
            backoffs
                .next
                .get(&n.name)
                .is_none_or(|(at, _)| now_ms >= *at)
        })
        .map(|n| n.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, silent_since_ms: u64) -> NodeHealth {
        NodeHealth {
            name: name.into(),
            ready,
            silent_since_ms,
        }
    }

    #[test]
    fn silent_nodes_are_tried_with_doubling_back_off_until_they_return() {
        let t = RevivalTiming {
            after_ms: 30,
            initial_ms: 100,
            max_ms: 300,
        };
        let mut b = Backoffs::default();
        let nodes = vec![
            node("a", false, 0),
            node("b", true, 0),
            node("c", false, 990),
        ];
        assert_eq!(
            due(&nodes, &mut b, 1000, t),
            vec!["a".to_owned()],
            "c is not silent long enough; b is Ready"
        );
        b.attempted("a", 1000, t);
        assert_eq!(
            due(&nodes, &mut b, 1099, t),
            vec!["c".to_owned()],
            "a waits out its first back-off"
        );
        assert_eq!(
            due(&nodes, &mut b, 1100, t),
            vec!["a".to_owned(), "c".to_owned()]
        );
        b.attempted("a", 1100, t);
        assert!(
            due(&nodes, &mut b, 1299, t).iter().all(|v| v != "a"),
            "the wait doubled to 200"
        );
        b.attempted("a", 1300, t);
        b.attempted("a", 1600, t);
        assert_eq!(b.next.get("a"), Some(&(1900, 300)), "capped at max");
        // Ready again: forgotten; a deleted node too.
        let back = vec![node("a", true, 2000)];
        assert!(due(&back, &mut b, 2000, t).is_empty());
        assert!(b.next.is_empty());
    }
}

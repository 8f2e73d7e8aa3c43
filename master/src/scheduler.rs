//! The scheduler's decision, as a pure function: `schedule(pod, nodes)`
//! filters the nodes a pod may run on, scores the rest and names one, or
//! says why none fits. The leader's loop builds the [`NodeView`]s from a
//! store snapshot, calls it for each pending pod in creation order,
//! [`NodeView::assume`]s each binding so the next decision sees it, and
//! writes the bindings in compare-and-set transactions on the pods'
//! revisions.
//!
//! Filters (all must pass): the node is Ready and not cordoned; the pod's
//! cpu and memory requests fit in allocatable less what bound pods
//! request; its host ports are free there; its node selector matches.
//! Scores: `Spread` (default) puts a pod where the fewest pods of the same
//! owner run, then the fewest pods; `LeastAllocated` where the most cpu and
//! memory are left. Ties go to the lower name, so a decision is a function
//! of its inputs.
//!
//! Invariant: a node's bound requests never exceed its allocatable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use api::quantity::{parse_cpu_millis, parse_memory_bytes};
use api::{Node, Pod, Protocol, Resources};

/// How nodes that fit are ranked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScorePolicy {
    /// Fewest pods of the same owner, then fewest pods.
    #[default]
    Spread,
    /// Most free cpu and memory (as fractions of allocatable).
    LeastAllocated,
}

impl std::str::FromStr for ScorePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spread" => Ok(ScorePolicy::Spread),
            "least-allocated" => Ok(ScorePolicy::LeastAllocated),
            _ => Err(format!("{s:?}: use spread or least-allocated")),
        }
    }
}

/// What the scheduler knows of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it is Ready.
    pub ready: bool,
    /// Whether it is cordoned.
    pub unschedulable: bool,
    /// Its taints: only pods that tolerate each go here.
    pub taints: Vec<api::node::Taint>,
    /// What pods may request in all.
    pub allocatable: Resources,
    /// What bound pods request.
    pub requested: Resources,
    /// Host ports bound pods hold.
    pub host_ports: BTreeSet<(Protocol, u16)>,
    /// Bound pods.
    pub pods: u32,
    /// Bound pods per spread key (a hash of the owner: looked up once per
    /// node for every pod scheduled, so a small ordered map of integers).
    pub by_owner: std::collections::BTreeMap<u64, u32>,
}

/// Where a pod goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The node.
    pub node: String,
}

/// Why no node fits: how many nodes failed each filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered.
    pub nodes: usize,
    /// Reason → nodes it ruled out (a node counts under its first failure).
    pub reasons: BTreeMap<&'static str, usize>,
}

impl std::fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0/{} nodes are available", self.nodes)?;
        let parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        if !parts.is_empty() {
            write!(f, ": {}", parts.join(", "))?;
        }
        f.write_str(".")
    }
}

/// What a pod asks of a node: the sum of its containers' requests (a
/// container with limits and no requests requests its limits).
pub fn requests(pod: &Pod) -> Resources {
    let mut total = Resources::default();
    for c in &pod.spec.containers {
        let r = &c.resources;
        let cpu = r.requests.cpu.as_ref().or(r.limits.cpu.as_ref());
        let memory = r.requests.memory.as_ref().or(r.limits.memory.as_ref());
        let cpu = cpu.and_then(|q| parse_cpu_millis(q).ok()).unwrap_or(0);
        let memory = memory.and_then(|q| parse_memory_bytes(q).ok()).unwrap_or(0);
        total = total.saturating_add(Resources {
            cpu_millis: cpu,
            memory_bytes: memory,
        });
    }
    total
}

/// The host ports a pod holds.
pub fn host_ports(pod: &Pod) -> Vec<(Protocol, u16)> {
    pod.spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| p.host_port.map(|h| (p.protocol, h)))
        .collect()
}

/// [`spread_key`] as a number.
pub fn spread_hash(pod: &Pod) -> u64 {
    crate::controllers::fnv1a(spread_key(pod).as_bytes())
}

/// What spreading counts a pod under: its controller, else itself.
pub fn spread_key(pod: &Pod) -> String {
    match pod.metadata.controller() {
        Some(owner) => owner.uid.clone(),
        None => format!("pod/{}", pod.metadata.uid),
    }
}

/// What a bound pod takes from its node, worked out once per pod revision
/// (quantities parsed, owner hashed) rather than on every pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// Its requests.
    pub requests: Resources,
    /// The host ports it holds.
    pub host_ports: Vec<(Protocol, u16)>,
    /// [`spread_hash`].
    pub spread: u64,
}

impl Demand {
    /// `pod`'s demand.
    pub fn of(pod: &Pod) -> Demand {
        Demand {
            requests: requests(pod),
            host_ports: host_ports(pod),
            spread: spread_hash(pod),
        }
    }
}

impl NodeView {
    /// A view of `node` with nothing bound.
    pub fn of(node: &Node) -> NodeView {
        let allocatable = node
            .status
            .as_ref()
            .map(|s| s.allocatable)
            .unwrap_or_default();
        NodeView {
            name: node.metadata.name.clone(),
            labels: node.metadata.labels.clone(),
            ready: node.is_ready(),
            unschedulable: node.spec.unschedulable,
            taints: node.spec.taints.clone(),
            allocatable,
            requested: Resources::default(),
            host_ports: BTreeSet::new(),
            pods: 0,
            by_owner: std::collections::BTreeMap::new(),
        }
    }

    /// Counts `pod` as bound here.
    pub fn assume(&mut self, pod: &Pod) {
        self.assume_demand(&Demand::of(pod));
    }

    /// Counts a pod of demand `d` as bound here.
    pub fn assume_demand(&mut self, d: &Demand) {
        self.requested = self.requested.saturating_add(d.requests);
        self.host_ports.extend(d.host_ports.iter().copied());
        self.pods += 1;
        *self.by_owner.entry(d.spread).or_default() += 1;
    }

    /// The first filter `pod` fails here, if any.
    pub fn filter(&self, pod: &Pod) -> Option<&'static str> {
        self.filter_demand(pod, requests(pod), &host_ports(pod))
    }

    /// [`NodeView::filter`] with the pod's requests and host ports worked out once.
    fn filter_demand(
        &self,
        pod: &Pod,
        r: Resources,
        ports: &[(Protocol, u16)],
    ) -> Option<&'static str> {
        if !self.ready {
            return Some("node(s) were not ready");
        }
        if self.unschedulable {
            return Some("node(s) were unschedulable");
        }
        if self
            .taints
            .iter()
            .any(|t| !pod.spec.tolerations.iter().any(|tol| tol.tolerates(t)))
        {
            return Some("node(s) had untolerated taint(s)");
        }
        if !pod
            .spec
            .node_selector
            .iter()
            .all(|(k, v)| self.labels.get(k) == Some(v))
        {
            return Some("node(s) didn't match the pod's node selector");
        }
        // u64::MAX is a saturated sum: it fits nowhere.
        let fits = |used: u64, want: u64, alloc: u64| {
            want != u64::MAX && used.checked_add(want).is_some_and(|t| t <= alloc)
        };
        let (used, alloc) = (self.requested, self.allocatable);
        if !fits(used.cpu_millis, r.cpu_millis, alloc.cpu_millis) {
            return Some("Insufficient cpu");
        }
        if !fits(used.memory_bytes, r.memory_bytes, alloc.memory_bytes) {
            return Some("Insufficient memory");
        }
        if ports.iter().any(|p| self.host_ports.contains(p)) {
            return Some("node(s) didn't have free ports for the requested pod ports");
        }
        None
    }

    /// Free share of cpu and memory after placing `r`, in parts per 10 000.
    fn free_score(&self, r: Resources) -> u64 {
        let free = |alloc: u64, used: u64| {
            (u128::from(alloc.saturating_sub(used)) * 10_000)
                .checked_div(u128::from(alloc))
                .map_or(0, |share| share as u64)
        };
        let after = self.requested.saturating_add(r);
        free(self.allocatable.cpu_millis, after.cpu_millis)
            + free(self.allocatable.memory_bytes, after.memory_bytes)
    }
}

/// Picks a node for `pod`, or says why none fits.
pub fn schedule(
    pod: &Pod,
    nodes: &[NodeView],
    policy: ScorePolicy,
) -> Result<Binding, Unschedulable> {
    let mut reasons = BTreeMap::new();
    let owner = spread_hash(pod);
    let r = requests(pod);
    let ports = host_ports(pod);
    let mut best: Option<((u64, u64), &NodeView)> = None;
    for node in nodes {
        if let Some(reason) = node.filter_demand(pod, r, &ports) {
            *reasons.entry(reason).or_insert(0) += 1;
            continue;
        }
        // Lower is better.
        let score = match policy {
            ScorePolicy::Spread => (
                u64::from(node.by_owner.get(&owner).copied().unwrap_or(0)),
                u64::from(node.pods),
            ),
            ScorePolicy::LeastAllocated => (u64::MAX - node.free_score(r), u64::from(node.pods)),
        };
        let better = match &best {
            None => true,
            Some((s, n)) => score < *s || (score == *s && node.name < n.name),
        };
        if better {
            best = Some((score, node));
        }
    }
    match best {
        Some((_, node)) => Ok(Binding {
            node: node.name.clone(),
        }),
        None => Err(Unschedulable {
            nodes: nodes.len(),
            reasons,
        }),
    }
}

/// Views of `nodes` with `pods` (those bound to a node) counted.
pub fn node_views<'a>(nodes: &[Node], pods: impl IntoIterator<Item = &'a Pod>) -> Vec<NodeView> {
    let demands: Vec<(&str, Demand)> = pods
        .into_iter()
        .filter_map(|p| Some((p.spec.node_name.as_deref()?, Demand::of(p))))
        .collect();
    node_views_of(nodes, demands.iter().map(|(n, d)| (*n, d)))
}

/// Views of `nodes` with the demands of bound pods, each with its node's
/// name, counted (pods on nodes not among them are left out).
pub fn node_views_of<'a, 'n>(
    nodes: impl IntoIterator<Item = &'n Node>,
    bound: impl IntoIterator<Item = (&'a str, &'a Demand)>,
) -> Vec<NodeView> {
    let nodes: Vec<&Node> = nodes.into_iter().collect();
    let mut views: Vec<NodeView> = nodes.iter().map(|n| NodeView::of(n)).collect();
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.metadata.name.as_str(), i))
        .collect();
    for (node, d) in bound {
        if let Some(&i) = index.get(node) {
            views[i].assume_demand(d);
        }
    }
    views
}

#[cfg(test)]
mod tests;

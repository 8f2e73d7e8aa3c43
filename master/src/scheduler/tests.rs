use super::*;
use api::pod::{ContainerPort, ResourceList, ResourceRequirements};
use api::{Container, NodeCondition, NodeConditionType, NodeInfo, OwnerReference, PodSpec};
use proptest::prelude::*;

fn node(name: &str, cpu_millis: u64, memory_bytes: u64) -> Node {
    Node::from_info(NodeInfo {
        name: name.into(),
        address: format!("{name}:1"),
        host_ip: "10.0.0.1".into(),
        labels: BTreeMap::new(),
        capacity: Resources {
            cpu_millis,
            memory_bytes,
        },
        allocatable: Resources {
            cpu_millis,
            memory_bytes,
        },
        usage: Resources::default(),
        conditions: vec![NodeCondition {
            type_: NodeConditionType::Ready,
            status: true,
            reason: "Ready".into(),
            message: String::new(),
        }],
        runtime_version: "test".into(),
    })
}

fn pod(name: &str, cpu: u64, memory: u64, owner: Option<&str>) -> Pod {
    let mut c = Container::new("c", "img");
    c.resources = ResourceRequirements {
        requests: ResourceList {
            cpu: Some(format!("{cpu}m")),
            memory: Some(memory.to_string()),
        },
        limits: ResourceList::default(),
    };
    let mut p = Pod::new(
        name,
        PodSpec {
            containers: vec![c],
            ..PodSpec::default()
        },
    );
    p.metadata.uid = format!("uid-{name}");
    if let Some(o) = owner {
        p.metadata.owner_references.push(OwnerReference {
            kind: "ReplicaSet".into(),
            name: o.into(),
            uid: o.into(),
            controller: true,
        });
    }
    p
}

/// Schedules `pods` one after another, assuming each binding.
fn run(pods: &[Pod], views: &mut [NodeView], policy: ScorePolicy) -> Vec<Option<String>> {
    pods.iter()
        .map(|p| match schedule(p, views, policy) {
            Ok(b) => {
                let mut bound = p.clone();
                bound.spec.node_name = Some(b.node.clone());
                if let Some(v) = views.iter_mut().find(|v| v.name == b.node) {
                    v.assume(&bound);
                }
                Some(b.node)
            }
            Err(_) => None,
        })
        .collect()
}

#[test]
fn spreads_an_owners_pods_across_nodes() {
    let nodes = [
        node("a", 4000, 1 << 30),
        node("b", 4000, 1 << 30),
        node("c", 4000, 1 << 30),
    ];
    let mut views = node_views(&nodes, []);
    let pods: Vec<Pod> = (0..6)
        .map(|i| pod(&format!("p{i}"), 100, 1 << 20, Some("rs")))
        .collect();
    let placed = run(&pods, &mut views, ScorePolicy::Spread);
    for n in ["a", "b", "c"] {
        let count = placed.iter().filter(|p| p.as_deref() == Some(n)).count();
        assert_eq!(count, 2, "{n}: {placed:?}");
    }
}

#[test]
fn filters_name_every_reason() {
    let mut not_ready = node("a", 4000, 1 << 30);
    if let Some(s) = not_ready.status.as_mut() {
        s.conditions[0].status = false;
    }
    let mut cordoned = node("b", 4000, 1 << 30);
    cordoned.spec.unschedulable = true;
    let small = node("c", 100, 1 << 30);
    let views = node_views(&[not_ready, cordoned, small], []);
    let e = schedule(&pod("big", 500, 1, None), &views, ScorePolicy::Spread).expect_err("no fit");
    assert_eq!(
        e.to_string(),
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) were not ready, 1 node(s) were unschedulable."
    );
}

#[test]
fn a_tainted_node_takes_only_pods_that_tolerate_its_taints() {
    use api::pod::{Toleration, TolerationOperator};
    let mut master: Node = node("m", 4000, 1 << 30);
    master.spec.taints.push(
        "node-role.kubernetes.io/control-plane:NoSchedule"
            .parse()
            .unwrap(),
    );
    let views = node_views(&[master], []);
    let plain = pod("plain", 1, 1, None);
    let e = schedule(&plain, &views, ScorePolicy::Spread).expect_err("tainted");
    assert_eq!(
        e.to_string(),
        "0/1 nodes are available: 1 node(s) had untolerated taint(s)."
    );
    let tolerating = [
        Toleration {
            key: "node-role.kubernetes.io/control-plane".into(),
            operator: TolerationOperator::Exists,
            ..Default::default()
        },
        // No key with Exists tolerates everything.
        Toleration {
            operator: TolerationOperator::Exists,
            ..Default::default()
        },
        Toleration {
            key: "node-role.kubernetes.io/control-plane".into(),
            effect: Some(api::node::TaintEffect::NoSchedule),
            ..Default::default()
        },
    ];
    for t in tolerating {
        let mut p = pod("tolerant", 1, 1, None);
        p.spec.tolerations.push(t.clone());
        assert_eq!(
            schedule(&p, &views, ScorePolicy::Spread).map(|b| b.node),
            Ok("m".to_string()),
            "{t:?}"
        );
    }
    // Equal needs the value to match.
    let mut wrong = pod("wrong", 1, 1, None);
    wrong.spec.tolerations.push(Toleration {
        key: "node-role.kubernetes.io/control-plane".into(),
        value: "yes".into(),
        ..Default::default()
    });
    assert!(schedule(&wrong, &views, ScorePolicy::Spread).is_err());
}

#[test]
fn host_ports_and_selectors_filter() {
    let mut labelled = node("b", 4000, 1 << 30);
    labelled.metadata.labels.insert("disk".into(), "ssd".into());
    let views = node_views(&[node("a", 4000, 1 << 30), labelled], []);
    let mut with_selector = pod("s", 1, 1, None);
    with_selector
        .spec
        .node_selector
        .insert("disk".into(), "ssd".into());
    assert_eq!(
        schedule(&with_selector, &views, ScorePolicy::Spread).map(|b| b.node),
        Ok("b".to_string())
    );
    let mut with_port = pod("h", 1, 1, None);
    with_port.spec.containers[0].ports.push(ContainerPort {
        name: None,
        container_port: 80,
        host_port: Some(8080),
        protocol: Protocol::TCP,
    });
    let mut views = views;
    let placed = run(
        &[with_port.clone(), with_port.clone(), with_port],
        &mut views,
        ScorePolicy::Spread,
    );
    assert_eq!(
        placed.iter().filter(|p| p.is_some()).count(),
        2,
        "{placed:?}"
    );
    assert_eq!(placed[2], None);
}

#[test]
fn least_allocated_prefers_the_emptiest_node() {
    let mut views = node_views(&[node("a", 1000, 1 << 30), node("b", 8000, 1 << 30)], []);
    let placed = run(
        &[pod("p", 500, 1 << 20, None)],
        &mut views,
        ScorePolicy::LeastAllocated,
    );
    assert_eq!(placed, vec![Some("b".to_string())]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the pods and nodes, no node's bound requests exceed its
    /// allocatable, and a pod left unbound fits on no node.
    #[test]
    fn never_overcommits(
        nodes in prop::collection::vec((100u64..4000, 1u64..64), 1..8),
        pods in prop::collection::vec((0u64..1500, 0u64..16, 0u8..3), 0..60),
        least in any::<bool>(),
    ) {
        let nodes: Vec<Node> = nodes.iter().enumerate()
            .map(|(i, (cpu, mem))| node(&format!("n{i}"), *cpu, mem << 20))
            .collect();
        let pods: Vec<Pod> = pods.iter().enumerate()
            .map(|(i, (cpu, mem, owner))| pod(&format!("p{i}"), *cpu, mem << 20, Some(&format!("o{owner}"))))
            .collect();
        let policy = if least { ScorePolicy::LeastAllocated } else { ScorePolicy::Spread };
        let mut views = node_views(&nodes, []);
        let placed = run(&pods, &mut views, policy);
        for v in &views {
            prop_assert!(v.requested.cpu_millis <= v.allocatable.cpu_millis);
            prop_assert!(v.requested.memory_bytes <= v.allocatable.memory_bytes);
        }
        for (p, where_) in pods.iter().zip(&placed) {
            if where_.is_none() {
                prop_assert!(views.iter().all(|v| v.filter(p).is_some()));
            }
        }
    }

    /// With room everywhere, an owner's pods differ by at most one between nodes.
    #[test]
    fn spread_is_even_when_everything_fits(n_nodes in 1usize..8, n_pods in 0usize..50) {
        let nodes: Vec<Node> = (0..n_nodes).map(|i| node(&format!("n{i}"), 1 << 20, 1 << 40)).collect();
        let pods: Vec<Pod> = (0..n_pods).map(|i| pod(&format!("p{i}"), 10, 1, Some("rs"))).collect();
        let mut views = node_views(&nodes, []);
        run(&pods, &mut views, ScorePolicy::Spread);
        let counts: Vec<u32> = views.iter().map(|v| v.pods).collect();
        let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
        prop_assert!(max - min <= 1, "{counts:?}");
    }
}

/// Quantities near `u64::MAX`, from a user or from a node's report, are
/// sums that overflowed (a panic in debug builds, a wrap that let a pod
/// "fit" in release): they saturate, and such a pod fits nowhere.
#[test]
fn huge_quantities_saturate_and_fit_nowhere() {
    let huge = u64::MAX / 2 + 1;
    let mut big = pod("big", huge, 1, None);
    big.spec.containers.push(big.spec.containers[0].clone());
    assert_eq!(requests(&big).cpu_millis, u64::MAX);
    for policy in [ScorePolicy::Spread, ScorePolicy::LeastAllocated] {
        let mut views = vec![NodeView::of(&node("n1", u64::MAX, u64::MAX))];
        views[0].assume(&pod("small", 1, 1, None));
        let err = schedule(&big, &views, policy).expect_err("fits nowhere");
        assert!(err.to_string().contains("Insufficient cpu"), "{err}");
        let fits = pod("fits", 1, 1, None);
        assert!(schedule(&fits, &views, policy).is_ok());
        views[0].assume(&big);
        views[0].assume(&big);
        assert_eq!(views[0].requested.cpu_millis, u64::MAX);
    }
}

use super::*;
use crate::controllers::replicaset;
use api::workloads::{
    DeploymentSpec, DeploymentStrategy, IntOrPercent, RollingUpdate, TemplateMeta,
};
use api::{Container, ContainerState, ContainerStatus, LabelSelector, Pod, PodPhase, PodSpec};
use proptest::prelude::*;

fn deployment(replicas: u32, surge: u32, unavailable: u32, image: &str) -> Deployment {
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_string(), "web".to_string())].into();
    let mut metadata = ObjectMeta::named("web");
    metadata.uid = "d-uid".into();
    metadata.generation = 1;
    Deployment {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        metadata,
        spec: DeploymentSpec {
            replicas,
            selector: LabelSelector::from_labels(labels.clone()),
            template: PodTemplateSpec {
                metadata: TemplateMeta {
                    labels,
                    annotations: Default::default(),
                },
                spec: PodSpec {
                    containers: vec![Container::new("web", image)],
                    ..PodSpec::default()
                },
            },
            strategy: DeploymentStrategy {
                type_: StrategyType::RollingUpdate,
                rolling_update: Some(RollingUpdate {
                    max_surge: IntOrPercent::Int(surge),
                    max_unavailable: IntOrPercent::Int(unavailable),
                }),
            },
            revision_history_limit: 2,
            progress_deadline_seconds: 600,
        },
        status: None,
    }
}

/// A pod of the simulation: which ReplicaSet, and whether ready.
#[derive(Debug, Clone)]
struct SimPod {
    name: String,
    rs: String,
    ready: bool,
}

/// A Deployment, its ReplicaSets and pods, driven by the real controllers
/// in whatever order the steps come.
struct Sim {
    d: Deployment,
    rss: Vec<ReplicaSet>,
    pods: Vec<SimPod>,
    next: u32,
}

impl Sim {
    fn pod(p: &SimPod) -> Pod {
        let mut pod = Pod::new(
            p.name.clone(),
            PodSpec {
                containers: vec![Container::new("web", "img")],
                node_name: Some("n".into()),
                ..PodSpec::default()
            },
        );
        let phase = if p.ready {
            PodPhase::Running
        } else {
            PodPhase::Pending
        };
        pod.status = Some(api::PodStatus {
            phase,
            container_statuses: vec![ContainerStatus {
                name: "web".into(),
                state: ContainerState::Waiting {
                    reason: String::new(),
                    message: None,
                },
                last_state: None,
                ready: p.ready,
                restart_count: 0,
                image: "img".into(),
                container_id: None,
            }],
            ..api::PodStatus::default()
        });
        pod
    }

    fn counts(&self, rs: &str) -> (u32, u32) {
        let of: Vec<&SimPod> = self.pods.iter().filter(|p| p.rs == rs).collect();
        (
            of.len() as u32,
            of.iter().filter(|p| p.ready).count() as u32,
        )
    }

    fn deployment_step(&mut self) {
        let counts: Vec<(u32, u32)> = self
            .rss
            .iter()
            .map(|rs| self.counts(&rs.metadata.name))
            .collect();
        let views: Vec<RsView<'_>> = self
            .rss
            .iter()
            .zip(&counts)
            .map(|(rs, (pods, ready))| RsView {
                rs,
                pods: *pods,
                ready: *ready,
            })
            .collect();
        let plan = reconcile(&self.d, &views, SystemTime::UNIX_EPOCH);
        if let Some(mut rs) = plan.create {
            rs.metadata.uid = rs.metadata.name.clone();
            self.rss.push(rs);
        }
        for u in plan.update {
            if let Some(rs) = self.rss.iter_mut().find(|r| r.metadata.name == u.name) {
                rs.spec.replicas = u.replicas;
                rs.metadata
                    .annotations
                    .insert(REVISION_ANNOTATION.into(), u.revision.to_string());
            }
        }
        self.rss.retain(|r| !plan.delete.contains(&r.metadata.name));
        if let Some(s) = plan.status {
            self.d.status = Some(s);
        }
    }

    fn replica_set_step(&mut self, which: usize) {
        if self.rss.is_empty() {
            return;
        }
        let rs = self.rss[which % self.rss.len()].clone();
        let owned: Vec<Pod> = self
            .pods
            .iter()
            .filter(|p| p.rs == rs.metadata.name)
            .map(Sim::pod)
            .collect();
        let refs: Vec<&Pod> = owned.iter().collect();
        let plan = replicaset::reconcile(&rs, &refs);
        self.pods.retain(|p| !plan.delete.contains(&p.name));
        for _ in 0..plan.create {
            self.next += 1;
            self.pods.push(SimPod {
                name: format!("p{}", self.next),
                rs: rs.metadata.name.clone(),
                ready: false,
            });
        }
    }

    fn ready_step(&mut self, which: usize) {
        let len = self.pods.len();
        if len > 0 {
            self.pods[which % len].ready = true;
        }
    }

    fn ready(&self) -> u32 {
        self.pods.iter().filter(|p| p.ready).count() as u32
    }

    /// Runs every controller and readies every pod until nothing changes.
    fn settle(&mut self) {
        for _ in 0..200 {
            self.deployment_step();
            for i in 0..self.rss.len() {
                self.replica_set_step(i);
            }
            for i in 0..self.pods.len() {
                self.ready_step(i);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// During a rolling update, whatever order the controllers and pod
    /// readiness interleave in, pods never exceed replicas + maxSurge and
    /// ready pods never drop below replicas − maxUnavailable; the rollout
    /// ends with exactly `replicas` ready pods of the new template.
    #[test]
    fn rolling_update_stays_within_bounds(
        replicas in 1u32..8,
        surge in 0u32..4,
        unavailable in 0u32..4,
        steps in prop::collection::vec((0u8..3, 0usize..64), 0..300),
    ) {
        let mut sim = Sim { d: deployment(replicas, surge, unavailable, "v1"), rss: Vec::new(), pods: Vec::new(), next: 0 };
        sim.settle();
        prop_assert_eq!(sim.ready(), replicas);
        let (surge, unavailable) = bounds(&sim.d);
        sim.d = deployment(replicas, surge, unavailable, "v2");
        sim.d.status = None;
        for (kind, which) in steps {
            match kind {
                0 => sim.deployment_step(),
                1 => sim.replica_set_step(which),
                _ => sim.ready_step(which),
            }
            prop_assert!(sim.pods.len() as u32 <= replicas + surge,
                "{} pods > {} + {}", sim.pods.len(), replicas, surge);
            prop_assert!(sim.ready() >= replicas - unavailable.min(replicas),
                "{} ready < {} - {}", sim.ready(), replicas, unavailable);
        }
        sim.settle();
        let new_hash = template_hash(&sim.d.spec.template);
        prop_assert_eq!(sim.ready(), replicas);
        prop_assert!(sim.pods.iter().all(|p| p.rs.ends_with(&new_hash)));
        let status = sim.d.status.clone().unwrap_or_default();
        prop_assert_eq!(status.updated_replicas, replicas);
        prop_assert_eq!(status.condition("Progressing").map(|c| c.reason.as_str()), Some("NewReplicaSetAvailable"));
    }
}

#[test]
fn a_rollback_restores_the_previous_template_and_bumps_its_revision() {
    let mut sim = Sim {
        d: deployment(2, 1, 0, "v1"),
        rss: Vec::new(),
        pods: Vec::new(),
        next: 0,
    };
    sim.settle();
    sim.d = deployment(2, 1, 0, "v2");
    sim.settle();
    let template = rollback_template(&sim.d, &sim.rss, None).expect("a previous revision");
    assert_eq!(template.spec.containers[0].image, "v1");
    sim.d.spec.template = template;
    sim.settle();
    let v1 = sim
        .rss
        .iter()
        .find(|rs| rs.spec.template.spec.containers[0].image == "v1")
        .expect("v1 kept");
    assert_eq!(revision(v1), 3);
    assert_eq!(v1.spec.replicas, 2);
    let e = rollback_template(&sim.d, &sim.rss, Some(9)).expect_err("no such revision");
    assert!(e.contains("no revision 9"), "{e}");
}

#[test]
fn history_beyond_the_limit_is_deleted_oldest_first() {
    let mut sim = Sim {
        d: deployment(1, 1, 0, "v0"),
        rss: Vec::new(),
        pods: Vec::new(),
        next: 0,
    };
    for v in 1..6 {
        sim.d = deployment(1, 1, 0, &format!("v{v}"));
        sim.settle();
    }
    let mut revisions: Vec<u64> = sim.rss.iter().map(revision).collect();
    revisions.sort_unstable();
    // v1..v5 are revisions 1..5: the current one and the two newest old ones stay.
    assert_eq!(revisions, vec![3, 4, 5]);
}

#[test]
fn recreate_stops_every_old_pod_before_starting_new_ones() {
    let mut d = deployment(3, 1, 0, "v1");
    d.spec.strategy = DeploymentStrategy {
        type_: StrategyType::Recreate,
        rolling_update: None,
    };
    let mut sim = Sim {
        d: d.clone(),
        rss: Vec::new(),
        pods: Vec::new(),
        next: 0,
    };
    sim.settle();
    d.spec.template.spec.containers[0].image = "v2".into();
    sim.d = d;
    sim.deployment_step();
    sim.deployment_step();
    let new_hash = template_hash(&sim.d.spec.template);
    for _ in 0..20 {
        for i in 0..sim.rss.len() {
            sim.replica_set_step(i);
        }
        let old = sim.pods.iter().any(|p| !p.rs.ends_with(&new_hash));
        let new = sim.pods.iter().any(|p| p.rs.ends_with(&new_hash));
        assert!(!(old && new), "old and new pods at once");
        sim.deployment_step();
    }
    sim.settle();
    assert_eq!(sim.ready(), 3);
}

#[test]
fn a_stalled_rollout_reports_the_deadline() {
    let d = deployment(1, 1, 0, "v1");
    let rs = new_replica_set(&d, &template_hash(&d.spec.template), 1, 1);
    let view = RsView {
        rs: &rs,
        pods: 1,
        ready: 0,
    };
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut d1 = d.clone();
    d1.status = reconcile(&d, &[view], t0).status;
    let later = t0 + Duration::from_secs(601);
    let status = reconcile(&d1, &[view], later).status.expect("changes");
    let p = status.condition("Progressing").expect("condition");
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("False", "ProgressDeadlineExceeded")
    );
}

/// `replicas` and `maxSurge` as large as the types hold (a raw write
/// skips validation): the controllers' sums saturate instead of
/// overflowing, and the plan stays within `replicas`.
#[test]
fn huge_replicas_and_surge_do_not_overflow() {
    let d = deployment(u32::MAX, u32::MAX, 0, "img:1");
    let plan = reconcile(&d, &[], SystemTime::UNIX_EPOCH);
    let rs = plan.create.expect("a new ReplicaSet");
    assert_eq!(rs.spec.replicas, u32::MAX);
    let views = [RsView {
        rs: &rs,
        pods: u32::MAX,
        ready: u32::MAX,
    }];
    let d2 = deployment(u32::MAX, u32::MAX, 0, "img:2");
    let plan = reconcile(&d2, &views, SystemTime::UNIX_EPOCH);
    assert!(plan.create.is_some());
    let mut old = rs.clone();
    old.metadata.name = "old".into();
    let views = [
        RsView {
            rs: &rs,
            pods: u32::MAX,
            ready: u32::MAX,
        },
        RsView {
            rs: &old,
            pods: u32::MAX,
            ready: u32::MAX,
        },
    ];
    let _ = reconcile(&d, &views, SystemTime::UNIX_EPOCH);
}

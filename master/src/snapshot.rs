//! One consistent, linearizable read of what the loops decide on.
//!
//! A value that does not parse as its kind is set aside in
//! [`Snapshot::unreadable`] rather than failing the read: one bad value
//! (a bug, or a raw `Kv` write) costs its own object, never the loops.
//! Decisions that remove something because it is missing (garbage
//! collection, Endpoints of a gone Service) ask [`Snapshot::is_unreadable`]
//! first, so an unreadable owner is not taken for a deleted one.

use api::service::{Endpoints, Service};
use api::{Deployment, Job, Kind, Node, Pod, PodDisruptionBudget, ReplicaSet};

use crate::store::{
    FENCE_FLOOR_KEY, Listed, Store, StoreError, Stored, Unreadable, fence_floor, key, prefix,
};

/// Pods, ReplicaSets, Deployments, Jobs, budgets, nodes, Services and
/// Endpoints at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The store's revision at the read.
    pub revision: i64,
    /// Every pod.
    pub pods: Vec<Stored<Pod>>,
    /// Every ReplicaSet.
    pub replica_sets: Vec<Stored<ReplicaSet>>,
    /// Every Deployment.
    pub deployments: Vec<Stored<Deployment>>,
    /// Every node.
    pub nodes: Vec<Stored<Node>>,
    /// Every Service.
    pub services: Vec<Stored<Service>>,
    /// Every Endpoints.
    pub endpoints: Vec<Stored<Endpoints>>,
    /// Every Job.
    pub jobs: Vec<Stored<Job>>,
    /// Every PodDisruptionBudget.
    pub budgets: Vec<Stored<PodDisruptionBudget>>,
    /// The values of those kinds that do not parse, sorted by key.
    pub unreadable: Vec<Unreadable>,
    /// The fence floor ([`crate::store::FENCE_FLOOR_KEY`]; 0 for none).
    pub fence_floor: u64,
}

impl Snapshot {
    /// Reads it in one transaction.
    pub async fn read(store: &Store) -> Result<Snapshot, StoreError> {
        let kinds = [
            Kind::Pod,
            Kind::ReplicaSet,
            Kind::Deployment,
            Kind::Node,
            Kind::Service,
            Kind::Endpoints,
            Kind::Job,
            Kind::PodDisruptionBudget,
        ];
        let mut prefixes: Vec<String> = kinds.iter().map(|k| prefix(*k, None)).collect();
        prefixes.push(FENCE_FLOOR_KEY.to_string());
        let (lists, revision) = store.range_many(&prefixes).await?;
        let mut lists = lists.into_iter();
        let mut unreadable = Vec::new();
        let take = |kvs: Option<Vec<kvs::kv::KeyValue>>| kvs.unwrap_or_default();
        let (pods, rss, ds) = (take(lists.next()), take(lists.next()), take(lists.next()));
        let (nodes, services, endpoints) =
            (take(lists.next()), take(lists.next()), take(lists.next()));
        let (jobs, budgets) = (take(lists.next()), take(lists.next()));
        let floor = take(lists.next());
        let cache = store.decoded();
        let mut snap = Snapshot {
            revision,
            pods: readable(cache.decode_all(&pods), &mut unreadable),
            replica_sets: readable(cache.decode_all(&rss), &mut unreadable),
            deployments: readable(cache.decode_all(&ds), &mut unreadable),
            nodes: readable(cache.decode_all(&nodes), &mut unreadable),
            services: readable(cache.decode_all(&services), &mut unreadable),
            endpoints: readable(cache.decode_all(&endpoints), &mut unreadable),
            jobs: readable(cache.decode_all(&jobs), &mut unreadable),
            budgets: readable(cache.decode_all(&budgets), &mut unreadable),
            unreadable,
            fence_floor: fence_floor(
                floor
                    .iter()
                    .find(|kv| kv.key == FENCE_FLOOR_KEY)
                    .map(|kv| kv.value.as_str()),
            ),
        };
        snap.unreadable.sort_by(|a, b| a.key.cmp(&b.key));
        // This read saw every key of these kinds: what it lacks was deleted.
        let held: std::collections::HashSet<&str> = [
            &pods, &rss, &ds, &nodes, &services, &endpoints, &jobs, &budgets,
        ]
        .iter()
        .flat_map(|kvs| kvs.iter().map(|kv| kv.key.as_str()))
        .collect();
        cache.keep_only(|k| held.contains(k));
        Ok(snap)
    }

    /// Whether `kind` `namespace/name` is stored but does not parse.
    pub fn is_unreadable(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        !self.unreadable.is_empty()
            && self
                .unreadable
                .binary_search_by(|u| u.key.as_str().cmp(&key(kind, namespace, name)))
                .is_ok()
    }
}

fn readable<T>(listed: Listed<T>, unreadable: &mut Vec<Unreadable>) -> Vec<Stored<T>> {
    unreadable.extend(listed.unreadable);
    listed.objects
}

//! One consistent, linearizable read of what the loops decide on.
//!
//! A value that does not parse as its kind is set aside in
//! [`Snapshot::unreadable`] rather than failing the read: one bad value
//! (a bug, or a raw `Kv` write) costs its own object, never the loops.
//! Decisions that remove something because it is missing (garbage
//! collection, Endpoints of a gone Service) ask [`Snapshot::is_unreadable`]
//! first, so an unreadable owner is not taken for a deleted one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::service::{Endpoints, Service};
use api::{Deployment, Job, Kind, Node, Pod, PodDisruptionBudget, ReplicaSet};

use crate::store::informer::{CacheView, KindView};
use crate::store::{FENCE_FLOOR_KEY, Store, StoreError, Stored, Unreadable, fence_floor, key};

/// A snapshot read slower than this is logged, with where the time went.
const SLOW_READ: Duration = Duration::from_secs(1);

/// Pods, ReplicaSets, Deployments, Jobs, budgets, nodes, Services and
/// Endpoints at one revision, each object shared with the watch cache
/// (a snapshot costs pointers, not copies).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The store's revision at the read.
    pub revision: i64,
    /// Every pod.
    pub pods: Vec<Arc<Stored<Pod>>>,
    /// Every ReplicaSet.
    pub replica_sets: Vec<Arc<Stored<ReplicaSet>>>,
    /// Every Deployment.
    pub deployments: Vec<Arc<Stored<Deployment>>>,
    /// Every node.
    pub nodes: Vec<Arc<Stored<Node>>>,
    /// Every Service.
    pub services: Vec<Arc<Stored<Service>>>,
    /// Every Endpoints.
    pub endpoints: Vec<Arc<Stored<Endpoints>>>,
    /// Every Job.
    pub jobs: Vec<Arc<Stored<Job>>>,
    /// Every PodDisruptionBudget.
    pub budgets: Vec<Arc<Stored<PodDisruptionBudget>>>,
    /// The values of those kinds that do not parse, sorted by key.
    pub unreadable: Vec<Unreadable>,
    /// The fence floor ([`crate::store::FENCE_FLOOR_KEY`]; 0 for none).
    pub fence_floor: u64,
}

impl Snapshot {
    /// Reads it from the store's watch cache (see [`crate::store::informer`]):
    /// one linearizable read of the fence floor fixes a revision, and the
    /// snapshot is the cache once it holds that revision or a later one.
    pub async fn read(store: &Store) -> Result<Snapshot, StoreError> {
        let started = Instant::now();
        let (floor, at_least) = store.get_raw(FENCE_FLOOR_KEY).await?;
        let indexed = started.elapsed();
        let mut snap = store
            .informer()
            .read(at_least, |view| {
                let mut unreadable = Vec::new();
                let u = &mut unreadable;
                Snapshot {
                    revision: view.revision(),
                    pods: take(view, Kind::Pod, u),
                    replica_sets: take(view, Kind::ReplicaSet, u),
                    deployments: take(view, Kind::Deployment, u),
                    nodes: take(view, Kind::Node, u),
                    services: take(view, Kind::Service, u),
                    endpoints: take(view, Kind::Endpoints, u),
                    jobs: take(view, Kind::Job, u),
                    budgets: take(view, Kind::PodDisruptionBudget, u),
                    unreadable,
                    fence_floor: 0,
                }
            })
            .await?;
        snap.fence_floor = fence_floor(floor.as_ref().map(|kv| kv.value.as_str()));
        snap.unreadable.sort_by(|a, b| a.key.cmp(&b.key));
        let took = started.elapsed();
        if took >= SLOW_READ {
            tracing::info!(
                read_index_ms = indexed.as_millis() as u64,
                cache_wait_ms = (took - indexed).as_millis() as u64,
                revision = at_least,
                "a slow snapshot read"
            );
        }
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

fn take<T: Send + Sync + 'static>(
    view: &CacheView<'_>,
    kind: Kind,
    unreadable: &mut Vec<Unreadable>,
) -> Vec<Arc<Stored<T>>> {
    let KindView {
        objects,
        unreadable: bad,
    } = view.kind(kind);
    unreadable.extend(bad);
    objects
}

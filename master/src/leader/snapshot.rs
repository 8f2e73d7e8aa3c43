//! One consistent, linearizable read of what the loops decide on.

use api::service::{Endpoints, Service};
use api::{Deployment, Kind, Node, Pod, ReplicaSet};

use crate::store::{Store, StoreError, Stored, decode, prefix};

/// Pods, ReplicaSets, Deployments, nodes, Services and Endpoints at one revision.
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
        ];
        let prefixes: Vec<String> = kinds.iter().map(|k| prefix(*k, None)).collect();
        let (lists, revision) = store.range_many(&prefixes).await?;
        let mut lists = lists.into_iter();
        let mut next = || lists.next().unwrap_or_default();
        let (pods, rss, ds, nodes) = (next(), next(), next(), next());
        let (services, endpoints) = (next(), next());
        Ok(Snapshot {
            revision,
            pods: pods.iter().map(decode).collect::<Result<_, _>>()?,
            replica_sets: rss.iter().map(decode).collect::<Result<_, _>>()?,
            deployments: ds.iter().map(decode).collect::<Result<_, _>>()?,
            nodes: nodes.iter().map(decode).collect::<Result<_, _>>()?,
            services: services.iter().map(decode).collect::<Result<_, _>>()?,
            endpoints: endpoints.iter().map(decode).collect::<Result<_, _>>()?,
        })
    }
}

//! The `Master` API over the store: create, apply, get, list, delete and
//! watch of every kind, rollback, drain, worker registration, and the
//! metrics calls between masters (`figures`, `record_metrics`).
//!
//! Every write is a transaction guarded by the key's `mod_revision` as read
//! just before, so that concurrent writers never lose each other's changes:
//! a write carrying `resourceVersion` fails with `Conflict` when it is
//! stale, one without it re-reads and tries again. A request that fails
//! validation writes nothing.

use crate::controllers::disruption;
use crate::controllers::termination::{self, Deletion};
use std::sync::Arc;
use std::time::Duration;

use api::master::*;
use api::worker::{ExecRequest, ExecResponse, Fence, LogsRequest, LogsResponse, WorkerClient};
use api::{
    Deployment, Kind, LabelSelector, Node, NodeInfo, Pod, PodDisruptionBudget, ReplicaSet,
    WorkerError,
};
use kvs::kv::{Event as KvEvent, Op, Txn};

use crate::authz::{Actor, Signer};
pub use crate::clock::{new_uid, now_rfc3339};
use crate::controllers::deployment::rollback_template;
use crate::metrics::MasterMetrics;
use crate::objects::{ApiLimits, Object};
use crate::store::{self, Store, StoreError, Stored, key, unchanged};

/// Compare-and-set attempts before a write without `resourceVersion` gives up.
const WRITE_ATTEMPTS: usize = 8;
/// Longest wait for a leadership transfer on an eviction notice.
const EVICTION_TRANSFER_WAIT: Duration = Duration::from_secs(5);
/// Longest watch wait.
const MAX_WATCH_WAIT: Duration = Duration::from_secs(60);

/// `Master` over a store.
#[derive(Clone)]
pub struct MasterService {
    store: Store,
    masters: Vec<String>,
    worker_token: Option<String>,
    worker_tls: Option<rpc::ClientTls>,
    metrics: Option<Arc<MasterMetrics>>,
    member: Option<kvs::node::Node>,
    limits: ApiLimits,
    signer: Option<Arc<Signer>>,
    local_node: Option<String>,
    rules: Option<Arc<Vec<(&'static str, rpc::Access)>>>,
}

impl From<StoreError> for MasterError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted(rev) => MasterError::Expired(rev.to_string()),
            StoreError::Unavailable(e) => MasterError::Unavailable(e.to_string()),
            StoreError::Corrupt { key, error } => MasterError::Unreadable { key, error },
        }
    }
}

fn kind_of(name: &str) -> Result<Kind, MasterError> {
    Kind::parse(name).map_err(|e| MasterError::InvalidArgument(e.to_string()))
}

fn namespace_of(kind: Kind, ns: Option<&str>) -> String {
    match ns.filter(|n| !n.is_empty()) {
        _ if !kind.namespaced() => String::new(),
        Some(n) => n.to_string(),
        None => api::meta::DEFAULT_NAMESPACE.to_string(),
    }
}

fn not_found(kind: Kind, namespace: &str, name: &str) -> MasterError {
    MasterError::NotFound {
        kind: kind.plural().to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

fn parse_revision(text: &str) -> Result<i64, MasterError> {
    text.parse().map_err(|_| {
        MasterError::InvalidArgument(format!(
            "resourceVersion {text:?} is not a version this server gave out"
        ))
    })
}

/// The object of a stored value, `resourceVersion` set.
fn stored_object(kind: Kind, kv: &kvs::kv::KeyValue) -> Result<Stored<Object>, MasterError> {
    let stored: Stored<serde_json::Value> = store::decode(kv)?;
    let mut object = Object::parse(stored.object).map_err(|e| MasterError::Unreadable {
        key: kv.key.clone(),
        error: e.to_string(),
    })?;
    if object.kind() != kind {
        return Err(MasterError::Unreadable {
            key: kv.key.clone(),
            error: format!("it holds a {}, not a {kind}", object.kind()),
        });
    }
    if kind == Kind::Node {
        object.meta_mut().namespace = String::new();
    }
    Ok(Stored {
        object,
        mod_revision: stored.mod_revision,
    })
}

/// The cached objects of `kind` (one of [`crate::store::informer::KINDS`]) in
/// `namespace` (all for `None`), in key order, and the values that do not
/// decode.
fn cached_objects(
    view: &crate::store::informer::CacheView<'_>,
    kind: Kind,
    namespace: Option<&str>,
) -> (Vec<Stored<Object>>, Vec<store::Unreadable>) {
    fn wrap<T: Clone + Send + Sync + 'static>(
        view: &crate::store::informer::CacheView<'_>,
        kind: Kind,
        namespace: Option<&str>,
        as_object: fn(T) -> Object,
    ) -> (Vec<Stored<Object>>, Vec<store::Unreadable>) {
        let listed = view.kind::<T>(kind);
        let prefix = store::prefix(kind, namespace);
        let objects = listed
            .objects
            .iter()
            .map(|s| Stored {
                object: as_object(s.object.clone()),
                mod_revision: s.mod_revision,
            })
            .filter(|s| {
                let m = s.object.meta();
                namespace.is_none_or(|ns| m.namespace == ns)
            })
            .collect();
        let unreadable = listed
            .unreadable
            .into_iter()
            .filter(|u| u.key.starts_with(&prefix))
            .collect();
        (objects, unreadable)
    }
    match kind {
        Kind::Pod => wrap(view, kind, namespace, Object::Pod),
        Kind::ReplicaSet => wrap(view, kind, namespace, Object::ReplicaSet),
        Kind::Deployment => wrap(view, kind, namespace, Object::Deployment),
        Kind::Node => {
            let (mut nodes, bad) = wrap(view, kind, None, Object::Node);
            for n in &mut nodes {
                n.object.meta_mut().namespace = String::new();
            }
            (nodes, bad)
        }
        Kind::Service => wrap(view, kind, namespace, Object::Service),
        Kind::Endpoints => wrap(view, kind, namespace, Object::Endpoints),
        Kind::Job => wrap(view, kind, namespace, Object::Job),
        Kind::PodDisruptionBudget => wrap(view, kind, namespace, Object::PodDisruptionBudget),
        Kind::Event => (Vec::new(), Vec::new()),
    }
}

/// An object known only by its name (a deleted one, or one that does not parse).
fn named_only(kind: Kind, namespace: &str, name: &str, revision: i64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": kind.api_version(),
        "kind": kind.as_str(),
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": revision.to_string()},
    })
}

fn with_version(object: &Object, revision: i64) -> serde_json::Value {
    let mut value = object.to_value();
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.insert(
            "resourceVersion".into(),
            serde_json::Value::String(revision.to_string()),
        );
    }
    value
}

impl MasterService {
    /// Serves `store`; `masters` are the addresses handed to joining
    /// workers; `worker_token` is what workers accept (for logs and exec).
    pub fn new(store: Store, masters: Vec<String>, worker_token: Option<String>) -> Self {
        MasterService {
            store,
            masters,
            worker_token,
            worker_tls: None,
            metrics: None,
            member: None,
            limits: ApiLimits::default(),
            signer: None,
            local_node: None,
            rules: None,
        }
    }

    /// Answers `review_access` from `rules`, the server's access rules
    /// (`None`: a server that checks no roles).
    pub fn with_access_rules(mut self, rules: Option<Vec<(&'static str, rpc::Access)>>) -> Self {
        self.rules = rules.map(Arc::new);
        self
    }

    /// Signs workers' certificates (`bootstrap`, `renew`) with `signer`.
    pub fn with_signer(mut self, signer: Option<Arc<Signer>>) -> Self {
        self.signer = signer;
        self
    }

    /// The node on this master's machine, whose worker may call
    /// `prepare_eviction` here.
    pub fn with_local_node(mut self, node: Option<String>) -> Self {
        self.local_node = node;
        self
    }

    fn signer(&self) -> Result<&Signer, MasterError> {
        self.signer.as_deref().ok_or_else(|| {
            MasterError::Unavailable(
                "this master signs no certificates (it holds no CA key)".into(),
            )
        })
    }

    /// Bounds what users may ask for (`--max-replicas`).
    pub fn with_limits(mut self, limits: ApiLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Calls workers (logs, exec) over TLS with this configuration.
    pub fn with_worker_tls(mut self, tls: Option<rpc::ClientTls>) -> Self {
        self.worker_tls = tls;
        self
    }

    /// Answers `prepare_eviction` for the store member `node`.
    pub fn with_member(mut self, node: kvs::node::Node) -> Self {
        self.member = Some(node);
        self
    }

    /// Answers `figures` and `record_metrics` from `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<MasterMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn metrics(&self) -> Result<&Arc<MasterMetrics>, MasterError> {
        self.metrics
            .as_ref()
            .ok_or_else(|| MasterError::Unavailable("this master keeps no metrics".into()))
    }

    /// A client of the worker running pod `namespace/name`.
    async fn worker_of(
        &self,
        namespace: &str,
        name: &str,
        wait: Duration,
    ) -> Result<WorkerClient, MasterError> {
        let ns = namespace_of(Kind::Pod, Some(namespace));
        let Some(pod) = self.store.get::<Pod>(Kind::Pod, &ns, name).await? else {
            return Err(not_found(Kind::Pod, &ns, name));
        };
        let Some(node) = pod.object.spec.node_name.clone() else {
            return Err(MasterError::InvalidArgument(format!(
                "pod {name:?} is not scheduled to a node yet"
            )));
        };
        let address = self
            .store
            .get::<Node>(Kind::Node, "", &node)
            .await?
            .and_then(|n| n.object.status.map(|s| s.address))
            .ok_or_else(|| MasterError::Unavailable(format!("node {node:?} has no address")))?;
        let tls = self
            .worker_tls
            .as_ref()
            .map(|t| t.expecting_peer(&node, pki::WORKERS))
            .transpose()
            .map_err(|e| MasterError::Unavailable(format!("TLS towards node {node:?}: {e}")))?;
        let config = rpc::ClientConfig {
            token: self.worker_token.clone(),
            tls,
            default_timeout: wait + Duration::from_secs(10),
            max_connections: 1,
            ..Default::default()
        };
        let client = rpc::Client::new(&address, config)
            .map_err(|e| MasterError::Unavailable(format!("node {node:?} at {address}: {e}")))?;
        Ok(WorkerClient::new(client))
    }
}

fn from_worker(e: rpc::Error) -> MasterError {
    match WorkerError::from_rpc(&e) {
        Some(WorkerError::NotFound(m)) => MasterError::NotFound {
            kind: "containers".into(),
            namespace: String::new(),
            name: m,
        },
        Some(WorkerError::InvalidArgument(m)) => MasterError::InvalidArgument(m),
        Some(other) => MasterError::Unavailable(other.to_string()),
        None => MasterError::Unavailable(format!("the pod's node does not answer: {e}")),
    }
}

impl MasterService {
    async fn read(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Stored<Object>>, MasterError> {
        let (kv, _) = self.store.get_raw(&key(kind, namespace, name)).await?;
        kv.map(|kv| stored_object(kind, &kv)).transpose()
    }

    /// Writes `object` if its key is still at `expected` (0: absent);
    /// `Ok(None)` when it is not.
    async fn put_if(&self, object: &Object, expected: i64) -> Result<Option<i64>, MasterError> {
        let meta = object.meta();
        let k = key(object.kind(), &meta.namespace, &meta.name);
        let r = self
            .store
            .txn(Txn {
                compares: vec![unchanged(k.clone(), expected)],
                success: vec![Op::Put {
                    key: k,
                    value: object.encode(),
                }],
                failure: Vec::new(),
            })
            .await?;
        Ok(r.succeeded.then_some(r.revision))
    }

    fn prepare(&self, value: serde_json::Value) -> Result<Object, MasterError> {
        let mut object = Object::parse(value)?;
        let kind = object.kind();
        let ns = namespace_of(kind, Some(&object.meta().namespace));
        object.meta_mut().namespace = ns;
        object.validate()?;
        object.check_limits(&self.limits)?;
        Ok(object)
    }

    async fn create_object(&self, object: Object) -> Result<WriteResponse, MasterError> {
        let kind = object.kind();
        let meta = object.meta().clone();
        let object = object.for_create(new_uid(), now_rfc3339());
        match self.put_if(&object, 0).await? {
            Some(revision) => Ok(WriteResponse {
                object: with_version(&object, revision),
                outcome: Outcome::Created,
            }),
            None => Err(MasterError::AlreadyExists {
                kind: kind.plural().into(),
                namespace: meta.namespace,
                name: meta.name,
            }),
        }
    }

    async fn apply_object(&self, object: Object) -> Result<WriteResponse, MasterError> {
        let kind = object.kind();
        let meta = object.meta().clone();
        let given = meta
            .resource_version
            .as_deref()
            .map(parse_revision)
            .transpose()?;
        for _ in 0..WRITE_ATTEMPTS {
            let Some(existing) = self.read(kind, &meta.namespace, &meta.name).await? else {
                if given.is_some() {
                    return Err(not_found(kind, &meta.namespace, &meta.name));
                }
                match self.create_object(object.clone()).await {
                    Err(MasterError::AlreadyExists { .. }) => continue,
                    other => return other,
                }
            };
            if let Some(given) = given.filter(|g| *g != existing.mod_revision) {
                return Err(MasterError::Conflict {
                    kind: kind.plural().into(),
                    name: meta.name,
                    given: given.to_string(),
                    current: existing.mod_revision.to_string(),
                });
            }
            let updated = object.clone().for_update(&existing.object)?;
            if updated.encode() == existing.object.encode() {
                return Ok(WriteResponse {
                    object: with_version(&existing.object, existing.mod_revision),
                    outcome: Outcome::Unchanged,
                });
            }
            if let Some(revision) = self.put_if(&updated, existing.mod_revision).await? {
                return Ok(WriteResponse {
                    object: with_version(&updated, revision),
                    outcome: Outcome::Configured,
                });
            }
        }
        Err(MasterError::Unavailable(format!(
            "{kind} {:?} kept changing under this write; try again",
            meta.name
        )))
    }

    /// Deletes one object if still at `expected`; the object as it was.
    async fn delete_if(&self, object: &Stored<Object>) -> Result<bool, MasterError> {
        let meta = object.object.meta();
        let k = key(object.object.kind(), &meta.namespace, &meta.name);
        self.delete_key_if(&k, object.mod_revision).await
    }

    /// Deletes `k` if it is still at `mod_revision`.
    async fn delete_key_if(&self, k: &str, mod_revision: i64) -> Result<bool, MasterError> {
        let r = self
            .store
            .txn(Txn {
                compares: vec![unchanged(k.to_string(), mod_revision)],
                success: vec![Op::Delete { key: k.to_string() }],
                failure: Vec::new(),
            })
            .await?;
        Ok(r.succeeded)
    }

    async fn register(&self, info: NodeInfo) -> Result<(), MasterError> {
        let name = info.name.clone();
        for _ in 0..WRITE_ATTEMPTS {
            let existing = self.read(Kind::Node, "", &name).await?;
            let fresh = Node::from_info(info.clone());
            let (object, expected) = match &existing {
                None => (Object::Node(fresh).for_create(new_uid(), now_rfc3339()), 0),
                Some(stored) => {
                    let Object::Node(old) = &stored.object else {
                        return Err(MasterError::Unavailable(
                            "internal error: not a node".into(),
                        ));
                    };
                    let mut node = old.clone();
                    node.metadata.resource_version = None;
                    node.metadata.labels.extend(fresh.metadata.labels);
                    let heartbeat = old
                        .status
                        .as_ref()
                        .and_then(|s| s.last_heartbeat_time.clone());
                    node.status = fresh.status.map(|mut s| {
                        s.last_heartbeat_time = heartbeat;
                        s
                    });
                    (Object::Node(node), stored.mod_revision)
                }
            };
            if let Some(stored) = &existing
                && stored.object.encode() == object.encode()
            {
                return Ok(());
            }
            object.validate()?;
            if self.put_if(&object, expected).await?.is_some() {
                return Ok(());
            }
        }
        Err(MasterError::Unavailable(format!(
            "node {name:?} kept changing; try again"
        )))
    }
}

impl MasterService {
    /// The epoch the cluster fences at, raised above `reported` (the
    /// highest fence node `node` followed) if the cluster is not above it
    /// already: a cluster re-formed from nothing must not leave a worker
    /// refusing its leader. `None` without a store member (no epoch known).
    async fn fence_above(
        &self,
        node: &str,
        reported: Option<Fence>,
    ) -> Result<Option<u64>, MasterError> {
        let Some(member) = &self.member else {
            return Ok(None);
        };
        let status = member
            .status()
            .await
            .map_err(|e| MasterError::Unavailable(e.to_string()))?;
        let epoch = status.epoch.map_or(0, |e| e.number);
        for _ in 0..WRITE_ATTEMPTS {
            let (kv, _) = self.store.get_raw(store::FENCE_FLOOR_KEY).await?;
            let floor = store::fence_floor(kv.as_ref().map(|kv| kv.value.as_str()));
            let current = Fence {
                epoch: store::fence_epoch(epoch, floor),
                term: status.term,
            };
            let Some(reported) = reported.filter(|r| *r > current) else {
                return Ok(Some(current.epoch));
            };
            let put = Txn {
                compares: vec![unchanged(
                    store::FENCE_FLOOR_KEY.to_string(),
                    kv.as_ref().map_or(0, |kv| kv.mod_revision),
                )],
                success: vec![Op::Put {
                    key: store::FENCE_FLOOR_KEY.to_string(),
                    value: reported.epoch.to_string(),
                }],
                failure: Vec::new(),
            };
            if self.store.txn(put).await?.succeeded {
                tracing::warn!(
                    node,
                    %reported,
                    %current,
                    "a worker followed a fence this cluster is not above (re-formed from nothing?): fencing above it from now on"
                );
                return Ok(Some(store::fence_epoch(epoch, reported.epoch)));
            }
        }
        Err(MasterError::Unavailable(
            "the fence floor kept changing; try again".into(),
        ))
    }
}

fn selector_of(text: Option<&str>) -> Result<Option<LabelSelector>, MasterError> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| {
            LabelSelector::parse(t)
                .map_err(|e| MasterError::InvalidArgument(format!("label selector: {e}")))
        })
        .transpose()
}

fn selected(object: &Object, selector: Option<&LabelSelector>, node: Option<&str>) -> bool {
    let labels_ok = selector.is_none_or(|s| s.matches(&object.meta().labels));
    let node_ok = match (node, object) {
        (None, _) => true,
        (Some(n), Object::Pod(p)) => p.spec.node_name.as_deref() == Some(n),
        (Some(_), _) => false,
    };
    labels_ok && node_ok
}

impl Master for MasterService {
    async fn join(&self, req: JoinRequest) -> Result<JoinResponse, MasterError> {
        if !api::validation::is_dns1123_subdomain(&req.node.name) {
            return Err(MasterError::InvalidArgument(format!(
                "node.name {:?} is not a DNS-1123 name",
                req.node.name
            )));
        }
        Actor::of(&rpc::Caller::current()).may_act_for(&req.node.name, "register")?;
        let name = req.node.name.clone();
        self.register(req.node).await?;
        let fence_epoch = self.fence_above(&name, req.fence).await?;
        Ok(JoinResponse {
            masters: self.masters.clone(),
            fence_epoch,
        })
    }

    async fn bootstrap(&self, req: BootstrapRequest) -> Result<CertificateResponse, MasterError> {
        let signer = self.signer()?;
        if Actor::of(&rpc::Caller::current()) != Actor::Operator
            && let Some(stored) = self.read(Kind::Node, "", &req.node).await?
            && let Object::Node(node) = &stored.object
            && node.is_ready()
        {
            return Err(MasterError::Forbidden(format!(
                "node {:?} is registered and Ready: its name is taken (its worker renews with its own certificate)",
                req.node
            )));
        }
        let certificate = signer.sign(&req.node, &req.csr, &req.hosts)?;
        tracing::info!(node = %req.node, hosts = ?req.hosts, "signed a worker's first certificate");
        Ok(CertificateResponse { certificate })
    }

    async fn renew(&self, req: RenewRequest) -> Result<CertificateResponse, MasterError> {
        let signer = self.signer()?;
        let Actor::Node(node) = Actor::of(&rpc::Caller::current()) else {
            return Err(MasterError::Forbidden(
                "renew is for a worker presenting its own certificate with the join token".into(),
            ));
        };
        let certificate = signer.sign(&node, &req.csr, &req.hosts)?;
        tracing::info!(node = %node, "renewed a worker's certificate");
        Ok(CertificateResponse { certificate })
    }

    async fn review_access(
        &self,
        req: AccessReviewRequest,
    ) -> Result<AccessReviewResponse, MasterError> {
        if !matches!(req.kind.as_str(), "kv" | "keys" | "store") {
            kind_of(&req.kind)?;
        }
        let method = crate::authz::method_for(&req.verb, &req.kind)?;
        Ok(crate::authz::review(
            method,
            &rpc::Caller::current(),
            self.rules.as_deref().map(Vec::as_slice),
        ))
    }

    async fn create(&self, req: WriteRequest) -> Result<WriteResponse, MasterError> {
        let object = self.prepare(req.object)?;
        self.create_object(object).await
    }

    async fn apply(&self, req: WriteRequest) -> Result<WriteResponse, MasterError> {
        let object = self.prepare(req.object)?;
        self.apply_object(object).await
    }

    async fn get(&self, req: ObjectRequest) -> Result<ObjectResponse, MasterError> {
        let kind = kind_of(&req.kind)?;
        let ns = namespace_of(kind, req.namespace.as_deref());
        let stored = self
            .read(kind, &ns, &req.name)
            .await?
            .ok_or_else(|| not_found(kind, &ns, &req.name))?;
        Ok(ObjectResponse {
            object: with_version(&stored.object, stored.mod_revision),
        })
    }

    async fn list(&self, req: ListRequest) -> Result<ListResponse, MasterError> {
        let kind = kind_of(&req.kind)?;
        let selector = selector_of(req.label_selector.as_deref())?;
        let ns = req.namespace.as_deref().filter(|n| !n.is_empty());
        if crate::store::informer::KINDS.contains(&kind) {
            // From the watch cache, at or after a linearizable revision:
            // a list of every pod costs no copy inside the store's loop.
            let at_least = self.store.revision().await?;
            let (objects, unreadable, revision) = self
                .store
                .informer()
                .read(at_least, |view| {
                    let (objects, unreadable) = cached_objects(view, kind, ns);
                    (objects, unreadable, view.revision())
                })
                .await?;
            return Ok(ListResponse {
                items: objects
                    .iter()
                    .filter(|s| selected(&s.object, selector.as_ref(), req.node_name.as_deref()))
                    .map(|s| with_version(&s.object, s.mod_revision))
                    .collect(),
                resource_version: revision.to_string(),
                unreadable: unreadable
                    .into_iter()
                    .map(|u| UnreadableObject {
                        key: u.key,
                        error: u.error,
                    })
                    .collect(),
            });
        }
        let (mut lists, revision) = self.store.range_many(&[store::prefix(kind, ns)]).await?;
        let mut items = Vec::new();
        let mut unreadable = Vec::new();
        for kv in lists.pop().unwrap_or_default() {
            match stored_object(kind, &kv) {
                Ok(stored) => {
                    if selected(&stored.object, selector.as_ref(), req.node_name.as_deref()) {
                        items.push(with_version(&stored.object, stored.mod_revision));
                    }
                }
                Err(MasterError::Unreadable { key, error }) => {
                    unreadable.push(UnreadableObject { key, error })
                }
                Err(other) => return Err(other),
            }
        }
        Ok(ListResponse {
            items,
            resource_version: revision.to_string(),
            unreadable,
        })
    }

    async fn delete(&self, req: ObjectRequest) -> Result<ObjectResponse, MasterError> {
        let kind = kind_of(&req.kind)?;
        let ns = namespace_of(kind, req.namespace.as_deref());
        let given = req
            .resource_version
            .as_deref()
            .map(parse_revision)
            .transpose()?;
        for _ in 0..WRITE_ATTEMPTS {
            let k = key(kind, &ns, &req.name);
            let (kv, _) = self.store.get_raw(&k).await?;
            let kv = kv.ok_or_else(|| not_found(kind, &ns, &req.name))?;
            let stored = match stored_object(kind, &kv) {
                Ok(stored) => stored,
                // An unreadable value is deleted by its key, as read.
                Err(MasterError::Unreadable { .. }) => {
                    if self.delete_key_if(&k, kv.mod_revision).await? {
                        return Ok(ObjectResponse {
                            object: named_only(kind, &ns, &req.name, kv.mod_revision),
                        });
                    }
                    continue;
                }
                Err(other) => return Err(other),
            };
            if let Some(given) = given.filter(|g| *g != stored.mod_revision) {
                return Err(MasterError::Conflict {
                    kind: kind.plural().into(),
                    name: req.name,
                    given: given.to_string(),
                    current: stored.mod_revision.to_string(),
                });
            }
            // A pod a node may run terminates first (controllers::termination).
            if let Object::Pod(pod) = &stored.object {
                match termination::delete(pod, req.grace_period_seconds, &now_rfc3339()) {
                    Deletion::Now => {}
                    Deletion::Unchanged => {
                        return Ok(ObjectResponse {
                            object: with_version(&stored.object, stored.mod_revision),
                        });
                    }
                    Deletion::Terminate(marked) => {
                        let object = Object::Pod(*marked);
                        if let Some(revision) = self.put_if(&object, stored.mod_revision).await? {
                            return Ok(ObjectResponse {
                                object: with_version(&object, revision),
                            });
                        }
                        continue;
                    }
                }
            }
            if self.delete_if(&stored).await? {
                return Ok(ObjectResponse {
                    object: with_version(&stored.object, stored.mod_revision),
                });
            }
        }
        Err(MasterError::Unavailable(format!(
            "{kind} {:?} kept changing under this delete; try again",
            req.name
        )))
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchResponse, MasterError> {
        let kind = kind_of(&req.kind)?;
        let selector = selector_of(req.label_selector.as_deref())?;
        let ns = req.namespace.as_deref().filter(|n| !n.is_empty());
        let after = parse_revision(&req.resource_version)?;
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(10_000)).min(MAX_WATCH_WAIT);
        let (events, next) = self
            .store
            .watch(store::prefix(kind, ns), after + 1, wait)
            .await?;
        let mut out = Vec::new();
        for event in events {
            let (type_, object) = match &event {
                KvEvent::Put { kv } => {
                    let stored = match stored_object(kind, kv) {
                        Ok(stored) => stored,
                        // Skipped, as in a list; the control loop reports it.
                        Err(MasterError::Unreadable { .. }) => continue,
                        Err(other) => return Err(other),
                    };
                    if !selected(&stored.object, selector.as_ref(), None) {
                        continue;
                    }
                    let type_ = if kv.version == 1 {
                        WatchEventType::Added
                    } else {
                        WatchEventType::Modified
                    };
                    (type_, with_version(&stored.object, kv.mod_revision))
                }
                // The store keeps no value for a deleted key: the event names the object.
                KvEvent::Delete { key, revision } => {
                    let (namespace, name) = store::split_key(kind, key);
                    let object = named_only(kind, &namespace, &name, *revision);
                    (WatchEventType::Deleted, object)
                }
            };
            out.push(api::master::WatchEvent { type_, object });
        }
        Ok(WatchResponse {
            events: out,
            resource_version: (next - 1).max(after).to_string(),
        })
    }

    async fn rollback(&self, req: RollbackRequest) -> Result<WriteResponse, MasterError> {
        let ns = namespace_of(Kind::Deployment, req.namespace.as_deref());
        let Some(stored) = self
            .store
            .get::<Deployment>(Kind::Deployment, &ns, &req.name)
            .await?
        else {
            return Err(not_found(Kind::Deployment, &ns, &req.name));
        };
        let (rss, _) = self
            .store
            .list::<ReplicaSet>(Kind::ReplicaSet, Some(&ns))
            .await?;
        let rss: Vec<ReplicaSet> = rss.objects.into_iter().map(|s| s.object).collect();
        let template = rollback_template(&stored.object, &rss, req.to_revision)
            .map_err(MasterError::InvalidArgument)?;
        let mut d = stored.object;
        d.spec.template = template;
        self.apply_object(Object::Deployment(d)).await
    }

    async fn drain(&self, req: DrainRequest) -> Result<DrainResponse, MasterError> {
        Actor::of(&rpc::Caller::current()).may_act_for(&req.node, "drain")?;
        let Some(stored) = self.read(Kind::Node, "", &req.node).await? else {
            return Err(not_found(Kind::Node, "", &req.node));
        };
        let (pods, _) = self.store.list::<Pod>(Kind::Pod, None).await?;
        let (budgets, _) = self
            .store
            .list::<PodDisruptionBudget>(Kind::PodDisruptionBudget, None)
            .await?;
        let all: Vec<&Pod> = pods.objects.iter().map(|p| &p.object).collect();
        let on_node: Vec<&Stored<Pod>> = pods
            .objects
            .iter()
            .filter(|p| p.object.spec.node_name.as_deref() == Some(req.node.as_str()))
            .collect();
        // Pods already terminating are on their way; finished pods hold
        // nothing and keep their record (a Job's results) until their owner
        // goes; the rest are evicted as the budgets allow (or all at once
        // when eviction is disabled).
        let candidates = disruption::drain_candidates(on_node.iter().map(|p| &p.object));
        let unmanaged: Vec<String> = candidates
            .iter()
            .filter(|p| p.metadata.controller().is_none())
            .map(|p| p.key())
            .collect();
        if !unmanaged.is_empty() && !req.force {
            return Err(MasterError::InvalidArgument(format!(
                "cannot drain node {:?}: pods not managed by a controller would be lost (use --force to delete them): {}",
                req.node,
                unmanaged.join(", ")
            )));
        }
        if let Object::Node(mut node) = stored.object.clone()
            && !node.spec.unschedulable
        {
            node.spec.unschedulable = true;
            node.metadata.resource_version = None;
            self.apply_object(Object::Node(node)).await?;
        }
        let budgets: Vec<&PodDisruptionBudget> =
            budgets.objects.iter().map(|b| &b.object).collect();
        let (evict, blocked) = if req.disable_eviction {
            let broken = disruption::broken(&candidates, &all, &budgets);
            let events: Vec<Op> = broken
                .into_iter()
                .map(|(i, message)| {
                    crate::events::event(
                        Kind::PodDisruptionBudget,
                        &budgets[i].metadata,
                        api::EventType::Warning,
                        "DisruptionBudgetBroken",
                        format!("node {}: {message}", req.node),
                        "drain",
                    )
                })
                .collect();
            if !events.is_empty() {
                self.store
                    .txn(Txn {
                        compares: Vec::new(),
                        success: events,
                        failure: Vec::new(),
                    })
                    .await?;
            }
            (candidates.clone(), Vec::new())
        } else {
            disruption::plan_drain(&candidates, &all, &budgets)
        };
        let mut evicted = Vec::new();
        for pod in evict {
            let Some(stored) = on_node
                .iter()
                .find(|p| p.object.metadata.uid == pod.metadata.uid)
            else {
                continue;
            };
            let done = match termination::delete(pod, None, &now_rfc3339()) {
                Deletion::Now => {
                    self.delete_if(&Stored {
                        object: Object::Pod(pod.clone()),
                        mod_revision: stored.mod_revision,
                    })
                    .await?
                }
                Deletion::Terminate(marked) => self
                    .put_if(&Object::Pod(*marked), stored.mod_revision)
                    .await?
                    .is_some(),
                Deletion::Unchanged => false,
            };
            if done {
                evicted.push(pod.key());
            }
        }
        Ok(DrainResponse {
            evicted,
            blocked: blocked.into_iter().map(|b| b.message).collect(),
        })
    }

    async fn logs(&self, req: LogsRequest) -> Result<LogsResponse, MasterError> {
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(10_000).min(60_000));
        let worker = self.worker_of(&req.namespace, &req.pod, wait).await?;
        worker.logs(&req).await.map_err(from_worker)
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, MasterError> {
        let wait = Duration::from_millis(req.timeout_ms.unwrap_or(30_000).min(600_000));
        let worker = self.worker_of(&req.namespace, &req.pod, wait).await?;
        worker.exec(&req).await.map_err(from_worker)
    }

    async fn figures(&self, _req: FiguresRequest) -> Result<FiguresResponse, MasterError> {
        Ok(FiguresResponse {
            points: self.metrics()?.own_points().await,
        })
    }

    async fn prepare_eviction(
        &self,
        _req: PrepareEvictionRequest,
    ) -> Result<PrepareEvictionResponse, MasterError> {
        Actor::of(&rpc::Caller::current()).may_prepare_eviction(self.local_node.as_deref())?;
        let node = self
            .member
            .as_ref()
            .ok_or_else(|| MasterError::Unavailable("this master has no store member".into()))?;
        let unavailable = |e: kvs::api::KvsError| MasterError::Unavailable(e.to_string());
        let mut leadership = node.leadership();
        let leading = *leadership.borrow_and_update();
        let mut leadership_moved = false;
        if let Some(lead) = leading
            && let Some(heir) = node.transfer_leadership_away().await.map_err(unavailable)?
        {
            tracing::info!(
                heir,
                term = lead.term,
                "eviction notice: leadership handed over"
            );
            // A transfer takes an election timeout or so; the export waits for it.
            let moved = tokio::time::timeout(
                EVICTION_TRANSFER_WAIT,
                leadership.wait_for(|l| *l != Some(lead)),
            )
            .await;
            leadership_moved = matches!(moved, Ok(Ok(_)));
        }
        let exported_index = node
            .export_now()
            .await
            .map_err(unavailable)?
            .map(|m| m.index);
        tracing::info!(leadership_moved, ?exported_index, "eviction notice: ready");
        Ok(PrepareEvictionResponse {
            leadership_moved,
            exported_index,
        })
    }

    async fn record_metrics(
        &self,
        req: RecordMetricsRequest,
    ) -> Result<RecordMetricsResponse, MasterError> {
        let metrics = self.metrics()?;
        let store = metrics.store();
        store.write(&req.points).await.map_err(metrics_error)?;
        if !req.annotations.is_empty() {
            store
                .write_annotations(&req.annotations)
                .await
                .map_err(metrics_error)?;
        }
        Ok(RecordMetricsResponse {
            points: req.points.len(),
        })
    }
}

fn metrics_error(e: grafana_datasource::StoreError) -> MasterError {
    match e {
        grafana_datasource::StoreError::Invalid(m) => MasterError::InvalidArgument(m),
        other => MasterError::Unavailable(other.to_string()),
    }
}

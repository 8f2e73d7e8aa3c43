//! Scenario files of the control pass, in etcd's datadriven style
//! (`master/testdata/control/*.txt`): objects in, the exact writes of a
//! pass out. A pass runs `master::leader::control::plan` — the function the
//! leader runs — over a snapshot with a fixed clock, so its uids, names and
//! timestamps are the same on every run.
//!
//! Directives:
//!
//! - `create` + YAML documents: stored as the API's create stores them
//!   (status dropped, uid `uid-NAME` unless given, creation time now).
//! - `stored` + YAML documents: stored as written, status included (nodes,
//!   pods that run).
//! - `pass`: one control pass; prints its transactions, then applies all
//!   of them to the snapshot (as if every compare held), events aside.
//! - `update` + YAML documents: an update of stored objects, as the API's
//!   apply stores it (identity and status kept, generation raised when the
//!   spec changes).
//! - `running`: every bound pod that has not finished runs, ready (what
//!   the workers would report, host ports included); `phase
//!   value=Succeeded|Failed`: they exit.
//! - `delete kind=KIND [namespace=NAMESPACE] name=NAME`: a key goes (a node lost past its
//!   eviction timeout takes its pods so, through the prober).
//! - `advance seconds=N`: the clock moves on.
//!
//! Transactions print sorted by their first key (a pass writes each key
//! at most once, so their order does not matter). `REWRITE=1 cargo test -p
//! master --test control` rewrites the expected outputs from what the code
//! does now; read the diff before committing it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use api::pod::HostPort;
use api::{ContainerState, ContainerStatus, Kind, PodPhase, PodStatus};
use kvs::kv::{CompareTarget, Op, Txn};
use master::clock::Clock;
use master::leader::Snapshot;
use master::leader::control::{SchedulerMemory, plan};
use master::objects::Object;
use master::scheduler::ScorePolicy;
use master::store::{Stored, key};
use serde::Deserialize as _;

/// 2026-01-01T00:00:00Z, where every scenario starts.
const START: Duration = Duration::from_secs(1_767_225_600);

struct Scenario {
    snap: Snapshot,
    memory: SchedulerMemory,
    now: SystemTime,
    next_id: u64,
}

impl Scenario {
    fn new() -> Scenario {
        Scenario {
            snap: Snapshot::default(),
            memory: SchedulerMemory::default(),
            now: SystemTime::UNIX_EPOCH + START,
            next_id: 1,
        }
    }

    fn run(
        &mut self,
        directive: &str,
        args: &HashMap<String, Vec<String>>,
        input: &str,
    ) -> Result<String, String> {
        let arg = |name: &str| -> Result<&str, String> {
            match args.get(name).map(Vec::as_slice) {
                Some([value]) => Ok(value.as_str()),
                _ => Err(format!("{directive} needs {name}=VALUE")),
            }
        };
        match directive {
            "create" | "stored" | "update" => {
                let mut out = String::new();
                for doc in serde_yaml_ng::Deserializer::from_str(input) {
                    let value = serde_json::to_value(
                        serde_yaml_ng::Value::deserialize(doc).map_err(|e| e.to_string())?,
                    )
                    .map_err(|e| e.to_string())?;
                    let mut object = Object::parse(value).map_err(|e| e.to_string())?;
                    object.validate().map_err(|e| e.to_string())?;
                    if directive == "update" {
                        let kind = object.kind();
                        let meta = object.meta();
                        let k = key(kind, &meta.namespace, &meta.name);
                        let existing = self
                            .get(&k)
                            .ok_or_else(|| format!("{k} is not stored: create it first"))?;
                        object = object.for_update(&existing).map_err(|e| e.to_string())?;
                    } else if directive == "create" {
                        let uid = match object.meta().uid.as_str() {
                            "" => format!("uid-{}", object.meta().name),
                            given => given.to_string(),
                        };
                        object = object.for_create(uid, self.clock().rfc3339());
                    }
                    let k = self.store(object)?;
                    let _ = writeln!(out, "{k} @{}", self.snap.revision);
                }
                Ok(out)
            }
            "pass" => {
                let clock = self.clock();
                let writes = plan(&self.snap, ScorePolicy::Spread, &mut self.memory, clock);
                self.next_id = writes.clock().next_id().unwrap_or(self.next_id);
                let mut txns: Vec<&Txn> = writes.txns.iter().collect();
                txns.sort_by_key(|t| first_key(t).to_string());
                let mut out = String::new();
                for txn in &txns {
                    out.push_str(&print(txn));
                }
                for txn in txns {
                    self.apply(txn)?;
                }
                Ok(if out.is_empty() {
                    "(no writes)\n".into()
                } else {
                    out
                })
            }
            "running" | "phase" => {
                let (phase, ready) = match directive {
                    "running" => (PodPhase::Running, true),
                    _ => match arg("value")? {
                        "Succeeded" => (PodPhase::Succeeded, false),
                        "Failed" => (PodPhase::Failed, false),
                        other => return Err(format!("phase {other}: Succeeded or Failed")),
                    },
                };
                let now = self.clock().rfc3339();
                let mut changed = Vec::new();
                for stored in &self.snap.pods {
                    let pod = &stored.object;
                    let current = pod.status.as_ref().map(|s| s.phase);
                    let Some(node) = &pod.spec.node_name else {
                        continue;
                    };
                    if matches!(current, Some(PodPhase::Succeeded | PodPhase::Failed))
                        || current == Some(phase)
                        || pod.metadata.deletion_timestamp.is_some()
                    {
                        continue;
                    }
                    let mut pod = pod.clone();
                    let host_ip = self
                        .snap
                        .nodes
                        .iter()
                        .find(|n| &n.object.metadata.name == node)
                        .and_then(|n| n.object.status.as_ref())
                        .map(|s| s.host_ip.clone());
                    let state = |c: &api::Container| match phase {
                        PodPhase::Running => ContainerState::Running {
                            started_at: now.clone(),
                        },
                        _ => ContainerState::Terminated {
                            exit_code: i64::from(phase == PodPhase::Failed),
                            reason: if phase == PodPhase::Failed {
                                "Error".into()
                            } else {
                                "Completed".into()
                            },
                            started_at: Some(now.clone()),
                            finished_at: Some(now.clone()),
                            message: Some(format!("{} done\n", c.name)),
                        },
                    };
                    let host_ports = match phase {
                        PodPhase::Running => pod
                            .spec
                            .containers
                            .iter()
                            .flat_map(|c| {
                                c.ports.iter().filter_map(|p| {
                                    Some(HostPort {
                                        container: c.name.clone(),
                                        container_port: p.container_port,
                                        host_port: p.host_port?,
                                        protocol: p.protocol,
                                    })
                                })
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    pod.status = Some(PodStatus {
                        phase,
                        host_ip,
                        host_ports,
                        start_time: Some(now.clone()),
                        container_statuses: pod
                            .spec
                            .containers
                            .iter()
                            .map(|c| ContainerStatus {
                                name: c.name.clone(),
                                state: state(c),
                                last_state: None,
                                ready,
                                restart_count: 0,
                                image: c.image.clone(),
                                container_id: None,
                            })
                            .collect(),
                        ..PodStatus::default()
                    });
                    changed.push(pod);
                }
                let mut out = String::new();
                for pod in changed {
                    let k = self.store(Object::Pod(pod))?;
                    let _ = writeln!(out, "{k} {phase:?} @{}", self.snap.revision);
                }
                Ok(out)
            }
            "delete" => {
                let (kind, name) = (arg("kind")?, arg("name")?);
                let kind = Kind::parse(kind).map_err(|e| e.to_string())?;
                let namespace = arg("namespace").unwrap_or("");
                let k = key(kind, namespace, name);
                if !self.remove(&k) {
                    return Err(format!("{k} is not stored"));
                }
                self.snap.revision += 1;
                Ok(format!("{k} deleted @{}\n", self.snap.revision))
            }
            "advance" => {
                let seconds = arg("seconds")?;
                let seconds: u64 = seconds.parse().map_err(|e| format!("{seconds}: {e}"))?;
                self.now += Duration::from_secs(seconds);
                Ok(format!("{}\n", self.clock().rfc3339()))
            }
            other => Err(format!("unknown directive {other:?}")),
        }
    }

    fn clock(&self) -> Clock {
        Clock::fixed(self.now, self.next_id)
    }

    /// The object stored at `k`.
    fn get(&self, k: &str) -> Option<Object> {
        let s = &self.snap;
        let found = |kind: Kind, m: &api::ObjectMeta| key(kind, &m.namespace, &m.name) == k;
        s.pods
            .iter()
            .find(|o| found(Kind::Pod, &o.object.metadata))
            .map(|o| Object::Pod(o.object.clone()))
            .or_else(|| {
                s.deployments
                    .iter()
                    .find(|o| found(Kind::Deployment, &o.object.metadata))
                    .map(|o| Object::Deployment(o.object.clone()))
            })
            .or_else(|| {
                s.replica_sets
                    .iter()
                    .find(|o| found(Kind::ReplicaSet, &o.object.metadata))
                    .map(|o| Object::ReplicaSet(o.object.clone()))
            })
            .or_else(|| {
                s.nodes
                    .iter()
                    .find(|o| found(Kind::Node, &o.object.metadata))
                    .map(|o| Object::Node(o.object.clone()))
            })
            .or_else(|| {
                s.services
                    .iter()
                    .find(|o| found(Kind::Service, &o.object.metadata))
                    .map(|o| Object::Service(o.object.clone()))
            })
            .or_else(|| {
                s.jobs
                    .iter()
                    .find(|o| found(Kind::Job, &o.object.metadata))
                    .map(|o| Object::Job(o.object.clone()))
            })
    }

    /// Applies a pass's transaction as if its compares held.
    fn apply(&mut self, txn: &Txn) -> Result<(), String> {
        for op in &txn.success {
            match op {
                Op::Put { key, .. } if key.starts_with("/registry/events/") => {}
                Op::Put { key, value } => {
                    let value = serde_json::from_str(value).map_err(|e| format!("{key}: {e}"))?;
                    let object = Object::parse(value).map_err(|e| format!("{key}: {e}"))?;
                    self.store(object)?;
                }
                Op::Delete { key } => {
                    self.remove(key);
                    self.snap.revision += 1;
                }
                other => return Err(format!("a pass wrote {other:?}")),
            }
        }
        Ok(())
    }

    /// Stores `object` at the next revision; returns its key.
    fn store(&mut self, mut object: Object) -> Result<String, String> {
        self.snap.revision += 1;
        let revision = self.snap.revision;
        let kind = object.kind();
        let meta = object.meta_mut();
        meta.resource_version = Some(revision.to_string());
        let k = key(kind, &meta.namespace, &meta.name);
        self.remove(&k);
        fn put<T>(list: &mut Vec<std::sync::Arc<Stored<T>>>, object: T, revision: i64) {
            list.push(std::sync::Arc::new(Stored {
                object,
                mod_revision: revision,
            }));
        }
        let snap = &mut self.snap;
        match object {
            Object::Pod(o) => put(&mut snap.pods, o, revision),
            Object::ReplicaSet(o) => put(&mut snap.replica_sets, o, revision),
            Object::Deployment(o) => put(&mut snap.deployments, o, revision),
            Object::Node(o) => put(&mut snap.nodes, o, revision),
            Object::Service(o) => put(&mut snap.services, o, revision),
            Object::Endpoints(o) => put(&mut snap.endpoints, o, revision),
            Object::Job(o) => put(&mut snap.jobs, o, revision),
            Object::PodDisruptionBudget(o) => put(&mut snap.budgets, o, revision),
            Object::Event(_) => return Err("events are not part of a snapshot".into()),
        }
        self.sort();
        Ok(k)
    }

    /// Removes the object at `k`; whether there was one.
    fn remove(&mut self, k: &str) -> bool {
        fn drop_key<T>(
            list: &mut Vec<std::sync::Arc<Stored<T>>>,
            k: &str,
            key_of: impl Fn(&T) -> String,
        ) -> bool {
            let before = list.len();
            list.retain(|s| key_of(&s.object) != k);
            list.len() != before
        }
        let s = &mut self.snap;
        let namespaced = |kind: Kind| move |m: &api::ObjectMeta| key(kind, &m.namespace, &m.name);
        drop_key(&mut s.pods, k, |o| namespaced(Kind::Pod)(&o.metadata))
            | drop_key(&mut s.replica_sets, k, |o| {
                namespaced(Kind::ReplicaSet)(&o.metadata)
            })
            | drop_key(&mut s.deployments, k, |o| {
                namespaced(Kind::Deployment)(&o.metadata)
            })
            | drop_key(&mut s.nodes, k, |o| namespaced(Kind::Node)(&o.metadata))
            | drop_key(&mut s.services, k, |o| {
                namespaced(Kind::Service)(&o.metadata)
            })
            | drop_key(&mut s.endpoints, k, |o| {
                namespaced(Kind::Endpoints)(&o.metadata)
            })
            | drop_key(&mut s.jobs, k, |o| namespaced(Kind::Job)(&o.metadata))
            | drop_key(&mut s.budgets, k, |o| {
                namespaced(Kind::PodDisruptionBudget)(&o.metadata)
            })
    }

    /// Lists in key order, as a read of the store returns them.
    fn sort(&mut self) {
        let s = &mut self.snap;
        s.pods
            .sort_by(|a, b| by_name(&a.object.metadata, &b.object.metadata));
        s.replica_sets
            .sort_by(|a, b| by_name(&a.object.metadata, &b.object.metadata));
        s.deployments
            .sort_by(|a, b| by_name(&a.object.metadata, &b.object.metadata));
        s.nodes
            .sort_by(|a, b| by_name(&a.object.metadata, &b.object.metadata));
        s.services
            .sort_by(|a, b| by_name(&a.object.metadata, &b.object.metadata));
        s.endpoints
            .sort_by(|a, b| by_name(&a.object.metadata, &b.object.metadata));
        s.jobs
            .sort_by(|a, b| by_name(&a.object.metadata, &b.object.metadata));
        s.budgets
            .sort_by(|a, b| by_name(&a.object.metadata, &b.object.metadata));
    }
}

fn by_name(a: &api::ObjectMeta, b: &api::ObjectMeta) -> std::cmp::Ordering {
    (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
}

fn first_key(txn: &Txn) -> &str {
    txn.success
        .iter()
        .find_map(|op| match op {
            Op::Put { key, .. } | Op::Delete { key } => Some(key.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

/// One transaction: its guards, then each operation on a line, values as
/// compact JSON.
fn print(txn: &Txn) -> String {
    let guards: Vec<String> = txn
        .compares
        .iter()
        .map(|c| match &c.target {
            CompareTarget::ModRevision(r) => format!("{} mod={r}", c.key),
            CompareTarget::Version(v) => format!("{} version={v}", c.key),
            CompareTarget::CreateRevision(r) => format!("{} create={r}", c.key),
            CompareTarget::Value(v) => format!("{} value={v}", c.key),
        })
        .collect();
    let mut out = if guards.is_empty() {
        "txn\n".to_string()
    } else {
        format!("txn if {}\n", guards.join(", "))
    };
    for (branch, ops) in [("", &txn.success), ("else ", &txn.failure)] {
        for op in ops {
            let line = match op {
                Op::Put { key, value } => format!("put {key} {value}"),
                Op::Delete { key } => format!("delete {key}"),
                other => format!("{other:?}"),
            };
            let _ = writeln!(out, "  {branch}{line}");
        }
    }
    out
}

#[test]
fn control_pass_scenarios() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/control");
    datadriven::walk(dir, |file| {
        let mut scenario = Scenario::new();
        file.run(|case| {
            scenario
                .run(&case.directive, &case.args, &case.input)
                .unwrap_or_else(|e| panic!("{}: {e}", case.directive))
        });
    });
    let files = std::fs::read_dir(dir)
        .map(|d| d.filter(|e| e.is_ok()).count())
        .unwrap_or(0);
    assert!(files >= 5, "{dir} holds {files} scenario files");
}

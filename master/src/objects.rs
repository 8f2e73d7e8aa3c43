//! Objects as the API receives them: parsing a manifest's JSON into its
//! typed kind (every unknown or mistyped field named by its path), server
//! side validation, and what an update may change.
//!
//! Pure functions of their inputs; the API service does the I/O.

use api::batch::{CONTROLLER_UID_LABEL, JOB_NAME_LABEL, Job, PodDisruptionBudget};
use api::master::MasterError;
use api::service::{Endpoints, Service};
use api::validation::{
    validate_deployment, validate_job, validate_node, validate_pod_disruption_budget,
    validate_replica_set, validate_service,
};
use api::{Deployment, EventRecord, Kind, Node, ObjectMeta, Pod, ReplicaSet, validate_pod};
use serde::de::DeserializeOwned;

/// One object of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A pod.
    Pod(Pod),
    /// A ReplicaSet.
    ReplicaSet(ReplicaSet),
    /// A Deployment.
    Deployment(Deployment),
    /// A node.
    Node(Node),
    /// An event.
    Event(EventRecord),
    /// A Service.
    Service(Service),
    /// A Service's Endpoints.
    Endpoints(Endpoints),
    /// A Job.
    Job(Job),
    /// A PodDisruptionBudget.
    PodDisruptionBudget(PodDisruptionBudget),
}

/// `value` as the kind's type. Errors name the field by its path; an array
/// where the type has an object is refused (serde's derived structs would
/// take an array of their fields in order, `"metadata": ["web"]`;
/// Kubernetes refuses that and so do we).
fn typed<T: DeserializeOwned>(kind: Kind, value: serde_json::Value) -> Result<T, MasterError> {
    let name = value
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    serde_path_to_error::deserialize(rpc::strict::Strict(&value)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        MasterError::InvalidArgument(if path == "." {
            format!("{kind} {name:?}: {inner}")
        } else {
            format!("{kind} {name:?}: {path}: {inner}")
        })
    })
}

impl Object {
    /// Parses a manifest's JSON by its `kind`.
    pub fn parse(value: serde_json::Value) -> Result<Object, MasterError> {
        let Some(kind) = value.get("kind").and_then(|k| k.as_str()) else {
            return Err(MasterError::InvalidArgument(
                "the object has no \"kind\"; every manifest names one (Pod, ReplicaSet, Deployment, Job, Service, PodDisruptionBudget, Node)"
                    .into(),
            ));
        };
        let kind = Kind::parse(kind).map_err(|e| MasterError::InvalidArgument(e.to_string()))?;
        Ok(match kind {
            Kind::Pod => Object::Pod(typed(kind, value)?),
            Kind::ReplicaSet => Object::ReplicaSet(typed(kind, value)?),
            Kind::Deployment => Object::Deployment(typed(kind, value)?),
            Kind::Node => {
                let mut node: Node = typed(kind, value)?;
                node.metadata.namespace = String::new();
                Object::Node(node)
            }
            Kind::Event => Object::Event(typed(kind, value)?),
            Kind::Service => Object::Service(typed(kind, value)?),
            Kind::Endpoints => Object::Endpoints(typed(kind, value)?),
            Kind::Job => Object::Job(typed(kind, value)?),
            Kind::PodDisruptionBudget => Object::PodDisruptionBudget(typed(kind, value)?),
        })
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Deployment(_) => Kind::Deployment,
            Object::Node(_) => Kind::Node,
            Object::Event(_) => Kind::Event,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::Job(_) => Kind::Job,
            Object::PodDisruptionBudget(_) => Kind::PodDisruptionBudget,
        }
    }

    /// Its metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Pod(o) => &o.metadata,
            Object::ReplicaSet(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Event(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::Job(o) => &o.metadata,
            Object::PodDisruptionBudget(o) => &o.metadata,
        }
    }

    /// Its metadata, to change.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Pod(o) => &mut o.metadata,
            Object::ReplicaSet(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::Node(o) => &mut o.metadata,
            Object::Event(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::Endpoints(o) => &mut o.metadata,
            Object::Job(o) => &mut o.metadata,
            Object::PodDisruptionBudget(o) => &mut o.metadata,
        }
    }

    /// Its JSON.
    pub fn to_value(&self) -> serde_json::Value {
        let v = match self {
            Object::Pod(o) => serde_json::to_value(o),
            Object::ReplicaSet(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
            Object::Node(o) => serde_json::to_value(o),
            Object::Event(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::Endpoints(o) => serde_json::to_value(o),
            Object::Job(o) => serde_json::to_value(o),
            Object::PodDisruptionBudget(o) => serde_json::to_value(o),
        };
        v.unwrap_or(serde_json::Value::Null)
    }

    /// The stored form (no `resourceVersion`).
    pub fn encode(&self) -> String {
        crate::store::encode(&self.to_value())
    }

    /// Server-side validation, every bad field named.
    pub fn validate(&self) -> Result<(), MasterError> {
        let r = match self {
            Object::Pod(o) => validate_pod(o),
            Object::ReplicaSet(o) => validate_replica_set(o),
            Object::Deployment(o) => validate_deployment(o),
            Object::Node(o) => validate_node(o),
            Object::Service(o) => validate_service(o),
            Object::Job(o) => validate_job(o),
            Object::PodDisruptionBudget(o) => validate_pod_disruption_budget(o),
            Object::Event(o) => {
                let mut errors = api::validation::Errors::default();
                api::validation::validate_meta(&o.metadata, &mut errors);
                errors.finish()
            }
            Object::Endpoints(_) => {
                return Err(MasterError::InvalidArgument(
                    "Endpoints are written by the endpoints controller from their Service's selector; create or change the Service instead".into(),
                ));
            }
        };
        r.map_err(|errors| MasterError::Invalid {
            kind: self.kind().to_string(),
            name: self.meta().name.clone(),
            errors,
        })
    }

    /// The bounds of `limits`, every exceeded field named with the flag
    /// that moves it.
    pub fn check_limits(&self, limits: &ApiLimits) -> Result<(), MasterError> {
        let (replicas, field) = match self {
            Object::ReplicaSet(o) => (o.spec.replicas, "spec.replicas"),
            Object::Deployment(o) => (o.spec.replicas, "spec.replicas"),
            Object::Job(o) => (o.spec.parallelism, "spec.parallelism"),
            _ => return Ok(()),
        };
        if replicas <= limits.max_replicas {
            return Ok(());
        }
        Err(MasterError::Invalid {
            kind: self.kind().to_string(),
            name: self.meta().name.clone(),
            errors: api::ValidationError {
                errors: vec![api::FieldError {
                    field: field.into(),
                    reason: format!(
                        "{replicas} is more than this cluster allows ({}; the masters' --max-replicas)",
                        limits.max_replicas
                    ),
                }],
            },
        })
    }

    /// The object as first stored: a new uid, creation time, generation 1,
    /// and no status (the system writes status).
    pub fn for_create(mut self, uid: String, now: String) -> Object {
        let meta = self.meta_mut();
        meta.uid = uid;
        meta.creation_timestamp = Some(now);
        meta.generation = 1;
        meta.resource_version = None;
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        match &mut self {
            Object::Pod(p) => p.status = None,
            Object::ReplicaSet(r) => r.status = None,
            Object::Deployment(d) => d.status = None,
            Object::PodDisruptionBudget(p) => p.status = None,
            Object::Job(job) => {
                job.status = None;
                // Kubernetes' generated selector: the Job's pods carry its uid.
                let uid = job.metadata.uid.clone();
                let labels = &mut job.spec.template.metadata.labels;
                labels.insert(CONTROLLER_UID_LABEL.into(), uid.clone());
                labels.insert(JOB_NAME_LABEL.into(), job.metadata.name.clone());
                if job.spec.selector.is_none() {
                    job.spec.selector = Some(api::LabelSelector {
                        match_labels: [(CONTROLLER_UID_LABEL.to_string(), uid)].into(),
                        ..Default::default()
                    });
                }
            }
            Object::Node(_) | Object::Event(_) | Object::Service(_) | Object::Endpoints(_) => {}
        }
        self
    }

    /// The object an update of `existing` to `self` stores: identity,
    /// creation time, owners and status stay; the generation rises when the
    /// spec changes. A pod's spec cannot change (delete and re-create it).
    pub fn for_update(mut self, existing: &Object) -> Result<Object, MasterError> {
        if let (Object::Job(new), Object::Job(old)) = (&mut self, existing) {
            job_update(new, old)?;
        }
        let spec_changed = spec_json(&self) != spec_json(existing);
        if let (Object::Pod(new), Object::Pod(old)) = (&mut self, existing) {
            if new.spec.node_name.is_none() {
                new.spec.node_name.clone_from(&old.spec.node_name);
            }
            if new.spec != old.spec {
                return Err(MasterError::Invalid {
                    kind: "Pod".into(),
                    name: old.metadata.name.clone(),
                    errors: api::ValidationError {
                        errors: vec![api::FieldError {
                            field: "spec".into(),
                            reason: "pod updates may not change the spec; delete the pod and create it again (or let a Deployment replace it)".into(),
                        }],
                    },
                });
            }
        }
        let old = existing.meta();
        let generation = old.generation + i64::from(spec_changed);
        let meta = self.meta_mut();
        meta.uid.clone_from(&old.uid);
        meta.creation_timestamp.clone_from(&old.creation_timestamp);
        meta.deletion_timestamp.clone_from(&old.deletion_timestamp);
        meta.deletion_grace_period_seconds = old.deletion_grace_period_seconds;
        if meta.owner_references.is_empty() {
            meta.owner_references.clone_from(&old.owner_references);
        }
        meta.generation = generation;
        meta.resource_version = None;
        match (&mut self, existing) {
            (Object::Pod(n), Object::Pod(o)) => n.status.clone_from(&o.status),
            (Object::ReplicaSet(n), Object::ReplicaSet(o)) => n.status.clone_from(&o.status),
            (Object::Deployment(n), Object::Deployment(o)) => n.status.clone_from(&o.status),
            (Object::Node(n), Object::Node(o)) => n.status.clone_from(&o.status),
            (Object::Job(n), Object::Job(o)) => n.status.clone_from(&o.status),
            (Object::PodDisruptionBudget(n), Object::PodDisruptionBudget(o)) => {
                n.status.clone_from(&o.status)
            }
            _ => {}
        }
        Ok(self)
    }
}

/// An update of a Job keeps its generated selector and labels; its
/// template, completions and completion mode cannot change (Kubernetes'
/// rule: delete the Job and create it again), its parallelism, suspension,
/// deadline and TTL can.
fn job_update(new: &mut Job, old: &Job) -> Result<(), MasterError> {
    if new.spec.selector.is_none() {
        new.spec.selector.clone_from(&old.spec.selector);
    }
    for label in [CONTROLLER_UID_LABEL, JOB_NAME_LABEL] {
        if let Some(v) = old.spec.template.metadata.labels.get(label) {
            new.spec
                .template
                .metadata
                .labels
                .entry(label.to_string())
                .or_insert_with(|| v.clone());
        }
    }
    let mut errors = Vec::new();
    let mut immutable = |field: &str, same: bool| {
        if !same {
            errors.push(api::FieldError {
                field: field.into(),
                reason: "field is immutable; delete the Job and create it again".into(),
            });
        }
    };
    immutable("spec.selector", new.spec.selector == old.spec.selector);
    immutable("spec.template", new.spec.template == old.spec.template);
    immutable(
        "spec.completions",
        new.spec.completions == old.spec.completions,
    );
    immutable(
        "spec.completionMode",
        new.spec.completion_mode == old.spec.completion_mode,
    );
    if errors.is_empty() {
        return Ok(());
    }
    Err(MasterError::Invalid {
        kind: "Job".into(),
        name: old.metadata.name.clone(),
        errors: api::ValidationError { errors },
    })
}

fn spec_json(o: &Object) -> serde_json::Value {
    let spec = match o {
        Object::Pod(p) => serde_json::to_value(&p.spec),
        Object::ReplicaSet(r) => serde_json::to_value(&r.spec),
        Object::Deployment(d) => serde_json::to_value(&d.spec),
        Object::Node(n) => serde_json::to_value(&n.spec),
        Object::Event(e) => serde_json::to_value((&e.reason, &e.message)),
        Object::Service(s) => serde_json::to_value(&s.spec),
        Object::Endpoints(e) => serde_json::to_value(&e.subsets),
        Object::Job(j) => serde_json::to_value(&j.spec),
        Object::PodDisruptionBudget(p) => serde_json::to_value(&p.spec),
    };
    spec.unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "busybox"}]}
                }
            }
        })
    }

    #[test]
    fn unknown_kinds_and_fields_are_named() {
        let e = Object::parse(json!({"kind": "Widget", "metadata": {"name": "a"}}))
            .expect_err("unknown kind");
        assert!(e.to_string().contains("\"Widget\""), "{e}");
        let mut bad = deployment(json!(2));
        bad["spec"]["replica"] = json!(3);
        let e = Object::parse(bad).expect_err("unknown field");
        let text = e.to_string();
        assert!(
            text.contains("spec") && text.contains("`replica`"),
            "{text}"
        );
        let e = Object::parse(json!({"metadata": {"name": "a"}})).expect_err("no kind");
        assert!(e.to_string().contains("kind"), "{e}");
    }

    #[test]
    fn structs_given_as_arrays_of_their_fields_are_refused_by_path() {
        let mut bad = deployment(json!(2));
        bad["spec"]["template"]["spec"]["containers"] = json!([["web", "busybox"]]);
        let e = Object::parse(bad).expect_err("a container as an array");
        assert_eq!(
            e.to_string(),
            "Deployment \"web\": spec.template.spec.containers[0]: invalid type: sequence, expected a JSON object",
        );
        let mut bad = deployment(json!(2));
        bad["metadata"] = json!(["web"]);
        let e = Object::parse(bad).expect_err("metadata as an array");
        assert!(
            e.to_string()
                .contains("\"\": metadata: invalid type: sequence, expected a JSON object"),
            "{e}"
        );
        // Arrays where the kind has lists stay fine.
        let good = Object::parse(deployment(json!(2))).expect("well formed");
        assert_eq!(good.meta().name, "web");
    }

    #[test]
    fn negative_replicas_name_the_field() {
        let e = Object::parse(deployment(json!(-1))).expect_err("negative");
        let text = e.to_string();
        assert!(text.contains("spec.replicas"), "{text}");
        assert!(text.contains("-1"), "{text}");
    }

    #[test]
    fn missing_fields_and_bad_selectors_are_field_errors() {
        let mut no_image = deployment(json!(1));
        no_image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        let o = Object::parse(no_image).expect("parses");
        let e = o.validate().expect_err("no image");
        assert!(
            e.to_string()
                .contains("spec.template.spec.containers[0].image"),
            "{e}"
        );
        let mut mismatch = deployment(json!(1));
        mismatch["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
        let e = Object::parse(mismatch)
            .expect("parses")
            .validate()
            .expect_err("mismatch");
        assert!(
            e.to_string().contains("spec.template.metadata.labels"),
            "{e}"
        );
    }

    #[test]
    fn updates_keep_identity_and_bump_generation_on_spec_changes() {
        let first = Object::parse(deployment(json!(2)))
            .expect("parses")
            .for_create("u1".into(), "t0".into());
        let same = Object::parse(deployment(json!(2)))
            .expect("parses")
            .for_update(&first)
            .expect("update");
        assert_eq!(same, first);
        let scaled = Object::parse(deployment(json!(5)))
            .expect("parses")
            .for_update(&first)
            .expect("update");
        assert_eq!(scaled.meta().uid, "u1");
        assert_eq!(scaled.meta().generation, 2);
    }

    fn job(restart: &str, image: &str) -> serde_json::Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "cases"},
            "spec": {"completions": 3, "completionMode": "Indexed",
                "template": {"spec": {"restartPolicy": restart,
                    "containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn a_job_runs_to_completion_gets_its_selector_and_keeps_its_template() {
        let e = Object::parse(job("Always", "a"))
            .expect("parses")
            .validate()
            .expect_err("Always");
        assert!(
            e.to_string().contains("spec.template.spec.restartPolicy"),
            "{e}"
        );
        let first = Object::parse(job("Never", "a")).expect("parses");
        first.validate().expect("valid");
        let first = first.for_create("u1".into(), "t".into());
        let Object::Job(created) = &first else {
            panic!("a Job");
        };
        let selector = created.spec.selector.clone().expect("generated");
        assert!(selector.matches(&created.spec.template.metadata.labels));
        assert_eq!(
            created
                .spec
                .template
                .metadata
                .labels
                .get(CONTROLLER_UID_LABEL),
            Some(&"u1".to_string())
        );
        // The same manifest applied again is no change; a new image is refused.
        let again = Object::parse(job("Never", "a"))
            .expect("parses")
            .for_update(&first)
            .expect("same");
        assert_eq!(again, first);
        let e = Object::parse(job("Never", "b"))
            .expect("parses")
            .for_update(&first)
            .expect_err("immutable");
        assert!(e.to_string().contains("spec.template"), "{e}");
    }

    #[test]
    fn pod_specs_are_immutable() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let first = Object::parse(pod.clone())
            .expect("parses")
            .for_create("u".into(), "t".into());
        let mut changed = pod;
        changed["spec"]["containers"][0]["image"] = json!("b");
        let e = Object::parse(changed)
            .expect("parses")
            .for_update(&first)
            .expect_err("immutable");
        assert!(e.to_string().contains("spec"), "{e}");
    }
}

/// Bounds the API puts on what a user may ask for, beyond validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// The most replicas of one ReplicaSet or Deployment.
    pub max_replicas: u32,
}

/// Default of [`ApiLimits::max_replicas`]: a third of the 30,000 pods a
/// cluster is sized for (30 per node on 1,000 nodes).
pub const DEFAULT_MAX_REPLICAS: u32 = 10_000;

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_replicas: DEFAULT_MAX_REPLICAS,
        }
    }
}

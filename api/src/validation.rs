//! Validation with field-precise errors: every problem names the field by
//! its path in the manifest (`spec.containers[1].ports[0].hostPort`) and says
//! what would be accepted. All problems are reported at once, not the first.

use std::collections::{BTreeMap, BTreeSet};

use crate::meta::ObjectMeta;
use crate::pod::{Container, Pod, PodSpec, Probe, ResourceList};
use crate::quantity::{parse_cpu_millis, parse_memory_bytes};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// The field's path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// What is wrong and what is accepted.
    pub reason: String,
}

/// Every invalid field of one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{}", render(.errors))]
pub struct ValidationError {
    /// At least one.
    pub errors: Vec<FieldError>,
}

fn render(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.reason))
        .collect();
    parts.join("; ")
}

/// Collects field errors under a path.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records that `field` is invalid because of `reason`.
    pub fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// `Ok` when nothing was recorded.
    pub fn finish(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { errors: self.0 })
        }
    }
}

/// Whether `s` is a DNS-1123 label: 1–63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain: dot-separated labels, at most 253 bytes.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

const DNS_LABEL_HINT: &str =
    "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit";

/// Checks name, namespace and labels.
pub fn validate_meta(meta: &ObjectMeta, errors: &mut Errors) {
    if meta.name.is_empty() {
        errors.push("metadata.name", "required");
    } else if !is_dns1123_subdomain(&meta.name) {
        errors.push(
            "metadata.name",
            format!(
                "{:?} is not a DNS-1123 name: {DNS_LABEL_HINT} (dots separate labels)",
                meta.name
            ),
        );
    }
    if !is_dns1123_label(&meta.namespace) {
        errors.push(
            "metadata.namespace",
            format!("{:?}: {DNS_LABEL_HINT}", meta.namespace),
        );
    }
    validate_labels("metadata.labels", &meta.labels, errors);
    validate_annotations("metadata.annotations", &meta.annotations, errors);
}

/// Most bytes of one object's annotations, keys and values together
/// (Kubernetes' `TotalAnnotationSizeLimitB`).
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// Checks that annotations stay within [`MAX_ANNOTATION_BYTES`].
pub fn validate_annotations(
    path: &str,
    annotations: &BTreeMap<String, String>,
    errors: &mut Errors,
) {
    let bytes: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ANNOTATION_BYTES {
        errors.push(
            path,
            format!(
                "too long: {bytes} bytes, at most {MAX_ANNOTATION_BYTES} (keys and values together)"
            ),
        );
    }
}

/// Checks label keys (`[prefix/]name`) and values (≤ 63 of `[A-Za-z0-9._-]`).
pub fn validate_labels(path: &str, labels: &BTreeMap<String, String>, errors: &mut Errors) {
    let ok = |s: &str, max: usize| {
        s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    for (key, value) in labels {
        let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
        if name.is_empty() || !ok(name, 63) || (!prefix.is_empty() && !is_dns1123_subdomain(prefix))
        {
            errors.push(
                format!("{path}[{key:?}]"),
                "label keys are [prefix/]name with name 1-63 of letters, digits, '.', '_' or '-'",
            );
        }
        if !ok(value, 63) {
            errors.push(
                format!("{path}[{key:?}]"),
                format!("value {value:?} must be at most 63 of letters, digits, '.', '_' or '-'"),
            );
        }
    }
}

/// Validates a whole pod.
pub fn validate_pod(pod: &Pod) -> Result<(), ValidationError> {
    let mut errors = Errors::default();
    if pod.api_version != "v1" {
        errors.push(
            "apiVersion",
            format!("{:?} is not served; use \"v1\"", pod.api_version),
        );
    }
    if pod.kind != "Pod" {
        errors.push("kind", format!("{:?} is not a Pod", pod.kind));
    }
    validate_meta(&pod.metadata, &mut errors);
    validate_pod_spec("spec", &pod.spec, &mut errors);
    errors.finish()
}

/// Validates a pod spec found at `path` (also used for pod templates).
pub fn validate_pod_spec(path: &str, spec: &PodSpec, errors: &mut Errors) {
    if spec.containers.is_empty() {
        errors.push(
            format!("{path}.containers"),
            "at least one container is required",
        );
    }
    let mut names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let at = format!("{path}.containers[{i}]");
        if !names.insert(c.name.as_str()) {
            errors.push(
                format!("{at}.name"),
                format!(
                    "{:?} is used by an earlier container; names must be unique in a pod",
                    c.name
                ),
            );
        }
        validate_container(&at, c, errors);
        for (j, p) in c.ports.iter().enumerate() {
            if let Some(h) = p.host_port
                && h != 0
                && !host_ports.insert((h, p.protocol))
            {
                errors.push(
                    format!("{at}.ports[{j}].hostPort"),
                    format!("{h}/{:?} is already used by this pod", p.protocol),
                );
            }
        }
    }
    validate_labels(&format!("{path}.nodeSelector"), &spec.node_selector, errors);
    for (i, t) in spec.tolerations.iter().enumerate() {
        let at = format!("{path}.tolerations[{i}]");
        match t.operator {
            crate::pod::TolerationOperator::Exists if !t.value.is_empty() => {
                errors.push(at, "value must be empty when operator is Exists")
            }
            crate::pod::TolerationOperator::Equal if t.key.is_empty() => errors.push(
                at,
                "operator must be Exists when key is empty (to tolerate every taint)",
            ),
            _ => {}
        }
    }
    if let Some(node) = &spec.node_name
        && !is_dns1123_subdomain(node)
    {
        errors.push(
            format!("{path}.nodeName"),
            format!("{node:?} is not a DNS-1123 name"),
        );
    }
}

fn validate_container(at: &str, c: &Container, errors: &mut Errors) {
    if !is_dns1123_label(&c.name) {
        errors.push(
            format!("{at}.name"),
            format!("{:?}: {DNS_LABEL_HINT}", c.name),
        );
    }
    if c.image.trim().is_empty() {
        errors.push(format!("{at}.image"), "required");
    } else if c.image.chars().any(char::is_whitespace) {
        errors.push(
            format!("{at}.image"),
            format!("{:?} contains whitespace", c.image),
        );
    }
    for (j, e) in c.env.iter().enumerate() {
        let valid = e.name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
            && e.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            errors.push(
                format!("{at}.env[{j}].name"),
                format!(
                    "{:?} must be letters, digits, '_', '.' or '-', not starting with a digit",
                    e.name
                ),
            );
        }
    }
    for (j, p) in c.ports.iter().enumerate() {
        if p.container_port == 0 {
            errors.push(format!("{at}.ports[{j}].containerPort"), "must be 1-65535");
        }
        if p.host_port == Some(0) {
            errors.push(
                format!("{at}.ports[{j}].hostPort"),
                "must be 1-65535 (leave it out to not expose the port)",
            );
        }
    }
    let requests = validate_resources(
        &format!("{at}.resources.requests"),
        &c.resources.requests,
        errors,
    );
    let limits = validate_resources(
        &format!("{at}.resources.limits"),
        &c.resources.limits,
        errors,
    );
    for (what, req, lim) in [
        ("cpu", requests.0, limits.0),
        ("memory", requests.1, limits.1),
    ] {
        if let (Some(r), Some(l)) = (req, lim)
            && r > l
        {
            errors.push(
                format!("{at}.resources.requests.{what}"),
                format!("must not exceed the {what} limit"),
            );
        }
    }
    if let Some(p) = &c.liveness_probe {
        validate_probe(&format!("{at}.livenessProbe"), p, errors);
        if p.success_threshold != 1 {
            errors.push(
                format!("{at}.livenessProbe.successThreshold"),
                "must be 1 for a liveness probe",
            );
        }
    }
    if let Some(p) = &c.readiness_probe {
        validate_probe(&format!("{at}.readinessProbe"), p, errors);
    }
}

fn validate_resources(
    at: &str,
    list: &ResourceList,
    errors: &mut Errors,
) -> (Option<u64>, Option<u64>) {
    let cpu = list.cpu.as_deref().and_then(|q| match parse_cpu_millis(q) {
        Ok(0) => {
            errors.push(format!("{at}.cpu"), "must be greater than zero");
            None
        }
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(format!("{at}.cpu"), e);
            None
        }
    });
    let memory = list
        .memory
        .as_deref()
        .and_then(|q| match parse_memory_bytes(q) {
            Ok(v) if v < 4 << 20 => {
                errors.push(
                    format!("{at}.memory"),
                    "must be at least 4Mi (Docker's minimum)",
                );
                None
            }
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(format!("{at}.memory"), e);
                None
            }
        });
    (cpu, memory)
}

fn validate_probe(at: &str, p: &Probe, errors: &mut Errors) {
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
    ];
    if handlers.iter().filter(|h| **h).count() != 1 {
        errors.push(
            at.to_string(),
            "set exactly one of exec, httpGet, tcpSocket",
        );
    }
    if let Some(e) = &p.exec
        && e.command.is_empty()
    {
        errors.push(format!("{at}.exec.command"), "required");
    }
    if let Some(h) = &p.http_get {
        if !h.path.starts_with('/') {
            errors.push(
                format!("{at}.httpGet.path"),
                format!("{:?} must start with '/'", h.path),
            );
        }
        if h.port == 0 {
            errors.push(format!("{at}.httpGet.port"), "must be 1-65535");
        }
    }
    if p.tcp_socket.as_ref().is_some_and(|t| t.port == 0) {
        errors.push(format!("{at}.tcpSocket.port"), "must be 1-65535");
    }
    for (field, v) in [
        ("periodSeconds", p.period_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("failureThreshold", p.failure_threshold),
        ("successThreshold", p.success_threshold),
    ] {
        if v == 0 {
            errors.push(format!("{at}.{field}"), "must be at least 1");
        }
    }
}

fn validate_header(api_version: &str, kind: &str, want: crate::kind::Kind, errors: &mut Errors) {
    if api_version != want.api_version() {
        errors.push(
            "apiVersion",
            format!(
                "{api_version:?} is not served for {want}; use {:?}",
                want.api_version()
            ),
        );
    }
    if kind != want.as_str() {
        errors.push("kind", format!("{kind:?} is not a {want}"));
    }
}

fn validate_workload(
    selector: &crate::selector::LabelSelector,
    template: &crate::workloads::PodTemplateSpec,
    errors: &mut Errors,
) {
    if selector.is_empty() {
        errors.push(
            "spec.selector",
            "required: an empty selector would adopt every pod of the namespace",
        );
    } else if !selector.matches(&template.metadata.labels) {
        errors.push(
            "spec.template.metadata.labels",
            "must match spec.selector, or the controller would never see its own pods",
        );
    }
    validate_template(template, errors);
}

/// A workload's pod template: labels, annotations, no node, a valid pod spec.
fn validate_template(template: &crate::workloads::PodTemplateSpec, errors: &mut Errors) {
    validate_annotations(
        "spec.template.metadata.annotations",
        &template.metadata.annotations,
        errors,
    );
    validate_labels(
        "spec.template.metadata.labels",
        &template.metadata.labels,
        errors,
    );
    if template.spec.node_name.is_some() {
        errors.push(
            "spec.template.spec.nodeName",
            "must be empty: the scheduler places each pod",
        );
    }
    validate_pod_spec("spec.template.spec", &template.spec, errors);
}

/// Validates a ReplicaSet.
pub fn validate_replica_set(rs: &crate::workloads::ReplicaSet) -> Result<(), ValidationError> {
    let mut errors = Errors::default();
    validate_header(
        &rs.api_version,
        &rs.kind,
        crate::kind::Kind::ReplicaSet,
        &mut errors,
    );
    validate_meta(&rs.metadata, &mut errors);
    validate_workload(&rs.spec.selector, &rs.spec.template, &mut errors);
    errors.finish()
}

/// Validates a Deployment, its rollout bounds included.
pub fn validate_deployment(d: &crate::workloads::Deployment) -> Result<(), ValidationError> {
    use crate::workloads::StrategyType;
    let mut errors = Errors::default();
    validate_header(
        &d.api_version,
        &d.kind,
        crate::kind::Kind::Deployment,
        &mut errors,
    );
    validate_meta(&d.metadata, &mut errors);
    validate_workload(&d.spec.selector, &d.spec.template, &mut errors);
    let strategy = &d.spec.strategy;
    match (strategy.type_, &strategy.rolling_update) {
        (StrategyType::Recreate, Some(_)) => errors.push(
            "spec.strategy.rollingUpdate",
            "may not be set when spec.strategy.type is Recreate",
        ),
        (StrategyType::RollingUpdate, Some(ru)) => {
            let surge = ru.max_surge.resolve(d.spec.replicas, true);
            let unavailable = ru.max_unavailable.resolve(d.spec.replicas, false);
            if let Err(e) = &surge {
                errors.push("spec.strategy.rollingUpdate.maxSurge", e.clone());
            }
            if let Err(e) = &unavailable {
                errors.push("spec.strategy.rollingUpdate.maxUnavailable", e.clone());
            }
            let zero = |v: &crate::workloads::IntOrPercent| v.resolve(100, true) == Ok(0);
            if zero(&ru.max_surge) && zero(&ru.max_unavailable) {
                errors.push(
                    "spec.strategy.rollingUpdate",
                    "maxSurge and maxUnavailable may not both be 0: the rollout could never progress",
                );
            }
        }
        _ => {}
    }
    errors.finish()
}

/// The most completions (and parallelism) of one Job: Kubernetes' bound
/// for Indexed Jobs.
pub const MAX_JOB_COMPLETIONS: u32 = 100_000;

/// Validates a Job: its template runs to completion (`restartPolicy`
/// `OnFailure` or `Never`), its counts are in range, and its selector, once
/// the API server has generated it, matches the template.
pub fn validate_job(job: &crate::batch::Job) -> Result<(), ValidationError> {
    use crate::pod::RestartPolicy;
    let mut errors = Errors::default();
    validate_header(
        &job.api_version,
        &job.kind,
        crate::kind::Kind::Job,
        &mut errors,
    );
    validate_meta(&job.metadata, &mut errors);
    let spec = &job.spec;
    match &spec.selector {
        Some(selector) => validate_workload(selector, &spec.template, &mut errors),
        // Generated on create from the Job's uid.
        None => validate_template(&spec.template, &mut errors),
    }
    if spec.template.spec.restart_policy == RestartPolicy::Always {
        errors.push(
            "spec.template.spec.restartPolicy",
            "must be OnFailure or Never: a Job's pods run to completion",
        );
    }
    for (field, n) in [
        ("completions", spec.completions),
        ("parallelism", spec.parallelism),
    ] {
        if n > MAX_JOB_COMPLETIONS {
            errors.push(
                format!("spec.{field}"),
                format!("{n} is more than {MAX_JOB_COMPLETIONS}"),
            );
        }
    }
    if spec.completions == 0 {
        errors.push("spec.completions", "must be at least 1");
    }
    if spec.active_deadline_seconds == Some(0) {
        errors.push(
            "spec.activeDeadlineSeconds",
            "must be at least 1 (leave it out for no deadline)",
        );
    }
    errors.finish()
}

/// Validates a PodDisruptionBudget: a selector and exactly one bound.
pub fn validate_pod_disruption_budget(
    pdb: &crate::batch::PodDisruptionBudget,
) -> Result<(), ValidationError> {
    let mut errors = Errors::default();
    validate_header(
        &pdb.api_version,
        &pdb.kind,
        crate::kind::Kind::PodDisruptionBudget,
        &mut errors,
    );
    validate_meta(&pdb.metadata, &mut errors);
    if pdb.spec.selector.is_empty() {
        errors.push(
            "spec.selector",
            "required: an empty selector would cover every pod of the namespace",
        );
    }
    match (&pdb.spec.min_available, &pdb.spec.max_unavailable) {
        (Some(_), Some(_)) => errors.push(
            "spec",
            "minAvailable and maxUnavailable may not both be set",
        ),
        (None, None) => errors.push("spec", "one of minAvailable and maxUnavailable is required"),
        (Some(v), None) => {
            if let Err(e) = v.resolve(100, true) {
                errors.push("spec.minAvailable", e);
            }
        }
        (None, Some(v)) => {
            if let Err(e) = v.resolve(100, true) {
                errors.push("spec.maxUnavailable", e);
            }
        }
    }
    errors.finish()
}

/// Validates a node (nodes have no namespace).
pub fn validate_node(node: &crate::node::Node) -> Result<(), ValidationError> {
    let mut errors = Errors::default();
    validate_header(
        &node.api_version,
        &node.kind,
        crate::kind::Kind::Node,
        &mut errors,
    );
    if !is_dns1123_subdomain(&node.metadata.name) {
        errors.push(
            "metadata.name",
            format!("{:?} is not a DNS-1123 name", node.metadata.name),
        );
    }
    validate_labels("metadata.labels", &node.metadata.labels, &mut errors);
    let mut seen = BTreeSet::new();
    for (i, taint) in node.spec.taints.iter().enumerate() {
        let pair = BTreeMap::from([(taint.key.clone(), taint.value.clone())]);
        validate_labels(&format!("spec.taints[{i}]"), &pair, &mut errors);
        if !seen.insert((&taint.key, taint.effect)) {
            errors.push(
                format!("spec.taints[{i}]"),
                format!("{taint} repeats the key and effect of an earlier taint"),
            );
        }
    }
    errors.finish()
}

/// Validates a Service: its name is a DNS label (it is one in
/// `NAME.NAMESPACE.svc.<domain>`), it selects pods, and its ports are
/// named so that SRV records can name them.
pub fn validate_service(svc: &crate::service::Service) -> Result<(), ValidationError> {
    use crate::service::TargetPort;
    let mut errors = Errors::default();
    validate_header(
        &svc.api_version,
        &svc.kind,
        crate::kind::Kind::Service,
        &mut errors,
    );
    validate_meta(&svc.metadata, &mut errors);
    let name = &svc.metadata.name;
    let label_from_a_letter =
        is_dns1123_label(name) && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if !name.is_empty() && !label_from_a_letter {
        errors.push(
            "metadata.name",
            format!(
                "{name:?} must be a DNS label starting with a letter (it is the first label of NAME.NAMESPACE.svc.<domain>): {DNS_LABEL_HINT}"
            ),
        );
    }
    if svc.spec.selector.is_empty() {
        errors.push(
            "spec.selector",
            "required: mkube keeps Endpoints only for Services that select pods",
        );
    }
    validate_labels("spec.selector", &svc.spec.selector, &mut errors);
    if svc.spec.ports.is_empty() {
        errors.push("spec.ports", "at least one port is required");
    }
    let several = svc.spec.ports.len() > 1;
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in svc.spec.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match &p.name {
            None if several => errors.push(
                format!("{at}.name"),
                "required when a Service has several ports (SRV records are named by it)",
            ),
            None => {}
            Some(n) if !is_dns1123_label(n) || n.len() > 15 => errors.push(
                format!("{at}.name"),
                format!("{n:?} must be a DNS label of at most 15 characters (an SRV service name)"),
            ),
            Some(n) if !names.insert(n.clone()) => errors.push(
                format!("{at}.name"),
                format!("{n:?} is used by another port"),
            ),
            Some(_) => {}
        }
        if p.port == 0 {
            errors.push(format!("{at}.port"), "must be 1-65535");
        } else if !numbers.insert((p.port, p.protocol)) {
            errors.push(
                format!("{at}.port"),
                format!("{} {:?} is used by another port", p.port, p.protocol),
            );
        }
        match &p.target_port {
            Some(TargetPort::Number(0)) => {
                errors.push(format!("{at}.targetPort"), "must be 1-65535 or a port name")
            }
            Some(TargetPort::Name(n)) if !is_dns1123_label(n) => errors.push(
                format!("{at}.targetPort"),
                format!("{n:?} is not a container port name: {DNS_LABEL_HINT}"),
            ),
            _ => {}
        }
    }
    errors.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{ContainerPort, ExecAction, Protocol};

    fn container(name: &str, image: &str) -> Container {
        Container::new(name, image)
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod::new(
            "web",
            PodSpec {
                containers,
                restart_policy: Default::default(),
                termination_grace_period_seconds: None,
                node_selector: BTreeMap::new(),
                tolerations: Vec::new(),
                node_name: None,
            },
        )
    }

    fn fields(p: &Pod) -> Vec<String> {
        match validate_pod(p) {
            Ok(()) => vec![],
            Err(e) => e.errors.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn a_minimal_pod_is_valid() {
        assert_eq!(
            fields(&pod(vec![container("app", "busybox")])),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let mut a = container("App", "");
        a.ports.push(ContainerPort {
            name: None,
            container_port: 0,
            host_port: Some(8080),
            protocol: Protocol::TCP,
        });
        a.resources.limits.cpu = Some("lots".into());
        a.resources.requests.memory = Some("256Mi".into());
        a.resources.limits.memory = Some("128Mi".into());
        let mut b = container("b", "busybox");
        b.ports.push(ContainerPort {
            name: None,
            container_port: 80,
            host_port: Some(8080),
            protocol: Protocol::TCP,
        });
        b.liveness_probe = Some(Probe {
            exec: Some(ExecAction { command: vec![] }),
            http_get: None,
            tcp_socket: None,
            initial_delay_seconds: 0,
            period_seconds: 0,
            timeout_seconds: 1,
            failure_threshold: 3,
            success_threshold: 1,
        });
        let mut p = pod(vec![a, b]);
        p.metadata.name = "Web_1".into();
        assert_eq!(
            fields(&p),
            vec![
                "metadata.name",
                "spec.containers[0].name",
                "spec.containers[0].image",
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].resources.limits.cpu",
                "spec.containers[0].resources.requests.memory",
                "spec.containers[1].livenessProbe.exec.command",
                "spec.containers[1].livenessProbe.periodSeconds",
                "spec.containers[1].ports[0].hostPort",
            ]
        );
    }

    #[test]
    fn duplicate_container_names_and_empty_pods_are_refused() {
        assert_eq!(fields(&pod(vec![])), vec!["spec.containers"]);
        assert_eq!(
            fields(&pod(vec![container("a", "x"), container("a", "y")])),
            vec!["spec.containers[1].name"]
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let text = r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"x","imagePullPolicy":"Always"}]}}"#;
        let err = serde_json::from_str::<Pod>(text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown field `imagePullPolicy`"), "{err}");
    }

    #[test]
    fn the_error_message_lists_every_field() {
        let err = validate_pod(&pod(vec![container("a", "")]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("spec.containers[0].image: required"));
    }

    fn service(v: serde_json::Value) -> crate::service::Service {
        serde_json::from_value(v).expect("a service")
    }

    fn service_fields(s: &crate::service::Service) -> Vec<String> {
        validate_service(s)
            .err()
            .map(|e| e.errors.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn services_need_a_selector_named_ports_and_a_dns_label_name() {
        let good = service(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9090, "targetPort": 9090}
            ]}
        }));
        assert!(validate_service(&good).is_ok());
        let bad = service(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web.v2"},
            "spec": {"ports": [
                {"port": 80, "targetPort": 0},
                {"name": "a-very-long-port-name", "port": 80},
                {"name": "UPPER", "port": 81, "targetPort": "Not_A_Name"}
            ]}
        }));
        assert_eq!(
            service_fields(&bad),
            [
                "metadata.name",
                "spec.selector",
                "spec.ports[0].name",
                "spec.ports[0].targetPort",
                "spec.ports[1].name",
                "spec.ports[1].port",
                "spec.ports[2].name",
                "spec.ports[2].targetPort",
            ]
        );
        let no_ports = service(serde_json::json!({
            "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": []}
        }));
        assert_eq!(service_fields(&no_ports), ["spec.ports"]);
    }

    #[test]
    fn annotations_are_bounded_as_in_kubernetes() {
        let mut meta = ObjectMeta::named("a");
        meta.annotations
            .insert("k".into(), "v".repeat(MAX_ANNOTATION_BYTES));
        let mut errors = Errors::default();
        validate_meta(&meta, &mut errors);
        let err = errors.finish().expect_err("too long");
        assert_eq!(err.errors[0].field, "metadata.annotations");
        assert!(err.errors[0].reason.contains("262144"), "{err}");
    }
}

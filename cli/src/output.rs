//! What `get` prints: kubectl's tables (NAME first, AGE last; `-o wide`
//! adds columns), `-o json|yaml` (one object, or a `List`), `-o name`.

use std::time::SystemTime;

use api::service::{Endpoints, Service, TargetPort};
use api::workloads::{Deployment, ReplicaSet};
use api::{ContainerState, EventRecord, Job, Kind, Node, Pod, PodDisruptionBudget};
use serde_json::Value;

use crate::errors::CliError;

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The table.
    Table,
    /// The table with more columns.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// `kind/name`.
    Name,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wide" => Ok(Format::Wide),
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            "name" => Ok(Format::Name),
            _ => Err(format!(
                "unable to match a printer suitable for the output format {s:?}, allowed formats are: json,name,wide,yaml"
            )),
        }
    }
}

/// kubectl's resource name for `-o name` and messages (`deployment.apps`).
pub fn resource(kind: Kind) -> &'static str {
    match kind {
        Kind::Pod => "pod",
        Kind::ReplicaSet => "replicaset.apps",
        Kind::Deployment => "deployment.apps",
        Kind::Node => "node",
        Kind::Event => "event",
        Kind::Service => "service",
        Kind::Endpoints => "endpoints",
        Kind::Job => "job.batch",
        Kind::PodDisruptionBudget => "poddisruptionbudget.policy",
    }
}

/// `deployment.apps/web`.
pub fn name_of(kind: Kind, object: &Value) -> String {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{}/{name}", resource(kind))
}

/// kubectl's short ages: `42s`, `5m3s`, `3h`, `12d`.
pub fn age(timestamp: Option<&str>, now: SystemTime) -> String {
    let Some(t) = timestamp.and_then(|t| humantime::parse_rfc3339_weak(t).ok()) else {
        return "<unknown>".into();
    };
    let s = now.duration_since(t).map_or(0, |d| d.as_secs());
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => format!("{}m{}s", s / 60, s % 60),
        600..=10_799 => format!("{}m", s / 60),
        10_800..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
    serde_json::from_value(v.clone()).ok()
}

/// The table's header.
pub fn header(kind: Kind, wide: bool) -> Vec<&'static str> {
    let (mut h, extra): (Vec<&str>, Vec<&str>) = match kind {
        Kind::Pod => (
            vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            vec!["IP", "NODE"],
        ),
        Kind::Deployment => (
            vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            vec!["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        Kind::ReplicaSet => (
            vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            vec!["CONTAINERS", "IMAGES"],
        ),
        Kind::Node => (
            vec!["NAME", "STATUS", "AGE", "VERSION"],
            vec!["ADDRESS", "CPU", "MEMORY"],
        ),
        Kind::Event => (
            vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            vec![],
        ),
        Kind::Service => (vec!["NAME", "PORT(S)", "AGE"], vec!["SELECTOR"]),
        Kind::Endpoints => (vec!["NAME", "ENDPOINTS", "AGE"], vec!["NOT READY"]),
        Kind::Job => (
            vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
            vec!["CONTAINERS", "IMAGES", "FAILED"],
        ),
        Kind::PodDisruptionBudget => (
            vec![
                "NAME",
                "MIN AVAILABLE",
                "MAX UNAVAILABLE",
                "ALLOWED DISRUPTIONS",
                "AGE",
            ],
            vec![],
        ),
    };
    if wide {
        h.extend(extra);
    }
    h
}

/// The pod's STATUS column: `Terminating` while it is being deleted (as
/// kubectl shows it), else a waiting or terminated container's reason, else
/// the phase.
pub fn pod_status(p: &Pod) -> String {
    if p.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let Some(s) = &p.status else {
        return "Pending".into();
    };
    for c in &s.container_statuses {
        match &c.state {
            ContainerState::Waiting { reason, .. } if !reason.is_empty() => return reason.clone(),
            ContainerState::Terminated { reason, .. }
                if !reason.is_empty() && s.phase != api::PodPhase::Running =>
            {
                return reason.clone();
            }
            _ => {}
        }
    }
    match (&s.reason, s.phase) {
        (Some(r), api::PodPhase::Pending) => r.clone(),
        _ => format!("{:?}", s.phase),
    }
}

/// A Job's STATUS column, as kubectl shows it.
pub fn job_status(j: &Job) -> &'static str {
    let s = j.status.clone().unwrap_or_default();
    if s.condition("Complete").is_some() {
        "Complete"
    } else if s.condition("Failed").is_some() {
        "Failed"
    } else if j.spec.suspend {
        "Suspended"
    } else {
        "Running"
    }
}

/// From the Job's start to its completion (or now).
fn job_duration(s: &api::batch::JobStatus, now: SystemTime) -> String {
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
    };
    let Some(start) = parse(&s.start_time) else {
        return String::new();
    };
    let end = parse(&s.completion_time)
        .or_else(|| {
            s.condition("Failed")
                .and_then(|c| parse(&c.last_transition_time))
        })
        .unwrap_or(now);
    let since = end.duration_since(start).unwrap_or_default();
    // `age` counts from a timestamp to a time; the same short form.
    age(
        Some(&humantime::format_rfc3339_seconds(start).to_string()),
        start + since,
    )
}

fn images(spec: &api::PodSpec) -> (String, String) {
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = spec.containers.iter().map(|c| c.image.as_str()).collect();
    (names.join(","), images.join(","))
}

/// One row of the table.
pub fn row(kind: Kind, v: &Value, wide: bool, now: SystemTime) -> Vec<String> {
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let created = v
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str);
    let mut r = match kind {
        Kind::Pod => {
            let Some(p) = typed::<Pod>(v) else {
                return vec![name];
            };
            let statuses = p
                .status
                .as_ref()
                .map(|s| s.container_statuses.as_slice())
                .unwrap_or(&[]);
            let ready = statuses.iter().filter(|c| c.ready).count();
            let restarts: u32 = statuses.iter().map(|c| c.restart_count).sum();
            let mut r = vec![
                name,
                format!("{ready}/{}", p.spec.containers.len()),
                pod_status(&p),
                restarts.to_string(),
                age(created, now),
            ];
            if wide {
                r.push(
                    p.status
                        .as_ref()
                        .and_then(|s| s.host_ip.clone())
                        .unwrap_or("<none>".into()),
                );
                r.push(p.spec.node_name.clone().unwrap_or("<none>".into()));
            }
            r
        }
        Kind::Deployment => {
            let Some(d) = typed::<Deployment>(v) else {
                return vec![name];
            };
            let s = d.status.clone().unwrap_or_default();
            let mut r = vec![
                name,
                format!("{}/{}", s.ready_replicas, d.spec.replicas),
                s.updated_replicas.to_string(),
                s.available_replicas.to_string(),
                age(created, now),
            ];
            if wide {
                let (c, i) = images(&d.spec.template.spec);
                r.extend([c, i, labels_text(&d.spec.selector.match_labels)]);
            }
            r
        }
        Kind::ReplicaSet => {
            let Some(rs) = typed::<ReplicaSet>(v) else {
                return vec![name];
            };
            let s = rs.status.clone().unwrap_or_default();
            let mut r = vec![
                name,
                rs.spec.replicas.to_string(),
                s.replicas.to_string(),
                s.ready_replicas.to_string(),
                age(created, now),
            ];
            if wide {
                let (c, i) = images(&rs.spec.template.spec);
                r.extend([c, i]);
            }
            r
        }
        Kind::Node => {
            let Some(n) = typed::<Node>(v) else {
                return vec![name];
            };
            let mut status = if n.is_ready() { "Ready" } else { "NotReady" }.to_string();
            if n.spec.unschedulable {
                status.push_str(",SchedulingDisabled");
            }
            let st = n.status.clone();
            let mut r = vec![
                name,
                status,
                age(created, now),
                st.as_ref()
                    .map(|s| s.runtime_version.clone())
                    .unwrap_or_default(),
            ];
            if wide {
                r.push(st.as_ref().map(|s| s.address.clone()).unwrap_or_default());
                r.push(
                    st.as_ref()
                        .map(|s| api::quantity::format_cpu_millis(s.allocatable.cpu_millis))
                        .unwrap_or_default(),
                );
                r.push(
                    st.as_ref()
                        .map(|s| api::quantity::format_memory_bytes(s.allocatable.memory_bytes))
                        .unwrap_or_default(),
                );
            }
            r
        }
        Kind::Event => {
            let Some(e) = typed::<EventRecord>(v) else {
                return vec![name];
            };
            vec![
                age(Some(&e.timestamp), now),
                format!("{:?}", e.type_),
                e.reason,
                format!(
                    "{}/{}",
                    e.involved_object.kind.to_lowercase(),
                    e.involved_object.name
                ),
                e.message,
            ]
        }
        Kind::Service => {
            let Some(s) = typed::<Service>(v) else {
                return vec![name];
            };
            let mut r = vec![name, service_ports(&s), age(created, now)];
            if wide {
                r.push(labels_text(&s.spec.selector));
            }
            r
        }
        Kind::Endpoints => {
            let Some(e) = typed::<Endpoints>(v) else {
                return vec![name];
            };
            let mut r = vec![name, endpoint_list(&e, true, 3), age(created, now)];
            if wide {
                r.push(endpoint_list(&e, false, usize::MAX));
            }
            r
        }
        Kind::Job => {
            let Some(j) = typed::<Job>(v) else {
                return vec![name];
            };
            let s = j.status.clone().unwrap_or_default();
            let mut r = vec![
                name,
                job_status(&j).into(),
                format!("{}/{}", s.succeeded, j.spec.completions),
                job_duration(&s, now),
                age(created, now),
            ];
            if wide {
                let (c, i) = images(&j.spec.template.spec);
                r.extend([c, i, s.failed.to_string()]);
            }
            r
        }
        Kind::PodDisruptionBudget => {
            let Some(b) = typed::<PodDisruptionBudget>(v) else {
                return vec![name];
            };
            let bound = |v: &Option<api::workloads::IntOrPercent>| match v {
                Some(api::workloads::IntOrPercent::Int(n)) => n.to_string(),
                Some(api::workloads::IntOrPercent::Percent(p)) => p.clone(),
                None => "N/A".into(),
            };
            vec![
                name,
                bound(&b.spec.min_available),
                bound(&b.spec.max_unavailable),
                b.status
                    .as_ref()
                    .map_or(0, |s| s.disruptions_allowed)
                    .to_string(),
                age(created, now),
            ]
        }
    };
    r.iter_mut().for_each(|c| {
        if c.is_empty() {
            *c = "<none>".into();
        }
    });
    r
}

/// Labels or a selector as kubectl prints them: `k=v,k=v`.
pub fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// A Service's ports as `NAME:PORT→TARGET/PROTOCOL`, comma separated.
pub fn service_ports(s: &Service) -> String {
    let ports: Vec<String> = s
        .spec
        .ports
        .iter()
        .map(|p| {
            let name = p
                .name
                .as_deref()
                .map(|n| format!("{n}:"))
                .unwrap_or_default();
            let target = match &p.target_port {
                Some(TargetPort::Number(n)) if *n != p.port => format!("→{n}"),
                Some(TargetPort::Name(n)) => format!("→{n}"),
                _ => String::new(),
            };
            format!("{name}{}{target}/{:?}", p.port, p.protocol)
        })
        .collect();
    ports.join(",")
}

/// The `HOST:PORT` pairs of the ready (or not ready) addresses, at most
/// `max` of them and then `+ N more...`, as kubectl prints them.
pub fn endpoint_list(e: &Endpoints, ready: bool, max: usize) -> String {
    let mut all = Vec::new();
    for subset in &e.subsets {
        let addresses = if ready {
            &subset.addresses
        } else {
            &subset.not_ready_addresses
        };
        for a in addresses {
            for p in &subset.ports {
                all.push(format!("{}:{}", a.ip, p.port));
            }
        }
    }
    let total = all.len();
    all.truncate(max);
    let mut out = all.join(",");
    if total > max {
        out.push_str(&format!(" + {} more...", total - max));
    }
    out
}

/// Pads columns like kubectl (three spaces between them).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `-o json|yaml` of one object or several (a `List`).
pub fn encode(items: &[Value], single: bool, yaml: bool) -> Result<String, CliError> {
    let value = if single && items.len() == 1 {
        items[0].clone()
    } else {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
    };
    if yaml {
        serde_yaml_ng::to_string(&value)
            .map_err(|e| CliError::client(format!("cannot print YAML: {e}")))
    } else {
        serde_json::to_string_pretty(&value)
            .map(|s| s + "\n")
            .map_err(|e| CliError::client(format!("cannot print JSON: {e}")))
    }
}

/// Bytes as a short figure in binary units (`512`, `3.2Ki`, `12Mi`, `1Gi`).
pub fn approx_bytes(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["", "Ki", "Mi", "Gi", "Ti"] {
        if value < 1024.0 || unit == "Ti" {
            return if unit.is_empty() || value >= 10.0 || value.fract() == 0.0 {
                format!("{}{unit}", value.round())
            } else {
                format!("{value:.1}{unit}")
            };
        }
        value /= 1024.0;
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_endpoints_print_their_ports_and_addresses() {
        let now = SystemTime::now();
        let svc = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}
        });
        let row = row(Kind::Service, &svc, true, now);
        assert_eq!(row[..2], ["web", "http:80→http/TCP,dns:53/UDP"]);
        assert_eq!(row[3], "app=web");
        let address = |ip: &str, pod: &str| serde_json::json!({"ip": ip, "nodeName": "n", "targetRef": {"kind": "Pod", "namespace": "default", "name": pod, "uid": pod}});
        let ep = serde_json::json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web"},
            "subsets": [
                {"addresses": [address("10.0.0.1", "a"), address("10.0.0.2", "b"), address("10.0.0.3", "c"), address("10.0.0.4", "d")],
                 "notReadyAddresses": [address("10.0.0.5", "e")],
                 "ports": [{"name": "http", "port": 8080}]}
            ]
        });
        let row = super::row(Kind::Endpoints, &ep, true, now);
        assert_eq!(
            row[1],
            "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 1 more..."
        );
        assert_eq!(row[3], "10.0.0.5:8080");
        let empty = serde_json::json!({"metadata": {"name": "idle"}, "subsets": []});
        assert_eq!(super::row(Kind::Endpoints, &empty, false, now)[1], "<none>");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let t0 = humantime::parse_rfc3339("2026-01-01T00:00:00Z").expect("time");
        let at = |s: u64| {
            age(
                Some("2026-01-01T00:00:00Z"),
                t0 + std::time::Duration::from_secs(s),
            )
        };
        assert_eq!(at(42), "42s");
        assert_eq!(at(303), "5m3s");
        assert_eq!(at(1800), "30m");
        assert_eq!(at(4 * 3600), "4h");
        assert_eq!(at(3 * 86_400), "3d");
        assert_eq!(age(None, t0), "<unknown>");
    }

    #[test]
    fn tables_pad_columns_and_start_with_name() {
        let rows = vec![
            header(Kind::Pod, false)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            vec![
                "web-1".into(),
                "1/1".into(),
                "Running".into(),
                "0".into(),
                "5s".into(),
            ],
        ];
        let t = table(&rows);
        assert_eq!(
            t.lines().next(),
            Some("NAME    READY   STATUS    RESTARTS   AGE")
        );
        assert_eq!(
            t.lines().nth(1),
            Some("web-1   1/1     Running   0          5s")
        );
    }
}

//! The endpoints controller's decision: where a Service's pods answer.
//!
//! A pod is an endpoint of a Service port when it matches the Service's
//! selector, is bound to a node that reported its address, is not being
//! deleted, and exposes the port's target container port on a host port.
//! Ready pods ([`super::is_ready`]) are `addresses`, the others
//! `notReadyAddresses` (shown by `describe`, never answered by DNS).
//!
//! Invariants: the result depends only on the inputs (sorted, so the same
//! pods in any order give the same Endpoints and an unchanged Service
//! causes no write); an empty selector selects nothing (as Kubernetes,
//! where such a Service's endpoints are managed by hand).

use std::collections::BTreeMap;

use api::Pod;
use api::pod::Protocol;
use api::service::{
    EndpointAddress, EndpointPort, EndpointSubset, PodRef, Service, ServicePort, TargetPort,
};

/// The subsets of `service`'s Endpoints, given the pods (of any namespace).
pub fn subsets<'a>(
    service: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<EndpointSubset> {
    if service.spec.selector.is_empty() {
        return Vec::new();
    }
    // (service port index, host port) -> (ready, not ready)
    type Addresses = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut by_port: BTreeMap<(usize, u16), Addresses> = BTreeMap::new();
    for pod in pods {
        let meta = &pod.metadata;
        if meta.namespace != service.metadata.namespace
            || meta.deletion_timestamp.is_some()
            || !service
                .spec
                .selector
                .iter()
                .all(|(k, v)| meta.labels.get(k) == Some(v))
        {
            continue;
        }
        let (Some(node), Some(status)) = (&pod.spec.node_name, &pod.status) else {
            continue;
        };
        let Some(ip) = &status.host_ip else {
            continue;
        };
        let ready = super::is_ready(pod);
        for (i, port) in service.spec.ports.iter().enumerate() {
            let Some(host_port) = host_port(pod, port) else {
                continue;
            };
            let address = EndpointAddress {
                ip: ip.clone(),
                node_name: node.clone(),
                target_ref: PodRef {
                    kind: "Pod".into(),
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone(),
                    uid: meta.uid.clone(),
                },
            };
            let entry = by_port.entry((i, host_port)).or_default();
            if ready {
                entry.0.push(address);
            } else {
                entry.1.push(address);
            }
        }
    }
    by_port
        .into_iter()
        .map(|((i, host_port), (mut ready, mut not_ready))| {
            ready.sort();
            not_ready.sort();
            let port = &service.spec.ports[i];
            EndpointSubset {
                addresses: ready,
                not_ready_addresses: not_ready,
                ports: vec![EndpointPort {
                    name: port.name.clone(),
                    port: host_port,
                    protocol: port.protocol,
                }],
            }
        })
        .collect()
}

/// The host port on which `pod` exposes `port`'s target, if it does.
fn host_port(pod: &Pod, port: &ServicePort) -> Option<u16> {
    let container_port = match &port.target_port {
        None => port.port,
        Some(TargetPort::Number(n)) => *n,
        Some(TargetPort::Name(name)) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name.as_str()) && p.protocol == port.protocol)
            .map(|p| p.container_port)?,
    };
    pod.status.as_ref()?.host_ports.iter().find_map(|h| {
        (h.container_port == container_port && h.protocol == port.protocol).then_some(h.host_port)
    })
}

/// Whether any subset has a ready address: what DNS answers from.
pub fn has_ready(subsets: &[EndpointSubset]) -> bool {
    subsets.iter().any(|s| !s.addresses.is_empty())
}

/// The protocol's SRV label (`_tcp`, `_udp`).
pub fn srv_protocol(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::TCP => "_tcp",
        Protocol::UDP => "_udp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(selector: serde_json::Value, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": selector, "ports": ports}
        }))
        .unwrap()
    }

    /// A pod of `app` on `node` (address `ip`), container port 80 named
    /// `http` exposed on `host_port`, ready or not.
    fn pod(name: &str, app: &str, node: &str, ip: &str, host_port: u16, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": app}},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "main", "image": "busybox", "ports": [{"name": "http", "containerPort": 80, "hostPort": host_port}]}]
            },
            "status": {
                "phase": "Running",
                "hostIp": ip,
                "hostPorts": [{"container": "main", "containerPort": 80, "hostPort": host_port, "protocol": "TCP"}],
                "containerStatuses": [{"name": "main", "state": {"running": {"startedAt": "2026-11-30T00:00:00Z"}}, "ready": ready, "restartCount": 0, "image": "busybox"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn ready_matching_pods_are_addresses_with_their_host_ports() {
        let s = service(json!({"app": "web"}), json!([{"name": "http", "port": 80}]));
        let pods = [
            pod("b", "web", "n2", "10.0.0.2", 8080, true),
            pod("a", "web", "n1", "10.0.0.1", 8080, true),
            pod("c", "web", "n3", "10.0.0.3", 8080, false),
            pod("d", "db", "n1", "10.0.0.1", 5432, true),
        ];
        let got = subsets(&s, &pods);
        assert_eq!(got.len(), 1, "{got:?}");
        let ips: Vec<&str> = got[0].addresses.iter().map(|a| a.ip.as_str()).collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"], "ready ones, sorted");
        assert_eq!(got[0].not_ready_addresses.len(), 1);
        assert_eq!(got[0].not_ready_addresses[0].target_ref.name, "c");
        assert_eq!(got[0].ports[0].port, 8080);
        assert_eq!(got[0].ports[0].name.as_deref(), Some("http"));
        assert!(has_ready(&got));
        // Order of the input does not matter.
        let mut reversed = pods.to_vec();
        reversed.reverse();
        assert_eq!(subsets(&s, &reversed), got);
    }

    #[test]
    fn named_target_ports_and_differing_host_ports_make_one_subset_each() {
        let s = service(
            json!({"app": "web"}),
            json!([{"name": "web", "port": 8000, "targetPort": "http"}]),
        );
        let pods = [
            pod("a", "web", "n1", "10.0.0.1", 8080, true),
            pod("b", "web", "n2", "10.0.0.2", 9090, true),
        ];
        let got = subsets(&s, &pods);
        let ports: Vec<u16> = got.iter().map(|s| s.ports[0].port).collect();
        assert_eq!(ports, [8080, 9090]);
    }

    #[test]
    fn pods_without_the_port_on_a_host_unbound_or_deleting_are_not_endpoints() {
        let s = service(json!({"app": "web"}), json!([{"port": 443}]));
        let pods = [pod("a", "web", "n1", "10.0.0.1", 8080, true)];
        assert!(subsets(&s, &pods).is_empty(), "port 443 is not exposed");

        let s = service(json!({"app": "web"}), json!([{"port": 80}]));
        let mut unbound = pod("a", "web", "n1", "10.0.0.1", 8080, true);
        unbound.spec.node_name = None;
        let mut deleting = pod("b", "web", "n1", "10.0.0.1", 8080, true);
        deleting.metadata.deletion_timestamp = Some("2026-11-30T00:00:00Z".into());
        let mut elsewhere = pod("c", "web", "n1", "10.0.0.1", 8080, true);
        elsewhere.metadata.namespace = "other".into();
        assert!(subsets(&s, &[unbound, deleting, elsewhere]).is_empty());
    }

    #[test]
    fn an_empty_selector_selects_nothing() {
        let s = service(json!({}), json!([{"port": 80}]));
        let got = subsets(&s, &[pod("a", "web", "n1", "10.0.0.1", 8080, true)]);
        assert!(got.is_empty() && !has_ready(&got));
        assert_eq!(srv_protocol(Protocol::UDP), "_udp");
    }
}

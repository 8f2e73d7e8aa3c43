//! The kinds of object the API serves, and the names people call them by
//! (`pods`, `po`, `Pod`, `deploy`, ...), as kubectl accepts them.

use serde::{Deserialize, Serialize};

/// A kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `Pod` (`pods`, `po`).
    Pod,
    /// `ReplicaSet` (`replicasets`, `rs`).
    ReplicaSet,
    /// `Deployment` (`deployments`, `deploy`).
    Deployment,
    /// `Node` (`nodes`, `no`), not namespaced.
    Node,
    /// `Event` (`events`, `ev`).
    Event,
    /// `Service` (`services`, `svc`).
    Service,
    /// `Endpoints` (`endpoints`, `ep`), written by the endpoints controller.
    Endpoints,
    /// `Job` (`jobs`), `batch/v1`.
    Job,
    /// `PodDisruptionBudget` (`poddisruptionbudgets`, `pdb`), `policy/v1`.
    PodDisruptionBudget,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 9] = [
        Kind::Pod,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::Node,
        Kind::Event,
        Kind::Service,
        Kind::Endpoints,
        Kind::Job,
        Kind::PodDisruptionBudget,
    ];

    /// The kind's name as manifests write it (`ReplicaSet`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
            Kind::Node => "Node",
            Kind::Event => "Event",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Job => "Job",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }

    /// The plural, lower-case resource name (`replicasets`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::ReplicaSet => "replicasets",
            Kind::Deployment => "deployments",
            Kind::Node => "nodes",
            Kind::Event => "events",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::Job => "jobs",
            Kind::PodDisruptionBudget => "poddisruptionbudgets",
        }
    }

    /// The short name (`rs`).
    pub fn short(self) -> &'static str {
        match self {
            Kind::Pod => "po",
            Kind::ReplicaSet => "rs",
            Kind::Deployment => "deploy",
            Kind::Node => "no",
            Kind::Event => "ev",
            Kind::Service => "svc",
            Kind::Endpoints => "ep",
            Kind::Job => "job",
            Kind::PodDisruptionBudget => "pdb",
        }
    }

    /// The `apiVersion` manifests give it.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ReplicaSet | Kind::Deployment => "apps/v1",
            Kind::Job => "batch/v1",
            Kind::PodDisruptionBudget => "policy/v1",
            Kind::Pod | Kind::Node | Kind::Event | Kind::Service | Kind::Endpoints => "v1",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Node
    }

    /// Parses any of the kind's names, case-insensitively: `Pod`, `pod`,
    /// `pods`, `po`; an unknown name is an error listing the known ones.
    pub fn parse(name: &str) -> Result<Kind, UnknownKind> {
        let lower = name.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| {
                lower == k.as_str().to_ascii_lowercase()
                    || lower == k.plural()
                    || lower == k.short()
                    || (*k == Kind::Deployment && lower == "deployment")
                    || (*k == Kind::Service && lower == "service")
            })
            .ok_or_else(|| UnknownKind(name.to_string()))
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that names no kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server doesn't have a resource type {0:?}; known kinds: Pod (po), ReplicaSet (rs), Deployment (deploy), Node (no), Event (ev), Service (svc), Endpoints (ep), Job (job), PodDisruptionBudget (pdb)"
)]
pub struct UnknownKind(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_of_a_kind_parses_to_it() {
        for k in Kind::ALL {
            for name in [k.as_str(), k.plural(), k.short()] {
                assert_eq!(Kind::parse(name), Ok(k), "{name}");
                assert_eq!(Kind::parse(&name.to_uppercase()), Ok(k), "{name}");
            }
        }
        let e = Kind::parse("widgets").expect_err("unknown");
        assert!(e.to_string().contains("\"widgets\""), "{e}");
    }
}

//! Node-bound authorization (Kubernetes' NodeRestriction) and the signer
//! of workers' certificates (its TLS bootstrapping).
//!
//! The router has already checked that the caller's token role may call the
//! method at all (`pki::member::master_rules`); what is left depends on the
//! request, and is decided here by pure functions of the [`rpc::Caller`]
//! and the request:
//!
//! | caller                                   | acts as            |
//! |------------------------------------------|--------------------|
//! | an admin, user or member token           | the operator       |
//! | a join token with worker W's certificate | node W, only       |
//! | a join token without one                 | bootstrap only     |
//! | no role (`--insecure` servers)           | the operator       |
//!
//! Invariants: a worker's certificate never lets its holder register,
//! drain or evict another node, nor have a certificate signed for one; a
//! join token alone gets a certificate only for a name no live node holds;
//! every certificate signed here is in `mkube:workers`, names the node, and
//! does not carry the masters' shared server name.

use std::time::{Duration, SystemTime};

use api::master::{AccessReviewResponse, MasterError};
use rpc::Caller;

/// Who a caller is, for node-bound calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator (admin, user or member token; or a server without roles).
    Operator,
    /// The worker of this node (join token and its certificate).
    Node(String),
    /// A join token without a worker certificate: may only bootstrap.
    Bootstrapper,
}

impl Actor {
    /// Who `caller` is.
    pub fn of(caller: &Caller) -> Actor {
        match caller.role.as_deref() {
            Some("join") => match caller.name_in(pki::WORKERS) {
                Some(node) => Actor::Node(node.to_owned()),
                None => Actor::Bootstrapper,
            },
            _ => Actor::Operator,
        }
    }

    /// May act on node `node` (register it, drain it).
    pub fn may_act_for(&self, node: &str, what: &str) -> Result<(), MasterError> {
        match self {
            Actor::Operator => Ok(()),
            Actor::Node(own) if own == node => Ok(()),
            Actor::Node(own) => Err(MasterError::Forbidden(format!(
                "node {own:?} may not {what} node {node:?}: a worker's certificate acts for its own node only"
            ))),
            Actor::Bootstrapper => Err(MasterError::Forbidden(format!(
                "a join token alone may not {what} node {node:?}: present the node's certificate (Master.bootstrap issues one)"
            ))),
        }
    }

    /// May hand over this master's leadership and export
    /// (`prepare_eviction`): the worker of the node on this master's VM.
    pub fn may_prepare_eviction(&self, local_node: Option<&str>) -> Result<(), MasterError> {
        match (self, local_node) {
            (Actor::Operator, _) => Ok(()),
            (Actor::Node(own), Some(local)) if own == local => Ok(()),
            (Actor::Node(own), _) => Err(MasterError::Forbidden(format!(
                "node {own:?} is not on this master's machine ({}); only that node's worker may prepare its eviction",
                local_node.unwrap_or("none")
            ))),
            (Actor::Bootstrapper, _) => Err(MasterError::Forbidden(
                "a join token alone may not prepare an eviction: present the certificate of the node on this master's machine".into(),
            )),
        }
    }
}

/// The method a VERB on a kind calls: `Master.*`, or `Kv.*` for `kv`.
pub fn method_for(verb: &str, kind: &str) -> Result<&'static str, MasterError> {
    let kv = matches!(kind, "kv" | "keys" | "store");
    let method = match (verb, kv) {
        ("get", false) => "/Master/get",
        ("list", false) => "/Master/list",
        ("watch", false) => "/Master/watch",
        ("create", false) => "/Master/create",
        ("apply" | "update" | "patch", false) => "/Master/apply",
        ("delete", false) => "/Master/delete",
        ("rollback", false) => "/Master/rollback",
        ("drain" | "cordon" | "uncordon", false) => "/Master/drain",
        ("logs", false) => "/Master/logs",
        ("exec", false) => "/Master/exec",
        ("get", true) => "/Kv/get",
        ("list", true) => "/Kv/range",
        ("watch", true) => "/Kv/watch",
        ("put" | "create" | "update", true) => "/Kv/put",
        ("delete", true) => "/Kv/delete",
        _ => {
            return Err(MasterError::InvalidArgument(format!(
                "unknown verb {verb:?} for {kind}; the verbs are get, list, watch, create, apply, delete, rollback, drain, logs, exec (and put for kv)"
            )));
        }
    };
    Ok(method)
}

/// Whether `caller` may call `method` under `rules` (`None`: a server
/// that checks no roles, `--insecure`), in `mkctl auth can-i`'s words.
pub fn review(
    method: &str,
    caller: &Caller,
    rules: Option<&[(&'static str, rpc::Access)]>,
) -> AccessReviewResponse {
    let Some(rules) = rules else {
        return AccessReviewResponse {
            allowed: true,
            reason: format!("{method}: this master checks no roles (--insecure)"),
        };
    };
    let verdict = match rpc::server::rule_for(rules, method) {
        Some(access) => access.admits(method, caller, true),
        None => Ok(()),
    };
    let node_bound = matches!(Actor::of(caller), Actor::Node(_) | Actor::Bootstrapper)
        && matches!(
            method,
            "/Master/drain" | "/Master/join" | "/Master/prepare_eviction"
        );
    match verdict {
        Ok(()) if node_bound => AccessReviewResponse {
            allowed: true,
            reason: format!("{method}: for the caller's own node only"),
        },
        Ok(()) => AccessReviewResponse {
            allowed: true,
            reason: format!("{method} is allowed for {}", caller.describe()),
        },
        Err(status) => AccessReviewResponse {
            allowed: false,
            reason: status.message,
        },
    }
}

/// Signs workers' certificates with the cluster CA, which only masters hold.
pub struct Signer {
    ca: pki::Ca,
    validity: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(validity {:?})", self.validity)
    }
}

impl Signer {
    /// Signs with `ca`; certificates are valid for `validity`.
    pub fn new(ca: pki::Ca, validity: Duration) -> Signer {
        Signer { ca, validity }
    }

    /// A certificate of `node` (group `mkube:workers`) for `csr`'s key,
    /// valid for `hosts`, which may not include the masters' shared name.
    /// (A master's address may be named: on Azure a master's VM runs a
    /// worker at the same address; clients of the masters check the
    /// certificate's group, not only its address.)
    pub fn sign(&self, node: &str, csr: &str, hosts: &[String]) -> Result<String, MasterError> {
        if !api::validation::is_dns1123_subdomain(node) {
            return Err(MasterError::InvalidArgument(format!(
                "node {node:?} is not a DNS-1123 name"
            )));
        }
        if hosts.is_empty() || hosts.len() > 16 {
            return Err(MasterError::InvalidArgument(format!(
                "a certificate names 1 to 16 hosts; {} were given",
                hosts.len()
            )));
        }
        for host in hosts {
            let bare = host.trim_matches(['[', ']']);
            if bare == pki::MASTERS_SERVER_NAME {
                return Err(MasterError::Forbidden(format!(
                    "host {host:?} is the masters' name; a worker's certificate may not carry it"
                )));
            }
        }
        let now = SystemTime::now();
        let request = pki::Request {
            name: node.to_owned(),
            group: pki::WORKERS.to_owned(),
            hosts: hosts
                .iter()
                .map(|h| h.trim_matches(['[', ']']).to_owned())
                .collect(),
            not_before: now - Duration::from_secs(60),
            not_after: now + self.validity,
        };
        self.ca
            .sign_request(csr, &request)
            .map_err(|e| MasterError::InvalidArgument(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: &str, cert: Option<(&str, &str)>) -> Caller {
        Caller {
            role: Some(role.into()),
            peer: cert.map(|(name, group)| rpc::Peer {
                name: name.into(),
                groups: vec![group.into()],
            }),
        }
    }

    #[test]
    fn a_worker_acts_for_its_own_node_only() {
        let w1 = Actor::of(&caller("join", Some(("w1", pki::WORKERS))));
        assert_eq!(w1, Actor::Node("w1".into()));
        assert!(w1.may_act_for("w1", "drain").is_ok());
        let e = w1.may_act_for("w2", "drain").unwrap_err();
        assert!(e.to_string().contains("may not drain node \"w2\""), "{e}");
        assert!(w1.may_prepare_eviction(Some("w1")).is_ok());
        assert!(w1.may_prepare_eviction(Some("m0")).is_err());
        assert!(w1.may_prepare_eviction(None).is_err());
    }

    #[test]
    fn a_join_token_alone_only_bootstraps() {
        let bare = Actor::of(&caller("join", None));
        assert_eq!(bare, Actor::Bootstrapper);
        // A master's certificate does not make a join token a node's.
        let with_master_cert = Actor::of(&caller("join", Some(("m0", pki::MASTERS))));
        assert_eq!(with_master_cert, Actor::Bootstrapper);
        for actor in [bare, with_master_cert] {
            assert!(actor.may_act_for("w1", "register").is_err());
            assert!(actor.may_prepare_eviction(Some("m0")).is_err());
        }
    }

    #[test]
    fn a_review_answers_from_the_rules() {
        let rules = pki::member::master_rules();
        let viewer = caller("viewer", None);
        let user = caller("user", None);
        let admin = caller("admin", None);
        let put = method_for("put", "kv").unwrap();
        assert!(!review(put, &user, Some(&rules)).allowed);
        assert!(review(put, &admin, Some(&rules)).allowed);
        let list = method_for("list", "pods").unwrap();
        assert!(review(list, &viewer, Some(&rules)).allowed);
        let create = method_for("create", "deployments").unwrap();
        let refused = review(create, &viewer, Some(&rules));
        assert!(!refused.allowed);
        assert!(
            refused
                .reason
                .contains("a viewer token may not call /Master/create"),
            "{}",
            refused.reason
        );
        assert!(review(create, &viewer, None).allowed);
        assert!(method_for("fly", "pods").is_err());
    }

    #[test]
    fn operators_act_for_any_node() {
        for role in ["admin", "user", "member"] {
            let actor = Actor::of(&caller(role, None));
            assert_eq!(actor, Actor::Operator);
            assert!(actor.may_act_for("w9", "drain").is_ok());
        }
        assert_eq!(Actor::of(&Caller::default()), Actor::Operator);
    }

    #[test]
    fn the_signer_names_the_node_and_refuses_the_masters_name() {
        let signer = Signer::new(pki::Ca::generate("t").unwrap(), Duration::from_secs(600));
        let key = pki::KeyRequest::generate("anything").unwrap();
        let cert = signer
            .sign("w1", &key.csr_pem, &["10.0.0.9".into(), "w1".into()])
            .unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        let e = signer
            .sign("w1", &key.csr_pem, &["masters.mkube".into()])
            .unwrap_err();
        assert!(matches!(e, MasterError::Forbidden(_)), "{e}");
        let e = signer
            .sign("W_1", &key.csr_pem, &["w1".into()])
            .unwrap_err();
        assert!(matches!(e, MasterError::InvalidArgument(_)), "{e}");
        let e = signer.sign("w1", "junk", &["w1".into()]).unwrap_err();
        assert!(e.to_string().contains("signing request"), "{e}");
    }
}

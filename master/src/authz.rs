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
//! is valid for hosts that are not the masters'.

use std::time::{Duration, SystemTime};

use api::master::MasterError;
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
    /// valid for `hosts`, none of which may be the masters' (`forbidden`).
    pub fn sign(
        &self,
        node: &str,
        csr: &str,
        hosts: &[String],
        forbidden: &[String],
    ) -> Result<String, MasterError> {
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
            if bare == pki::MASTERS_SERVER_NAME || forbidden.iter().any(|f| f == bare) {
                return Err(MasterError::Forbidden(format!(
                    "host {host:?} is a master's; a worker's certificate may not name it"
                )));
            }
        }
        let now = SystemTime::now();
        let request = pki::Request {
            name: node.to_owned(),
            group: pki::WORKERS.to_owned(),
            hosts: hosts.iter().map(|h| h.trim_matches(['[', ']']).to_owned()).collect(),
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
    fn operators_act_for_any_node() {
        for role in ["admin", "user", "member"] {
            let actor = Actor::of(&caller(role, None));
            assert_eq!(actor, Actor::Operator);
            assert!(actor.may_act_for("w9", "drain").is_ok());
        }
        assert_eq!(Actor::of(&Caller::default()), Actor::Operator);
    }

    #[test]
    fn the_signer_names_the_node_and_refuses_masters_hosts() {
        let signer = Signer::new(
            pki::Ca::generate("t").unwrap(),
            Duration::from_secs(600),
        );
        let key = pki::KeyRequest::generate("anything").unwrap();
        let masters = vec!["10.0.0.4".to_string()];
        let cert = signer
            .sign("w1", &key.csr_pem, &["10.0.0.9".into(), "w1".into()], &masters)
            .unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        for host in ["10.0.0.4", "masters.mkube"] {
            let e = signer
                .sign("w1", &key.csr_pem, &[host.into()], &masters)
                .unwrap_err();
            assert!(matches!(e, MasterError::Forbidden(_)), "{e}");
        }
        let e = signer
            .sign("W_1", &key.csr_pem, &["w1".into()], &masters)
            .unwrap_err();
        assert!(matches!(e, MasterError::InvalidArgument(_)), "{e}");
        let e = signer.sign("w1", "junk", &["w1".into()], &masters).unwrap_err();
        assert!(e.to_string().contains("signing request"), "{e}");
    }
}

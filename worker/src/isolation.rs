//! Keeps pods away from what belongs to the machine: the cloud's metadata
//! service (169.254.169.254, which hands out the VM's identity) and the
//! member ports of mkube itself (this worker's listener, the masters').
//!
//! Pods run on a Docker bridge (`docker0` by default). Traffic from the
//! bridge to another host crosses the FORWARD chain, where Docker leaves
//! the `DOCKER-USER` chain to its users; traffic to an address of this
//! host crosses INPUT. The worker installs one REJECT rule of each kind in
//! each (so that a metadata address that is local, as in the tests, is
//! covered too), tagged with a comment naming the node, at start, and
//! checks that each is in place before it serves. Traffic that Docker
//! forwards to a pod's published port (DNAT) and the masters' DNS are not
//! touched, so pods still reach Services and the outside.
//!
//! [`rules`] is the pure decision (the argument lists); [`install`] runs
//! `iptables` for each: `-C` to see whether it is there, `-I` if not.
//!
//! Invariants: installing twice changes nothing; a rule that cannot be
//! installed or is missing afterwards is an error naming it (with
//! `--pod-isolation on` the worker then does not start).

use std::collections::BTreeSet;
use std::process::Command;

/// The link-local address of cloud metadata services (Azure IMDS).
pub const METADATA_ADDRESS: &str = "169.254.169.254";

/// What to isolate pods from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// The bridge pods' traffic comes from.
    pub bridge: String,
    /// The node, named in the rules' comment.
    pub node: String,
    /// TCP ports of mkube members: this worker's, the masters'.
    pub member_ports: BTreeSet<u16>,
}

/// Why isolation could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// `iptables` could not be run.
    #[error("cannot run iptables ({0}); install it, or start with --pod-isolation off")]
    NoIptables(std::io::Error),
    /// A rule was refused or is missing after being inserted.
    #[error("iptables {rule}: {reason}")]
    Rule {
        /// The rule's arguments.
        rule: String,
        /// iptables' answer.
        reason: String,
    },
}

impl Isolation {
    /// The comment every rule of this node carries.
    pub fn comment(&self) -> String {
        format!("mkube-pod-isolation:{}", self.node)
    }
}

/// The rules, as `(chain, match and target)` argument lists.
pub fn rules(isolation: &Isolation) -> Vec<(&'static str, Vec<String>)> {
    let base = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec!["-i".into(), isolation.bridge.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            isolation.comment(),
            "-j".into(),
            "REJECT".into(),
        ]);
        args
    };
    let metadata = base(&["-d", &format!("{METADATA_ADDRESS}/32")]);
    let mut out = vec![("DOCKER-USER", metadata.clone()), ("INPUT", metadata)];
    if !isolation.member_ports.is_empty() {
        let ports: Vec<String> = isolation.member_ports.iter().map(u16::to_string).collect();
        let ports = ports.join(",");
        // To this host's member ports.
        out.push((
            "INPUT",
            base(&["-p", "tcp", "-m", "multiport", "--dports", &ports]),
        ));
        // To other hosts' (the masters'); a pod's published port that
        // Docker forwards (DNAT) is not a member port, whatever its number.
        out.push((
            "DOCKER-USER",
            base(&[
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--dports",
                &ports,
                "-m",
                "conntrack",
                "!",
                "--ctstate",
                "DNAT",
            ]),
        ));
    }
    out
}

/// Installs what [`rules`] says, each once, and checks it is there.
pub fn install(isolation: &Isolation) -> Result<(), IsolationError> {
    for (chain, spec) in rules(isolation) {
        let run = |op: &str| -> Result<std::process::Output, IsolationError> {
            Command::new("iptables")
                .args(["-w", "5", op, chain])
                .args(&spec)
                .output()
                .map_err(IsolationError::NoIptables)
        };
        let shown = format!("{chain} {}", spec.join(" "));
        if run("-C")?.status.success() {
            continue;
        }
        let inserted = run("-I")?;
        if !inserted.status.success() {
            return Err(IsolationError::Rule {
                rule: shown,
                reason: String::from_utf8_lossy(&inserted.stderr).trim().to_string(),
            });
        }
        let checked = run("-C")?;
        if !checked.status.success() {
            return Err(IsolationError::Rule {
                rule: shown,
                reason: format!(
                    "missing after insertion: {}",
                    String::from_utf8_lossy(&checked.stderr).trim()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_refused_both_ways_and_member_ports_when_there_are_some() {
        let mut isolation = Isolation {
            bridge: "docker0".into(),
            node: "w1".into(),
            member_ports: BTreeSet::new(),
        };
        let r = rules(&isolation);
        assert_eq!(r.len(), 2);
        assert!(
            r.iter()
                .all(|(_, a)| a.join(" ").contains("-d 169.254.169.254/32"))
        );
        isolation.member_ports = [7000, 10250].into();
        let r = rules(&isolation);
        assert_eq!(r.len(), 4);
        let forwarded = r[3].1.join(" ");
        assert_eq!(r[3].0, "DOCKER-USER");
        assert!(forwarded.contains("--dports 7000,10250"), "{forwarded}");
        assert!(forwarded.contains("! --ctstate DNAT"), "{forwarded}");
        assert!(r.iter().all(|(_, a)| {
            a.join(" ")
                .contains("--comment mkube-pod-isolation:w1 -j REJECT")
        }));
    }
}

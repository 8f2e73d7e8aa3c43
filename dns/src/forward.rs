//! Names outside the cluster domain, forwarded to upstream resolvers
//! (CoreDNS' `forward . /etc/resolv.conf`), so that pods whose resolver is
//! the masters still resolve the rest of the world. hickory-resolver does
//! the work: it caches answers for their TTL (negative ones too), tries the
//! upstreams in turn, and retries over TCP when a UDP answer is truncated.
//!
//! Invariant: a forwarded answer is never authoritative and always says
//! recursion is available; an upstream that does not answer gives SERVFAIL,
//! not silence.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{Name, Record, RecordType};

/// Where forwarded names go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The name servers of this host's `/etc/resolv.conf`.
    System,
    /// These servers (UDP, then TCP on truncation).
    Servers(Vec<SocketAddr>),
}

impl std::str::FromStr for Upstream {
    type Err = String;

    /// `system`, or `IP[:PORT],...` (port 53 by default).
    fn from_str(s: &str) -> Result<Upstream, String> {
        if s == "system" {
            return Ok(Upstream::System);
        }
        let mut servers = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let addr = part
                .parse::<SocketAddr>()
                .or_else(|_| {
                    part.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    format!("{part:?} is not an address (IP or IP:PORT, IPv6 as [IP]:PORT)")
                })?;
            servers.push(addr);
        }
        if servers.is_empty() {
            return Err("give `system` or at least one IP[:PORT]".into());
        }
        Ok(Upstream::Servers(servers))
    }
}

/// The upstream resolvers could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot forward DNS to {upstream}: {source}")]
pub struct ForwardError {
    upstream: String,
    source: NetError,
}

/// An upstream's answer (never authoritative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The upstream's response code (SERVFAIL when none answered).
    pub code: ResponseCode,
    /// The records asked for (with the CNAMEs that lead to them).
    pub answers: Vec<Record>,
    /// The SOA of a negative answer.
    pub authority: Vec<Record>,
}

/// Forwards questions to the upstream resolvers.
#[derive(Clone)]
pub struct Forwarder {
    resolver: TokioResolver,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder to `upstream`.
    pub fn new(upstream: &Upstream) -> Result<Forwarder, ForwardError> {
        let fail = |source| ForwardError {
            upstream: format!("{upstream:?}"),
            source,
        };
        let mut builder = match upstream {
            Upstream::System => TokioResolver::builder_tokio().map_err(fail)?,
            Upstream::Servers(servers) => {
                let servers = servers
                    .iter()
                    .map(|a| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = a.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = a.port();
                        NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    TokioRuntimeProvider::default(),
                )
            }
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        // Questions arrive fully qualified; no search path applies.
        opts.ndots = 0;
        let resolver = builder.build().map_err(fail)?;
        Ok(Forwarder { resolver })
    }

    /// The upstreams' answer to `name`/`qtype`.
    pub async fn answer(&self, name: Name, qtype: RecordType) -> Forwarded {
        let mut answer = Forwarded {
            code: ResponseCode::NoError,
            answers: Vec::new(),
            authority: Vec::new(),
        };
        match self.resolver.lookup(name, qtype).await {
            Ok(lookup) => answer.answers = lookup.answers().to_vec(),
            Err(NetError::Dns(DnsError::NoRecordsFound(none))) => {
                answer.code = none.response_code;
                if let Some(soa) = none.soa {
                    answer.authority.push(soa.into_record_of_rdata());
                }
            }
            Err(NetError::Dns(DnsError::ResponseCode(code))) => answer.code = code,
            Err(e) => {
                tracing::debug!(error = %e, "forwarding a DNS question failed");
                answer.code = ResponseCode::ServFail;
            }
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_with_port_53_by_default_and_name_bad_entries() {
        assert_eq!("system".parse::<Upstream>(), Ok(Upstream::System));
        let servers: Upstream = "10.0.0.1, 127.0.0.1:5353,[fd00::1]:53"
            .parse()
            .expect("parses");
        assert_eq!(
            servers,
            Upstream::Servers(vec![
                "10.0.0.1:53".parse().expect("addr"),
                "127.0.0.1:5353".parse().expect("addr"),
                "[fd00::1]:53".parse().expect("addr"),
            ])
        );
        let e = "10.0.0.1,dns.example"
            .parse::<Upstream>()
            .expect_err("a name");
        assert!(e.contains("\"dns.example\""), "{e}");
        assert!("".parse::<Upstream>().is_err());
    }
}

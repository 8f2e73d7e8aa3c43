//! The cluster zone: what the DNS server answers, built from the Endpoints
//! of every Service, and the answer to one question. Pure: no sockets, no
//! clocks; the server swaps in a new [`Zone`] when the Endpoints change.
//!
//! Names, under the cluster domain `D` (`cluster.local.` by default):
//!
//! - `SVC.NS.svc.D` — A/AAAA: every node address with a ready endpoint of
//!   the Service (one record per address, however many pods answer there);
//! - `_PORT._PROTO.SVC.NS.svc.D` — SRV for each named port: one record per
//!   ready endpoint, its *host* port and the target `ADDR.SVC.NS.svc.D`,
//!   where `ADDR` is the address with dashes (`10-0-0-5`, CoreDNS' form);
//! - `ADDR.SVC.NS.svc.D` — A/AAAA of that address;
//! - `D` — SOA.
//!
//! Invariants: a name that exists (a Service with no ready endpoint, an
//! empty non-terminal such as `svc.D` or `_tcp.SVC.NS.svc.D`) answers
//! NOERROR with no records (NODATA), a name under `D` that does not exist
//! answers NXDOMAIN, both with the SOA so resolvers cache the negative
//! answer for the TTL only; a name outside `D` is REFUSED (the masters are
//! not recursive resolvers). Lookups are case-insensitive.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use api::pod::Protocol;
use api::service::Endpoints;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};

/// The zone's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// TTL of every record and of negative answers, in seconds.
    pub ttl: u32,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        ZoneConfig {
            domain: "cluster.local".into(),
            ttl: 5,
        }
    }
}

/// A zone could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// The cluster domain is not a domain name.
    #[error("the cluster domain {domain:?} is not a valid domain name: {reason}")]
    Domain {
        /// What was given.
        domain: String,
        /// Why it is not one.
        reason: String,
    },
}

/// The answer to one question, borrowing the zone's records (answering
/// copies no record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<'z> {
    /// NOERROR, NXDOMAIN or REFUSED.
    pub code: ResponseCode,
    /// Whether the zone is authoritative for the name (false when refused).
    pub authoritative: bool,
    /// The records asked for.
    pub answers: Vec<&'z Record>,
    /// The SOA, for negative answers.
    pub authority: Vec<&'z Record>,
    /// The addresses of SRV targets.
    pub additionals: Vec<&'z Record>,
}

/// Every record of the cluster domain at one moment.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: LowerName,
    soa: Record,
    /// Records by owner name.
    records: HashMap<LowerName, Vec<Record>>,
    /// Names that exist without records of their own.
    empty: HashSet<LowerName>,
}

fn name(text: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(text).map_err(|e| e.to_string())?;
    n.set_fqdn(true);
    Ok(n)
}

fn address_record(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn protocol_label(p: Protocol) -> &'static str {
    match p {
        Protocol::TCP => "_tcp",
        Protocol::UDP => "_udp",
    }
}

impl Zone {
    /// The empty zone of `config.domain`.
    pub fn empty(config: &ZoneConfig) -> Result<Zone, ZoneError> {
        Zone::build(config, &[])
    }

    /// The zone of `endpoints` (every Service's Endpoints).
    pub fn build(config: &ZoneConfig, endpoints: &[Endpoints]) -> Result<Zone, ZoneError> {
        let bad = |reason: String| ZoneError::Domain {
            domain: config.domain.clone(),
            reason,
        };
        let origin = name(config.domain.trim_end_matches('.')).map_err(bad)?;
        if origin.is_root() {
            return Err(bad("it must not be the root".into()));
        }
        let ttl = config.ttl;
        let soa_data = SOA::new(
            name(&format!("ns.dns.{}", config.domain.trim_end_matches('.'))).map_err(bad)?,
            name(&format!(
                "hostmaster.{}",
                config.domain.trim_end_matches('.')
            ))
            .map_err(bad)?,
            1,
            // refresh, retry, expire: for secondaries, which there are none of.
            7200,
            1800,
            86400,
            ttl,
        );
        let soa = Record::from_rdata(origin.clone(), ttl, RData::SOA(soa_data));
        let mut records: BTreeMap<Name, Vec<Record>> = BTreeMap::new();
        let mut existing: BTreeSet<Name> = BTreeSet::new();
        records.entry(origin.clone()).or_default().push(soa.clone());
        for e in endpoints {
            let m = &e.metadata;
            // Objects that got past validation are DNS labels; anything
            // else (a hand-edited store) is skipped, not fatal.
            let Ok(service) = name(&format!("{}.{}.svc", m.name, m.namespace))
                .and_then(|n| n.append_domain(&origin).map_err(|e| e.to_string()))
            else {
                continue;
            };
            existing.insert(service.clone());
            let mut addresses = BTreeSet::new();
            for subset in &e.subsets {
                let ready: BTreeSet<IpAddr> = subset
                    .addresses
                    .iter()
                    .filter_map(|a| a.ip.parse().ok())
                    .collect();
                addresses.extend(ready.iter().copied());
                for port in &subset.ports {
                    let Some(port_name) = &port.name else {
                        continue;
                    };
                    let Ok(srv_owner) =
                        name(&format!("_{port_name}.{}", protocol_label(port.protocol)))
                            .and_then(|n| n.append_domain(&service).map_err(|e| e.to_string()))
                    else {
                        continue;
                    };
                    existing.insert(srv_owner.clone());
                    // CoreDNS' weights: an equal share of 100.
                    let weight = (100 / ready.len().max(1)).max(1) as u16;
                    for ip in &ready {
                        let Ok(target) = name(&dashed(*ip))
                            .and_then(|n| n.append_domain(&service).map_err(|e| e.to_string()))
                        else {
                            continue;
                        };
                        let srv = SRV::new(0, weight, port.port, target.clone());
                        let list = records.entry(srv_owner.clone()).or_default();
                        let record = Record::from_rdata(srv_owner.clone(), ttl, RData::SRV(srv));
                        if !list.contains(&record) {
                            list.push(record);
                        }
                        let target_records = records.entry(target.clone()).or_default();
                        let a = address_record(&target, ttl, *ip);
                        if !target_records.contains(&a) {
                            target_records.push(a);
                        }
                    }
                }
            }
            for ip in addresses {
                records
                    .entry(service.clone())
                    .or_default()
                    .push(address_record(&service, ttl, ip));
            }
        }
        // Every ancestor of a name, up to the origin, exists.
        let mut empty = HashSet::new();
        for owner in records.keys().chain(existing.iter()) {
            let mut n = owner.clone();
            while n.num_labels() > origin.num_labels() {
                if !records.contains_key(&n) {
                    empty.insert(LowerName::new(&n));
                }
                n = n.base_name();
            }
        }
        Ok(Zone {
            origin: LowerName::new(&origin),
            soa,
            records: records
                .into_iter()
                .map(|(k, v)| (LowerName::new(&k), v))
                .collect(),
            empty,
        })
    }

    /// The zone's origin (the cluster domain, fully qualified).
    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// How many names hold records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether only the SOA is there.
    pub fn is_empty(&self) -> bool {
        self.records.len() <= 1
    }

    /// The answer to `qname`/`qtype`; answers of several records start at
    /// `rotation` (modulo their number), so that clients that take the
    /// first address spread over the endpoints.
    pub fn answer(&self, qname: &LowerName, qtype: RecordType, rotation: usize) -> Answer<'_> {
        if !self.origin.zone_of(qname) {
            return Answer {
                code: ResponseCode::Refused,
                authoritative: false,
                answers: Vec::new(),
                authority: Vec::new(),
                additionals: Vec::new(),
            };
        }
        let negative = |code| Answer {
            code,
            authoritative: true,
            answers: Vec::new(),
            authority: vec![&self.soa],
            additionals: Vec::new(),
        };
        let Some(all) = self.records.get(qname) else {
            return if self.empty.contains(qname) {
                negative(ResponseCode::NoError)
            } else {
                negative(ResponseCode::NXDomain)
            };
        };
        let mut answers: Vec<&Record> = all
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .collect();
        if answers.is_empty() {
            return negative(ResponseCode::NoError);
        }
        if answers.len() > 1 {
            let start = rotation % answers.len();
            answers.rotate_left(start);
        }
        let mut additionals = Vec::new();
        for r in &answers {
            if let RData::SRV(srv) = &r.data
                && let Some(targets) = self.records.get(&LowerName::new(&srv.target))
            {
                additionals.extend(targets.iter());
            }
        }
        Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: Vec::new(),
            additionals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoints(name: &str, subsets: serde_json::Value) -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "subsets": subsets,
        }))
        .expect("endpoints")
    }

    fn address(ip: &str, pod: &str) -> serde_json::Value {
        json!({"ip": ip, "nodeName": "n", "targetRef": {"kind": "Pod", "namespace": "default", "name": pod, "uid": pod}})
    }

    fn zone() -> Zone {
        let web = endpoints(
            "web",
            json!([
                {"addresses": [address("10.0.0.1", "a"), address("10.0.0.2", "b")],
                 "notReadyAddresses": [address("10.0.0.3", "c")],
                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                {"addresses": [address("10.0.0.1", "d")],
                 "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}]},
            ]),
        );
        let v6 = endpoints(
            "v6",
            json!([{"addresses": [address("fd00::1", "e")], "ports": [{"port": 53, "protocol": "UDP"}]}]),
        );
        let idle = endpoints(
            "idle",
            json!([{"notReadyAddresses": [address("10.0.0.3", "c")], "ports": [{"name": "http", "port": 8080}]}]),
        );
        Zone::build(&ZoneConfig::default(), &[web, v6, idle]).expect("zone")
    }

    fn q(name: &str) -> LowerName {
        name.parse().expect("name")
    }

    fn ips(a: &Answer) -> BTreeSet<String> {
        a.answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_service_answers_the_addresses_of_its_ready_endpoints_once_each() {
        let z = zone();
        let a = z.answer(&q("web.default.svc.cluster.local."), RecordType::A, 0);
        assert_eq!(a.code, ResponseCode::NoError);
        assert!(a.authoritative);
        assert_eq!(a.answers.len(), 2, "{a:?}");
        assert_eq!(
            ips(&a),
            BTreeSet::from(["10.0.0.1".into(), "10.0.0.2".into()])
        );
        assert!(a.answers.iter().all(|r| r.ttl == 5));
        // Case does not matter; rotation changes the order, not the set.
        let b = z.answer(&q("WEB.Default.SVC.cluster.LOCAL."), RecordType::A, 1);
        assert_eq!(ips(&b), ips(&a));
        assert_ne!(a.answers[0], b.answers[0]);
        let v6 = z.answer(&q("v6.default.svc.cluster.local."), RecordType::AAAA, 0);
        assert_eq!(ips(&v6), BTreeSet::from(["fd00::1".to_string()]));
    }

    #[test]
    fn srv_records_give_host_ports_and_targets_with_their_addresses() {
        let z = zone();
        let a = z.answer(
            &q("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
            0,
        );
        assert_eq!(a.code, ResponseCode::NoError);
        let mut srv: Vec<(u16, String)> = a
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.port, s.target.to_string())),
                _ => None,
            })
            .collect();
        srv.sort();
        assert_eq!(
            srv,
            [
                (8080, "10-0-0-1.web.default.svc.cluster.local.".to_string()),
                (8080, "10-0-0-2.web.default.svc.cluster.local.".to_string()),
                (9090, "10-0-0-1.web.default.svc.cluster.local.".to_string()),
            ]
        );
        assert!(!a.additionals.is_empty());
        let t = z.answer(
            &q("10-0-0-2.web.default.svc.cluster.local."),
            RecordType::A,
            0,
        );
        assert_eq!(ips(&t), BTreeSet::from(["10.0.0.2".to_string()]));
        // Unnamed ports have no SRV records.
        let unnamed = z.answer(
            &q("_._udp.v6.default.svc.cluster.local."),
            RecordType::SRV,
            0,
        );
        assert_eq!(unnamed.code, ResponseCode::NXDomain);
    }

    #[test]
    fn missing_names_are_nxdomain_existing_ones_nodata_foreign_ones_refused() {
        let z = zone();
        for missing in [
            "nope.default.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "_https._tcp.web.default.svc.cluster.local.",
            "10-0-0-3.web.default.svc.cluster.local.",
        ] {
            let a = z.answer(&q(missing), RecordType::A, 0);
            assert_eq!(a.code, ResponseCode::NXDomain, "{missing}");
            assert_eq!(a.authority.len(), 1, "the SOA, for negative caching");
        }
        for nodata in [
            ("idle.default.svc.cluster.local.", RecordType::A),
            ("web.default.svc.cluster.local.", RecordType::AAAA),
            ("svc.cluster.local.", RecordType::A),
            ("default.svc.cluster.local.", RecordType::A),
            ("_tcp.web.default.svc.cluster.local.", RecordType::SRV),
        ] {
            let a = z.answer(&q(nodata.0), nodata.1, 0);
            assert_eq!(a.code, ResponseCode::NoError, "{nodata:?}");
            assert!(a.answers.is_empty(), "{nodata:?}");
            assert_eq!(a.authority.len(), 1);
        }
        let soa = z.answer(&q("cluster.local."), RecordType::SOA, 0);
        assert_eq!(soa.answers.len(), 1);
        let foreign = z.answer(&q("example.com."), RecordType::A, 0);
        assert_eq!(foreign.code, ResponseCode::Refused);
        assert!(!foreign.authoritative);
    }

    #[test]
    fn a_bad_domain_is_named() {
        let e = Zone::build(
            &ZoneConfig {
                domain: "bad..domain".into(),
                ttl: 5,
            },
            &[],
        )
        .expect_err("bad");
        assert!(e.to_string().contains("bad..domain"), "{e}");
        let custom = Zone::empty(&ZoneConfig {
            domain: "mkube.internal.".into(),
            ttl: 5,
        })
        .expect("trailing dot accepted");
        assert_eq!(custom.origin().to_string(), "mkube.internal.");
    }
}

//! Upstream's `CleanStaleEntries` (pkg/proxy/conntrack/cleanup.go): which UDP conntrack
//! entries are stale. For each UDP service port with serving endpoints, an entry to one of
//! its IPs (ClusterIP, LB IPs, ExternalIPs) and its port, or to its NodePort, whose reply
//! comes from an `ip:port` that is not a serving endpoint, is deleted. Traffic policies,
//! topology and terminating do not count (existing flows are not moved, as for TCP). A
//! service port without serving endpoints keeps its entries (its packets are rejected).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use super::{Conntrack, ConntrackError, Entry, Filter};
use crate::proxy::types::{IpFamily, Protocol, ProxySnapshot};

/// Upstream's `filterForIPPortNAT`: entries to `orig_dst:orig_port` answered by `reply_src`.
pub fn filter_for_ip_port_nat(
    orig_dst: IpAddr,
    orig_port: u16,
    reply_src: IpAddr,
    reply_port: u16,
    protocol: Protocol,
) -> Filter {
    Filter {
        protocol,
        orig_dst_ip: Some(orig_dst),
        orig_dst_port: Some(orig_port),
        reply_src_ip: Some(reply_src),
        reply_src_port: Some(reply_port),
    }
}

/// Upstream's `filterForPortNAT`: entries to any address's `orig_port` answered by `reply_src`.
pub fn filter_for_port_nat(
    orig_port: u16,
    reply_src: IpAddr,
    reply_port: u16,
    protocol: Protocol,
) -> Filter {
    Filter {
        protocol,
        orig_dst_ip: None,
        orig_dst_port: Some(orig_port),
        reply_src_ip: Some(reply_src),
        reply_src_port: Some(reply_port),
    }
}

/// Whether any UDP service port has a serving endpoint (else there is nothing to list).
pub fn needs_cleanup(snapshot: &ProxySnapshot) -> bool {
    snapshot.service_ports.iter().any(|(name, svc)| {
        svc.protocol == Protocol::Udp
            && snapshot
                .endpoints
                .get(name)
                .is_some_and(|eps| eps.iter().any(|e| e.serving))
    })
}

/// The filters deleting the stale entries among `entries`.
pub fn stale_entry_filters(snapshot: &ProxySnapshot, entries: &[Entry]) -> Vec<Filter> {
    // Service IP:port and NodePort to the serving endpoints' ip:port.
    let mut by_service_ip: BTreeMap<SocketAddr, BTreeSet<SocketAddr>> = BTreeMap::new();
    let mut by_node_port: BTreeMap<u16, BTreeSet<SocketAddr>> = BTreeMap::new();
    for (name, svc) in &snapshot.service_ports {
        if svc.protocol != Protocol::Udp {
            continue;
        }
        let serving: BTreeSet<SocketAddr> = snapshot
            .endpoints
            .get(name)
            .into_iter()
            .flatten()
            .filter(|e| e.serving)
            .map(|e| SocketAddr::new(e.ip, e.port))
            .collect();
        if serving.is_empty() {
            continue;
        }
        let ips = std::iter::once(&svc.cluster_ip)
            .chain(&svc.load_balancer_vips)
            .chain(&svc.external_ips);
        for ip in ips {
            by_service_ip.insert(SocketAddr::new(*ip, svc.port), serving.clone());
        }
        if svc.node_port != 0 {
            by_node_port.insert(svc.node_port, serving);
        }
    }
    let mut filters = BTreeSet::new();
    for entry in entries {
        if entry.protocol != Protocol::Udp {
            continue;
        }
        let Some(reply_src) = entry.reply.src_ip else {
            continue;
        };
        let reply = SocketAddr::new(reply_src, entry.reply.src_port);
        let port = entry.original.dst_port;
        if let Some(orig_dst) = entry.original.dst_ip
            && by_service_ip
                .get(&SocketAddr::new(orig_dst, port))
                .is_some_and(|eps| !eps.contains(&reply))
        {
            filters.insert(filter_for_ip_port_nat(
                orig_dst,
                port,
                reply_src,
                entry.reply.src_port,
                Protocol::Udp,
            ));
        }
        if by_node_port
            .get(&port)
            .is_some_and(|eps| !eps.contains(&reply))
        {
            filters.insert(filter_for_port_nat(
                port,
                reply_src,
                entry.reply.src_port,
                Protocol::Udp,
            ));
        }
    }
    filters.into_iter().collect()
}

/// After a sync: lists the family's UDP entries and deletes the stale ones; returns how
/// many went.
pub fn clean_stale_entries(
    ct: &impl Conntrack,
    family: IpFamily,
    snapshot: &ProxySnapshot,
) -> Result<usize, ConntrackError> {
    if !needs_cleanup(snapshot) {
        return Ok(0);
    }
    let entries = ct.list(family, Protocol::Udp)?;
    let filters = stale_entry_filters(snapshot, &entries);
    if filters.is_empty() {
        return Ok(0);
    }
    ct.clear(family, &filters)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::proxy::conntrack::Tuple;
    use crate::proxy::types::{EndpointInfo, ServicePortInfo, ServicePortName};

    const CLUSTER_IP: &str = "172.30.1.1";
    const EXTERNAL_IP: &str = "192.168.99.100";
    const LB_IP: &str = "1.2.3.4";
    const SERVING: &str = "10.240.0.4";
    const NON_SERVING: &str = "10.240.1.5";
    const DELETED: &str = "10.240.2.6";
    const OLD_ENDPOINT_PORT: u16 = 8080;
    const ENDPOINT_PORT: u16 = 9090;
    const SERVICE_PORT: u16 = 8000;
    const NODE_PORT: u16 = 32000;
    const NON_SERVICE_PORT: u16 = 3000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A fake conntrack table (upstream's `conntrack.Fake`).
    struct Fake {
        entries: Mutex<Vec<Entry>>,
    }

    impl Conntrack for Fake {
        fn list(&self, _: IpFamily, protocol: Protocol) -> Result<Vec<Entry>, ConntrackError> {
            Ok(self
                .entries
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.protocol == protocol)
                .cloned()
                .collect())
        }
        fn clear(&self, _: IpFamily, filters: &[Filter]) -> Result<usize, ConntrackError> {
            let mut entries = self.entries.lock().unwrap();
            let before = entries.len();
            entries.retain(|e| !filters.iter().any(|f| f.matches(e)));
            Ok(before - entries.len())
        }
    }

    /// Upstream's `generateConntrackEntry` (no original destination for NodePort entries).
    fn entry(
        orig_dst: &str,
        orig_port: u16,
        reply_src: &str,
        reply_port: u16,
        protocol: Protocol,
    ) -> Entry {
        Entry {
            protocol,
            original: Tuple {
                src_ip: None,
                dst_ip: (!orig_dst.is_empty()).then(|| ip(orig_dst)),
                src_port: 0,
                dst_port: orig_port,
            },
            reply: Tuple {
                src_ip: Some(ip(reply_src)),
                dst_ip: None,
                src_port: reply_port,
                dst_port: 0,
            },
        }
    }

    /// The Service of upstream's test: TCP, UDP and SCTP ports 8000 (UDP and SCTP with
    /// NodePort 32000), an ExternalIP and an LB IP; one serving and one non-serving endpoint.
    fn snapshot(endpoint_ports: &[Protocol], with_endpoints_of_service: bool) -> ProxySnapshot {
        let mut snap = ProxySnapshot::default();
        for (port_name, protocol, node_port) in [
            ("test-tcp", Protocol::Tcp, 0),
            ("test-udp", Protocol::Udp, NODE_PORT),
            ("test-sctp", Protocol::Sctp, NODE_PORT),
        ] {
            if !endpoint_ports.contains(&protocol) {
                continue;
            }
            let name = ServicePortName::new("test", "cleanup-test", port_name, protocol);
            let mut svc = ServicePortInfo::cluster_ip(ip(CLUSTER_IP), SERVICE_PORT, protocol);
            svc.node_port = node_port;
            svc.external_ips = vec![ip(EXTERNAL_IP)];
            svc.load_balancer_vips = vec![ip(LB_IP)];
            snap.service_ports.insert(name.clone(), svc);
            let mut serving = EndpointInfo::ready(ip(SERVING), ENDPOINT_PORT, false);
            serving.ready = false; // upstream's slice sets serving only
            let mut not_serving = EndpointInfo::ready(ip(NON_SERVING), ENDPOINT_PORT, false);
            not_serving.ready = false;
            not_serving.serving = false;
            let endpoints_name = if with_endpoints_of_service {
                name
            } else {
                ServicePortName::new("test", "non-existing-service", port_name, protocol)
            };
            snap.endpoints
                .insert(endpoints_name, vec![serving, not_serving]);
        }
        snap
    }

    #[test]
    fn test_clean_stale_entries() {
        let snap = snapshot(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp], true);
        let mut before = Vec::new();
        let mut after = Vec::new();
        // The endpoint changed port but not IP: cleared.
        for dst in [CLUSTER_IP, LB_IP, EXTERNAL_IP] {
            before.push(entry(
                dst,
                SERVICE_PORT,
                SERVING,
                OLD_ENDPOINT_PORT,
                Protocol::Udp,
            ));
        }
        for dnat in [SERVING, NON_SERVING, DELETED] {
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                for dst in [CLUSTER_IP, LB_IP, EXTERNAL_IP] {
                    for port in [SERVICE_PORT, NON_SERVICE_PORT] {
                        let e = entry(dst, port, dnat, ENDPOINT_PORT, proto);
                        before.push(e.clone());
                        if !(proto == Protocol::Udp && port == SERVICE_PORT && dnat != SERVING) {
                            after.push(e);
                        }
                    }
                }
                let e = entry("", NODE_PORT, dnat, ENDPOINT_PORT, proto);
                before.push(e.clone());
                if !(proto == Protocol::Udp && dnat != SERVING) {
                    after.push(e);
                }
            }
        }
        // Not DNATed (no reject rule): reply source is the service IP itself.
        for dst in [CLUSTER_IP, LB_IP, EXTERNAL_IP] {
            for port in [SERVICE_PORT, NON_SERVICE_PORT] {
                let e = Entry {
                    protocol: Protocol::Udp,
                    original: Tuple {
                        src_ip: None,
                        dst_ip: Some(ip(dst)),
                        src_port: 0,
                        dst_port: port,
                    },
                    reply: Tuple {
                        src_ip: Some(ip(dst)),
                        dst_ip: None,
                        src_port: 0,
                        dst_port: 0,
                    },
                };
                before.push(e.clone());
                if port != SERVICE_PORT {
                    after.push(e);
                }
            }
        }
        let fake = Fake {
            entries: Mutex::new(before.clone()),
        };
        let deleted = clean_stale_entries(&fake, IpFamily::V4, &snap).unwrap();
        assert_eq!(deleted, before.len() - after.len());
        let mut got = fake.entries.into_inner().unwrap();
        got.sort();
        after.sort();
        assert_eq!(got, after);
    }

    #[test]
    fn test_service_without_endpoints() {
        let snap = snapshot(&[Protocol::Udp], false);
        assert!(!needs_cleanup(&snap));
        let entries = vec![
            entry(
                EXTERNAL_IP,
                SERVICE_PORT,
                SERVING,
                ENDPOINT_PORT,
                Protocol::Udp,
            ),
            entry(
                EXTERNAL_IP,
                SERVICE_PORT,
                DELETED,
                ENDPOINT_PORT,
                Protocol::Udp,
            ),
        ];
        let fake = Fake {
            entries: Mutex::new(entries.clone()),
        };
        assert_eq!(clean_stale_entries(&fake, IpFamily::V4, &snap).unwrap(), 0);
        assert_eq!(fake.entries.into_inner().unwrap(), entries);
        assert!(stale_entry_filters(&snap, &entries).is_empty());
    }

    #[test]
    fn test_filter_for_ip_port_nat() {
        for (orig_dst, port, reply_src, reply_port, proto) in [
            ("10.96.0.10", 80, "10.244.0.3", 3000, Protocol::Sctp),
            ("2001:db8:1::2", 443, "4001:ab8::2", 5000, Protocol::Udp),
        ] {
            assert_eq!(
                filter_for_ip_port_nat(ip(orig_dst), port, ip(reply_src), reply_port, proto),
                Filter {
                    protocol: proto,
                    orig_dst_ip: Some(ip(orig_dst)),
                    orig_dst_port: Some(port),
                    reply_src_ip: Some(ip(reply_src)),
                    reply_src_port: Some(reply_port),
                }
            );
        }
    }

    #[test]
    fn test_filter_for_port_nat() {
        for (port, reply_src, reply_port, proto) in [
            (80, "10.96.0.10", 3000, Protocol::Tcp),
            (8000, "2001:db8:1::2", 5000, Protocol::Udp),
        ] {
            assert_eq!(
                filter_for_port_nat(port, ip(reply_src), reply_port, proto),
                Filter {
                    protocol: proto,
                    orig_dst_ip: None,
                    orig_dst_port: Some(port),
                    reply_src_ip: Some(ip(reply_src)),
                    reply_src_port: Some(reply_port),
                }
            );
        }
    }
}

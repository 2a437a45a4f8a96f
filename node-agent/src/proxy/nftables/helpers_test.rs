//! Test helpers ported from upstream's pkg/proxy/nftables/helpers_test.go and
//! proxier_test.go: the order-insensitive comparison of rule dumps
//! (`sortNFTablesTransaction`), upstream's fake proxier setup (`NewFakeProxier`) and
//! `baseRules`, and builders for Services and EndpointSlices (`makeTestService`,
//! `makeTestEndpointSlice`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::fake::FakeNftables;
use super::proxier::{LocalDetector, NftablesProxier, NodePortAddresses, ProxierConfig, SyncPlan};
use super::sync::sync_once;
use crate::proxy::convert::{LABEL_SERVICE_NAME, endpoints_from_endpoint_slices, service_ports};
use crate::proxy::types::{IpFamily, ProxySnapshot};

pub const TEST_NODE_NAME: &str = "test-node";
pub const TEST_NODE_IP: &str = "192.168.0.2";

/// Upstream's expected dumps name the table `kube-proxy`; rekube's is `rekube-proxy`.
pub fn rename_table(upstream: &str) -> String {
    upstream
        .replace(" ip kube-proxy ", " ip rekube-proxy ")
        .replace(" ip6 kube-proxy ", " ip6 rekube-proxy ")
        .replace("\"rules for kube-proxy\"", "\"rules for rekube-proxy\"")
}

/// Object types, earlier first (upstream's `objectOrder`).
fn object_order(kind: &str) -> i32 {
    match kind {
        "table" => 10,
        "chain" => 9,
        "rule" => 8,
        "set" => 7,
        "map" => 6,
        "element" => 5,
        _ => 0,
    }
}

/// Upstream's `sortNFTablesTransaction`: blank lines and comments dropped, lines sorted
/// by object type, then object name, rules keeping their order within a chain, other
/// lines by their text.
pub fn sort_nftables_transaction(tx: &str) -> Vec<String> {
    let mut lines: Vec<(usize, String)> = tx
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .enumerate()
        .collect();
    lines.sort_by(|(ia, a), (ib, b)| {
        let wa: Vec<&str> = a.split(' ').collect();
        let wb: Vec<&str> = b.split(' ').collect();
        if wa.len() < 5 || wb.len() < 5 {
            return ia.cmp(ib);
        }
        object_order(wb[1])
            .cmp(&object_order(wa[1]))
            .then_with(|| wa[4].cmp(wb[4]))
            .then_with(|| {
                if wa[1] == "rule" {
                    ia.cmp(ib)
                } else {
                    a.cmp(b)
                }
            })
    });
    lines.into_iter().map(|(_, l)| l).collect()
}

/// Upstream's `assertNFTablesTransactionEqual`: `expected` is upstream's text (table
/// `kube-proxy`), `result` a dump of rekube's table.
#[track_caller]
pub fn assert_nftables_transaction_equal(expected: &str, result: &str) {
    let expected = sort_nftables_transaction(&rename_table(expected));
    let result = sort_nftables_transaction(result);
    if expected != result {
        let missing: Vec<&String> = expected.iter().filter(|l| !result.contains(l)).collect();
        let extra: Vec<&String> = result.iter().filter(|l| !expected.contains(l)).collect();
        panic!(
            "tables do not match\nmissing:\n{}\nunexpected:\n{}\nfull result:\n{}",
            missing
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
            extra
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
            result.join("\n")
        );
    }
}

/// Upstream's `baseRules` (v1.36.3): what `setupNFTables` leaves with the fake proxier's
/// configuration.
pub const BASE_RULES: &str = r#"
add table ip kube-proxy { comment "rules for kube-proxy" ; }

add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add set ip kube-proxy hairpin-connections { type ipv4_addr . ipv4_addr . inet_proto . inet_service ; comment "service hairpin connections" ; }

add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }

add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy firewall-check
add chain ip kube-proxy masquerading
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check

add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy masquerading mark and 0x4000 != 0 mark set mark xor 0x4000 masquerade fully-random
add rule ip kube-proxy masquerading ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr @cluster-ips ip saddr != 10.0.0.0/8 mark set mark or 0x4000 comment "masquerade clusterIP traffic from outside cluster"
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports

add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"#;

/// Upstream's `NewFakeProxier(v1.IPv4Protocol)` with its objects: pods in 10.0.0.0/8,
/// ClusterIPs in 172.30.0.0/16, NodePorts on 192.168.0.2 only, mark 0x4000.
pub struct FakeProxier {
    pub proxier: NftablesProxier,
    pub nft: FakeNftables,
    pub services: BTreeMap<(String, String), core::Service>,
    pub slices: BTreeMap<(String, String), discovery::EndpointSlice>,
    last_synced: ProxySnapshot,
    pub now: Instant,
}

impl FakeProxier {
    pub fn new() -> Self {
        Self::new_with(|_| {})
    }

    /// `NewFakeProxier` with the configuration then changed by `f` (masqueradeAll, the
    /// local detector, --nodeport-addresses).
    pub fn new_with(f: impl FnOnce(&mut ProxierConfig)) -> Self {
        Self::new_family(IpFamily::V4, f)
    }

    /// `NewFakeProxier(family)`: for IPv6 pods in fd00:10::/64, ClusterIPs in
    /// fd00:10:96::/112, NodePorts on 2001:db8::1.
    pub fn new_family(family: IpFamily, f: impl FnOnce(&mut ProxierConfig)) -> Self {
        let (node_ip, pod_cidr, service_cidr) = match family {
            IpFamily::V4 => (TEST_NODE_IP, "10.0.0.0/8", "172.30.0.0/16"),
            IpFamily::V6 => ("2001:db8::1", "fd00:10::/64", "fd00:10:96::/112"),
        };
        let mut config = ProxierConfig::new(family, TEST_NODE_NAME);
        config.node_ip = Some(node_ip.parse().unwrap());
        config.local_detector = LocalDetector::ByCidr(pod_cidr.parse().unwrap());
        config.node_port_addresses = NodePortAddresses::Ips(vec![
            TEST_NODE_IP.parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ]);
        config.service_cidrs = vec![service_cidr.parse().unwrap()];
        config.masquerade_mark = 0x4000;
        f(&mut config);
        FakeProxier {
            nft: FakeNftables::new(family, &config.table),
            proxier: NftablesProxier::new(config),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            last_synced: ProxySnapshot::default(),
            now: Instant::now() + Duration::from_secs(3600),
        }
    }

    pub fn add_service(&mut self, svc: core::Service) {
        let key = (
            svc.metadata.namespace.clone().unwrap(),
            svc.metadata.name.clone().unwrap(),
        );
        self.services.insert(key, svc);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.services
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn add_slice(&mut self, slice: discovery::EndpointSlice) {
        let key = (
            slice.metadata.namespace.clone().unwrap(),
            slice.metadata.name.clone().unwrap(),
        );
        self.slices.insert(key, slice);
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        self.slices
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// The snapshot the shell would build from the informers' caches.
    pub fn snapshot(&self) -> ProxySnapshot {
        let mut snapshot = ProxySnapshot::default();
        for svc in self.services.values() {
            let rekube = rekube_crds::Service {
                metadata: svc.metadata.clone(),
                spec: svc.spec.clone(),
                status: svc.status.clone(),
            };
            snapshot
                .service_ports
                .extend(service_ports(&rekube, self.proxier.config().family));
        }
        snapshot.endpoints = endpoints_from_endpoint_slices(
            self.slices.values(),
            TEST_NODE_NAME,
            self.proxier.config().family,
        );
        snapshot
    }

    /// `fp.syncProxyRules()`: the services changed since the last sync are the partial
    /// sync's `updated`.
    pub fn sync_proxy_rules(&mut self) -> SyncPlan {
        let snapshot = self.snapshot();
        let updated: BTreeSet<_> = self.last_synced.updated_services(&snapshot);
        let plan =
            sync_once(&mut self.proxier, &self.nft, &snapshot, &updated, self.now).expect("sync");
        self.last_synced = snapshot;
        plan
    }

    /// The agent restarts: a new proxier with the same configuration, the kernel's table
    /// as the previous one left it.
    pub fn restart(&mut self) {
        let config = self.proxier.config().clone();
        self.proxier = NftablesProxier::new(config);
        self.last_synced = ProxySnapshot::default();
    }

    /// The number of operations of the last transaction run.
    pub fn last_operations(&self) -> usize {
        self.nft
            .last_transaction()
            .map(|t| t.num_operations())
            .unwrap_or(0)
    }

    /// Upstream's `ageStaleChains`: two seconds pass for the stale chains.
    pub fn age_stale_chains(&mut self) {
        self.proxier.age_stale_chains(Duration::from_secs(2));
    }
}

/// `makeTestService`.
pub fn make_test_service(
    namespace: &str,
    name: &str,
    f: impl FnOnce(&mut core::Service),
) -> core::Service {
    let mut svc = core::Service {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: Some(core::ServiceSpec::default()),
        status: Some(core::ServiceStatus::default()),
    };
    f(&mut svc);
    svc
}

pub fn spec(svc: &mut core::Service) -> &mut core::ServiceSpec {
    svc.spec.get_or_insert_with(Default::default)
}

/// A service port (name, port, protocol, nodePort).
pub fn service_port(name: &str, port: i32, protocol: &str, node_port: i32) -> core::ServicePort {
    core::ServicePort {
        name: Some(name.to_string()),
        port,
        protocol: Some(protocol.to_string()),
        node_port: (node_port != 0).then_some(node_port),
        ..Default::default()
    }
}

pub fn set_lb_ingress(svc: &mut core::Service, ips: &[&str]) {
    let status = svc.status.get_or_insert_with(Default::default);
    status.load_balancer = Some(core::LoadBalancerStatus {
        ingress: Some(
            ips.iter()
                .map(|ip| core::LoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ..Default::default()
                })
                .collect(),
        ),
    });
}

/// `makeTestEndpointSlice(namespace, name, sliceNum, ...)`.
pub fn make_test_endpoint_slice(
    namespace: &str,
    name: &str,
    slice_num: u32,
    f: impl FnOnce(&mut discovery::EndpointSlice),
) -> discovery::EndpointSlice {
    let mut slice = discovery::EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_string()),
            name: Some(format!("{name}-{slice_num}")),
            labels: Some(BTreeMap::from([(
                LABEL_SERVICE_NAME.to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".to_string(),
        endpoints: None,
        ports: None,
    };
    f(&mut slice);
    slice
}

/// An endpoint with one address, on `node` (or no node), with conditions
/// (ready, serving, terminating) when given.
pub fn endpoint(
    ip: &str,
    node: Option<&str>,
    conditions: Option<(bool, bool, bool)>,
) -> discovery::Endpoint {
    discovery::Endpoint {
        addresses: vec![ip.to_string()],
        node_name: node.map(str::to_string),
        conditions: conditions.map(
            |(ready, serving, terminating)| discovery::EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            },
        ),
        ..Default::default()
    }
}

pub fn endpoint_port(name: &str, port: i32, protocol: &str) -> discovery::EndpointPort {
    discovery::EndpointPort {
        name: Some(name.to_string()),
        port: Some(port),
        protocol: Some(protocol.to_string()),
        ..Default::default()
    }
}

#[test]
fn sort_keeps_rule_order_within_a_chain() {
    let sorted = sort_nftables_transaction(
        "add rule ip t c b\nadd element ip t m { 2 }\n# comment\n\nadd chain ip t c\nadd rule ip t c a\nadd element ip t m { 1 }\n",
    );
    assert_eq!(
        sorted,
        vec![
            "add chain ip t c",
            "add rule ip t c b",
            "add rule ip t c a",
            "add element ip t m { 1 }",
            "add element ip t m { 2 }",
        ]
    );
}

//! kube-proxy's nftables mode as a decision core (pkg/proxy/nftables/proxier.go):
//! `setup_nftables` (the table's fixed chains, sets, maps and rules) and
//! `sync_proxy_rules` (the per-service chains and the verdict-map elements), from a
//! [`ProxySnapshot`] to one [`Transaction`]. The proxier keeps what upstream's keeps
//! between syncs (the elements it wrote, the chains waiting to be deleted, whether the
//! next sync must be full) but does no I/O: the kernel's current chain and set names come
//! in as [`ExistingObjects`], the transaction goes out. [`super::sync::sync_once`] runs it.
//!
//! One table, `ip rekube-proxy` (`ip6` for IPv6), never anything outside it. Dispatch:
//! `services` looks `daddr . l4proto . dport` up in the `service-ips` verdict map and
//! `l4proto . dport` of local addresses in `service-nodeports`, each element jumping to
//! the service port's chain. As upstream since v1.35, that chain DNATs with one rule
//! through an anonymous map (`dnat ip addr . port to numgen random mod N map { 0 : IP .
//! PORT , .. }`); only Services with ClientIP affinity get per-endpoint chains (the
//! affinity sets' lookups and updates). Masquerading is a mark set inline (`mark set mark
//! or 0x4000`) and done in `masquerading`, which also masquerades hairpin connections found
//! in the `hairpin-connections` set (each local endpoint with itself). Ports without
//! endpoints are in `no-endpoint-services`/`no-endpoint-nodeports`, checked on new
//! connections in the filter hooks: `goto reject-chain` (ICMP unreachable / TCP reset) or
//! `drop`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

pub use super::config::{LocalDetector, NodePortAddresses, ProxierConfig, REKUBE_PROXY_TABLE};
use super::element_storage::ElementStorage;
use super::names::{
    ServicePortChains, endpoint_chain_and_affinity_set, is_affinity_set_name, is_service_chain_name,
};
use super::transaction::{
    BaseChain, Chain, Element, Object, Rule, Set, Transaction, family_keyword,
};
use crate::proxy::topology::categorize_endpoints;
use crate::proxy::types::{
    EndpointInfo, IpFamily, NamespacedName, ProxySnapshot, ServicePortInfo, ServicePortName,
};

// Base chains.
const FILTER_PREROUTING_PRE_DNAT_CHAIN: &str = "filter-prerouting-pre-dnat";
const FILTER_OUTPUT_PRE_DNAT_CHAIN: &str = "filter-output-pre-dnat";
const FILTER_INPUT_CHAIN: &str = "filter-input";
const FILTER_FORWARD_CHAIN: &str = "filter-forward";
const FILTER_OUTPUT_CHAIN: &str = "filter-output";
const NAT_PREROUTING_CHAIN: &str = "nat-prerouting";
const NAT_OUTPUT_CHAIN: &str = "nat-output";
const NAT_POSTROUTING_CHAIN: &str = "nat-postrouting";

// Service dispatch.
const SERVICES_CHAIN: &str = "services";
const SERVICE_IPS_MAP: &str = "service-ips";
const SERVICE_NODE_PORTS_MAP: &str = "service-nodeports";
const NODE_PORT_IPS_SET: &str = "nodeport-ips";
const CLUSTER_IPS_SET: &str = "cluster-ips";

// Services without endpoints.
const SERVICE_ENDPOINTS_CHECK_CHAIN: &str = "service-endpoints-check";
const NODE_PORT_ENDPOINTS_CHECK_CHAIN: &str = "nodeport-endpoints-check";
const NO_ENDPOINT_SERVICES_MAP: &str = "no-endpoint-services";
const NO_ENDPOINT_NODE_PORTS_MAP: &str = "no-endpoint-nodeports";
const REJECT_CHAIN: &str = "reject-chain";

// Unallocated ClusterIPs and undefined ports of ClusterIPs.
const CLUSTER_IPS_CHECK_CHAIN: &str = "cluster-ips-check";

// LoadBalancerSourceRanges.
const FIREWALL_IPS_MAP: &str = "firewall-ips";
const FIREWALL_CHECK_CHAIN: &str = "firewall-check";

// Masquerading.
const MASQUERADING_CHAIN: &str = "masquerading";
const HAIRPIN_CONNECTIONS_SET: &str = "hairpin-connections";

/// The hooks, as upstream's `nftablesBaseChains`: filtering on pre-DNAT addresses for the
/// firewall, the rest at filter priority, DNAT in prerouting/output, SNAT in postrouting.
const BASE_CHAINS: [(&str, &str, &str, i32); 8] = [
    (
        FILTER_PREROUTING_PRE_DNAT_CHAIN,
        "filter",
        "prerouting",
        -110,
    ),
    (FILTER_OUTPUT_PRE_DNAT_CHAIN, "filter", "output", -110),
    (FILTER_INPUT_CHAIN, "filter", "input", 0),
    (FILTER_FORWARD_CHAIN, "filter", "forward", 0),
    (FILTER_OUTPUT_CHAIN, "filter", "output", 0),
    (NAT_PREROUTING_CHAIN, "nat", "prerouting", -100),
    (NAT_OUTPUT_CHAIN, "nat", "output", -100),
    (NAT_POSTROUTING_CHAIN, "nat", "postrouting", 100),
];

/// (destination, source base chain, match): upstream's `nftablesJumpChains`.
const JUMP_CHAINS: [(&str, &str, &str); 11] = [
    (
        NODE_PORT_ENDPOINTS_CHECK_CHAIN,
        FILTER_INPUT_CHAIN,
        "ct state new",
    ),
    (
        SERVICE_ENDPOINTS_CHECK_CHAIN,
        FILTER_INPUT_CHAIN,
        "ct state new",
    ),
    (
        SERVICE_ENDPOINTS_CHECK_CHAIN,
        FILTER_FORWARD_CHAIN,
        "ct state new",
    ),
    (
        SERVICE_ENDPOINTS_CHECK_CHAIN,
        FILTER_OUTPUT_CHAIN,
        "ct state new",
    ),
    (
        FIREWALL_CHECK_CHAIN,
        FILTER_PREROUTING_PRE_DNAT_CHAIN,
        "ct state new",
    ),
    (
        FIREWALL_CHECK_CHAIN,
        FILTER_OUTPUT_PRE_DNAT_CHAIN,
        "ct state new",
    ),
    (SERVICES_CHAIN, NAT_OUTPUT_CHAIN, ""),
    (SERVICES_CHAIN, NAT_PREROUTING_CHAIN, ""),
    (MASQUERADING_CHAIN, NAT_POSTROUTING_CHAIN, ""),
    (
        CLUSTER_IPS_CHECK_CHAIN,
        FILTER_FORWARD_CHAIN,
        "ct state new",
    ),
    (CLUSTER_IPS_CHECK_CHAIN, FILTER_OUTPUT_CHAIN, "ct state new"),
];

/// Upstream's `CleanupLeftovers`: the transaction deleting the proxier's table (added
/// first, so deleting a table that is not there does not fail), for `cleanup`.
pub fn cleanup_transaction(family: IpFamily, table: &str) -> Transaction {
    let mut tx = Transaction::new(family, table);
    tx.add(Object::Table { comment: None });
    tx.delete(Object::Table { comment: None });
    tx
}

/// The names in the kernel's table before this sync (upstream lists them mid-sync).
#[derive(Debug, Clone, Default)]
pub struct ExistingObjects {
    pub chains: Vec<String>,
    pub sets: Vec<String>,
}

/// Counts upstream publishes as `sync_proxy_rules_no_local_endpoints_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoLocalEndpoints {
    pub internal: usize,
    pub external: usize,
}

/// One sync's transaction and what it found.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    pub transaction: Transaction,
    pub full_sync: bool,
    pub no_local_endpoints: NoLocalEndpoints,
}

/// The nftables proxier's state between syncs.
#[derive(Debug)]
pub struct NftablesProxier {
    config: ProxierConfig,
    node_labels: BTreeMap<String, String>,
    need_full_sync: bool,
    /// The base chains were deleted and recreated once (so changed priorities apply).
    flushed: bool,
    /// Flushed service chains, deleted once they have been unreferenced for a second
    /// (kernels before 6.2 notice a dropped map reference only later).
    stale_chains: BTreeMap<String, Instant>,
    cluster_ips: ElementStorage,
    service_ips: ElementStorage,
    firewall_ips: ElementStorage,
    no_endpoint_services: ElementStorage,
    no_endpoint_node_ports: ElementStorage,
    service_node_ports: ElementStorage,
    hairpin_connections: ElementStorage,
    /// Each service port's last writing (see [`PortOutput`]).
    outputs: HashMap<ServicePortName, PortOutput>,
    /// The ports' `no_local` summed.
    no_local: NoLocalEndpoints,
}

fn ip_x(family: IpFamily) -> &'static str {
    family_keyword(family)
}

fn ipv_x_addr(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    }
}

fn no_localhost(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ip daddr != 127.0.0.0/8",
        IpFamily::V6 => "ip6 daddr != ::1",
    }
}

fn rule(chain: &str, rule: String) -> Object {
    Object::Rule(Rule {
        chain: chain.to_string(),
        rule,
        comment: None,
    })
}

fn rule_with_comment(chain: &str, rule: String, comment: &str) -> Object {
    Object::Rule(Rule {
        chain: chain.to_string(),
        rule,
        comment: Some(comment.to_string()),
    })
}

/// Adds and flushes a chain once per transaction (upstream's `ensureChain`).
fn ensure_chain(chain: &str, tx: &mut Transaction, created: &mut BTreeSet<String>) {
    if created.insert(chain.to_string()) {
        tx.add(Object::Chain(Chain::named(chain)));
        tx.flush(Object::Chain(Chain::named(chain)));
    }
}

/// [`ensure_chain`] for a service port's chain, noted in its output.
fn ensure_port_chain(
    chain: &str,
    tx: &mut Transaction,
    created: &mut BTreeSet<String>,
    out: &mut PortOutput,
) {
    if !created.contains(chain) {
        out.chains.push(chain.to_string());
    }
    ensure_chain(chain, tx, created);
}

/// The proxier's sets and maps with elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    ClusterIps,
    ServiceIps,
    FirewallIps,
    NoEndpointServices,
    NoEndpointNodePorts,
    ServiceNodePorts,
    HairpinConnections,
}

/// What writing one service port put into the table: upstream recomputes it for every
/// port at every sync; rekube keeps it, so that a partial sync writes only the ports that
/// changed and undoes exactly what they no longer need.
#[derive(Debug, Clone, Default)]
struct PortOutput {
    /// The elements it ensured, by joined key.
    elements: Vec<(Container, String)>,
    chains: Vec<String>,
    affinity_sets: Vec<String>,
    no_local: NoLocalEndpoints,
}

/// The service port's derived names, computed once per port as upstream's `servicePortInfo`.
struct PortNames {
    chains: ServicePortChains,
    name_string: String,
}

impl NftablesProxier {
    pub fn new(config: ProxierConfig) -> Self {
        NftablesProxier {
            config,
            node_labels: BTreeMap::new(),
            need_full_sync: true,
            flushed: false,
            stale_chains: BTreeMap::new(),
            cluster_ips: ElementStorage::new(CLUSTER_IPS_SET, false),
            service_ips: ElementStorage::new(SERVICE_IPS_MAP, true),
            firewall_ips: ElementStorage::new(FIREWALL_IPS_MAP, true),
            no_endpoint_services: ElementStorage::new(NO_ENDPOINT_SERVICES_MAP, true),
            no_endpoint_node_ports: ElementStorage::new(NO_ENDPOINT_NODE_PORTS_MAP, true),
            service_node_ports: ElementStorage::new(SERVICE_NODE_PORTS_MAP, true),
            hairpin_connections: ElementStorage::new(HAIRPIN_CONNECTIONS_SET, false),
            outputs: HashMap::new(),
            no_local: NoLocalEndpoints::default(),
        }
    }

    pub fn config(&self) -> &ProxierConfig {
        &self.config
    }

    /// The node's labels (its zone, for topology hints); a change forces a full sync.
    pub fn set_node_labels(&mut self, labels: BTreeMap<String, String>) {
        if self.node_labels != labels {
            self.node_labels = labels;
            self.need_full_sync = true;
        }
    }

    /// The next sync rewrites everything (start-up, failure, node labels).
    pub fn need_full_sync(&self) -> bool {
        self.need_full_sync
    }

    /// The next sync rewrites everything (upstream's periodic full sync, FullSyncPeriod).
    pub fn request_full_sync(&mut self) {
        self.need_full_sync = true;
    }

    /// The chains flushed by earlier syncs and not yet deleted.
    pub fn stale_chains(&self) -> impl Iterator<Item = &String> {
        self.stale_chains.keys()
    }

    /// Makes the stale chains look older (tests of the deletion delay).
    pub fn age_stale_chains(&mut self, by: Duration) {
        for t in self.stale_chains.values_mut() {
            if let Some(earlier) = t.checked_sub(by) {
                *t = earlier;
            }
        }
    }

    /// The transaction deleting chains stale for over a second, run before the sync's
    /// own transaction (upstream runs it separately so a failure does not block the sync).
    pub fn stale_chains_transaction(&mut self, now: Instant) -> Option<Transaction> {
        let one_second_ago = now.checked_sub(Duration::from_secs(1))?;
        let old: Vec<String> = self
            .stale_chains
            .iter()
            .filter(|(_, t)| **t < one_second_ago)
            .map(|(c, _)| c.clone())
            .collect();
        if old.is_empty() {
            return None;
        }
        let mut tx = Transaction::new(self.config.family, &self.config.table);
        for chain in old {
            self.stale_chains.remove(&chain);
            tx.delete(Object::Chain(Chain::named(&chain)));
        }
        Some(tx)
    }

    /// The stale chains' transaction failed: which of them still exist is unknown, so the
    /// next sync is full (it lists the table), as upstream.
    pub fn stale_chains_delete_failed(&mut self) {
        self.need_full_sync = true;
    }

    /// The sync's transaction was applied.
    pub fn sync_succeeded(&mut self) {
        self.need_full_sync = false;
    }

    /// The sync's transaction failed: what the proxier believes is in the kernel is wrong,
    /// so the next sync is full.
    pub fn sync_failed(&mut self) {
        self.need_full_sync = true;
        self.stale_chains.clear();
    }

    /// Upstream's `setupNFTables`: the table, base chains, fixed chains, sets, maps and
    /// rules, and the verdict maps flushed (a full sync rewrites every element).
    fn setup_nftables(&mut self, tx: &mut Transaction) {
        let family = self.config.family;
        let ip = ip_x(family);
        let addr = ipv_x_addr(family);

        tx.add(Object::Table {
            comment: Some(format!("rules for {}", self.config.table)),
        });
        if !self.flushed {
            for (name, ..) in BASE_CHAINS {
                tx.add(Object::Chain(Chain::named(name)));
                tx.delete(Object::Chain(Chain::named(name)));
            }
            self.flushed = true;
        }
        for (name, chain_type, hook, priority) in BASE_CHAINS {
            let chain = Chain {
                name: name.to_string(),
                base: Some(BaseChain {
                    chain_type,
                    hook,
                    priority,
                }),
                comment: None,
            };
            tx.add(Object::Chain(chain.clone()));
            tx.flush(Object::Chain(chain));
        }

        let mut created = BTreeSet::new();
        for (dst, src, extra) in JUMP_CHAINS {
            ensure_chain(dst, tx, &mut created);
            let jump = if extra.is_empty() {
                format!("jump {dst}")
            } else {
                format!("{extra} jump {dst}")
            };
            tx.add(rule(src, jump));
        }
        for chain in [SERVICES_CHAIN, CLUSTER_IPS_CHECK_CHAIN, MASQUERADING_CHAIN] {
            ensure_chain(chain, tx, &mut created);
        }

        // A connection DNATed back to the pod that opened it (hairpin) is masqueraded by
        // its (endpoint, endpoint, protocol, port) in this set: only local endpoints.
        tx.add(Object::Set(self.container(HAIRPIN_CONNECTIONS_SET)));
        let mark = format!("{:#x}", self.config.masquerade_mark);
        tx.add(rule(
            MASQUERADING_CHAIN,
            format!("mark and {mark} != 0 mark set mark xor {mark} masquerade fully-random"),
        ));
        tx.add(rule(
            MASQUERADING_CHAIN,
            format!(
                "ct status dnat {ip} saddr . {ip} daddr . meta l4proto . th dport @{HAIRPIN_CONNECTIONS_SET} masquerade fully-random"
            ),
        ));

        tx.add(Object::Set(self.container(CLUSTER_IPS_SET)));
        tx.add(rule_with_comment(
            CLUSTER_IPS_CHECK_CHAIN,
            format!("{ip} daddr @{CLUSTER_IPS_SET} reject"),
            "Reject traffic to invalid ports of ClusterIPs",
        ));
        let cidrs: Vec<String> = self
            .config
            .service_cidrs
            .iter()
            .filter(|c| family.matches_net(c))
            .map(|c| c.trunc().to_string())
            .collect();
        if !cidrs.is_empty() {
            tx.add(rule_with_comment(
                CLUSTER_IPS_CHECK_CHAIN,
                format!("{ip} daddr {{ {} }} drop", cidrs.join(",")),
                "Drop traffic to unallocated ClusterIPs",
            ));
        }

        // The nodeport-ips set exists only when NodePorts are limited to some addresses
        // (add+delete, because deleting what does not exist would fail).
        tx.add(Object::Set(Set {
            key_type: addr.to_string(),
            comment: Some("IPs that accept NodePort traffic".to_string()),
            ..Set::named(NODE_PORT_IPS_SET)
        }));
        match &self.config.node_port_addresses {
            NodePortAddresses::All => tx.delete(Object::Set(Set::named(NODE_PORT_IPS_SET))),
            NodePortAddresses::Ips(ips) => {
                tx.flush(Object::Set(Set::named(NODE_PORT_IPS_SET)));
                for ip in ips
                    .iter()
                    .filter(|ip| family.matches(ip) && !ip.is_loopback())
                {
                    tx.add(Object::Element(Element {
                        container: NODE_PORT_IPS_SET.to_string(),
                        is_map: false,
                        key: vec![ip.to_string()],
                        value: Vec::new(),
                        comment: None,
                    }));
                }
            }
        }

        tx.add(Object::Set(self.container(NO_ENDPOINT_SERVICES_MAP)));
        tx.add(Object::Set(self.container(NO_ENDPOINT_NODE_PORTS_MAP)));
        tx.add(Object::Chain(Chain {
            comment: Some("helper for @no-endpoint-services / @no-endpoint-nodeports".to_string()),
            ..Chain::named(REJECT_CHAIN)
        }));
        tx.flush(Object::Chain(Chain::named(REJECT_CHAIN)));
        tx.add(rule(REJECT_CHAIN, "reject".to_string()));
        tx.add(rule(
            SERVICE_ENDPOINTS_CHECK_CHAIN,
            format!("{ip} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES_MAP}"),
        ));
        let node_port_match = match &self.config.node_port_addresses {
            NodePortAddresses::All => no_localhost(family).to_string(),
            NodePortAddresses::Ips(_) => format!("{ip} daddr @{NODE_PORT_IPS_SET}"),
        };
        tx.add(rule(
            NODE_PORT_ENDPOINTS_CHECK_CHAIN,
            format!("{node_port_match} meta l4proto . th dport vmap @{NO_ENDPOINT_NODE_PORTS_MAP}"),
        ));

        tx.add(Object::Set(self.container(FIREWALL_IPS_MAP)));
        ensure_chain(FIREWALL_CHECK_CHAIN, tx, &mut created);
        tx.add(rule(
            FIREWALL_CHECK_CHAIN,
            format!("{ip} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS_MAP}"),
        ));

        tx.add(Object::Set(self.container(SERVICE_IPS_MAP)));
        tx.add(Object::Set(self.container(SERVICE_NODE_PORTS_MAP)));
        let masquerade_rule = self.masquerade_rule();
        if self.config.masquerade_all {
            tx.add(rule_with_comment(
                SERVICES_CHAIN,
                format!("{ip} daddr @{CLUSTER_IPS_SET} {masquerade_rule}"),
                "masquerade all clusterIP traffic",
            ));
        } else if let Some(not_local) = self.config.local_detector.if_not_local(family) {
            // Off-cluster traffic to a ClusterIP (a static route to the service range via
            // any node) may leave the node again: masquerade it.
            tx.add(rule_with_comment(
                SERVICES_CHAIN,
                format!("{ip} daddr @{CLUSTER_IPS_SET} {not_local} {masquerade_rule}"),
                "masquerade clusterIP traffic from outside cluster",
            ));
        }
        tx.add(rule(
            SERVICES_CHAIN,
            format!("{ip} daddr . meta l4proto . th dport vmap @{SERVICE_IPS_MAP}"),
        ));
        let node_port_dispatch = match &self.config.node_port_addresses {
            NodePortAddresses::All => format!("fib daddr type local {}", no_localhost(family)),
            NodePortAddresses::Ips(_) => format!("{ip} daddr @{NODE_PORT_IPS_SET}"),
        };
        tx.add(rule(
            SERVICES_CHAIN,
            format!("{node_port_dispatch} meta l4proto . th dport vmap @{SERVICE_NODE_PORTS_MAP}"),
        ));

        self.cluster_ips.reset(tx);
        self.service_ips.reset(tx);
        self.firewall_ips.reset(tx);
        self.no_endpoint_services.reset(tx);
        self.no_endpoint_node_ports.reset(tx);
        self.service_node_ports.reset(tx);
        self.hairpin_connections.reset(tx);
    }

    /// The sets and maps whose elements the proxier keeps (upstream's `setupNFTables`
    /// declares them so): written at a full sync, and declared in every transaction so
    /// elements can be added through their declaration ([`Transaction::nft_input`]).
    fn container(&self, name: &str) -> Set {
        let addr = ipv_x_addr(self.config.family);
        let (key_type, map, comment) = match name {
            CLUSTER_IPS_SET => (addr.to_string(), false, "Active ClusterIPs"),
            HAIRPIN_CONNECTIONS_SET => (
                format!("{addr} . {addr} . inet_proto . inet_service"),
                false,
                "service hairpin connections",
            ),
            NO_ENDPOINT_SERVICES_MAP => (
                format!("{addr} . inet_proto . inet_service"),
                true,
                "vmap to drop or reject packets to services with no endpoints",
            ),
            NO_ENDPOINT_NODE_PORTS_MAP => (
                "inet_proto . inet_service".to_string(),
                true,
                "vmap to drop or reject packets to service nodeports with no endpoints",
            ),
            FIREWALL_IPS_MAP => (
                format!("{addr} . inet_proto . inet_service"),
                true,
                "destinations that are subject to LoadBalancerSourceRanges",
            ),
            SERVICE_IPS_MAP => (
                format!("{addr} . inet_proto . inet_service"),
                true,
                "ClusterIP, ExternalIP and LoadBalancer IP traffic",
            ),
            SERVICE_NODE_PORTS_MAP => (
                "inet_proto . inet_service".to_string(),
                true,
                "NodePort traffic",
            ),
            other => unreachable!("not a container of the proxier: {other}"),
        };
        Set {
            key_type,
            map: map.then(|| "verdict".to_string()),
            comment: Some(comment.to_string()),
            ..Set::named(name)
        }
    }

    /// Upstream's `masqueradeRule`: marks the packet for the masquerading chain.
    fn masquerade_rule(&self) -> String {
        format!("mark set mark or {:#x}", self.config.masquerade_mark)
    }

    /// Upstream's `syncProxyRules`, without the I/O: the transaction bringing the table
    /// from what the proxier last wrote (and, at a full sync, what `existing` lists) to
    /// what `snapshot` needs. A full sync writes every service port. A partial sync (after
    /// a successful one) writes only the ports of the Services in `updated` and undoes
    /// what their previous writing left that is no longer needed; upstream walks every
    /// port at every sync to find that out, rekube keeps each port's [`PortOutput`], so a
    /// partial sync costs what changed, not what exists.
    pub fn sync_proxy_rules(
        &mut self,
        snapshot: &ProxySnapshot,
        updated: &BTreeSet<NamespacedName>,
        existing: Option<&ExistingObjects>,
        now: Instant,
    ) -> SyncPlan {
        let family = self.config.family;
        let full_sync = self.need_full_sync;
        let mut tx = Transaction::new(family, &self.config.table);
        for name in [
            CLUSTER_IPS_SET,
            HAIRPIN_CONNECTIONS_SET,
            NO_ENDPOINT_SERVICES_MAP,
            NO_ENDPOINT_NODE_PORTS_MAP,
            FIREWALL_IPS_MAP,
            SERVICE_IPS_MAP,
            SERVICE_NODE_PORTS_MAP,
        ] {
            tx.declare(self.container(name));
        }
        if full_sync {
            self.setup_nftables(&mut tx);
            self.outputs.clear();
            self.no_local = NoLocalEndpoints::default();
        }

        // The ports to write, and those of updated Services that are gone.
        let mut created: BTreeSet<String> = BTreeSet::new();
        let to_write: Vec<(&ServicePortName, &ServicePortInfo)> = snapshot
            .service_ports
            .iter()
            .filter(|(name, svc)| {
                family.matches(&svc.cluster_ip) && (full_sync || updated.contains(&name.service))
            })
            .collect();
        let mut written = Vec::with_capacity(to_write.len());
        for (name, svc) in to_write {
            let out = self.write_service_port(&mut tx, &mut created, snapshot, name, svc);
            written.push((name.clone(), out));
        }
        let gone: Vec<ServicePortName> = self
            .outputs
            .keys()
            .filter(|name| {
                updated.contains(&name.service)
                    && !snapshot
                        .service_ports
                        .get(*name)
                        .is_some_and(|svc| family.matches(&svc.cluster_ip))
            })
            .cloned()
            .collect();

        // What the ports' previous writing left and no longer need: elements (deleted
        // with the last port holding them), chains (flushed now, deleted a second later:
        // kernels before 6.2 notice a dropped map reference only later), affinity sets
        // (deleted at once).
        let mut dropped_chains: Vec<String> = Vec::new();
        let mut dropped_sets: Vec<String> = Vec::new();
        for (name, out) in written {
            self.no_local.internal += out.no_local.internal;
            self.no_local.external += out.no_local.external;
            let (chains, sets) = (out.chains.clone(), out.affinity_sets.clone());
            if let Some(old) = self.outputs.insert(name, out) {
                let dropped = (&mut dropped_chains, &mut dropped_sets);
                self.release(&mut tx, old, &chains, &sets, dropped);
            }
        }
        for name in gone {
            if let Some(old) = self.outputs.remove(&name) {
                let dropped = (&mut dropped_chains, &mut dropped_sets);
                self.release(&mut tx, old, &[], &[], dropped);
            }
        }

        // The time is when a chain was first found stale: upstream re-stamps it at every
        // sync, so syncs less than a second apart (any change anywhere in the cluster)
        // keep a stale chain from ever going; rekube does not.
        for chain in &created {
            self.stale_chains.remove(chain);
        }
        for chain in dropped_chains {
            if !created.contains(&chain) {
                tx.flush(Object::Chain(Chain::named(&chain)));
                self.stale_chains.entry(chain).or_insert(now);
            }
        }
        // After the flushes: a set still used by a rule cannot go.
        for set in dropped_sets {
            tx.delete(Object::Set(Set::named(&set)));
        }
        // A full sync also finds what an earlier run (or a failed sync) left: the listed
        // service chains and affinity sets no port wrote.
        if let Some(listed) = existing.filter(|_| full_sync) {
            let chains: HashSet<&str> = self
                .outputs
                .values()
                .flat_map(|o| o.chains.iter().map(String::as_str))
                .collect();
            let sets: HashSet<&str> = self
                .outputs
                .values()
                .flat_map(|o| o.affinity_sets.iter().map(String::as_str))
                .collect();
            for chain in listed.chains.iter().filter(|c| is_service_chain_name(c)) {
                if !chains.contains(chain.as_str()) {
                    tx.flush(Object::Chain(Chain::named(chain)));
                    self.stale_chains.entry(chain.clone()).or_insert(now);
                }
            }
            for set in listed.sets.iter() {
                if is_affinity_set_name(set) && !sets.contains(set.as_str()) {
                    tx.delete(Object::Set(Set::named(set)));
                }
            }
        }

        SyncPlan {
            transaction: tx,
            full_sync,
            no_local_endpoints: self.no_local,
        }
    }

    /// Undoes what a port's previous writing (`old`) left that its new writing (`chains`,
    /// `affinity_sets`; nothing for a port that is gone) does not need: its elements are
    /// released, its chains and sets no longer needed go to `dropped`.
    fn release(
        &mut self,
        tx: &mut Transaction,
        old: PortOutput,
        chains: &[String],
        affinity_sets: &[String],
        (dropped_chains, dropped_sets): (&mut Vec<String>, &mut Vec<String>),
    ) {
        self.no_local.internal -= old.no_local.internal;
        self.no_local.external -= old.no_local.external;
        for (container, key) in &old.elements {
            self.storage(*container).release(tx, key);
        }
        dropped_chains.extend(old.chains.into_iter().filter(|c| !chains.contains(c)));
        dropped_sets.extend(
            old.affinity_sets
                .into_iter()
                .filter(|s| !affinity_sets.contains(s)),
        );
    }

    fn storage(&mut self, container: Container) -> &mut ElementStorage {
        match container {
            Container::ClusterIps => &mut self.cluster_ips,
            Container::ServiceIps => &mut self.service_ips,
            Container::FirewallIps => &mut self.firewall_ips,
            Container::NoEndpointServices => &mut self.no_endpoint_services,
            Container::NoEndpointNodePorts => &mut self.no_endpoint_node_ports,
            Container::ServiceNodePorts => &mut self.service_node_ports,
            Container::HairpinConnections => &mut self.hairpin_connections,
        }
    }

    /// Ensures one element for the port being written, noting it in its output.
    fn ensure(
        &mut self,
        container: Container,
        tx: &mut Transaction,
        out: &mut PortOutput,
        key: Vec<String>,
        value: Vec<String>,
        comment: Option<String>,
    ) {
        let key = self.storage(container).ensure_elem(tx, key, value, comment);
        out.elements.push((container, key));
    }

    /// The body of upstream's per-service-port loop in `syncProxyRules`: the port's
    /// chains, rules, affinity sets and elements.
    fn write_service_port(
        &mut self,
        tx: &mut Transaction,
        created: &mut BTreeSet<String>,
        snapshot: &ProxySnapshot,
        svc_name: &ServicePortName,
        svc: &ServicePortInfo,
    ) -> PortOutput {
        let family = self.config.family;
        let ip = ip_x(family);
        let no_endpoints: Vec<EndpointInfo> = Vec::new();
        let mut out = PortOutput::default();
        let protocol = svc.protocol.lower();
        let names = PortNames {
            chains: ServicePortChains::new(svc_name),
            name_string: svc_name.to_string(),
        };
        let all_endpoints = snapshot.endpoints.get(svc_name).unwrap_or(&no_endpoints);
        let cat = categorize_endpoints(
            all_endpoints,
            svc,
            &self.config.node_name,
            &self.node_labels,
        );
        let cluster_endpoints = cat.cluster.clone().unwrap_or_default();
        let local_endpoints = cat.local.clone().unwrap_or_default();
        let has_endpoints = cat.has_any_endpoints;

        // Endpoint chains (and their affinity sets) only for ClientIP affinity;
        // otherwise the policy chain DNATs through one anonymous map.
        let uses_affinity = svc.session_affinity_timeout.is_some();
        let endpoint_names: Vec<(String, String)> = if uses_affinity {
            cat.all_reachable
                .iter()
                .map(|ep| endpoint_chain_and_affinity_set(svc_name, ep))
                .collect()
        } else {
            Vec::new()
        };
        for (chain, affinity_set) in &endpoint_names {
            ensure_port_chain(chain, tx, created, &mut out);
            out.affinity_sets.push(affinity_set.clone());
        }
        for ep in cat.all_reachable.iter().filter(|ep| ep.is_local) {
            self.ensure(
                Container::HairpinConnections,
                tx,
                &mut out,
                vec![
                    ep.ip.to_string(),
                    ep.ip.to_string(),
                    protocol.to_string(),
                    ep.port.to_string(),
                ],
                Vec::new(),
                None,
            );
        }

        let cluster_policy_chain = names.chains.cluster_policy.as_str();
        let uses_cluster_policy_chain =
            !cluster_endpoints.is_empty() && svc.uses_cluster_endpoints();
        if uses_cluster_policy_chain {
            ensure_port_chain(cluster_policy_chain, tx, created, &mut out);
        }
        let local_policy_chain = names.chains.local_policy.as_str();
        let uses_local_policy_chain = !local_endpoints.is_empty() && svc.uses_local_endpoints();
        if uses_local_policy_chain {
            ensure_port_chain(local_policy_chain, tx, created, &mut out);
        }

        // Internal (ClusterIP) traffic goes to the policy chain of internalTrafficPolicy.
        let mut internal_traffic_chain = cluster_policy_chain;
        let mut has_internal_endpoints = has_endpoints;
        if svc.internal_policy_local() {
            internal_traffic_chain = local_policy_chain;
            if local_endpoints.is_empty() {
                has_internal_endpoints = false;
            }
        }
        // External traffic (NodePort, ExternalIP, LoadBalancer) always enters the
        // external chain, which then goes to the externalTrafficPolicy's chain.
        let mut external_policy_chain = cluster_policy_chain;
        let mut has_external_endpoints = has_endpoints;
        if svc.external_policy_local() {
            external_policy_chain = local_policy_chain;
            if local_endpoints.is_empty() {
                has_external_endpoints = false;
            }
        }
        let external_traffic_chain = names.chains.external.as_str();
        // On hasEndpoints, not hasExternalEndpoints: the short-circuit rules for local
        // traffic are needed even without endpoints for external traffic.
        let uses_external_traffic_chain = has_endpoints && svc.externally_accessible();
        if uses_external_traffic_chain {
            ensure_port_chain(external_traffic_chain, tx, created, &mut out);
        }

        let mut internal_filter_verdict = String::new();
        let mut external_filter_verdict = String::new();
        if !has_endpoints {
            // No endpoints at all: reject at once.
            internal_filter_verdict = format!("goto {REJECT_CHAIN}");
            external_filter_verdict = format!("goto {REJECT_CHAIN}");
        } else {
            if !has_internal_endpoints {
                // internalTrafficPolicy Local without a local endpoint.
                internal_filter_verdict = "drop".to_string();
                out.no_local.internal += 1;
            }
            if !has_external_endpoints {
                // externalTrafficPolicy Local without a local endpoint: external
                // traffic is dropped, traffic from inside may still short-circuit.
                external_filter_verdict = "drop".to_string();
                out.no_local.external += 1;
            }
        }

        let port = svc.port.to_string();
        let key = |addr: &IpAddr| vec![addr.to_string(), protocol.to_string(), port.clone()];
        let comment = Some(names.name_string.clone());

        self.ensure(
            Container::ClusterIps,
            tx,
            &mut out,
            vec![svc.cluster_ip.to_string()],
            Vec::new(),
            None,
        );
        if has_internal_endpoints {
            self.ensure(
                Container::ServiceIps,
                tx,
                &mut out,
                key(&svc.cluster_ip),
                vec![format!("goto {internal_traffic_chain}")],
                None,
            );
        } else {
            self.ensure(
                Container::NoEndpointServices,
                tx,
                &mut out,
                key(&svc.cluster_ip),
                vec![internal_filter_verdict.clone()],
                comment.clone(),
            );
        }

        for external_ip in svc.external_ips.iter().filter(|ip| family.matches(ip)) {
            if has_endpoints {
                self.ensure(
                    Container::ServiceIps,
                    tx,
                    &mut out,
                    key(external_ip),
                    vec![format!("goto {external_traffic_chain}")],
                    None,
                );
            }
            if !has_external_endpoints {
                self.ensure(
                    Container::NoEndpointServices,
                    tx,
                    &mut out,
                    key(external_ip),
                    vec![external_filter_verdict.clone()],
                    comment.clone(),
                );
            }
        }

        let lb_vips: Vec<&IpAddr> = svc
            .load_balancer_vips
            .iter()
            .filter(|ip| family.matches(ip))
            .collect();
        let source_ranges: Vec<&IpNet> = svc
            .load_balancer_source_ranges
            .iter()
            .filter(|c| family.matches_net(c))
            .collect();
        let uses_fw_chain = !lb_vips.is_empty() && !source_ranges.is_empty();
        let fw_chain = names.chains.firewall.as_str();
        if uses_fw_chain {
            ensure_port_chain(fw_chain, tx, created, &mut out);
        }
        for lb_ip in &lb_vips {
            if has_endpoints {
                self.ensure(
                    Container::ServiceIps,
                    tx,
                    &mut out,
                    key(lb_ip),
                    vec![format!("goto {external_traffic_chain}")],
                    None,
                );
            }
            if uses_fw_chain {
                self.ensure(
                    Container::FirewallIps,
                    tx,
                    &mut out,
                    key(lb_ip),
                    vec![format!("goto {fw_chain}")],
                    None,
                );
            }
        }
        if !has_external_endpoints {
            for lb_ip in &lb_vips {
                self.ensure(
                    Container::NoEndpointServices,
                    tx,
                    &mut out,
                    key(lb_ip),
                    vec![external_filter_verdict.clone()],
                    comment.clone(),
                );
            }
        }

        if svc.node_port != 0 {
            let node_port_key = vec![protocol.to_string(), svc.node_port.to_string()];
            if has_endpoints {
                // NodePorts are not subject to loadBalancerSourceRanges (upstream).
                self.ensure(
                    Container::ServiceNodePorts,
                    tx,
                    &mut out,
                    node_port_key.clone(),
                    vec![format!("goto {external_traffic_chain}")],
                    None,
                );
            }
            if !has_external_endpoints {
                self.ensure(
                    Container::NoEndpointNodePorts,
                    tx,
                    &mut out,
                    node_port_key,
                    vec![external_filter_verdict.clone()],
                    comment.clone(),
                );
            }
        }

        // Everything below is the service's own chains and sets.

        let masquerade_rule = self.masquerade_rule();
        if uses_external_traffic_chain {
            if !svc.external_policy_local() {
                // Endpoints may be on other nodes: masquerade.
                tx.add(rule_with_comment(
                    external_traffic_chain,
                    masquerade_rule.clone(),
                    "masquerade",
                ));
            } else {
                if let Some(local) = self.config.local_detector.if_local(family) {
                    // Pod traffic to an external address behaves as if it went out to
                    // the load balancer and came back: any endpoint, no policy.
                    tx.add(rule_with_comment(
                        external_traffic_chain,
                        format!("{local} goto {cluster_policy_chain}"),
                        "short-circuit pod traffic",
                    ));
                }
                // Traffic from the node itself has a local source address: masquerade
                // it, and send it to any endpoint.
                tx.add(rule_with_comment(
                    external_traffic_chain,
                    format!("fib saddr type local {masquerade_rule}"),
                    "masquerade local traffic",
                ));
                tx.add(rule_with_comment(
                    external_traffic_chain,
                    format!("fib saddr type local goto {cluster_policy_chain}"),
                    "short-circuit local traffic",
                ));
            }
            if has_external_endpoints {
                tx.add(rule(
                    external_traffic_chain,
                    format!("goto {external_policy_chain}"),
                ));
            }
        }

        if uses_fw_chain {
            let mut sources: Vec<String> = Vec::new();
            let mut allow_from_node = false;
            for cidr in &source_ranges {
                sources.push(cidr.trunc().to_string());
                if let Some(node_ip) = self.config.node_ip {
                    allow_from_node |= cidr.contains(&node_ip);
                }
            }
            // A VIP-like LB IP is often a local address: the node's own requests to
            // it come back with the LB IP as source.
            if allow_from_node {
                sources.extend(lb_vips.iter().map(|ip| ip.to_string()));
            }
            tx.add(rule(
                fw_chain,
                format!("{ip} saddr != {{ {} }} drop", sources.join(" , ")),
            ));
        }

        if let Some(timeout) = svc.session_affinity_timeout {
            // The per-endpoint affinity sets.
            for (_, affinity_set) in &endpoint_names {
                // "dynamic" too: some kernels add it and then refuse a re-add without.
                tx.add(Object::Set(Set {
                    key_type: ipv_x_addr(family).to_string(),
                    flags: vec!["dynamic", "timeout"],
                    timeout: Some(timeout),
                    ..Set::named(affinity_set)
                }));
            }
        }

        for (policy_chain, endpoints, used) in [
            (
                cluster_policy_chain,
                &cluster_endpoints,
                uses_cluster_policy_chain,
            ),
            (
                local_policy_chain,
                &local_endpoints,
                uses_local_policy_chain,
            ),
        ] {
            if !used {
                continue;
            }
            if uses_affinity {
                self.write_service_to_endpoint_jumps(tx, svc_name, policy_chain, endpoints);
            } else {
                self.write_service_to_endpoint_dnats(tx, svc, policy_chain, endpoints);
            }
        }

        for (ep, (endpoint_chain, affinity_set)) in cat.all_reachable.iter().zip(&endpoint_names) {
            tx.add(rule(
                endpoint_chain,
                format!("update @{affinity_set} {{ {ip} saddr }}"),
            ));
            tx.add(rule(
                endpoint_chain,
                format!("meta l4proto {protocol} dnat to {ep}"),
            ));
        }
        out
    }

    /// Upstream's `writeServiceToEndpointDNATs`: without session affinity, the even
    /// random choice among the endpoints is one DNAT through an anonymous map, no
    /// endpoint chains.
    fn write_service_to_endpoint_dnats(
        &self,
        tx: &mut Transaction,
        svc: &ServicePortInfo,
        chain: &str,
        endpoints: &[EndpointInfo],
    ) {
        let ip = ip_x(self.config.family);
        let elements: Vec<String> = endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| format!("{i} : {} . {}", ep.ip, ep.port))
            .collect();
        tx.add(rule(
            chain,
            format!(
                "meta l4proto {} dnat {ip} addr . port to numgen random mod {} map {{ {} }}",
                svc.protocol.lower(),
                endpoints.len(),
                elements.join(" , ")
            ),
        ));
    }

    /// Upstream's `writeServiceToEndpointJumps`: with ClientIP affinity, the affinity
    /// lookups first, then the even random choice among the endpoint chains.
    fn write_service_to_endpoint_jumps(
        &self,
        tx: &mut Transaction,
        svc_name: &ServicePortName,
        chain: &str,
        endpoints: &[EndpointInfo],
    ) {
        let ip = ip_x(self.config.family);
        let names: Vec<(String, String)> = endpoints
            .iter()
            .map(|ep| endpoint_chain_and_affinity_set(svc_name, ep))
            .collect();
        for (endpoint_chain, affinity_set) in &names {
            tx.add(rule(
                chain,
                format!("{ip} saddr @{affinity_set} goto {endpoint_chain}"),
            ));
        }
        let elements: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, (endpoint_chain, _))| format!("{i} : goto {endpoint_chain}"))
            .collect();
        tx.add(rule(
            chain,
            format!(
                "numgen random mod {} vmap {{ {} }}",
                endpoints.len(),
                elements.join(" , ")
            ),
        ));
    }
}

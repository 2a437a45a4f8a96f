//! kube-proxy's iptables mode as a decision core (pkg/proxy/iptables/proxier.go
//! `syncProxyRules`): from a [`ProxySnapshot`] to the `iptables-restore --noflush` input
//! of the `filter` and `nat` tables, full or partial. The proxier keeps what upstream's
//! keeps between syncs (whether the next sync must be full, large cluster mode) but does
//! no I/O: the nat table's current chains come in, the restore text goes out, and
//! [`super::sync::sync_once`] runs it with the jump rules from the built-in chains.
//!
//! Dispatch, as upstream's: PREROUTING and OUTPUT jump to `REKUBE-SERVICES`, one rule per
//! ClusterIP, ExternalIP and LoadBalancer IP port, then `REKUBE-NODEPORTS` for local
//! addresses; a service chain `REKUBE-SVC-<hash>` picks an endpoint chain
//! `REKUBE-SEP-<hash>` with `-m statistic --mode random --probability 1/n` rules (`-m
//! recent` first for ClientIP affinity), and the endpoint chain DNATs. Ports without
//! endpoints are REJECTed (or DROPped, for a Local policy without local endpoints) in the
//! filter table's `REKUBE-SERVICES`/`REKUBE-EXTERNAL-SERVICES`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::interface::Table;
use super::names::*;
use crate::proxy::nftables::{LocalDetector, NodePortAddresses, ProxierConfig};
use crate::proxy::topology::categorize_endpoints;
use crate::proxy::types::{EndpointInfo, IpFamily, NamespacedName, ProxySnapshot, ServicePortInfo};

/// Upstream's `largeClusterEndpointsThreshold`: above this many endpoints, the endpoint
/// rules carry no comments.
pub const LARGE_CLUSTER_ENDPOINTS_THRESHOLD: usize = 1000;

/// What upstream decides from the host at start and rekube sets by configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesOptions {
    /// NodePorts on 127.0.0.1 (`--iptables-localhost-nodeports`, with route_localnet).
    /// rekube: off (it does not set route_localnet).
    pub localhost_node_ports: bool,
    /// Upstream's nfacct counters exist (`-m nfacct` matches). rekube: off.
    pub nfacct: bool,
    /// `nf_conntrack_tcp_be_liberal` is set: no DROP of INVALID forwarded packets.
    pub conntrack_tcp_liberal: bool,
    /// iptables supports `MASQUERADE --random-fully` (every iptables since 1.6.2).
    pub random_fully: bool,
    /// In large cluster mode, how often a sync lists the nat table (`iptables-save`, seconds
    /// on a big host) to delete stale chains: upstream's `syncPeriod` (default 30 s).
    pub stale_chain_cleanup_period: Duration,
}

impl Default for IptablesOptions {
    fn default() -> Self {
        IptablesOptions {
            localhost_node_ports: false,
            nfacct: false,
            conntrack_tcp_liberal: false,
            random_fully: true,
            stale_chain_cleanup_period: Duration::from_secs(30),
        }
    }
}

/// One jump rule from a built-in chain into rekube's (upstream's `iptablesJumpChain`):
/// ensured at each full sync with `-C` then `-I`, deleted by cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpChain {
    pub table: Table,
    pub dst: &'static str,
    pub src: &'static str,
    pub comment: &'static str,
    pub extra: &'static [&'static str],
}

impl JumpChain {
    /// The rule's argv words (as `iptables -I <src>` takes them).
    pub fn args(&self) -> Vec<&'static str> {
        let mut args = self.extra.to_vec();
        if !self.comment.is_empty() {
            args.extend(["-m", "comment", "--comment", self.comment]);
        }
        args.extend(["-j", self.dst]);
        args
    }
}

const CT_NEW: &[&str] = &["-m", "conntrack", "--ctstate", "NEW"];

/// Upstream's `iptablesJumpChains`, into rekube's chains, with rekube's comments.
pub const JUMP_CHAINS: [JumpChain; 12] = [
    jump(
        Table::Filter,
        EXTERNAL_SERVICES_CHAIN,
        "INPUT",
        "rekube externally-visible service portals",
        CT_NEW,
    ),
    jump(
        Table::Filter,
        EXTERNAL_SERVICES_CHAIN,
        "FORWARD",
        "rekube externally-visible service portals",
        CT_NEW,
    ),
    jump(
        Table::Filter,
        NODE_PORTS_CHAIN,
        "INPUT",
        "rekube health check service ports",
        &[],
    ),
    jump(
        Table::Filter,
        SERVICES_CHAIN,
        "FORWARD",
        "rekube service portals",
        CT_NEW,
    ),
    jump(
        Table::Filter,
        SERVICES_CHAIN,
        "OUTPUT",
        "rekube service portals",
        CT_NEW,
    ),
    jump(
        Table::Filter,
        FORWARD_CHAIN,
        "FORWARD",
        "rekube forwarding rules",
        &[],
    ),
    jump(
        Table::Filter,
        PROXY_FIREWALL_CHAIN,
        "INPUT",
        "rekube load balancer firewall",
        CT_NEW,
    ),
    jump(
        Table::Filter,
        PROXY_FIREWALL_CHAIN,
        "OUTPUT",
        "rekube load balancer firewall",
        CT_NEW,
    ),
    jump(
        Table::Filter,
        PROXY_FIREWALL_CHAIN,
        "FORWARD",
        "rekube load balancer firewall",
        CT_NEW,
    ),
    jump(
        Table::Nat,
        SERVICES_CHAIN,
        "OUTPUT",
        "rekube service portals",
        &[],
    ),
    jump(
        Table::Nat,
        SERVICES_CHAIN,
        "PREROUTING",
        "rekube service portals",
        &[],
    ),
    jump(
        Table::Nat,
        POSTROUTING_CHAIN,
        "POSTROUTING",
        "rekube postrouting rules",
        &[],
    ),
];

/// Upstream's `iptablesKubeletJumpChains`: the localnet firewall, only with localhost
/// NodePorts.
pub const LOCALNET_JUMP_CHAINS: [JumpChain; 2] = [
    jump(Table::Filter, LOCALNET_FIREWALL_CHAIN, "INPUT", "", &[]),
    jump(Table::Filter, LOCALNET_FIREWALL_CHAIN, "OUTPUT", "", &[]),
];

const fn jump(
    table: Table,
    dst: &'static str,
    src: &'static str,
    comment: &'static str,
    extra: &'static [&'static str],
) -> JumpChain {
    JumpChain {
        table,
        dst,
        src,
        comment,
        extra,
    }
}

/// Counts upstream publishes as `sync_proxy_rules_no_local_endpoints_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoLocalEndpoints {
    pub internal: usize,
    pub external: usize,
}

/// One sync's restore input and what it found.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// `*filter ... COMMIT\n*nat ... COMMIT\n`, for `iptables-restore --noflush`.
    pub data: String,
    pub full_sync: bool,
    /// Stale service chains deleted by this restore.
    pub deleted_chains: usize,
    pub no_local_endpoints: NoLocalEndpoints,
}

/// The iptables proxier's state between syncs.
#[derive(Debug)]
pub struct IptablesProxier {
    config: ProxierConfig,
    options: IptablesOptions,
    node_labels: BTreeMap<String, String>,
    need_full_sync: bool,
    large_cluster_mode: bool,
    masquerade_mark: String,
    /// When a sync last listed the nat table for stale chains (upstream's
    /// `lastIPTablesCleanup`).
    last_iptables_cleanup: Option<Instant>,
}

/// The endpoints of the family's service ports (upstream's `totalEndpoints`, which decides
/// large cluster mode).
fn total_endpoints(snapshot: &ProxySnapshot, family: IpFamily) -> usize {
    snapshot
        .service_ports
        .iter()
        .filter(|(_, svc)| family.matches(&svc.cluster_ip))
        .map(|(name, _)| snapshot.endpoints.get(name).map_or(0, Vec::len))
        .sum()
}

/// Upstream's `computeProbability`: `%0.10f` of 1/n.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// A comment argument as upstream writes it into the restore text: quoted when it has a
/// space.
fn quoted(comment: &str) -> String {
    format!("\"{comment}\"")
}

impl IptablesProxier {
    pub fn new(config: ProxierConfig, options: IptablesOptions) -> Self {
        let masquerade_mark = format!("{:#x}", config.masquerade_mark);
        IptablesProxier {
            config,
            options,
            node_labels: BTreeMap::new(),
            need_full_sync: true,
            large_cluster_mode: false,
            masquerade_mark,
            last_iptables_cleanup: None,
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

    pub fn need_full_sync(&self) -> bool {
        self.need_full_sync
    }

    /// Whether this sync lists the nat table's chains to delete the stale ones: always,
    /// except in large cluster mode (over 1 000 endpoints), where only when the last
    /// listing is older than the cleanup period (upstream: stale chains are referenced by
    /// nothing, and `iptables-save` can take seconds).
    pub fn wants_nat_chains(&self, snapshot: &ProxySnapshot, now: Instant) -> bool {
        let large =
            total_endpoints(snapshot, self.config.family) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;
        !large
            || self.last_iptables_cleanup.is_none_or(|t| {
                now.saturating_duration_since(t) > self.options.stale_chain_cleanup_period
            })
    }

    /// The nat table was listed for stale chains at `now`.
    pub fn nat_chains_listed(&mut self, now: Instant) {
        self.last_iptables_cleanup = Some(now);
    }

    pub fn request_full_sync(&mut self) {
        self.need_full_sync = true;
    }

    pub fn sync_succeeded(&mut self) {
        self.need_full_sync = false;
    }

    /// The restore failed: the changes it carried are lost, so the next sync is full.
    pub fn sync_failed(&mut self) {
        self.need_full_sync = true;
    }

    /// The jump rules a full sync ensures (upstream: `iptablesJumpChains` and, always,
    /// the kubelet's; rekube's localnet firewall only with localhost NodePorts).
    pub fn jump_chains(&self) -> Vec<JumpChain> {
        let mut jumps = JUMP_CHAINS.to_vec();
        if self.options.localhost_node_ports && self.config.family == IpFamily::V4 {
            jumps.extend(LOCALNET_JUMP_CHAINS);
        }
        jumps
    }

    fn local_detector_if_local(&self) -> Option<String> {
        match &self.config.local_detector {
            LocalDetector::None => None,
            LocalDetector::ByCidr(cidr) => Some(format!("-s {cidr}")),
        }
    }

    fn local_detector_if_not_local(&self) -> Option<String> {
        match &self.config.local_detector {
            LocalDetector::None => None,
            LocalDetector::ByCidr(cidr) => Some(format!("! -s {cidr}")),
        }
    }

    /// `-m comment --comment <svc>` unless in large cluster mode (upstream's
    /// `appendServiceCommentLocked`).
    fn service_comment(&self, comment: &str) -> String {
        if self.large_cluster_mode {
            String::new()
        } else {
            format!(" -m comment --comment {comment}")
        }
    }

    /// Upstream's `syncProxyRules` without its I/O. `updated` names the Services changed
    /// since the last successful sync (a partial sync writes only their chains);
    /// `existing_nat_chains` is the nat table's chains (`iptables-save -t nat`), or None
    /// when they could not be listed (then no stale chain is deleted).
    pub fn sync_proxy_rules(
        &mut self,
        snapshot: &ProxySnapshot,
        updated: &BTreeSet<NamespacedName>,
        existing_nat_chains: Option<&[String]>,
    ) -> RestorePlan {
        let family = self.config.family;
        let is_ipv6 = family == IpFamily::V6;
        let do_full_sync = self.need_full_sync;
        let mark = self.masquerade_mark.clone();

        let mut filter_chains: Vec<String> = Vec::new();
        let mut filter_rules: Vec<String> = Vec::new();
        let mut nat_chains: Vec<String> = Vec::new();
        let mut nat_rules: Vec<String> = Vec::new();
        let chain_line = |c: &str| format!(":{c} - [0:0]");

        for c in [
            SERVICES_CHAIN,
            EXTERNAL_SERVICES_CHAIN,
            FORWARD_CHAIN,
            NODE_PORTS_CHAIN,
            PROXY_FIREWALL_CHAIN,
        ] {
            filter_chains.push(chain_line(c));
        }
        for c in [
            SERVICES_CHAIN,
            NODE_PORTS_CHAIN,
            POSTROUTING_CHAIN,
            MARK_MASQ_CHAIN,
        ] {
            nat_chains.push(chain_line(c));
        }

        nat_rules.push(format!(
            "-A {POSTROUTING_CHAIN} -m mark ! --mark {mark}/{mark} -j RETURN"
        ));
        // Clear the mark so a packet traversing the stack again is not masqueraded twice.
        nat_rules.push(format!("-A {POSTROUTING_CHAIN} -j MARK --xor-mark {mark}"));
        nat_rules.push(format!(
            "-A {POSTROUTING_CHAIN} -m comment --comment \"rekube service traffic requiring SNAT\" -j MASQUERADE{}",
            if self.options.random_fully {
                " --random-fully"
            } else {
                ""
            }
        ));
        nat_rules.push(format!("-A {MARK_MASQ_CHAIN} -j MARK --or-mark {mark}"));

        if !is_ipv6 && self.options.localhost_node_ports {
            // route_localnet opens a hole (https://issue.k8s.io/90259) this closes.
            filter_chains.push(chain_line(LOCALNET_FIREWALL_CHAIN));
            filter_rules.push(format!(
                "-A {LOCALNET_FIREWALL_CHAIN} -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
            ));
        }

        let mut active_nat_chains: BTreeSet<String> = BTreeSet::new();

        let services: Vec<_> = snapshot
            .service_ports
            .iter()
            .filter(|(_, svc)| family.matches(&svc.cluster_ip))
            .collect();
        let no_endpoints: Vec<EndpointInfo> = Vec::new();
        self.large_cluster_mode =
            total_endpoints(snapshot, family) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;

        let mut no_local = NoLocalEndpoints::default();

        for (svc_name, svc) in services {
            let protocol = svc.protocol.lower();
            let name_string = svc_name.to_string();
            let cluster_policy_chain = service_port_policy_cluster_chain(&name_string, protocol);
            let local_policy_chain = service_port_policy_local_chain(&name_string, protocol);
            let external_traffic_chain = service_external_chain(&name_string, protocol);
            let fw_chain = service_firewall_chain(&name_string, protocol);

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

            let uses_cluster_policy_chain =
                !cluster_endpoints.is_empty() && svc.uses_cluster_endpoints();
            let uses_local_policy_chain = !local_endpoints.is_empty() && svc.uses_local_endpoints();

            let mut internal_traffic_chain = cluster_policy_chain.as_str();
            let mut has_internal_endpoints = has_endpoints;
            if svc.internal_policy_local() {
                internal_traffic_chain = local_policy_chain.as_str();
                if local_endpoints.is_empty() {
                    has_internal_endpoints = false;
                }
            }
            let mut external_policy_chain = cluster_policy_chain.as_str();
            let mut has_external_endpoints = has_endpoints;
            if svc.external_policy_local() {
                external_policy_chain = local_policy_chain.as_str();
                if local_endpoints.is_empty() {
                    has_external_endpoints = false;
                }
            }
            // On hasEndpoints: the short-circuit rules for local traffic are needed even
            // without endpoints for external traffic.
            let uses_external_traffic_chain = has_endpoints && svc.externally_accessible();

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
            let external_ips: Vec<&IpAddr> = svc
                .external_ips
                .iter()
                .filter(|ip| family.matches(ip))
                .collect();
            let uses_fw_chain = has_endpoints && !lb_vips.is_empty() && !source_ranges.is_empty();
            let load_balancer_traffic_chain = if uses_fw_chain {
                fw_chain.as_str()
            } else {
                external_traffic_chain.as_str()
            };

            let (mut internal_filter_target, mut internal_filter_comment) = ("", String::new());
            let (mut external_filter_target, mut external_filter_comment) = ("", String::new());
            if !has_endpoints {
                internal_filter_target = "REJECT";
                internal_filter_comment = quoted(&format!("{name_string} has no endpoints"));
                external_filter_target = "REJECT";
                external_filter_comment = internal_filter_comment.clone();
            } else {
                if !has_internal_endpoints {
                    internal_filter_target = "DROP";
                    internal_filter_comment =
                        quoted(&format!("{name_string} has no local endpoints"));
                    no_local.internal += 1;
                }
                if !has_external_endpoints {
                    external_filter_target = "DROP";
                    external_filter_comment =
                        quoted(&format!("{name_string} has no local endpoints"));
                    no_local.external += 1;
                }
            }

            let port = svc.port;
            let cluster_ip = svc.cluster_ip;
            let proto = format!("-m {protocol} -p {protocol}");

            // Capture the clusterIP.
            if has_internal_endpoints {
                nat_rules.push(format!(
                    "-A {SERVICES_CHAIN} -m comment --comment \"{name_string} cluster IP\" {proto} -d {cluster_ip} --dport {port} -j {internal_traffic_chain}"
                ));
            } else {
                filter_rules.push(format!(
                    "-A {SERVICES_CHAIN} -m comment --comment {internal_filter_comment} {proto} -d {cluster_ip} --dport {port} -j {internal_filter_target}"
                ));
            }

            // Capture externalIPs.
            for external_ip in &external_ips {
                if has_endpoints {
                    nat_rules.push(format!(
                        "-A {SERVICES_CHAIN} -m comment --comment \"{name_string} external IP\" {proto} -d {external_ip} --dport {port} -j {external_traffic_chain}"
                    ));
                }
                if !has_external_endpoints {
                    filter_rules.push(format!(
                        "-A {EXTERNAL_SERVICES_CHAIN} -m comment --comment {external_filter_comment} {proto} -d {external_ip} --dport {port} -j {external_filter_target}"
                    ));
                }
            }

            // Capture load-balancer ingress.
            for lb_ip in &lb_vips {
                if has_endpoints {
                    nat_rules.push(format!(
                        "-A {SERVICES_CHAIN} -m comment --comment \"{name_string} loadbalancer IP\" {proto} -d {lb_ip} --dport {port} -j {load_balancer_traffic_chain}"
                    ));
                }
                if uses_fw_chain {
                    filter_rules.push(format!(
                        "-A {PROXY_FIREWALL_CHAIN} -m comment --comment \"{name_string} traffic not accepted by {fw_chain}\" {proto} -d {lb_ip} --dport {port} -j DROP"
                    ));
                }
            }
            if !has_external_endpoints {
                for lb_ip in &lb_vips {
                    filter_rules.push(format!(
                        "-A {EXTERNAL_SERVICES_CHAIN} -m comment --comment {external_filter_comment} {proto} -d {lb_ip} --dport {port} -j {external_filter_target}"
                    ));
                }
            }

            // Capture nodeports.
            if svc.node_port != 0 {
                let node_port = svc.node_port;
                if has_endpoints {
                    // NodePorts are not subject to loadBalancerSourceRanges (upstream).
                    if self.options.localhost_node_ports && !is_ipv6 && self.options.nfacct {
                        nat_rules.push(format!(
                            "-A {NODE_PORTS_CHAIN} -m comment --comment {name_string} {proto} -d 127.0.0.0/8 --dport {node_port} -m nfacct --nfacct-name localhost_nps_accepted_pkts -j {external_traffic_chain}"
                        ));
                    }
                    nat_rules.push(format!(
                        "-A {NODE_PORTS_CHAIN} -m comment --comment {name_string} {proto} --dport {node_port} -j {external_traffic_chain}"
                    ));
                }
                if !has_external_endpoints {
                    filter_rules.push(format!(
                        "-A {EXTERNAL_SERVICES_CHAIN} -m comment --comment {external_filter_comment} -m addrtype --dst-type LOCAL {proto} --dport {node_port} -j {external_filter_target}"
                    ));
                }
            }

            // Capture healthCheckNodePorts (accepted whether or not there are local
            // endpoints).
            if svc.health_check_node_port != 0 {
                filter_rules.push(format!(
                    "-A {NODE_PORTS_CHAIN} -m comment --comment \"{name_string} health check node port\" -m tcp -p tcp --dport {} -j ACCEPT",
                    svc.health_check_node_port
                ));
            }

            // A partial sync writes the service's own chains only for the Services that
            // changed. Upstream computes the others' too and throws them away (for its
            // rule-count metrics); rekube computes them only to know which chains are
            // active when it lists the table for stale ones.
            let write = do_full_sync || updated.contains(&svc_name.service);
            if !write && existing_nat_chains.is_none() {
                continue;
            }
            let mut svc_chains: Vec<String> = Vec::new();
            let mut svc_rules: Vec<String> = Vec::new();

            if has_internal_endpoints {
                let args = format!(
                    "-m comment --comment \"{name_string} cluster IP\" {proto} -d {cluster_ip} --dport {port}"
                );
                if self.config.masquerade_all {
                    svc_rules.push(format!(
                        "-A {internal_traffic_chain} {args} -j {MARK_MASQ_CHAIN}"
                    ));
                } else if let Some(not_local) = self.local_detector_if_not_local() {
                    // Off-cluster traffic to a ClusterIP (a static route to the service
                    // range via a node) may leave the node again: masquerade it.
                    svc_rules.push(format!(
                        "-A {internal_traffic_chain} {args} {not_local} -j {MARK_MASQ_CHAIN}"
                    ));
                }
            }

            if uses_external_traffic_chain {
                svc_chains.push(chain_line(&external_traffic_chain));
                active_nat_chains.insert(external_traffic_chain.clone());
                if !svc.external_policy_local() {
                    // Endpoints may be on other nodes: masquerade.
                    svc_rules.push(format!(
                        "-A {external_traffic_chain} -m comment --comment \"masquerade traffic for {name_string} external destinations\" -j {MARK_MASQ_CHAIN}"
                    ));
                } else {
                    if let Some(local) = self.local_detector_if_local() {
                        // Pod traffic to an external destination behaves as if it went
                        // out to the load balancer and came back: any endpoint.
                        svc_rules.push(format!(
                            "-A {external_traffic_chain} -m comment --comment \"pod traffic for {name_string} external destinations\" {local} -j {cluster_policy_chain}"
                        ));
                    }
                    // The node's own traffic has a local source: masquerade it and send it
                    // to any endpoint.
                    svc_rules.push(format!(
                        "-A {external_traffic_chain} -m comment --comment \"masquerade LOCAL traffic for {name_string} external destinations\" -m addrtype --src-type LOCAL -j {MARK_MASQ_CHAIN}"
                    ));
                    svc_rules.push(format!(
                        "-A {external_traffic_chain} -m comment --comment \"route LOCAL traffic for {name_string} external destinations\" -m addrtype --src-type LOCAL -j {cluster_policy_chain}"
                    ));
                }
                if has_external_endpoints {
                    svc_rules.push(format!(
                        "-A {external_traffic_chain} -j {external_policy_chain}"
                    ));
                }
            }

            if uses_fw_chain {
                svc_chains.push(chain_line(&fw_chain));
                active_nat_chains.insert(fw_chain.clone());
                let args =
                    format!("-A {fw_chain} -m comment --comment \"{name_string} loadbalancer IP\"");
                let mut allow_from_node = false;
                for cidr in &source_ranges {
                    svc_rules.push(format!("{args} -s {cidr} -j {external_traffic_chain}"));
                    if let Some(node_ip) = self.config.node_ip {
                        allow_from_node |= cidr.contains(&node_ip);
                    }
                }
                // A VIP-like LB IP is often a local address: the node's own requests to
                // it come back with the LB IP as source.
                if allow_from_node {
                    for lb_ip in &lb_vips {
                        svc_rules.push(format!("{args} -s {lb_ip} -j {external_traffic_chain}"));
                    }
                }
                // What reaches the end was not DNATed: REKUBE-PROXY-FIREWALL drops it.
                svc_rules.push(format!(
                    "-A {fw_chain} -m comment --comment \"other traffic to {name_string} will be dropped by {PROXY_FIREWALL_CHAIN}\""
                ));
            }

            if uses_cluster_policy_chain {
                svc_chains.push(chain_line(&cluster_policy_chain));
                active_nat_chains.insert(cluster_policy_chain.clone());
                self.write_service_to_endpoint_rules(
                    &mut svc_rules,
                    &name_string,
                    svc,
                    &cluster_policy_chain,
                    &cluster_endpoints,
                );
            }
            if uses_local_policy_chain {
                svc_chains.push(chain_line(&local_policy_chain));
                active_nat_chains.insert(local_policy_chain.clone());
                self.write_service_to_endpoint_rules(
                    &mut svc_rules,
                    &name_string,
                    svc,
                    &local_policy_chain,
                    &local_endpoints,
                );
            }

            for ep in &cat.all_reachable {
                let endpoint_chain =
                    service_port_endpoint_chain(&name_string, protocol, &ep.to_string());
                svc_chains.push(chain_line(&endpoint_chain));
                active_nat_chains.insert(endpoint_chain.clone());
                let args = format!("-A {endpoint_chain}{}", self.service_comment(&name_string));
                // Hairpin: an endpoint reaching itself through the service.
                svc_rules.push(format!("{args} -s {} -j {MARK_MASQ_CHAIN}", ep.ip));
                let affinity = if svc.session_affinity_timeout.is_some() {
                    format!(" -m recent --name {endpoint_chain} --set")
                } else {
                    String::new()
                };
                svc_rules.push(format!(
                    "{args}{affinity} {proto} -j DNAT --to-destination {ep}"
                ));
            }

            if write {
                nat_chains.extend(svc_chains);
                nat_rules.extend(svc_rules);
            }
        }

        // Service chains no longer used: a chain line flushes, then -X deletes.
        let mut deleted_chains = 0;
        if let Some(existing) = existing_nat_chains {
            for chain in existing {
                if is_service_chain_name(chain) && !active_nat_chains.contains(chain) {
                    nat_chains.push(chain_line(chain));
                    nat_rules.push(format!("-X {chain}"));
                    deleted_chains += 1;
                }
            }
        }

        // Finally the NodePorts, after every other rule of the services chain.
        let node_ports_comment =
            "\"rekube service nodeports; NOTE: this must be the last rule in this chain\"";
        match &self.config.node_port_addresses {
            NodePortAddresses::All => {
                let mut destinations = "-m addrtype --dst-type LOCAL".to_string();
                if is_ipv6 {
                    destinations.push_str(" ! -d ::1/128");
                } else if !self.options.localhost_node_ports {
                    destinations.push_str(" ! -d 127.0.0.0/8");
                }
                nat_rules.push(format!(
                    "-A {SERVICES_CHAIN} -m comment --comment {node_ports_comment} {destinations} -j {NODE_PORTS_CHAIN}"
                ));
            }
            NodePortAddresses::Ips(ips) => {
                for ip in ips.iter().filter(|ip| family.matches(ip)) {
                    if ip.is_loopback() && (is_ipv6 || !self.options.localhost_node_ports) {
                        tracing::warn!(address = %ip, "--nodeport-addresses includes localhost, which this proxier does not serve NodePorts on");
                        continue;
                    }
                    nat_rules.push(format!(
                        "-A {SERVICES_CHAIN} -m comment --comment {node_ports_comment} -d {ip} -j {NODE_PORTS_CHAIN}"
                    ));
                }
            }
        }

        // Drop INVALID forwarded packets (they would reset connections) unless conntrack
        // is liberal.
        if !self.options.conntrack_tcp_liberal {
            let nfacct = if self.options.nfacct {
                " -m nfacct --nfacct-name ct_state_invalid_dropped_pkts"
            } else {
                ""
            };
            filter_rules.push(format!(
                "-A {FORWARD_CHAIN} -m conntrack --ctstate INVALID{nfacct} -j DROP"
            ));
        }
        // Marked traffic is forwarded even when FORWARD's policy is not ACCEPT.
        filter_rules.push(format!(
            "-A {FORWARD_CHAIN} -m comment --comment \"rekube forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
        ));
        filter_rules.push(format!(
            "-A {FORWARD_CHAIN} -m comment --comment \"rekube forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        ));

        let mut data = String::from("*filter\n");
        for l in filter_chains.iter().chain(&filter_rules) {
            data.push_str(l);
            data.push('\n');
        }
        data.push_str("COMMIT\n*nat\n");
        for l in nat_chains.iter().chain(&nat_rules) {
            data.push_str(l);
            data.push('\n');
        }
        data.push_str("COMMIT\n");
        RestorePlan {
            data,
            full_sync: do_full_sync,
            deleted_chains,
            no_local_endpoints: no_local,
        }
    }

    /// Upstream's `writeServiceToEndpointRules`: affinity lookups first, then one
    /// probabilistic rule per endpoint (1/n, 1/(n-1), ..., the last always matching).
    fn write_service_to_endpoint_rules(
        &self,
        rules: &mut Vec<String>,
        name_string: &str,
        svc: &ServicePortInfo,
        chain: &str,
        endpoints: &[EndpointInfo],
    ) {
        let protocol = svc.protocol.lower();
        let endpoint_chains: Vec<String> = endpoints
            .iter()
            .map(|ep| service_port_endpoint_chain(name_string, protocol, &ep.to_string()))
            .collect();
        if let Some(timeout) = svc.session_affinity_timeout {
            for (ep, ep_chain) in endpoints.iter().zip(&endpoint_chains) {
                let comment = self.service_comment(&quoted(&format!("{name_string} -> {ep}")));
                rules.push(format!(
                    "-A {chain}{comment} -m recent --name {ep_chain} --rcheck --seconds {timeout} --reap -j {ep_chain}"
                ));
            }
        }
        let n = endpoints.len();
        for (i, (ep, ep_chain)) in endpoints.iter().zip(&endpoint_chains).enumerate() {
            let comment = self.service_comment(&quoted(&format!("{name_string} -> {ep}")));
            let statistic = if i < n - 1 {
                format!(
                    " -m statistic --mode random --probability {}",
                    probability(n - i)
                )
            } else {
                String::new()
            };
            rules.push(format!("-A {chain}{comment}{statistic} -j {ep_chain}"));
        }
    }
}

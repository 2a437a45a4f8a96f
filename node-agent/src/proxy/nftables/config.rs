//! The nftables proxier's configuration: kube-proxy's flags that shape the rules
//! (`--masquerade-all`, the masquerade bit, `--cluster-cidr` as the local traffic
//! detector, `--nodeport-addresses`, the service CIDRs) and the node it runs on.

use std::net::IpAddr;

use ipnet::IpNet;

use super::transaction::family_keyword;
use crate::proxy::types::IpFamily;

/// rekube's table: its own name, so the agent never touches kube-proxy's `kube-proxy`.
pub const REKUBE_PROXY_TABLE: &str = "rekube-proxy";

/// How the proxier tells pod traffic from the rest (upstream's `LocalTrafficDetector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDetector {
    /// Nothing known: traffic to a ClusterIP is not masqueraded, no short-circuit rules.
    None,
    /// `--cluster-cidr`: sources in it are pods.
    ByCidr(IpNet),
}

impl LocalDetector {
    /// The match for pod sources (upstream's `IfLocalNFT`), if the detector knows them.
    pub fn if_local(&self, family: IpFamily) -> Option<String> {
        match self {
            LocalDetector::None => None,
            LocalDetector::ByCidr(cidr) => Some(format!("{} saddr {cidr}", family_keyword(family))),
        }
    }

    /// The match for non-pod sources (upstream's `IfNotLocalNFT`).
    pub fn if_not_local(&self, family: IpFamily) -> Option<String> {
        match self {
            LocalDetector::None => None,
            LocalDetector::ByCidr(cidr) => {
                Some(format!("{} saddr != {cidr}", family_keyword(family)))
            }
        }
    }
}

/// Where NodePorts answer (`--nodeport-addresses`, resolved to addresses by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address but loopback.
    All,
    /// These addresses (upstream nftables mode's default is the node's primary IP).
    Ips(Vec<IpAddr>),
}

/// What the proxier is configured with (kube-proxy's flags and the node it runs on).
#[derive(Debug, Clone)]
pub struct ProxierConfig {
    pub family: IpFamily,
    /// The table's name ([`REKUBE_PROXY_TABLE`]).
    pub table: String,
    pub node_name: String,
    /// The node's IP (LoadBalancerSourceRanges containing it allow the LB IPs as source).
    pub node_ip: Option<IpAddr>,
    /// `--masquerade-all`: masquerade everything sent to a ClusterIP.
    pub masquerade_all: bool,
    /// `1 << --iptables-masquerade-bit` (default bit 14: 0x4000).
    pub masquerade_mark: u32,
    pub local_detector: LocalDetector,
    pub node_port_addresses: NodePortAddresses,
    /// The service CIDRs of this family: traffic to unallocated ClusterIPs is dropped.
    pub service_cidrs: Vec<IpNet>,
}

impl ProxierConfig {
    /// rekube's defaults for a node: table `rekube-proxy`, mark 0x4000, no masquerade-all.
    pub fn new(family: IpFamily, node_name: &str) -> Self {
        ProxierConfig {
            family,
            table: REKUBE_PROXY_TABLE.to_string(),
            node_name: node_name.to_string(),
            node_ip: None,
            masquerade_all: false,
            masquerade_mark: 1 << 14,
            local_detector: LocalDetector::None,
            node_port_addresses: NodePortAddresses::All,
            service_cidrs: Vec::new(),
        }
    }
}

//! The proxy's input model, upstream's `ServicePort` and `Endpoint` (pkg/proxy/serviceport.go,
//! endpoint.go): what one service port and one of its endpoints mean to a proxier, already
//! filtered to the proxier's IP family. Built from rekube objects by [`super::convert`];
//! consumed by [`super::topology`] and the mode's `sync_proxy_rules`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The IP family a proxier handles (upstream runs one proxier per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    pub fn matches(self, ip: &IpAddr) -> bool {
        IpFamily::of(ip) == self
    }

    pub fn matches_net(self, net: &IpNet) -> bool {
        self.matches(&net.addr())
    }
}

/// A service port's protocol (core/v1 `Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// core/v1's spelling; absent means TCP, as the API defaults it.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' (and the chain names') spelling.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A namespace and a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl NamespacedName {
    pub fn new(namespace: &str, name: &str) -> Self {
        NamespacedName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Upstream's `ServicePortName`: the key of a service port and of its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    pub service: NamespacedName,
    /// The port's name (empty for a single unnamed port).
    pub port: String,
    pub protocol: Protocol,
}

impl ServicePortName {
    pub fn new(namespace: &str, name: &str, port: &str, protocol: Protocol) -> Self {
        ServicePortName {
            service: NamespacedName::new(namespace, name),
            port: port.to_string(),
            protocol,
        }
    }
}

/// `ns/name:port`, or `ns/name` for an unnamed port (upstream's `ServicePortName.String`).
impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

/// Upstream's `BaseServicePortInfo`: one port of one Service, for one IP family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub cluster_ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// 0 when the port has none.
    pub node_port: u16,
    pub external_ips: Vec<IpAddr>,
    /// status.loadBalancer.ingress IPs, without those in ipMode Proxy.
    pub load_balancer_vips: Vec<IpAddr>,
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// sessionAffinity ClientIP: the timeout in seconds (`StickyMaxAgeSeconds`).
    pub session_affinity_timeout: Option<u32>,
    pub health_check_node_port: u16,
    /// externalTrafficPolicy Local on an externally accessible service.
    pub external_policy_local: bool,
    /// internalTrafficPolicy Local.
    pub internal_policy_local: bool,
}

impl ServicePortInfo {
    /// A ClusterIP port with everything else off, for tests and builders.
    pub fn cluster_ip(cluster_ip: IpAddr, port: u16, protocol: Protocol) -> Self {
        ServicePortInfo {
            cluster_ip,
            port,
            protocol,
            node_port: 0,
            external_ips: Vec::new(),
            load_balancer_vips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            session_affinity_timeout: None,
            health_check_node_port: 0,
            external_policy_local: false,
            internal_policy_local: false,
        }
    }

    /// Reachable by something other than the ClusterIP (NodePort, ExternalIP, LoadBalancer).
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.load_balancer_vips.is_empty() || !self.external_ips.is_empty()
    }

    /// Traffic ever goes to endpoints chosen by "Cluster" policy: internalTrafficPolicy
    /// Cluster, or any external access (even with externalTrafficPolicy Local, the
    /// short-circuit of pod and node traffic goes to the Cluster endpoints).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    /// Traffic ever goes to endpoints chosen by "Local" policy.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }

    pub fn external_policy_local(&self) -> bool {
        self.external_policy_local
    }

    pub fn internal_policy_local(&self) -> bool {
        self.internal_policy_local
    }
}

/// Upstream's `BaseEndpointInfo`: one address and port serving a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub ip: IpAddr,
    pub port: u16,
    /// On this proxier's node.
    pub is_local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub zone_hints: BTreeSet<String>,
    pub node_hints: BTreeSet<String>,
}

impl EndpointInfo {
    /// A ready, serving, not terminating endpoint.
    pub fn ready(ip: IpAddr, port: u16, is_local: bool) -> Self {
        EndpointInfo {
            ip,
            port,
            is_local,
            ready: true,
            serving: true,
            terminating: false,
            zone_hints: BTreeSet::new(),
            node_hints: BTreeSet::new(),
        }
    }
}

/// `ip:port`, `[ip6]:port` (upstream's `Endpoint.String`, Go's `JoinHostPort`).
impl fmt::Display for EndpointInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// What a proxier syncs from: every service port (`ServicePortMap`) and the endpoints of
/// each (`EndpointsMap`, sorted by their string form as upstream's endpoint slice cache
/// sorts them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySnapshot {
    pub service_ports: BTreeMap<ServicePortName, ServicePortInfo>,
    pub endpoints: BTreeMap<ServicePortName, Vec<EndpointInfo>>,
}

impl ProxySnapshot {
    /// The Services whose ports or endpoints differ between two snapshots: what a partial
    /// sync rewrites (upstream's `UpdatedServices` of the service and endpoints change
    /// trackers).
    pub fn updated_services(&self, next: &ProxySnapshot) -> BTreeSet<NamespacedName> {
        let mut updated = BTreeSet::new();
        let keys = self.service_ports.keys().chain(next.service_ports.keys());
        for key in keys
            .chain(self.endpoints.keys())
            .chain(next.endpoints.keys())
        {
            if self.service_ports.get(key) != next.service_ports.get(key)
                || self.endpoints.get(key) != next.endpoints.get(key)
            {
                updated.insert(key.service.clone());
            }
        }
        updated
    }

    /// The health check node port of every Service that has one (upstream's
    /// `ServicePortMap.HealthCheckNodePorts`; the model sets it only for LoadBalancer
    /// Services with externalTrafficPolicy Local).
    pub fn health_check_node_ports(&self) -> BTreeMap<NamespacedName, u16> {
        self.service_ports
            .iter()
            .filter(|(_, info)| info.health_check_node_port != 0)
            .map(|(name, info)| (name.service.clone(), info.health_check_node_port))
            .collect()
    }

    /// The number of ready endpoints on this node per Service, counted by IP (one pod
    /// serving two ports is one endpoint; upstream's `EndpointsMap.LocalReadyEndpoints`).
    /// Terminating endpoints do not count: the health check fails on a node that has only
    /// those, although they may still take traffic.
    pub fn local_ready_endpoints(&self) -> BTreeMap<NamespacedName, usize> {
        let mut ips: BTreeMap<NamespacedName, BTreeSet<IpAddr>> = BTreeMap::new();
        for (name, endpoints) in &self.endpoints {
            for ep in endpoints.iter().filter(|ep| ep.ready && ep.is_local) {
                ips.entry(name.service.clone()).or_default().insert(ep.ip);
            }
        }
        ips.into_iter()
            .map(|(name, ips)| (name, ips.len()))
            .collect()
    }
}

//! Pure: what a Service needs allocated and what it already holds, as upstream's service
//! registry decides on create and update (pkg/registry/core/service/storage/alloc.go:
//! `initIPFamilyFields`, `allocClusterIPs`, `initNodePorts`, `allocHealthCheckNodePort`),
//! and the spec fields to write once the allocations are made. Upstream refuses the
//! request; rekube's controller cannot, so a refusal here is reported on the Service
//! (event and condition) with upstream's field error text.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ServiceSpec;
use serde_json::{Value, json};

use super::ipallocator::{self, IpFamily, IpRange};
use super::portallocator::{self, PortRange};

pub const CLUSTER_IP_NONE: &str = "None";
const SINGLE_STACK: &str = "SingleStack";
const PREFER_DUAL_STACK: &str = "PreferDualStack";
const REQUIRE_DUAL_STACK: &str = "RequireDualStack";

/// The ranges: one Service CIDR per configured family (the first is the default
/// family, as `--service-cluster-ip-range`'s first entry upstream) and the NodePort range.
#[derive(Debug, Clone)]
pub struct Config {
    pub ip_ranges: Vec<IpRange>,
    pub node_ports: PortRange,
}

impl Config {
    pub fn range(&self, family: IpFamily) -> Option<&IpRange> {
        self.ip_ranges.iter().find(|r| r.family() == family)
    }

    fn default_family(&self) -> Option<IpFamily> {
        self.ip_ranges.first().map(|r| r.family())
    }
}

/// Why a Service cannot get what it asks for: upstream's field error, and the event reason
/// rekube reports it under (upstream's repair loops' reasons where they have one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
    /// Whether it may clear by itself (a taken address or port, a full range), so the
    /// Service is tried again later; an out-of-range request never clears.
    pub retry: bool,
}

/// How one cluster IP of a Service is had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSlot {
    /// In the spec (requested by the user, or allocated before): must be reserved.
    Held(IpAddr),
    /// To allocate from the family's range.
    Allocate(IpFamily),
}

/// How the NodePort of one entry of `spec.ports` is had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePortSlot {
    /// No NodePort (ClusterIP type, or allocateLoadBalancerNodePorts false).
    None,
    Held(u16),
    /// The n-th new port: entries with the same `port` number (TCP and UDP of port 53)
    /// share one, as upstream's `initNodePorts`.
    New(usize),
}

/// Everything a Service needs, in spec order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// None: no cluster IP is managed (ExternalName, or headless `clusterIP: None`).
    pub families: Option<Vec<IpFamily>>,
    pub ip_family_policy: Option<String>,
    pub cluster_ips: Vec<IpSlot>,
    pub node_ports: Vec<NodePortSlot>,
    pub new_node_ports: usize,
    /// `spec.healthCheckNodePort` (LoadBalancer with externalTrafficPolicy Local).
    pub health_check_node_port: Option<NodePortSlot>,
}

fn field_list(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_default()
}

/// Whether the Service's type gets NodePorts (upstream `shouldAllocateNodePorts`, for the
/// types `initNodePorts` is called for).
fn node_port_type(spec: &ServiceSpec) -> Option<bool> {
    match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "NodePort" => Some(true),
        "LoadBalancer" => Some(spec.allocate_load_balancer_node_ports.unwrap_or(true)),
        _ => None,
    }
}

/// upstream `apiservice.NeedsHealthCheck`.
pub fn needs_health_check(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec.external_traffic_policy.as_deref() == Some("Local")
}

/// The spec's cluster IPs: `clusterIPs`, or `clusterIP` alone (a client that sets only it).
fn requested_ips(spec: &ServiceSpec) -> Vec<String> {
    match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) if !ip.is_empty() => vec![ip.clone()],
        _ => Vec::new(),
    }
}

/// Whether the Service is headless (`clusterIP: None`): left alone.
pub fn is_headless(spec: &ServiceSpec) -> bool {
    requested_ips(spec).first().map(String::as_str) == Some(CLUSTER_IP_NONE)
}

/// What `spec` needs (upstream's allocateCreate/allocateUpdate decisions), or why it
/// cannot have it.
pub fn plan(spec: &ServiceSpec, config: &Config) -> Result<Plan, Vec<Refusal>> {
    let mut refusals = Vec::new();
    let (families, ip_family_policy, cluster_ips) = match cluster_ip_plan(spec, config) {
        Ok(Some((f, p, s))) => (Some(f), Some(p), s),
        Ok(None) => (None, None, Vec::new()),
        Err(mut r) => {
            refusals.append(&mut r);
            (None, None, Vec::new())
        }
    };
    let (node_ports, new_node_ports) = match node_port_plan(spec, &config.node_ports) {
        Ok(p) => p,
        Err(mut r) => {
            refusals.append(&mut r);
            (Vec::new(), 0)
        }
    };
    let mut health_check_node_port = None;
    if needs_health_check(spec) {
        match spec.health_check_node_port.unwrap_or(0) {
            0 => health_check_node_port = Some(NodePortSlot::New(new_node_ports)),
            p => match config.node_ports.check(p) {
                Ok(p) => health_check_node_port = Some(NodePortSlot::Held(p)),
                Err(e) => refusals.push(Refusal {
                    reason: "PortOutOfRange",
                    message: format!("failed to allocate requested HealthCheck NodePort {p}: {e}"),
                    retry: false,
                }),
            },
        }
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    Ok(Plan {
        families,
        ip_family_policy,
        cluster_ips,
        node_ports,
        new_node_ports,
        health_check_node_port,
    })
}

type IpPlan = (Vec<IpFamily>, String, Vec<IpSlot>);

/// upstream `initIPFamilyFields` + `allocClusterIPs`: the families (inferred from the
/// requested IPs, else the cluster's default, plus the other family for PreferDualStack
/// and RequireDualStack on a dual-stack cluster), and per family the requested IP or an
/// allocation.
fn cluster_ip_plan(spec: &ServiceSpec, config: &Config) -> Result<Option<IpPlan>, Vec<Refusal>> {
    if spec.type_.as_deref() == Some("ExternalName") || is_headless(spec) {
        return Ok(None);
    }
    let invalid = |message: String| Refusal {
        reason: "ClusterIPNotValid",
        message,
        retry: false,
    };
    let policy = spec
        .ip_family_policy
        .clone()
        .unwrap_or_else(|| SINGLE_STACK.to_string());
    let requested = requested_ips(spec);
    let mut errors = Vec::new();
    let mut ips = Vec::new();
    for (i, s) in requested.iter().enumerate() {
        match s.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => errors.push(invalid(format!(
                "spec.clusterIPs[{i}]: Invalid value: {s:?}: must be a valid IP address"
            ))),
        }
    }
    let mut families = Vec::new();
    for (i, f) in spec.ip_families.iter().flatten().enumerate() {
        match IpFamily::parse(f).filter(|f| config.range(*f).is_some()) {
            Some(f) => families.push(f),
            None => errors.push(invalid(format!(
                "spec.ipFamilies[{i}]: Invalid value: {f:?}: not configured on this cluster"
            ))),
        }
    }
    if policy == SINGLE_STACK && requested.len() > 1 {
        errors.push(invalid(format!(
            "spec.ipFamilyPolicy: Invalid value: {policy:?}: must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"
        )));
    }
    for (i, ip) in ips.iter().enumerate() {
        let family = IpFamily::of(ip);
        if i >= families.len() {
            if config.range(family).is_some() {
                families.push(family);
            } else {
                errors.push(invalid(format!(
                    "spec.clusterIPs[{i}]: Invalid value: {}: {family} is not configured on this cluster",
                    field_list(&requested)
                )));
            }
        } else if families[i] != family {
            errors.push(invalid(format!(
                "spec.clusterIPs[{i}]: Invalid value: {ip:?}: expected an {} address",
                families[i]
            )));
        }
    }
    if policy == REQUIRE_DUAL_STACK && config.ip_ranges.len() < 2 {
        errors.push(invalid(format!(
            "spec.ipFamilyPolicy: Invalid value: {policy:?}: this cluster is not configured for dual-stack services"
        )));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if families.is_empty() {
        let Some(default) = config.default_family() else {
            return Ok(None);
        };
        families.push(default);
    }
    if (policy == PREFER_DUAL_STACK || policy == REQUIRE_DUAL_STACK)
        && families.len() == 1
        && config.ip_ranges.len() == 2
    {
        families.push(families[0].other());
    }
    let mut slots = Vec::new();
    for (i, family) in families.iter().enumerate() {
        match ips.get(i) {
            Some(ip) => {
                // Families were checked above: the range exists.
                if let Some(Err(e)) = config.range(*family).map(|r| r.check(ip)) {
                    errors.push(Refusal {
                        reason: "ClusterIPOutOfRange",
                        message: format!(
                            "spec.clusterIPs: Invalid value: {}: failed to allocate IP {ip}: {e}",
                            field_list(&requested)
                        ),
                        retry: false,
                    });
                }
                slots.push(IpSlot::Held(*ip));
            }
            None => slots.push(IpSlot::Allocate(*family)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some((families, policy, slots)))
}

/// upstream `initNodePorts`: per entry of `spec.ports`, its requested NodePort, the one of
/// an earlier entry with the same port number (TCP and UDP share), or a new one.
fn node_port_plan(
    spec: &ServiceSpec,
    range: &PortRange,
) -> Result<(Vec<NodePortSlot>, usize), Vec<Refusal>> {
    let ports = spec.ports.as_deref().unwrap_or_default();
    let Some(should_allocate) = node_port_type(spec) else {
        return Ok((vec![NodePortSlot::None; ports.len()], 0));
    };
    let mut errors = Vec::new();
    let held = |i: usize, np: i32, errors: &mut Vec<Refusal>| match range.check(np) {
        Ok(p) => NodePortSlot::Held(p),
        Err(e) => {
            errors.push(Refusal {
                reason: "PortOutOfRange",
                message: format!("spec.ports[{i}].nodePort: Invalid value: {np}: {e}"),
                retry: false,
            });
            NodePortSlot::None
        }
    };
    let mut by_port: BTreeMap<i32, NodePortSlot> = BTreeMap::new();
    let mut slots = Vec::with_capacity(ports.len());
    let mut new = 0;
    for (i, p) in ports.iter().enumerate() {
        let np = p.node_port.unwrap_or(0);
        if np == 0 && !should_allocate {
            slots.push(NodePortSlot::None);
            continue;
        }
        let slot = match by_port.get(&p.port).copied() {
            None => {
                // findRequestedNodePort: any entry of the same port number with one.
                let requested = ports
                    .iter()
                    .find(|q| q.port == p.port && q.node_port.unwrap_or(0) != 0)
                    .and_then(|q| q.node_port);
                let slot = match requested {
                    Some(r) => held(i, r, &mut errors),
                    None => {
                        new += 1;
                        NodePortSlot::New(new - 1)
                    }
                };
                by_port.insert(p.port, slot);
                slot
            }
            Some(first) if np == 0 => first,
            Some(_) => held(i, np, &mut errors),
        };
        slots.push(slot);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((slots, new))
}

impl Plan {
    /// The cluster IPs the spec holds, which must be reserved.
    pub fn held_ips(&self) -> Vec<IpAddr> {
        self.cluster_ips
            .iter()
            .filter_map(|s| match s {
                IpSlot::Held(ip) => Some(*ip),
                IpSlot::Allocate(_) => None,
            })
            .collect()
    }

    /// The families to allocate a cluster IP from, in order.
    pub fn ips_to_allocate(&self) -> Vec<IpFamily> {
        self.cluster_ips
            .iter()
            .filter_map(|s| match s {
                IpSlot::Allocate(f) => Some(*f),
                IpSlot::Held(_) => None,
            })
            .collect()
    }

    /// The NodePorts the spec holds (health check included), which must be reserved.
    pub fn held_ports(&self) -> BTreeSet<u16> {
        self.node_ports
            .iter()
            .chain(self.health_check_node_port.iter())
            .filter_map(|s| match s {
                NodePortSlot::Held(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    /// How many new NodePorts to allocate (health check included).
    pub fn ports_to_allocate(&self) -> usize {
        self.new_node_ports
            + usize::from(matches!(
                self.health_check_node_port,
                Some(NodePortSlot::New(_))
            ))
    }

    /// The cluster IPs once `new_ips` (one per [`Self::ips_to_allocate`]) are allocated.
    pub fn final_ips(&self, new_ips: &[IpAddr]) -> Vec<IpAddr> {
        let mut new = new_ips.iter();
        self.cluster_ips
            .iter()
            .filter_map(|s| match s {
                IpSlot::Held(ip) => Some(*ip),
                IpSlot::Allocate(_) => new.next().copied(),
            })
            .collect()
    }

    fn port_of(&self, slot: &NodePortSlot, new_ports: &[u16]) -> Option<u16> {
        match slot {
            NodePortSlot::None => None,
            NodePortSlot::Held(p) => Some(*p),
            NodePortSlot::New(i) => new_ports.get(*i).copied(),
        }
    }

    /// Every NodePort the Service holds once `new_ports` are allocated.
    pub fn final_ports(&self, new_ports: &[u16]) -> BTreeSet<u16> {
        self.node_ports
            .iter()
            .chain(self.health_check_node_port.iter())
            .filter_map(|s| self.port_of(s, new_ports))
            .collect()
    }

    /// The JSON merge patch of `spec` that records the allocations (`None` when the spec
    /// already says it all): clusterIP, clusterIPs, ipFamilies, ipFamilyPolicy, the ports
    /// with their nodePorts, healthCheckNodePort.
    pub fn spec_patch(
        &self,
        spec: &ServiceSpec,
        new_ips: &[IpAddr],
        new_ports: &[u16],
    ) -> Option<Value> {
        let mut patch = serde_json::Map::new();
        if let (Some(families), Some(policy)) = (&self.families, &self.ip_family_policy) {
            let ips: Vec<String> = self
                .final_ips(new_ips)
                .iter()
                .map(ToString::to_string)
                .collect();
            let families: Vec<String> = families.iter().map(|f| f.to_string()).collect();
            if spec.cluster_ip.as_deref() != ips.first().map(String::as_str) {
                patch.insert("clusterIP".into(), json!(ips.first()));
            }
            if spec.cluster_ips.as_ref() != Some(&ips) {
                patch.insert("clusterIPs".into(), json!(ips));
            }
            if spec.ip_families.as_ref() != Some(&families) {
                patch.insert("ipFamilies".into(), json!(families));
            }
            if spec.ip_family_policy.as_ref() != Some(policy) {
                patch.insert("ipFamilyPolicy".into(), json!(policy));
            }
        }
        let mut ports = spec.ports.clone().unwrap_or_default();
        let mut ports_changed = false;
        for (p, slot) in ports.iter_mut().zip(&self.node_ports) {
            if let Some(np) = self.port_of(slot, new_ports) {
                let np = Some(i32::from(np));
                if p.node_port != np {
                    p.node_port = np;
                    ports_changed = true;
                }
            }
        }
        if ports_changed {
            patch.insert("ports".into(), json!(ports));
        }
        if let Some(slot) = &self.health_check_node_port
            && let Some(p) = self.port_of(slot, new_ports)
            && spec.health_check_node_port != Some(i32::from(p))
        {
            patch.insert("healthCheckNodePort".into(), json!(p));
        }
        (!patch.is_empty()).then(|| json!({ "spec": patch }))
    }
}

/// When a reservation its Service's spec does not hold may go (upstream repairip.go's
/// orphan handling, with what a controller knows besides): `None` now, else how long to
/// wait. Now when it belongs to a Service known to be gone: another UID has the name
/// (`current_uid`), or the deletion of its UID was seen (`deleted`). Otherwise another
/// replica may be between its create and its spec patch, so it waits until `grace` after
/// its creation (plus a second, to land past it).
pub fn release_after(
    uid: Option<&str>,
    current_uid: Option<&str>,
    deleted: bool,
    age: Option<std::time::Duration>,
    grace: std::time::Duration,
) -> Option<std::time::Duration> {
    let gone = match (uid, current_uid) {
        (Some(u), Some(current)) => u != current,
        (Some(_), None) => deleted,
        (None, _) => false,
    };
    let age = age.unwrap_or_default();
    if gone || age >= grace {
        None
    } else {
        Some(grace - age + std::time::Duration::from_secs(1))
    }
}

/// Every cluster IP and NodePort a spec names, allocated or only requested: dynamic
/// allocation skips them, so a Service that asked for an address before its first sync
/// (or whose reservation is being repaired) does not see it handed to another.
pub fn spec_holds(spec: &ServiceSpec) -> (Vec<IpAddr>, Vec<u16>) {
    let ips = requested_ips(spec)
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.node_port)
        .chain(spec.health_check_node_port)
        .filter_map(|p| u16::try_from(p).ok().filter(|p| *p != 0))
        .collect();
    (ips, ports)
}

/// Whether two networks share an address (one contains the other's network address).
pub fn overlaps(
    a: &crate::nodelifecycle::cidr::IpNet,
    b: &crate::nodelifecycle::cidr::IpNet,
) -> bool {
    a.contains(&b.network().addr()) || b.contains(&a.network().addr())
}

/// A held IP another object reserved first (upstream's `allocIPs` error).
pub fn ip_taken(spec: &ServiceSpec, ip: &IpAddr) -> Refusal {
    Refusal {
        reason: "ClusterIPAlreadyAllocated",
        message: format!(
            "spec.clusterIPs: Invalid value: {}: failed to allocate IP {ip}: {}",
            field_list(&requested_ips(spec)),
            ipallocator::Error::Allocated
        ),
        retry: true,
    }
}

/// A held NodePort another Service reserved first (upstream's `initNodePorts` error).
pub fn port_taken(spec: &ServiceSpec, port: u16) -> Refusal {
    let ports = spec.ports.as_deref().unwrap_or_default();
    let message = match ports
        .iter()
        .position(|p| p.node_port == Some(i32::from(port)))
    {
        Some(i) => format!(
            "spec.ports[{i}].nodePort: Invalid value: {port}: {}",
            portallocator::Error::Allocated
        ),
        None => format!(
            "failed to allocate requested HealthCheck NodePort {port}: {}",
            portallocator::Error::Allocated
        ),
    };
    Refusal {
        reason: "PortAlreadyAllocated",
        message,
        retry: true,
    }
}

/// A range with nothing left (upstream's InternalError texts).
pub fn ip_range_full(family: IpFamily) -> Refusal {
    Refusal {
        reason: "ClusterIPAllocationFailed",
        message: format!(
            "failed to allocate a serviceIP: {} ({family})",
            ipallocator::Error::Full
        ),
        retry: true,
    }
}

pub fn port_range_full() -> Refusal {
    Refusal {
        reason: "PortAllocationFailed",
        message: format!(
            "failed to allocate a nodePort: {}",
            portallocator::Error::Full
        ),
        retry: true,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServicePort;

    use super::*;

    fn config(cidrs: &[&str]) -> Config {
        Config {
            ip_ranges: cidrs
                .iter()
                .map(|c| IpRange::new(c.parse().unwrap()).unwrap())
                .collect(),
            node_ports: "30000-32767".parse().unwrap(),
        }
    }

    fn v4() -> Config {
        config(&["10.0.0.0/16"])
    }

    fn dual() -> Config {
        config(&["10.0.0.0/16", "2000::/108"])
    }

    fn port(port: i32, protocol: &str, node_port: i32) -> ServicePort {
        ServicePort {
            name: Some(format!("p{port}-{}", protocol.to_lowercase())),
            port,
            protocol: Some(protocol.into()),
            node_port: (node_port != 0).then_some(node_port),
            ..Default::default()
        }
    }

    fn svc(type_: &str, ports: Vec<ServicePort>) -> ServiceSpec {
        ServiceSpec {
            type_: Some(type_.into()),
            ports: Some(ports),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// upstream TestCreateInitIPFields (the single- and dual-stack rows that do not
    /// depend on headless special cases): families and what is allocated.
    #[test]
    fn init_ip_family_fields() {
        struct Case {
            name: &'static str,
            config: Config,
            policy: Option<&'static str>,
            families: &'static [&'static str],
            ips: &'static [&'static str],
            want: Result<(&'static [IpFamily], &'static str), &'static str>,
        }
        use IpFamily::{IPv4, IPv6};
        let cases = vec![
            Case {
                name: "single-stack, no policy, no families",
                config: v4(),
                policy: None,
                families: &[],
                ips: &[],
                want: Ok((&[IPv4], SINGLE_STACK)),
            },
            Case {
                name: "single-stack cluster, PreferDualStack stays single",
                config: v4(),
                policy: Some(PREFER_DUAL_STACK),
                families: &[],
                ips: &[],
                want: Ok((&[IPv4], PREFER_DUAL_STACK)),
            },
            Case {
                name: "single-stack cluster, RequireDualStack refused",
                config: v4(),
                policy: Some(REQUIRE_DUAL_STACK),
                families: &[],
                ips: &[],
                want: Err(
                    "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
                ),
            },
            Case {
                name: "single-stack cluster, IPv6 family refused",
                config: v4(),
                policy: None,
                families: &["IPv6"],
                ips: &[],
                want: Err(
                    "spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster",
                ),
            },
            Case {
                name: "single-stack cluster, IPv6 address refused",
                config: v4(),
                policy: None,
                families: &[],
                ips: &["2000::1"],
                want: Err(
                    "spec.clusterIPs[0]: Invalid value: [\"2000::1\"]: IPv6 is not configured on this cluster",
                ),
            },
            Case {
                name: "dual-stack cluster, default SingleStack",
                config: dual(),
                policy: None,
                families: &[],
                ips: &[],
                want: Ok((&[IPv4], SINGLE_STACK)),
            },
            Case {
                name: "dual-stack cluster, PreferDualStack gets both",
                config: dual(),
                policy: Some(PREFER_DUAL_STACK),
                families: &[],
                ips: &[],
                want: Ok((&[IPv4, IPv6], PREFER_DUAL_STACK)),
            },
            Case {
                name: "dual-stack cluster, RequireDualStack IPv6 first",
                config: dual(),
                policy: Some(REQUIRE_DUAL_STACK),
                families: &["IPv6"],
                ips: &[],
                want: Ok((&[IPv6, IPv4], REQUIRE_DUAL_STACK)),
            },
            Case {
                name: "dual-stack cluster, family inferred from the IP",
                config: dual(),
                policy: None,
                families: &[],
                ips: &["2000::1"],
                want: Ok((&[IPv6], SINGLE_STACK)),
            },
            Case {
                name: "SingleStack with two IPs refused",
                config: dual(),
                policy: Some(SINGLE_STACK),
                families: &[],
                ips: &["10.0.0.1", "2000::1"],
                want: Err(
                    "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
                ),
            },
        ];
        for c in cases {
            let spec = ServiceSpec {
                ip_family_policy: c.policy.map(Into::into),
                ip_families: (!c.families.is_empty())
                    .then(|| c.families.iter().map(|s| s.to_string()).collect()),
                cluster_ips: (!c.ips.is_empty())
                    .then(|| c.ips.iter().map(|s| s.to_string()).collect()),
                cluster_ip: c.ips.first().map(|s| s.to_string()),
                ..svc("ClusterIP", vec![port(80, "TCP", 0)])
            };
            let got = plan(&spec, &c.config);
            match c.want {
                Ok((families, policy)) => {
                    let p = got.unwrap_or_else(|e| panic!("{}: {e:?}", c.name));
                    assert_eq!(p.families.as_deref(), Some(families), "{}", c.name);
                    assert_eq!(p.ip_family_policy.as_deref(), Some(policy), "{}", c.name);
                    assert_eq!(
                        p.held_ips().len() + p.ips_to_allocate().len(),
                        families.len(),
                        "{}",
                        c.name
                    );
                }
                Err(msg) => {
                    let e = got.expect_err(c.name);
                    assert_eq!(e[0].message, msg, "{}", c.name);
                }
            }
        }
    }

    /// Headless and ExternalName Services are left alone (upstream allocClusterIPs).
    #[test]
    fn headless_and_external_name_get_no_cluster_ip() {
        let headless = ServiceSpec {
            cluster_ip: Some("None".into()),
            cluster_ips: Some(vec!["None".into()]),
            ..svc("ClusterIP", vec![port(80, "TCP", 0)])
        };
        let p = plan(&headless, &v4()).unwrap();
        assert_eq!(p.families, None);
        assert!(p.ips_to_allocate().is_empty() && p.held_ips().is_empty());
        assert_eq!(p.spec_patch(&headless, &[], &[]), None);
        let external = ServiceSpec {
            external_name: Some("example.com".into()),
            ..svc("ExternalName", vec![])
        };
        assert_eq!(
            plan(&external, &v4())
                .unwrap()
                .spec_patch(&external, &[], &[]),
            None
        );
    }

    /// A requested IP: held if in range; refused with upstream's text if not.
    #[test]
    fn requested_cluster_ip() {
        let mut spec = svc("ClusterIP", vec![port(80, "TCP", 0)]);
        spec.cluster_ip = Some("10.0.5.5".into());
        let p = plan(&spec, &v4()).unwrap();
        assert_eq!(p.held_ips(), vec![ip("10.0.5.5")]);
        assert!(p.ips_to_allocate().is_empty());
        assert_eq!(
            p.spec_patch(&spec, &[], &[]),
            Some(
                json!({"spec": {"clusterIPs": ["10.0.5.5"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}})
            )
        );
        spec.cluster_ip = Some("192.168.0.1".into());
        assert_eq!(
            plan(&spec, &v4()).unwrap_err(),
            vec![Refusal {
                reason: "ClusterIPOutOfRange",
                message: "spec.clusterIPs: Invalid value: [\"192.168.0.1\"]: failed to allocate IP 192.168.0.1: the provided IP (192.168.0.1) is not in the valid range. The range of valid IPs is 10.0.0.0/16".into(),
                retry: false,
            }]
        );
        // The network address is not in the valid range either.
        spec.cluster_ip = Some("10.0.0.0".into());
        assert!(plan(&spec, &v4()).is_err());
        spec.cluster_ip = Some("10.0.0.1".into());
        assert_eq!(
            ip_taken(&spec, &ip("10.0.0.1")).message,
            "spec.clusterIPs: Invalid value: [\"10.0.0.1\"]: failed to allocate IP 10.0.0.1: provided IP is already allocated"
        );
    }

    #[test]
    fn allocated_ips_are_written_once() {
        let spec = svc("ClusterIP", vec![port(80, "TCP", 0)]);
        let p = plan(&spec, &dual()).unwrap();
        assert_eq!(p.ips_to_allocate(), vec![IpFamily::IPv4]);
        let patch = p.spec_patch(&spec, &[ip("10.0.1.2")], &[]).unwrap();
        assert_eq!(
            patch,
            json!({"spec": {"clusterIP": "10.0.1.2", "clusterIPs": ["10.0.1.2"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}})
        );
        // Read back: nothing more to do.
        let done = ServiceSpec {
            cluster_ip: Some("10.0.1.2".into()),
            cluster_ips: Some(vec!["10.0.1.2".into()]),
            ip_families: Some(vec!["IPv4".into()]),
            ip_family_policy: Some("SingleStack".into()),
            ..spec
        };
        let p = plan(&done, &dual()).unwrap();
        assert_eq!(p.held_ips(), vec![ip("10.0.1.2")]);
        assert_eq!(p.spec_patch(&done, &[], &[]), None);
    }

    fn node_ports(spec: &ServiceSpec) -> (Vec<NodePortSlot>, usize) {
        let p = plan(spec, &v4()).unwrap();
        (p.node_ports, p.new_node_ports)
    }

    /// upstream TestServiceRegistryCreateMultiNodePortsService / TestInitNodePorts: the
    /// same port number over two protocols shares one NodePort; requested ones are held.
    #[test]
    fn init_node_ports() {
        use NodePortSlot::{Held, New, None as No};
        let cases: Vec<(&str, ServiceSpec, Vec<NodePortSlot>, usize)> = vec![
            (
                "two ports, two new",
                svc("NodePort", vec![port(53, "TCP", 0), port(54, "TCP", 0)]),
                vec![New(0), New(1)],
                2,
            ),
            (
                "same port TCP and UDP share one",
                svc("NodePort", vec![port(53, "TCP", 0), port(53, "UDP", 0)]),
                vec![New(0), New(0)],
                1,
            ),
            (
                "a requested one is shared with the other protocol",
                svc("NodePort", vec![port(53, "TCP", 0), port(53, "UDP", 30053)]),
                vec![Held(30053), Held(30053)],
                0,
            ),
            (
                "different requested ones for TCP and UDP are both held",
                svc(
                    "NodePort",
                    vec![port(53, "TCP", 30053), port(53, "UDP", 30054)],
                ),
                vec![Held(30053), Held(30054)],
                0,
            ),
            (
                "mixed requested and new",
                svc(
                    "NodePort",
                    vec![port(80, "TCP", 30080), port(443, "TCP", 0)],
                ),
                vec![Held(30080), New(0)],
                1,
            ),
            (
                "ClusterIP type: none",
                svc("ClusterIP", vec![port(80, "TCP", 0)]),
                vec![No],
                0,
            ),
            (
                "LoadBalancer allocates",
                svc("LoadBalancer", vec![port(80, "TCP", 0)]),
                vec![New(0)],
                1,
            ),
            (
                "LoadBalancer without NodePorts keeps only requested ones",
                ServiceSpec {
                    allocate_load_balancer_node_ports: Some(false),
                    ..svc(
                        "LoadBalancer",
                        vec![port(80, "TCP", 0), port(443, "TCP", 30443)],
                    )
                },
                vec![No, Held(30443)],
                0,
            ),
        ];
        for (name, spec, want, new) in cases {
            assert_eq!(node_ports(&spec), (want, new), "{name}");
        }
    }

    #[test]
    fn node_ports_are_written_per_entry() {
        let spec = svc(
            "NodePort",
            vec![port(53, "TCP", 0), port(53, "UDP", 0), port(80, "TCP", 0)],
        );
        let p = plan(&spec, &v4()).unwrap();
        assert_eq!(p.ports_to_allocate(), 2);
        let patch = p
            .spec_patch(&spec, &[ip("10.0.0.9")], &[31000, 31001])
            .unwrap();
        let ports: Vec<i64> = patch["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["nodePort"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, vec![31000, 31000, 31001]);
        assert_eq!(
            p.final_ports(&[31000, 31001]),
            [31000, 31001].into_iter().collect()
        );
    }

    #[test]
    fn requested_node_port_out_of_range_is_refused() {
        let spec = svc("NodePort", vec![port(80, "TCP", 0), port(81, "TCP", 80)]);
        assert_eq!(
            plan(&spec, &v4()).unwrap_err()[0].message,
            "spec.ports[1].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        let spec = svc("NodePort", vec![port(80, "TCP", 30080)]);
        assert_eq!(
            port_taken(&spec, 30080).message,
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
    }

    #[test]
    fn release_after_table() {
        let (s, grace) = (
            std::time::Duration::from_secs,
            std::time::Duration::from_secs(60),
        );
        for (name, uid, current, deleted, age, want) in [
            (
                "another incarnation has the name",
                Some("a"),
                Some("b"),
                false,
                Some(s(1)),
                None,
            ),
            (
                "its deletion was seen",
                Some("a"),
                None,
                true,
                Some(s(1)),
                None,
            ),
            (
                "gone, deletion not seen: grace",
                Some("a"),
                None,
                false,
                Some(s(10)),
                Some(s(51)),
            ),
            (
                "gone, deletion not seen, old",
                Some("a"),
                None,
                false,
                Some(s(61)),
                None,
            ),
            (
                "same Service, not held: grace",
                Some("a"),
                Some("a"),
                false,
                Some(s(0)),
                Some(s(61)),
            ),
            (
                "same Service, not held, old",
                Some("a"),
                Some("a"),
                false,
                Some(s(60)),
                None,
            ),
            (
                "no UID label: grace",
                None,
                Some("a"),
                true,
                Some(s(30)),
                Some(s(31)),
            ),
        ] {
            assert_eq!(
                release_after(uid, current, deleted, age, grace),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn spec_holds_requested_and_allocated_values() {
        let mut spec = svc("NodePort", vec![port(53, "TCP", 30053), port(53, "UDP", 0)]);
        spec.cluster_ips = Some(vec!["10.0.0.7".into(), "2000::7".into()]);
        spec.health_check_node_port = Some(31000);
        assert_eq!(
            spec_holds(&spec),
            (vec![ip("10.0.0.7"), ip("2000::7")], vec![30053, 31000])
        );
        let headless = ServiceSpec {
            cluster_ip: Some("None".into()),
            ..svc("ClusterIP", vec![port(80, "TCP", 0)])
        };
        assert_eq!(spec_holds(&headless), (vec![], vec![]));
    }

    #[test]
    fn overlapping_ranges() {
        let net = |s: &str| s.parse::<crate::nodelifecycle::cidr::IpNet>().unwrap();
        assert!(overlaps(&net("10.96.0.0/12"), &net("10.97.0.0/16")));
        assert!(overlaps(&net("10.97.0.0/16"), &net("10.96.0.0/12")));
        assert!(!overlaps(&net("10.96.0.0/16"), &net("10.97.0.0/16")));
        assert!(!overlaps(&net("10.96.0.0/16"), &net("fd00::/64")));
    }

    /// upstream allocHealthCheckNodePort: LoadBalancer + externalTrafficPolicy Local.
    #[test]
    fn health_check_node_port() {
        let mut spec = svc("LoadBalancer", vec![port(80, "TCP", 0)]);
        spec.external_traffic_policy = Some("Local".into());
        let p = plan(&spec, &v4()).unwrap();
        assert_eq!(p.ports_to_allocate(), 2);
        assert_eq!(p.health_check_node_port, Some(NodePortSlot::New(1)));
        let patch = p
            .spec_patch(&spec, &[ip("10.0.0.3")], &[30001, 30002])
            .unwrap();
        assert_eq!(patch["spec"]["healthCheckNodePort"], json!(30002));
        spec.health_check_node_port = Some(31999);
        let p = plan(&spec, &v4()).unwrap();
        assert_eq!(p.held_ports(), [31999].into_iter().collect());
        spec.health_check_node_port = Some(1);
        assert_eq!(
            plan(&spec, &v4()).unwrap_err()[0].message,
            "failed to allocate requested HealthCheck NodePort 1: provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        spec.external_traffic_policy = Some("Cluster".into());
        assert_eq!(plan(&spec, &v4()).unwrap().health_check_node_port, None);
    }
}

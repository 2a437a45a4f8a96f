//! rekube objects to the proxy's model: upstream's `newBaseServiceInfo` (pkg/proxy/
//! serviceport.go) for each port of a Service, and the endpoints of each service port from
//! core/v1 Endpoints (`addresses` ready, `notReadyAddresses` not) or from discovery/v1
//! EndpointSlices (ready, serving, terminating and hints as the slice says; upstream's
//! endpointslicecache.go). Addresses are parsed as Go's `ParseIPSloppy` does (leading
//! zeros allowed); what does not parse, or is of the other family, is skipped, as upstream
//! skips it with a log line.
//!
//! core/v1 Endpoints cannot say "terminating": the endpoints controller drops a terminating
//! pod from `addresses` (or keeps it there with publishNotReadyAddresses), so from Endpoints
//! every address is `terminating: false` and a not-ready one is `serving: false`. The
//! fallback to serving-terminating endpoints (ProxyTerminatingEndpoints) and topology hints
//! need EndpointSlices: see docs/proxy.md.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use k8s_openapi::api::discovery::v1 as discovery;

use super::types::{
    EndpointInfo, IpFamily, NamespacedName, Protocol, ProxySnapshot, ServicePortInfo,
    ServicePortName,
};

/// sessionAffinityConfig.clientIP.timeoutSeconds's default (3 hours).
pub const DEFAULT_CLIENT_IP_SERVICE_AFFINITY_SECONDS: u32 = 10800;

/// The label naming an EndpointSlice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// An IP as Go's `netutils.ParseIPSloppy`: IPv4 octets may have leading zeros.
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let octets: Vec<&str> = s.split('.').collect();
    if octets.len() != 4
        || octets
            .iter()
            .any(|o| o.is_empty() || o.len() > 3 || !o.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut b = [0u8; 4];
    for (i, o) in octets.iter().enumerate() {
        b[i] = o.parse().ok()?;
    }
    Some(IpAddr::V4(Ipv4Addr::from(b)))
}

/// A CIDR as `netutils.ParseCIDRSloppy`, normalized to its network.
pub fn parse_cidr_sloppy(s: &str) -> Option<IpNet> {
    let (ip, prefix) = s.trim().split_once('/')?;
    let ip = parse_ip_sloppy(ip)?;
    let prefix: u8 = prefix.parse().ok()?;
    IpNet::new(ip, prefix).ok().map(|n| n.trunc())
}

fn service_name(svc: &rekube_crds::Service) -> Option<NamespacedName> {
    Some(NamespacedName::new(
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref()?,
    ))
}

/// The service ports a proxier of `family` handles for one Service (upstream's
/// `serviceToServiceMap`): none for a headless or ExternalName Service, or one without a
/// ClusterIP of the family.
pub fn service_ports(
    svc: &rekube_crds::Service,
    family: IpFamily,
) -> Vec<(ServicePortName, ServicePortInfo)> {
    let (Some(name), Some(spec)) = (service_name(svc), svc.spec.as_ref()) else {
        return Vec::new();
    };
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return Vec::new();
    }
    let cluster_ips: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    let Some(cluster_ip) = cluster_ips
        .iter()
        .filter(|ip| ip.as_str() != "None")
        .filter_map(|ip| parse_ip_sloppy(ip))
        .find(|ip| family.matches(ip))
    else {
        return Vec::new();
    };

    let external_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| parse_ip_sloppy(ip))
        .filter(|ip| family.matches(ip))
        .collect();
    let load_balancer_vips: Vec<IpAddr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|ing| ing.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|ing| ing.ip.as_deref().and_then(parse_ip_sloppy))
        .filter(|ip| family.matches(ip))
        .collect();
    let load_balancer_source_ranges: Vec<IpNet> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .filter_map(|c| parse_cidr_sloppy(c))
        .filter(|c| family.matches_net(c))
        .collect();
    let session_affinity_timeout =
        (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_CLIENT_IP_SERVICE_AFFINITY_SECONDS)
        });
    // apiservice.ExternallyAccessible: NodePort, LoadBalancer, or ClusterIP with externalIPs.
    let externally_accessible = matches!(svc_type, "NodePort" | "LoadBalancer")
        || (svc_type == "ClusterIP"
            && spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()));
    let external_policy_local =
        externally_accessible && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let health_check_node_port = if svc_type == "LoadBalancer" && external_policy_local {
        spec.health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0)
    } else {
        0
    };

    spec.ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let protocol = Protocol::parse(port.protocol.as_deref())?;
            let key = ServicePortName {
                service: name.clone(),
                port: port.name.clone().unwrap_or_default(),
                protocol,
            };
            let info = ServicePortInfo {
                cluster_ip,
                port: u16::try_from(port.port).ok()?,
                protocol,
                node_port: port
                    .node_port
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0),
                external_ips: external_ips.clone(),
                load_balancer_vips: load_balancer_vips.clone(),
                load_balancer_source_ranges: load_balancer_source_ranges.clone(),
                session_affinity_timeout,
                health_check_node_port,
                external_policy_local,
                internal_policy_local,
            };
            Some((key, info))
        })
        .collect()
}

/// Adds an endpoint unless one with the same address and port is there (a ready one
/// replaces a not-ready one).
fn push_endpoint(list: &mut Vec<EndpointInfo>, ep: EndpointInfo) {
    match list.iter_mut().find(|e| e.ip == ep.ip && e.port == ep.port) {
        Some(existing) => {
            if ep.ready && !existing.ready {
                *existing = ep;
            }
        }
        None => list.push(ep),
    }
}

/// Sorts each list by the endpoints' string form, as upstream's endpoint slice cache.
fn sort_endpoints(map: &mut BTreeMap<ServicePortName, Vec<EndpointInfo>>) {
    for list in map.values_mut() {
        list.sort_by_key(|e| e.to_string());
    }
}

/// The endpoints of each port of one core/v1 Endpoints object, for the proxier of
/// `family` on node `node_name`.
pub fn endpoints_from_endpoints(
    eps: &rekube_crds::Endpoints,
    node_name: &str,
    family: IpFamily,
) -> BTreeMap<ServicePortName, Vec<EndpointInfo>> {
    let mut map: BTreeMap<ServicePortName, Vec<EndpointInfo>> = BTreeMap::new();
    let Some(name) = eps.metadata.name.as_deref() else {
        return map;
    };
    let namespace = eps.metadata.namespace.as_deref().unwrap_or("default");
    for subset in eps.subsets.iter().flatten() {
        for port in subset.ports.iter().flatten() {
            let (Some(protocol), Ok(port_number)) = (
                Protocol::parse(port.protocol.as_deref()),
                u16::try_from(port.port),
            ) else {
                continue;
            };
            let key = ServicePortName::new(
                namespace,
                name,
                port.name.as_deref().unwrap_or(""),
                protocol,
            );
            let list = map.entry(key).or_default();
            let ready = subset.addresses.iter().flatten().map(|a| (a, true));
            let not_ready = subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false));
            for (address, ready) in ready.chain(not_ready) {
                let Some(ip) = parse_ip_sloppy(&address.ip).filter(|ip| family.matches(ip)) else {
                    continue;
                };
                push_endpoint(
                    list,
                    EndpointInfo {
                        ip,
                        port: port_number,
                        is_local: address.node_name.as_deref() == Some(node_name),
                        ready,
                        serving: ready,
                        terminating: false,
                        zone_hints: BTreeSet::new(),
                        node_hints: BTreeSet::new(),
                    },
                );
            }
        }
    }
    map.retain(|_, list| !list.is_empty());
    sort_endpoints(&mut map);
    map
}

/// The endpoints of each port of a Service's EndpointSlices (upstream's
/// `endpointSliceCache`): conditions default as upstream reads them (ready absent is
/// ready, serving absent is ready, terminating absent is false).
pub fn endpoints_from_endpoint_slices<'a>(
    slices: impl IntoIterator<Item = &'a discovery::EndpointSlice>,
    node_name: &str,
    family: IpFamily,
) -> BTreeMap<ServicePortName, Vec<EndpointInfo>> {
    let address_type = match family {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    };
    let mut map: BTreeMap<ServicePortName, Vec<EndpointInfo>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != address_type {
            continue;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
        else {
            continue;
        };
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        for port in slice.ports.iter().flatten() {
            let (Some(protocol), Some(Ok(port_number))) = (
                Protocol::parse(port.protocol.as_deref()),
                port.port.map(u16::try_from),
            ) else {
                continue;
            };
            let key = ServicePortName::new(
                namespace,
                service,
                port.name.as_deref().unwrap_or(""),
                protocol,
            );
            let list = map.entry(key).or_default();
            for endpoint in slice.endpoints.iter().flatten() {
                let Some(ip) = endpoint
                    .addresses
                    .first()
                    .and_then(|a| parse_ip_sloppy(a))
                    .filter(|ip| family.matches(ip))
                else {
                    continue;
                };
                let conditions = endpoint.conditions.as_ref();
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let hints = endpoint.hints.as_ref();
                push_endpoint(
                    list,
                    EndpointInfo {
                        ip,
                        port: port_number,
                        is_local: endpoint.node_name.as_deref() == Some(node_name),
                        ready,
                        serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                        zone_hints: hints
                            .and_then(|h| h.for_zones.as_ref())
                            .into_iter()
                            .flatten()
                            .map(|z| z.name.clone())
                            .collect(),
                        node_hints: hints
                            .and_then(|h| h.for_nodes.as_ref())
                            .into_iter()
                            .flatten()
                            .map(|n| n.name.clone())
                            .collect(),
                    },
                );
            }
        }
    }
    map.retain(|_, list| !list.is_empty());
    sort_endpoints(&mut map);
    map
}

/// The snapshot a proxier of `family` on `node_name` syncs from.
pub fn build_snapshot<'a>(
    services: impl IntoIterator<Item = &'a rekube_crds::Service>,
    endpoints: impl IntoIterator<Item = &'a rekube_crds::Endpoints>,
    node_name: &str,
    family: IpFamily,
) -> ProxySnapshot {
    let mut snapshot = ProxySnapshot::default();
    for svc in services {
        snapshot.service_ports.extend(service_ports(svc, family));
    }
    for eps in endpoints {
        snapshot
            .endpoints
            .extend(endpoints_from_endpoints(eps, node_name, family));
    }
    snapshot
}

//! rekube objects to the proxy's model: upstream's `newBaseServiceInfo` (pkg/proxy/
//! serviceport.go) for each port of a Service, and the endpoints of each service port from
//! a Service's EndpointSlices (ready, serving, terminating and hints as the slice says;
//! upstream's endpointslicecache.go), the slices found by their
//! `kubernetes.io/service-name` label. Addresses are parsed as Go's `ParseIPSloppy` does
//! (leading zeros allowed); what does not parse, or is of the other family, is skipped, as
//! upstream skips it with a log line.

use std::collections::BTreeMap;
use std::net::IpAddr;

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

/// An IP as Go's `netutils.ParseIPSloppy` (IPv4 octets may have leading zeros), shared
/// with the controllers.
pub use rekube_crds::net::parse_ip_sloppy;

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
    slices: impl IntoIterator<Item = &'a discovery::EndpointSlice>,
    node_name: &str,
    family: IpFamily,
) -> ProxySnapshot {
    let mut snapshot = ProxySnapshot::default();
    for svc in services {
        snapshot.service_ports.extend(service_ports(svc, family));
    }
    // Grouped by their Service (the service-name label), as upstream's cache does.
    let mut by_service: BTreeMap<NamespacedName, Vec<&discovery::EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(service) = service_of_slice(&slice.metadata) {
            by_service.entry(service).or_default().push(slice);
        }
    }
    for group in by_service.into_values() {
        snapshot
            .endpoints
            .extend(endpoints_from_endpoint_slices(group, node_name, family));
    }
    snapshot
}

/// The Service an EndpointSlice belongs to: its namespace and its
/// `kubernetes.io/service-name` label (upstream's `serviceNameLabel`); none without it.
pub fn service_of_slice(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<NamespacedName> {
    let name = meta.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(NamespacedName::new(
        meta.namespace.as_deref().unwrap_or("default"),
        name,
    ))
}

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn service(
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut core::ServiceSpec),
    ) -> rekube_crds::Service {
        let mut spec = core::ServiceSpec::default();
        f(&mut spec);
        rekube_crds::Service {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn port(name: &str, protocol: &str, port: i32, node_port: i32) -> core::ServicePort {
        core::ServicePort {
            name: Some(name.into()),
            protocol: Some(protocol.into()),
            port,
            node_port: Some(node_port),
            ..Default::default()
        }
    }

    /// TestBuildServiceMapAddRemove (the service map part): every port of every type is a
    /// service port; health check node ports only for LoadBalancer + Local.
    #[test]
    fn test_build_service_map_add_remove() {
        let services = [
            service("somewhere-else", "cluster-ip", |s| {
                s.type_ = Some("ClusterIP".into());
                s.cluster_ip = Some("172.30.55.4".into());
                s.ports = Some(vec![
                    port("something", "UDP", 1234, 4321),
                    port("somethingelse", "UDP", 1235, 5321),
                    port("sctpport", "SCTP", 1236, 6321),
                ]);
            }),
            service("somewhere-else", "node-port", |s| {
                s.type_ = Some("NodePort".into());
                s.cluster_ip = Some("172.30.55.10".into());
                s.ports = Some(vec![
                    port("blahblah", "UDP", 345, 678),
                    port("moreblahblah", "TCP", 344, 677),
                    port("muchmoreblah", "SCTP", 343, 676),
                ]);
            }),
            service("somewhere", "load-balancer", |s| {
                s.type_ = Some("LoadBalancer".into());
                s.cluster_ip = Some("172.30.55.11".into());
                s.ports = Some(vec![
                    port("foobar", "UDP", 8675, 30061),
                    port("baz", "UDP", 8676, 30062),
                ]);
            }),
            service("somewhere", "only-local-load-balancer", |s| {
                s.type_ = Some("LoadBalancer".into());
                s.cluster_ip = Some("172.30.55.12".into());
                s.ports = Some(vec![
                    port("foobar2", "UDP", 8677, 30063),
                    port("baz", "UDP", 8678, 30064),
                ]);
                s.external_traffic_policy = Some("Local".into());
                s.health_check_node_port = Some(345);
            }),
        ];
        let snapshot = build_snapshot(&services, [], "test-node", IpFamily::V4);
        assert_eq!(snapshot.service_ports.len(), 10);
        let health_checks: Vec<(&NamespacedName, u16)> = snapshot
            .service_ports
            .iter()
            .filter(|(_, p)| p.health_check_node_port != 0)
            .map(|(n, p)| (&n.service, p.health_check_node_port))
            .collect();
        assert_eq!(health_checks.len(), 2, "one per port of the one service");
        assert!(health_checks.iter().all(|(n, p)| **n
            == NamespacedName::new("somewhere", "only-local-load-balancer")
            && *p == 345));
    }

    /// TestBuildServiceMapServiceHeadless and TestBuildServiceMapServiceTypeExternalName.
    #[test]
    fn headless_and_external_name_services_are_ignored() {
        let services = [
            service("somewhere-else", "headless", |s| {
                s.cluster_ip = Some("None".into());
                s.ports = Some(vec![port("rpc", "UDP", 1234, 0)]);
            }),
            service("somewhere-else", "headless-without-port", |s| {
                s.cluster_ip = Some("None".into());
            }),
            service("somewhere-else", "external-name", |s| {
                s.type_ = Some("ExternalName".into());
                s.cluster_ip = Some("172.30.55.4".into());
                s.external_name = Some("foo2.bar.com".into());
                s.ports = Some(vec![port("blah", "UDP", 1235, 5321)]);
            }),
        ];
        assert!(
            build_snapshot(&services, [], "test-node", IpFamily::V4)
                .service_ports
                .is_empty()
        );
    }

    #[test]
    fn dual_stack_service_gives_each_family_its_cluster_ip() {
        let svc = service("ns", "dual", |s| {
            s.cluster_ip = Some("172.30.0.1".into());
            s.cluster_ips = Some(vec!["172.30.0.1".into(), "fd00:10:96::1".into()]);
            s.ports = Some(vec![port("p", "TCP", 80, 0)]);
        });
        let v4 = service_ports(&svc, IpFamily::V4);
        let v6 = service_ports(&svc, IpFamily::V6);
        assert_eq!(v4[0].1.cluster_ip.to_string(), "172.30.0.1");
        assert_eq!(v6[0].1.cluster_ip.to_string(), "fd00:10:96::1");
    }

    #[test]
    fn sloppy_parsing_as_go() {
        assert_eq!(
            parse_ip_sloppy("010.180.00.001"),
            Some("10.180.0.1".parse().unwrap())
        );
        assert_eq!(parse_ip_sloppy("1.2.3.256"), None);
        assert_eq!(
            parse_cidr_sloppy(" 203.0.113.000/025"),
            Some("203.0.113.0/25".parse().unwrap())
        );
        assert_eq!(
            parse_cidr_sloppy("203.0.113.7/24"),
            Some("203.0.113.0/24".parse().unwrap())
        );
    }
}

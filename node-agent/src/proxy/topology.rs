//! Which endpoints a service port uses on this node: upstream's `CategorizeEndpoints`
//! (pkg/proxy/topology.go). Ready endpoints by default; serving-terminating endpoints
//! only when no ready one exists (separately for Cluster and Local policy); topology
//! hints (PreferSameNode, PreferSameZone) narrow the Cluster endpoints when every ready
//! endpoint carries one and one matches this node.

use std::collections::BTreeMap;

use super::types::{EndpointInfo, ServicePortInfo};

/// The node label naming its zone.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

/// The result of [`categorize_endpoints`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategorizedEndpoints {
    /// Usable endpoints under "Cluster" policy; `None` when the port never uses it.
    pub cluster: Option<Vec<EndpointInfo>>,
    /// Usable endpoints under "Local" policy; `None` when the port never uses it.
    pub local: Option<Vec<EndpointInfo>>,
    /// Every endpoint reachable from this node (the union of the two).
    pub all_reachable: Vec<EndpointInfo>,
    /// The port has usable endpoints somewhere in the cluster (possibly none here).
    pub has_any_endpoints: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopologyMode {
    None,
    PreferSameNode,
    PreferSameZone,
}

/// Upstream's `CategorizeEndpoints`.
pub fn categorize_endpoints(
    endpoints: &[EndpointInfo],
    svc: &ServicePortInfo,
    node_name: &str,
    topology_labels: &BTreeMap<String, String>,
) -> CategorizedEndpoints {
    let mut result = CategorizedEndpoints::default();
    if endpoints.is_empty() {
        return result;
    }
    let zone = topology_labels
        .get(LABEL_TOPOLOGY_ZONE)
        .map(String::as_str)
        .unwrap_or("");
    let mut topology_mode = TopologyMode::None;
    let mut use_serving_terminating = false;

    if svc.uses_cluster_endpoints() {
        topology_mode = topology_mode_from_hints(endpoints, node_name, zone);
        let mut cluster: Vec<EndpointInfo> = endpoints
            .iter()
            .filter(|ep| ep.ready && available_for_topology(ep, topology_mode, node_name, zone))
            .cloned()
            .collect();
        // No ready endpoint anywhere (topology was already ignored if none matched):
        // fall back to serving-terminating ones.
        if cluster.is_empty() {
            cluster = endpoints
                .iter()
                .filter(|ep| ep.serving && ep.terminating)
                .cloned()
                .collect();
        }
        result.has_any_endpoints = !cluster.is_empty();
        result.cluster = Some(cluster);
    }

    if !svc.uses_local_endpoints() {
        result.all_reachable = result.cluster.clone().unwrap_or_default();
        return result;
    }

    let mut has_local_ready = false;
    let mut has_local_serving_terminating = false;
    for ep in endpoints {
        if ep.ready {
            result.has_any_endpoints = true;
            has_local_ready |= ep.is_local;
        } else if ep.serving && ep.terminating {
            result.has_any_endpoints = true;
            has_local_serving_terminating |= ep.is_local;
        }
    }
    let local: Vec<EndpointInfo> = if has_local_ready {
        endpoints
            .iter()
            .filter(|ep| ep.is_local && ep.ready)
            .cloned()
            .collect()
    } else if has_local_serving_terminating {
        use_serving_terminating = true;
        endpoints
            .iter()
            .filter(|ep| ep.is_local && ep.serving && ep.terminating)
            .cloned()
            .collect()
    } else {
        Vec::new()
    };

    let Some(cluster) = &result.cluster else {
        result.all_reachable = local.clone();
        result.local = Some(local);
        return result;
    };
    if topology_mode == TopologyMode::None && !use_serving_terminating {
        // Cluster endpoints are every ready endpoint, local ones only ready ones: a superset.
        result.all_reachable = cluster.clone();
    } else {
        // Remote endpoints only in cluster, terminating or off-topology local ones only in
        // local: merge (by their string form, as upstream).
        let mut merged: BTreeMap<String, EndpointInfo> = BTreeMap::new();
        for ep in cluster.iter().chain(local.iter()) {
            merged.insert(ep.to_string(), ep.clone());
        }
        result.all_reachable = merged.into_values().collect();
    }
    result.local = Some(local);
    result
}

/// Upstream's `topologyModeFromHints`: PreferSameNode when every ready endpoint has a node
/// hint and one names this node; else PreferSameZone when every ready endpoint has a zone
/// hint and one names this node's zone; else none.
fn topology_mode_from_hints(
    endpoints: &[EndpointInfo],
    node_name: &str,
    zone: &str,
) -> TopologyMode {
    let mut has_ready = false;
    let mut has_for_node = false;
    let mut all_have_node_hints = true;
    let mut has_for_zone = false;
    let mut all_have_zone_hints = true;
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        has_ready = true;
        if ep.node_hints.is_empty() {
            all_have_node_hints = false;
        } else if ep.node_hints.contains(node_name) {
            has_for_node = true;
        }
        if ep.zone_hints.is_empty() {
            all_have_zone_hints = false;
        } else if ep.zone_hints.contains(zone) {
            has_for_zone = true;
        }
    }
    if !has_ready {
        TopologyMode::None
    } else if all_have_node_hints && has_for_node {
        TopologyMode::PreferSameNode
    } else if all_have_zone_hints && has_for_zone {
        TopologyMode::PreferSameZone
    } else {
        TopologyMode::None
    }
}

fn available_for_topology(
    ep: &EndpointInfo,
    mode: TopologyMode,
    node_name: &str,
    zone: &str,
) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::PreferSameNode => ep.node_hints.contains(node_name),
        TopologyMode::PreferSameZone => ep.zone_hints.contains(zone),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;

    use super::*;
    use crate::proxy::types::Protocol;

    const NODE: &str = "test-node";

    fn svc(internal_local: bool, external_local: bool, node_port: u16) -> ServicePortInfo {
        let mut svc = ServicePortInfo::cluster_ip("172.30.0.1".parse().unwrap(), 80, Protocol::Tcp);
        svc.internal_policy_local = internal_local;
        svc.external_policy_local = external_local;
        svc.node_port = node_port;
        svc
    }

    /// (ready, serving, terminating)
    type Conditions = (bool, bool, bool);
    /// (endpoint, zone hints, conditions, local)
    type CaseEndpoint<'a> = (&'a str, &'a [&'a str], Conditions, bool);

    fn ep((addr, zones, (ready, serving, terminating), local): CaseEndpoint) -> EndpointInfo {
        let addr: SocketAddr = addr.parse().unwrap();
        EndpointInfo {
            ip: addr.ip(),
            port: addr.port(),
            is_local: local,
            ready,
            serving,
            terminating,
            zone_hints: zones.iter().map(|z| z.to_string()).collect(),
            node_hints: BTreeSet::new(),
        }
    }

    fn names(eps: &[EndpointInfo]) -> BTreeSet<String> {
        eps.iter().map(|e| e.to_string()).collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    // Ready shorthand: (addr, zones, ready, serving=ready, terminating=false, local).
    const R: Conditions = (true, true, false);
    const NR: Conditions = (false, false, false);
    const ST: Conditions = (false, true, true);

    struct Case<'a> {
        name: &'a str,
        zone: Option<&'a str>,
        svc: ServicePortInfo,
        endpoints: Vec<CaseEndpoint<'a>>,
        cluster: Option<&'a [&'a str]>,
        local: Option<&'a [&'a str]>,
        all: Option<&'a [&'a str]>,
        only_remote: bool,
    }

    /// Upstream's TestCategorizeEndpoints (pkg/proxy/topology_test.go) as of v1.36:
    /// ProxyTerminatingEndpoints is GA (the "PTE disabled" cases are gone) and hints
    /// apply without the service annotation (the annotation cases are gone).
    #[test]
    fn test_categorize_endpoints() {
        let four_zones: Vec<CaseEndpoint> = vec![
            ("10.1.2.3:80", &["zone-a"], R, false),
            ("10.1.2.4:80", &["zone-b"], R, false),
            ("10.1.2.5:80", &["zone-c"], R, false),
            ("10.1.2.6:80", &["zone-a"], R, false),
        ];
        let cases = vec![
            Case {
                name: "hints enabled",
                zone: Some("zone-a"),
                svc: svc(false, false, 0),
                endpoints: four_zones.clone(),
                cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "externalTrafficPolicy: Local, topology ignored for Local endpoints",
                zone: Some("zone-a"),
                svc: svc(false, true, 8080),
                endpoints: vec![
                    ("10.1.2.3:80", &["zone-a"], R, true),
                    ("10.1.2.4:80", &["zone-b"], R, true),
                    ("10.1.2.5:80", &["zone-c"], R, false),
                    ("10.1.2.6:80", &["zone-a"], R, false),
                ],
                cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
                local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
                all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
                only_remote: false,
            },
            Case {
                name: "internalTrafficPolicy: Local, topology ignored for Local endpoints",
                zone: Some("zone-a"),
                svc: svc(true, false, 8080),
                endpoints: vec![
                    ("10.1.2.3:80", &["zone-a"], R, true),
                    ("10.1.2.4:80", &["zone-b"], R, true),
                    ("10.1.2.5:80", &["zone-c"], R, false),
                    ("10.1.2.6:80", &["zone-a"], R, false),
                ],
                cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
                local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
                all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
                only_remote: false,
            },
            Case {
                name: "empty node labels",
                zone: None,
                svc: svc(false, false, 0),
                endpoints: vec![("10.1.2.3:80", &["zone-a"], R, false)],
                cluster: Some(&["10.1.2.3:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "empty zone label",
                zone: Some(""),
                svc: svc(false, false, 0),
                endpoints: vec![("10.1.2.3:80", &["zone-a"], R, false)],
                cluster: Some(&["10.1.2.3:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "node in different zone, no endpoint filtering",
                zone: Some("zone-b"),
                svc: svc(false, false, 0),
                endpoints: vec![("10.1.2.3:80", &["zone-a"], R, false)],
                cluster: Some(&["10.1.2.3:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "unready endpoint",
                zone: Some("zone-a"),
                svc: svc(false, false, 0),
                endpoints: vec![
                    ("10.1.2.3:80", &["zone-a"], R, false),
                    ("10.1.2.4:80", &["zone-b"], R, false),
                    ("10.1.2.5:80", &["zone-c"], R, false),
                    ("10.1.2.6:80", &["zone-a"], NR, false),
                ],
                cluster: Some(&["10.1.2.3:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "only unready endpoints in same zone (should not filter)",
                zone: Some("zone-a"),
                svc: svc(false, false, 0),
                endpoints: vec![
                    ("10.1.2.3:80", &["zone-a"], NR, false),
                    ("10.1.2.4:80", &["zone-b"], R, false),
                    ("10.1.2.5:80", &["zone-c"], R, false),
                    ("10.1.2.6:80", &["zone-a"], NR, false),
                ],
                cluster: Some(&["10.1.2.4:80", "10.1.2.5:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "missing hints, no filtering applied",
                zone: Some("zone-a"),
                svc: svc(false, false, 0),
                endpoints: vec![
                    ("10.1.2.3:80", &["zone-a"], R, false),
                    ("10.1.2.4:80", &["zone-b"], R, false),
                    ("10.1.2.5:80", &[], R, false),
                    ("10.1.2.6:80", &["zone-a"], R, false),
                ],
                cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "multiple hints per endpoint, filtering includes any endpoint with zone included",
                zone: Some("zone-c"),
                svc: svc(false, false, 0),
                endpoints: vec![
                    ("10.1.2.3:80", &["zone-a", "zone-b", "zone-c"], R, false),
                    ("10.1.2.4:80", &["zone-b", "zone-c"], R, false),
                    ("10.1.2.5:80", &["zone-b", "zone-d"], R, false),
                    ("10.1.2.6:80", &["zone-c"], R, false),
                ],
                cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "conflicting topology and localness require merging allEndpoints",
                zone: Some("zone-a"),
                svc: svc(false, true, 8080),
                endpoints: vec![
                    ("10.0.0.0:80", &["zone-a"], R, true),
                    ("10.0.0.1:80", &["zone-b"], R, true),
                    ("10.0.0.2:80", &["zone-a"], R, false),
                    ("10.0.0.3:80", &["zone-b"], R, false),
                ],
                cluster: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
                local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                all: Some(&["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]),
                only_remote: false,
            },
            Case {
                name: "internalTrafficPolicy: Local, with empty endpoints",
                zone: None,
                svc: svc(true, false, 0),
                endpoints: vec![],
                cluster: None,
                local: Some(&[]),
                all: None,
                only_remote: false,
            },
            Case {
                name: "internalTrafficPolicy: Local, but all endpoints are remote",
                zone: None,
                svc: svc(true, false, 0),
                endpoints: vec![
                    ("10.0.0.0:80", &[], R, false),
                    ("10.0.0.1:80", &[], R, false),
                ],
                cluster: None,
                local: Some(&[]),
                all: None,
                only_remote: true,
            },
            Case {
                name: "internalTrafficPolicy: Local, all endpoints are local",
                zone: None,
                svc: svc(true, false, 0),
                endpoints: vec![("10.0.0.0:80", &[], R, true), ("10.0.0.1:80", &[], R, true)],
                cluster: None,
                local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                all: None,
                only_remote: false,
            },
            Case {
                name: "internalTrafficPolicy: Local, some endpoints are local",
                zone: None,
                svc: svc(true, false, 0),
                endpoints: vec![
                    ("10.0.0.0:80", &[], R, true),
                    ("10.0.0.1:80", &[], R, false),
                ],
                cluster: None,
                local: Some(&["10.0.0.0:80"]),
                all: None,
                only_remote: false,
            },
            Case {
                name: "Cluster traffic policy, endpoints not Ready",
                zone: None,
                svc: svc(false, false, 0),
                endpoints: vec![
                    ("10.0.0.0:80", &[], NR, false),
                    ("10.0.0.1:80", &[], NR, false),
                ],
                cluster: Some(&[]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "Cluster traffic policy, some endpoints are Ready",
                zone: None,
                svc: svc(false, false, 0),
                endpoints: vec![
                    ("10.0.0.0:80", &[], NR, false),
                    ("10.0.0.1:80", &[], R, false),
                ],
                cluster: Some(&["10.0.0.1:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "Cluster traffic policy, all endpoints are terminating",
                zone: None,
                svc: svc(false, false, 0),
                endpoints: vec![
                    ("10.0.0.0:80", &[], ST, true),
                    ("10.0.0.1:80", &[], ST, false),
                ],
                cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                local: None,
                all: None,
                only_remote: false,
            },
            Case {
                name: "iTP: Local, eTP: Cluster, some endpoints local",
                zone: None,
                svc: svc(true, false, 8080),
                endpoints: vec![
                    ("10.0.0.0:80", &[], R, true),
                    ("10.0.0.1:80", &[], R, false),
                ],
                cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                local: Some(&["10.0.0.0:80"]),
                all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                only_remote: false,
            },
            Case {
                name: "iTP: Cluster, eTP: Local, some endpoints local",
                zone: None,
                svc: svc(false, true, 8080),
                endpoints: vec![
                    ("10.0.0.0:80", &[], R, true),
                    ("10.0.0.1:80", &[], R, false),
                ],
                cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                local: Some(&["10.0.0.0:80"]),
                all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                only_remote: false,
            },
            Case {
                name: "iTP: Local, eTP: Local, some endpoints local",
                zone: None,
                svc: svc(true, true, 8080),
                endpoints: vec![
                    ("10.0.0.0:80", &[], R, true),
                    ("10.0.0.1:80", &[], R, false),
                ],
                cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                local: Some(&["10.0.0.0:80"]),
                all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                only_remote: false,
            },
            Case {
                name: "iTP: Local, eTP: Local, all endpoints remote",
                zone: None,
                svc: svc(true, true, 8080),
                endpoints: vec![
                    ("10.0.0.0:80", &[], R, false),
                    ("10.0.0.1:80", &[], R, false),
                ],
                cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                local: Some(&[]),
                all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                only_remote: false,
            },
            Case {
                name: "iTP: Local, eTP: Local, all endpoints remote and terminating",
                zone: None,
                svc: svc(true, true, 8080),
                endpoints: vec![
                    ("10.0.0.0:80", &[], ST, false),
                    ("10.0.0.1:80", &[], ST, false),
                ],
                cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                local: Some(&[]),
                all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                only_remote: true,
            },
            Case {
                name: "iTP: Cluster, eTP: Local, with terminating endpoints",
                zone: None,
                svc: svc(false, true, 8080),
                endpoints: vec![
                    ("10.0.0.0:80", &[], R, false),
                    ("10.0.0.1:80", &[], NR, true),
                    ("10.0.0.2:80", &[], ST, true),
                    ("10.0.0.3:80", &[], ST, false),
                ],
                cluster: Some(&["10.0.0.0:80"]),
                local: Some(&["10.0.0.2:80"]),
                all: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
                only_remote: false,
            },
            Case {
                name: "externalTrafficPolicy ignored if not externally accessible",
                zone: None,
                svc: svc(false, true, 0),
                endpoints: vec![
                    ("10.0.0.0:80", &[], R, false),
                    ("10.0.0.1:80", &[], R, true),
                ],
                cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                local: None,
                all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
                only_remote: false,
            },
            Case {
                name: "no cluster endpoints for iTP:Local internal-only service",
                zone: None,
                svc: svc(true, false, 0),
                endpoints: vec![
                    ("10.0.0.0:80", &[], R, false),
                    ("10.0.0.1:80", &[], R, true),
                ],
                cluster: None,
                local: Some(&["10.0.0.1:80"]),
                all: Some(&["10.0.0.1:80"]),
                only_remote: false,
            },
        ];

        for case in cases {
            let mut labels = BTreeMap::new();
            if let Some(zone) = case.zone {
                labels.insert(LABEL_TOPOLOGY_ZONE.to_string(), zone.to_string());
            }
            let endpoints: Vec<EndpointInfo> = case.endpoints.iter().map(|e| ep(*e)).collect();
            let got = categorize_endpoints(&endpoints, &case.svc, NODE, &labels);

            // As upstream's check: "not used" must be None, "used" compares as a set (an
            // early return with no endpoints at all leaves both None).
            let check = |got: &Option<Vec<EndpointInfo>>, expected: Option<&[&str]>, what: &str| {
                match expected {
                    None => assert!(
                        got.is_none(),
                        "{}: expected no {what} endpoints, got {got:?}",
                        case.name
                    ),
                    Some(expected) => assert_eq!(
                        names(got.as_deref().unwrap_or_default()),
                        set(expected),
                        "{}: {what}",
                        case.name
                    ),
                }
            };
            check(&got.cluster, case.cluster, "cluster");
            check(&got.local, case.local, "local");
            let expected_all = match (case.cluster, case.local) {
                (Some(c), None) => set(c),
                (None, Some(l)) => set(l),
                _ => set(case.all.unwrap_or_default()),
            };
            assert_eq!(
                names(&got.all_reachable),
                expected_all,
                "{}: all",
                case.name
            );
            let expected_any = !expected_all.is_empty() || case.only_remote;
            assert_eq!(
                got.has_any_endpoints, expected_any,
                "{}: hasAnyEndpoints",
                case.name
            );
        }
    }

    /// PreferSameNode (KEP-3015): node hints win over zone hints when every ready endpoint
    /// has one and one names this node.
    #[test]
    fn prefer_same_node_hints() {
        let mut a = ep(("10.0.0.1:80", &["zone-a"], R, true));
        a.node_hints.insert(NODE.to_string());
        let mut b = ep(("10.0.0.2:80", &["zone-a"], R, false));
        b.node_hints.insert("other".to_string());
        let labels = BTreeMap::from([(LABEL_TOPOLOGY_ZONE.to_string(), "zone-a".to_string())]);
        let got = categorize_endpoints(&[a, b.clone()], &svc(false, false, 0), NODE, &labels);
        assert_eq!(
            got.cluster.as_deref().map(names),
            Some(set(&["10.0.0.1:80"]))
        );
        // No endpoint hinted for this node: zone hints decide.
        let got = categorize_endpoints(&[b.clone()], &svc(false, false, 0), NODE, &labels);
        assert_eq!(
            got.cluster.as_deref().map(names),
            Some(set(&["10.0.0.2:80"]))
        );
    }
}

//! Upstream's packet-flow tests of pkg/proxy/nftables/proxier_test.go (v1.36): the same
//! Services and EndpointSlices, and for each packet the endpoints it may reach (or DROP,
//! REJECT) and whether it is masqueraded, traced through the rules by
//! [`super::tracer_test`].

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use super::helpers_test::*;
use super::proxier::{LocalDetector, NodePortAddresses};
use super::tracer_test::{
    PacketFlowTest, TEST_EXTERNAL_CLIENT, TEST_EXTERNAL_CLIENT_BLOCKED, flow, run_packet_flow_tests,
};
use crate::proxy::types::IpFamily;

const TEST_NODE_IP_ALT: &str = "192.168.1.2";

fn slice(
    namespace: &str,
    name: &str,
    endpoints: Vec<discovery::Endpoint>,
    port_name: &str,
    port: i32,
) -> discovery::EndpointSlice {
    make_test_endpoint_slice(namespace, name, 1, |eps| {
        eps.endpoints = Some(endpoints);
        eps.ports = Some(vec![endpoint_port(port_name, port, "TCP")]);
    })
}

/// TestNoEndpointsReject: a service with no endpoints rejects connections to its ClusterIP,
/// ExternalIPs, NodePort and LoadBalancer IP.
#[test]
fn test_no_endpoints_reject() {
    let mut fp = FakeProxier::new();
    fp.add_service(make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.type_ = Some("LoadBalancer".into());
        s.cluster_ip = Some("172.30.0.41".into());
        s.external_ips = Some(vec!["192.168.99.11".into()]);
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
        set_lb_ingress(svc, &["1.2.3.4"]);
    }));
    fp.sync_proxy_rules();
    run_packet_flow_tests(
        "TestNoEndpointsReject",
        &fp,
        &[
            flow(
                "pod to cluster IP with no endpoints",
                "10.0.0.2",
                "172.30.0.41",
                80,
                "REJECT",
                false,
            ),
            flow(
                "external to external IP with no endpoints",
                TEST_EXTERNAL_CLIENT,
                "192.168.99.11",
                80,
                "REJECT",
                false,
            ),
            flow(
                "pod to NodePort with no endpoints",
                "10.0.0.2",
                TEST_NODE_IP,
                3001,
                "REJECT",
                false,
            ),
            flow(
                "external to NodePort with no endpoints",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                "REJECT",
                false,
            ),
            flow(
                "pod to LoadBalancer IP with no endpoints",
                "10.0.0.2",
                "1.2.3.4",
                80,
                "REJECT",
                false,
            ),
            flow(
                "external to LoadBalancer IP with no endpoints",
                TEST_EXTERNAL_CLIENT,
                "1.2.3.4",
                80,
                "REJECT",
                false,
            ),
        ],
    );
}

/// TestClusterIPGeneral: basic ClusterIP features (hairpin, several endpoints, targetPort,
/// one port number with three protocols, unknown ports and unallocated IPs).
#[test]
fn test_cluster_ip_general() {
    let mut fp = FakeProxier::new();
    fp.add_service(make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.cluster_ip = Some("172.30.0.41".into());
        s.ports = Some(vec![service_port("http", 80, "TCP", 0)]);
    }));
    fp.add_service(make_test_service("ns2", "svc2", |svc| {
        let s = spec(svc);
        s.cluster_ip = Some("172.30.0.42".into());
        s.ports = Some(vec![
            service_port("http", 80, "TCP", 0),
            service_port("https", 443, "TCP", 0),
            service_port("dns-udp", 53, "UDP", 0),
            service_port("dns-tcp", 53, "TCP", 0),
            service_port("dns-sctp", 53, "SCTP", 0),
        ]);
    }));
    fp.add_slice(slice(
        "ns1",
        "svc1",
        vec![endpoint("10.180.0.1", Some(TEST_NODE_NAME), None)],
        "http",
        80,
    ));
    fp.add_slice(make_test_endpoint_slice("ns2", "svc2", 1, |eps| {
        eps.endpoints = Some(vec![
            endpoint("10.180.0.1", Some(TEST_NODE_NAME), None),
            endpoint("10.180.2.1", Some("node2"), None),
        ]);
        eps.ports = Some(vec![
            endpoint_port("http", 80, "TCP"),
            endpoint_port("https", 8443, "TCP"),
            endpoint_port("dns-udp", 53, "UDP"),
            endpoint_port("dns-tcp", 5353, "TCP"),
            endpoint_port("dns-sctp", 53, "SCTP"),
        ]);
    }));
    fp.sync_proxy_rules();
    let with_protocol = |name, protocol, output| PacketFlowTest {
        name,
        source_ip: "10.180.0.2",
        protocol,
        dest_ip: "172.30.0.42",
        dest_port: 53,
        output,
        masq: false,
    };
    run_packet_flow_tests(
        "TestClusterIPGeneral",
        &fp,
        &[
            flow(
                "simple clusterIP",
                "10.180.0.2",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                false,
            ),
            flow(
                "hairpin to cluster IP",
                "10.180.0.1",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                true,
            ),
            flow(
                "clusterIP with multiple endpoints",
                "10.180.0.2",
                "172.30.0.42",
                80,
                "10.180.0.1:80, 10.180.2.1:80",
                false,
            ),
            flow(
                "clusterIP with TargetPort",
                "10.180.0.2",
                "172.30.0.42",
                443,
                "10.180.0.1:8443, 10.180.2.1:8443",
                false,
            ),
            with_protocol(
                "clusterIP with TCP, UDP, and SCTP on same port (TCP)",
                "tcp",
                "10.180.0.1:5353, 10.180.2.1:5353",
            ),
            with_protocol(
                "clusterIP with TCP, UDP, and SCTP on same port (UDP)",
                "udp",
                "10.180.0.1:53, 10.180.2.1:53",
            ),
            with_protocol(
                "clusterIP with TCP, UDP, and SCTP on same port (SCTP)",
                "sctp",
                "10.180.0.1:53, 10.180.2.1:53",
            ),
            PacketFlowTest {
                dest_port: 80,
                ..with_protocol("TCP-only port does not match UDP traffic", "udp", "REJECT")
            },
            flow(
                "svc1 does not accept svc2's ports",
                "10.180.0.2",
                "172.30.0.41",
                443,
                "REJECT",
                false,
            ),
            flow(
                "packet to unallocated cluster ip",
                "10.180.0.2",
                "172.30.0.50",
                80,
                "DROP",
                false,
            ),
        ],
    );
}

/// TestLoadBalancer: LoadBalancerSourceRanges apply to LB IPs, not NodePorts; the node
/// (inside the ranges) may reach the LB IPs, also with the LB IP as source.
#[test]
fn test_load_balancer() {
    let mut fp = FakeProxier::new();
    fp.add_service(make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.type_ = Some("LoadBalancer".into());
        s.cluster_ip = Some("172.30.0.41".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
        // Excess whitespace is ignored (a regression test upstream).
        s.load_balancer_source_ranges =
            Some(vec!["192.168.0.0/24".into(), " 203.0.113.0/25".into()]);
        set_lb_ingress(svc, &["1.2.3.4", "5.6.7.8"]);
    }));
    fp.add_slice(slice(
        "ns1",
        "svc1",
        vec![endpoint("10.180.0.1", None, None)],
        "p80",
        80,
    ));
    fp.sync_proxy_rules();
    let ep = "10.180.0.1:80";
    run_packet_flow_tests(
        "TestLoadBalancer",
        &fp,
        &[
            flow(
                "pod to cluster IP",
                "10.0.0.2",
                "172.30.0.41",
                80,
                ep,
                false,
            ),
            flow(
                "external to nodePort",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                ep,
                true,
            ),
            flow(
                "nodePort bypasses LoadBalancerSourceRanges",
                TEST_EXTERNAL_CLIENT_BLOCKED,
                TEST_NODE_IP,
                3001,
                ep,
                true,
            ),
            flow(
                "accepted external to LB1",
                TEST_EXTERNAL_CLIENT,
                "1.2.3.4",
                80,
                ep,
                true,
            ),
            flow(
                "accepted external to LB2",
                TEST_EXTERNAL_CLIENT,
                "5.6.7.8",
                80,
                ep,
                true,
            ),
            flow(
                "blocked external to LB1",
                TEST_EXTERNAL_CLIENT_BLOCKED,
                "1.2.3.4",
                80,
                "DROP",
                false,
            ),
            flow(
                "blocked external to LB2",
                TEST_EXTERNAL_CLIENT_BLOCKED,
                "5.6.7.8",
                80,
                "DROP",
                false,
            ),
            flow(
                "pod to LB1 (blocked by LoadBalancerSourceRanges)",
                "10.0.0.2",
                "1.2.3.4",
                80,
                "DROP",
                false,
            ),
            flow(
                "pod to LB2 (blocked by LoadBalancerSourceRanges)",
                "10.0.0.2",
                "5.6.7.8",
                80,
                "DROP",
                false,
            ),
            flow(
                "node to LB1 (allowed by LoadBalancerSourceRanges)",
                TEST_NODE_IP,
                "1.2.3.4",
                80,
                ep,
                true,
            ),
            flow(
                "node to LB2 (allowed by LoadBalancerSourceRanges)",
                TEST_NODE_IP,
                "5.6.7.8",
                80,
                ep,
                true,
            ),
            flow(
                "same node to LB1, SNATted to LB1 (implicitly allowed)",
                "1.2.3.4",
                "1.2.3.4",
                80,
                ep,
                true,
            ),
            flow(
                "same node to LB2, SNATted to LB2 (implicitly allowed)",
                "5.6.7.8",
                "5.6.7.8",
                80,
                ep,
                true,
            ),
        ],
    );
}

/// TestNodePorts: NodePorts on the node IP; on the secondary IP only when
/// --nodeport-addresses covers it; IPv4 and IPv6.
#[test]
fn test_node_ports() {
    // --nodeport-addresses as the addresses it resolves to on the test node's interfaces.
    let cases: [(&str, IpFamily, Option<Vec<&str>>, bool); 4] = [
        ("ipv4", IpFamily::V4, None, false),
        // 192.168.0.0/24, 192.168.1.0/24, 2001:db8::/64
        (
            "ipv4, multiple nodeport-addresses",
            IpFamily::V4,
            Some(vec![TEST_NODE_IP, TEST_NODE_IP_ALT, "2001:db8::1"]),
            true,
        ),
        ("ipv6", IpFamily::V6, None, false),
        // 192.168.0.0/24, 192.168.1.0/24, 2001:db8::/64, 2001:db8:1::2/128
        (
            "ipv6, multiple nodeport-addresses",
            IpFamily::V6,
            Some(vec![
                TEST_NODE_IP,
                TEST_NODE_IP_ALT,
                "2001:db8::1",
                "2001:db8:1::2",
            ]),
            true,
        ),
    ];
    for (name, family, node_port_addresses, allow_alt_node_ip) in cases {
        let mut fp = FakeProxier::new_family(family, |c| {
            if let Some(ips) = node_port_addresses {
                c.node_port_addresses =
                    NodePortAddresses::Ips(ips.iter().map(|ip| ip.parse().unwrap()).collect());
            }
        });
        let (svc_ip, ep1, ep2, node_ip, pod_ip, external, alt_node_ip, output) = match family {
            IpFamily::V4 => (
                "172.30.0.41",
                "10.180.0.1",
                "10.180.2.1",
                TEST_NODE_IP,
                "10.0.0.2",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP_ALT,
                "10.180.0.1:80, 10.180.2.1:80",
            ),
            IpFamily::V6 => (
                "fd00:172:30::41",
                "fd00:10:180::1",
                "fd00:10:180::2:1",
                "2001:db8::1",
                "fd00:10::2",
                "2600:5200::1",
                "2001:db8:1::2",
                "[fd00:10:180::1]:80, [fd00:10:180::2:1]:80",
            ),
        };
        fp.add_service(make_test_service("ns1", "svc1", |svc| {
            let s = spec(svc);
            s.type_ = Some("NodePort".into());
            s.cluster_ip = Some(svc_ip.into());
            s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
        }));
        let mut eps = slice(
            "ns1",
            "svc1",
            vec![
                endpoint(ep1, None, None),
                endpoint(ep2, Some(TEST_NODE_NAME), None),
            ],
            "p80",
            80,
        );
        if family == IpFamily::V6 {
            eps.address_type = "IPv6".into();
        }
        fp.add_slice(eps);
        fp.sync_proxy_rules();
        run_packet_flow_tests(
            name,
            &fp,
            &[
                flow("pod to cluster IP", pod_ip, svc_ip, 80, output, false),
                flow(
                    "external to nodePort",
                    external,
                    node_ip,
                    3001,
                    output,
                    true,
                ),
                flow("node to nodePort", node_ip, node_ip, 3001, output, true),
            ],
        );
        if allow_alt_node_ip {
            run_packet_flow_tests(
                name,
                &fp,
                &[flow(
                    "external to nodePort on secondary IP",
                    external,
                    alt_node_ip,
                    3001,
                    output,
                    true,
                )],
            );
        } else {
            run_packet_flow_tests(
                name,
                &fp,
                &[flow(
                    "secondary nodeIP ignores NodePorts",
                    external,
                    alt_node_ip,
                    3001,
                    "",
                    false,
                )],
            );
        }
    }
}

fn lb_service_with_external_ip(policy: &str) -> core::Service {
    make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.type_ = Some("LoadBalancer".into());
        s.external_traffic_policy = Some(policy.into());
        s.cluster_ip = Some("172.30.0.41".into());
        s.external_ips = Some(vec!["192.168.99.11".into()]);
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
        s.health_check_node_port = Some(30000);
        set_lb_ingress(svc, &["1.2.3.4"]);
    })
}

/// TestExternalTrafficPolicyLocal: external traffic reaches only local endpoints, not
/// masqueraded; pod traffic to external addresses is short-circuited to all endpoints.
#[test]
fn test_external_traffic_policy_local() {
    let mut fp = FakeProxier::new();
    fp.add_service(lb_service_with_external_ip("Local"));
    fp.add_slice(slice(
        "ns1",
        "svc1",
        vec![
            endpoint("10.180.0.1", None, None),
            endpoint("10.180.2.1", Some(TEST_NODE_NAME), None),
        ],
        "p80",
        80,
    ));
    fp.sync_proxy_rules();
    let both = "10.180.0.1:80, 10.180.2.1:80";
    let local = "10.180.2.1:80";
    run_packet_flow_tests(
        "TestExternalTrafficPolicyLocal",
        &fp,
        &[
            flow(
                "pod to cluster IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "172.30.0.41",
                80,
                both,
                false,
            ),
            flow(
                "pod to external IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "192.168.99.11",
                80,
                both,
                false,
            ),
            flow(
                "external to external IP hits only local endpoint, unmasqueraded",
                TEST_EXTERNAL_CLIENT,
                "192.168.99.11",
                80,
                local,
                false,
            ),
            flow(
                "pod to LB IP hits only both endpoints, unmasqueraded",
                "10.0.0.2",
                "1.2.3.4",
                80,
                both,
                false,
            ),
            flow(
                "external to LB IP hits only local endpoint, unmasqueraded",
                TEST_EXTERNAL_CLIENT,
                "1.2.3.4",
                80,
                local,
                false,
            ),
            flow(
                "pod to NodePort hits both endpoints, unmasqueraded",
                "10.0.0.2",
                TEST_NODE_IP,
                3001,
                both,
                false,
            ),
            flow(
                "external to NodePort hits only local endpoint, unmasqueraded",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                local,
                false,
            ),
        ],
    );
}

/// TestExternalTrafficPolicyCluster: traffic to external addresses is masqueraded.
#[test]
fn test_external_traffic_policy_cluster() {
    let mut fp = FakeProxier::new();
    fp.add_service(lb_service_with_external_ip("Cluster"));
    fp.add_slice(slice(
        "ns1",
        "svc1",
        vec![
            endpoint("10.180.0.1", None, None),
            endpoint("10.180.2.1", Some(TEST_NODE_NAME), None),
        ],
        "p80",
        80,
    ));
    fp.sync_proxy_rules();
    let both = "10.180.0.1:80, 10.180.2.1:80";
    run_packet_flow_tests(
        "TestExternalTrafficPolicyCluster",
        &fp,
        &[
            flow(
                "pod to cluster IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "172.30.0.41",
                80,
                both,
                false,
            ),
            flow(
                "pod to external IP hits both endpoints, masqueraded",
                "10.0.0.2",
                "192.168.99.11",
                80,
                both,
                true,
            ),
            flow(
                "external to external IP hits both endpoints, masqueraded",
                TEST_EXTERNAL_CLIENT,
                "192.168.99.11",
                80,
                both,
                true,
            ),
            flow(
                "pod to LB IP hits both endpoints, masqueraded",
                "10.0.0.2",
                "1.2.3.4",
                80,
                both,
                true,
            ),
            flow(
                "external to LB IP hits both endpoints, masqueraded",
                TEST_EXTERNAL_CLIENT,
                "1.2.3.4",
                80,
                both,
                true,
            ),
            flow(
                "pod to NodePort hits both endpoints, masqueraded",
                "10.0.0.2",
                TEST_NODE_IP,
                3001,
                both,
                true,
            ),
            flow(
                "external to NodePort hits both endpoints, masqueraded",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                both,
                true,
            ),
        ],
    );
}

fn ready_on(nodes: &[(&str, &str)]) -> Vec<discovery::Endpoint> {
    nodes
        .iter()
        .map(|(ip, node)| endpoint(ip, Some(node), Some((true, true, false))))
        .collect()
}

/// TestInternalTrafficPolicy: ClusterIP traffic with internalTrafficPolicy Local reaches
/// only local endpoints, is dropped without one, and rejected once the endpoints go.
#[test]
fn test_internal_traffic_policy() {
    // (name, internalTrafficPolicy, endpoints (ip, node), output)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 4] = [
        (
            "internalTrafficPolicy is cluster",
            Some("Cluster"),
            vec![
                ("10.0.1.1", TEST_NODE_NAME),
                ("10.0.1.2", "node1"),
                ("10.0.1.3", "node2"),
            ],
            "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80",
        ),
        (
            "internalTrafficPolicy is local and there is one local endpoint",
            Some("Local"),
            vec![
                ("10.0.1.1", TEST_NODE_NAME),
                ("10.0.1.2", "node1"),
                ("10.0.1.3", "node2"),
            ],
            "10.0.1.1:80",
        ),
        (
            "internalTrafficPolicy is local and there are multiple local endpoints",
            Some("Local"),
            vec![
                ("10.0.1.1", TEST_NODE_NAME),
                ("10.0.1.2", TEST_NODE_NAME),
                ("10.0.1.3", "node2"),
            ],
            "10.0.1.1:80, 10.0.1.2:80",
        ),
        (
            "internalTrafficPolicy is local and there are no local endpoints",
            Some("Local"),
            vec![
                ("10.0.1.1", "node0"),
                ("10.0.1.2", "node1"),
                ("10.0.1.3", "node2"),
            ],
            "DROP",
        ),
    ];
    for (name, policy, endpoints, output) in cases {
        let mut fp = FakeProxier::new();
        fp.sync_proxy_rules();
        fp.add_service(make_test_service("ns1", "svc1", |svc| {
            let s = spec(svc);
            s.cluster_ip = Some("172.30.1.1".into());
            s.ports = Some(vec![service_port("", 80, "TCP", 0)]);
            s.internal_traffic_policy = policy.map(str::to_string);
        }));
        fp.add_slice(slice("ns1", "svc1", ready_on(&endpoints), "", 80));
        fp.sync_proxy_rules();
        run_packet_flow_tests(
            name,
            &fp,
            &[flow(
                "pod to ClusterIP",
                "10.0.0.2",
                "172.30.1.1",
                80,
                output,
                false,
            )],
        );

        fp.delete_slice("ns1", "svc1-1");
        fp.sync_proxy_rules();
        run_packet_flow_tests(
            name,
            &fp,
            &[flow(
                "endpoints deleted",
                "10.0.0.2",
                "172.30.1.1",
                80,
                "REJECT",
                false,
            )],
        );
    }
}

/// (ip, node, (ready, serving, terminating))
type Ep<'a> = (&'a str, &'a str, (bool, bool, bool));

fn terminating_cases_service(policy: &str) -> core::Service {
    make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.cluster_ip = Some("172.30.1.1".into());
        s.type_ = Some("LoadBalancer".into());
        s.external_traffic_policy = Some(policy.into());
        s.ports = Some(vec![service_port("", 80, "TCP", 0)]);
        s.health_check_node_port = Some(30000);
        set_lb_ingress(svc, &["1.2.3.4"]);
    })
}

/// (name, endpoints, (pod to ClusterIP: output, masq), (external to LB: output, masq))
type TerminatingCase<'a> = (&'a str, Vec<Ep<'a>>, (&'a str, bool), (&'a str, bool));

fn run_terminating_cases(policy: &str, cases: Vec<TerminatingCase>) {
    for (name, endpoints, (to_cluster_ip, cluster_masq), (to_lb, lb_masq)) in cases {
        let mut fp = FakeProxier::new();
        fp.sync_proxy_rules();
        fp.add_service(terminating_cases_service(policy));
        let eps = endpoints
            .iter()
            .map(|(ip, node, c)| endpoint(ip, Some(node), Some(*c)))
            .collect();
        fp.add_slice(slice("ns1", "svc1", eps, "", 80));
        fp.sync_proxy_rules();
        run_packet_flow_tests(
            name,
            &fp,
            &[
                flow(
                    "pod to clusterIP",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    to_cluster_ip,
                    cluster_masq,
                ),
                flow(
                    "external to LB",
                    TEST_EXTERNAL_CLIENT,
                    "1.2.3.4",
                    80,
                    to_lb,
                    lb_masq,
                ),
            ],
        );
        fp.delete_slice("ns1", "svc1-1");
        fp.sync_proxy_rules();
        run_packet_flow_tests(
            name,
            &fp,
            &[
                flow(
                    "pod to clusterIP after endpoints deleted",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "REJECT",
                    false,
                ),
                flow(
                    "external to LB after endpoints deleted",
                    TEST_EXTERNAL_CLIENT,
                    "1.2.3.4",
                    80,
                    "REJECT",
                    false,
                ),
            ],
        );
    }
}

const READY: (bool, bool, bool) = (true, true, false);
const SERVING_TERMINATING: (bool, bool, bool) = (false, true, true);
const TERMINATING: (bool, bool, bool) = (false, false, true);

/// TestTerminatingEndpointsTrafficPolicyLocal: with externalTrafficPolicy Local, ready local
/// endpoints win; only serving-terminating local ones are the fallback.
#[test]
fn test_terminating_endpoints_traffic_policy_local() {
    let node = TEST_NODE_NAME;
    run_terminating_cases(
        "Local",
        vec![
            (
                "ready endpoints exist",
                vec![
                    ("10.0.1.1", node, READY),
                    ("10.0.1.2", node, READY),
                    ("10.0.1.3", node, SERVING_TERMINATING),
                    ("10.0.1.4", node, TERMINATING),
                    ("10.0.1.5", "node-1", READY),
                ],
                ("10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", false),
                ("10.0.1.1:80, 10.0.1.2:80", false),
            ),
            (
                "only terminating endpoints exist",
                vec![
                    ("10.0.1.2", node, SERVING_TERMINATING),
                    ("10.0.1.3", node, SERVING_TERMINATING),
                    ("10.0.1.4", node, TERMINATING),
                    ("10.0.1.5", "node-1", READY),
                ],
                ("10.0.1.5:80", false),
                ("10.0.1.2:80, 10.0.1.3:80", false),
            ),
            (
                "terminating endpoints on remote node",
                vec![("10.0.1.5", "node-1", SERVING_TERMINATING)],
                ("10.0.1.5:80", false),
                ("DROP", false),
            ),
            (
                "no usable endpoints on any node",
                vec![
                    ("10.0.1.5", node, TERMINATING),
                    ("10.0.1.5", "node-1", TERMINATING),
                ],
                ("REJECT", false),
                ("REJECT", false),
            ),
        ],
    );
}

/// TestTerminatingEndpointsTrafficPolicyCluster: ready endpoints anywhere win; serving-
/// terminating ones anywhere are the fallback.
#[test]
fn test_terminating_endpoints_traffic_policy_cluster() {
    let node = TEST_NODE_NAME;
    run_terminating_cases(
        "Cluster",
        vec![
            (
                "ready endpoints exist",
                vec![
                    ("10.0.1.1", node, READY),
                    ("10.0.1.2", node, READY),
                    ("10.0.1.3", "another-node", SERVING_TERMINATING),
                    ("10.0.1.4", "another-node", TERMINATING),
                    ("10.0.1.5", "another-node", READY),
                ],
                ("10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", false),
                ("10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", true),
            ),
            (
                "only terminating endpoints exist",
                vec![
                    ("10.0.1.2", node, SERVING_TERMINATING),
                    ("10.0.1.3", node, SERVING_TERMINATING),
                    ("10.0.1.4", "another-node", TERMINATING),
                    ("10.0.1.5", "another-node", SERVING_TERMINATING),
                ],
                ("10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", false),
                ("10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", true),
            ),
            (
                "terminating endpoints on remote node",
                vec![("10.0.1.5", "node-1", SERVING_TERMINATING)],
                ("10.0.1.5:80", false),
                ("10.0.1.5:80", true),
            ),
            (
                "no usable endpoints on any node",
                vec![
                    ("10.0.1.5", node, TERMINATING),
                    ("10.0.1.5", "node-1", TERMINATING),
                ],
                ("REJECT", false),
                ("REJECT", false),
            ),
        ],
    );
}

/// TestInternalExternalMasquerade: which traffic is masqueraded, with and without a local
/// traffic detector and --masquerade-all.
#[test]
fn test_internal_external_masquerade() {
    let base: Vec<PacketFlowTest> = vec![
        flow(
            "pod to ClusterIP",
            "10.0.0.2",
            "172.30.0.41",
            80,
            "10.180.0.1:80, 10.180.1.1:80",
            false,
        ),
        flow(
            "pod to NodePort",
            "10.0.0.2",
            TEST_NODE_IP,
            3001,
            "10.180.0.1:80, 10.180.1.1:80",
            true,
        ),
        flow(
            "pod to LB",
            "10.0.0.2",
            "1.2.3.4",
            80,
            "10.180.0.1:80, 10.180.1.1:80",
            true,
        ),
        flow(
            "node to ClusterIP",
            TEST_NODE_IP,
            "172.30.0.41",
            80,
            "10.180.0.1:80, 10.180.1.1:80",
            true,
        ),
        flow(
            "node to NodePort",
            TEST_NODE_IP,
            TEST_NODE_IP,
            3001,
            "10.180.0.1:80, 10.180.1.1:80",
            true,
        ),
        flow(
            "node to LB",
            TEST_NODE_IP,
            "1.2.3.4",
            80,
            "10.180.0.1:80, 10.180.1.1:80",
            true,
        ),
        flow(
            "external to ClusterIP",
            TEST_EXTERNAL_CLIENT,
            "172.30.0.41",
            80,
            "10.180.0.1:80, 10.180.1.1:80",
            true,
        ),
        flow(
            "external to NodePort",
            TEST_EXTERNAL_CLIENT,
            TEST_NODE_IP,
            3001,
            "10.180.0.1:80, 10.180.1.1:80",
            true,
        ),
        flow(
            "external to LB",
            TEST_EXTERNAL_CLIENT,
            "1.2.3.4",
            80,
            "10.180.0.1:80, 10.180.1.1:80",
            true,
        ),
        flow(
            "pod to ClusterIP with eTP:Local",
            "10.0.0.2",
            "172.30.0.42",
            80,
            "10.180.0.2:80, 10.180.1.2:80",
            false,
        ),
        flow(
            "pod to NodePort with eTP:Local",
            "10.0.0.2",
            TEST_NODE_IP,
            3002,
            "10.180.0.2:80, 10.180.1.2:80",
            false,
        ),
        flow(
            "pod to LB with eTP:Local",
            "10.0.0.2",
            "5.6.7.8",
            80,
            "10.180.0.2:80, 10.180.1.2:80",
            false,
        ),
        flow(
            "node to ClusterIP with eTP:Local",
            TEST_NODE_IP,
            "172.30.0.42",
            80,
            "10.180.0.2:80, 10.180.1.2:80",
            true,
        ),
        flow(
            "node to NodePort with eTP:Local",
            TEST_NODE_IP,
            TEST_NODE_IP,
            3001,
            "10.180.0.1:80, 10.180.1.1:80",
            true,
        ),
        flow(
            "node to LB with eTP:Local",
            TEST_NODE_IP,
            "5.6.7.8",
            80,
            "10.180.0.2:80, 10.180.1.2:80",
            true,
        ),
        flow(
            "external to ClusterIP with eTP:Local",
            TEST_EXTERNAL_CLIENT,
            "172.30.0.42",
            80,
            "10.180.0.2:80, 10.180.1.2:80",
            true,
        ),
        flow(
            "external to NodePort with eTP:Local",
            TEST_EXTERNAL_CLIENT,
            TEST_NODE_IP,
            3002,
            "10.180.0.2:80",
            false,
        ),
        flow(
            "external to LB with eTP:Local",
            TEST_EXTERNAL_CLIENT,
            "5.6.7.8",
            80,
            "10.180.0.2:80",
            false,
        ),
        flow(
            "pod to ClusterIP with iTP:Local",
            "10.0.0.2",
            "172.30.0.43",
            80,
            "10.180.0.3:80",
            false,
        ),
        flow(
            "pod to NodePort with iTP:Local",
            "10.0.0.2",
            TEST_NODE_IP,
            3003,
            "10.180.0.3:80, 10.180.1.3:80",
            true,
        ),
        flow(
            "pod to LB with iTP:Local",
            "10.0.0.2",
            "9.10.11.12",
            80,
            "10.180.0.3:80, 10.180.1.3:80",
            true,
        ),
        flow(
            "node to ClusterIP with iTP:Local",
            TEST_NODE_IP,
            "172.30.0.43",
            80,
            "10.180.0.3:80",
            true,
        ),
        flow(
            "node to NodePort with iTP:Local",
            TEST_NODE_IP,
            TEST_NODE_IP,
            3003,
            "10.180.0.3:80, 10.180.1.3:80",
            true,
        ),
        flow(
            "node to LB with iTP:Local",
            TEST_NODE_IP,
            "9.10.11.12",
            80,
            "10.180.0.3:80, 10.180.1.3:80",
            true,
        ),
        flow(
            "external to ClusterIP with iTP:Local",
            TEST_EXTERNAL_CLIENT,
            "172.30.0.43",
            80,
            "10.180.0.3:80",
            true,
        ),
        flow(
            "external to NodePort with iTP:Local",
            TEST_EXTERNAL_CLIENT,
            TEST_NODE_IP,
            3003,
            "10.180.0.3:80, 10.180.1.3:80",
            true,
        ),
        flow(
            "external to LB with iTP:Local",
            TEST_EXTERNAL_CLIENT,
            "9.10.11.12",
            80,
            "10.180.0.3:80, 10.180.1.3:80",
            true,
        ),
    ];
    // (name, masqueradeAll, local detector, overrides: (test, output, masq))
    type Override<'a> = (&'a str, Option<&'a str>, Option<bool>);
    let no_detector: Vec<Override> = vec![
        // Without a detector every ClusterIP client counts as a pod: no masquerade.
        ("node to ClusterIP", None, Some(false)),
        ("node to ClusterIP with eTP:Local", None, Some(false)),
        ("node to ClusterIP with iTP:Local", None, Some(false)),
        ("external to ClusterIP", None, Some(false)),
        ("external to ClusterIP with eTP:Local", None, Some(false)),
        ("external to ClusterIP with iTP:Local", None, Some(false)),
        // And no eTP:Local short-circuit for pods: only the local endpoints.
        (
            "pod to NodePort with eTP:Local",
            Some("10.180.0.2:80"),
            None,
        ),
        ("pod to LB with eTP:Local", Some("10.180.0.2:80"), None),
    ];
    let masquerade_all: Vec<Override> = vec![
        ("pod to ClusterIP", None, Some(true)),
        ("pod to ClusterIP with eTP:Local", None, Some(true)),
        ("pod to ClusterIP with iTP:Local", None, Some(true)),
    ];
    let both: Vec<Override> = vec![
        ("pod to ClusterIP", None, Some(true)),
        ("pod to ClusterIP with eTP:Local", None, Some(true)),
        ("pod to ClusterIP with iTP:Local", None, Some(true)),
        (
            "pod to NodePort with eTP:Local",
            Some("10.180.0.2:80"),
            None,
        ),
        ("pod to LB with eTP:Local", Some("10.180.0.2:80"), None),
    ];
    let cases: [(&str, bool, bool, Vec<Override>); 4] = [
        ("base", false, true, vec![]),
        ("no LocalTrafficDetector", false, false, no_detector),
        ("masqueradeAll", true, true, masquerade_all),
        ("masqueradeAll, no LocalTrafficDetector", true, false, both),
    ];
    for (name, masquerade_all, detector, overrides) in cases {
        let mut fp = FakeProxier::new_with(|c| {
            c.masquerade_all = masquerade_all;
            if !detector {
                c.local_detector = LocalDetector::None;
            }
        });
        for (i, (ns, ip, node_port, lb)) in [
            ("ns1", "172.30.0.41", 3001, "1.2.3.4"),
            ("ns2", "172.30.0.42", 3002, "5.6.7.8"),
            ("ns3", "172.30.0.43", 3003, "9.10.11.12"),
        ]
        .into_iter()
        .enumerate()
        {
            let svc_name = format!("svc{}", i + 1);
            fp.add_service(make_test_service(ns, &svc_name, |svc| {
                let s = spec(svc);
                s.type_ = Some("LoadBalancer".into());
                s.cluster_ip = Some(ip.into());
                s.ports = Some(vec![service_port("p80", 80, "TCP", node_port)]);
                s.health_check_node_port = Some(30000 + node_port - 3000);
                if i == 1 {
                    s.external_traffic_policy = Some("Local".into());
                }
                if i == 2 {
                    s.internal_traffic_policy = Some("Local".into());
                }
                set_lb_ingress(svc, &[lb]);
            }));
            let local = format!("10.180.0.{}", i + 1);
            let remote = format!("10.180.1.{}", i + 1);
            fp.add_slice(slice(
                ns,
                &svc_name,
                vec![
                    endpoint(&local, Some(TEST_NODE_NAME), None),
                    endpoint(&remote, Some("remote"), None),
                ],
                "p80",
                80,
            ));
        }
        fp.sync_proxy_rules();

        let mut applied = 0;
        let tests: Vec<PacketFlowTest> = base
            .iter()
            .map(|t| {
                let mut t = PacketFlowTest { ..*t };
                if let Some((_, output, masq)) = overrides.iter().find(|(n, ..)| *n == t.name) {
                    applied += 1;
                    if let Some(masq) = masq {
                        assert_ne!(
                            t.masq, *masq,
                            "{name}: {:?} override is the base value",
                            t.name
                        );
                        t.masq = *masq;
                    }
                    if let Some(output) = output {
                        assert_ne!(
                            t.output, *output,
                            "{name}: {:?} override is the base value",
                            t.name
                        );
                        t.output = output;
                    }
                }
                t
            })
            .collect();
        assert_eq!(
            applied,
            overrides.len(),
            "{name}: overrides matching no test"
        );
        run_packet_flow_tests(name, &fp, &tests);
    }
}

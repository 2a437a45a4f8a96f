//! Upstream's packet-flow tests of pkg/proxy/iptables/proxier_test.go: the same Services
//! and EndpointSlices, and for each packet the endpoints it may reach (or DROP, REJECT)
//! and whether it is masqueraded, traced through the fake kernel's rules by
//! [`super::tracer_test`] (upstream's `iptablesTracer`).

use k8s_openapi::api::discovery::v1 as discovery;

use super::helpers_test::FakeProxier;
use super::tracer_test::run_packet_flow_tests;
use crate::proxy::nftables::NodePortAddresses;
use crate::proxy::nftables::helpers_test::{
    TEST_NODE_IP, TEST_NODE_NAME, endpoint, endpoint_port, make_test_endpoint_slice,
    make_test_service, service_port, set_lb_ingress, spec,
};
use crate::proxy::nftables::tracer_test::{
    PacketFlowTest, TEST_EXTERNAL_CLIENT, TEST_EXTERNAL_CLIENT_BLOCKED, flow,
};

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

/// TestNoEndpointsReject: a service with no endpoints rejects connections to its
/// ClusterIP, ExternalIPs, NodePort and LoadBalancer IP.
#[test]
fn test_no_endpoints_reject_flows() {
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
        &fp.ipt,
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

/// TestClusterIPGeneral: hairpin, several endpoints, targetPort, one port number with
/// three protocols, and ports a Service does not have.
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
    let with_protocol = |name, protocol, port, output| PacketFlowTest {
        name,
        source_ip: "10.180.0.2",
        protocol,
        dest_ip: "172.30.0.42",
        dest_port: port,
        output,
        masq: false,
    };
    run_packet_flow_tests(
        "TestClusterIPGeneral",
        &fp.ipt,
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
                53,
                "10.180.0.1:5353, 10.180.2.1:5353",
            ),
            with_protocol(
                "clusterIP with TCP, UDP, and SCTP on same port (UDP)",
                "udp",
                53,
                "10.180.0.1:53, 10.180.2.1:53",
            ),
            with_protocol(
                "clusterIP with TCP, UDP, and SCTP on same port (SCTP)",
                "sctp",
                53,
                "10.180.0.1:53, 10.180.2.1:53",
            ),
            with_protocol("TCP-only port does not match UDP traffic", "udp", 80, ""),
            flow(
                "svc1 does not accept svc2's ports",
                "10.180.0.2",
                "172.30.0.41",
                443,
                "",
                false,
            ),
        ],
    );
}

/// TestLoadBalancer: loadBalancerSourceRanges on two LB IPs; NodePorts bypass them; the
/// node itself (in a range) and the LB IP as source (a VIP-like LB) are allowed.
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
        &fp.ipt,
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

/// TestNodePorts, its IPv4 cases: --nodeport-addresses and localhost NodePorts.
#[test]
fn test_node_ports() {
    // (name, localhost NodePorts, --nodeport-addresses as the node's IPs in them, alt IP
    // allowed, localnet firewall expected)
    let cases: [(&str, bool, Option<Vec<&str>>, bool, bool); 4] = [
        ("ipv4, localhost-nodeports enabled", true, None, true, true),
        (
            "ipv4, localhost-nodeports disabled",
            false,
            None,
            true,
            false,
        ),
        (
            "ipv4, localhost-nodeports disabled, localhost in nodeport-addresses",
            false,
            // 192.168.0.0/24 and 127.0.0.1/32 of the fake's addresses.
            Some(vec![TEST_NODE_IP, "127.0.0.1"]),
            false,
            false,
        ),
        (
            "ipv4, localhost-nodeports enabled, multiple nodeport-addresses",
            false,
            // 192.168.0.0/24, 192.168.1.0/24, 2001:db8::/64.
            Some(vec![TEST_NODE_IP, TEST_NODE_IP_ALT, "2001:db8::1"]),
            true,
            false,
        ),
    ];
    for (name, localhost, addresses, allow_alt, expect_firewall) in cases {
        let mut fp = FakeProxier::new_with(|config, options| {
            options.localhost_node_ports = localhost;
            if let Some(ips) = &addresses {
                config.node_port_addresses =
                    NodePortAddresses::Ips(ips.iter().map(|ip| ip.parse().unwrap()).collect());
            }
        });
        fp.add_service(make_test_service("ns1", "svc1", |svc| {
            let s = spec(svc);
            s.type_ = Some("NodePort".into());
            s.cluster_ip = Some("172.30.0.41".into());
            s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
        }));
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
        let output = "10.180.0.1:80, 10.180.2.1:80";
        let mut tests = vec![
            flow(
                "pod to cluster IP",
                "10.0.0.2",
                "172.30.0.41",
                80,
                output,
                false,
            ),
            flow(
                "external to nodePort",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                output,
                true,
            ),
            flow(
                "node to nodePort",
                TEST_NODE_IP,
                TEST_NODE_IP,
                3001,
                output,
                true,
            ),
        ];
        tests.push(if localhost {
            flow(
                "localhost to nodePort gets masqueraded",
                "127.0.0.1",
                "127.0.0.1",
                3001,
                output,
                true,
            )
        } else {
            flow(
                "localhost to nodePort is ignored",
                "127.0.0.1",
                "127.0.0.1",
                3001,
                "",
                false,
            )
        });
        tests.push(if allow_alt {
            flow(
                "external to nodePort on secondary IP",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP_ALT,
                3001,
                output,
                true,
            )
        } else {
            flow(
                "secondary nodeIP ignores NodePorts",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP_ALT,
                3001,
                "",
                false,
            )
        });
        run_packet_flow_tests(name, &fp.ipt, &tests);
        let firewall = fp
            .ipt
            .rules(super::interface::Table::Filter, "REKUBE-FIREWALL");
        let want: Option<Vec<String>> = expect_firewall.then(|| {
            vec!["-m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP".to_string()]
        });
        assert_eq!(firewall, want, "{name}");
    }
}

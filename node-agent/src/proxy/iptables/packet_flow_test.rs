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
    type Case<'a> = (&'a str, bool, Option<Vec<&'a str>>, bool, bool);
    let cases: [Case; 4] = [
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

/// TestHealthCheckNodePort: the health check port is accepted, and no longer once the
/// Service is gone.
#[test]
fn test_health_check_node_port() {
    let mut fp = FakeProxier::new();
    fp.add_service(make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.type_ = Some("LoadBalancer".into());
        s.cluster_ip = Some("172.30.0.42".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
        s.health_check_node_port = Some(30000);
        s.external_traffic_policy = Some("Local".into());
    }));
    fp.sync_proxy_rules();
    run_packet_flow_tests(
        "TestHealthCheckNodePort",
        &fp.ipt,
        &[flow(
            "firewall accepts HealthCheckNodePort",
            "1.2.3.4",
            TEST_NODE_IP,
            30000,
            "ACCEPT",
            false,
        )],
    );
    fp.delete_service("ns1", "svc1");
    fp.sync_proxy_rules();
    run_packet_flow_tests(
        "TestHealthCheckNodePort",
        &fp.ipt,
        &[flow(
            "HealthCheckNodePort no longer has any rule",
            "1.2.3.4",
            TEST_NODE_IP,
            30000,
            "",
            false,
        )],
    );
}

fn etp_service(policy: &str) -> k8s_openapi::api::core::v1::Service {
    make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.type_ = Some("LoadBalancer".into());
        s.external_traffic_policy = Some(policy.into());
        s.cluster_ip = Some("172.30.0.41".into());
        s.external_ips = Some(vec!["192.168.99.11".into()]);
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
        if policy == "Local" {
            s.health_check_node_port = Some(30000);
        }
        set_lb_ingress(svc, &["1.2.3.4"]);
    })
}

fn etp_endpoints() -> discovery::EndpointSlice {
    slice(
        "ns1",
        "svc1",
        vec![
            endpoint("10.180.0.1", None, None),
            endpoint("10.180.2.1", Some(TEST_NODE_NAME), None),
        ],
        "p80",
        80,
    )
}

/// TestExternalTrafficPolicyLocal: external traffic reaches only the local endpoint,
/// unmasqueraded; pod traffic to external destinations reaches both.
#[test]
fn test_external_traffic_policy_local() {
    let mut fp = FakeProxier::new();
    fp.add_service(etp_service("Local"));
    fp.add_slice(etp_endpoints());
    fp.sync_proxy_rules();
    let both = "10.180.0.1:80, 10.180.2.1:80";
    let local = "10.180.2.1:80";
    run_packet_flow_tests(
        "TestExternalTrafficPolicyLocal",
        &fp.ipt,
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

/// TestExternalTrafficPolicyCluster: traffic to external destinations is masqueraded.
#[test]
fn test_external_traffic_policy_cluster() {
    let mut fp = FakeProxier::new();
    fp.add_service(etp_service("Cluster"));
    fp.add_slice(etp_endpoints());
    fp.sync_proxy_rules();
    let both = "10.180.0.1:80, 10.180.2.1:80";
    run_packet_flow_tests(
        "TestExternalTrafficPolicyCluster",
        &fp.ipt,
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

/// TestDropInvalidRule: the INVALID drop (with its nfacct counter when it exists), none
/// with nf_conntrack_tcp_be_liberal.
#[test]
fn test_drop_invalid_rule() {
    let forward = [
        "-m comment --comment \"rekube forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT",
        "-m comment --comment \"rekube forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ];
    for (nfacct, liberal, drop) in [
        (false, false, Some("-m conntrack --ctstate INVALID -j DROP")),
        (
            true,
            false,
            Some(
                "-m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP",
            ),
        ),
        (false, true, None),
    ] {
        let mut fp = FakeProxier::new_with(|_, o| {
            o.nfacct = nfacct;
            o.conntrack_tcp_liberal = liberal;
        });
        fp.sync_proxy_rules();
        let want: Vec<String> = drop
            .into_iter()
            .chain(forward)
            .map(str::to_string)
            .collect();
        assert_eq!(
            fp.ipt
                .rules(super::interface::Table::Filter, "REKUBE-FORWARD"),
            Some(want),
            "nfacct {nfacct}, liberal {liberal}"
        );
    }
}

/// TestMasqueradeRule: `--random-fully` when iptables has it.
#[test]
fn test_masquerade_rule() {
    for random_fully in [false, true] {
        let mut fp = FakeProxier::new_with(|_, o| o.random_fully = random_fully);
        fp.sync_proxy_rules();
        let suffix = if random_fully { " --random-fully" } else { "" };
        assert_eq!(
            fp.ipt
                .rules(super::interface::Table::Nat, "REKUBE-POSTROUTING"),
            Some(vec![
                "-m mark ! --mark 0x4000/0x4000 -j RETURN".to_string(),
                "-j MARK --xor-mark 0x4000".to_string(),
                format!(
                    "-m comment --comment \"rekube service traffic requiring SNAT\" -j MASQUERADE{suffix}"
                ),
            ])
        );
    }
}

/// TestComputeProbability.
#[test]
fn test_compute_probability() {
    use super::proxier::probability;
    for (n, want) in [
        (1, "1.0000000000"),
        (2, "0.5000000000"),
        (10, "0.1000000000"),
        (100, "0.0100000000"),
        (1000, "0.0010000000"),
        (10000, "0.0001000000"),
        (100000, "0.0000100000"),
        (100001, "0.0000099999"),
    ] {
        assert_eq!(probability(n), want, "{n}");
    }
    let mut prev = 0.0;
    for i in (2..=100000).rev() {
        let p: f64 = probability(i).parse().unwrap();
        assert!(p > prev, "probability not increasing at {i}");
        prev = p;
    }
}

/// TestInternalTrafficPolicy: Cluster reaches every endpoint, Local only this node's,
/// Local without local endpoints DROPs; with the endpoints gone, REJECT.
#[test]
fn test_internal_traffic_policy() {
    /// (name, policy, (endpoint, node) ×3, output)
    type Case<'a> = (&'a str, &'a str, [(&'a str, &'a str); 3], &'a str);
    let cases: [Case; 4] = [
        (
            "internalTrafficPolicy is cluster",
            "Cluster",
            [
                ("10.0.1.1", TEST_NODE_NAME),
                ("10.0.1.2", "node1"),
                ("10.0.1.3", "node2"),
            ],
            "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80",
        ),
        (
            "internalTrafficPolicy is local and there is one local endpoint",
            "Local",
            [
                ("10.0.1.1", TEST_NODE_NAME),
                ("10.0.1.2", "node1"),
                ("10.0.1.3", "node2"),
            ],
            "10.0.1.1:80",
        ),
        (
            "internalTrafficPolicy is local and there are multiple local endpoints",
            "Local",
            [
                ("10.0.1.1", TEST_NODE_NAME),
                ("10.0.1.2", TEST_NODE_NAME),
                ("10.0.1.3", "node2"),
            ],
            "10.0.1.1:80, 10.0.1.2:80",
        ),
        (
            "internalTrafficPolicy is local and there are no local endpoints",
            "Local",
            [
                ("10.0.1.1", "node0"),
                ("10.0.1.2", "node1"),
                ("10.0.1.3", "node2"),
            ],
            "DROP",
        ),
    ];
    for (name, policy, endpoints, output) in cases {
        let mut fp = FakeProxier::new();
        fp.add_service(make_test_service("ns1", "svc1", |svc| {
            let s = spec(svc);
            s.cluster_ip = Some("172.30.1.1".into());
            s.ports = Some(vec![service_port("", 80, "TCP", 0)]);
            s.internal_traffic_policy = Some(policy.into());
        }));
        fp.add_slice(slice(
            "ns1",
            "svc1",
            endpoints
                .iter()
                .map(|(ip, node)| endpoint(ip, Some(node), Some((true, true, false))))
                .collect(),
            "",
            80,
        ));
        fp.sync_proxy_rules();
        run_packet_flow_tests(
            name,
            &fp.ipt,
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
            &fp.ipt,
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

//! Upstream's pkg/proxy/nftables/proxier_test.go (v1.36), ported: the same Services and
//! EndpointSlices, the same expected rule dumps (upstream's text, table renamed), the same
//! transaction sizes for partial syncs.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1 as core;

use super::helpers_test::*;

fn ports(eps: &mut k8s_openapi::api::discovery::v1::EndpointSlice, name: &str, port: i32) {
    eps.ports = Some(vec![endpoint_port(name, port, "TCP")]);
}

/// TestOverallNFTablesRules: a variety of services and the exact rules they produce.
#[test]
fn test_overall_nftables_rules() {
    let mut fp = FakeProxier::new();
    // ClusterIP service
    fp.add_service(make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.cluster_ip = Some("172.30.0.41".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 0)]);
    }));
    // LoadBalancer service with Local traffic policy
    fp.add_service(make_test_service("ns2", "svc2", |svc| {
        let s = spec(svc);
        s.type_ = Some("LoadBalancer".into());
        s.external_traffic_policy = Some("Local".into());
        s.cluster_ip = Some("172.30.0.42".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
        s.external_ips = Some(vec!["192.168.99.22".into()]);
        s.health_check_node_port = Some(30000);
        set_lb_ingress(svc, &["1.2.3.4"]);
    }));
    // NodePort service
    fp.add_service(make_test_service("ns3", "svc3", |svc| {
        let s = spec(svc);
        s.type_ = Some("NodePort".into());
        s.cluster_ip = Some("172.30.0.43".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3003)]);
    }));
    // ExternalIP service
    fp.add_service(make_test_service("ns4", "svc4", |svc| {
        let s = spec(svc);
        s.type_ = Some("NodePort".into());
        s.cluster_ip = Some("172.30.0.44".into());
        s.external_ips = Some(vec!["192.168.99.33".into()]);
        s.ports = Some(vec![service_port("p80", 80, "TCP", 0)]);
    }));
    // LoadBalancer service with Cluster traffic policy, source ranges, session affinity
    fp.add_service(make_test_service("ns5", "svc5", |svc| {
        let s = spec(svc);
        s.type_ = Some("LoadBalancer".into());
        s.external_traffic_policy = Some("Cluster".into());
        s.cluster_ip = Some("172.30.0.45".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3002)]);
        s.health_check_node_port = Some(30000);
        // Extra whitespace: an invalid value must not crash (backward compatibility).
        s.load_balancer_source_ranges = Some(vec![" 203.0.113.0/25".into()]);
        s.session_affinity = Some("ClientIP".into());
        s.session_affinity_config = Some(core::SessionAffinityConfig {
            client_ip: Some(core::ClientIPConfig {
                timeout_seconds: Some(10800),
            }),
        });
        set_lb_ingress(svc, &["5.6.7.8"]);
    }));
    // ClusterIP service with no endpoints
    fp.add_service(make_test_service("ns6", "svc6", |svc| {
        let s = spec(svc);
        s.type_ = Some("ClusterIP".into());
        s.cluster_ip = Some("172.30.0.46".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 0)]);
    }));

    fp.add_slice(make_test_endpoint_slice("ns1", "svc1", 1, |eps| {
        eps.endpoints = Some(vec![endpoint("10.180.0.1", Some(TEST_NODE_NAME), None)]);
        ports(eps, "p80", 80);
    }));
    // Local LoadBalancer endpoints: no NodeName, so non-local and ignored.
    fp.add_slice(make_test_endpoint_slice("ns2", "svc2", 1, |eps| {
        eps.endpoints = Some(vec![endpoint("10.180.0.2", Some("other-node"), None)]);
        ports(eps, "p80", 80);
    }));
    fp.add_slice(make_test_endpoint_slice("ns3", "svc3", 1, |eps| {
        eps.endpoints = Some(vec![endpoint("10.180.0.3", Some(TEST_NODE_NAME), None)]);
        ports(eps, "p80", 80);
    }));
    fp.add_slice(make_test_endpoint_slice("ns4", "svc4", 1, |eps| {
        eps.endpoints = Some(vec![
            endpoint("10.180.0.4", Some("other-node"), None),
            endpoint("10.180.0.5", Some(TEST_NODE_NAME), None),
        ]);
        ports(eps, "p80", 80);
    }));
    fp.add_slice(make_test_endpoint_slice("ns5", "svc5", 1, |eps| {
        eps.endpoints = Some(vec![endpoint("10.180.0.3", Some(TEST_NODE_NAME), None)]);
        ports(eps, "p80", 80);
    }));

    fp.sync_proxy_rules();

    let expected = BASE_RULES.to_string()
        + r#"
# svc1
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.180.0.1 . 80 }

add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.180.0.1 . 10.180.0.1 . tcp . 80 }

# svc2
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.180.0.2 . 80 }
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local mark set mark or 0x4000 comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"

add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }

add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }

# svc3
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.180.0.3 . 80 }
add chain ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 mark set mark or 0x4000 comment "masquerade"
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80

add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.180.0.3 . 10.180.0.3 . tcp . 80 }

# svc4
add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.180.0.4 . 80 , 1 : 10.180.0.5 . 80 }
add chain ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 mark set mark or 0x4000 comment "masquerade"
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80

add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.180.0.5 . 10.180.0.5 . tcp . 80 }

# svc5
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 mark set mark or 0x4000 comment "masquerade"
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80

add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop

add element ip kube-proxy cluster-ips { 172.30.0.45 }
add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
# 10.180.0.3:80 is already in hairpin-connections, so we don't want another "add element" line...

# svc6
add element ip kube-proxy cluster-ips { 172.30.0.46 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"#;
    assert_nftables_transaction_equal(&expected, &fp.nft.dump());
}

fn cluster_ip_service(
    namespace: &str,
    name: &str,
    ip: &str,
    port_name: &str,
    port: i32,
) -> core::Service {
    make_test_service(namespace, name, |svc| {
        let s = spec(svc);
        s.type_ = Some("ClusterIP".into());
        s.cluster_ip = Some(ip.into());
        s.ports = Some(vec![service_port(port_name, port, "TCP", 0)]);
    })
}

fn one_endpoint_slice(
    namespace: &str,
    name: &str,
    ips: &[&str],
    port_name: &str,
    port: i32,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    make_test_endpoint_slice(namespace, name, 1, |eps| {
        eps.endpoints = Some(
            ips.iter()
                .map(|ip| endpoint(ip, Some(TEST_NODE_NAME), None))
                .collect(),
        );
        ports(eps, port_name, port);
    })
}

const REPEATED_0: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 8080 : goto service-MHHHYRWA-ns2/svc2/tcp/p8080 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.2.1 . 10.0.2.1 . tcp . 8080 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080
add rule ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.2.1 . 8080 }
"#;

const REPEATED_1: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 8080 : goto service-MHHHYRWA-ns2/svc2/tcp/p8080 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.2.1 . 10.0.2.1 . tcp . 8080 }
add element ip kube-proxy hairpin-connections { 10.0.3.1 . 10.0.3.1 . tcp . 80 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080
add rule ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.2.1 . 8080 }

add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.3.1 . 80 }
"#;

const REPEATED_2: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.3.1 . 10.0.3.1 . tcp . 80 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080

add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.3.1 . 80 }
"#;

const REPEATED_3: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.3.1 . 10.0.3.1 . tcp . 80 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.3.1 . 80 }
"#;

const REPEATED_4: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.3.1 . 10.0.3.1 . tcp . 80 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.3.1 . 80 }

add element ip kube-proxy no-endpoint-services { 172.30.0.44 . tcp . 80 comment "ns4/svc4:p80" : goto reject-chain }
"#;

const REPEATED_5: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.3.1 . 10.0.3.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.4.1 . 10.0.4.1 . tcp . 80 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.3.1 . 80 }

add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.4.1 . 80 }
"#;

const REPEATED_6: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.3.2 . 10.0.3.2 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.4.1 . 10.0.4.1 . tcp . 80 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.3.2 . 80 }

add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.4.1 . 80 }
"#;

const REPEATED_7: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.3.2 . 10.0.3.2 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.3.3 . 10.0.3.3 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.4.1 . 10.0.4.1 . tcp . 80 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.0.3.2 . 80 , 1 : 10.0.3.3 . 80 }

add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.4.1 . 80 }
"#;

const REPEATED_8: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy no-endpoint-services { 172.30.0.43 . tcp . 80 comment "ns3/svc3:p80" : goto reject-chain }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.4.1 . 10.0.4.1 . tcp . 80 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80

add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.4.1 . 80 }
"#;

const REPEATED_9: &str = r#"
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.0.1.1 . 10.0.1.1 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.3.2 . 10.0.3.2 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.3.3 . 10.0.3.3 . tcp . 80 }
add element ip kube-proxy hairpin-connections { 10.0.4.1 . 10.0.4.1 . tcp . 80 }

add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.1.1 . 80 }

add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.0.3.2 . 80 , 1 : 10.0.3.3 . 80 }

add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.0.4.1 . 80 }
"#;

/// TestSyncProxyRulesRepeated (v1.36.3): syncs after various changes; after the first
/// (full) sync, each partial sync's transaction holds only what changed, with upstream's
/// operation counts, and chains of removed services are flushed at once and deleted a
/// second later. Partial syncs never list the table: they know what they left there.
#[test]
fn test_sync_proxy_rules_repeated() {
    let mut fp = FakeProxier::new();
    fp.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    fp.add_service(cluster_ip_service(
        "ns2",
        "svc2",
        "172.30.0.42",
        "p8080",
        8080,
    ));
    fp.add_slice(one_endpoint_slice("ns1", "svc1", &["10.0.1.1"], "p80", 80));
    fp.add_slice(one_endpoint_slice(
        "ns2",
        "svc2",
        &["10.0.2.1"],
        "p8080",
        8080,
    ));
    fp.sync_proxy_rules();
    let expect = |n: &str| [BASE_RULES, n].concat();
    assert_nftables_transaction_equal(&expect(REPEATED_0), &fp.nft.dump());
    let lists_after_full_sync = fp.nft.list_count();
    assert!(lists_after_full_sync > 0, "a full sync lists the table");

    // Add a new service and its endpoints.
    fp.add_service(cluster_ip_service("ns3", "svc3", "172.30.0.43", "p80", 80));
    fp.add_slice(one_endpoint_slice("ns3", "svc3", &["10.0.3.1"], "p80", 80));
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_1), &fp.nft.dump());
    // 1 element each to cluster-ips, service-ips and hairpin-connections; add+flush the
    // service chain, 1 rule.
    assert_eq!(fp.last_operations(), 3 + 3);

    // Delete a service: its chain is flushed, not deleted yet.
    fp.delete_service("ns2", "svc2");
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_2), &fp.nft.dump());
    // 1 element each from cluster-ips, service-ips and hairpin-connections; flush.
    assert_eq!(fp.last_operations(), 3 + 1);

    // Time passes: the stale chain is deleted (in a transaction of its own).
    fp.age_stale_chains();
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_3), &fp.nft.dump());
    assert_eq!(fp.last_operations(), 0);

    // Add a service, sync, then add its endpoints.
    fp.add_service(cluster_ip_service("ns4", "svc4", "172.30.0.44", "p80", 80));
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_4), &fp.nft.dump());
    // 1 element each to cluster-ips and no-endpoint-services.
    assert_eq!(fp.last_operations(), 2);
    fp.add_slice(one_endpoint_slice("ns4", "svc4", &["10.0.4.1"], "p80", 80));
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_5), &fp.nft.dump());
    // 1 element to service-ips, 1 from no-endpoint-services, 1 to hairpin-connections;
    // add+flush the service chain, 1 rule.
    assert_eq!(fp.last_operations(), 2 + 1 + 3);

    // Change an endpoint of an existing service.
    fp.add_slice(one_endpoint_slice("ns3", "svc3", &["10.0.3.2"], "p80", 80));
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_6), &fp.nft.dump());
    // The old hairpin element out, the new one in; add+flush the service chain, 1 rule.
    assert_eq!(fp.last_operations(), 2 + 3);
    fp.age_stale_chains();

    // Add an endpoint to a service.
    fp.add_slice(one_endpoint_slice(
        "ns3",
        "svc3",
        &["10.0.3.2", "10.0.3.3"],
        "p80",
        80,
    ));
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_7), &fp.nft.dump());
    assert_eq!(fp.last_operations(), 1 + 3);

    // Empty a service's endpoints: its chain is flushed, not deleted yet.
    fp.add_slice(one_endpoint_slice("ns3", "svc3", &[], "p80", 80));
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_8), &fp.nft.dump());
    // 1 element from service-ips, 1 to no-endpoint-services, 2 from
    // hairpin-connections; flush the service chain.
    assert_eq!(fp.last_operations(), 2 + 2 + 1);
    let stale: BTreeSet<&str> = fp.proxier.stale_chains().map(String::as_str).collect();
    assert_eq!(stale, BTreeSet::from(["service-4AT6LBPK-ns3/svc3/tcp/p80"]));

    // Restore the endpoints at once: the chain is restored and no longer stale.
    fp.add_slice(one_endpoint_slice(
        "ns3",
        "svc3",
        &["10.0.3.2", "10.0.3.3"],
        "p80",
        80,
    ));
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_9), &fp.nft.dump());
    assert_eq!(fp.last_operations(), 2 + 2 + 3);
    assert_eq!(fp.proxier.stale_chains().count(), 0);

    // Empty and restore after the stale chain aged: deleted first, then recreated.
    fp.add_slice(one_endpoint_slice("ns3", "svc3", &[], "p80", 80));
    fp.sync_proxy_rules();
    fp.age_stale_chains();
    fp.add_slice(one_endpoint_slice(
        "ns3",
        "svc3",
        &["10.0.3.2", "10.0.3.3"],
        "p80",
        80,
    ));
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_9), &fp.nft.dump());

    // No change: same rules, an empty transaction.
    fp.sync_proxy_rules();
    assert_nftables_transaction_equal(&expect(REPEATED_9), &fp.nft.dump());
    assert_eq!(fp.last_operations(), 0);
    assert_eq!(
        fp.nft.list_count(),
        lists_after_full_sync,
        "partial syncs list nothing"
    );
}

/// TestBadIPs: addresses and CIDRs with leading zeros are written in canonical form.
#[test]
fn test_bad_ips() {
    let mut fp = FakeProxier::new();
    fp.add_service(make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.type_ = Some("LoadBalancer".into());
        s.cluster_ip = Some("172.30.0.041".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
        s.external_ips = Some(vec!["192.168.099.022".into()]);
        s.load_balancer_source_ranges = Some(vec!["203.0.113.000/025".into()]);
        set_lb_ingress(svc, &["1.2.3.004"]);
    }));
    fp.add_slice(one_endpoint_slice(
        "ns1",
        "svc1",
        &["10.180.00.001"],
        "p80",
        80,
    ));
    fp.sync_proxy_rules();

    let expected = BASE_RULES.to_string()
        + r#"
# svc1
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 10.180.0.1 . 80 }

add chain ip kube-proxy external-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy external-ULMVA6XW-ns1/svc1/tcp/p80 mark set mark or 0x4000 comment "masquerade"
add rule ip kube-proxy external-ULMVA6XW-ns1/svc1/tcp/p80 goto service-ULMVA6XW-ns1/svc1/tcp/p80


add chain ip kube-proxy firewall-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy firewall-ULMVA6XW-ns1/svc1/tcp/p80 ip saddr != { 203.0.113.0/25 } drop

add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy firewall-ips { 1.2.3.4 . tcp . 80 : goto firewall-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.180.0.1 . 10.180.0.1 . tcp . 80 }
"#;
    assert_nftables_transaction_equal(&expected, &fp.nft.dump());
}

/// TestLoadBalancerIngressRouteTypeProxy: an LB IP in ipMode Proxy gets no rule.
#[test]
fn test_load_balancer_ingress_route_type_proxy() {
    let cases = [
        (
            "ipMode Proxy",
            "10.20.30.41",
            "1.2.3.4",
            Some("Proxy"),
            false,
        ),
        ("ipMode VIP", "10.20.30.42", "1.2.3.5", Some("VIP"), true),
        ("ipMode nil", "10.20.30.43", "1.2.3.6", None, true),
    ];
    for (name, svc_ip, lb_ip, ip_mode, expected_rule) in cases {
        let mut fp = FakeProxier::new();
        fp.add_service(make_test_service("ns1", "svc1", |svc| {
            let s = spec(svc);
            s.type_ = Some("LoadBalancer".into());
            s.cluster_ip = Some(svc_ip.into());
            s.ports = Some(vec![service_port("p80", 80, "TCP", 3001)]);
            svc.status = Some(core::ServiceStatus {
                load_balancer: Some(core::LoadBalancerStatus {
                    ingress: Some(vec![core::LoadBalancerIngress {
                        ip: Some(lb_ip.into()),
                        ip_mode: ip_mode.map(str::to_string),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            });
        }));
        fp.add_slice(one_endpoint_slice(
            "ns1",
            "svc1",
            &["10.180.0.1"],
            "p80",
            80,
        ));
        fp.sync_proxy_rules();
        let found = fp
            .nft
            .elements("service-ips")
            .iter()
            .any(|e| e.starts_with(&format!("{lb_ip} . tcp . 80 :")));
        assert_eq!(found, expected_rule, "{name}");
    }
}

/// TestNoEndpointsMetric: the services counted in sync_proxy_rules_no_local_endpoints_total.
#[test]
fn test_no_endpoints_metric() {
    let local = [
        ("10.0.1.1", TEST_NODE_NAME),
        ("10.0.1.2", "node1"),
        ("10.0.1.3", "node2"),
    ];
    let remote = [
        ("10.0.1.1", "node0"),
        ("10.0.1.2", "node1"),
        ("10.0.1.3", "node2"),
    ];
    // (name, iTP Local, eTP Local, endpoints (ip, node), no local internal, external)
    type Case<'a> = (&'a str, bool, bool, &'a [(&'a str, &'a str)], usize, usize);
    let cases: [Case; 7] = [
        (
            "internalTrafficPolicy is set and there are local endpoints",
            true,
            false,
            &local,
            0,
            0,
        ),
        (
            "externalTrafficPolicy is set and there are local endpoints",
            false,
            true,
            &local,
            0,
            0,
        ),
        (
            "both policies are set and there are local endpoints",
            true,
            true,
            &local,
            0,
            0,
        ),
        (
            "internalTrafficPolicy is set and there are no local endpoints",
            true,
            false,
            &remote,
            1,
            0,
        ),
        (
            "externalTrafficPolicy is set and there are no local endpoints",
            false,
            true,
            &remote,
            0,
            1,
        ),
        (
            "both policies are set and there are no local endpoints",
            true,
            true,
            &remote,
            1,
            1,
        ),
        (
            "both policies are set and there are no endpoints at all",
            true,
            true,
            &[],
            0,
            0,
        ),
    ];
    for (name, itp_local, etp_local, endpoints, internal, external) in cases {
        let mut fp = FakeProxier::new();
        fp.add_service(make_test_service("ns1", "svc1", |svc| {
            let s = spec(svc);
            s.cluster_ip = Some("172.30.1.1".into());
            s.ports = Some(vec![service_port("", 80, "TCP", 123)]);
            if itp_local {
                s.internal_traffic_policy = Some("Local".into());
            }
            if etp_local {
                s.type_ = Some("NodePort".into());
                s.external_traffic_policy = Some("Local".into());
            }
        }));
        fp.add_slice(make_test_endpoint_slice("ns1", "svc1", 1, |eps| {
            eps.endpoints = Some(
                endpoints
                    .iter()
                    .map(|(ip, node)| endpoint(ip, Some(node), Some((true, true, false))))
                    .collect(),
            );
            ports(eps, "", 80);
        }));
        let plan = fp.sync_proxy_rules();
        assert_eq!(
            plan.no_local_endpoints.internal, internal,
            "{name}: internal"
        );
        assert_eq!(
            plan.no_local_endpoints.external, external,
            "{name}: external"
        );
    }
}

/// CleanupLeftovers: the table, and nothing else, deleted; a second cleanup still succeeds.
#[test]
fn cleanup_deletes_only_the_table() {
    use super::interface::Nftables;
    use super::proxier::{REKUBE_PROXY_TABLE, cleanup_transaction};
    use crate::proxy::types::IpFamily;

    let mut fp = FakeProxier::new();
    fp.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    fp.sync_proxy_rules();
    let cleanup = cleanup_transaction(IpFamily::V4, REKUBE_PROXY_TABLE);
    assert_eq!(
        cleanup.to_string(),
        "add table ip rekube-proxy\ndelete table ip rekube-proxy\n"
    );
    fp.nft.run(&cleanup).unwrap();
    assert_eq!(fp.nft.dump(), "");
    fp.nft.run(&cleanup).unwrap();
}

/// A restarted agent resyncs from scratch over the table its previous run left: the
/// first sync is full, chains of Services deleted while it was down are flushed and then
/// deleted, and the table ends as a fresh agent's would.
#[test]
fn restart_resyncs_from_scratch() {
    let mut fp = FakeProxier::new();
    fp.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    fp.add_service(cluster_ip_service(
        "ns2",
        "svc2",
        "172.30.0.42",
        "p8080",
        8080,
    ));
    fp.add_slice(one_endpoint_slice("ns1", "svc1", &["10.0.1.1"], "p80", 80));
    fp.add_slice(one_endpoint_slice(
        "ns2",
        "svc2",
        &["10.0.2.1"],
        "p8080",
        8080,
    ));
    fp.sync_proxy_rules();

    // The agent restarts; meanwhile svc2 is deleted and svc1 gets a second endpoint.
    fp.restart();
    fp.delete_service("ns2", "svc2");
    fp.add_slice(one_endpoint_slice(
        "ns1",
        "svc1",
        &["10.0.1.1", "10.0.1.2"],
        "p80",
        80,
    ));
    let plan = fp.sync_proxy_rules();
    assert!(plan.full_sync);
    assert_eq!(
        fp.proxier.stale_chains().count(),
        1,
        "svc2's service chain (no endpoint chains without session affinity)"
    );
    fp.age_stale_chains();
    fp.sync_proxy_rules();

    let mut fresh = FakeProxier::new();
    fresh.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    fresh.add_slice(one_endpoint_slice(
        "ns1",
        "svc1",
        &["10.0.1.1", "10.0.1.2"],
        "p80",
        80,
    ));
    fresh.sync_proxy_rules();
    assert_eq!(
        super::helpers_test::sort_nftables_transaction(&fp.nft.dump()),
        super::helpers_test::sort_nftables_transaction(&fresh.nft.dump())
    );
}

/// rekube's: a stale chain is deleted a second after it was first found stale, however
/// often syncs come meanwhile (upstream re-stamps it at every sync, so syncs less than a
/// second apart would keep it forever).
#[test]
fn stale_chains_go_a_second_after_they_went_stale_despite_frequent_syncs() {
    let mut fp = FakeProxier::new();
    fp.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    fp.add_slice(one_endpoint_slice("ns1", "svc1", &["10.0.1.1"], "p80", 80));
    fp.sync_proxy_rules();
    fp.delete_service("ns1", "svc1");
    fp.sync_proxy_rules();
    let stale = fp.proxier.stale_chains().count();
    assert_eq!(stale, 1, "the service chain is stale");
    // Syncs 0.6 s apart (another Service changes each time).
    for (i, ip) in ["172.30.0.42", "172.30.0.43"].into_iter().enumerate() {
        fp.proxier
            .age_stale_chains(std::time::Duration::from_millis(600));
        fp.add_service(cluster_ip_service("ns2", &format!("s{i}"), ip, "p80", 80));
        fp.sync_proxy_rules();
    }
    // 1.2 s after they went stale: deleted.
    assert_eq!(fp.proxier.stale_chains().count(), 0);
    assert!(!fp.nft.dump().contains("ns1/svc1"), "{}", fp.nft.dump());
}

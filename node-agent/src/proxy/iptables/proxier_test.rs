//! Upstream's pkg/proxy/iptables/proxier_test.go, ported: the same Services and
//! EndpointSlices, the same expected restore inputs (upstream's text, `KUBE-` renamed to
//! `REKUBE-` by the comparison helper), and the kernel state after each sync checked
//! through the fake.

use super::fake::FakeIptables;
use super::helpers_test::*;
use super::interface::{Iptables, Table};
use super::names::is_rekube_chain;
use super::proxier::LARGE_CLUSTER_ENDPOINTS_THRESHOLD;
use super::sync::cleanup;
use crate::proxy::nftables::helpers_test::TEST_NODE_NAME;
use crate::proxy::nftables::helpers_test::{
    endpoint, endpoint_port, make_test_endpoint_slice, make_test_service, service_port,
    set_lb_ingress, spec,
};
use crate::proxy::types::IpFamily;

fn ports(eps: &mut k8s_openapi::api::discovery::v1::EndpointSlice, name: &str, port: i32) {
    eps.ports = Some(vec![endpoint_port(name, port, "TCP")]);
}

fn one_slice(
    namespace: &str,
    name: &str,
    ips: &[&str],
    port_name: &str,
    port: i32,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    make_test_endpoint_slice(namespace, name, 1, |eps| {
        eps.endpoints = Some(ips.iter().map(|ip| endpoint(ip, None, None)).collect());
        ports(eps, port_name, port);
    })
}

fn cluster_ip_service(
    namespace: &str,
    name: &str,
    ip: &str,
    port_name: &str,
    port: i32,
) -> k8s_openapi::api::core::v1::Service {
    make_test_service(namespace, name, |svc| {
        let s = spec(svc);
        s.type_ = Some("ClusterIP".into());
        s.cluster_ip = Some(ip.into());
        s.ports = Some(vec![service_port(port_name, port, "TCP", 0)]);
    })
}

/// TestSyncProxyRulesLargeClusterMode, its stale-chain part: over 1 000 endpoints a
/// deleted Service's chains are not deleted by the next sync (no `iptables-save` then),
/// only by one after the cleanup period (30 s here, upstream's syncPeriod).
#[test]
fn test_sync_proxy_rules_large_cluster_mode_stale_chains() {
    let mut fp = FakeProxier::new();
    let many = |prefix: &str| -> Vec<String> {
        (0..LARGE_CLUSTER_ENDPOINTS_THRESHOLD / 2 - 1)
            .map(|i| format!("{prefix}.{}.{}", i % 256, i / 256))
            .collect()
    };
    fp.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    fp.add_service(cluster_ip_service(
        "ns2",
        "svc2",
        "172.30.0.42",
        "p8080",
        8080,
    ));
    fp.add_service(cluster_ip_service(
        "ns3",
        "svc3",
        "172.30.0.43",
        "p8081",
        8081,
    ));
    let (ips1, ips2) = (many("10.0"), many("10.1"));
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    fp.add_slice(one_slice("ns1", "svc1", &refs(&ips1), "p80", 80));
    fp.add_slice(one_slice("ns2", "svc2", &refs(&ips2), "p8080", 8080));
    fp.add_slice(one_slice(
        "ns3",
        "svc3",
        &["203.0.113.4", "203.0.113.8", "203.0.113.12"],
        "p8081",
        8081,
    ));
    fp.sync_proxy_rules();
    fp.add_service(cluster_ip_service(
        "ns4",
        "svc4",
        "172.30.0.44",
        "p8082",
        8082,
    ));
    fp.add_slice(one_slice("ns4", "svc4", &["10.4.0.1"], "p8082", 8082));
    fp.sync_proxy_rules();
    assert!(fp.ipt.dump().contains("--to-destination 10.4.0.1:8082"));

    // Deleted just after a listing: its chains stay (referenced by nothing).
    fp.proxier.nat_chains_listed(fp.now);
    fp.delete_service("ns4", "svc4");
    fp.delete_slice("ns4", "svc4");
    fp.sync_proxy_rules();
    let restore = fp.ipt.last_restore().unwrap();
    assert!(!restore.contains("-X "), "no chain deleted yet:\n{restore}");
    assert!(fp.ipt.dump().contains("--to-destination 10.4.0.1:8082"));

    // The cleanup period passed: the next sync lists the table and deletes them.
    fp.now += std::time::Duration::from_secs(31);
    fp.sync_proxy_rules();
    let restore = fp.ipt.last_restore().unwrap();
    assert_eq!(
        restore
            .lines()
            .filter(|l| l.starts_with("-X REKUBE-"))
            .count(),
        2,
        "the SVC and SEP chains of svc4:\n{restore}"
    );
    assert!(!fp.ipt.dump().contains("10.4.0.1"));
}

/// TestOverallIPTablesRules: a variety of services and the exact rules they produce.
#[test]
fn test_overall_iptables_rules() {
    let mut fp = FakeProxier::new();
    fp.add_service(make_test_service("ns1", "svc1", |svc| {
        let s = spec(svc);
        s.cluster_ip = Some("172.30.0.41".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 0)]);
    }));
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
    fp.add_service(make_test_service("ns3", "svc3", |svc| {
        let s = spec(svc);
        s.type_ = Some("NodePort".into());
        s.cluster_ip = Some("172.30.0.43".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 3003)]);
    }));
    fp.add_service(make_test_service("ns4", "svc4", |svc| {
        let s = spec(svc);
        s.type_ = Some("NodePort".into());
        s.cluster_ip = Some("172.30.0.44".into());
        s.external_ips = Some(vec!["192.168.99.33".into()]);
        s.ports = Some(vec![service_port("p80", 80, "TCP", 0)]);
    }));
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
        s.session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
            client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
                timeout_seconds: Some(10800),
            }),
        });
        set_lb_ingress(svc, &["5.6.7.8"]);
    }));
    fp.add_service(make_test_service("ns6", "svc6", |svc| {
        let s = spec(svc);
        s.type_ = Some("ClusterIP".into());
        s.cluster_ip = Some("172.30.0.46".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 0)]);
    }));
    fp.add_slice(one_slice("ns1", "svc1", &["10.180.0.1"], "p80", 80));
    // Not on this node: non-local, so ignored by the Local policy.
    fp.add_slice(one_slice("ns2", "svc2", &["10.180.0.2"], "p80", 80));
    fp.add_slice(one_slice("ns3", "svc3", &["10.180.0.3"], "p80", 80));
    fp.add_slice(make_test_endpoint_slice("ns4", "svc4", 1, |eps| {
        eps.endpoints = Some(vec![
            endpoint("10.180.0.4", None, None),
            endpoint("10.180.0.5", Some(TEST_NODE_NAME), None),
        ]);
        ports(eps, "p80", 80);
    }));
    fp.add_slice(one_slice("ns5", "svc5", &["10.180.0.3"], "p80", 80));

    let plan = fp.sync_proxy_rules();

    let expected = r#"
		*filter
		:KUBE-NODEPORTS - [0:0]
		:KUBE-SERVICES - [0:0]
		:KUBE-EXTERNAL-SERVICES - [0:0]
		:KUBE-FIREWALL - [0:0]
		:KUBE-FORWARD - [0:0]
		:KUBE-PROXY-FIREWALL - [0:0]
		-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
		-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
		-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP
		-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
		-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP
		-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
		-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
		-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
		-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
		-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
		COMMIT
		*nat
		:KUBE-NODEPORTS - [0:0]
		:KUBE-SERVICES - [0:0]
		:KUBE-EXT-4SW47YFZTEDKD3PK - [0:0]
		:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
		:KUBE-EXT-NUKIZ6OKUXPJNT4C - [0:0]
		:KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]
		:KUBE-FW-NUKIZ6OKUXPJNT4C - [0:0]
		:KUBE-MARK-MASQ - [0:0]
		:KUBE-POSTROUTING - [0:0]
		:KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]
		:KUBE-SEP-I77PXRDZVX7PMWMN - [0:0]
		:KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
		:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
		:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
		:KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]
		:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
		:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
		:KUBE-SVC-NUKIZ6OKUXPJNT4C - [0:0]
		:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
		:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
		-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
		-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
		-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3003 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-X27LE4BHSL4DOUIK
		-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK
		-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3002 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-NUKIZ6OKUXPJNT4C
		-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
		-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
		-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
		-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
		-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
		-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
		-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK
		-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-4SW47YFZTEDKD3PK
		-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C
		-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C
		-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
		-A KUBE-EXT-4SW47YFZTEDKD3PK -m comment --comment "masquerade traffic for ns4/svc4:p80 external destinations" -j KUBE-MARK-MASQ
		-A KUBE-EXT-4SW47YFZTEDKD3PK -j KUBE-SVC-4SW47YFZTEDKD3PK
		-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
		-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
		-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
		-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
		-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C
		-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ
		-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK
		-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
		-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"
		-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
		-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
		-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
		-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
		-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ
		-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80
		-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
		-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
		-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
		-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
		-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
		-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
		-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
		-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
		-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ
		-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80
		-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
		-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC
		-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ
		-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
		-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ
		-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
		-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN
		-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN
		-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
		-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
		-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
		-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
		COMMIT
		"#;
    assert!(plan.full_sync);
    assert_iptables_rules_equal(expected, &plan.data);
    // The kernel (the fake) holds the same, plus the jump rules from the built-in chains.
    assert_iptables_rules_equal(expected, &fp.ipt.dump());
    let prerouting = fp.ipt.rules(Table::Nat, "PREROUTING").unwrap();
    assert_eq!(
        prerouting,
        vec!["-m comment --comment rekube service portals -j REKUBE-SERVICES"]
    );
}

/// An iptables-save as (table, chain) → rules, whatever order the chains were made in.
fn normalize(save: &str) -> std::collections::BTreeMap<(String, String), Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut table = String::new();
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(c) = line.strip_prefix(':') {
            let chain = c.split_whitespace().next().unwrap().to_string();
            out.entry((table.clone(), chain)).or_insert_with(Vec::new);
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, rule) = rest.split_once(' ').unwrap();
            out.entry((table.clone(), chain.to_string()))
                .or_insert_with(Vec::new)
                .push(rule.to_string());
        }
    }
    out
}

/// The filter table of every step of TestSyncProxyRulesRepeated (no nfacct counters in
/// that version of the test).
const REPEATED_FILTER: &str = r#"
		*filter
		:KUBE-NODEPORTS - [0:0]
		:KUBE-SERVICES - [0:0]
		:KUBE-EXTERNAL-SERVICES - [0:0]
		:KUBE-FIREWALL - [0:0]
		:KUBE-FORWARD - [0:0]
		:KUBE-PROXY-FIREWALL - [0:0]
		-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
		-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
		-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
		-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
		COMMIT
"#;

const REPEATED_NAT_FIXED: &str = r#"
		-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
		-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
		-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
		-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
"#;

/// TestSyncProxyRulesRepeated: syncs after various changes. After the first (full) sync,
/// each partial restore holds only the chains of the Services that changed, and a deleted
/// Service's chains are flushed and deleted (`-X`) in the same restore; the kernel's
/// tables always equal those of a full sync.
#[test]
fn test_sync_proxy_rules_repeated() {
    let mut fp = FakeProxier::new_with(|_, o| o.nfacct = false);
    fp.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    fp.add_service(cluster_ip_service(
        "ns2",
        "svc2",
        "172.30.0.42",
        "p8080",
        8080,
    ));
    fp.add_slice(one_slice("ns1", "svc1", &["10.0.1.1"], "p80", 80));
    fp.add_slice(one_slice("ns2", "svc2", &["10.0.2.1"], "p8080", 8080));
    let plan = fp.sync_proxy_rules();
    assert!(plan.full_sync);
    let first = format!(
        "{REPEATED_FILTER}{}{REPEATED_NAT_FIXED}{}",
        r#"
		*nat
		:KUBE-NODEPORTS - [0:0]
		:KUBE-SERVICES - [0:0]
		:KUBE-MARK-MASQ - [0:0]
		:KUBE-POSTROUTING - [0:0]
		:KUBE-SEP-SNQ3ZNILQDEJNDQO - [0:0]
		:KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]
		:KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]
		:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
		-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
		-A KUBE-SERVICES -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 -j KUBE-SVC-2VJB64SDSIJUP5T6
		-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
"#,
        r#"
		-A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -s 10.0.1.1 -j KUBE-MARK-MASQ
		-A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.1:80
		-A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -s 10.0.2.1 -j KUBE-MARK-MASQ
		-A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -m tcp -p tcp -j DNAT --to-destination 10.0.2.1:8080
		-A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
		-A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 -> 10.0.2.1:8080" -j KUBE-SEP-UHEGFW77JX3KXTOV
		-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
		-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -j KUBE-SEP-SNQ3ZNILQDEJNDQO
		COMMIT
"#
    );
    assert_iptables_rules_equal(&first, &plan.data);

    // A new service and its endpoints: only its SVC and SEP chains are written.
    fp.add_service(cluster_ip_service("ns3", "svc3", "172.30.0.43", "p80", 80));
    fp.add_slice(one_slice("ns3", "svc3", &["10.0.3.1"], "p80", 80));
    let plan = fp.sync_proxy_rules();
    assert!(!plan.full_sync);
    let second = format!(
        "{REPEATED_FILTER}{}{REPEATED_NAT_FIXED}{}",
        r#"
		*nat
		:KUBE-NODEPORTS - [0:0]
		:KUBE-SERVICES - [0:0]
		:KUBE-MARK-MASQ - [0:0]
		:KUBE-POSTROUTING - [0:0]
		:KUBE-SEP-BSWRHOQ77KEXZLNL - [0:0]
		:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
		-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
		-A KUBE-SERVICES -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 -j KUBE-SVC-2VJB64SDSIJUP5T6
		-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
		-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
"#,
        r#"
		-A KUBE-SEP-BSWRHOQ77KEXZLNL -m comment --comment ns3/svc3:p80 -s 10.0.3.1 -j KUBE-MARK-MASQ
		-A KUBE-SEP-BSWRHOQ77KEXZLNL -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.1:80
		-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
		-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.1:80" -j KUBE-SEP-BSWRHOQ77KEXZLNL
		COMMIT
"#
    );
    assert_iptables_rules_equal(&second, &plan.data);

    // A deleted service: its chains flushed and deleted, the others untouched.
    fp.delete_service("ns2", "svc2");
    let plan = fp.sync_proxy_rules();
    let third = format!(
        "{REPEATED_FILTER}{}{REPEATED_NAT_FIXED}COMMIT\n",
        r#"
		*nat
		:KUBE-NODEPORTS - [0:0]
		:KUBE-SERVICES - [0:0]
		:KUBE-MARK-MASQ - [0:0]
		:KUBE-POSTROUTING - [0:0]
		:KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]
		:KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]
		-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
		-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
		-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
"#
    );
    assert_iptables_rules_equal(&third, &plan.data);
    assert_eq!(plan.deleted_chains, 2);
    assert!(plan.data.contains("-X REKUBE-SEP-UHEGFW77JX3KXTOV\n"));
    assert!(plan.data.contains("-X REKUBE-SVC-2VJB64SDSIJUP5T6\n"));

    // A service without endpoints: only its REJECT rule.
    fp.add_service(cluster_ip_service("ns4", "svc4", "172.30.0.44", "p80", 80));
    let plan = fp.sync_proxy_rules();
    assert!(plan.data.contains(
        "-A REKUBE-SERVICES -m comment --comment \"ns4/svc4:p80 has no endpoints\" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j REJECT\n"
    ));
    assert!(!plan.data.contains(":REKUBE-SVC-"), "{}", plan.data);

    // Its endpoints come: its chains are written.
    fp.add_slice(one_slice("ns4", "svc4", &["10.0.4.1"], "p80", 80));
    let plan = fp.sync_proxy_rules();
    assert!(plan.data.contains(":REKUBE-SEP-AYCN5HPXMIRJNJXU - [0:0]\n"));
    assert!(plan.data.contains(":REKUBE-SVC-4SW47YFZTEDKD3PK - [0:0]\n"));
    assert!(!plan.data.contains(":REKUBE-SVC-XPGD46QRK7WJZT7O"));

    // An endpoint of svc3 changes: its SVC chain and both SEP chains (the new one
    // written, the old one deleted).
    fp.add_slice(one_slice("ns3", "svc3", &["10.0.3.2"], "p80", 80));
    let plan = fp.sync_proxy_rules();
    assert!(plan.data.contains(":REKUBE-SVC-X27LE4BHSL4DOUIK - [0:0]\n"));
    assert!(plan.data.contains(":REKUBE-SEP-DKCFIS26GWF2WLWC - [0:0]\n"));
    assert!(plan.data.contains("-X REKUBE-SEP-BSWRHOQ77KEXZLNL\n"));

    // A sync with no change writes no service chain.
    let plan = fp.sync_proxy_rules();
    assert!(!plan.data.contains(":REKUBE-SVC-"), "{}", plan.data);
    assert!(!plan.data.contains(":REKUBE-SEP-"), "{}", plan.data);

    // After all the partial syncs, the kernel equals a fresh proxier's full sync.
    let mut fresh = FakeProxier::new_with(|_, o| o.nfacct = false);
    fresh.services = fp.services.clone();
    fresh.slices = fp.slices.clone();
    fresh.sync_proxy_rules();
    assert_eq!(normalize(&fp.ipt.dump()), normalize(&fresh.ipt.dump()));
}

/// TestNoEndpointsReject: a service without endpoints rejects at its ClusterIP,
/// ExternalIP, NodePort and LoadBalancer IP (filter rules, no nat chains).
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
    let plan = fp.sync_proxy_rules();
    for rule in [
        "-A REKUBE-SERVICES -m comment --comment \"ns1/svc1:p80 has no endpoints\" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j REJECT",
        "-A REKUBE-EXTERNAL-SERVICES -m comment --comment \"ns1/svc1:p80 has no endpoints\" -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT",
        "-A REKUBE-EXTERNAL-SERVICES -m comment --comment \"ns1/svc1:p80 has no endpoints\" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j REJECT",
        "-A REKUBE-EXTERNAL-SERVICES -m comment --comment \"ns1/svc1:p80 has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j REJECT",
    ] {
        assert!(
            plan.data.contains(&format!("{rule}\n")),
            "{rule}\n{}",
            plan.data
        );
    }
    assert!(!plan.data.contains(":REKUBE-SVC-"));
    assert!(!plan.data.contains(":REKUBE-EXT-"));
}

/// Even distribution: n endpoints get probabilities 1/n, 1/(n-1), ..., the last rule
/// unconditional (upstream's `writeServiceToEndpointRules`).
#[test]
fn endpoints_are_chosen_evenly() {
    let mut fp = FakeProxier::new();
    fp.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    fp.add_slice(one_slice(
        "ns1",
        "svc1",
        &["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"],
        "p80",
        80,
    ));
    fp.sync_proxy_rules();
    let rules = fp
        .ipt
        .rules(Table::Nat, "REKUBE-SVC-XPGD46QRK7WJZT7O")
        .unwrap();
    let probabilities: Vec<Option<&str>> = rules
        .iter()
        .filter(|r| r.contains("-j REKUBE-SEP-"))
        .map(|r| {
            r.split_once("--probability ")
                .map(|(_, p)| p.split_whitespace().next().unwrap())
        })
        .collect();
    assert_eq!(
        probabilities,
        vec![
            Some("0.2500000000"),
            Some("0.3333333333"),
            Some("0.5000000000"),
            None
        ]
    );
}

/// rekube's options: no localhost NodePorts (no REKUBE-FIREWALL, loopback excluded from
/// the NodePort jump), no nfacct, MASQUERADE --random-fully.
#[test]
fn rekube_defaults() {
    let mut fp = FakeProxier::new_with(|_, o| *o = super::proxier::IptablesOptions::default());
    fp.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    let plan = fp.sync_proxy_rules();
    assert!(!plan.data.contains("REKUBE-FIREWALL"));
    assert!(!plan.data.contains("nfacct"));
    assert!(
        plan.data
            .contains("-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j REKUBE-NODEPORTS\n")
    );
    assert!(plan.data.contains("-j MASQUERADE --random-fully\n"));
    assert!(fp.ipt.rules(Table::Filter, "REKUBE-FIREWALL").is_none());
}

/// Cleanup removes rekube's jump rules and chains, and nothing else: a foreign chain and
/// rule (a real kube-proxy's) stay; twice is fine.
#[test]
fn cleanup_removes_only_rekubes_chains() {
    let mut fp = FakeProxier::new();
    fp.ipt.ensure_chain(Table::Nat, "KUBE-SERVICES").unwrap();
    fp.ipt
        .ensure_rule(Table::Nat, "PREROUTING", &["-j", "KUBE-SERVICES"])
        .unwrap();
    fp.add_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", "p80", 80));
    fp.add_slice(one_slice("ns1", "svc1", &["10.0.1.1"], "p80", 80));
    fp.sync_proxy_rules();
    // A second full sync does not add the jump rules again.
    fp.proxier.request_full_sync();
    fp.sync_proxy_rules();
    assert_eq!(fp.ipt.rules(Table::Nat, "PREROUTING").unwrap().len(), 2);
    cleanup(&fp.ipt).unwrap();
    cleanup(&fp.ipt).unwrap();
    let dump = fp.ipt.dump();
    assert!(
        !dump
            .lines()
            .any(|l| l.split_whitespace().any(is_rekube_chain)),
        "{dump}"
    );
    assert!(dump.contains(":KUBE-SERVICES - [0:0]"));
    assert_eq!(
        fp.ipt.rules(Table::Nat, "PREROUTING").unwrap(),
        vec!["-j KUBE-SERVICES"]
    );
    let empty = FakeIptables::new(IpFamily::V6);
    cleanup(&empty).unwrap();
}
